"""A webhook receiver on this machine: a small HTTP/1.1 server that records every POST it gets.

For the tests (signatures checked, endpoints that fail, hang or redirect) and the bench (deliveries
per second): plain asyncio, keep-alive, no framework, so it is never the slower side. `answer`
decides each response from the request: a status (and headers), after as long as it likes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec

MAX_BODY = 1 << 20
REASONS = {200: "OK", 204: "No Content", 307: "Temporary Redirect", 500: "Internal Server Error"}


class Received(msgspec.Struct, frozen=True, kw_only=True):
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def msg_id(self) -> str:
        return self.headers.get("webhook-id", "")


Answer = Callable[[Received], Awaitable[int | tuple[int, dict[str, str]]]]


async def no_content(_: Received) -> int:
    return 204


class Receiver:
    def __init__(self, answer: Answer = no_content, *, keep: bool = True) -> None:
        self.answer = answer
        self.keep = keep  # False: count only (the bench), so memory stays flat
        self.received: list[Received] = []
        self.count = 0
        self._arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Receiver:
        self._server = await asyncio.start_server(self._serve, host, port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Until `count` requests have arrived in all; the requests. TimeoutError past `timeout`."""
        async with asyncio.timeout(timeout):
            while self.count < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                _, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(min(length, MAX_BODY))
                request = Received(path=path, headers=headers, body=body, at=time.monotonic())
                self.count += 1
                if self.keep:
                    self.received.append(request)
                self._arrived.set()
                answered = await self.answer(request)
                status, extra = answered if isinstance(answered, tuple) else (answered, {})
                out = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", "content-length: 0"]
                out += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode())
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        except asyncio.CancelledError:
            # Stopped (`stop`). Ending normally: Python 3.11's stream server logs a handler task that
            # ends cancelled as an error.
            pass
        finally:
            self._connections.discard(task)
            writer.close()
