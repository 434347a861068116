"""`pzone dataset import`'s work: each file of a folder through the upload path's checks and storage, as an
operator's photo; its CSV label an operator's label, its CSV taken-at the operator's.

The intake is the API's own (:func:`pzone_api.intake.stage_upload` and :func:`pzone_api.intake.process_staged`,
in this process): the same sniffing, limits, decode, EXIF handling, original and derivatives in the object store,
and a ``photos`` row ``stored``, owned by the operator. Before that, cheap checks refuse what the platform must not
take twice: the same bytes twice in the folder, bytes already stored, a device the platform does not know.
A refused file leaves no row and no object. The photos whose readings label them get their sensor labels at the
end (:func:`pzone.labels.refresh_labels` for those photos, with :class:`pzone.labels.LabelParams`'s defaults — the
API does not read params.yaml, the pipelines' file; every `pzone retrain` relabels them with its ``labels``).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from pzone.db.models import Photo, User, Zone
from pzone.errors import UserError
from pzone.labels import LabelParams, LabelStats, refresh_labels, set_manual_label
from pzone.storage import ObjectStore
from pzone_api.dataset_import.manifest import (
    OUTSIDE_FOLDER,
    Manifest,
    ManifestError,
    Refusal,
    Row,
    match_folder,
    parse_manifest,
)
from pzone_api.images import ACCEPTED_CONTENT_TYPES, BadImage, inspect_image, sha256_file
from pzone_api.images.sniffing import sniff
from pzone_api.intake import (
    IntakeError,
    autocommit,
    check_target,
    discard_photo,
    process_staged,
    stage_upload,
)
from pzone_api.security import InvalidEmail, normalize_email
from pzone_api.settings import Settings

TAKEN_AT_SOURCE = "operator"  # photos.taken_at_source of a time the operator's CSV gives: known, not claimed
SNIFF_BYTES = 8192  # enough for every signature and the active-content look at the leading text
# Refusal codes of the import itself (the intake's and the images' codes come through as they are).
DUPLICATE = "duplicate"
ALREADY_STORED = "already_stored"
NO_TARGET = "no_target"
UNREADABLE = "unreadable"


class ImportSetupError(UserError):
    """The import cannot start (the folder, the CSV, the operator, the zone): nothing is imported."""


@dataclass(frozen=True)
class ImportPlan:
    folder: Path
    manifest: Path  # the labels CSV
    operator: str  # the operator account's e-mail address
    zone: str | None = None  # zone of the rows without a device
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class ImportedPhoto:
    file: str
    photo_id: str | None  # None in a dry run
    label: str | None  # the operator's
    device_id: str | None


@dataclass
class ImportReport:
    imported: list[ImportedPhoto] = field(default_factory=list)  # in a dry run: would be imported
    refused: list[Refusal] = field(default_factory=list)
    refresh: LabelStats | None = None  # the refresh of the photos waiting for readings
    dry_run: bool = False
    interrupted: bool = False  # stopped by a signal before every file was seen
    error: Exception | None = None  # what stopped the import (the database or the store failing)

    @property
    def by_operator(self) -> int:
        return sum(photo.label is not None for photo in self.imported)

    @property
    def waiting(self) -> int:
        return sum(photo.label is None for photo in self.imported)

    def refused_by_code(self) -> dict[str, int]:
        return dict(sorted(Counter(refusal.code for refusal in self.refused).items()))


class _Refused(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def read_manifest(path: Path, *, now: datetime) -> Manifest:
    """The CSV at ``path``, parsed; :class:`ImportSetupError` when it cannot be read at all."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ImportSetupError(f"there is no labels CSV at {path}", "give its path with --labels") from None
    except OSError as exc:
        raise ImportSetupError(f"cannot read the labels CSV {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ImportSetupError(f"the labels CSV {path} is not UTF-8 text (byte {exc.start})") from None
    try:
        return parse_manifest(text, now=now)
    except ManifestError as exc:
        raise ImportSetupError(f"the labels CSV {path} cannot be read: {exc}") from None


def list_photos(folder: Path, skip: Path) -> list[str]:
    """Every file under ``folder`` as a relative POSIX path, hidden ones (``.name``) and ``skip`` left out."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(name for name in dirs if not name.startswith("."))
        for name in sorted(files):
            path = Path(root, name)
            if not name.startswith(".") and path.resolve() != skip:
                found.append(path.relative_to(folder).as_posix())
    return found


@dataclass(frozen=True)
class Prepared:
    """The folder and its CSV matched: the rows whose file is there, and what is refused already."""

    rows: list[Row]
    refused: list[Refusal]


def prepare(plan: ImportPlan) -> Prepared:
    """Read the folder and the CSV (no platform yet); :class:`ImportSetupError` when either cannot be read."""
    if not plan.folder.is_dir():
        raise ImportSetupError(f"there is no folder {plan.folder}")
    folder = plan.folder.resolve()
    manifest = read_manifest(plan.manifest, now=datetime.now(UTC))
    rows, missing = match_folder(
        manifest, list_photos(folder, plan.manifest.resolve()), lambda name: (folder / name).is_file()
    )
    return Prepared(rows, [*manifest.refused, *missing])


def check_operator(engine: Engine, plan: ImportPlan) -> str:
    """The id of ``plan.operator``'s account, an active operator's; :class:`ImportSetupError` for another account
    or for a ``plan.zone`` the platform does not have. Reads only."""
    with Session(engine) as session:
        operator_id = _operator_id(session, plan.operator)
        if plan.zone is not None and session.get(Zone, plan.zone) is None:
            raise ImportSetupError(
                f"there is no zone {plan.zone!r}",
                "zones come from the devices' telemetry: name one that exists, or give every row a device_id",
            )
    return operator_id


def import_folder(
    engine: Engine,
    store: ObjectStore | None,
    settings: Settings,
    plan: ImportPlan,
    prepared: Prepared,
    operator_id: str,
    *,
    stop: threading.Event | None = None,
    on_file: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import the ``prepared`` rows of ``plan.folder`` as ``operator_id``'s (:func:`check_operator`) into the
    platform of ``engine`` and ``store`` (``None`` in a dry run, which writes nothing: give it a read-only engine).
    The report's ``error`` is set when the database or the store failed on the way (the file in hand left
    nothing)."""
    if store is None and not plan.dry_run:
        raise ValueError("an import that writes needs the object store")
    folder = plan.folder.resolve()
    report = ImportReport(refused=list(prepared.refused), dry_run=plan.dry_run)
    with Session(engine, expire_on_commit=False) as session:
        run = _Run(session, store, settings, operator_id, plan.zone, folder)
        for row in prepared.rows:
            if stop is not None and stop.is_set():
                report.interrupted = True
                break
            try:
                photo_id = run.import_row(row, dry_run=plan.dry_run)
            except _Refused as refusal:
                report.refused.append(Refusal(row.file, refusal.code, refusal.reason))
            except Exception as exc:
                report.error = exc
                break
            else:
                report.imported.append(ImportedPhoto(row.file, photo_id, row.label, row.device_id))
            finally:
                if on_file is not None:
                    on_file(row.file)
        waiting = [photo.photo_id for photo in report.imported if photo.label is None and photo.photo_id]
        if waiting and report.error is None:
            report.refresh = refresh_labels(session, LabelParams(), photo_ids=waiting)
            session.commit()
    return report


def _operator_id(session: Session, email: str) -> str:
    try:
        address = normalize_email(email)
    except InvalidEmail as exc:
        raise ImportSetupError(f"--operator {email!r} is not an e-mail address: {exc}") from None
    user = session.scalar(select(User).where(User.email == address))
    hint = f"create one with `pzone user create --role operator --email {address}`"
    if user is None:
        raise ImportSetupError(f"there is no account {address}", hint)
    if user.role != "operator":
        raise ImportSetupError(
            f"{address} is a {user.role} account: an import is an operator's act",
            "name an operator's account",
        )
    if not user.is_active:
        raise ImportSetupError(f"the account {address} is inactive", hint)
    return user.id


@dataclass
class _Run:
    """One import's state: who imports, where the rows without a device go, which bytes and devices were seen."""

    session: Session
    store: ObjectStore | None
    settings: Settings
    operator_id: str
    zone: str | None
    folder: Path  # resolved
    seen: dict[str, str] = field(default_factory=dict)  # sha256 → the first file with those bytes
    targets: dict[str | None, tuple[str | None, str | None] | IntakeError] = field(default_factory=dict)

    def import_row(self, row: Row, *, dry_run: bool) -> str | None:
        """Check ``row``'s file and store it (dry run: check only); its photo id. :class:`_Refused` with why."""
        target = self._target(row)
        path, content_type = self._checked_file(row)
        if dry_run:
            try:
                inspect_image(
                    path,
                    declared_content_type=content_type,
                    max_pixels=self.settings.image_max_pixels,
                    max_side=self.settings.image_max_side,
                    max_bytes=self.settings.upload_max_bytes,
                )
            except BadImage as exc:
                raise _Refused(exc.code, exc.reason) from None
            return None
        return self._store(row, path, content_type, target)

    def _target(self, row: Row) -> tuple[str | None, str | None]:
        """(device, zone) of the photo: the row's device (its zone from the platform) or ``--zone``."""
        if row.device_id is None and self.zone is None:
            raise _Refused(NO_TARGET, "no device_id, and no --zone for the rows without one")
        if row.device_id not in self.targets:
            zone = None if row.device_id is not None else self.zone
            try:
                self.targets[row.device_id] = check_target(
                    autocommit(self.session), self.operator_id, row.device_id, zone
                )
            except IntakeError as exc:
                self.targets[row.device_id] = exc
            finally:
                self.session.commit()
        target = self.targets[row.device_id]
        if isinstance(target, IntakeError):
            raise _Refused(target.code, target.reason)
        return target

    def _checked_file(self, row: Row) -> tuple[Path, str]:
        """The file's path and its content type by its leading bytes, after the checks that need no decode."""
        path = self.folder / row.file
        if not path.resolve().is_relative_to(self.folder):
            raise _Refused(OUTSIDE_FOLDER, "a link to a file outside the folder")
        try:
            return self._checked_bytes(row, path)
        except OSError as exc:
            raise _Refused(UNREADABLE, f"cannot read the file: {exc.strerror or exc}") from None

    def _checked_bytes(self, row: Row, path: Path) -> tuple[Path, str]:
        size, limit = path.stat().st_size, self.settings.upload_max_bytes
        if size == 0:
            raise _Refused("empty", "the file is empty")
        if size > limit:
            raise _Refused(
                "too_large", f"{size} bytes, over the {limit} an upload may have (PZONE_UPLOAD_MAX_BYTES)"
            )
        sha = sha256_file(path)
        first = self.seen.setdefault(sha, row.file)
        if first != row.file:
            raise _Refused(DUPLICATE, f"the same bytes as {first}")
        stored = self.session.scalar(
            select(Photo.id).where(Photo.sha256 == sha, Photo.status == "stored").limit(1)
        )
        self.session.rollback()
        if stored is not None:
            raise _Refused(ALREADY_STORED, f"the platform holds these bytes already (photo {stored})")
        with path.open("rb") as head:
            try:
                image_format = sniff(head.read(SNIFF_BYTES))
            except BadImage as exc:
                raise _Refused(exc.code, exc.reason) from None
        return path, ACCEPTED_CONTENT_TYPES[image_format]

    def _store(self, row: Row, path: Path, content_type: str, target: tuple[str | None, str | None]) -> str:
        """The upload path in this process, then the operator's facts; a refusal or a failure leaves nothing."""
        session, store = self.session, self.store
        assert store is not None, "import_folder gives a writing run its store"
        try:
            with path.open("rb") as body:
                staged = stage_upload(
                    session,
                    store,
                    self.settings,
                    self.operator_id,
                    body,
                    content_type=content_type,
                    device_id=target[0],
                    zone_id=target[1] if target[0] is None else None,
                    taken_at=row.taken_at,
                )
        except IntakeError as exc:  # nothing was kept
            raise _Refused(exc.code, exc.reason) from None
        photo = session.get(Photo, staged.id)
        assert photo is not None, "stage_upload committed the row"
        try:
            process_staged(session, store, self.settings, photo)
        except IntakeError as exc:  # the intake removed the row and its objects
            raise _Refused(exc.code, exc.reason) from None
        except Exception:
            session.rollback()
            with contextlib.suppress(Exception):
                discard_photo(session, store, staged.id)
            raise
        try:
            if row.taken_at is not None:
                photo.taken_at, photo.taken_at_source = row.taken_at, TAKEN_AT_SOURCE
            if row.label is not None:
                set_manual_label(session, photo.id, row.label, self.operator_id)
            session.commit()
        except Exception:
            session.rollback()
            with contextlib.suppress(Exception):
                _unstore(session, store, photo.id)
            raise
        return photo.id


def _unstore(session: Session, store: ObjectStore, photo_id: str) -> None:
    """Remove a stored photo again: its row (labels and predictions go with it) and the objects no other row
    shares."""
    photo = session.get(Photo, photo_id)
    if photo is None:
        return
    keys = [key for key in (photo.original_key, photo.thumb_key, photo.preview_key) if key]
    sha = photo.sha256
    session.delete(photo)
    session.flush()
    shared = session.scalar(select(func.count()).select_from(Photo).where(Photo.sha256 == sha)) if sha else 0
    session.commit()
    if not shared:
        for key in keys:
            store.delete(key)
