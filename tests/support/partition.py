"""A network partition on demand: a TCP proxy in front of a backend that can stop passing packets.

While `blackholed`, the proxy still accepts connections but nothing goes through in either
direction and nothing is refused: every call waits, exactly as when a network drops a backend's
packets. What was sent meanwhile is held, as TCP's retransmissions would deliver it, and goes
through once the partition heals. A connection closed by either side is closed on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Iterator


class Partition:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.target_port = host, target_port
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        sock = socket.socket()
        sock.bind((host, 0))
        self.port: int = sock.getsockname()[1]
        self._sock = sock
        self._thread = threading.Thread(target=self._loop.run_forever, name="partition", daemon=True)

    def start(self) -> Partition:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(5)
        return self

    def blackhole(self) -> None:
        self._loop.call_soon_threadsafe(self._open.clear)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _serve(self) -> None:
        self._open.set()
        self._sock.listen(1024)
        self._server = await asyncio.start_server(self._accept, sock=self._sock)

    async def _shut(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_out)
        upstream_out: asyncio.StreamWriter | None = None
        try:
            await self._open.wait()  # a partition: accepted, never answered
            upstream_in, upstream_out = await asyncio.open_connection(self.host, self.target_port)
            self._writers.add(upstream_out)
            await asyncio.gather(self._pump(client_in, upstream_out), self._pump(upstream_in, client_out))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for writer in (client_out, upstream_out):
                if writer is not None:
                    writer.close()
                    self._writers.discard(writer)
            self._tasks.discard(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await source.read(65536)
                await self._open.wait()
                if not data:
                    break
                sink.write(data)
                await sink.drain()
        finally:
            sink.close()


@contextlib.contextmanager
def partition(target_port: int) -> Iterator[Partition]:
    proxy = Partition(target_port).start()
    try:
        yield proxy
    finally:
        proxy.close()
