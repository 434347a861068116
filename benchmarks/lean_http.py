"""A lean HTTP/1.1 keep-alive client for load generation on the same machine as the server under test.

The load generator shares the cores with the servers it measures, so every millisecond it spends per request is a
millisecond the server does not get. httpx costs about 2.5 ms of CPU per request here (its pool, its models, h11
in Python); this client writes pre-encoded request bytes on an asyncio ``Protocol`` and parses only the status line
and the ``Content-Length`` (or chunked framing) of the answer: about 0.1 ms per request under uvloop.

Only what a benchmark needs: one request at a time per connection, answers read whole into memory.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass


class HTTPError(Exception):
    """The connection closed, or the answer was not well-formed HTTP/1.1."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


def encode_post(host: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """A whole POST request as bytes, ready to be written as is (and written again: it has no per-request state)."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio's classes

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HTTPError(f"connection closed: {exc or 'by the server'}"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            parsed = _parse(self.buffer)
        except HTTPError as exc:
            self.waiter.set_exception(exc)
            return
        if parsed is not None:
            response, used = parsed
            del self.buffer[:used]
            self.waiter.set_result(response)


def _parse(buffer: bytearray) -> tuple[Response, int] | None:
    """One whole response from the front of ``buffer`` and the bytes it used, or None while it is incomplete."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buffer[:head_end]).decode("latin-1")
    status_line, _, header_text = head.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HTTPError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
    length: int | None = None
    chunked = False
    for line in header_text.split("\r\n"):
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    start = head_end + 4
    if chunked:
        return _parse_chunked(buffer, start, int(parts[1]))
    if length is None:
        raise HTTPError("an answer with neither Content-Length nor chunked framing")
    if len(buffer) < start + length:
        return None
    return Response(int(parts[1]), bytes(buffer[start : start + length])), start + length


def _parse_chunked(buffer: bytearray, start: int, status: int) -> tuple[Response, int] | None:
    body = bytearray()
    at = start
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", at)  # no trailers are expected: the empty line ends it
            if trailer_end < 0:
                return None
            return Response(status, bytes(body)), trailer_end + 2
        if len(buffer) < at + size + 2:
            return None
        body += buffer[at : at + size]
        at += size + 2


class Connection:
    """One keep-alive connection; ``request`` sends pre-encoded bytes and returns the whole answer."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        _, protocol = await asyncio.get_running_loop().create_connection(_Protocol, host, port)
        return cls(protocol)

    @property
    def closed(self) -> bool:
        return self._protocol.closed

    async def request(self, raw: bytes) -> Response:
        protocol = self._protocol
        if protocol.closed or protocol.transport is None:
            raise HTTPError("connection closed")
        protocol.waiter = asyncio.get_running_loop().create_future()
        protocol.transport.write(raw)
        return await protocol.waiter

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()


class Pool:
    """Idle connections reused, new ones opened on demand (for an open-loop generator's overlapping requests).

    Reuse is first in, first out, so the requests spread over every connection the pool holds, as wrk2's do. A
    last-in-first-out pool sends nearly everything down the one connection that was just released: against a
    server of several worker processes (each connection belongs to the worker that accepted it) that loads one
    worker and leaves the others idle.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._idle: collections.deque[Connection] = collections.deque()
        self._all: list[Connection] = []

    async def prefill(self, count: int, first_request: bytes) -> None:
        """Open ``count`` connections one at a time, each with one request, and keep them idle for reuse.

        A burst of connects is accepted by whichever worker process of the server wakes first (it may take them
        all); one at a time, each first answered, they spread over the workers."""
        for _ in range(count):
            conn = await Connection.open(self.host, self.port)
            self._all.append(conn)
            await conn.request(first_request)
            self._idle.append(conn)

    async def request(self, raw: bytes) -> Response:
        conn = self._idle.popleft() if self._idle else None
        if conn is None or conn.closed:
            conn = await Connection.open(self.host, self.port)
            self._all.append(conn)
        response = await conn.request(raw)
        self._idle.append(conn)
        return response

    def close(self) -> None:
        for conn in self._all:
            conn.close()
