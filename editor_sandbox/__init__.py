"""The vendor side of the SAS FHIR contract (slot search, regulator accounts, booking page), for demos and tests."""
