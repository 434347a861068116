"""The photo worker's part of the intake: a staged upload checked in full, hashed, stored once with its stripped
derivatives, classified and committed; or refused, leaving no row and no object it made.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from pzone.db.models import Photo
from pzone.labels import CLIENT_TIME_FUTURE_TOLERANCE_S, as_utc
from pzone.storage import (
    ObjectNotFound,
    ObjectStore,
    ObjectStoreUnavailable,
    ObjectTooLarge,
    check_uploaded_object,
    content_addressed_key,
)
from pzone_api.images import BadImage, ImageInfo, inspect_and_derive, sha256_file
from pzone_api.intake.uploads import ACCEPTED_TYPES, IntakeError
from pzone_api.model_tier_client import classify_photos, input_size, model_input_made
from pzone_api.photo_verdicts import apply_verdict
from pzone_api.settings import Settings

logger = logging.getLogger(__name__)

DERIVATIVE_SIZES = {"preview": 1024, "thumb": 256}


def process_staged(
    session: Session, store: ObjectStore, settings: Settings, photo: Photo, *, direct: bool = False
) -> None:
    """The worker's part: full check, SHA-256, original, derivatives, verdict, commit; the upload object goes.

    ``direct``: a presigned upload, whose bytes the API never saw. Its object is checked first with a HEAD (exists,
    within ``PZONE_UPLOAD_MAX_BYTES``), so that a missing or oversized object costs no download; nothing there yet is
    a 409 ``not_uploaded`` that puts the photo back to "awaiting_upload", so that the client can PUT and complete
    again. The download is capped at the limit too (the object may be replaced after the HEAD).

    Any other refusal (:class:`IntakeError`) removes the row and every object made for it before it is raised.
    A photo already stored (a job delivered twice) is left as it is.
    """
    if photo.status == "stored":
        return
    if photo.status != "processing" or photo.upload_key is None:
        raise IntakeError(409, "not_processing", f"photo in status {photo.status!r} cannot be processed")
    upload_key, max_bytes = photo.upload_key, settings.upload_max_bytes
    try:
        if direct:
            try:
                check_uploaded_object(store, upload_key, max_bytes=max_bytes)
            except ObjectNotFound:
                photo.status = "awaiting_upload"
                session.commit()
                raise IntakeError(409, "not_uploaded", "nothing was uploaded for this photo (yet)") from None
        with _downloaded(store, upload_key, max_bytes) as path:
            _store_checked(session, store, settings, photo, path, photo.declared_content_type)
    except ObjectNotFound:
        _discard(session, store, photo)
        raise IntakeError(409, "not_uploaded", "the uploaded object is gone") from None
    except ObjectTooLarge:
        _discard(session, store, photo)
        raise IntakeError(413, "too_large", f"the upload exceeds {max_bytes} bytes") from None
    except IntakeError as exc:
        if exc.code != "not_uploaded" or not direct:
            _discard(session, store, photo)
        raise
    _delete_quietly(store, upload_key)


def discard_photo(session: Session, store: ObjectStore, photo_id: str) -> None:
    """Remove a photo that could not be processed (its row and its upload object), if it is still there."""
    photo = session.get(Photo, photo_id)
    if photo is not None and photo.status != "stored":
        _discard(session, store, photo)


def _store_checked(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    photo: Photo,
    path: Path,
    declared: str | None,
) -> None:
    """Inspect, store original and derivatives, ask for a verdict, commit. Cleans up its own objects on failure.

    The original is written from ``path``, the very bytes that were checked and hashed, never copied from the
    staging key: a presigned PUT stays valid after the download, and whatever is at that key by now is unchecked.
    """
    if path.stat().st_size == 0:
        raise IntakeError(422, "empty", "the upload is empty")
    model_size = input_size(settings)
    try:
        info, derivatives = inspect_and_derive(
            path,
            declared_content_type=declared,
            max_pixels=settings.image_max_pixels,
            max_side=settings.image_max_side,
            sizes=DERIVATIVE_SIZES,
            model_size=model_size,
        )
    except BadImage as exc:
        raise IntakeError(422, exc.code, exc.reason) from None
    model_input = derivatives.pop("model", None)  # sent to the model tier, never stored
    sha = sha256_file(path)
    created: list[str] = []
    try:
        original_key = content_addressed_key("originals", sha, ACCEPTED_TYPES[info.content_type])
        if store.head(original_key) is None:  # same bytes twice = one object
            with path.open("rb") as checked:
                store.put_stream(original_key, checked, info.content_type)
            created.append(original_key)
        keys = {}
        for name, data in derivatives.items():
            key = content_addressed_key(f"derived/{name}", sha, "jpg")
            if store.head(key) is None:
                store.put_bytes(key, data, "image/jpeg")
                created.append(key)
            keys[name] = key
        _fill(photo, info, sha, original_key, keys, path.stat().st_size)
        verdicts = None
        if model_input is not None and model_size is not None:
            made = model_input_made(model_input, model_size, derivatives["preview"])
            verdicts = classify_photos(settings, [made])
        apply_verdict(session, photo, (verdicts or [None])[0])
        session.commit()
    except BaseException:
        session.rollback()
        for key in created:
            _delete_quietly(store, key)
        raise


def _fill(photo: Photo, info: ImageInfo, sha: str, original: str, keys: dict[str, str], size: int) -> None:
    now = datetime.now(UTC)
    photo.status = "stored"
    photo.upload_key = None
    photo.sha256 = sha
    photo.original_key = original
    photo.thumb_key = keys["thumb"]
    photo.preview_key = keys["preview"]
    photo.content_type = info.content_type
    photo.size_bytes = size
    photo.width, photo.height = info.width, info.height
    photo.completed_at = now
    # The EXIF time, else the client's, unless it lies after the upload began (beyond clocks' differences): a photo
    # is not taken after it is sent, so the server's own time is the better one then. How much a client-chosen time
    # is trusted to pick the photo's sensor label is the labels' decision (pzone.labels.time_is_proven).
    latest = as_utc(photo.created_at or now) + timedelta(seconds=CLIENT_TIME_FUTURE_TOLERANCE_S)
    if info.exif_taken_at is not None and as_utc(info.exif_taken_at) <= latest:
        photo.taken_at, photo.taken_at_source = info.exif_taken_at, "exif"
    elif photo.client_taken_at is not None and as_utc(photo.client_taken_at) <= latest:
        photo.taken_at, photo.taken_at_source = photo.client_taken_at, "client"
    else:
        photo.taken_at, photo.taken_at_source = now, "upload"


def _discard(session: Session, store: ObjectStore, photo: Photo) -> None:
    # The row first: with the store away, the photo is still refused and gone, and its upload object is left to the
    # stray-upload sweep (and the bucket's lifecycle rule).
    upload_key = photo.upload_key
    session.delete(photo)
    session.commit()
    if upload_key:
        _delete_quietly(store, upload_key)


def _delete_quietly(store: ObjectStore, key: str) -> None:
    """Delete an object nothing refers to (any more); an unreachable store leaves it, unreferenced, for a sweep:
    the photo's outcome is decided by then and must not turn into an error."""
    try:
        store.delete(key)
    except ObjectStoreUnavailable as exc:
        logger.warning("could not delete %s now (%s); left for the sweep", key, exc)


@contextmanager
def _downloaded(store: ObjectStore, key: str, max_bytes: int) -> Iterator[Path]:
    """The object in a temporary file; :class:`ObjectTooLarge` as soon as it passes ``max_bytes``."""
    with tempfile.TemporaryDirectory(prefix="pzone-check-") as folder:
        path = Path(folder) / "object"
        with store.open(key) as source, path.open("wb") as out:
            written = 0
            while chunk := source.read(1024 * 1024):
                written += len(chunk)
                if written > max_bytes:
                    raise ObjectTooLarge(key, max_bytes)
                out.write(chunk)
        yield path
