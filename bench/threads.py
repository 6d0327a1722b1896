"""Grouped fan-out (`grouped`, see docs/performance.md): one event to a topic's subscribers who all
already hold the event's thread, against a plain event to the same subscribers in the same run.

A later event of a group updates each recipient's thread row (unread again, the newest event's
fields and time, one more activity, its actor added) instead of inserting one: per recipient an
index lookup of the thread, a new row version with its index entries, and the counts. The thread's
distinct actors are not rewritten in each row: every recipient with the same history moves to one
shared node of `thread_actors` (schema.sql), so a new actor costs one node per event, not one list
per recipient. The third event, of a new actor, shows it.
"""

from __future__ import annotations

import statistics
import time

import asyncpg

from bench.agree import counts_agree
from bench.base import Bench, k, load_average, raw_tables
from bench.env import WORKERS
from bench.fan import Want, fan_event
from bench.report import Row, ratio_row
from bench.seed import TENANT, say

TOPIC = "thread"
GROUP = "bench:thread"
# The actors of the thread's events, in order: the second event is the figure, the third (a new
# actor again) shows what the actors cost.
ACTORS = ("a1", "a2", "a3")

# Users in $1..$2 who do not hold exactly one thread of group $3 with $4 activities and the actors
# $5 (newest first): must be none.
_THREADS_OFF = """
WITH t AS (
    SELECT i.user_id, count(*) AS threads, bool_and(i.activity = $4 AND a.actors = $5::text[]) AS right
    FROM inbox i LEFT JOIN thread_actors a ON a.id = i.actors_id
    WHERE i.user_id BETWEEN $1 AND $2 AND i.thread = $3
    GROUP BY i.user_id
)
SELECT ($2 - $1 + 1) - count(*) FILTER (WHERE t.threads = 1 AND t.right) FROM t
"""
_NODES = "SELECT count(*) FROM thread_actors"

# The update floor: the least any fan-out that keeps one row per (user, thread) and its counts in
# PostgreSQL must do for a later event of the thread, in one server-side statement on copies of the
# threads and counts rows: find the topic's active subscribers, update each one's thread row as
# Herald's does (the new event's id and time, unread and unseen again, one more activity: a new row
# version with its index entries, since the list's key moves) and its counts row. No chunks, no
# actors, no Redis, no Herald code. `locked`: the threads are first locked and read, in user-id
# order, as Herald's statement must (what each was worth in the counts, as it is now, not as the
# statement's snapshot saw it: a concurrent "mark read" is waited for), then updated.
_FLOOR_COPY = """
INSERT INTO bench_raw_inbox OVERRIDING SYSTEM VALUE
SELECT * FROM inbox WHERE user_id BETWEEN $1 AND $2 AND thread = $3
"""
_FLOOR_COUNTS = "INSERT INTO bench_raw_counts SELECT * FROM inbox_counts WHERE user_id BETWEEN $1 AND $2"
_FLOOR_AUDIENCE = """
WITH audience AS (
    SELECT s.user_id FROM subscriptions s JOIN tenants t ON t.id = s.tenant_id
    JOIN users u ON u.id = s.user_id AND u.active
    WHERE t.name = $1 AND s.topic = $2
),"""
_FLOOR_SET = """
    SET event_id = i.event_id + 1, created_at = i.created_at + interval '1 second',
        read_at = NULL, seen_at = NULL, archived_at = NULL, activity = i.activity + 1"""
