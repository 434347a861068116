"""The ``photo_labels`` row: its sources, which of its labels counts (the operator's over the sensor's), and the
dialect's upsert that both writers (:mod:`~pzone.labels.refresh`, :mod:`~pzone.labels.manual`) build on."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from pzone.db.models import PhotoLabel

SOURCE_SENSOR = "sensor"
SOURCE_MANUAL = "manual"

MANUAL_QUALITY = 1.0  # an operator's label is trusted


class LabelRow(Protocol):
    """What :func:`effective_label` reads (a :class:`~pzone.db.models.PhotoLabel`, or a result row)."""

    @property
    def label(self) -> str | None: ...

    @property
    def manual_label(self) -> str | None: ...


def effective_label(row: LabelRow | None) -> str | None:
    """The operator's label when set, else the sensor's (null: none)."""
    if row is None:
        return None
    return row.manual_label if row.manual_label is not None else row.label


@dataclass(frozen=True, slots=True)
class Measured:
    """The label the history page shows next to the model's verdict ("predicted vs measured")."""

    label: str
    source: str  # sensor or manual
    quality: float | None
    gap_s: float | None


def measured_of(row: PhotoLabel | None) -> Measured | None:
    """The effective label with its source, quality and gap; ``None`` when there is none."""
    if row is None:
        return None
    if row.manual_label is not None:
        return Measured(row.manual_label, SOURCE_MANUAL, MANUAL_QUALITY, None)
    if row.label is not None:
        return Measured(row.label, SOURCE_SENSOR, row.quality, row.gap_s)
    return None


def upsert_insert(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT with ``on_conflict_do_update`` (PostgreSQL and SQLite)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"photo labels support PostgreSQL and SQLite, not {name}")
