"""The count invariant (service/local/invariants.py) checked for one range of user ids only: a figure
checks the users it touched, not the millions of rows the other figures of a full run leave behind.

Rows, `inbox_counts` and the Redis copy must agree for every user of the range. A missing copy is
no disagreement (the API rebuilds it from `inbox_counts` on the next read) unless the figure needs
every copy present, as a fan-out does; and then only for the watched users (service/counts/watched.py):
a fan-out copies counts to those only, and a user nobody watches has no copy to keep.
"""

from __future__ import annotations

import msgspec

from bench.base import Bench
from service.counts import decode_counts
from service.keys import WATCHED, count_key
from service.model import Counts

# Each user's counts beside what their shown rows (neither snoozed nor archived) say.
_COUNTS_AND_ROWS = """
SELECT c.user_id, c.version, c.unread, c.total, c.unseen, r.unread, r.total, r.unseen
FROM inbox_counts c
CROSS JOIN LATERAL (
    SELECT (count(*) FILTER (WHERE i.read_at IS NULL))::int AS unread, count(*)::int AS total,
           (count(*) FILTER (WHERE i.read_at IS NULL AND i.seen_at IS NULL))::int AS unseen
    FROM inbox i
    WHERE i.user_id = c.user_id AND i.snoozed_until IS NULL AND i.archived_at IS NULL
) r
WHERE c.user_id BETWEEN $1 AND $2
ORDER BY c.user_id
"""
_MGET = 10_000  # copies read by one MGET


class Agreement(msgspec.Struct, frozen=True, kw_only=True):
    users: int
    rows_off: int  # users whose inbox_counts differ from their rows
    copies_off: int  # users whose Redis copy differs from inbox_counts
    copies_missing: int  # of watched users only
    example: str  # the first user found off, for the note

    def agree(self, *, copies: bool) -> bool:
        """True when nothing is off (and, with `copies`, every copy is present)."""
        return not self.rows_off and not self.copies_off and not (copies and self.copies_missing)

    def __str__(self) -> str:
        text = (
            f"{self.users:,} users: {self.rows_off} counts off their rows, {self.copies_off} copies off, "
            f"{self.copies_missing} copies missing"
        )
        return text + (f" (e.g. {self.example})" if self.example else "")


async def counts_agree(b: Bench, lo: int, hi: int) -> Agreement:
    found = await b.conn.fetch(_COUNTS_AND_ROWS, lo, hi)
    watched = {int(u) for u in await b.redis.zrangebyscore(WATCHED, lo, hi)}
    rows_off = copies_off = missing = 0
    example = ""
    for start in range(0, len(found), _MGET):
        part = found[start : start + _MGET]
        copies = await b.redis.mget([count_key(r[0]) for r in part])
        for r, raw in zip(part, copies, strict=True):
            held = Counts(user_id=r[0], version=r[1], unread=r[2], total=r[3], unseen=r[4])
            if (r[2], r[3], r[4]) != (r[5], r[6], r[7]):
                rows_off += 1
                example = example or f"user {r[0]}: counts {r[2]}/{r[3]}/{r[4]}, rows {r[5]}/{r[6]}/{r[7]}"
            if raw is None:
                missing += r[0] in watched
            elif decode_counts(r[0], raw) != held:
                copies_off += 1
                example = example or f"user {r[0]}: copy {raw.decode(errors='replace')}, counts {held}"
    return Agreement(
        users=len(found), rows_off=rows_off, copies_off=copies_off, copies_missing=missing, example=example
    )
