"""Fan-out: resolving an event's audience and writing one inbox row per recipient, set-based.

An event's audience is cut into chunks of consecutive user ids (`fanout_chunks`), each holding at
most `chunk` recipients. A chunk is written by one statement that also marks it done, so:
- a retried or duplicated chunk writes nothing (it blocks on the chunk row, then sees it done);
- the audience is never loaded into Python: recipients go from `users`/`subscriptions` straight
  into `inbox` inside PostgreSQL, and only the per-user results needed for Redis come back.
"""

from __future__ import annotations

import asyncpg

from service.model import Counts, Event
from service.store import events, outbox
from service.store.counts import as_counts
from service.store.events import INSERT_EVENT

MAX_USER_ID = (1 << 63) - 1

# The audience of event $1 among user ids $2..$3: named users, topic subscribers and, with
# `all`, every active user of the tenant. UNION removes users reached through several sources.
# Preferences (see schema.sql) are applied here, set-based, in both steps:
#   reached    a subscription whose topic the user muted is no way in; the user may still be reached
#              through another topic, by name, or by `all`;
#   audience   whoever muted the event's type or its category is left out, however reached (a NULL
#              category matches no mute).
# Both are anti-joins against the preferences of the chunk's id range only (their primary key), and
# the table holds rows only for users who muted something: for everyone else they find nothing.
_AUDIENCE = """
ev AS (
    SELECT id, tenant_id, type, category, audience_users, audience_topics, audience_all, occurred_at, expires_at
    FROM events WHERE id = $1
),
reached AS (
    SELECT u.id AS user_id
    FROM ev JOIN users u ON u.tenant_id = ev.tenant_id AND u.external_id = ANY (ev.audience_users)
    WHERE u.active AND u.id BETWEEN $2 AND $3
    UNION
    SELECT s.user_id
    FROM ev JOIN subscriptions s ON s.tenant_id = ev.tenant_id AND s.topic = ANY (ev.audience_topics)
    JOIN users u ON u.id = s.user_id AND u.active
    WHERE s.user_id BETWEEN $2 AND $3
      AND NOT EXISTS (
          SELECT 1 FROM preferences p
          WHERE p.user_id = s.user_id AND p.user_id BETWEEN $2 AND $3 AND s.topic = ANY (p.muted_topics)
      )
    UNION
    SELECT u.id
    FROM ev JOIN users u ON u.tenant_id = ev.tenant_id AND u.active
    WHERE ev.audience_all AND u.id BETWEEN $2 AND $3
),
audience AS (
    SELECT r.user_id FROM reached r
    WHERE NOT EXISTS (
        SELECT 1 FROM preferences p, ev
        WHERE p.user_id = r.user_id AND p.user_id BETWEEN $2 AND $3
          AND (ev.type = ANY (p.muted_types) OR ev.category = ANY (p.muted_categories))
    )
)
"""

# Each new row's +1 on its recipient's counts (a new row is unread and unseen), for the statements
# that write rows (`ins` returns their user ids). `= ANY (ARRAY(...))` makes PostgreSQL visit the
# counts rows in user-id order, so concurrent fan-outs lock them in the same order and cannot
# deadlock each other.
_BUMP = """
cnt AS (
    UPDATE inbox_counts c
    SET unread = c.unread + 1, total = c.total + 1, version = c.version + 1, unseen = c.unseen + 1
    WHERE c.user_id = ANY (ARRAY(SELECT user_id FROM ins))
    RETURNING c.user_id, c.unread, c.total, c.version, c.unseen
)
""".strip()

# An event that has expired by the time it is fanned out (a backlog, or an `expires_at` already past)
# is delivered to nobody: its rows would only be removed by the next sweep (store/due.py). Rows
# already written when it expires are removed by that sweep.
_LIVE = "(ev.expires_at IS NULL OR ev.expires_at > now())"

