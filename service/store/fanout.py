"""Fan-out: resolving an event's audience and writing one inbox row per recipient, set-based.

An event's audience is cut into chunks of consecutive user ids (`fanout_chunks`), each holding at
most `chunk` recipients. A chunk is written by one statement that also marks it done, so:
- a retried or duplicated chunk writes nothing (it blocks on the chunk row, then sees it done);
- the audience is never loaded into Python: recipients go from `users`/`subscriptions` straight
  into `inbox` inside PostgreSQL. A chunk returns how many rows it wrote and the id range they
  span; the counts of the recipients whose copies or streams must hear of it (the watched ones,
  service/counts/watched.py) are read back after the commit (`watched_deliveries`). A thread's
  chunk still returns every recipient's result, which says whether their thread was new.
"""

from __future__ import annotations

import re

import asyncpg
import msgspec

from service.model import Counts, CountsChange, Event, TabGroup
from service.store import audiences, events, outbox
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
    SELECT id, tenant_id, type, category, audience_users, audience_topics, audience_all, occurred_at, expires_at,
           grp, actor
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
    WHERE s.user_id BETWEEN $2 AND $3 AND u.id BETWEEN $2 AND $3
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
# deadlock each other: the array is an InitPlan whose size the planner cannot see (it estimates a
# few rows), so the plan is always the primary key's index scan, which sorts the array's keys and
# visits them in order (`EXPLAIN` with 10,000 and 100,000 ids over a million rows: the same plan).
# The statements that take the locks first (`locked` in the thread and batch statements,
# store/counts.py) take them in the same order.
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
# is written. (An audience of one source has a cheaper form: service/store/audiences.py.)
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
_BOUNDARIES_OF = {
    audiences.GENERAL: _BOUNDARIES,
    audiences.ONE_TOPIC: audiences.BOUNDARIES_ONE_TOPIC,
    audiences.EVERYONE: audiences.BOUNDARIES_EVERYONE,
}

_INSERT_CHUNKS = """
INSERT INTO fanout_chunks (event_id, lo, hi)
SELECT $1, lo, hi FROM unnest($2::bigint[], $3::bigint[]) AS c (lo, hi)
ON CONFLICT (event_id, lo) DO NOTHING
"""
_PENDING_CHUNKS = "SELECT lo, hi FROM fanout_chunks WHERE event_id = $1 AND done_at IS NULL ORDER BY lo"


def _chunk_statement(audience: str) -> str:
    """One chunk of an event with no group, in one statement, over its audience (`_AUDIENCE`, or
    one source's, from audiences.py):
      claim    marks the chunk done; a concurrent duplicate waits on this row lock, then finds the
               chunk already done and so inserts nothing;
      ins      the plain INSERT ... SELECT of the recipients (no ON CONFLICT: see schema.sql), none
               once the event has expired (_LIVE);
      cnt      bumps each recipient's counts (as _BUMP, whose RETURNING nobody reads here).
    It returns one row: the rows written and the lowest and highest recipient id, nothing per
    recipient (most are not watched: see the module's docstring)."""
    return f"""
WITH claim AS (
    UPDATE fanout_chunks SET done_at = now()
    WHERE event_id = $1 AND lo = $2 AND done_at IS NULL
    RETURNING event_id
),
{audience.strip()},
ins AS (
    INSERT INTO inbox (user_id, event_id, created_at, expires_at, type, category)
    SELECT a.user_id, ev.id, ev.occurred_at, ev.expires_at, ev.type, ev.category FROM audience a, ev
    WHERE EXISTS (SELECT 1 FROM claim) AND {_LIVE}
    RETURNING id, user_id
),
cnt AS (
    UPDATE inbox_counts c
    SET unread = c.unread + 1, total = c.total + 1, version = c.version + 1, unseen = c.unseen + 1
    WHERE c.user_id = ANY (ARRAY(SELECT user_id FROM ins))
)
SELECT count(*), min(user_id), max(user_id) FROM ins
"""  # noqa: S608


