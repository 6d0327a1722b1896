"""Periodic jobs (arq cron, one run at a time across all workers): retention and reconciliation.

Retention (`HERALD_RETENTION_DAYS`, off by default) removes inbox rows older than the cutoff and
then events that no longer have any, in batches of BATCH rows, each its own short transaction, with
a pause between batches so that fan-outs and readers always get their turn. Counts are taken down
in the same transaction as the rows and copied to Redis, so the badge never counts a removed row.

The stream is trimmed (every minute) of entries every worker is done with: those older than both
the oldest entry still pending (read, not acknowledged) and the last one handed out. Without
it, `herald:events` would keep every event ever published, in memory. The same job lets users who
no longer hold a count copy or a stream leave the watched set (service/counts/watched.py), which
would otherwise keep everyone who ever polled, and make fan-outs copy to all of them.

Reconciliation compares every user's stored counts with their rows, a slice of users per run
(the cursor is kept in Redis, so a large table is covered over several runs), and repairs any
difference under the counts row's lock. It should never find any: `herald_count_drift_total`
says how many it did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import redis.exceptions
from prometheus_client import Counter

from service.backends import postgres
from service.keys import GROUP, RECONCILE_CURSOR, STREAM
from service.metrics import COUNT_DRIFT, RETENTION_DELETED
from service.model import Counts
from service.process import Backends
from service.store import maintenance

log = logging.getLogger("herald.maintenance")

BATCH = 5_000
PAUSE = 0.05  # seconds between batches
# Each run stops after this long and the next run goes on. arq marks every job in progress for the
# longest job timeout plus 10 s, and a job of a worker that died is taken over only when that mark
# expires: a long cron timeout would delay the takeover of fan-out chunks by as much.
BUDGET = 25.0
JOB_TIMEOUT = 35
RECONCILE_USERS_PER_RUN = 50_000
RECONCILE_BATCH = 500


def go_on(deadline: float, stopping: asyncio.Event | None) -> bool:
    """Another batch fits: time is left, and the worker is not stopping."""
    return time.monotonic() < deadline and not (stopping is not None and stopping.is_set())


async def remove_rows(
    b: Backends,
    batch: Callable[[asyncpg.Connection], Awaitable[tuple[int, list[Counts]]]],
    size: int,
    deadline: float,
    stopping: asyncio.Event | None,
    removed: Counter,
    pause: float = 0.0,
) -> tuple[int, bool]:
    """Run `batch` (a removal of at most `size` inbox rows, with their counts, in one transaction)
    and copy each batch's new counts, until a batch finds fewer than `size` rows, time is up or the
    worker stops. Returns the rows removed and whether none are left."""
    total = 0
    while go_on(deadline, stopping):
        gone, changed = await postgres.run(b.pool, batch, timeout=b.settings.backend_timeout)
        if changed:
            await b.counts.copy(changed)
        total += gone
        removed.inc(gone)
        if gone < size:
            return total, True
        await asyncio.sleep(pause)
    return total, False


async def apply_retention(
    b: Backends,
    days: int,
    now: datetime | None = None,
    budget: float = BUDGET,
    stopping: asyncio.Event | None = None,
) -> tuple[int, int]:
    """Remove what is older than `days`, for at most about `budget` seconds (or until `stopping`
    is set); returns (inbox rows, events) removed."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    deadline = time.monotonic() + budget
    events = 0

    async def batch(conn: asyncpg.Connection) -> tuple[int, list[Counts]]:
        return await maintenance.expire_rows(conn, cutoff, BATCH)

    rows, done = await remove_rows(b, batch, BATCH, deadline, stopping, RETENTION_DELETED.labels("inbox"), PAUSE)
    if not done:
        return rows, events  # out of time: the next run goes on with the rows, then the events
    while go_on(deadline, stopping):
        gone = await postgres.run(b.pool, maintenance.expire_events, cutoff, BATCH, timeout=b.settings.backend_timeout)
        events += gone
        RETENTION_DELETED.labels("events").inc(gone)
        if gone < BATCH:
            break
        await asyncio.sleep(PAUSE)
    if rows or events:
        log.info("retention removed %d inbox rows and %d events older than %s", rows, events, cutoff.isoformat())
    return rows, events


async def reconcile(
    b: Backends, users: int = RECONCILE_USERS_PER_RUN, budget: float = BUDGET, stopping: asyncio.Event | None = None
) -> list[Counts]:
    """Check the next `users` users' counts against their rows (for at most about `budget`
    seconds, or until `stopping` is set) and repair any drift."""
    deadline = time.monotonic() + budget
    raw = await b.redis.get(RECONCILE_CURSOR)
    after = int(raw) if raw else 0
    repaired: list[Counts] = []
    seen = 0
    while seen < users and go_on(deadline, stopping):
        scan_for = max(b.settings.backend_timeout, 30)
        last, drifted = await postgres.run(b.pool, maintenance.drift_scan, after, RECONCILE_BATCH, timeout=scan_for)
        if drifted:
            fixed = await postgres.run(b.pool, maintenance.repair, drifted, timeout=b.settings.backend_timeout)
            if fixed:
                COUNT_DRIFT.inc(len(fixed))
                log.warning("repaired the counts of %d users: %s", len(fixed), [c.user_id for c in fixed][:20])
                await b.counts.copy(fixed)
                repaired += fixed
        if last is None:
            after = 0  # the end of the table: the next run starts again from the beginning
            break
        after = last
        seen += RECONCILE_BATCH
        await asyncio.sleep(PAUSE)
    await b.redis.set(RECONCILE_CURSOR, after)
    return repaired


def _entry_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


async def trim_stream(b: Backends) -> int:
    """Remove stream entries every consumer is done with; returns how many went."""
    try:
        groups = await b.redis.xinfo_groups(STREAM)
    except redis.exceptions.ResponseError:  # no stream yet
        return 0
    group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
    if group is None:
        return 0  # no consumer yet: nothing is known to be done
    keep = _entry_id(group["last-delivered-id"])
    keep = (keep[0], keep[1] + 1)  # entries after the last one handed out are not read yet
    pending = await b.redis.xpending(STREAM, GROUP)
    if pending["pending"]:
        keep = min(keep, _entry_id(pending["min"]))
    # Exact, not approximate: the id is a bound, and MINID never removes an entry at or above it.
    removed: int = await b.redis.xtrim(STREAM, minid=f"{keep[0]}-{keep[1]}", approximate=False)
    return removed


async def prune_watched(b: Backends, budget: float = BUDGET, stopping: asyncio.Event | None = None) -> int:
    """One walk over the watched set (for at most about `budget` seconds); returns how many left it."""
    deadline = time.monotonic() + budget
    after, gone = 0, 0
    while go_on(deadline, stopping):
        after, left = await b.counts.watched.prune(after)
        gone += left
        if not after:
            break
    return gone


async def trim_job(ctx: dict[str, Any]) -> None:
    await trim_stream(ctx["backends"])
    await prune_watched(ctx["backends"], stopping=ctx.get("stopping"))


async def retention_job(ctx: dict[str, Any]) -> None:
    b: Backends = ctx["backends"]
    if b.settings.retention_days:
        await apply_retention(b, b.settings.retention_days, stopping=ctx.get("stopping"))


async def reconcile_job(ctx: dict[str, Any]) -> None:
    await reconcile(ctx["backends"], stopping=ctx.get("stopping"))
