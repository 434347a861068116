"""The API's side of processing: claim a photo, enqueue its job, and wait on the event loop for its outcome.

The wait is up to ``PZONE_PROCESSING_WAIT_S``: a BLPOP over an asyncio Redis connection
(:meth:`~pzone_api.processing.photo_queue.PhotoQueue.until_ready`), so that a waiting upload holds no thread of the
API's threadpool, and uploads waiting on a slow worker never hold up other requests. The answer is the stored photo,
or the refusal's 4xx with the row and objects already removed by the worker. No outcome in time: 202 with status
``processing``; the client polls ``GET /api/photos/{id}`` or asks ``POST .../complete`` again, which waits for the
same job (its id is derived from the photo id) and so still learns a refusal's reason.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from pzone.db.models import Photo, User
from pzone.storage import ObjectStore
from pzone_api.intake import (
    NOT_AUTHENTICATED,
    IntakeError,
    check_batch_size,
    claim_upload,
    claim_uploads,
)
from pzone_api.processing.photo_queue import STORED, Outcome, PhotoQueue
from pzone_api.settings import Settings


def new_claim() -> str:
    """A token for one enqueue, echoed in its outcome."""
    return secrets.token_hex(8)


async def complete(
    session: Session, store: ObjectStore, settings: Settings, queue: PhotoQueue, user_id: str, photo_id: str
) -> Photo:
    """``POST /api/photos/{id}/complete``: claim the photo, enqueue its job, wait for the worker's outcome.

    Returns the photo, stored, or still ``processing`` when the worker did not answer in time; raises the
    refusal's :class:`IntakeError` (the worker has removed the row and its objects by then; or, for 409
    ``not_uploaded``, put the photo back to "awaiting_upload"), or a 401 one when the session's user is inactive.
    The database and queue calls run in the threadpool, the wait (up to ``PZONE_PROCESSING_WAIT_S``) on the event
    loop. The usual case costs the API one UPDATE and the queue's round trips; the store is not asked anything here.
    """
    claim = await run_in_threadpool(_claim_and_enqueue, session, queue, user_id, photo_id)
    if claim is not None:
        return await await_processing(session, settings, queue, photo_id, claim)
    return await _complete_unclaimed(session, settings, queue, user_id, photo_id, settings.processing_wait_s)


def _claim_and_enqueue(session: Session, queue: PhotoQueue, user_id: str, photo_id: str) -> str | None:
    """The claim's token when this request moved the photo to "processing" and enqueued its job, else None."""
    if not claim_upload(session, user_id, photo_id):
        return None
    claim = new_claim()
    queue.enqueue(photo_id, claim, direct=True)
    return claim


@dataclass(frozen=True)
class Completion:
    """One photo of a batch complete: the photo (stored, or still processing), or the refusal."""

    photo_id: str
    photo: Photo | None = None
    refusal: IntakeError | None = None


async def complete_many(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    queue: PhotoQueue,
    user_id: str,
    photo_ids: Sequence[str],
) -> list[Completion]:
    """``POST /api/photos/batch/complete``: :func:`complete` for several photos, each answered on its own.

    One guarded UPDATE claims every photo that awaits its upload, and all their jobs are enqueued before the first
    wait (a worker with several threads, or several workers, runs them side by side); the outcomes are then
    collected in order within one ``PZONE_PROCESSING_WAIT_S`` for the whole batch (202 processing past it). A
    refused photo does not stop the others (its row and objects are removed as for a single complete); only a gone
    or inactive user (401) refuses the whole batch.
    """
    check_batch_size(settings, len(photo_ids))
    if len(set(photo_ids)) != len(photo_ids):
        raise IntakeError(422, "duplicate_ids", "each photo id may appear once in a batch")
    claims = await run_in_threadpool(_claim_and_enqueue_many, session, queue, user_id, photo_ids)
    deadline = time.monotonic() + settings.processing_wait_s
    results: list[Completion] = []
    for photo_id in photo_ids:
        wait_s = max(deadline - time.monotonic(), 0.001)
        try:
            if photo_id in claims:
                photo = await await_processing(
                    session, settings, queue, photo_id, claims[photo_id], wait_s=wait_s
                )
            else:
                photo = await _complete_unclaimed(session, settings, queue, user_id, photo_id, wait_s)
        except IntakeError as exc:
            if exc.code == NOT_AUTHENTICATED:
                raise
            results.append(Completion(photo_id, refusal=exc))
        else:
            results.append(Completion(photo_id, photo=photo))
    return results


def _claim_and_enqueue_many(
    session: Session, queue: PhotoQueue, user_id: str, photo_ids: Sequence[str]
) -> dict[str, str]:
    """Claim every photo that awaits its upload and enqueue its job; returns each claimed photo's token."""
    claimed = claim_uploads(session, user_id, photo_ids)
    claims: dict[str, str] = {}
    for photo_id in photo_ids:
        if photo_id in claimed:
            claims[photo_id] = new_claim()
            queue.enqueue(photo_id, claims[photo_id], direct=True)
    return claims


async def _complete_unclaimed(
    session: Session, settings: Settings, queue: PhotoQueue, user_id: str, photo_id: str, wait_s: float
) -> Photo:
    """A photo that the claim did not move: find out why (the rare paths), or wait for its running job."""
    answer = await run_in_threadpool(_unclaimed_answer, session, queue, user_id, photo_id)
    if isinstance(answer, Photo):
        return answer
    if answer == _FINISHING:
        if await queue.until_ready(photo_id, min(wait_s, FINISHING_GRACE_S)):
            collected = await run_in_threadpool(_collect, session, queue, photo_id, None)
            if isinstance(collected, Photo):
                return collected
        raise IntakeError(409, "already_completed", "this photo was already completed")
    return await await_processing(session, settings, queue, photo_id, wait_s=wait_s)


