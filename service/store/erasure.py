"""Erasing a user: every statement, in the order service/erasure.py runs them.

    mark      the user inactive and `erasing_since` set, in one statement (schema.sql, "Erasure")
    writers   the transactions writing the inbox right now, waited for before the first batch
    batch     up to `size` of the user's rows, taken off their counts in the same transaction
    finish    one transaction: any row left, everything else that names the user, the user row

Every statement names the user by their internal id, found by the mark from (tenant, external id),
so nothing here can reach another user's rows or counts.
"""

from __future__ import annotations

from typing import cast

import asyncpg

from service.model import Counts, Record
from service.store.counts import AS_COUNTED, Tally

_MARK = """
UPDATE users SET active = false, erasing_since = coalesce(erasing_since, now())
WHERE tenant_id = $1 AND external_id = $2
RETURNING id
"""
_ERASING = "SELECT erasing_since IS NOT NULL FROM users WHERE tenant_id = $1 AND external_id = $2"
_STILL_MARKED = "SELECT EXISTS (SELECT 1 FROM users WHERE id = $1 AND erasing_since IS NOT NULL)"
_MARKED = "SELECT id FROM users WHERE erasing_since IS NOT NULL ORDER BY erasing_since LIMIT $1"

# Why wait for writers: a fan-out statement that took its snapshot before the mark committed still
# sees the user as active, and may add a row for them after the batches have gone past. Every
# statement that writes the inbox takes the table's ROW EXCLUSIVE lock before it takes its snapshot
# and holds it until its transaction ends, so the transactions holding that lock just after the
# mark are the only ones that can still do so; any later one sees the mark and skips the user. They
# are found in pg_locks and waited for by their virtual transaction ids, as CREATE INDEX
# CONCURRENTLY waits for writers: nothing is locked, and no writer waits for the erasure.
_WRITERS = """
SELECT coalesce(array_agg(DISTINCT virtualtransaction), '{}') FROM pg_locks
WHERE locktype = 'relation' AND relation = 'inbox'::regclass AND mode = 'RowExclusiveLock' AND granted
  AND pid <> pg_backend_pid()
"""
_RUNNING = "SELECT count(*) FROM pg_locks WHERE locktype = 'virtualxid' AND virtualxid = ANY ($1::text[])"

# The next `$3` rows after event `$2`, in event order along the (user_id, event_id) index, so that a
# batch starts where the last one ended rather than stepping over the entries it left behind. Found
# by index, deleted by their row address (no second lookup per row); `user_id = $1` is checked again
# on the row itself. What each row was worth in the counts comes back (AS_COUNTED) to be taken off.
_BATCH = f"""
DELETE FROM inbox
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM inbox WHERE user_id = $1 AND event_id > $2 ORDER BY event_id LIMIT $3
)) AND user_id = $1
RETURNING event_id, {AS_COUNTED}
"""  # noqa: S608

# Rows a batch did not meet, because one changed under it (a snooze ending gives a row a new
# address, and the batch then skips it). Normally none.
_ROWS_LEFT = "DELETE FROM inbox WHERE user_id = $1"
# Everything else that names the user, by its index on user_id, before the user row (their foreign
# keys would refuse it otherwise). A new table of per-user state gets its DELETE here: the pending
# webhook deliveries naming the user belong in this list once webhooks are stored.
PER_USER = (
    "DELETE FROM preferences WHERE user_id = $1",
    "DELETE FROM subscriptions WHERE user_id = $1",
    "DELETE FROM tokens WHERE user_id = $1",
    "DELETE FROM inbox_counts WHERE user_id = $1",
    # Every webhook delivery naming the user, sent or not: one not sent yet is never sent.
    "DELETE FROM webhook_deliveries WHERE user_id = $1",
)
_USER = "DELETE FROM users WHERE id = $1 AND erasing_since IS NOT NULL RETURNING id"


async def mark(conn: asyncpg.Connection, tenant_id: int, external_id: str) -> int | None:
    """Mark the user as being erased (again, harmlessly, if they are); their id, or None."""
    value: int | None = await conn.fetchval(_MARK, tenant_id, external_id)
    return value


async def erasing(conn: asyncpg.Connection, tenant_id: int, external_id: str) -> bool:
    """Whether this user exists and is being erased."""
    return bool(await conn.fetchval(_ERASING, tenant_id, external_id))


async def still_marked(conn: asyncpg.Connection, user_id: int) -> bool:
    """False once the erasure is done (or the user never was marked)."""
    return bool(await conn.fetchval(_STILL_MARKED, user_id))


async def marked(conn: asyncpg.Connection, limit: int) -> list[int]:
    """Users whose erasure is not finished, the oldest request first."""
    return [r[0] for r in await conn.fetch(_MARKED, limit)]


async def writers(conn: asyncpg.Connection) -> list[str]:
    """The transactions that hold the inbox's write lock now (virtual transaction ids)."""
    found: list[str] = await conn.fetchval(_WRITERS)
    return found


async def running(conn: asyncpg.Connection, transactions: list[str]) -> int:
    """How many of these transactions have not ended yet."""
    return int(await conn.fetchval(_RUNNING, transactions)) if transactions else 0


class Batch(Record, frozen=True):
    """What one batch did: rows deleted, the last event id reached, the user's counts after it
    (None when they did not change)."""

    rows: int
    after: int
    counts: Counts | None


async def batch(conn: asyncpg.Connection, user_id: int, after: int, size: int) -> Batch:
    """Delete up to `size` of the user's rows whose event id is above `after`, and take them off
    the user's counts, in one transaction."""
    async with conn.transaction():
        gone = await conn.fetch(_BATCH, user_id, after, size)
        tally = Tally()
        # Each row past its first column is AS_COUNTED's, which take_off reads by position.
        tally.take_off(cast("list[asyncpg.Record]", [r[1:] for r in gone]))
        changed = await tally.apply(conn)
    last = max((r[0] for r in gone), default=after)
    return Batch(rows=len(gone), after=last, counts=changed[0] if changed else None)


async def finish(conn: asyncpg.Connection, user_id: int) -> bool:
    """In one transaction, delete the rows left, everything else of the user, and the user. False
    when the user was no longer marked (another eraser finished first, or it never began)."""
    async with conn.transaction():
        await conn.execute(_ROWS_LEFT, user_id)
        for statement in PER_USER:
            await conn.execute(statement, user_id)
        return await conn.fetchval(_USER, user_id) is not None
