"""The photo queue: a huey queue and its one job, ``process_photo``, with the lease that keeps a photo to one job.

The API enqueues ``process_photo(photo_id)`` and the worker (``pzone photos worker``: a huey consumer of this queue)
runs it: :func:`pzone_api.intake.process_staged` under the photo's lease, leaving an *outcome* in huey's result
store for the API to collect. Jobs lost with a crashed worker or an emptied Redis are enqueued again
(:func:`requeue_stuck`).

Queues:

* ``PZONE_REDIS_URL`` set: :class:`huey.RedisExpireHuey` (results expire after ``PZONE_PROCESSING_RESULT_TTL_S``,
  so an outcome nobody collects does not stay in Redis; ``notify_result``: the API blocks on BLPOP, no polling).
* Embedded default (no Redis): huey's *immediate* mode, the job runs in the API process, inside ``enqueue``.
  Chosen over SqliteHuey plus a consumer thread: the embedded stack (``pzone up``) is one process on one machine,
  so a consumer thread would only move the same CPU to another thread of the same process, while adding a second
  SQLite writer and a thread to start and stop; immediate mode runs the very same job function through huey, and
  ``pzone api`` alone keeps working without a worker. ``PZONE_PROCESSING_IMMEDIATE`` overrides the choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from huey import Huey, MemoryHuey, RedisExpireHuey
from huey.api import TaskWrapper
from huey.consumer import Consumer
from huey.exceptions import HueyException, TaskException
from sqlalchemy import Engine, or_, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from pzone.db.models import Photo
from pzone.storage import ObjectStore, ObjectStoreUnavailable
from pzone_api.intake import IntakeError, discard_photo, process_staged
from pzone_api.settings import Settings

if TYPE_CHECKING:
    import redis.asyncio

logger = logging.getLogger("pzone.api.processing")

Outcome = Mapping[str, Any]
STORED = "stored"


def job_id(photo_id: str) -> str:
    """The huey task id of a photo's job: derived, so that a later request can wait for the same job."""
    return f"photo-{photo_id}"