# Each chunk statement in one form per kind of audience (audiences.py): planned from an index where
# the audience is one topic or everyone.
_AUDIENCES = {
    audiences.GENERAL: _AUDIENCE,
    audiences.ONE_TOPIC: audiences.ONE_TOPIC_AUDIENCE,
    audiences.EVERYONE: audiences.EVERYONE_AUDIENCE,
}
_RUN_CHUNK = {source: _chunk_statement(form) for source, form in _AUDIENCES.items()}


# One chunk of an event of a group (a thread), in one statement. Each recipient's thread of the group,
# if they have one, is updated; the others get a new row that starts one.
#   old      the recipients' threads, locked and read as they are now (a user's concurrent "mark
#            read" is waited for and seen), with what each is worth in the counts; looked up in
#            the chunk's id range (by the group alone, each chunk read every chunk's threads);
#   nodes    the threads' new actor lists (schema.sql, thread_actors): one node per distinct list
#            among them, none when the event names no actor, made before this statement by
#            _THREAD_NODES (see there). A thread `old` waited for (another event of the group was
#            writing it) may hold a list no node was made from: the statement then stops as a
#            serialization failure and runs again (herald_again_if), nodes first;
#   upd      each thread takes the event: unread, unseen and out of the archive again, one more
#            activity, and the newest event's fields and time (an older event only adds to it);
#   ins      a new thread for everyone else;
#   delta    what each recipient's counts gain: 1 for a new row; for a thread, what it was not
#            worth (unread or unseen or in the archive) and now is. A snoozed thread stays hidden,
#            and is counted when it comes back;
#   locked   the counts rows, locked in user-id order as every fan-out takes them (so none
#            deadlocks another), before `cnt` changes any of them: its gate waits for `locked`.
# The chunks of one event run side by side (their recipients differ); the events of one group take
# turns, each starting once the one before it is done (`_EARLIER_RUNNING`, see run_chunk), so that
# `old` sees every thread, and every actor list, that the group's earlier events made. Should two
# events of a group still meet (an earlier one stalled, below, or a chunk that waited its turn too
# long), they stay right, only slower: the second waits for the first's lock on a thread (in
# user-id order, as `old` takes them) and reads it as the first left it; an actor list it cannot
# see yet makes it run again (`nodes`); and where both start a user's thread, the unique index
# inbox_user_thread lets one through and the other's transaction runs again (postgres.RACED),
# finding the thread to update.
def _thread_chunk_statement(audience: str) -> str:
    return f"""
WITH claim AS (
    UPDATE fanout_chunks SET done_at = now()
    WHERE event_id = $1 AND lo = $2 AND done_at IS NULL
    RETURNING event_id
),
{audience.strip()},
live AS (SELECT a.user_id FROM audience a, ev WHERE EXISTS (SELECT 1 FROM claim) AND {_LIVE}),
old AS (
    SELECT i.id, i.user_id, i.actors_id, i.snoozed_until IS NULL AS shown,
           i.snoozed_until IS NULL AND i.archived_at IS NULL AS counted,
           i.snoozed_until IS NULL AND i.archived_at IS NULL AND i.read_at IS NULL AS unread,
           i.snoozed_until IS NULL AND i.archived_at IS NULL AND i.read_at IS NULL AND i.seen_at IS NULL AS unseen
    FROM live l JOIN inbox i ON i.user_id = l.user_id, ev
    WHERE i.thread = ev.grp AND i.user_id BETWEEN $2 AND $3
    ORDER BY i.user_id
    FOR UPDATE OF i
),
parents AS (
    SELECT DISTINCT coalesce(actors_id, 0) AS parent FROM old
    UNION
    SELECT 0 WHERE (SELECT count(*) FROM live) > (SELECT count(*) FROM old)
),
nodes AS (
    SELECT n.id, p.parent
    FROM parents p CROSS JOIN ev
    LEFT JOIN thread_actors n ON n.parent = p.parent AND n.actor = ev.actor AND n.at = ev.occurred_at
    WHERE ev.actor IS NOT NULL AND herald_again_if(ev.actor IS NOT NULL AND n.id IS NULL)
),
upd AS (
    UPDATE inbox i
    SET event_id = CASE WHEN ev.occurred_at >= i.created_at THEN ev.id ELSE i.event_id END,
        expires_at = CASE WHEN ev.occurred_at >= i.created_at THEN ev.expires_at ELSE i.expires_at END,
        type = CASE WHEN ev.occurred_at >= i.created_at THEN ev.type ELSE i.type END,
        category = CASE WHEN ev.occurred_at >= i.created_at THEN ev.category ELSE i.category END,
        created_at = greatest(i.created_at, ev.occurred_at),
        read_at = NULL, seen_at = NULL, archived_at = NULL, interaction = NULL, interacted_at = NULL,
        activity = i.activity + 1,
        actors_id = coalesce((SELECT n.id FROM nodes n WHERE n.parent = coalesce(i.actors_id, 0)), i.actors_id)
    FROM ev
    WHERE i.id = ANY (ARRAY(SELECT id FROM old))
    RETURNING i.id
),
ins AS (
    INSERT INTO inbox (user_id, event_id, created_at, expires_at, type, category, thread, actors_id)
    SELECT l.user_id, ev.id, ev.occurred_at, ev.expires_at, ev.type, ev.category, ev.grp,
           (SELECT id FROM nodes WHERE parent = 0)
    FROM live l, ev
    WHERE NOT EXISTS (SELECT 1 FROM old o WHERE o.user_id = l.user_id)
    RETURNING id, user_id
),
delta AS (
    SELECT user_id, id, 1 AS unread, 1 AS unseen, 1 AS total, false AS again FROM ins
    UNION ALL
    SELECT o.user_id, o.id, (o.shown AND NOT o.unread)::int, (o.shown AND NOT o.unseen)::int,
           (o.shown AND NOT o.counted)::int, true
    FROM upd u JOIN old o ON o.id = u.id
),
locked AS (
    SELECT c.user_id FROM inbox_counts c
    WHERE c.user_id = ANY (ARRAY(SELECT user_id FROM delta))
    ORDER BY c.user_id
    FOR UPDATE
),
cnt AS (
    UPDATE inbox_counts c
    SET unread = c.unread + d.unread, unseen = c.unseen + d.unseen, total = c.total + d.total,
        version = c.version + 1
    FROM unnest(
        ARRAY(SELECT user_id FROM delta ORDER BY user_id), ARRAY(SELECT unread FROM delta ORDER BY user_id),
        ARRAY(SELECT unseen FROM delta ORDER BY user_id), ARRAY(SELECT total FROM delta ORDER BY user_id)
    ) AS d (user_id, unread, unseen, total)
    WHERE c.user_id = d.user_id AND (SELECT count(*) FROM locked) >= 0
    RETURNING c.user_id, c.unread, c.total, c.version, c.unseen
)
SELECT cnt.user_id, d.id, cnt.unread, cnt.total, cnt.version, cnt.unseen, d.again
FROM cnt JOIN delta d USING (user_id)
"""  # noqa: S608