# A job commits the stored photo, returns, and huey then writes its outcome: a request in between finds the photo
# stored and no outcome yet, and waits this long for it (it comes within milliseconds) rather than answer 409.
FINISHING_GRACE_S = 5.0
_RUNNING, _FINISHING = "running", "finishing"


def _unclaimed_answer(session: Session, queue: PhotoQueue, user_id: str, photo_id: str) -> Photo | str:
    """The answer for a photo the claim did not move (or its refusal, raised); ``_RUNNING`` while its job still
    runs, ``_FINISHING`` when the job stored it and its outcome, not collected yet, is still on its way."""
    user = session.get(User, user_id)
    if user is None or not user.is_active:
        raise IntakeError(401, NOT_AUTHENTICATED, "Session expired or invalid: log in again.")
    photo = session.get(Photo, photo_id)
    if photo is not None and photo.user_id != user_id:
        raise IntakeError(404, "not_found", "no such photo")  # another user's photo is not even acknowledged
    if photo is not None and photo.status == "processing":
        session.commit()  # no transaction (and no pooled connection) is held while waiting
        return _RUNNING
    # A job may have finished after an earlier request stopped waiting: its outcome answers this one.
    outcome = queue.outcome(photo_id)
    if outcome is not None and outcome.get("user_id") == user_id:
        return _deliver(session, queue, photo_id, outcome, None)
    if photo is None:
        raise IntakeError(404, "not_found", "no such photo")
    if photo.status == "awaiting_upload":  # put back just now by a job that found nothing uploaded
        raise IntakeError(409, "not_uploaded", "nothing was uploaded for this photo (yet)")
    if photo.status == STORED and not queue.delivered(photo_id):
        session.commit()
        return _FINISHING
    raise IntakeError(409, "already_completed", "this photo was already completed")


async def enqueue_and_wait(
    session: Session, settings: Settings, queue: PhotoQueue, photo_id: str, *, direct: bool = False
) -> Photo:
    """Enqueue the job of a photo this request moved to "processing", and wait for it (:func:`await_processing`)."""
    claim = new_claim()
    await run_in_threadpool(_commit_and_enqueue, session, queue, photo_id, claim, direct)
    return await await_processing(session, settings, queue, photo_id, claim)


def _commit_and_enqueue(session: Session, queue: PhotoQueue, photo_id: str, claim: str, direct: bool) -> None:
    session.commit()  # no transaction (and no pooled connection) is held while waiting
    queue.enqueue(photo_id, claim, direct=direct)  # immediate mode: the job runs here, in this worker thread


_STALE = "stale"  # _collect: an older job's outcome, dropped; wait on


async def await_processing(
    session: Session,
    settings: Settings,
    queue: PhotoQueue,
    photo_id: str,
    claim: str | None = None,
    *,
    wait_s: float | None = None,
) -> Photo:
    """Wait for a photo's job (enqueued already, no transaction open) and return the stored photo, or the photo
    still processing.

    ``claim``: the token this request enqueued with. An outcome of an earlier job of the same photo may still be
    waiting (a "not uploaded" that nobody collected, the client having given up after a 202); with another token
    it is stale, and skipped. ``wait_s``: at most this long (default ``PZONE_PROCESSING_WAIT_S``). The wait is on
    the event loop (:meth:`PhotoQueue.until_ready`); collecting the outcome takes one trip to the threadpool.
    """
    wait_s = settings.processing_wait_s if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    while await queue.until_ready(photo_id, max(deadline - time.monotonic(), 0.0)):
        collected = await run_in_threadpool(_collect, session, queue, photo_id, claim)
        if isinstance(collected, Photo):
            return collected
        if time.monotonic() >= deadline:
            break
        # stale, or collected meanwhile by another request: wait on for this job's own outcome
    return await run_in_threadpool(_still_processing, session, photo_id)


def _collect(session: Session, queue: PhotoQueue, photo_id: str, claim: str | None) -> Photo | str | None:
    """The ready outcome delivered (the photo, or the refusal raised); ``_STALE`` for an older job's outcome
    (dropped); None when it is gone (another request collected it)."""
    outcome = queue.outcome(photo_id)
    if outcome is None:
        return None
    if (
        claim is not None
        and outcome.get("code") == "not_uploaded"
        and outcome.get("claim") not in (None, claim)
    ):
        queue.forget(photo_id)
        return _STALE
    return _deliver(session, queue, photo_id, outcome, claim)


def _still_processing(session: Session, photo_id: str) -> Photo:
    photo = session.get(Photo, photo_id, populate_existing=True)
    if photo is None:  # refused meanwhile, and the outcome went to another request
        raise IntakeError(404, "not_found", "no such photo")
    return photo


def _deliver(
    session: Session, queue: PhotoQueue, photo_id: str, outcome: Outcome, claim: str | None
) -> Photo:
    queue.forget(photo_id)
    if outcome.get("code") != STORED:
        raise IntakeError(int(outcome["status"]), str(outcome["code"]), str(outcome["reason"]))
    columns = outcome.get("photo")
    if claim is not None and outcome.get("claim") == claim and isinstance(columns, Mapping):
        return Photo(**columns)  # the row as the worker just committed it: no need to read it back
    photo = session.get(
        Photo, photo_id, populate_existing=True
    )  # an older outcome: the row may have moved on
    if photo is None:
        raise IntakeError(404, "not_found", "no such photo")
    return photo