class PhotoQueue:
    """The huey instance and its ``process_photo`` task, bound to the settings, engine and store that run it.

    The API and the worker build it alike (:func:`photo_queue_from_settings`), so the task is registered under the
    same name on both sides; only the worker (or immediate mode) ever executes it.
    """

    def __init__(
        self, huey: Huey, settings: Settings, engine: Engine, store: ObjectStore, redis_url: str | None = None
    ) -> None:
        self.huey, self.settings, self.engine, self.store = huey, settings, engine, store
        self._task: TaskWrapper = huey.task(name="process_photo")(self._process)
        self._redis_url = redis_url  # the queue's Redis, for waits on the event loop (None: immediate mode)
        self._async_redis: redis.asyncio.Redis | None = None

    @property
    def immediate(self) -> bool:
        return bool(self.huey.immediate)

    def enqueue(self, photo_id: str, claim: str | None = None, *, direct: bool = False) -> None:
        """Queue the photo's job (immediate mode: run it now, in this thread).

        ``claim``: a token of the request that enqueues, echoed in the outcome (see
        :func:`~pzone_api.processing.completion.await_processing`); ``direct``: a presigned upload, which the
        worker checks for existence and size first.
        """
        self.huey.enqueue(self._task.s(photo_id, claim, direct, id=job_id(photo_id)))

    def outcome(self, photo_id: str) -> Outcome | None:
        """The job's outcome if it is there (kept until :meth:`forget`), else None; never waits."""
        try:
            value = self.huey.result(job_id(photo_id), preserve=True)
        except TaskException as exc:  # the job itself failed outside its own error handling
            logger.error("photo job %s failed: %s", photo_id, exc.metadata.get("error"))
            return _outcome(photo_id, None, _FAILED)
        return value if isinstance(value, Mapping) else None

    async def until_ready(self, photo_id: str, timeout_s: float) -> bool:
        """True once the job's outcome is in the result store, False when ``timeout_s`` passed first.

        Waits on the event loop: BLPOP on huey's notification key for the job (``notify_result``) over an asyncio
        Redis connection, then a look at the result itself, so no thread waits. In immediate mode the job ran
        inside ``enqueue`` already: nothing to wait for. A Redis error ends the wait (the client gets 202 and asks
        again) rather than failing the request.
        """
        job = job_id(photo_id)
        storage = self.huey.storage
        if self._redis_url is None:
            return bool(storage.has_data_for_key(job))
        client = self._redis()
        result_key = storage.result_key  # RedisExpireStorage: one key per result; RedisStorage: one hash
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                if callable(result_key):
                    ready = await client.exists(result_key(job))
                else:
                    ready = await client.hexists(result_key, job)
                if ready:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0.001:
                    return False
                # Wakes on this job's notification, or an older job's of the same photo: then look again. Each
                # turn blocks, or takes one notification out: no spinning.
                # Bounded here too: the connection has no socket timeout (BLPOP blocks), and a silently dead one
                # must not hold the request past its wait.
                await asyncio.wait_for(
                    client.blpop([storage.notify_prefix + job], timeout=remaining), remaining + 5.0
                )
        except Exception as exc:  # redis.exceptions.RedisError, OSError: as huey's own wait, give up waiting
            logger.warning("waiting for photo %s: %s", photo_id, exc)
            return False

    def _redis(self) -> redis.asyncio.Redis:
        """The asyncio client, made on first use (inside the running event loop, whose sockets it keeps)."""
        if self._async_redis is None:
            import redis.asyncio

            assert self._redis_url is not None
            self._async_redis = redis.asyncio.Redis.from_url(
                self._redis_url,
                socket_timeout=None,  # BLPOP blocks for up to the whole wait
                socket_connect_timeout=5,
                health_check_interval=30,
            )
        return self._async_redis

    def forget(self, photo_id: str) -> None:
        """Drop a delivered outcome: asking again then gets 409 already_completed.

        On Redis a marker says so for as long as an outcome would have stayed: a photo that is stored with no
        outcome is then either delivered (the marker) or its job is still leaving it (huey writes a job's result
        after the job's own commit), which a later ``complete`` waits for instead of answering 409
        (:mod:`~pzone_api.processing.completion`).
        """
        with contextlib.suppress(HueyException):
            self.huey.delete(job_id(photo_id))
        if self._redis_url is not None:
            with contextlib.suppress(
                Exception
            ):  # the marker only sharpens a 409; never fail a delivery for it
                self.huey.storage.conn.set(
                    self._delivered_key(photo_id), "1", ex=self.settings.processing_result_ttl_s
                )

    def delivered(self, photo_id: str) -> bool:
        """Whether this photo's outcome was collected (:meth:`forget`); always so in immediate mode, where a job
        has left its outcome before ``enqueue`` returns."""
        if self._redis_url is None:
            return True
        try:
            return bool(self.huey.storage.conn.exists(self._delivered_key(photo_id)))
        except Exception:  # Redis trouble: no marker to go by, so no wait for an outcome
            return True

    def _delivered_key(self, photo_id: str) -> str:
        return (
            f"huey.delivered.{self.huey.name}.{job_id(photo_id)}"  # huey.*<queue>* like the queue's own keys
        )

    def consumer(self, workers: int = 1, *, in_thread: bool = False, **options: Any) -> Consumer:
        """A huey consumer of this queue with ``workers`` threads (``in_thread``: no signal handlers, for a
        consumer started inside another program, which owns its signals)."""
        consumer_class = _ThreadConsumer if in_thread else Consumer
        return consumer_class(self.huey, workers=workers, worker_type="thread", periodic=False, **options)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.huey.storage.close()

    async def aclose(self) -> None:
        """Close the asyncio client (in the event loop that made it) and the huey storage."""
        client, self._async_redis = self._async_redis, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
        self.close()

    # --- the job ---------------------------------------------------------------------------------------------------
    def _process(
        self, photo_id: str, claim: str | None = None, direct: bool = False
    ) -> dict[str, Any] | None:
        """The job: process a staged photo; returns its outcome (a plain dict: API and worker may differ in version),
        or None, without touching the photo, when another job of the same photo holds its lease."""
        try:
            lease = take_lease(self.engine, photo_id, self.settings.processing_lease_s)
        except SQLAlchemyError as exc:  # the database is away: the photo, untouched, is enqueued again later
            logger.warning("photo %s waits for the database: %s", photo_id, type(exc).__name__)
            return _outcome(photo_id, None, _DATABASE_AWAY, claim)
        if lease is None:
            logger.info("photo %s: another job holds it; this duplicate does nothing", photo_id)
            return None
        try:
            return self._process_leased(photo_id, claim, direct)
        finally:
            release_lease(self.engine, photo_id, lease)

    def _process_leased(self, photo_id: str, claim: str | None, direct: bool) -> dict[str, Any]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                photo = session.get(Photo, photo_id)
                if photo is None:
                    return _outcome(photo_id, None, IntakeError(404, "not_found", "no such photo"), claim)
                user_id = photo.user_id
                try:
                    process_staged(session, self.store, self.settings, photo, direct=direct)
                except IntakeError as exc:
                    return _outcome(photo_id, user_id, exc, claim)
                except ObjectStoreUnavailable as exc:
                    # Nothing of the photo is lost: its upload object is where it was and nothing was committed.
                    # It stays processing, and the housekeeping enqueues it again once its job counts as stuck.
                    session.rollback()
                    logger.warning("photo %s waits for the object store: %s", photo_id, exc)
                    return _outcome(photo_id, user_id, _STORE_AWAY, claim)
                return _outcome(photo_id, user_id, None, claim, photo)
        except Exception:
            # Storage or database trouble: the photo cannot be finished; remove what is left of it, so that nothing
            # stays half-stored, and tell the client to upload it again.
            logger.exception("processing photo %s failed", photo_id)
            try:
                with Session(self.engine) as session:
                    discard_photo(session, self.store, photo_id)
            except Exception as exc:
                # The database is away: the photo could not be removed, and nothing of its job was committed, so it
                # is kept, still processing, for the housekeeping to enqueue again. "Upload it again" would make a
                # second photo of it.
                logger.warning("photo %s is kept for a later job: %s", photo_id, type(exc).__name__)
                return _outcome(photo_id, None, _DATABASE_AWAY, claim)
            return _outcome(photo_id, None, _FAILED, claim)


