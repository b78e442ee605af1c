"""HTTP over raw asyncio streams: what a client library would not send, or not so slowly."""

from __future__ import annotations

import asyncio

# A request head that never ends: the last line is not followed by the empty one.
PARTIAL_HEAD = b"GET /api/v1/meta HTTP/1.1\r\nHost: localhost\r\nX-Slow: "


def long_request_line(length: int = 9000) -> bytes:
    """A request whose line is longer than aiohttp reads (8190 bytes)."""
    return b"GET /api/v1/meta?q=" + b"a" * length + b" HTTP/1.1\r\nHost: localhost\r\n\r\n"


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (names lowercase) and body of one HTTP/1.1 response."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def raw_exchange(
    port: int, request: bytes, timeout_s: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as it is and read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()
    return parse_response(data)


async def open_slow(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has sent part of a request head, and sends no more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(PARTIAL_HEAD)
    await writer.drain()
    return reader, writer
