"""Values bounded at the edge: identifiers in paths and instants in queries. A malformed one is a 422 naming it,
before the index is asked anything.

Identifiers are loose on purpose: a well-formed one that names nothing is a 404, told by the route.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime

from core.geo import EARLIEST, LATEST
from core.records import VENDOR_ID_PATTERN

# An IDNPS is "8" + RPPS (11 digits) or "0" + ADELI (9 digits); a FINESS number 9 characters (2A/2B in Corsica).
Idnps = Annotated[str, Path(pattern=r"^[0-9A-Za-z]{1,20}$", description="IDNPS, e.g. 810100050075")]
Finess = Annotated[str, Path(pattern=r"^[0-9A-Za-z]{1,20}$", description="FINESS number, e.g. 010000032")]
VendorId = Annotated[str, Path(pattern=VENDOR_ID_PATTERN, description="a vendor id")]


def _in_service_years(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"an instant from {EARLIEST.year} to {LATEST.year - 1}")
    return value


# Instants in queries carry their offset (`Z`, `+02:00`): a bare local time would be read in the server's zone. The
# service's years bound them, so that no computation on them (a window, a period, a conversion) leaves the calendar.
Instant = Annotated[AwareDatetime, AfterValidator(_in_service_years)]