# Every $2-th recipient in id order: the first user id of each chunk. Counted over the raw sources
# (no dedupe, no `active` check, no preferences), which is six times cheaper than the exact audience
# and only makes some chunks a little smaller than $2; the exact audience is applied when each chunk
# is written.
_BOUNDARIES = """
WITH ev AS (SELECT tenant_id, audience_users, audience_topics, audience_all FROM events WHERE id = $1),
sources AS (
    SELECT s.user_id
    FROM ev JOIN subscriptions s ON s.tenant_id = ev.tenant_id AND s.topic = ANY (ev.audience_topics)
    UNION ALL
    SELECT u.id FROM ev JOIN users u ON u.tenant_id = ev.tenant_id AND u.external_id = ANY (ev.audience_users)
    UNION ALL
    SELECT u.id FROM ev JOIN users u ON u.tenant_id = ev.tenant_id AND u.active WHERE ev.audience_all
),
numbered AS (SELECT user_id, row_number() OVER (ORDER BY user_id) AS n FROM sources)
SELECT user_id FROM numbered WHERE (n - 1) % $2 = 0 ORDER BY user_id
"""

_INSERT_CHUNKS = """
INSERT INTO fanout_chunks (event_id, lo, hi)
SELECT $1, lo, hi FROM unnest($2::bigint[], $3::bigint[]) AS c (lo, hi)
ON CONFLICT (event_id, lo) DO NOTHING
"""
_PENDING_CHUNKS = "SELECT lo, hi FROM fanout_chunks WHERE event_id = $1 AND done_at IS NULL ORDER BY lo"

# One chunk, in one statement:
#   claim    marks the chunk done; a concurrent duplicate waits on this row lock, then finds the
#            chunk already done and so inserts nothing;
#   ins      the plain INSERT ... SELECT of the recipients (no ON CONFLICT: see schema.sql), none
#            once the event has expired (_LIVE);
#   cnt      bumps each recipient's counts (_BUMP).
_RUN_CHUNK = f"""
WITH claim AS (
    UPDATE fanout_chunks SET done_at = now()
    WHERE event_id = $1 AND lo = $2 AND done_at IS NULL
    RETURNING event_id
),
{_AUDIENCE},
ins AS (
    INSERT INTO inbox (user_id, event_id, created_at, expires_at)
    SELECT a.user_id, ev.id, ev.occurred_at, ev.expires_at FROM audience a, ev
    WHERE EXISTS (SELECT 1 FROM claim) AND {_LIVE}
    RETURNING id, user_id
),
{_BUMP}
SELECT cnt.user_id, ins.id, cnt.unread, cnt.total, cnt.version, cnt.unseen
FROM cnt JOIN ins USING (user_id)
"""  # noqa: S608
_CHUNK_ROWS = "UPDATE fanout_chunks SET rows = $3 WHERE event_id = $1 AND lo = $2"
_RECIPIENTS = "(SELECT coalesce(sum(rows), 0) FROM fanout_chunks WHERE event_id = $1)"

# The common event in one statement: named users only (no topics, no `all`), all of them existing.
# It records the event as already fanned out, writes its rows and bumps the counts, atomically
# without a transaction round trip. No row when (tenant, id) was published before: the caller then
# takes the general path, which resumes whatever that earlier publish left undone. An empty audience
# (every named user deactivated, or muting the event's type or category: $3 and $6) still returns
# the event's id, with nulls. Its `event.delivered` webhooks are recorded here too (store/outbox.py).
_DELIVER_NAMED = f"""
WITH ev AS ({INSERT_EVENT.strip()}),
ins AS (
    INSERT INTO inbox (user_id, event_id, created_at, expires_at)
    SELECT u.id, ev.id, ev.occurred_at, ev.expires_at FROM ev, users u
    WHERE u.tenant_id = $1 AND u.external_id = ANY ($14::text[]) AND u.active AND {_LIVE}
      AND NOT EXISTS (
          SELECT 1 FROM preferences p
          WHERE p.user_id = u.id AND ($3 = ANY (p.muted_types) OR $6 = ANY (p.muted_categories))
      )
    RETURNING id, user_id
),
{_BUMP},
{outbox.delivered("ev", tenant="$1", event_key="$2::text", recipients="(SELECT count(*) FROM ins)")},
delivered AS (
    SELECT cnt.user_id, ins.id, cnt.unread, cnt.total, cnt.version, cnt.unseen FROM cnt JOIN ins USING (user_id)
)
SELECT ev.id, d.user_id, d.id, d.unread, d.total, d.version, d.unseen FROM ev LEFT JOIN delivered d ON true
"""  # noqa: S608

