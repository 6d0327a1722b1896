"""What one process knows of a backend's reachability: the fail-fast memory of a dead backend.

A backend that stops answering (a network partition drops its packets: nothing is refused, every
call just waits) would cost each call its whole timeout, and a request that makes two calls twice
that, for as long as the partition lasts. So each process keeps one `Breaker` per backend, and
every PostgreSQL and Redis call of the process goes through it (`service/db.py` for the pools,
`service/cache.py` for every Redis client):

- while the backend is *down*, calls fail at once with `Unavailable` (PostgreSQL) or a
  `redis.exceptions.ConnectionError` (Redis), instead of waiting;
- a *probe* decides up and down, never a request: a cheap call (`SELECT 1` on a connection of its
  own, a `PING` on a client of its own) with a short bound, every `every` seconds, so a process
  with no traffic still notices by itself. Two probes in a row that fail mark the backend down;
  one that answers marks it up again, and everything recovers without a restart;
- a call that waited its full timeout does not mark the backend down by itself (a slow statement
  is not an outage): it asks for a probe at once, and the probe's answer decides;
- PostgreSQL calls in flight when the backend is marked down are ended at once with
  `Unavailable` (asyncpg would otherwise wait out the statement's own, longer, timeout); a Redis
  call in flight ends at its socket timeout.

With the defaults (probe every second, bounded by 1.5 s), a partition is known within about 6 s of
its start, whatever the traffic; after that no request waits for the dead backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from service.errors import Unavailable
from service.metrics import BACKEND_UP

log = logging.getLogger("herald.breaker")

PROBE_EVERY = 1.0
PROBE_WITHIN = 1.5
FAILURES_TO_TRIP = 2


class Breaker:
    """One backend, as this process sees it. `probe(within)` raises when the backend does not
    answer within `within` seconds. Probing runs while `watch()` does (`start`/`stop`)."""

    def __init__(
        self,
        name: str,
        probe: Callable[[float], Awaitable[None]],
        *,
        every: float = PROBE_EVERY,
        within: float = PROBE_WITHIN,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self._probe = probe
        self._close = close
        self.every = every
        self.within = within
        self.up = True  # until a probe says otherwise: a process does not start by refusing work
        self.known = False  # whether any probe has answered yet (readiness)
        self.down_since: float | None = None
        self._failures = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[object]] = set()
        self._cut: set[asyncio.Task[object]] = set()
        self.changed = asyncio.Event()  # set on every change of state (tests and readiness wait on it)
        BACKEND_UP.labels(name).set(1)

    @property
    def ready(self) -> bool:
        return self.up and self.known

    def check(self) -> None:
        """Raise at once while the backend is down."""
        if not self.up:
            raise Unavailable(f"{self.name} is not answering")

    def suspect(self) -> None:
        """A call waited its full timeout: probe now rather than at the next tick."""
        self._wake.set()

    @contextlib.asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Fail at once while down; end the block with `Unavailable` if the backend goes down while
        it runs (it would otherwise wait for an answer that is not coming)."""
        self.check()
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - always inside a task under asyncio
            yield
            return
        self._inflight.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if task in self._cut and task.uncancel() == 0:
                raise Unavailable(f"{self.name} stopped answering") from None
            raise
        finally:
            self._inflight.discard(task)
            self._cut.discard(task)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.watch(), name=f"herald-probe-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._close is not None:
            with contextlib.suppress(Exception):
                await self._close()

    async def watch(self) -> None:
        while True:
            suspected = self._wake.is_set()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._probe(self.within), self.within)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of the probe is the backend not answering
                self._failures += 1
                if self.up and (suspected or self._failures >= FAILURES_TO_TRIP):
                    self._mark_down(exc)
            else:
                self._failures = 0
                self.known = True
                if not self.up:
                    self._mark_up()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.every)

    def _mark_down(self, exc: BaseException) -> None:
        self.up = False
        self.down_since = time.monotonic()
        BACKEND_UP.labels(self.name).set(0)
        log.warning("%s is not answering (%s); failing fast until a probe answers", self.name, _describe(exc))
        for task in self._inflight:
            if not task.done():
                self._cut.add(task)
                task.cancel()
        self._notify()

    def _mark_up(self) -> None:
        since = self.down_since
        self.up = True
        self.down_since = None
        BACKEND_UP.labels(self.name).set(1)
        log.warning(
            "%s answers again%s", self.name, "" if since is None else f" after {time.monotonic() - since:.1f} s"
        )
        self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
