"""A minimal HTTP/1.1 client for the load: keep-alive connections, Content-Length bodies only.

httpx spent more CPU per request than the server did (and its pool slows down further with many
requests waiting), which on two shared cores is CPU taken from the server and latency added by
the client. This client does only what the soak needs: it writes a request, reads the status
line, the headers and a Content-Length body, and keeps the connection for the next request.
Anything else (chunked bodies, a malformed answer) is an error the soak reports.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode


class HTTPError(Exception):
    """The request got no well-formed answer: connection refused, reset, timed out or malformed."""


class Reply:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()

    async def exchange(self, request: bytes) -> tuple[Reply, bool]:
        """Send one request; the reply and whether the connection may be used again."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 ") or len(head) < 12:
            raise HTTPError(f"malformed status line: {head[:40]!r}")
        status = int(head[9:12])
        headers: dict[bytes, bytes] = {}
        for line in head[:-4].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"transfer-encoding" in headers:
            raise HTTPError("chunked answer: this client reads Content-Length bodies only")
        length = int(headers.get(b"content-length", b"0"))
        body = await self.reader.readexactly(length) if length else b""
        return Reply(status, headers, body), headers.get(b"connection", b"").lower() != b"close"


def request_bytes(method: str, path: str, host: bytes, headers: dict[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + host]
    lines += [f"{k}: {v}".encode() for k, v in headers.items()]
    if body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


class Pool:
    """Up to `size` keep-alive connections to one server, shared by many tasks."""

    def __init__(self, host: str, port: int, size: int, timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._host = f"{host}:{port}".encode()
        self._idle: list[Connection] = []
        self._slots = asyncio.Semaphore(size)
        self.retried = 0  # requests sent again after the server closed an idle connection under them
        self.closed_by_server = 0  # idle connections found closed by the server before use

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        *,
        json: Any = None,
        body: bytes | None = None,
    ) -> Reply:
        hdrs = dict(headers or {})
        if json is not None:
            body = _encode(json)
            hdrs["Content-Type"] = "application/json"
        raw = request_bytes(method, path, self._host, hdrs, body)
        async with self._slots:
            conn = self._take_idle()
            reused = conn is not None
            try:
                async with asyncio.timeout(self.timeout):
                    if conn is None:
                        conn = await self._open()
                    try:
                        reply, keep = await conn.exchange(raw)
                    except asyncio.IncompleteReadError as exc:
                        if not reused or exc.partial:
                            raise
                        # An idle connection the server closed (its keep-alive timeout) just as we
                        # sent: nothing was answered. Every HTTP client sends again, once, on a
                        # new connection; the report counts how often.
                        self.retried += 1
                        conn.close()
                        conn = await self._open()
                        reply, keep = await conn.exchange(raw)
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                if conn is not None:
                    conn.close()
                raise HTTPError(repr(exc)) from exc
            except BaseException:
                if conn is not None:
                    conn.close()
                raise
            if keep:
                self._idle.append(conn)
            else:
                conn.close()
            return reply

    def _take_idle(self) -> Connection | None:
        """The most recently used idle connection the server has not closed (LIFO keeps the
        others idle long enough for the server to close them, which is found here)."""
        while self._idle:
            conn = self._idle.pop()
            if conn.reader.at_eof() or conn.writer.is_closing():
                conn.close()
                self.closed_by_server += 1
                continue
            return conn
        return None

    async def _open(self) -> Connection:
        return Connection(*await asyncio.open_connection(self.host, self.port))

    async def close(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            conn.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()
