"""The serving benchmark's load-generator client: framing of answers, keep-alive, errors (a real socket server)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from benchmarks.lean_http import Connection, HTTPError, Pool, _parse, encode_post

pytestmark = pytest.mark.unit

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    length = next(
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length:")
    )
    return head, await reader.readexactly(length)


async def with_server(handler: Handler, client: Callable[[int], Awaitable[None]]) -> None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await client(port)
    finally:
        server.close()
        await server.wait_closed()


def test_encode_post_is_a_complete_request() -> None:
    raw = encode_post("h:1", "/classify", b"abc", {"Content-Type": "x/y"})
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /classify HTTP/1.1"
    assert b"Content-Length: 3" in head and b"Host: h:1" in head and b"Content-Type: x/y" in head
    assert body == b"abc"


def test_parse_waits_for_the_whole_answer_and_leaves_the_next_one() -> None:
    one = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    assert _parse(bytearray(one[:-1])) is None
    assert _parse(bytearray(one[:10])) is None
    response, used = _parse(bytearray(one + b"HTTP/1.1 404")) or (None, 0)
    assert response is not None and (response.status, response.body, used) == (200, b"hello", len(one))


def test_parse_chunked_answers() -> None:
    chunked = (
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n"
    )
    for cut in range(len(chunked)):
        assert _parse(bytearray(chunked[:cut])) is None
    parsed = _parse(bytearray(chunked))
    assert parsed is not None and parsed[0].body == b"abcde" and parsed[1] == len(chunked)


@pytest.mark.parametrize(
    "answer",
    [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 abc OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n"],
)
def test_parse_refuses_what_is_not_a_framed_http_answer(answer: bytes) -> None:
    with pytest.raises(HTTPError):
        _parse(bytearray(answer))


def test_keep_alive_answers_arrive_in_pieces_and_in_order() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            _, body = await read_request(reader)
            seen.append(body)
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body) * 2, body * 2)
            for i in range(0, len(answer), 7):  # the answer in small writes
                writer.write(answer[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0)
        writer.close()

    async def client(port: int) -> None:
        connection = await Connection.open("127.0.0.1", port)
        for body in (b"one", b"two-two", b"3"):
            response = await connection.request(encode_post(f"127.0.0.1:{port}", "/x", body, {}))
            assert (response.status, response.body) == (200, body * 2)
        connection.close()

    asyncio.run(with_server(handler, client))
    assert seen == [b"one", b"two-two", b"3"]


def test_a_closed_connection_is_an_error_and_the_pool_opens_a_new_one() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        _, body = await read_request(reader)
        if body == b"drop":
            writer.close()  # no answer at all
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def client(port: int) -> None:
        host = f"127.0.0.1:{port}"
        connection = await Connection.open("127.0.0.1", port)
        with pytest.raises(HTTPError, match="closed"):
            await connection.request(encode_post(host, "/", b"drop", {}))
        pool = Pool("127.0.0.1", port)
        for _ in range(3):
            assert (await pool.request(encode_post(host, "/", b"x", {}))).body == b"ok"
            await asyncio.sleep(0.05)  # let the server's close reach the idle connection
        pool.close()

    asyncio.run(with_server(handler, client))
    assert connections == 4  # the dropped one, then one per pooled request as each was closed after answering


def port_recording_server(used: list[int]) -> Handler:
    """A keep-alive server that answers every request empty and records the client port of its connection
    (a body of ``slow`` is answered after 50 ms)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("peername")[1]
        while True:
            try:
                _, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            used.append(port)
            await asyncio.sleep(0.05 if body == b"slow" else 0)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    return handler


def test_the_pool_spreads_requests_over_its_connections() -> None:
    used: list[int] = []  # the client's port of each request's connection

    async def client(port: int) -> None:
        host = f"127.0.0.1:{port}"
        pool = Pool("127.0.0.1", port)
        await asyncio.gather(*(pool.request(encode_post(host, "/", b"slow", {})) for _ in range(3)))
        for _ in range(6):
            await pool.request(encode_post(host, "/", b"x", {}))
        pool.close()

    asyncio.run(with_server(port_recording_server(used), client))
    opened = set(used[:3])
    assert len(opened) == 3  # three at once: three connections
    # then, one at a time, each connection in turn (a LIFO pool would use one of them six times)
    assert sorted(used[3:].count(p) for p in opened) == [2, 2, 2]


def test_prefill_opens_connections_one_by_one_and_reuses_them() -> None:
    ports: list[int] = []

    async def client(port: int) -> None:
        host = f"127.0.0.1:{port}"
        pool = Pool("127.0.0.1", port)
        await pool.prefill(4, encode_post(host, "/", b"warm", {}))
        for _ in range(8):
            await pool.request(encode_post(host, "/", b"x", {}))
        pool.close()

    asyncio.run(with_server(port_recording_server(ports), client))
    warmed = ports[:4]
    assert len(set(warmed)) == 4  # four connections, each answered once before the next opened
    assert ports[4:] == warmed * 2  # then reused in turn, no new connection
