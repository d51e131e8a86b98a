"""Who may do what: people's accounts and their roles on SAS territories, the audit of grants, and sign-in sessions."""
