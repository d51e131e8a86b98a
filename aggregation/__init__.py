"""Aggregation: the vendors' slot-search contract, its HTTP client, reconciliation, scheduling and live checks."""
