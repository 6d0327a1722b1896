"""Tab counts: exact unread, unseen and total numbers of up to 20 filters of a user's inbox at once
(`POST /v1/counts`).

Counting, or counters? Measured on a 2-core machine for a user with 10,000 notifications whose rows
lie spread over the table, as fan-outs to many users leave them:
- counting the rows joined to their events (type and category live on the event): 21–57 ms,
  whatever the plan;
- counting the rows alone, with the event's type and category copied onto each row at fan-out (as
  its time already is): about 7 ms, one statement for every tab at once, grouped by (type,
  category, archived) with the unread and unseen numbers of each group;
- keeping counters per (user, type, category) would answer from a few rows, but every path that
  changes a row (a fan-out of 100,000 rows, read, unread, archive, delete, seen, snooze, the sweep,
  retention, threads) would then change a second counts row for each row it changes: about twice
  the fan-out's writes, for a number that is read far less often than the badge.
So tabs are counted, and the grouped result (the "breakdown") is cached in Redis under the user's
count version. Every change of a user's rows changes that version in the same statement (see
service/counts/__init__.py), so a cached breakdown whose version is the version of the counts the
badge answers with is exact: a bell that polls its tabs while nothing changes costs two Redis reads
(as a badge poll does), and the first poll after a change one grouped count.

One breakdown answers any set of filters: each tab is a sum over its groups, so the unfiltered tab
is the badge's numbers by construction.
"""

from __future__ import annotations

import logging
from typing import Literal

import asyncpg
import msgspec
import redis.asyncio as aioredis

from service.backends import postgres
from service.backends import redis as redis_cache
from service.errors import Unavailable
from service.keys import tabs_key

log = logging.getLogger("herald.counts")

TABS_TTL = 300


class Group(msgspec.Struct, array_like=True, frozen=True):
    """A user's shown notifications of one type, category and archive state."""

    type: str
    category: str | None
    archived: bool
    total: int
    unread: int
    unseen: int


class Breakdown(msgspec.Struct, array_like=True, frozen=True):
    version: int
    groups: list[Group]


class TabFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which notifications a tab counts: any of `type`, any of `category` (None: any), and the
    inbox (`archived` False), the archive (True) or both ("all")."""

    type: frozenset[str] | None = None
    category: frozenset[str] | None = None
    archived: bool | Literal["all"] = False

    def holds(self, group: Group) -> bool:
        if self.archived != "all" and group.archived != self.archived:
            return False
        if self.type is not None and group.type not in self.type:
            return False
        return self.category is None or (group.category is not None and group.category in self.category)


class TabCount(msgspec.Struct, frozen=True):
    unread: int
    unseen: int
    total: int


def count(breakdown: Breakdown, tab: TabFilter) -> TabCount:
    groups = [g for g in breakdown.groups if tab.holds(g)]
    return TabCount(
        unread=sum(g.unread for g in groups), unseen=sum(g.unseen for g in groups), total=sum(g.total for g in groups)
    )


# The user's version and breakdown in one snapshot. Rows written before type and category were
# copied onto rows (NULL type) take them from their event. The rows are grouped by their own columns
# first (the few groups a user has, and one per event among such older rows), and only those groups
# looked up and grouped again: grouped at once by expressions that read the event, the statement was
# planned as a sort of every row by those expressions, estimated costly enough for PostgreSQL's JIT
# compiler (where it is built in, as in distributions' packages), which then took as long as the
# count: 30 ms against 13 ms for 10,000 rows on the machine of docs/performance.md.
_BREAKDOWN = """
SELECT c.version, b.type, b.category, b.archived, b.total, b.unread, b.unseen
FROM inbox_counts c
LEFT JOIN LATERAL (
    SELECT coalesce(g.type, e.type) AS type,
           CASE WHEN g.type IS NULL THEN e.category ELSE g.category END AS category,
           g.archived,
           sum(g.total)::int AS total, sum(g.unread)::int AS unread, sum(g.unseen)::int AS unseen
    FROM (
        SELECT i.type, i.category, CASE WHEN i.type IS NULL THEN i.event_id END AS legacy,
               i.archived_at IS NOT NULL AS archived,
               count(*) AS total,
               count(*) FILTER (WHERE i.read_at IS NULL) AS unread,
               count(*) FILTER (WHERE i.read_at IS NULL AND i.seen_at IS NULL) AS unseen
        FROM inbox i
        WHERE i.user_id = c.user_id AND i.snoozed_until IS NULL
        GROUP BY 1, 2, 3, 4
    ) g LEFT JOIN events e ON e.id = g.legacy
    GROUP BY 1, 2, 3
) b ON true
WHERE c.user_id = $1
"""

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Breakdown).decode


async def breakdown_of(conn: asyncpg.Connection, user_id: int) -> Breakdown:
    rows = await conn.fetch(_BREAKDOWN, user_id)
    if not rows:
        return Breakdown(version=0, groups=[])
    groups = [Group(r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows if r[1] is not None]
    return Breakdown(version=rows[0][0], groups=groups)


class Tabs:
    """The breakdown cache: one Redis key per user, answered only at the current count version."""

    def __init__(self, client: aioredis.Redis, pool: asyncpg.Pool, timeout: float) -> None:
        self._redis = client
        self._pool = pool
        self._timeout = timeout

    async def cached(self, user_id: int) -> Breakdown | None:
        """The breakdown Redis holds for the user, at whatever version (None: none, or Redis is away)."""
        return await redis_cache.cached(self._redis.get(tabs_key(user_id)), _decode)

    async def breakdown(self, user_id: int, version: int | None, cached: Breakdown | None) -> Breakdown:
        """The breakdown at count `version` (None: Redis is away, count now): `cached` (read
        beside the counts, see Counter.tabs) when it is of that version, else counted and cached."""
        if version is not None and cached is not None and cached.version == version:
            return cached
        fresh = await postgres.run(self._pool, breakdown_of, user_id, timeout=self._timeout)
        if version is not None:
            try:
                await self._redis.set(tabs_key(user_id), _encode(fresh), ex=TABS_TTL)
            except Exception as exc:  # only a cache: the answer stands
                if not isinstance(exc, Unavailable):
                    log.exception("a tab breakdown could not be cached")
        return fresh
