"""The sweep: every second, bring back snoozed notifications whose time has come and remove those
whose event expired, with their counts, and push the change to the users' streams.

It runs in every worker process, beside the stream consumer, rather than as an arq cron job: a
snooze should end within about a second of its time, and a cron job runs one worker at a time and
is taken over only when a dead worker's mark expires. Several sweeps at once share the due rows
(store/due.py takes them with SKIP LOCKED), so more workers only make it sturdier.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from service.backends import postgres
from service.errors import Unavailable
from service.metrics import SWEPT
from service.model import Counts
from service.process import Backends
from service.store import due
from workers.housekeeping import go_on, remove_rows

log = logging.getLogger("herald.sweep")

EVERY = 1.0  # seconds between sweeps
WAKE_BATCH = 1_000
EXPIRE_BATCH = 5_000
# One sweep stops after this long and the next goes on, so a million rows expiring at once cannot
# keep snoozes waiting behind them for long.
BUDGET = 5.0


async def sweep(b: Backends, budget: float = BUDGET, stopping: asyncio.Event | None = None) -> tuple[int, int]:
    """One sweep: snoozes first (a person is waiting for them), then expiries, each in batches
    until none is due, `budget` seconds have passed or the worker is stopping. Returns (rows back,
    rows removed)."""
    deadline = time.monotonic() + budget
    woke = 0
    while go_on(deadline, stopping):
        rows = await postgres.run(b.pool, due.wake, WAKE_BATCH, timeout=b.settings.backend_timeout)
        if rows:
            await b.counts.copy([r.counts for r in rows], [(r.inbox_id, r.event_id) for r in rows], again=True)
        woke += len(rows)
        SWEPT.labels("snooze").inc(len(rows))
        if len(rows) < WAKE_BATCH:
            break

    async def expired(conn: asyncpg.Connection) -> tuple[int, list[Counts]]:
        return await due.expire(conn, EXPIRE_BATCH)

    removed, _ = await remove_rows(b, expired, EXPIRE_BATCH, deadline, stopping, SWEPT.labels("expiry"))
    return woke, removed


async def run(b: Backends, stopping: asyncio.Event, every: float = EVERY) -> None:
    """Sweep every `every` seconds until `stopping` is set. A backend that does not answer is
    waited for (the due rows keep), and no failure ends the loop."""
    while not stopping.is_set():
        try:
            await sweep(b, stopping=stopping)
        except Unavailable as exc:
            log.warning("sweep waits for a backend: %s", exc)
        except Exception:
            log.exception("sweep failed; trying again")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), every)
