"""The request-body coalescing middleware of the upload route (pure ASGI, driven by hand), and the upload
benchmark's paced client link."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from benchmarks.intake_uploads import Link
from pzone_api.body_coalescing import DEFAULT_MIN_BYTES, CoalescedBody, is_photo_upload

pytestmark = pytest.mark.unit


def upload_scope(path: str = "/api/photos/upload", method: str = "POST") -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": []}


def body_messages(pieces: list[bytes], *, then: list[Message] | None = None) -> list[Message]:
    messages: list[Message] = [
        {"type": "http.request", "body": piece, "more_body": i < len(pieces) - 1}
        for i, piece in enumerate(pieces)
    ]
    return messages + (then or [])


def run(middleware_of: Any, scope: Scope, messages: list[Message], reads: int | None = None) -> list[Message]:
    """What the wrapped app's ``receive()`` returns: until the body's end, or ``reads`` calls."""
    queue = list(messages)
    seen: list[Message] = []

    async def receive() -> Message:
        if not queue:
            await asyncio.sleep(3600)  # a server with nothing more to say blocks
        return queue.pop(0)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while reads is None or len(seen) < reads:
            message = await receive()
            seen.append(message)
            if reads is None and (message["type"] != "http.request" or not message.get("more_body")):
                return

    async def send(message: Message) -> None:
        raise AssertionError("nothing is sent")

    asyncio.run(asyncio.wait_for(middleware_of(app)(scope, receive, send), 5))
    return seen


def test_small_pieces_reach_the_app_in_large_ones_whole_and_in_order() -> None:
    pieces = [bytes([i % 251]) * 1000 for i in range(700)]  # 700 kB in 1 kB pieces
    seen = run(lambda app: CoalescedBody(app, min_bytes=64 * 1024), upload_scope(), body_messages(pieces))
    bodies = [m["body"] for m in seen]
    assert b"".join(bodies) == b"".join(pieces)
    assert all(len(b) >= 64 * 1024 for b in bodies[:-1]) and len(bodies[-1]) > 0
    assert len(seen) == -(-700 // 66)  # 66 pieces of 1000 bytes are the fewest that reach 64 KiB
    assert [m["more_body"] for m in seen] == [True] * (len(seen) - 1) + [False]


def test_a_body_in_one_message_and_an_empty_body_pass_as_they_are() -> None:
    one = run(CoalescedBody, upload_scope(), body_messages([b"x" * 10]))
    assert one == [{"type": "http.request", "body": b"x" * 10, "more_body": False}]
    empty = run(CoalescedBody, upload_scope(), [{"type": "http.request", "body": b"", "more_body": False}])
    assert empty == [{"type": "http.request", "body": b"", "more_body": False}]
    # empty messages in between add nothing and end nothing
    gaps = run(CoalescedBody, upload_scope(), body_messages([b"a", b"", b"b", b""]))
    assert gaps == [{"type": "http.request", "body": b"ab", "more_body": False}]


def test_a_disconnect_mid_body_reaches_the_app_at_once() -> None:
    messages = [{"type": "http.request", "body": b"x" * 100, "more_body": True}, {"type": "http.disconnect"}]
    seen = run(CoalescedBody, upload_scope(), messages, reads=1)
    assert seen == [{"type": "http.disconnect"}]  # the request is over; what was gathered is dropped


def test_after_the_last_piece_receive_passes_through() -> None:
    messages = body_messages([b"abc"], then=[{"type": "http.disconnect"}])
    seen = run(CoalescedBody, upload_scope(), messages, reads=2)
    assert seen == [{"type": "http.request", "body": b"abc", "more_body": False}, {"type": "http.disconnect"}]


@pytest.mark.parametrize(
    "scope",
    [
        upload_scope("/api/photos"),  # the JSON routes
        upload_scope("/api/photos/upload", method="PUT"),
        upload_scope("/api/objects/uploads/x", method="PUT"),
        {"type": "lifespan"},
        {"type": "websocket", "path": "/api/photos/upload", "method": "GET"},
    ],
)
def test_other_requests_get_the_servers_own_receive(scope: Scope) -> None:
    seen: list[Receive] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(receive)

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        pass

    asyncio.run(CoalescedBody(app)(scope, receive, send))
    assert seen == [receive]


def test_only_the_multipart_upload_is_coalesced_and_the_minimum_is_checked() -> None:
    assert is_photo_upload(upload_scope()) and not is_photo_upload(upload_scope("/api/photos/upload/"))
    assert DEFAULT_MIN_BYTES == 256 * 1024
    with pytest.raises(ValueError, match="min_bytes"):
        CoalescedBody(lambda scope, receive, send: None, min_bytes=0)  # type: ignore[arg-type,return-value]


def test_the_benchmark_link_paces_the_bytes_and_keeps_them() -> None:
    body = bytes(range(256)) * 400  # 102,400 bytes
    link = Link(mbit_per_s=8.0, piece_bytes=16 * 1024)  # 1 MB/s: about 0.1 s for the body
    started = time.perf_counter()
    pieces = list(link.paced(body))
    elapsed = time.perf_counter() - started
    assert b"".join(pieces) == body
    assert [len(p) for p in pieces] == [16384] * 6 + [4096]
    assert elapsed >= 0.09  # paced: the last piece leaves no earlier than the link allows
