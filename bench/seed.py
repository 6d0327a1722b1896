"""Set-based seeding: every row comes from one INSERT … SELECT generate_series, never row by row.

The data looks like Herald's own: events in `events`, one small row per recipient in `inbox`
(created_at copied from the event, ids growing with time as arrivals do), and `inbox_counts`
rows that agree exactly with the rows they count (version 1), as Herald's writers keep them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg
import msgspec

from service import admin
from service.store import users

TENANT = "bench"
# Event number g (1 = newest) occurred g seconds before this instant.
NEWEST = datetime(2025, 6, 1, tzinfo=UTC)

_EVENTS = """
INSERT INTO events (tenant_id, external_id, type, title, message, category, tags, trigger_type,
                    action_url, occurred_at, created_at, fanout_done_at)
SELECT $1, 'seed-' || g, 'scan.completed', 'Scan completed',
       'A Scan operation on datastore ' || (g % 500) || ' has completed.', 'Operations',
       ARRAY['nightly'], 'Operation', '/datastores/' || (g % 500) || '/activity?operation_id=' || g,
       $3::timestamptz - g * interval '1 second', $3::timestamptz - g * interval '1 second',
       $3::timestamptz - g * interval '1 second'
FROM generate_series(1, $2) g
"""

# Users named prefix || g for g in lo..hi, each with their (empty) counts row.
_USERS = """
WITH made AS (
    INSERT INTO users (tenant_id, external_id)
    SELECT $1, $2 || g FROM generate_series($3::int, $4::int) g
    RETURNING id
)
INSERT INTO inbox_counts (user_id) SELECT id FROM made
"""
_USER_IDS = "SELECT min(id), max(id), count(*) FROM users WHERE tenant_id = $1 AND external_id LIKE $2 || '%'"

# One row per (user, event): user ids $1..$2, each receiving $3 consecutive events starting at a
# per-user offset (wrapping around the $4 seeded events, whose ids start at $5). Inserted oldest
# first, so row ids grow with created_at as real arrivals do. Every $6-th row (0: none) is read.
_ROWS = """
INSERT INTO inbox (user_id, event_id, created_at, read_at)
SELECT u, $5 + s - 1, $7::timestamptz - s * interval '1 second',
       CASE WHEN $6 > 0 AND s % $6 = 0 THEN $7::timestamptz - s * interval '1 second' + interval '1 minute' END
FROM generate_series($1::bigint, $2::bigint) u,
     LATERAL (SELECT 1 + ((u * 7919 * $8 + j) % $4) AS s FROM generate_series($3 - 1, 0, -1) j) e
"""
_RECOUNT = """
UPDATE inbox_counts c SET unread = x.unread, total = x.total, version = c.version + 1
FROM (SELECT user_id, (count(*) FILTER (WHERE read_at IS NULL))::int AS unread, count(*)::int AS total
      FROM inbox WHERE user_id BETWEEN $1 AND $2 GROUP BY user_id) x