_FAILED = IntakeError(503, "processing_failed", "the photo could not be processed; please upload it again")
_STORE_AWAY = IntakeError(
    503,
    "store_unavailable",
    "the photo store cannot be reached; the photo is kept and processed once it is back",
)
_DATABASE_AWAY = IntakeError(
    503,
    "database_unavailable",
    "the database cannot be reached; the photo is kept and processed once it is back",
)

_NOT_LEASED = "not leased"  # take_lease: the photo is not processing, so there is nothing to hold


def take_lease(engine: Engine, photo_id: str, lease_s: float) -> datetime | str | None:
    """Hold a processing photo for one job: its lease end (a datetime) when taken, None when another job holds it
    (a duplicate: the photo was re-enqueued while its first job still runs), or ``_NOT_LEASED`` when the photo is
    not processing (stored, refused, unknown: the job's own checks answer those)."""
    now = datetime.now(UTC)
    until = now + timedelta(seconds=lease_s)
    with engine.begin() as conn:
        taken = conn.execute(
            update(Photo)
            .where(
                Photo.id == photo_id,
                Photo.status == "processing",
                or_(Photo.worker_lease_until.is_(None), Photo.worker_lease_until < now),
            )
            .values(worker_lease_until=until)
        )
        if taken.rowcount:
            return until
        status = conn.execute(select(Photo.status).where(Photo.id == photo_id)).scalar_one_or_none()
    return None if status == "processing" else _NOT_LEASED


