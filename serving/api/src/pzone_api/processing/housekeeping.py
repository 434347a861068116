"""The upload sweeps: direct uploads never completed are completed when their bytes arrived, else removed; objects
under ``uploads/`` that no photo waits for any more are deleted."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from pzone.db.models import Photo
from pzone.storage import ObjectStore
from pzone_api.intake import claim_upload
from pzone_api.processing.photo_queue import PhotoQueue

logger = logging.getLogger("pzone.api.processing")  # the queue's logger: one name for all of processing


@dataclass(frozen=True)
class StaleSweep:
    """What :func:`finish_or_purge_stale_uploads` did: photos completed on their owner's behalf, rows purged."""

    completed: list[str]
    purged: int


def finish_or_purge_stale_uploads(
    engine: Engine, store: ObjectStore, queue: PhotoQueue, older_than: timedelta, limit: int = 100
) -> StaleSweep:
    """Direct uploads whose ``complete`` never came, once ``older_than`` has passed (at least the upload URL's
    lifetime, so that no PUT can still arrive), oldest first, at most ``limit`` a pass.

    A photo whose bytes did arrive is completed on its owner's behalf, as ``complete`` would: claimed by the same
    guarded UPDATE, then its job enqueued, so that the worker checks it and stores or refuses it. A client that lost
    its connection right after the PUT loses no photo, and one that asks ``complete`` later still gets the outcome
    while the queue keeps it (on Redis; in immediate mode it is told 409 already_completed). The others (no bytes,
    or an owner no longer active) are removed with whatever arrived. API replicas running this at once complete or
    remove a photo once (guarded statements)."""
    cutoff = datetime.now(UTC) - older_than
    completed: list[str] = []
    purged = 0
    with Session(engine) as session:
        rows = session.execute(
            select(Photo.id, Photo.user_id, Photo.upload_key)
            .where(Photo.status == "awaiting_upload", Photo.created_at < cutoff)
            .order_by(Photo.created_at)
            .limit(limit)
        ).all()
        session.commit()  # no transaction held while the store is asked
        for photo_id, user_id, upload_key in rows:
            uploaded = upload_key is not None and store.exists(upload_key)
            if uploaded and claim_upload(session, user_id, photo_id):
                logger.warning("photo %s was uploaded but never completed: completing it now", photo_id)
                queue.enqueue(photo_id, None, direct=True)  # immediate mode: the job runs here
                if queue.immediate:
                    queue.forget(photo_id)  # nobody asks for it; on Redis it is kept for a late complete
                completed.append(photo_id)
                continue
            removed = session.execute(
                delete(Photo).where(Photo.id == photo_id, Photo.status == "awaiting_upload")
            )
            session.commit()
            if getattr(removed, "rowcount", 0):
                purged += 1
                if uploaded and upload_key is not None:
                    store.delete(upload_key)
    return StaleSweep(completed, purged)


UPLOAD_PREFIX = "uploads/"
# A photo in these states still owns its staging object; in any other (stored) or with no row (refused, purged),
# what is at uploads/<id> is a stray.
LIVE_UPLOAD_STATUSES = ("awaiting_upload", "processing")


def sweep_stray_uploads(engine: Engine, store: ObjectStore, older_than: timedelta, limit: int = 1000) -> int:
    """Delete the objects under ``uploads/`` that no photo waits for: a PUT through a presigned URL (valid until it
    expires) that came after its photo was stored or refused, or bytes a failed request left. Only objects older
    than ``older_than`` (the multipart path writes its object just before its row), at most ``limit`` a pass.
    Returns how many were deleted. A photo never goes back to waiting once stored, so a stray stays one."""
    cutoff = datetime.now(UTC) - older_than
    strays: dict[str, str] = {}
    for listed in store.list_objects(UPLOAD_PREFIX):
        if listed.modified < cutoff:
            strays[listed.key.removeprefix(UPLOAD_PREFIX)] = listed.key
            if len(strays) >= limit:
                break
    if not strays:
        return 0
    with Session(engine) as session:
        live = set(
            session.scalars(
                select(Photo.id).where(Photo.id.in_(sorted(strays)), Photo.status.in_(LIVE_UPLOAD_STATUSES))
            )
        )
    for photo_id in live:
        del strays[photo_id]
    for key in strays.values():
        store.delete(key)
    if strays:
        logger.warning("deleted %d upload object(s) that no photo waits for", len(strays))
    return len(strays)
