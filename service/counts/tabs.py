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
(as a badge poll does).

And the changes a bell makes one at a time do not throw it away: marking read or unread, archiving,
deleting by id, taking an action, opening the bell (seen) return, from the same statement, what they
did to each group (`CountsChange.tabs`), and so do new rows of small events to named users (each
adds one unread, unseen row of its event's type and category; several in one stream read are summed
per user, whose counts took one version step for all of them). The copy that sends the new counts
to Redis brings a breakdown cached at the version just before to the new version in the same script
(`_SET_COUNTS` in copies.py). A breakdown at any other version is left alone, so deltas arriving out
of order or twice change nothing, and the next poll counts again. Changes of many rows at once
(read-all, delete-all, bulk by filter, snooze, expiry, retention), fan-outs to topics or everyone
(their chunks return no version per recipient: the copy reads the counts afresh, possibly at a later
user change's version) and thread updates are not worked out group by group: the first poll after
one counts again (one grouped count, about 10 ms for 10,000 rows).

The cache is a Redis hash: `v` the version, and per group (its type, category and archive state,
as `group_field` names it) `t…`, `u…` and `s…` the total, unread and unseen
numbers, so that a change is a few HINCRBYs on the groups it touched.

One breakdown answers any set of filters: each tab is a sum over its groups, so the unfiltered tab
is the badge's numbers by construction.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Literal, cast

import asyncpg
import msgspec
import redis.asyncio as aioredis

from service.backends import postgres
from service.errors import Unavailable
from service.keys import tabs_key
from service.model import TabGroup

log = logging.getLogger("herald.counts")

TABS_TTL = 300


class Breakdown(msgspec.Struct, frozen=True):
    version: int
    groups: list[TabGroup]


class TabFilter(msgspec.Struct, frozen=True, kw_only=True):
    """Which notifications a tab counts: any of `type`, any of `category` (None: any), and the
    inbox (`archived` False), the archive (True) or both ("all")."""

    type: frozenset[str] | None = None
    category: frozenset[str] | None = None
    archived: bool | Literal["all"] = False

    def holds(self, group: TabGroup) -> bool:
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

_encode_group = msgspec.json.Encoder().encode
_decode_group = msgspec.json.Decoder(tuple[str, str | None, bool]).decode


def group_field(group: TabGroup) -> str:
    """The name a group's numbers have in the cached hash (after their `t`, `u` or `s`): its type,
    category and archive state as a JSON array (text: the Lua scripts' msgpack has no bytes)."""
    return _encode_group((group.type, group.category, group.archived)).decode()


def _from_hash(stored: dict[bytes, bytes]) -> Breakdown | None:
    """A cached breakdown, or None when there is none or it cannot be read (counted again)."""
    version = stored.get(b"v")
    if version is None:
        return None
    groups = []
    try:
        for name, total in stored.items():
            if name[:1] == b"t":
                field = name[1:]
                type_, category, archived = _decode_group(field)
                unread, unseen = int(stored[b"u" + field]), int(stored[b"s" + field])
                groups.append(TabGroup(type_, category, archived, int(total), unread, unseen))
        return Breakdown(version=int(version), groups=groups)
    except (KeyError, ValueError, msgspec.DecodeError):
        return None


# KEYS[1] the user's breakdown, ARGV[1] its version, ARGV[2] the TTL, then field and value pairs:
# a counted breakdown replaces an older one (or none), never a newer one (brought forward by a
# change meanwhile, see copies.py).
_FILL = """
local held = tonumber(redis.call('HGET', KEYS[1], 'v'))
if held and held >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1])
for at = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[at], ARGV[at + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


async def breakdown_of(conn: asyncpg.Connection, user_id: int) -> Breakdown:
    rows = await conn.fetch(_BREAKDOWN, user_id)
    if not rows:
        return Breakdown(version=0, groups=[])
    groups = [TabGroup(r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows if r[1] is not None]
    return Breakdown(version=rows[0][0], groups=groups)


class Tabs:
    """The breakdown cache: one Redis hash per user, answered only at the current count version."""

    def __init__(self, client: aioredis.Redis, pool: asyncpg.Pool, timeout: float) -> None:
        self._redis = client
        self._pool = pool
        self._timeout = timeout
        self._fill = client.register_script(_FILL)

    async def cached(self, user_id: int) -> Breakdown | None:
        """The breakdown Redis holds for the user, at whatever version (None: none, or Redis is away)."""
        try:
            stored = await cast(Awaitable[dict[bytes, bytes]], self._redis.hgetall(tabs_key(user_id)))
        except Unavailable:
            return None
        return _from_hash(stored)

    async def breakdown(self, user_id: int, version: int | None, cached: Breakdown | None) -> Breakdown:
        """The breakdown at count `version` (None: Redis is away, count now): `cached` (read
        beside the counts, see Counter.tabs) when it is of that version, else counted and cached."""
        if version is not None and cached is not None and cached.version == version:
            return cached
        fresh = await postgres.run(self._pool, breakdown_of, user_id, timeout=self._timeout)
        if version is not None:
            args: list[int | str] = [fresh.version, TABS_TTL]
            for group in fresh.groups:
                field = group_field(group)
                args += ("t" + field, group.total, "u" + field, group.unread, "s" + field, group.unseen)
            try:
                await self._fill(keys=[tabs_key(user_id)], args=args)
            except Exception as exc:  # only a cache: the answer stands
                if not isinstance(exc, Unavailable):
                    log.exception("a tab breakdown could not be cached")
        return fresh