def release_lease(engine: Engine, photo_id: str, lease: datetime | str) -> None:
    """Give the lease back at the job's end (a photo put back to "awaiting_upload" can be completed again at once);
    only our own: a lease that expired and was taken by another job stays."""
    if not isinstance(lease, datetime):
        return
    with contextlib.suppress(Exception), engine.begin() as conn:
        conn.execute(
            update(Photo)
            .where(Photo.id == photo_id, Photo.worker_lease_until == lease)
            .values(worker_lease_until=None)
        )


def requeue_stuck(engine: Engine, queue: PhotoQueue, stuck_after_s: float, limit: int = 100) -> list[str]:
    """Enqueue again the photos whose job was lost (a photo worker crashed or was killed mid-job, a Redis restart
    emptied the queue): still processing ``stuck_after_s`` after they were enqueued, with no live worker lease.

    Each is moved on (its ``processing_at`` set to now) by one guarded UPDATE first, so that API replicas running
    this at once enqueue it once; a job that turns out to be still alive makes the new one a no-op (the lease)."""
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=stuck_after_s)
    requeued: list[str] = []
    with Session(engine) as session:
        rows = session.execute(
            select(Photo.id, Photo.processing_at)
            .where(
                Photo.status == "processing",
                or_(Photo.processing_at.is_(None), Photo.processing_at < cutoff),
                or_(Photo.worker_lease_until.is_(None), Photo.worker_lease_until < now),
            )
            .order_by(Photo.processing_at)
            .limit(limit)
        ).all()
        for photo_id, processing_at in rows:
            same = (
                Photo.processing_at.is_(None)
                if processing_at is None
                else Photo.processing_at == processing_at
            )
            moved = session.execute(
                update(Photo)
                .where(Photo.id == photo_id, Photo.status == "processing", same)
                .values(processing_at=now)
            )
            session.commit()
            if getattr(moved, "rowcount", 0):
                logger.warning(
                    "photo %s was still processing after %.0f s: enqueued again", photo_id, stuck_after_s
                )
                queue.enqueue(photo_id, None, direct=True)
                requeued.append(photo_id)
    return requeued


def _outcome(
    photo_id: str,
    user_id: str | None,
    refusal: IntakeError | None,
    claim: str | None = None,
    photo: Photo | None = None,
) -> dict[str, Any]:
    """The job's result. A stored photo comes with its columns as committed, so that the waiting request answers
    without reading the row again."""
    if refusal is None:
        status, code, reason = 200, STORED, ""
    else:
        status, code, reason = refusal.status, refusal.code, refusal.reason
    outcome: dict[str, Any] = {
        "photo_id": photo_id,
        "user_id": user_id,
        "status": status,
        "code": code,
        "reason": reason,
        "claim": claim,
    }
    if photo is not None:
        outcome["photo"] = {name: getattr(photo, name) for name in _PHOTO_COLUMNS}
    return outcome


_PHOTO_COLUMNS = tuple(column.key for column in sa_inspect(Photo).column_attrs)


class _ThreadConsumer(Consumer):
    def _set_signal_handlers(self) -> None:  # signals belong to the host program (and its main thread)
        pass


def photo_queue_from_settings(settings: Settings, engine: Engine, store: ObjectStore) -> PhotoQueue:
    """RedisExpireHuey on ``PZONE_REDIS_URL``, or immediate mode in the embedded default (see the module doc)."""
    name = settings.processing_queue_name
    if settings.processing_in_api:
        huey: Huey = MemoryHuey(name, immediate=True)
        redis_url = None
    else:
        if settings.redis_url is None:
            raise ValueError("PZONE_PROCESSING_IMMEDIATE=false needs PZONE_REDIS_URL for the queue")
        redis_url = settings.redis_url.get_secret_value()
        huey = RedisExpireHuey(
            name,
            url=redis_url,
            expire_time=settings.processing_result_ttl_s,
            notify_result=True,
            notify_result_ttl=max(60, int(settings.processing_wait_s) + 10),
        )
    return PhotoQueue(huey, settings, engine, store, redis_url)
