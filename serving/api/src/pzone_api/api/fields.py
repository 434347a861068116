"""Constraints shared by the routes' request fields."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path
from pydantic import AfterValidator

# PostgreSQL text cannot hold NUL (0x00): an id or an address with one, looked up or stored in SQL, fails as a
# DataError (a 500). Validation refuses it instead (a 422), and the OpenAPI document states it as a pattern.
NO_NUL = r"^[^\x00]*$"

# A path parameter naming a row (a photo, a device).
IdInPath = Annotated[str, Path(pattern=NO_NUL)]


def _utc_representable(moment: datetime) -> datetime:
    # 0001-01-01T00:30+01:00 is 1 BC in UTC: PostgreSQL stores it, but reading the row back fails (Python's
    # datetime starts at year 1), so the photo could never be answered or processed.
    if moment.tzinfo is None:  # taken as UTC already
        return moment
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("must be between years 1 and 9999 in UTC") from None
    return moment


# A moment a client states (a photo's taken_at); naive ones are UTC.
ClientTime = Annotated[datetime, AfterValidator(_utc_representable)]