# The current counts of a written chunk's recipients, for copying them to Redis again when the first
# copy may have been lost (the worker died, or Redis was down, after the chunk committed).
_CHUNK_COUNTS = f"""
WITH {_AUDIENCE}
SELECT c.user_id, c.unread, c.total, c.version, c.unseen
FROM audience a JOIN inbox_counts c ON c.user_id = a.user_id
"""  # noqa: S608
# The one time it finishes, the event's `event.delivered` webhooks are recorded (store/outbox.py),
# with the rows its chunks wrote.
_FINISH = f"""
WITH fin AS (
UPDATE events SET fanout_done_at = now()
WHERE id = $1 AND fanout_done_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM fanout_chunks WHERE event_id = $1 AND done_at IS NULL)
RETURNING id, tenant_id, external_id
),
{outbox.delivered("fin", tenant="fin.tenant_id", event_key="fin.external_id", recipients=_RECIPIENTS)}
SELECT id FROM fin
"""  # noqa: S608


class Delivery(Counts, frozen=True, kw_only=True):
    """One recipient's new row and its counts after the row was added."""

    inbox_id: int


async def plan(
    conn: asyncpg.Connection, event_id: int, chunk: int, *, at_most: int | None = None
) -> list[tuple[int, int]]:
    """Cut the event's audience into chunks (recorded, so a resumed fan-out reuses them).

    Returns the chunks still to do. An event nobody receives gets no chunk. `at_most`, when the
    caller knows the audience cannot be larger (a list of named users only), skips counting it when
    it fits in one chunk: the common event gets a single chunk without a query.
    """
    if at_most is not None and at_most <= chunk:
        await conn.execute(_INSERT_CHUNKS, event_id, [1], [MAX_USER_ID])
        return await pending(conn, event_id)
    starts: list[int] = [r[0] for r in await conn.fetch(_BOUNDARIES, event_id, chunk)]
    if starts:
        # The first chunk starts at 1 and the last ends at the maximum, so the ranges cover every
        # possible id: a user created between planning and writing still falls in one chunk.
        los = [1, *starts[1:]]
        his = [s - 1 for s in starts[1:]] + [MAX_USER_ID]
        await conn.execute(_INSERT_CHUNKS, event_id, los, his)
    return await pending(conn, event_id)


async def pending(conn: asyncpg.Connection, event_id: int) -> list[tuple[int, int]]:
    return [(r[0], r[1]) for r in await conn.fetch(_PENDING_CHUNKS, event_id)]


async def run_chunk(conn: asyncpg.Connection, event_id: int, lo: int, hi: int) -> list[Delivery]:
    """Write the chunk's rows; empty when it was already done (or has no recipient left)."""
    rows = await conn.fetch(_RUN_CHUNK, event_id, lo, hi, timeout=120)
    deliveries = [
        Delivery(user_id=r[0], inbox_id=r[1], unread=r[2], total=r[3], version=r[4], unseen=r[5]) for r in rows
    ]
    if rows:
        await conn.execute(_CHUNK_ROWS, event_id, lo, len(rows))
    return deliveries


async def deliver_named(conn: asyncpg.Connection, tenant_id: int, event: Event) -> tuple[int, list[Delivery]] | None:
    """Record and deliver a new event to named, existing users in one statement (see _DELIVER_NAMED).

    Returns the event id and the deliveries, or None when the event was published before."""
    rows = await conn.fetch(_DELIVER_NAMED, *events.insert_args(tenant_id, event, done=True))
    if not rows:
        return None
    deliveries = [
        Delivery(user_id=r[1], inbox_id=r[2], unread=r[3], total=r[4], version=r[5], unseen=r[6])
        for r in rows
        if r[1] is not None
    ]
    return rows[0][0], deliveries


async def chunk_counts(conn: asyncpg.Connection, event_id: int, lo: int, hi: int) -> list[Counts]:
    rows = await conn.fetch(_CHUNK_COUNTS, event_id, lo, hi, timeout=120)
    return [as_counts(r) for r in rows]


async def finish(conn: asyncpg.Connection, event_id: int) -> bool:
    """Mark the event's fan-out complete once no chunk is left; True the one time it happens."""
    return await conn.fetchval(_FINISH, event_id) is not None