_RUN_THREAD_CHUNK = {source: _thread_chunk_statement(form) for source, form in _AUDIENCES.items()}


# A grouped event's new actor nodes for the threads of chunk $2..$3 (`nodes` above): one per distinct
# actor list among the recipients' threads (0: a new thread), that list with the event's actor
# merged in. Made by a statement of its own before the chunk's, and committed at once when the chunk
# runs as a job of its own: every chunk of the event needs the same node, and a node made inside
# each chunk's transaction (INSERT … ON CONFLICT) made every other chunk wait for that transaction's
# end, so the chunks of one event ran one after another. Made twice (a chunk run again, or two
# chunks at once), a node is found, not duplicated (its unique key); one made for a thread that
# changes before the chunk runs is only unused. A chunk already done makes none.
def _thread_nodes_statement(audience: str) -> str:
    return f"""
WITH {audience.strip()},
live AS (
    SELECT a.user_id FROM audience a, ev
    WHERE ev.actor IS NOT NULL AND {_LIVE}
      AND EXISTS (SELECT 1 FROM fanout_chunks WHERE event_id = $1 AND lo = $2 AND done_at IS NULL)
),
held AS (
    SELECT i.actors_id FROM live l JOIN inbox i ON i.user_id = l.user_id, ev
    WHERE i.thread = ev.grp AND i.user_id BETWEEN $2 AND $3
),
parents AS (
    SELECT DISTINCT coalesce(actors_id, 0) AS parent FROM held
    UNION
    SELECT 0 WHERE (SELECT count(*) FROM live) > (SELECT count(*) FROM held)
)
INSERT INTO thread_actors (parent, actor, at, actors, times)
SELECT p.parent, ev.actor, ev.occurred_at, m.actors, m.times
FROM parents p CROSS JOIN ev LEFT JOIN thread_actors t ON t.id = p.parent,
     LATERAL herald_merge_actors(coalesce(t.actors, '{{}}'), coalesce(t.times, '{{}}'), ev.actor, ev.occurred_at) m
WHERE p.parent = 0 OR t.id IS NOT NULL
ORDER BY p.parent
ON CONFLICT (parent, actor, at) DO NOTHING
"""  # noqa: S608 (fixed fragments only)


