"""The `dispo` command line: one sub-command group per area, on top of every other package."""
