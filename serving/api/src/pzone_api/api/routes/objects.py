"""Signed object URLs of the local-folder store (the embedded default; on S3 the URLs are S3's own)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from pzone.storage import InvalidSignature, LocalObjectStore, ObjectNotFound, ObjectTooLarge
from pzone_api.api.deps import StoreDep

router = APIRouter(prefix="/api/objects", tags=["objects"])


def _local(store: object) -> LocalObjectStore:
    if not isinstance(store, LocalObjectStore):
        raise HTTPException(404, detail={"code": "not_found", "reason": "objects are served by S3 here"})
    return store


@router.put("/{key:path}", status_code=204)
async def put_object(key: str, request: Request, store: StoreDep) -> Response:
    """Receive the bytes of a presigned PUT; the signature fixes key, expiry, content type and size limit."""
    local = _local(store)
    content_type = request.headers.get("content-type", "")
    try:
        grant = local.verify_signature(key, request.query_params, method="PUT", content_type=content_type)
    except InvalidSignature as exc:
        raise HTTPException(403, detail={"code": "bad_signature", "reason": str(exc)}) from None
    declared = request.headers.get("content-length")
    if (
        grant.max_bytes is not None
        and declared is not None
        and declared.isdigit()
        and int(declared) > grant.max_bytes
    ):
        raise HTTPException(413, detail={"code": "too_large", "reason": f"at most {grant.max_bytes} bytes"})
    # Spool to a temp file as it streams in (never whole in memory), then move it into the store in one write.
    with tempfile.TemporaryFile() as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if grant.max_bytes is not None and size > grant.max_bytes:
                raise HTTPException(
                    413, detail={"code": "too_large", "reason": f"at most {grant.max_bytes} bytes"}
                )
            spool.write(chunk)
        spool.seek(0)
        try:
            # copy and fsync in the threadpool: on the event loop they would stall every other request meanwhile
            await run_in_threadpool(local.put_stream, key, spool, content_type, max_bytes=grant.max_bytes)
        except ObjectTooLarge:
            raise HTTPException(413, detail={"code": "too_large", "reason": "upload too large"}) from None
    return Response(status_code=204)


@router.get("/{key:path}")
def get_object(key: str, request: Request, store: StoreDep) -> StreamingResponse:
    """Serve an object through a presigned GET URL."""
    local = _local(store)
    try:
        local.verify_signature(key, request.query_params, method="GET")
    except InvalidSignature as exc:
        raise HTTPException(403, detail={"code": "bad_signature", "reason": str(exc)}) from None
    info = local.head(key)
    if info is None:
        raise HTTPException(404, detail={"code": "not_found", "reason": "no such object"})

    def chunks() -> Iterator[bytes]:
        try:
            with local.open(key) as stream:
                while chunk := stream.read(256 * 1024):
                    yield chunk
        except ObjectNotFound:
            return

    return StreamingResponse(
        chunks(),
        media_type=info.content_type,
        headers={"Content-Length": str(info.size), "Cache-Control": "private, max-age=300"},
    )
