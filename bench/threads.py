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

from bench.agree import counts_agree
from bench.base import Bench, k, load_average
from bench.env import WORKERS
from bench.fan import Want, fan_event
from bench.report import Row, ratio_row
from bench.seed import say

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
    create, update, third = (n / t for t in seconds)
    good = not problems
    figure = f"grouped fan-out: 1 event × {k(n)}, every thread updated (rows/s)"
    row = ratio_row(figure, update, n / plain, 0.5, "≥ 0.5× plain fan-out")
    row.passed = row.passed and good
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
            figure=f"grouped fan-out: 1 event × {k(n)}, updated again, a third actor (rows/s)",
            herald=third,
            limit=update,
            ratio=third / update,
            target="reference only",
            passed=good,
        ),
    ]