_THREAD_NODES = {source: _thread_nodes_statement(form) for source, form in _AUDIENCES.items()}
# The advisory lock of a group, taken by the transaction that records an event of it: the group's
# events are recorded one at a time, so their ids follow the order in which they were committed,
# and an event committed after a chunk looked at its group is always a later one.
_GROUP_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1::bigint::text || ':' || $2::text, 0))"
# Whether an earlier event of event $1's group is still being fanned out, and alive: recorded, or
# one of its chunks written, in the last GROUP_STALLED seconds (longer than a chunk may run,
# workers/main.py CHUNK_TIMEOUT). One that has done nothing for that long (a chunk dead-lettered,
# its worker gone for good) holds back the events after it no longer.
GROUP_STALLED = 60
_EARLIER_RUNNING = f"""
SELECT EXISTS (
    SELECT 1 FROM events me JOIN events e ON e.tenant_id = me.tenant_id AND e.grp = me.grp
    WHERE me.id = $1 AND e.id < me.id AND e.grp IS NOT NULL AND e.fanout_done_at IS NULL
      AND (e.created_at > now() - interval '{GROUP_STALLED} seconds'
           OR EXISTS (SELECT 1 FROM fanout_chunks c
                      WHERE c.event_id = e.id AND c.done_at > now() - interval '{GROUP_STALLED} seconds'))
)
"""  # noqa: S608 (a constant)
_CHUNK_ROWS = "UPDATE fanout_chunks SET rows = $3 WHERE event_id = $1 AND lo = $2"
_RECIPIENTS = "(SELECT coalesce(sum(rows), 0) FROM fanout_chunks WHERE event_id = $1)"

# INSERT_EVENT as INSERT … SELECT, recording the event only if every named user ($14) exists.
# The worker creates the users it does not know before delivering, but one it knows may have been
# erased since (service/erasure.py): then nothing is recorded, and the general path, which creates
# users first, delivers to a new one. Checked in the statement itself, so the common event still
# costs one statement, and an erasure finishing at any moment cannot slip between check and use.
_ALL_NAMED_EXIST = """
WHERE NOT EXISTS (
    SELECT 1 FROM unnest($14::text[]) AS named (external_id)
    WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.tenant_id = $1 AND u.external_id = named.external_id)
)
ON CONFLICT"""
_INSERT_IF_NAMED_EXIST = re.sub(r"\)\s*ON CONFLICT", _ALL_NAMED_EXIST, INSERT_EVENT.replace(") VALUES (", ") SELECT "))
assert _ALL_NAMED_EXIST in _INSERT_IF_NAMED_EXIST, "INSERT_EVENT no longer ends in ON CONFLICT"
assert "VALUES" not in _INSERT_IF_NAMED_EXIST, "INSERT_EVENT no longer has one VALUES row"

