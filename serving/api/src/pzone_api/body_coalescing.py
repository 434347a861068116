"""Large request bodies handed to the application in large pieces.

A client on a phone's link sends a photo in pieces of a few to some tens of kB, and the deployment streams the
multipart upload on to the API as it arrives (nginx ``proxy_request_buffering off``). Starlette's multipart parser
then runs once per piece, and each piece past its 1 MiB in-memory spool is written to the temp file in a threadpool
hop: at 16 KiB pieces that is about 0.25 ms of API CPU per piece, 190 of them per 3 MB photo. Gathering the pieces
first (a wait for the next one costs a few microseconds) makes the parser and the hop run once per ``min_bytes``.
Memory per request stays bounded by ``min_bytes`` plus one piece; the body is never held whole.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MIN_BYTES = 256 * 1024


def is_photo_upload(scope: Scope) -> bool:
    """The one route with large bodies: the multipart upload of simple clients."""
    return scope["method"] == "POST" and scope["path"] == "/api/photos/upload"


class CoalescedBody:
    """Pure ASGI middleware: for requests ``applies(scope)`` accepts, the app's ``receive()`` returns the body in
    pieces of at least ``min_bytes`` (the last one may be smaller), in order, with nothing added or lost.

    Anything but a body message (a disconnect) is passed on at once, and the bytes gathered so far are dropped
    with it: the request is over.
    """

    def __init__(
        self,
        app: ASGIApp,
        min_bytes: int = DEFAULT_MIN_BYTES,
        applies: Callable[[Scope], bool] = is_photo_upload,
    ) -> None:
        if min_bytes < 1:
            raise ValueError(f"min_bytes must be at least 1, got {min_bytes}")
        self.app = app
        self.min_bytes = min_bytes
        self.applies = applies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.applies(scope):
            await self.app(scope, receive, send)
            return
        min_bytes = self.min_bytes
        done = False

        async def coalesced() -> Message:
            nonlocal done
            if done:  # after the last piece, whatever the server says next (a disconnect)
                return await receive()
            pieces: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return message
                body: bytes = message.get("body", b"")
                if body:
                    pieces.append(body)
                    size += len(body)
                more = bool(message.get("more_body", False))
                if not more or size >= min_bytes:
                    done = not more
                    joined = pieces[0] if len(pieces) == 1 else b"".join(pieces)  # no copy for one piece
                    return {"type": "http.request", "body": joined, "more_body": more}

        await self.app(scope, coalesced, send)
