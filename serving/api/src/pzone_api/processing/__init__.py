"""Photo processing off the API process: a huey queue, its one job, and the API's side of waiting for it.

The API does the cheap part of an upload (:func:`pzone_api.intake.claim_upload` / ``stage_upload``: rows, sizes,
declared type, bytes staged in the object store) and enqueues ``process_photo(photo_id)``; the worker
(``pzone photos worker``: a huey consumer) does the CPU-heavy part (:func:`pzone_api.intake.process_staged`: full
decode check, SHA-256, the original written from the checked bytes, derivatives, the model tier call) and leaves an
*outcome* in huey's result store, which the API waits for. The modules:

* :mod:`~pzone_api.processing.photo_queue`: :class:`PhotoQueue` (huey, the job, its lease, its outcome), the queue
  the settings ask for, and :func:`requeue_stuck` for jobs that were lost.
* :mod:`~pzone_api.processing.completion`: the API's side: claim a photo (or take a staged one), enqueue its job and
  wait for its outcome on the event loop (:func:`complete`, :func:`complete_many`, :func:`enqueue_and_wait`).
* :mod:`~pzone_api.processing.housekeeping`: the sweeps of direct uploads whose ``complete`` never came and of
  upload objects no photo waits for (a PUT after the photo was stored or refused).
"""

from pzone_api.processing.completion import (
    FINISHING_GRACE_S,
    Completion,
    await_processing,
    complete,
    complete_many,
    enqueue_and_wait,
    new_claim,
)
from pzone_api.processing.housekeeping import StaleSweep, finish_or_purge_stale_uploads, sweep_stray_uploads
from pzone_api.processing.photo_queue import (
    STORED,
    Outcome,
    PhotoQueue,
    job_id,
    photo_queue_from_settings,
    release_lease,
    requeue_stuck,
    take_lease,
)

__all__ = [
    "FINISHING_GRACE_S",
    "STORED",
    "Completion",
    "Outcome",
    "PhotoQueue",
    "StaleSweep",
    "await_processing",
    "complete",
    "complete_many",
    "enqueue_and_wait",
    "finish_or_purge_stale_uploads",
    "job_id",
    "new_claim",
    "photo_queue_from_settings",
    "release_lease",
    "requeue_stuck",
    "sweep_stray_uploads",
    "take_lease",
]