# The common event in one statement: named users only (no topics, no `all`), all of them existing.
# It records the event as already fanned out, writes its rows and bumps the counts, atomically
# without a transaction round trip. No row when (tenant, id) was published before, or a named user
# no longer exists: the caller then takes the general path, which resumes whatever that earlier
# publish left undone, or creates the user anew. An empty audience (every named user deactivated,
# or muting the event's type or category: $3 and $6) still returns the event's id, with nulls. Its
# `event.delivered` webhooks are recorded here too (store/outbox.py).
_DELIVER_NAMED = f"""
WITH ev AS ({_INSERT_IF_NAMED_EXIST.strip()}),
ins AS (
    INSERT INTO inbox (user_id, event_id, created_at, expires_at, type, category)
    SELECT u.id, ev.id, ev.occurred_at, ev.expires_at, ev.type, ev.category FROM ev, users u
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

# The current counts of a written chunk's recipients (among users $4, unless null), for copying them
# to Redis again when the first copy may have been lost (the worker died, or Redis was down, after
# the chunk committed).
_CHUNK_COUNTS = f"""
WITH {_AUDIENCE}
SELECT c.user_id, c.unread, c.total, c.version, c.unseen
FROM audience a JOIN inbox_counts c ON c.user_id = a.user_id
WHERE $4::bigint[] IS NULL OR a.user_id = ANY ($4::bigint[])
"""  # noqa: S608
# The rows event $1 (no thread) wrote for users $2, the watched ones among a chunk's recipients, with
# their counts as they are now (a later change only makes the copy newer): read after the commit.
# One probe of the (user_id, event_id) index per watched user.
_WATCHED_ROWS = """
SELECT c.user_id, i.id, c.unread, c.total, c.version, c.unseen
FROM inbox i JOIN inbox_counts c ON c.user_id = i.user_id
WHERE i.user_id = ANY ($2::bigint[]) AND i.event_id = $1
"""
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


class GroupBusy(Exception):
    """An earlier event of the chunk's group is still being fanned out: run the chunk later."""


class Delivery(CountsChange, frozen=True, kw_only=True):
    """One recipient's new row, or thread the event updated (`again`), and its counts after (with
    the row's tab group, `arrived`, where the caller knows the event and the counts are those of the
    statement that wrote the row)."""

    inbox_id: int
    again: bool = False


def arrived(deliveries: list[Delivery], event: Event) -> list[Delivery]:
    """New rows of `event`, each with what it adds to its user's tab groups (service/counts/tabs.py):
    one unread, unseen notification of the event's type and category in the inbox. Only for
    deliveries whose counts came from the statement that wrote them (the versions of that change);
    a thread updated (`again`) is left without (its old group is not known here)."""
    added = [TabGroup(event.type, event.category, False, 1, 1, 1)]
    return [d if d.again else msgspec.structs.replace(d, tabs=added) for d in deliveries]


class Written(msgspec.Struct, frozen=True, kw_only=True):
    """What one chunk wrote: how many rows, for recipients with ids lo..hi (0, 0: none). A thread's
    chunk also carries every recipient's `Delivery` (`threaded`); a plain one carries none."""

    rows: int = 0
    lo: int = 0
    hi: int = 0
    threaded: bool = False
    deliveries: list[Delivery] = []


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
    source, _ = await audiences.kind(conn, event_id)
    starts: list[int] = [r[0] for r in await conn.fetch(_BOUNDARIES_OF[source], event_id, chunk)]
    if starts:
        # The first chunk starts at 1 and the last ends at the maximum, so the ranges cover every
        # possible id: a user created between planning and writing still falls in one chunk.
        los = [1, *starts[1:]]
        his = [s - 1 for s in starts[1:]] + [MAX_USER_ID]
        await conn.execute(_INSERT_CHUNKS, event_id, los, his)
    return await pending(conn, event_id)


async def pending(conn: asyncpg.Connection, event_id: int) -> list[tuple[int, int]]:
    return [(r[0], r[1]) for r in await conn.fetch(_PENDING_CHUNKS, event_id)]


async def make_nodes(
    conn: asyncpg.Connection, event_id: int, lo: int, hi: int, *, wait_turn: bool = True
) -> tuple[str, bool]:
    """The actor nodes chunk lo..hi of a grouped event needs (_THREAD_NODES), made outside the
    chunk's transaction so that they are committed before it starts; nothing for a plain event.
    Raises GroupBusy, having made nothing, as `run_chunk` does. Returns the event's audience kind
    (audiences.kind), for `run_chunk`."""
    kind = await audiences.kind(conn, event_id)
    source, grouped = kind
    if grouped:
        if wait_turn and await conn.fetchval(_EARLIER_RUNNING, event_id):
            raise GroupBusy(event_id)
        await conn.execute(_THREAD_NODES[source], event_id, lo, hi, timeout=120)
    return kind


