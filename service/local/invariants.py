"""The invariant every test, soak and benchmark checks, written once: a user's counted rows (a snoozed
or archived row is not counted) = their `inbox_counts` (unread, total, unseen) = the Redis copy, wherever Redis
holds one. It lives here, not in tests/, because the soak (bench/) checks it too.
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


class CountsCheck(msgspec.Struct, frozen=True, kw_only=True):
    """What the check found; `agree` when nothing is off. The `*_off` lists name each user that is."""

    users: int
    rows_off: list[str]
    copies_present: int
    copies_off: list[str]
    # external id -> (unread, total, unseen) of the shown rows: what every profile, badge and stream must say
    shown: dict[str, tuple[int, int, int]]

    @property
    def agree(self) -> bool:
        return not self.rows_off and not self.copies_off


async def check_counts(conn: asyncpg.Connection, redis: aioredis.Redis, tenant_id: int | None = None) -> CountsCheck:
    """Compare rows, `inbox_counts` and the Redis copies of every user (of `tenant_id`, if given).
    Run it at quiescence: a fan-out or a snooze coming back in between is drift it would report."""
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
    return CountsCheck(
        users=len(found),
        rows_off=rows_off,
        copies_present=present,
        copies_off=copies_off,
        shown={r["external_id"]: (r["rows_unread"], r["rows_total"], r["rows_unseen"]) for r in found},
    )