_FLOOR_COUNTS_UPDATE = """
UPDATE bench_raw_counts c
SET unread = c.unread + d.unread, unseen = c.unseen + d.unread, version = c.version + 1
FROM upd d WHERE c.user_id = d.user_id
"""
_FLOOR_UPDATE = {
    False: f"""{_FLOOR_AUDIENCE}
upd AS (
    UPDATE bench_raw_inbox i {_FLOOR_SET}
    FROM audience a
    WHERE i.user_id = a.user_id AND i.thread = $3
    RETURNING i.user_id, 1 AS unread
){_FLOOR_COUNTS_UPDATE}""",
    True: f"""{_FLOOR_AUDIENCE}
old AS (
    SELECT i.id, i.read_at IS NULL AS unread FROM audience a JOIN bench_raw_inbox i ON i.user_id = a.user_id
    WHERE i.thread = $3
    ORDER BY i.user_id
    FOR UPDATE OF i
),
upd AS (
    UPDATE bench_raw_inbox i {_FLOOR_SET}
    FROM old o
    WHERE i.id = o.id
    RETURNING i.user_id, (NOT o.unread)::int AS unread
){_FLOOR_COUNTS_UPDATE}""",
}


async def floor_update(conn: asyncpg.Connection, lo: int, hi: int, *, locked: bool, runs: int = 3) -> float:
    """Rows/s of `_FLOOR_UPDATE` over copies of the thread rows and counts rows of users lo..hi
    (median of `runs`, each on fresh, vacuumed copies after a checkpoint)."""
    times = []
    n = 0
    async with raw_tables(conn):
        for _ in range(runs):
            await conn.execute("TRUNCATE bench_raw_inbox, bench_raw_counts")
            await conn.execute(_FLOOR_COPY, lo, hi, GROUP)
            await conn.execute(_FLOOR_COUNTS, lo, hi)
            await conn.execute("VACUUM ANALYZE bench_raw_inbox, bench_raw_counts")
            await conn.execute("CHECKPOINT")
            started = time.perf_counter()
            n = int((await conn.execute(_FLOOR_UPDATE[locked], TENANT, TOPIC, GROUP)).split()[-1])
            times.append(time.perf_counter() - started)
    if n != hi - lo + 1:
        raise RuntimeError(f"the update floor updated {n} counts rows, not {hi - lo + 1}")
    return n / statistics.median(times)


async def _threads_off(b: Bench, lo: int, hi: int, events: int) -> int:
    actors = list(reversed(ACTORS[:events]))
    return int(await b.conn.fetchval(_THREADS_OFF, lo, hi, GROUP, events, actors))


