"""The platform's side of lineage, read without writing (:mod:`pzone.db.readonly`): when the photos were taken, a
photo's row, and which model versions answered it (the ``predictions`` rows, one per verdict)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pzone.errors import one_line

if TYPE_CHECKING:
    from sqlalchemy import Engine

UNREACHABLE = "unknown: the platform is not reachable"
CHUNK = 500  # ids per IN (...): well under SQLite's bound variables


@dataclass(frozen=True)
class Platform:
    """An engine on the platform's database, or why there is none (``unknown``)."""

    engine: Engine | None
    unknown: str | None = None


@dataclass(frozen=True)
class PhotoRow:
    photo_id: str
    sha256: str | None
    taken_at: datetime | None
    status: str
    verdict: str
    model_version: str | None


@dataclass(frozen=True)
class Answer:
    """One verdict of the model tier on a photo."""

    model_version: str
    label: str
    predicted_at: datetime | None


def utc(value: datetime | None) -> datetime | None:
    """The platform writes UTC; SQLite hands its times back without the zone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@contextmanager
def open_platform(url: str) -> Iterator[Platform]:
    """The platform at ``url`` if it can be read (exists, reachable, at the code's schema), else why not."""
    from pzone.db.readonly import DatabaseUnavailable, check_readable, read_only_engine

    try:
        engine = read_only_engine(url)
    except ValueError as exc:  # SQLite in memory: nothing to read
        yield Platform(None, f"{UNREACHABLE} ({one_line(exc)})")
        return
    problem = None
    alembic_log = logging.getLogger("alembic")  # its INFO lines would bury the answer
    level = alembic_log.level
    alembic_log.setLevel(logging.WARNING)
    try:
        check_readable(url, engine)
    except DatabaseUnavailable as exc:
        problem = f"{UNREACHABLE} ({one_line(exc)})"
    finally:
        alembic_log.setLevel(level)
    try:
        yield Platform(None, problem) if problem else Platform(engine)
    finally:
        engine.dispose()


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def taken_at_range(engine: Engine, photo_ids: Sequence[str]) -> dict[str, Any]:
    """The first and last ``taken_at`` of the photos, how many of them the platform still has, and how many of those
    have no ``taken_at``."""
    from sqlalchemy import select

    from pzone.db.models import Photo

    times: list[datetime] = []
    found = 0
    with engine.connect() as connection:
        for chunk in _chunks(sorted(set(photo_ids))):
            for _, taken_at in connection.execute(
                select(Photo.id, Photo.taken_at).where(Photo.id.in_(chunk))
            ):
                found += 1
                if (when := utc(taken_at)) is not None:
                    times.append(when)
    return {
        "first": min(times) if times else None,
        "last": max(times) if times else None,
        "photos_found": found,
        "without_taken_at": found - len(times),
    }


def photo_row(engine: Engine, photo_id: str) -> PhotoRow | None:
    from sqlalchemy import select

    from pzone.db.models import Photo

    query = select(
        Photo.id, Photo.sha256, Photo.taken_at, Photo.status, Photo.verdict, Photo.model_version
    ).where(Photo.id == photo_id)
    with engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    return PhotoRow(row.id, row.sha256, utc(row.taken_at), row.status, row.verdict, row.model_version)


def answers(engine: Engine, photo_id: str) -> list[Answer]:
    """Every verdict on the photo, oldest first."""
    from sqlalchemy import select

    from pzone.db.models import Prediction

    query = (
        select(Prediction.model_version, Prediction.label, Prediction.predicted_at)
        .where(Prediction.photo_id == photo_id)
        .order_by(Prediction.predicted_at, Prediction.id)
    )
    with engine.connect() as connection:
        return [
            Answer(row.model_version, row.label, utc(row.predicted_at)) for row in connection.execute(query)
        ]
