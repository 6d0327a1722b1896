"""What one process knows of a backend's reachability: the fail-fast memory of a dead backend.

A backend that stops answering (a network partition drops its packets: nothing is refused, every
call just waits) would cost each call its whole timeout, and a request that makes two calls twice
that, for as long as the partition lasts. So each process keeps one `Breaker` per backend, and
every PostgreSQL and Redis call of the process goes through it (`service/backends/postgres.py` for the pools,
`service/counts/__init__.py` for every Redis client):

- while the backend is *down*, calls fail at once with `Unavailable` (PostgreSQL) or a
  `redis.exceptions.ConnectionError` (Redis), instead of waiting;
- a *probe* decides up and down, never a request: a cheap call (`SELECT 1` on a connection of its
  own, a `PING` on a client of its own) with a short bound, every `every` seconds, in a thread of
  its own, so a process with no traffic (or a busy event loop) still notices by itself. Two probes
  in a row that fail mark the backend down; one that answers marks it up again, and everything
  recovers without a restart;
- a call that waited its full timeout does not mark the backend down by itself (a slow statement
  is not an outage): it asks for a probe at once, and the probe's answer decides;
- PostgreSQL calls in flight when the backend is marked down are ended at once (their connections
  are closed under them, and they fail with `Unavailable`): asyncpg would otherwise wait out the
  statement's own, longer, timeout. A Redis call in flight ends at its socket timeout.

With the defaults (probe every second, bounded by 2 s), a partition is known within about 6 s of
its start, whatever the traffic; after that no request waits for the dead backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

from service.errors import Unavailable
from service.metrics import BACKEND_UP

log = logging.getLogger("herald.breaker")

PROBE_EVERY = 1.0
PROBE_WITHIN = 2.0
FAILURES_TO_TRIP = 2


class Terminable(Protocol):
    def terminate(self) -> None: ...


class Breaker:
    """One backend, as this process sees it. `probe(within)` raises when the backend does not
    answer within `within` seconds; `close()` releases what the probes opened.

    The probes run in a thread of their own, on an event loop of their own: a process whose loop
    is busy (a fan-out chunk encoding thousands of rows) must not take its own stall for a backend
    that stopped answering, and a probe must still run while every connection of the pool is stuck.
    """

    def __init__(
        self,
        name: str,
        probe: Callable[[float], Awaitable[None]],
        *,
        every: float = PROBE_EVERY,
        within: float = PROBE_WITHIN,
        close: Callable[[], Awaitable[None]] | None = None,
        unreachable: tuple[type[BaseException], ...] = (TimeoutError, OSError),
    ) -> None:
        self.name = name
        # What a failed probe must raise to count: the backend did not answer. Anything else (too
        # many connections, a refused password) is an answer, and not an outage to fail fast on.
        self._unreachable: tuple[type[BaseException], ...] = (TimeoutError, *unreachable)
        self._probe = probe
        self._close = close
        self.every = every
        self.within = within
        # Written by the probing thread, read by the process's loop: single attribute writes.
        self.up = True  # until a probe says otherwise: a process does not start by refusing work
        self.known = False  # whether any probe has answered yet (readiness)
        self.down_since: float | None = None
        self._failures = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the process's loop, where calls run
        self._probing: asyncio.AbstractEventLoop | None = None  # the probing thread's loop
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._held: set[Terminable] = set()
        BACKEND_UP.labels(name).set(1)

    @property
    def ready(self) -> bool:
        return self.up and self.known

    def check(self) -> None:
        """Raise at once while the backend is down."""
        if not self.up:
            raise Unavailable(f"{self.name} is not answering")

    def suspect(self) -> None:
        """A call waited its full timeout: probe now rather than at the next tick (the probes
        still decide, so a slow statement alone never marks a backend down)."""
        probing, wake = self._probing, self._wake
        if probing is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the thread is stopping
                probing.call_soon_threadsafe(wake.set)

    @contextlib.contextmanager
    def holding(self, conn: Terminable) -> Iterator[None]:
        """While the block runs, `conn` is closed at once if the backend is marked down: a call
        waiting on it then fails (as a lost connection) instead of waiting for an answer that is
        not coming. No task is cancelled: a cancellation would have to be told apart from the
        caller's own, and a graceful release would wait for the dead server all the same."""
        self._held.add(conn)
        try:
            yield
        finally:
            self._held.discard(conn)

    def start(self) -> None:
        """Start probing (from the process's loop, whose calls the breaker guards)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._loop = asyncio.get_running_loop()
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=f"herald-probe-{self.name}", daemon=True
        )
        self._thread.start()
        started.wait(5)

    async def stop(self) -> None:
        thread, probing, stop = self._thread, self._probing, self._stop
        if thread is None:
            return
        if probing is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                probing.call_soon_threadsafe(stop.set)
        await asyncio.to_thread(thread.join, self.within + 5)
        self._thread = None

    def _run(self, started: threading.Event) -> None:
        async def main() -> None:
            self._probing = asyncio.get_running_loop()
            self._wake, self._stop = asyncio.Event(), asyncio.Event()
            started.set()
            try:
                await self.watch(self._wake, self._stop)
            finally:
                if self._close is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._close(), self.within)
                self._probing = None

        asyncio.run(main())

    async def watch(self, wake: asyncio.Event, stop: asyncio.Event) -> None:
        while not stop.is_set():
            wake.clear()
            try:
                await asyncio.wait_for(self._probe(self.within), self.within)
            except self._unreachable as exc:
                self._failures += 1
                if self.up and self._failures >= FAILURES_TO_TRIP:
                    self._mark_down(exc)
            except Exception as exc:  # it answered, with an error: reachable all the same
                log.debug("%s answered its probe with %s", self.name, _describe(exc))
                self._answered()
            else:
                self._answered()
            waiting = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
            await asyncio.wait(waiting, timeout=self.every, return_when=asyncio.FIRST_COMPLETED)
            for future in waiting:
                future.cancel()

    def _answered(self) -> None:
        self._failures = 0
        self.known = True
        if not self.up:
            self._mark_up()

    def _mark_down(self, exc: BaseException) -> None:
        self.up = False
        self.down_since = time.monotonic()
        BACKEND_UP.labels(self.name).set(0)
        log.warning("%s is not answering (%s); failing fast until a probe answers", self.name, _describe(exc))
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the process's loop has closed
                self._loop.call_soon_threadsafe(self._cut_inflight)

    def _cut_inflight(self) -> None:
        if self.up:  # it answered again in the meantime
            return
        for conn in list(self._held):
            conn.terminate()

    def _mark_up(self) -> None:
        since = self.down_since
        self.up = True
        self.down_since = None
        BACKEND_UP.labels(self.name).set(1)
        after = "" if since is None else f" after {time.monotonic() - since:.1f} s"
        log.warning("%s answers again%s", self.name, after)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
