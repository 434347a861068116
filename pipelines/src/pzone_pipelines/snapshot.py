"""Stage `snapshot`: the platform's labeled photos → ``data/snapshot`` (manifest + content-addressed image files).

The platform (database + object store) is outside DVC's view, so this stage always runs (``always_changed``), but
its output depends only on the platform's labeled photos: same state → byte-identical manifest and files → same
DVC hash → DVC skips everything downstream. It is incremental: image files already in the snapshot are kept,
only new objects are fetched, files no longer labeled are removed.

The stage only reads the platform (a read-only connection: :mod:`pzone.db.readonly`): the sensor labels are
computed in memory from the readings stored so far, with the ``labels`` section of params.yaml
(:func:`pzone.labels.labeled_photos` with ``params``, the same computation a refresh upserts); the operator's
labels are read from their rows, and win. Storing the sensor labels is the platform's work (`pzone retrain`).
No platform, an unreadable one or one without labeled photos stops the stage with a sentence naming the ways to
get data (:data:`GET_DATA`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer

from pzone.errors import UserError
from pzone.storage import ObjectNotFound, ObjectStore
from pzone.tilt import TILT_CLASSES

if TYPE_CHECKING:
    from pzone.labels import LabeledPhoto, LabelParams

MANIFEST = "manifest.json"
SKIPPED = "skipped.json"
IMAGES = "images"
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
GET_DATA = (
    "get a dataset: `pzone dataset pull` (the shared dataset) or `pzone dataset seed` (a local one, in a minute "
    "or two)"
)


class LabeledRow(Protocol):
    """What the snapshot needs of a labeled photo (see :func:`pzone.labels.labeled_photos`)."""

    @property
    def photo_id(self) -> str: ...
    @property
    def sha256(self) -> str: ...
    @property
    def original_key(self) -> str: ...
    @property
    def content_type(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def quality(self) -> float | None: ...


@dataclass(frozen=True)
class Entry:
    """One image of the dataset. Only stable facts: the same platform state must give the same manifest."""

    sha256: str
    file: str
    label: str
    source: str
    quality: float | None
    photo_ids: tuple[str, ...]
    object_key: str


@dataclass(frozen=True)
class Skip:
    sha256: str
    photo_ids: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class SnapshotResult:
    entries: list[Entry]
    skipped: list[Skip]
    fetched: int
    reused: int
    removed: int

    def class_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(entry.label for entry in self.entries).items()))


class EmptyDataset(UserError, RuntimeError):
    """Nothing to learn from: no labeled photo survived."""

    def __init__(self, message: str) -> None:
        super().__init__(message, GET_DATA)


def plan_entries(
    rows: Iterable[LabeledRow], *, classes: Sequence[str], min_quality: float
) -> tuple[list[Entry], list[Skip]]:
    """Group photos by content, drop low-quality sensor labels and contradictions; sorted by hash.

    The same bytes uploaded twice are one image; if their labels disagree the image is skipped (recorded), since
    one of them is wrong and we cannot tell which.
    """
    by_sha: dict[str, list[LabeledRow]] = defaultdict(list)
    for row in rows:
        by_sha[row.sha256].append(row)
    entries: list[Entry] = []
    skipped: list[Skip] = []
    for sha in sorted(by_sha):
        group = sorted(by_sha[sha], key=lambda r: r.photo_id)
        ids = tuple(r.photo_id for r in group)
        manual = [r for r in group if r.source == "manual"]
        chosen = manual or [
            r for r in group if r.source == "manual" or (r.quality is not None and r.quality >= min_quality)
        ]
        if not chosen:
            skipped.append(Skip(sha, ids, "low_quality"))
            continue
        labels = {r.label for r in chosen}
        if len(labels) > 1:
            skipped.append(Skip(sha, ids, "conflicting_labels"))
            continue
        best = chosen[0]
        if best.label not in classes:
            skipped.append(Skip(sha, ids, f"unknown_label:{best.label}"))
            continue
        ext = EXTENSIONS.get(best.content_type)
        if ext is None:
            skipped.append(Skip(sha, ids, f"unsupported_type:{best.content_type}"))
            continue
        quality = None if best.quality is None else round(float(best.quality), 6)
        entries.append(
            Entry(
                sha,
                f"{IMAGES}/{sha[:2]}/{sha}.{ext}",
                best.label,
                best.source,
                quality,
                ids,
                best.original_key,
            )
        )
    return entries, skipped


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_one(store: ObjectStore, entry: Entry, out_dir: Path) -> str | None:
    """Fetch one object into the snapshot, verified against its hash. Returns a skip reason, or None if stored."""
    target = out_dir / entry.file
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".fetch-")
    temp = Path(temp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, store.open(entry.object_key) as source:
            while chunk := source.read(1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != entry.sha256:
            return "corrupt_object"  # the stored bytes are not the ones the platform recorded
        temp.replace(target)
        return None
    except ObjectNotFound:
        return "missing_object"
    finally:
        temp.unlink(missing_ok=True)


def sync_images(
    store: ObjectStore,
    entries: Sequence[Entry],
    out_dir: Path,
    *,
    workers: int = 8,
    on_done: Callable[[], None] | None = None,
) -> tuple[list[Entry], list[Skip], int, int, int]:
    """Make ``out_dir/images`` hold exactly the entries' files: fetch the missing ones, remove the others.

    A file already present is trusted when its size is non-zero and its name is its hash (it was verified when
    fetched); a damaged one can be cleared by deleting it.
    """
    present = {p.relative_to(out_dir).as_posix() for p in (out_dir / IMAGES).rglob("*") if p.is_file()}
    wanted = {entry.file for entry in entries}
    to_fetch = [e for e in entries if e.file not in present or (out_dir / e.file).stat().st_size == 0]
    reasons: dict[str, str] = {}

    def work(entry: Entry) -> None:
        reason = fetch_one(store, entry, out_dir)
        if reason:
            reasons[entry.sha256] = reason
        if on_done:
            on_done()

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(work, to_fetch))
    removed = 0
    for name in sorted(present - wanted):
        (out_dir / name).unlink()
        removed += 1
    for folder in sorted((out_dir / IMAGES).glob("*"), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    kept = [e for e in entries if e.sha256 not in reasons]
    skipped = [Skip(e.sha256, e.photo_ids, reasons[e.sha256]) for e in entries if e.sha256 in reasons]
    return kept, skipped, len(to_fetch) - len(reasons), len(entries) - len(to_fetch), removed


def write_manifest(
    out_dir: Path, entries: Sequence[Entry], skipped: Sequence[Skip], classes: Sequence[str]
) -> None:
    """Deterministic JSON (sorted, no timestamps), written atomically."""

    def dump(name: str, payload: Any) -> None:
        temp = out_dir / f".{name}.tmp"
        temp.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")
        temp.replace(out_dir / name)

    dump(
        MANIFEST,
        {
            "classes": list(classes),
            "images": [{**asdict(e), "photo_ids": list(e.photo_ids)} for e in entries],
        },
    )
    dump(
        SKIPPED,
        [{**asdict(s), "photo_ids": list(s.photo_ids)} for s in sorted(skipped, key=lambda s: s.sha256)],
    )


def read_manifest(out_dir: Path) -> list[Entry]:
    data = json.loads((out_dir / MANIFEST).read_text())
    return [Entry(**{**item, "photo_ids": tuple(item["photo_ids"])}) for item in data["images"]]


def take_snapshot(
    rows: Iterable[LabeledRow],
    store: ObjectStore,
    out_dir: Path,
    *,
    classes: Sequence[str],
    min_quality: float,
    workers: int = 8,
    on_total: Callable[[int], None] | None = None,
    on_done: Callable[[], None] | None = None,
) -> SnapshotResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    entries, skipped = plan_entries(rows, classes=classes, min_quality=min_quality)
    if on_total:
        on_total(len(entries))
    kept, failed, fetched, reused, removed = sync_images(
        store, entries, out_dir, workers=workers, on_done=on_done
    )
    skipped = skipped + failed
    write_manifest(out_dir, kept, skipped, classes)
    if not kept:
        raise EmptyDataset(
            "no labeled photos to snapshot"
            + (f" ({len(skipped)} skipped: {dict(Counter(s.reason for s in skipped))})" if skipped else "")
            + ": upload photos of devices whose readings are stored, or label some by hand"
        )
    return SnapshotResult(kept, skipped, fetched, reused, removed)


def read_platform(url: str, label_params: LabelParams) -> list[LabeledPhoto]:
    """The platform's labeled photos (sensor labels computed with ``label_params``), read without writing.

    ``DatabaseUnavailable`` (its hint naming the ways to get data) when there is no database at ``url``, it cannot
    be reached, or its schema is not the code's.
    """
    from sqlalchemy.orm import Session

    from pzone.db.readonly import MISSING, DatabaseUnavailable, check_readable, read_only_engine
    from pzone.labels import labeled_photos

    engine = read_only_engine(url)
    try:
        try:
            check_readable(url, engine)
        except DatabaseUnavailable as exc:
            elsewhere = "point PZONE_DATA_DIR (or PZONE_DATABASE_URL) at a platform"
            also = elsewhere if exc.reason == MISSING else exc.hint
            raise DatabaseUnavailable(str(exc), exc.reason, f"{GET_DATA}; or {also}") from None
        with Session(engine) as session:
            return labeled_photos(session, params=label_params)
    finally:
        engine.dispose()


def main(
    out: Annotated[Path, typer.Option(help="Snapshot folder (a DVC output).")] = Path("data/snapshot"),
    params_file: Annotated[Path, typer.Option("--params", help="params.yaml to read.")] = Path("params.yaml"),
) -> None:
    """Export the platform's labeled photos (sensor labels computed from the readings) to a snapshot folder."""
    from rich.console import Console
    from rich.progress import Progress

    from pzone.labels import LabelParams
    from pzone.storage import object_store_from_settings
    from pzone_pipelines.params import ParamsError, load_params, section
    from pzone_pipelines.settings import Settings

    console = Console(stderr=True)
    params = load_params(params_file)
    snap = section(params, "snapshot")
    try:
        label_params = LabelParams.from_mapping(section(params, "labels"))
        min_quality = float(snap.get("min_quality", 0.0))
        workers = int(snap.get("workers", 8))
    except (ValueError, TypeError) as exc:  # the labels' own validation, a snapshot knob of the wrong type
        raise ParamsError(f"{params_file}: {exc}") from None
    settings = Settings()
    rows = read_platform(settings.sqlalchemy_url, label_params)
    console.print(f"labeled photos on the platform: {len(rows)} (sensor labels computed, nothing written)")
    store = object_store_from_settings(settings)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("fetching new photos", total=None)
        result = take_snapshot(
            rows,
            store,
            out,
            classes=TILT_CLASSES,
            min_quality=min_quality,
            workers=workers,
            on_total=lambda n: progress.update(task, total=n),
            on_done=lambda: progress.advance(task),
        )
    console.print(
        f"snapshot: {len(result.entries)} images {result.class_counts()}, fetched {result.fetched}, "
        f"kept {result.reused}, removed {result.removed}, skipped {len(result.skipped)}"
    )


if __name__ == "__main__":
    from pzone.cli.common import run_command

    run_command(main)