async def run_chunk(
    conn: asyncpg.Connection,
    event_id: int,
    lo: int,
    hi: int,
    *,
    wait_turn: bool = True,
    kind: tuple[str, bool] | None = None,
) -> Written:
    """Write the chunk's rows (inside the caller's transaction); no rows when it was already done (or
    has no recipient left). A chunk of a grouped event raises GroupBusy, having written nothing,
    while an earlier event of its group is being fanned out (unless not `wait_turn`: it has waited
    long enough, and runs beside it); one that raced another event of its
    group for a new thread fails with a UniqueViolationError on inbox_user_thread: run the
    transaction again (postgres.run does). Its actor nodes are made first, in the transaction,
    unless `make_nodes` made them already and waited the chunk's turn: then `kind` is what it
    returned, and neither is done again."""
    source, grouped = kind if kind is not None else await audiences.kind(conn, event_id)
    if not grouped:
        (written, first, last), *_ = await conn.fetch(_RUN_CHUNK[source], event_id, lo, hi, timeout=120)
        if written:
            await conn.execute(_CHUNK_ROWS, event_id, lo, written)
        return Written(rows=written, lo=first or 0, hi=last or 0)
    if kind is None:
        if wait_turn and await conn.fetchval(_EARLIER_RUNNING, event_id):
            raise GroupBusy(event_id)
        await conn.execute(_THREAD_NODES[source], event_id, lo, hi, timeout=120)
    rows = await conn.fetch(_RUN_THREAD_CHUNK[source], event_id, lo, hi, timeout=120)
    deliveries = [
        Delivery(user_id=r[0], inbox_id=r[1], unread=r[2], total=r[3], version=r[4], unseen=r[5], again=r[6])
        for r in rows
    ]
    if rows:
        await conn.execute(_CHUNK_ROWS, event_id, lo, len(rows))
    users = [d.user_id for d in deliveries]
    return Written(
        rows=len(rows), lo=min(users, default=0), hi=max(users, default=0), threaded=True, deliveries=deliveries
    )


async def lock_group(conn: asyncpg.Connection, tenant_id: int, group: str) -> None:
    """Take the group's lock until the transaction ends, before recording an event of it."""
    await conn.execute(_GROUP_LOCK, tenant_id, group)


async def watched_deliveries(conn: asyncpg.Connection, event_id: int, users: list[int]) -> list[Delivery]:
    """The rows a plain (no thread) event wrote for `users`, with their counts as they are now."""
    rows = await conn.fetch(_WATCHED_ROWS, event_id, users)
    return [Delivery(user_id=r[0], inbox_id=r[1], unread=r[2], total=r[3], version=r[4], unseen=r[5]) for r in rows]


async def deliver_named(conn: asyncpg.Connection, tenant_id: int, event: Event) -> tuple[int, list[Delivery]] | None:
    """Record and deliver a new event to named, existing users in one statement (see _DELIVER_NAMED).

    Returns the event id and the deliveries, or None when the event was published before or a
    named user does not exist."""
    rows = await conn.fetch(_DELIVER_NAMED, *events.insert_args(tenant_id, event, done=True))
    if not rows:
        return None
    deliveries = [
        Delivery(user_id=r[1], inbox_id=r[2], unread=r[3], total=r[4], version=r[5], unseen=r[6])
        for r in rows
        if r[1] is not None
    ]
    return rows[0][0], deliveries


async def chunk_counts(
    conn: asyncpg.Connection, event_id: int, lo: int, hi: int, users: list[int] | None = None
) -> list[Counts]:
    """The current counts of the chunk's recipients (among `users`, when given)."""
    rows = await conn.fetch(_CHUNK_COUNTS, event_id, lo, hi, users, timeout=120)
    return [as_counts(r) for r in rows]


async def finish(conn: asyncpg.Connection, event_id: int) -> bool:
    """Mark the event's fan-out complete once no chunk is left; True the one time it happens."""
    return await conn.fetchval(_FINISH, event_id) is not None
