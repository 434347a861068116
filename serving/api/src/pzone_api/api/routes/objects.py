"""Signed object URLs of the local-folder store (the embedded default; on S3 the URLs are S3's own)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor, register_url_convertor

from pzone.storage import InvalidSignature, LocalObjectStore, ObjectNotFound, ObjectTooLarge
from pzone_api.api.deps import StoreDep
from pzone_api.api.errors import Responses, refused

router = APIRouter(prefix="/api/objects", tags=["objects"])


class ObjectKeyConvertor(PathConvertor):
    """Starlette's ``path``, across line breaks too (its ``.*`` stops at one): every /api/objects/ request reaches
    these routes, which refuse a malformed key as a bad signature, instead of the web UI's fallback (404, 405)."""

    regex = "(?s:.*)"


register_url_convertor("object_key", ObjectKeyConvertor())

# The signature is in the query (method, expires, sig, and for a PUT its content type and size limit).
SIGNED = refused(403, "The signature is missing, expired, or not for this object (bad_signature).") | refused(
    404, "No such object, or objects are served by S3 here (not_found)."
)
# Photos' thumbnails and previews: not JSON.
IMAGE: Responses = {
    200: {
        "description": "The object's bytes, with its stored content type.",
        "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _local(store: object) -> LocalObjectStore:
    if not isinstance(store, LocalObjectStore):
        raise HTTPException(404, detail={"code": "not_found", "reason": "objects are served by S3 here"})
    return store


@router.put(
    "/{key:object_key}",
    status_code=204,
    responses=SIGNED | refused(413, "Larger than the signed size limit (too_large)."),
)
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


@router.get(
    "/{key:object_key}",
    response_class=StreamingResponse,  # no JSON 200 in the document: IMAGE declares it
    responses=IMAGE | SIGNED,
)
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
