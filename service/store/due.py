"""Rows whose time has come: snoozes that end, and notifications whose event expired.

The worker's sweep (workers/sweep.py) runs these every second, in batches, each its own short
transaction: the rows change and their users' counts change with them, so a list and a count never
disagree about them, whenever they are read. Rows are found through the two small partial indexes
of schema.sql (only rows with such a time are in them) and taken with SKIP LOCKED, so sweeps of
several workers share the work instead of waiting on each other.
"""

from __future__ import annotations

import asyncpg

from service.model import Counts, Record
from service.store.counts import AS_COUNTED, Tally, remove

# A snoozed row comes back as a new arrival: unread and not yet seen, counted again.
_WAKE = """
UPDATE inbox SET snoozed_until = NULL, read_at = NULL, seen_at = NULL
WHERE id IN (
    SELECT id FROM inbox WHERE snoozed_until <= now() ORDER BY snoozed_until LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING user_id, id, event_id
"""
# Expired rows are deleted outright: nobody can see them any more, and the event itself goes later
# with retention. A snoozed row expires too (and was not counted).
_EXPIRED = f"""
DELETE FROM inbox WHERE id IN (
    SELECT id FROM inbox WHERE expires_at <= now() ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING {AS_COUNTED}
"""  # noqa: S608


class Woke(Record, frozen=True):
    """A row back from its snooze, with its user's counts after the batch that brought it back."""

    counts: Counts
    inbox_id: int
    event_id: int


async def wake(conn: asyncpg.Connection, batch: int) -> list[Woke]:
    """Bring back up to `batch` rows whose snooze has ended, in one transaction."""
    async with conn.transaction():
        rows = await conn.fetch(_WAKE, batch)
        tally = Tally()
        for user_id, _, _ in rows:
            tally.add(user_id, 1, 1, 1)
        counts = {c.user_id: c for c in await tally.apply(conn)}
    return [Woke(counts=counts[user_id], inbox_id=row_id, event_id=event_id) for user_id, row_id, event_id in rows]


async def expire(conn: asyncpg.Connection, batch: int) -> tuple[int, list[Counts]]:
    """Delete up to `batch` rows whose event has expired, and take them off the counts."""
    return await remove(conn, _EXPIRED, batch)
