"""Changing many users' counts at once, for the jobs that change rows of many users in one batch
(retention, expiry, the end of snoozes).

Such a job first changes its rows (which locks them), then hands the per-user differences here, in
the same transaction. The counts rows are locked in user-id order, the order every fan-out also
takes them in, so a batch and a fan-out cannot deadlock; and rows before counts, like every other
writer.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from service.model import Counts

# What a removed row was worth in its user's counts, for a DELETE's RETURNING: (user_id, unread,
# counted, unseen). A snoozed or archived row was not counted, so it is worth nothing.
AS_COUNTED = """user_id, snoozed_until IS NULL AND archived_at IS NULL AND read_at IS NULL,
    snoozed_until IS NULL AND archived_at IS NULL,
    snoozed_until IS NULL AND archived_at IS NULL AND read_at IS NULL AND seen_at IS NULL"""

_LOCK = "SELECT user_id FROM inbox_counts WHERE user_id = ANY ($1::bigint[]) ORDER BY user_id FOR UPDATE"
_ADD = """
UPDATE inbox_counts c
SET unread = c.unread + d.unread, total = c.total + d.total, unseen = c.unseen + d.unseen,
    version = c.version + 1
FROM unnest($1::bigint[], $2::int[], $3::int[], $4::int[]) AS d (user_id, unread, total, unseen)
WHERE c.user_id = d.user_id
RETURNING c.user_id, c.unread, c.total, c.version, c.unseen
"""


class Tally:
    """Per-user differences (unread, total, unseen) of one batch of changed rows."""

    def __init__(self) -> None:
        self._by_user: dict[int, list[int]] = {}

    def add(self, user_id: int, unread: int, total: int, unseen: int) -> None:
        entry = self._by_user.setdefault(user_id, [0, 0, 0])
        entry[0] += unread
        entry[1] += total
        entry[2] += unseen

    def take_off(self, rows: Iterable[asyncpg.Record]) -> None:
        """Removed rows, as AS_COUNTED returns them: each comes off what it was counted in."""
        for user_id, unread, counted, unseen in rows:
            self.add(user_id, -int(unread), -int(counted), -int(unseen))

    async def apply(self, conn: asyncpg.Connection) -> list[Counts]:
        """Add the differences to the counts (inside the caller's transaction); the new counts of
        every user whose rows changed. A user whose numbers stay the same (an archived row removed)
        still gets a new version: the version says the rows changed, and the tab counts cached under
        it (service/counts/tabs.py) must not be answered again."""
        users = sorted(self._by_user)
        if not users:
            return []
        await conn.execute(_LOCK, users)
        columns = ([self._by_user[u][i] for u in users] for i in range(3))
        rows = await conn.fetch(_ADD, users, *columns)
        return [as_counts(r) for r in rows]


def as_counts(row: asyncpg.Record, at: int = 0) -> Counts:
    """The one place a row becomes Counts: its columns from `at` are user_id, unread, total,
    version, unseen (the order of every statement that returns counts)."""
    return Counts(user_id=row[at], unread=row[at + 1], total=row[at + 2], version=row[at + 3], unseen=row[at + 4])


async def remove(conn: asyncpg.Connection, statement: str, *args: object) -> tuple[int, list[Counts]]:
    """Run a DELETE of inbox rows that returns AS_COUNTED and take what it removed off the counts,
    in one transaction. Returns how many rows went and the new counts."""
    async with conn.transaction():
        gone = await conn.fetch(statement, *args)
        tally = Tally()
        tally.take_off(gone)
        changed = await tally.apply(conn)
    return len(gone), changed
