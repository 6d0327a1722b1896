"""A user's preferences: the event types, categories and topics they muted.

Every statement is scoped to one user id (the caller's). A user who muted nothing has no row: an
empty set of mutes deletes it, which keeps the table, and the fan-out's anti-join against it, small.
The fan-out applies the mutes itself (service/store/fanout.py); nothing here touches the inbox.
"""

from __future__ import annotations

import asyncpg

from service.model import Record

_GET = "SELECT muted_types, muted_categories, muted_topics FROM preferences WHERE user_id = $1"
_PUT = """
INSERT INTO preferences (user_id, muted_types, muted_categories, muted_topics)
VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id) DO UPDATE
SET muted_types = excluded.muted_types, muted_categories = excluded.muted_categories,
    muted_topics = excluded.muted_topics, updated_at = now()
"""
_DELETE = "DELETE FROM preferences WHERE user_id = $1"


class Mutes(Record, frozen=True):
    types: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.types or self.categories or self.topics)


async def get(conn: asyncpg.Connection, user_id: int) -> Mutes:
    row = await conn.fetchrow(_GET, user_id)
    if row is None:
        return Mutes()
    return Mutes(types=tuple(row[0]), categories=tuple(row[1]), topics=tuple(row[2]))


async def replace(conn: asyncpg.Connection, user_id: int, mutes: Mutes) -> None:
    """Replace the user's mutes with these (none at all removes the row)."""
    if mutes.empty:
        await conn.execute(_DELETE, user_id)
    else:
        await conn.execute(_PUT, user_id, list(mutes.types), list(mutes.categories), list(mutes.topics))