WHERE c.user_id = x.user_id
"""
_SUBSCRIBE = """
INSERT INTO subscriptions (tenant_id, topic, user_id)
SELECT $1, $2, g FROM generate_series($3::bigint, $4::bigint) g
"""
# Users $2, $2 + $4, … up to $3 mute the event type $1, as their PUT /v1/preferences would.
_MUTE = """
INSERT INTO preferences (user_id, muted_types)
SELECT g, ARRAY[$1::text] FROM generate_series($2::bigint, $3::bigint, $4::bigint) g
"""
# $3 snoozed rows for each user id $1..$2 (seeded events $4 .. $4 + $3 - 1), hidden until $5: as the
# inbox holds them after PATCH …/snooze, unread and out of every count, so the counts stay as seeded.
_SNOOZED = """
INSERT INTO inbox (user_id, event_id, created_at, snoozed_until)
SELECT u, $4 + j, $6::timestamptz - (j + 1) * interval '1 second', $5
FROM generate_series($1::bigint, $2::bigint) u, generate_series(0, $3 - 1) j
"""

# $3 events named $2 || g (g = 1..$3; event g occurred g seconds before $4, of type $5[1 + g % n] and
# category $6[1 + (g / n) % m], so that every (type, category) pair occurs), each delivered to every
# user $7..$8 as a fan-out leaves them: the rows of one event together, users in id order, oldest
# event first. Rows carry their event's type and category, as the fan-out copies them. Of each
# user's rows, those of every $9-th event are read, every $10-th seen, every $11-th archived (0: none).
_TYPED = """
WITH ev AS (
    INSERT INTO events (tenant_id, external_id, type, title, message, category, occurred_at, created_at,
                        fanout_done_at)
    SELECT $1, $2 || g, ($5::text[])[1 + g % cardinality($5::text[])], 'Bench', 'A notification to count.',
           ($6::text[])[1 + (g / cardinality($5::text[])) % cardinality($6::text[])],
           $4::timestamptz - g * interval '1 second', $4::timestamptz - g * interval '1 second',
           $4::timestamptz - g * interval '1 second'
    FROM generate_series(1, $3::int) g
    RETURNING id, substr(external_id, length($2) + 1)::int AS g, type, category, occurred_at
)
INSERT INTO inbox (user_id, event_id, created_at, read_at, seen_at, archived_at, type, category)
SELECT u, ev.id, ev.occurred_at,
       CASE WHEN $9 > 0 AND ev.g % $9 = 0 THEN ev.occurred_at + interval '1 minute' END,
       CASE WHEN $10 > 0 AND ev.g % $10 = 0 THEN ev.occurred_at + interval '1 minute' END,
       CASE WHEN $11 > 0 AND ev.g % $11 = 0 THEN ev.occurred_at + interval '2 minutes' END,
       ev.type, ev.category
FROM ev, generate_series($7::bigint, $8::bigint) u
ORDER BY ev.g DESC, u
"""
# Counts exact for users $1..$2 whose rows may be read, seen or archived: only shown rows (neither
# snoozed nor archived) count, as Herald keeps them.
_RECOUNT_SHOWN = """
UPDATE inbox_counts c SET unread = x.unread, total = x.total, unseen = x.unseen, version = c.version + 1
FROM (SELECT user_id, (count(*) FILTER (WHERE read_at IS NULL))::int AS unread, count(*)::int AS total,
             (count(*) FILTER (WHERE read_at IS NULL AND seen_at IS NULL))::int AS unseen
      FROM inbox WHERE user_id BETWEEN $1 AND $2 AND snoozed_until IS NULL AND archived_at IS NULL
      GROUP BY user_id) x
