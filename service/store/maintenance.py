"""Keeping data in bounds and counts honest: retention and count reconciliation.

Both work in small batches, each its own short transaction, so neither holds locks for long nor
stalls the fan-out; both lock a user's counts row only after the inbox rows they touch, in user id
order, the same order every other writer uses (inbox first, then counts), so they cannot deadlock
with it. Counts are of shown rows only (a snoozed row is not counted; schema.sql).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from service.model import Counts
from service.store.counts import AS_COUNTED, as_counts, remove

# Oldest rows first. The BRIN index on inbox.created_at finds them without a full scan: rows are
# written in roughly the order of their time, which is what BRIN needs.
_OLD_ROWS = f"""
DELETE FROM inbox WHERE id IN (
    SELECT id FROM inbox WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED
)
RETURNING {AS_COUNTED}
"""  # noqa: S608
# Every row of an event has the event's time as its own, so an event older than the cutoff has no
# rows left once the inbox is done; one still being fanned out is kept until it is finished.
_OLD_EVENTS = """
DELETE FROM events WHERE id IN (
    SELECT id FROM events WHERE occurred_at < $1 AND fanout_done_at IS NOT NULL LIMIT $2 FOR UPDATE SKIP LOCKED
)
"""

# A user's counted rows (shown, not archived) counted now: what their stored counts must equal.
_COUNTED = """
SELECT count(*) FILTER (WHERE read_at IS NULL)::int AS unread, count(*)::int AS total,
       count(*) FILTER (WHERE read_at IS NULL AND seen_at IS NULL)::int AS unseen
FROM inbox WHERE user_id = {user} AND snoozed_until IS NULL AND archived_at IS NULL
"""
# One slice of users, their stored counts beside their rows counted now (one snapshot).
_DRIFT_SCAN = f"""
SELECT c.user_id, c.unread <> x.unread OR c.total <> x.total OR c.unseen <> x.unseen
FROM inbox_counts c, LATERAL ({_COUNTED.format(user="c.user_id")}) x
WHERE c.user_id > $1
ORDER BY c.user_id
LIMIT $2
"""  # noqa: S608
_LOCK_ONE = "SELECT 1 FROM inbox_counts WHERE user_id = $1 FOR UPDATE"
# Run after _LOCK_ONE, in its transaction: every writer changes inbox rows before it takes this
# lock, so rows counted now are exactly those whose change is already in the stored count.
_REPAIR = f"""
UPDATE inbox_counts c SET unread = x.unread, total = x.total, unseen = x.unseen, version = c.version + 1
FROM ({_COUNTED.format(user="$1")}) x
WHERE c.user_id = $1 AND (c.unread <> x.unread OR c.total <> x.total OR c.unseen <> x.unseen)
RETURNING c.user_id, c.unread, c.total, c.version, c.unseen
"""  # noqa: S608


async def expire_rows(conn: asyncpg.Connection, cutoff: datetime, batch: int) -> tuple[int, list[Counts]]:
    """Delete up to `batch` inbox rows older than `cutoff` and take them off their users' counts,
    in one transaction. Returns how many went and the new counts."""
    return await remove(conn, _OLD_ROWS, cutoff, batch)


async def expire_events(conn: asyncpg.Connection, cutoff: datetime, batch: int) -> int:
    result = await conn.execute(_OLD_EVENTS, cutoff, batch)
    return int(result.split()[-1])


async def drift_scan(conn: asyncpg.Connection, after: int, batch: int) -> tuple[int | None, list[int]]:
    """The next slice of users after `after`: the last user id seen (None at the end) and those
    whose stored counts disagree with their rows."""
    rows = await conn.fetch(_DRIFT_SCAN, after, batch)
    if not rows:
        return None, []
    return rows[-1][0], [r[0] for r in rows if r[1]]


async def repair(conn: asyncpg.Connection, user_ids: Sequence[int]) -> list[Counts]:
    """Set each user's counts from their rows, under the counts row's lock; only real drift is
    written. Returns the repaired counts."""
    fixed: list[Counts] = []
    for user_id in sorted(user_ids):
        async with conn.transaction():
            await conn.execute(_LOCK_ONE, user_id)
            row = await conn.fetchrow(_REPAIR, user_id)
        if row is not None:
            fixed.append(as_counts(row))
    return fixed
