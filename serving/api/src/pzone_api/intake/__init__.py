"""Photo intake: create an upload, check what arrived, store the original once and its stripped derivatives.

Split in two, as the processes are: the API process does the cheap part (:mod:`.uploads`: :func:`create_upload`,
:func:`claim_upload`, :func:`stage_upload`: rows, sizes, declared types, staging the bytes in the object store);
the photo worker does the CPU-heavy part (:mod:`.staged`: :func:`process_staged`), fed by the queue of
:mod:`pzone_api.processing`.

Nothing is left half-stored: a rejected upload leaves no photo row and no object (objects this request created are
deleted again; originals that already existed — same bytes uploaded before — are kept).
"""

from pzone_api.intake.staged import DERIVATIVE_SIZES, discard_photo, process_staged
from pzone_api.intake.uploads import (
    ACCEPTED_TYPES,
    NOT_AUTHENTICATED,
    BatchItemError,
    IntakeError,
    UploadRequest,
    UploadTicket,
    autocommit,
    check_batch_size,
    check_declared,
    check_target,
    claim_upload,
    claim_uploads,
    create_upload,
    create_uploads,
    stage_upload,
)

__all__ = [
    "ACCEPTED_TYPES",
    "DERIVATIVE_SIZES",
    "NOT_AUTHENTICATED",
    "BatchItemError",
    "IntakeError",
    "UploadRequest",
    "UploadTicket",
    "autocommit",
    "check_batch_size",
    "check_declared",
    "check_target",
    "claim_upload",
    "claim_uploads",
    "create_upload",
    "create_uploads",
    "discard_photo",
    "process_staged",
    "stage_upload",
]
