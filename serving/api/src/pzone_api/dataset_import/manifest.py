"""The labels CSV of `pzone dataset import`, parsed: the rows to import and the rows refused, each with its reason.

Pure: text and a folder listing in, rows out; the folder's bytes and the platform are :mod:`.importer`'s.

One row per file: ``file,label`` (an operator's label, one of :data:`pzone.tilt.TILT_CLASSES`) or
``file,device_id,taken_at`` (ISO 8601 with a UTC offset: the device's readings label the photo); both forms may mix,
with empty cells. A row that cannot be imported is a :class:`Refusal`; a CSV that cannot be read at all (no header,
a missing ``file`` column, an unknown column, broken quoting) is a :class:`ManifestError`.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

from pzone.tilt import TILT_CLASSES

COLUMNS = ("file", "label", "device_id", "taken_at")
# A camera's clock a little ahead of this machine's is not a bad time; an hour ahead is.
FUTURE_TOLERANCE = timedelta(minutes=5)

# Refusal codes of the manifest (the images' own checks add theirs: pzone_api.images.BAD_IMAGE_CODES).
BAD_ROW = "bad_row"  # cells do not match the header, or no file name
OUTSIDE_FOLDER = "outside_folder"  # an absolute path, or one that climbs out with ..
BAD_LABEL = "bad_label"
BAD_TIME = "bad_time"
INCOMPLETE_ROW = "incomplete_row"  # neither a label nor a device_id with its taken_at
LISTED_TWICE = "listed_twice"
MISSING_FILE = "missing_file"
NO_ROW = "no_row"


class ManifestError(ValueError):
    """The CSV cannot be read at all: nothing is imported."""


@dataclass(frozen=True, slots=True)
class Row:
    """One file to import, as its row asks."""

    line: int
    file: str  # relative to the folder, normalised (``./a.jpg`` is ``a.jpg``)
    label: str | None  # the operator's label
    device_id: str | None
    taken_at: datetime | None  # timezone-aware

    @property
    def waits_for_readings(self) -> bool:
        """No operator label: the device's readings around ``taken_at`` label it."""
        return self.label is None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A file not imported: ``file`` (``line N`` when its row names none), a stable ``code``, a ``reason``."""

    file: str
    code: str
    reason: str


@dataclass(frozen=True)
class Manifest:
    rows: list[Row]  # the rows to import
    refused: list[Refusal]  # the rows refused
    named: frozenset[str]  # every file a row names, refused rows' included


def parse_manifest(text: str, *, now: datetime) -> Manifest:
    """The rows of the CSV ``text`` (header first), checked; ``now`` (aware) bounds the taken-at times."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = _header(next(reader, None))
        read: list[tuple[int, list[str]]] = []
        for cells in reader:
            if any(cell.strip() for cell in cells):
                read.append((reader.line_num, cells))
    except csv.Error as exc:
        raise ManifestError(f"line {reader.line_num}: {exc}") from None
    rows: list[Row] = []
    refused: list[Refusal] = []
    at = header.index("file")
    named = {normalised(cells[at].strip()) for _, cells in read if len(cells) > at} - {""}
    for line, cells in read:
        outcome = _row(header, line, cells, now)
        if isinstance(outcome, Row):
            rows.append(outcome)
        else:
            refused.append(outcome)
    listed = Counter(row.file for row in rows)
    twice = {name for name, count in listed.items() if count > 1}
    for name in sorted(twice):
        lines = ", ".join(str(row.line) for row in rows if row.file == name)
        refused.append(Refusal(name, LISTED_TWICE, f"listed on more than one row (lines {lines})"))
    return Manifest([row for row in rows if row.file not in twice], refused, frozenset(named))


