"""The invariant every test, soak and benchmark checks, written once: a user's counted rows (a snoozed
or archived row is not counted) = their `inbox_counts` (unread, total, unseen) = the Redis copy, wherever Redis
holds one. It lives here, not in tests/, because the soak (bench/) checks it too.

Beside it, what tab counts (`POST /v1/counts`) must answer: the shown rows by the type their item
shows and by archive state. Tabs and bulk filters read the type and category copied onto each row
(a thread's change with its newest event), lists show the row's event's: a row whose copy differs
from its event would be counted in one tab and listed in another, so such rows are reported too.
"""

from __future__ import annotations

import asyncpg
import msgspec
import redis.asyncio as aioredis

from service.counts import decode_counts, encode_counts
from service.counts.copies import REBUILDING
from service.keys import count_key
from service.model import Counts

# Every user's counts beside what the shown rows say; $1 limits it to one tenant (NULL: all).
COUNTS_AND_ROWS = """
SELECT c.user_id, u.external_id, c.version, c.unread, c.total, c.unseen,
       count(i.id) FILTER (WHERE i.read_at IS NULL) AS rows_unread,
       count(i.id) AS rows_total,
       count(i.id) FILTER (WHERE i.read_at IS NULL AND i.seen_at IS NULL) AS rows_unseen
FROM inbox_counts c
JOIN users u ON u.id = c.user_id
LEFT JOIN inbox i ON i.user_id = c.user_id AND i.snoozed_until IS NULL AND i.archived_at IS NULL
WHERE $1::bigint IS NULL OR u.tenant_id = $1
GROUP BY c.user_id, u.external_id, c.version, c.unread, c.total, c.unseen
ORDER BY c.user_id
"""


# Every user's shown rows by the type of the event they show and by archive state: (unread, total,
# unseen) of each, what a tab of that type in the inbox or the archive counts.
ROWS_BY_TYPE = """
SELECT u.external_id, e.type, i.archived_at IS NOT NULL AS archived,
       count(*) FILTER (WHERE i.read_at IS NULL) AS unread,
       count(*) AS total,
       count(*) FILTER (WHERE i.read_at IS NULL AND i.seen_at IS NULL) AS unseen
FROM inbox i
JOIN users u ON u.id = i.user_id
JOIN events e ON e.id = i.event_id
WHERE i.snoozed_until IS NULL AND ($1::bigint IS NULL OR u.tenant_id = $1)
GROUP BY 1, 2, 3
"""
# Rows whose copied type or category is not their event's (NULL: a row from before they were copied,
# which tabs read from the event).
COPIES_OFF = """
SELECT u.external_id, i.id, i.type, i.category, e.type, e.category
FROM inbox i
JOIN users u ON u.id = i.user_id
JOIN events e ON e.id = i.event_id
WHERE i.type IS NOT NULL AND (i.type, i.category) IS DISTINCT FROM (e.type, e.category)
  AND ($1::bigint IS NULL OR u.tenant_id = $1)
ORDER BY i.id
LIMIT 100
"""

Numbers = tuple[int, int, int]  # (unread, total, unseen)


class CountsCheck(msgspec.Struct, frozen=True, kw_only=True):
    """What the check found; `agree` when nothing is off. The `*_off` lists name each user that is."""

    users: int
    rows_off: list[str]
    copies_present: int
    copies_off: list[str]
    # external id -> (unread, total, unseen) of the shown rows: what every profile, badge and stream must say
    shown: dict[str, Numbers]
    # external id -> type -> the same numbers of the shown rows of that type: in the inbox (`by_type`,
    # what a tab `{"type": [t]}` counts) and in the archive (`archived_by_type`). Users and types
    # without such rows are absent.
    by_type: dict[str, dict[str, Numbers]] = {}
    archived_by_type: dict[str, dict[str, Numbers]] = {}
    # rows whose copied type or category differ from their event's, named
    types_off: list[str] = []

    @property
    def agree(self) -> bool:
        return not self.rows_off and not self.copies_off and not self.types_off

    def archived(self, user: str) -> Numbers:
        """The user's archived rows in all: what a tab `{"archived": true}` counts."""
        return add(*self.archived_by_type.get(user, {}).values())


def add(*numbers: Numbers) -> Numbers:
    return (sum(n[0] for n in numbers), sum(n[1] for n in numbers), sum(n[2] for n in numbers))


async def check_counts(conn: asyncpg.Connection, redis: aioredis.Redis, tenant_id: int | None = None) -> CountsCheck:
    """Compare rows, `inbox_counts` and the Redis copies of every user (of `tenant_id`, if given), and
    gather the shown rows by type and archive state (for tab counts). Run it at quiescence: a
    fan-out or a snooze coming back in between is drift it would report."""
    found = await conn.fetch(COUNTS_AND_ROWS, tenant_id)
    rows_off = [
        f"{r['external_id']}: counts {r['unread']}/{r['total']}/{r['unseen']} "
        f"rows {r['rows_unread']}/{r['rows_total']}/{r['rows_unseen']} (unread/total/unseen)"
        for r in found
        if (r["unread"], r["total"], r["unseen"]) != (r["rows_unread"], r["rows_total"], r["rows_unseen"])
    ]
    copies = await redis.mget([count_key(r["user_id"]) for r in found]) if found else []
    copies_off = []
    present = 0
    for r, raw in zip(found, copies, strict=True):
        if raw is None or raw == REBUILDING:  # no copy (a reader's mark is none): rebuilt when read
            continue
        present += 1
        fields = ("version", "unread", "total", "unseen")
        held = Counts(user_id=r["user_id"], **{name: r[name] for name in fields})
        if decode_counts(r["user_id"], raw) != held:
            copies_off.append(
                f"{r['external_id']}: copy {raw.decode(errors='replace')} db {encode_counts(held).decode()}"
            )
    by_type: dict[str, dict[str, Numbers]] = {}
    archived_by_type: dict[str, dict[str, Numbers]] = {}
    for r in await conn.fetch(ROWS_BY_TYPE, tenant_id):
        shelf = archived_by_type if r["archived"] else by_type
        shelf.setdefault(r["external_id"], {})[r["type"]] = (r["unread"], r["total"], r["unseen"])
    types_off = [
        f"{r[0]}: row {r[1]} copies type/category {r[2]}/{r[3]}, its event has {r[4]}/{r[5]}"
        for r in await conn.fetch(COPIES_OFF, tenant_id)
    ]
    return CountsCheck(
        users=len(found),
        rows_off=rows_off,
        copies_present=present,
        copies_off=copies_off,
        shown={r["external_id"]: (r["rows_unread"], r["rows_total"], r["rows_unseen"]) for r in found},
        by_type=by_type,
        archived_by_type=archived_by_type,
        types_off=types_off,
    )