async def grouped(b: Bench) -> list[Row]:
    s, seed = b.sizes, b.seeder
    n = s.fanout
    lo, hi = await seed.user_group("thread", n)
    await seed.subscribe(TOPIC, lo, hi)
    await seed.settle()
    b.procs.workers()
    load_before = load_average()
    # Every recipient: version 1 after the plain event, 2 after the thread's first, 3 after its second…
    plain = (await fan_event(b, TOPIC, lo, hi, Want(split=hi, high=1, low=1), name="thread-plain")).seconds
    say(f"plain fan-out 1 × {n:,}: {plain:.2f} s ({n / plain:,.0f} rows/s)")
    seconds: list[float] = []
    nodes: list[int] = []
    problems: list[str] = []
    for number, actor in enumerate(ACTORS, start=1):
        # Each event starts, as the plain one did, from a vacuumed table after a checkpoint.
        await seed.settle()
        before = await b.conn.fetchval(_NODES)
        want = Want(split=hi, high=1 + number, low=1 + number)
        fanned = await fan_event(b, TOPIC, lo, hi, want, name=f"thread-{number}", group=GROUP, actor=actor)
        seconds.append(fanned.seconds)
        nodes.append(await b.conn.fetchval(_NODES) - before)
        what = "creates every thread" if number == 1 else "updates every thread"
        say(f"grouped event {number} (actor {actor}) {what}: {fanned.seconds:.2f} s ({n / fanned.seconds:,.0f} rows/s)")
        off = await _threads_off(b, lo, hi, number)
        if off:
            problems.append(f"after event {number}, {off} users do not hold one thread of {number} activities")
    # The plain event again, after the thread's: how far the machine drifted during the figure (the
    # first plain event is also the workers' first, so it carries their warm-up).
    await seed.settle()
    again = (await fan_event(b, TOPIC, lo, hi, Want(split=hi, high=5, low=5), name="thread-plain-2")).seconds
    say(f"plain fan-out again: {again:.2f} s ({n / again:,.0f} rows/s)")
    agreement = await counts_agree(b, lo, hi)
    if not agreement.agree(copies=True):
        problems.append(f"counts after the thread's events: {agreement}")
    floor = await floor_update(b.conn, lo, hi, locked=False)
    floor_locked = await floor_update(b.conn, lo, hi, locked=True)
    say(f"update floor (threads + counts, SQL only): {floor:,.0f} rows/s; locked first: {floor_locked:,.0f} rows/s")
    for problem in problems:
        b.note(f"grouped: {problem}")
    b.note(
        f"grouped fan-out: a fresh topic of {k(n)} subscribers, {WORKERS} `herald worker` processes; a plain event, "
        f"then three events of one group (actors {', '.join(ACTORS)}): the first creates every recipient's thread, "
        "the second and third update it (unread again, one more activity, the actor added), then a plain event "
        "again; each timed like the "
        "fan-out figure, after a vacuum and checkpoint, and checked after (one thread per user with every "
        "activity and actor, counts = rows = Redis copies). A thread's distinct actors are shared nodes "
        f"(schema.sql, thread_actors): the three events added {', '.join(str(x) for x in nodes)} node(s) for "
        f"{k(n)} recipients ({load_before} before, {load_average()} after)"
    )
    b.note(
        "grouped update floor: the topic's active subscribers found, each one's thread row updated as Herald's "
        "second event does (event, time, unread and unseen again, one more activity) and its counts row bumped, "
        "by one server-side statement on vacuumed copies of those rows after a checkpoint (median of 3): no chunks, "
        "no actors, no Redis, no Herald code; 'locked and read first': the same with the threads locked (FOR "
        "UPDATE, in user-id order) and read before the update, as Herald's statement must to count what each "
        "thread was worth as it is now (a concurrent mark read is waited for)"
    )
    create, update, third = (n / t for t in seconds)
    good = not problems
    figure = f"grouped fan-out: 1 event × {k(n)}, every thread updated (rows/s)"
    row = ratio_row(figure, update, n / plain, 0.5, "≥ 0.5× plain fan-out")
    row.passed = row.passed and good
    against_floor = ratio_row(
        f"grouped fan-out: 1 event × {k(n)}, every thread updated, vs the locked update floor (rows/s)",
        update,
        floor_locked,
        0.8,
        "≥ 0.8× locked update floor",
    )
    against_floor.passed = against_floor.passed and good
    return [
        Row(
            figure=f"grouped fan-out: 1 event × {k(n)}, plain (rows/s)",
            herald=n / plain,
            limit=None,
            ratio=None,
            target="reference only",
            passed=True,
        ),
        Row(
            figure=f"grouped fan-out: 1 event × {k(n)}, plain again after the thread's events (rows/s)",
            herald=n / again,
            limit=n / plain,
            ratio=plain / again,
            target="reference only",
            passed=True,
        ),
        Row(
            figure=f"grouped fan-out: 1 event × {k(n)}, every thread created (rows/s)",
            herald=create,
            limit=n / plain,
            ratio=create * plain / n,
            target="reference only",
            passed=good,
        ),
        row,
        Row(
            figure=f"grouped update floor: {k(n)} threads updated + counts, one SQL statement (rows/s)",
            herald=floor,
            limit=n / plain,
            ratio=floor * plain / n,
            target="reference only",
            passed=True,
        ),
        Row(
            figure="grouped update floor, threads locked and read first (rows/s)",
            herald=floor_locked,
            limit=n / plain,
            ratio=floor_locked * plain / n,
            target="reference only",
            passed=True,
        ),
        against_floor,
        Row(
            figure=f"grouped fan-out: 1 event × {k(n)}, updated again, a third actor (rows/s)",
            herald=third,
            limit=update,
            ratio=third / update,
            target="reference only",
            passed=good,
        ),
    ]