def match_folder(
    manifest: Manifest, listing: Iterable[str], present: Callable[[str], bool]
) -> tuple[list[Row], list[Refusal]]:
    """The rows whose file is there (``present``), and the refusals: rows naming a missing file, and the files of
    ``listing`` (the folder's photos, as relative paths) that no row names."""
    found: list[Row] = []
    refused: list[Refusal] = []
    for row in manifest.rows:
        if present(row.file):
            found.append(row)
        else:
            refused.append(Refusal(row.file, MISSING_FILE, f"line {row.line} names a file the folder lacks"))
    for name in sorted(set(listing) - manifest.named):
        refused.append(Refusal(name, NO_ROW, "no row of the CSV names this file"))
    return found, refused


def _header(cells: list[str] | None) -> list[str]:
    if not cells or not any(cell.strip() for cell in cells):
        raise ManifestError("the CSV is empty: its first line must name the columns, e.g. file,label")
    names = [cell.strip().lower().lstrip("\ufeff") for cell in cells]
    unknown = [name for name in names if name not in COLUMNS]
    if unknown:
        hint = "; the cells must be separated by commas" if any(";" in name for name in unknown) else ""
        raise ManifestError(
            f"unknown column(s) {', '.join(repr(name) for name in unknown)}: the columns are "
            f"{', '.join(COLUMNS)}{hint}"
        )
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ManifestError(f"column(s) {', '.join(twice)} appear more than once in the header")
    if "file" not in names:
        raise ManifestError("the CSV has no 'file' column")
    if "label" not in names and not {"device_id", "taken_at"} <= set(names):
        raise ManifestError(
            "the CSV needs a 'label' column, or 'device_id' and 'taken_at' columns (the readings label the photos)"
        )
    return names


def _row(header: list[str], line: int, cells: list[str], now: datetime) -> Row | Refusal:
    values = dict(zip(header, (cell.strip() for cell in cells), strict=False))
    file = normalised(values.get("file", ""))
    if len(cells) != len(header):
        reason = f"line {line} has {len(cells)} cell(s), the header {len(header)}"
        return Refusal(file or f"line {line}", BAD_ROW, reason)
    if not file:
        return Refusal(f"line {line}", BAD_ROW, f"line {line} names no file")
    path = PurePosixPath(file)
    if path.is_absolute() or ".." in path.parts:
        return Refusal(file, OUTSIDE_FOLDER, f"line {line}: the file must be a path inside the folder")
    label = values.get("label", "").lower() or None
    if label is not None and label not in TILT_CLASSES:
        reason = f"line {line}: label {values['label']!r} is not one of {', '.join(TILT_CLASSES)}"
        return Refusal(file, BAD_LABEL, reason)
    device_id = values.get("device_id") or None
    taken_at = None
    if values.get("taken_at"):
        try:
            taken_at = parse_taken_at(values["taken_at"], now)
        except ValueError as exc:
            return Refusal(file, BAD_TIME, f"line {line}: {exc}")
    if label is None and (device_id is None or taken_at is None):
        missing = "taken_at" if device_id is not None else "device_id" if taken_at is not None else "label"
        reason = f"line {line}: no {missing}; a row needs a label, or a device_id and its taken_at"
        return Refusal(file, INCOMPLETE_ROW, reason)
    return Row(line, file, label, device_id, taken_at)


def normalised(name: str) -> str:
    """A file cell as the folder's listing spells it (``./a.jpg`` and ``a//b.jpg`` are ``a.jpg``, ``a/b.jpg``)."""
    return str(PurePosixPath(name)) if name else ""


def parse_taken_at(text: str, now: datetime) -> datetime:
    """An ISO 8601 time with a UTC offset, not after ``now`` (plus :data:`FUTURE_TOLERANCE`), in UTC; ValueError with the
    reason otherwise. A time without an offset is refused: read in the wrong zone, it would match another hour's
    readings and label the photo with them."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"taken_at {text!r} is not an ISO 8601 time (e.g. 2026-05-01T14:03:00+02:00)"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"taken_at {text!r} has no UTC offset: add Z or +HH:MM (e.g. 2026-05-01T12:03:00Z)")
    if moment > now + FUTURE_TOLERANCE:
        raise ValueError(f"taken_at {text!r} is in the future")
    return moment.astimezone(UTC)  # SQLite keeps a time's digits, not its offset: store them in UTC
