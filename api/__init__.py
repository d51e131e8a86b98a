"""HTTP API (FastAPI): directory search and lookups, health checks; problem+json errors; bearer roles."""