WHERE c.user_id = x.user_id
"""


class Typed(msgspec.Struct, frozen=True, kw_only=True):
    """Events of several types and categories for `typed_rows`, and which of each user's rows are read,
    seen or archived: those of every n-th event (0: none)."""

    prefix: str  # the events' ids are prefix1, prefix2, …
    events: int
    types: list[str]
    categories: list[str]
    read_every: int = 0
    seen_every: int = 0
    archived_every: int = 0


def say(message: str) -> None:
    print(f"  · {message}", flush=True)


class Seeder:
    """What this run has seeded so far (each run starts from an empty database)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.tenant_id = 0
        self.events = 0  # how many seeded events
        self.first_event = 0  # id of event number 1 (the newest)
        self.groups: dict[str, tuple[int, int]] = {}  # user-name prefix -> (first id, last id)

    async def tenant(self) -> int:
        if not self.tenant_id:
            self.tenant_id = await users.ensure_tenant(self.conn, TENANT)
        return self.tenant_id

    async def ensure_events(self, n: int) -> None:
        """At least n events, numbered 1 (newest) to n; event number g has id first_event + g - 1."""
        if self.events >= n:
            return
        if self.events:
            raise RuntimeError("seed the largest number of events first")
        tenant_id = await self.tenant()
        started = time.monotonic()
        await self.conn.execute(_EVENTS, tenant_id, n, NEWEST)
        found = await self.conn.fetchrow(
            "SELECT min(id), max(id) FROM events WHERE tenant_id = $1 AND external_id LIKE 'seed-%'", tenant_id
        )
        assert found is not None
        lo, hi = found
        # One statement over generate_series assigns consecutive identities in order.
        assert hi - lo + 1 == n, (lo, hi, n)
        check = await self.conn.fetchval("SELECT external_id FROM events WHERE id = $1", lo)
        assert check == "seed-1", check
        self.events, self.first_event = n, lo
        say(f"{n:,} events in {time.monotonic() - started:.1f} s")

    async def user_group(self, prefix: str, count: int) -> tuple[int, int]:
        """Users prefix1..prefixN (members, with counts rows); their first and last id."""
        if prefix in self.groups:
            return self.groups[prefix]
        tenant_id = await self.tenant()
        started = time.monotonic()
        for lo in range(1, count + 1, 200_000):
            await self.conn.execute(_USERS, tenant_id, prefix, lo, min(count, lo + 199_999))
        found = await self.conn.fetchrow(_USER_IDS, tenant_id, prefix)
        assert found is not None
        first, last, made = found
        assert made == count, (made, count)
        assert last - first + 1 == count, (first, last, count)
        self.groups[prefix] = (first, last)
        if count > 1000:
            say(f"{count:,} users {prefix}* in {time.monotonic() - started:.1f} s")
        return first, last

    async def token(self, user: str) -> str:
        """A real personal token, made the way `herald admin create-token` makes one."""
        return await admin.create_token(self.conn, TENANT, user)

    async def user_id(self, user: str) -> int:
        tenant_id = await self.tenant()
        found = await users.find_user(self.conn, tenant_id, user)
        assert found is not None
        return found.user_id

    async def rows(self, lo: int, hi: int, per_user: int, *, read_every: int = 0, spread: bool = True) -> None:
        """`per_user` inbox rows for each user id in lo..hi, then their exact counts.

        With `spread`, each user gets a different run of consecutive events; without, every user
        gets events 1..per_user (the newest)."""
        assert per_user <= self.events, "seed enough events first"
        started = time.monotonic()
        batch = max(1, 2_000_000 // per_user)
        for start in range(lo, hi + 1, batch):
            end = min(hi, start + batch - 1)
            await self.conn.execute(
                _ROWS, start, end, per_user, self.events, self.first_event, read_every, NEWEST, 1 if spread else 0
            )
        await self.conn.execute(_RECOUNT, lo, hi)
        made = (hi - lo + 1) * per_user
        if made >= 100_000:
            elapsed = time.monotonic() - started
            say(f"{made:,} inbox rows for {hi - lo + 1:,} users in {elapsed:.1f} s ({made / elapsed:,.0f} rows/s)")

    async def typed_rows(self, lo: int, hi: int, spec: Typed) -> None:
        """`spec.events` new events of its types and categories, each delivered to every user in lo..hi
        (rows interleaved as a fan-out writes them), then those users' exact counts."""
        tenant_id = await self.tenant()
        started = time.monotonic()
        await self.conn.execute(
            _TYPED,
            tenant_id,
            spec.prefix,
            spec.events,
            NEWEST,
            spec.types,
            spec.categories,
            lo,
            hi,
            spec.read_every,
            spec.seen_every,
            spec.archived_every,
        )
        await self.conn.execute(_RECOUNT_SHOWN, lo, hi)
        elapsed, users = time.monotonic() - started, hi - lo + 1
        say(f"{users * spec.events:,} inbox rows ({spec.events:,} typed events × {users:,} users) in {elapsed:.1f} s")

    async def subscribe(self, topic: str, lo: int, hi: int) -> None:
        tenant_id = await self.tenant()
        for start in range(lo, hi + 1, 500_000):
            await self.conn.execute(_SUBSCRIBE, tenant_id, topic, start, min(hi, start + 499_999))

    async def mute(self, kind: str, lo: int, hi: int, every: int) -> int:
        """Users lo, lo + every, … up to hi mute events of type `kind`; how many they are."""
        return int((await self.conn.execute(_MUTE, kind, lo, hi, every)).split()[-1])

    async def snoozed(self, lo: int, hi: int, per_user: int, until: datetime) -> None:
        """`per_user` rows for each user id in lo..hi, snoozed until `until`."""
        await self.ensure_events(per_user)
        await self.conn.execute(_SNOOZED, lo, hi, per_user, self.first_event, until, NEWEST)

    async def settle(self) -> None:
        """After seeding: statistics and visibility maps as on a database that has been running
        a while, and a checkpoint now rather than in the middle of a measurement."""
        started = time.monotonic()
        await self.conn.execute(
            "VACUUM (ANALYZE) inbox, events, users, inbox_counts, subscriptions, tokens, preferences"
        )
        await self.conn.execute("CHECKPOINT")
        say(f"vacuum analyze + checkpoint in {time.monotonic() - started:.1f} s")
