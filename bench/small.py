"""Many small events: what upstream services publish most, one to ten named users each, one after
another, all day.

Three measurements in one run, over the same users (existing ones, `small*`):
- the limit: the events' records, rows and count updates written by plain batched statements, 100
  events a statement, on one connection, with no Redis and no Herald code;
- Herald: the same events already waiting in `herald:events`, drained by one and then by two
  `herald worker` processes, timed from the moment they are all on the stream until the last
  entry is acknowledged (a worker acknowledges an entry only after its rows are committed and its
  recipients' counts copied to Redis, so every row is visible by then);
- publish → visible at 80 % of the two workers' sustained rate: events XADDed at a steady rate,
  each timed until the count copy announcing its row reaches the recipient's channel
  (`herald:user:{id}`), the moment a badge or an open stream can show it. Only events reaching a
  sample of the users are timed (the bench process listens to those users' channels only), so
  listening does not load the machine it measures.
Each measurement starts from the same state: the users without rows, statistics fresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Iterable

import httpx
import msgspec
import redis.exceptions
from redis.asyncio.client import PubSub

from bench.base import Bench, k
from bench.env import WORKERS
from bench.report import Row, ratio_row
from bench.seed import TENANT, say
from service.counts import decode_change, decode_counts
from service.keys import GROUP, STREAM, Channels, count_key

PREFIX = "small"  # the users' names, and the events' ids
PER_STATEMENT = 100  # events per statement of the limit
MOST = 10  # recipients of an event: 1..MOST, uniform
LOAD = 0.8  # publish → visible runs at this share of the sustained rate
SAMPLE = 50  # users in this many are listened to (every 50th), for publish → visible
TICK = 0.005  # the publisher XADDs what fell due every TICK seconds, in one pipeline
POLL = 0.01  # seconds between two looks at the consumer group while draining

# The limit's statement: $2.. the events' ids, titles and messages; $5/$6 every recipient, flattened
# (the event's position in the statement, the user's name). The records, the rows (users resolved
# by name, as Herald does), and each recipient's counts +n, one version step.
_LIMIT = """
WITH given AS (
    SELECT e.ord, e.external_id, e.title, e.message, r.users
    FROM unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS e (external_id, title, message, ord)
    JOIN (SELECT ord, array_agg(name) AS users FROM unnest($5::int[], $6::text[]) AS x (ord, name) GROUP BY ord) r
      ON r.ord = e.ord
),
ev AS (
    INSERT INTO events (tenant_id, external_id, type, title, message, audience_users, occurred_at, fanout_done_at)
    SELECT $1, external_id, 'bench.small', title, message, users, now(), now() FROM given
    RETURNING id, occurred_at, type, audience_users
),
ins AS (
    INSERT INTO inbox (user_id, event_id, created_at, type)
    SELECT u.id, ev.id, ev.occurred_at, ev.type FROM ev JOIN users u ON u.tenant_id = $1 AND u.external_id = ANY (ev.audience_users)
    RETURNING user_id
)
UPDATE inbox_counts c SET unread = c.unread + n.n, total = c.total + n.n, unseen = c.unseen + n.n, version = c.version + 1
FROM (SELECT user_id, count(*)::int AS n FROM ins GROUP BY user_id) n
WHERE c.user_id = n.user_id
"""  # noqa: E501
# Back to the start: the users without rows (their counts zero, at a newer version, and no copy in
# Redis), the measured events gone.
_CLEAR_ROWS = "DELETE FROM inbox WHERE user_id BETWEEN $1 AND $2"
_CLEAR_EVENTS = "DELETE FROM events WHERE tenant_id = $1 AND type = 'bench.small'"
_CLEAR_COUNTS = """
UPDATE inbox_counts SET unread = 0, total = 0, unseen = 0, version = version + 1 WHERE user_id BETWEEN $1 AND $2
"""
_ROWS = "SELECT count(*) FROM inbox WHERE user_id BETWEEN $1 AND $2"
_EVENTS = "SELECT count(*) FROM events WHERE tenant_id = $1 AND type = 'bench.small' AND fanout_done_at IS NOT NULL"
# Users whose counts are not their rows (none is read, snoozed or archived here).
_COUNTS_OFF = """
SELECT count(*) FROM inbox_counts c
LEFT JOIN (SELECT user_id, count(*)::int AS n FROM inbox WHERE user_id BETWEEN $1 AND $2 GROUP BY user_id) r
  ON r.user_id = c.user_id
WHERE c.user_id BETWEEN $1 AND $2 AND (c.unread, c.total, c.unseen) IS DISTINCT FROM (coalesce(r.n, 0), coalesce(r.n, 0), coalesce(r.n, 0))
"""  # noqa: E501
_COUNTS = "SELECT user_id, version, unread FROM inbox_counts WHERE user_id BETWEEN $1 AND $2 ORDER BY user_id"
_EVENT_IDS = "SELECT id, external_id FROM events WHERE tenant_id = $1 AND external_id LIKE $2 || '%'"


class Small(msgspec.Struct, frozen=True):
    """One event as a producer publishes it (the fields Herald reads)."""

    id: str
    type: str
    tenant: str
    audience: dict[str, list[str]]
    title: str
    message: str


def make_events(rng: random.Random, run: str, n: int, users: int) -> tuple[list[Small], int]:
    """n events named `run`-0.. of 1..MOST distinct users each, among small1..small<users>; and
    how many rows they make."""
    made = []
    rows = 0
    for i in range(n):
        names = [f"{PREFIX}{u}" for u in rng.sample(range(1, users + 1), rng.randint(1, MOST))]
        rows += len(names)
        made.append(
            Small(
                id=f"{run}-{i}",
                type="bench.small",
                tenant=TENANT,
                audience={"users": names},
                title=f"Export {i} is ready",
                message="Your export of the quarterly report is ready to download.",
            )
        )
    return made, rows


async def limit(b: Bench, made: list[Small]) -> float:
    """Seconds to write the events' records, rows and counts by batched statements (see _LIMIT)."""
    tenant_id = await b.seeder.tenant()
    started = time.perf_counter()
    for at in range(0, len(made), PER_STATEMENT):
        part = made[at : at + PER_STATEMENT]
        ords = [n for n, e in enumerate(part, 1) for _ in e.audience["users"]]
        names = [u for e in part for u in e.audience["users"]]
        await b.conn.execute(
            _LIMIT, tenant_id, [e.id for e in part], [e.title for e in part], [e.message for e in part], ords, names
        )
    return time.perf_counter() - started


async def clear(b: Bench, lo: int, hi: int) -> None:
    """The users back to no rows, as seeded; statistics and a checkpoint, as between figures."""
    tenant_id = await b.seeder.tenant()
    await b.conn.execute(_CLEAR_ROWS, lo, hi)
    await b.conn.execute(_CLEAR_EVENTS, tenant_id)
    await b.conn.execute(_CLEAR_COUNTS, lo, hi)
    for at in range(lo, hi + 1, 1000):
        await b.redis.delete(*(count_key(u) for u in range(at, min(hi, at + 999) + 1)))
    await b.redis.xtrim(STREAM, maxlen=0)  # every entry is acknowledged: keep Redis small
    await b.seeder.settle()


async def queue_all(b: Bench, made: Iterable[Small]) -> float:
    """XADD every event in one MULTI, so that workers see them all at once; the Unix time (from
    the last entry's id: Redis's clock, this machine's) at which they were all there."""
    encode = msgspec.json.Encoder().encode
    async with b.redis.pipeline(transaction=True) as pipe:
        for event in made:
            pipe.xadd(STREAM, {"event": encode(event)})
        ids = await pipe.execute()
    return int(ids[-1].split(b"-")[0]) / 1000


async def drained_at(b: Bench, timeout: float) -> float:
    """The Unix time at which every entry of the stream had been read and acknowledged."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        groups = await b.redis.xinfo_groups(STREAM)
        group = next((g for g in groups if g["name"] in (GROUP, GROUP.encode())), None)
        if group is not None and group["pending"] == 0 and group["lag"] == 0:
            return time.time()
        await asyncio.sleep(POLL)
    raise RuntimeError(f"the stream was not drained within {timeout:.0f} s")


async def check(b: Bench, lo: int, hi: int, events: int, rows: int, what: str, *, copies: bool = True) -> bool:
    """Every event recorded once, every row there, counts exact and (with `copies`) the Redis copies
    equal to them."""
    tenant_id = await b.seeder.tenant()
    got_events = await b.conn.fetchval(_EVENTS, tenant_id)
    got_rows = await b.conn.fetchval(_ROWS, lo, hi)
    off = await b.conn.fetchval(_COUNTS_OFF, lo, hi)
    counts = await b.conn.fetch(_COUNTS, lo, hi) if copies else []
    cached = await b.redis.mget([count_key(r[0]) for r in counts]) if counts else []
    stale = 0
    for r, raw in zip(counts, cached, strict=True):
        copy = None if raw is None else decode_counts(r[0], raw)
        if r[2] and (copy is None or (copy.version, copy.unread) != (r[1], r[2])):
            stale += 1
    problems = []
    if got_events != events or got_rows != rows:
        problems.append(f"{got_events:,} events and {got_rows:,} rows, expected {events:,} and {rows:,}")
    if off:
        problems.append(f"{off} users' counts differ from their rows")
    if stale:
        problems.append(f"{stale} users' Redis copies differ from their counts")
    for problem in problems:
        b.note(f"small events, {what}: {problem}")
    return not problems


async def consuming(b: Bench, workers: int, timeout: float = 60) -> None:
    """Wait until `workers` consumers are reading the stream (a worker joins the group a moment
    after its start; a stopped one stays listed, idle)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(redis.exceptions.ResponseError):  # no stream or group yet
            listed = await b.redis.xinfo_consumers(STREAM, GROUP)
            if sum(1 for c in listed if c["idle"] < 1500) >= workers:
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{workers} worker(s) did not start consuming within {timeout:.0f} s")


async def drain(b: Bench, made: list[Small], rows: int, lo: int, hi: int, workers: int) -> tuple[float, bool]:
    """Seconds for `workers` worker processes to drain the events from the stream, and whether
    everything was right after."""
    b.procs.workers(workers)
    await consuming(b, workers)
    say(f"queueing {len(made):,} events ({rows:,} rows) for {workers} worker(s)")
    started = await queue_all(b, made)
    ended = await drained_at(b, timeout=600)
    seconds = ended - started
    ok = await check(b, lo, hi, len(made), rows, f"{workers} worker(s)")
    say(f"{workers} worker(s): {seconds:.2f} s, {len(made) / seconds:,.0f} events/s, {rows / seconds:,.0f} rows/s")
    return seconds, ok


async def listen(pubsub: PubSub, arrived: dict[int, float], stop: asyncio.Event) -> None:
    """The first arrival time of each event (Herald's event id) announced to a listened user."""
    while not stop.is_set():
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if message is None:
            continue
        change = decode_change(message["data"])
        if change.event is not None:
            arrived.setdefault(change.event, time.perf_counter())


async def visible(b: Bench, made: list[Small], rate: float, lo: int, hi: int) -> tuple[list[float], float, int]:
    """Publish `made` at `rate` a second; the publish → visible times (ms) of the events that reach a
    listened user (the first second's are not counted: warm-up), the rate reached, and how many
    listened events never arrived."""
    sampled = list(range(lo, hi + 1, SAMPLE))
    listened = {f"{PREFIX}{u - lo + 1}" for u in sampled}
    encode = msgspec.json.Encoder().encode
    sent: dict[str, float] = {}
    arrived: dict[int, float] = {}
    stop = asyncio.Event()
    pubsub = b.redis.pubsub()
    channels = Channels.of(b.redis)
    await pubsub.subscribe(*(channels.user(u) for u in sampled))
    listener = asyncio.create_task(listen(pubsub, arrived, stop))
    try:
        await asyncio.sleep(0.2)
        start = time.perf_counter()
        at = 0
        while at < len(made):
            now = time.perf_counter()
            due = min(len(made), int((now - start) * rate) + 1)
            if due > at:
                async with b.redis.pipeline(transaction=False) as pipe:
                    for event in made[at:due]:
                        pipe.xadd(STREAM, {"event": encode(event)})
                    for event in made[at:due]:
                        sent[event.id] = now
                    await pipe.execute()
                at = due
            # The next event's time, but no sooner than a tick from now: one pipeline per tick.
            await asyncio.sleep(max(start + at / rate - time.perf_counter(), now + TICK - time.perf_counter()))
        reached = len(made) / (time.perf_counter() - start)
        await drained_at(b, timeout=60)
        await asyncio.sleep(0.2)  # the last announcements on their way
    finally:
        stop.set()
        await listener
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    tenant_id = await b.seeder.tenant()
    ids = {r[1]: r[0] for r in await b.conn.fetch(_EVENT_IDS, tenant_id, made[0].id.rsplit("-", 1)[0] + "-")}
    warmup = int(rate)  # the first second
    timed = [e for e in made[warmup:] if listened.intersection(e.audience["users"])]
    latencies = sorted((arrived[ids[e.id]] - sent[e.id]) * 1000 for e in timed if ids.get(e.id) in arrived)
    return latencies, reached, len(timed) - len(latencies)


# The workers' own counters (workers/health.py, /metrics), summed over the running workers: the
# fan-out statements (a stream read's small events are one), their time, the events batched.
_COUNTERS = (
    "herald_fanout_duration_seconds_count",
    "herald_fanout_duration_seconds_sum",
    "herald_events_batched_total",
)


async def _worker_counters(b: Bench) -> dict[str, float]:
    totals = dict.fromkeys(_COUNTERS, 0.0)
    async with httpx.AsyncClient(timeout=5) as client:
        for name, url in list(b.procs.urls.items()):
            if name.startswith("worker"):
                for line in (await client.get(url + "/metrics")).text.splitlines():
                    key, _, value = line.partition(" ")
                    if key in totals:
                        totals[key] += float(value)
    return totals


def _percentile(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))] if values else float("inf")


async def small(b: Bench) -> list[Row]:
    s = b.sizes
    rng = random.Random(17)
    lo, hi = await b.seeder.user_group(PREFIX, s.small_users)
    await b.seeder.settle()
    runs = {name: make_events(rng, f"{PREFIX}-{name}", s.small, s.small_users) for name in ("limit", "one", "two")}
    rows = runs["one"][1]
    say(f"limit: {s.small:,} events ({runs['limit'][1]:,} rows), {PER_STATEMENT} a statement, one connection")
    seconds = await limit(b, runs["limit"][0])
    limit_ok = await check(b, lo, hi, s.small, runs["limit"][1], "limit", copies=False)
    limit_rate = s.small / seconds
    say(f"limit: {seconds:.2f} s, {limit_rate:,.0f} events/s, {runs['limit'][1] / seconds:,.0f} rows/s")
    await clear(b, lo, hi)
    b.procs.stop("worker1")  # one worker first (another figure may have started two)
    one, one_ok = await drain(b, *runs["one"], lo, hi, workers=1)
    await clear(b, lo, hi)
    two, two_ok = await drain(b, runs["two"][0], runs["two"][1], lo, hi, workers=2)
    await clear(b, lo, hi)
    sustained = s.small / two
    rate = LOAD * sustained
    say(f"publish → visible at {rate:,.0f} events/s ({LOAD:.0%} of {sustained:,.0f}) for {s.small_seconds:g} s")
    made, _ = make_events(rng, f"{PREFIX}-visible", int(rate * (1 + s.small_seconds)), s.small_users)
    counted = await _worker_counters(b)
    started = time.perf_counter()
    latencies, reached, missing = await visible(b, made, rate, lo, hi)
    took = time.perf_counter() - started
    done = {k: v - counted[k] for k, v in (await _worker_counters(b)).items()}
    statements, in_statements = done[_COUNTERS[0]], done[_COUNTERS[1]]
    if statements:
        profile = (
            f"{statements:,.0f} fan-out statements ({len(made) / statements:.1f} events each), "
            f"{in_statements / statements * 1000:.1f} ms each on average; the {WORKERS} workers spent "
            f"{in_statements / (took * WORKERS):.0%} of the phase's {took:.1f} s in them"
        )
        say(f"the workers during publish → visible: {profile}")
        b.note(f"publish → visible (small events), the workers' own /metrics over the phase: {profile}")
    await clear(b, lo, hi)
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    say(f"publish → visible at {reached:,.0f}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(latencies):,} timed)")
    if missing:
        b.note(f"publish → visible (small events): {missing} timed events were never announced")
    b.note(
        f"small events: {k(s.small)} events of 1–{MOST} named users (uniform) among {k(s.small_users)} existing "
        f"users, {rows / s.small:.2f} rows an event; Herald timed from the moment all were in herald:events "
        "(one MULTI) to the last acknowledgement (rows committed, counts copied); limit: the same records, rows "
        f"and counts +n by plain batched statements, {PER_STATEMENT} events each, one connection, no Redis. "
        f"Rows/s: limit {runs['limit'][1] / seconds:,.0f}, one worker {rows / one:,.0f}, "
        f"two workers {runs['two'][1] / two:,.0f}"
    )
    b.note(
        f"publish → visible (small events): {len(made):,} events XADDed at {reached:,.0f}/s ({LOAD:.0%} of the two "
        f"workers' {sustained:,.0f}/s, in pipelines every {TICK * 1000:.0f} ms), timed to the count copy announcing "
        f"the row on the recipient's channel; {len(latencies):,} events reaching one of the "
        f"{len(range(lo, hi + 1, SAMPLE)):,} listened users, after the first second"
    )
    good = not missing and reached >= rate * 0.95
    drains = [
        ratio_row(f"small events × {k(s.small)}, {n} (events/s)", s.small / t, limit_rate, 0.5, "≥ 0.5× batched SQL")
        for n, t in (("1 worker", one), ("2 workers", two))
    ]
    drains[0].passed = drains[0].passed and limit_ok and one_ok
    drains[1].passed = drains[1].passed and limit_ok and two_ok
    return [
        *drains,
        # The issue's target is the p99's; the p50 is shown beside it. At 80% of what the workers
        # sustain, an event waits for the read in hand, then is written by the next: its p50 is
        # about one and a half statements of a few dozen events (docs/performance.md).
        Row(
            figure=f"small events: publish → visible at {LOAD:.0%} of sustained: p50 (ms)",
            herald=p50,
            limit=None,
            ratio=None,
            target="reference only",
            passed=good,
        ),
        Row(
            figure=f"small events: publish → visible at {LOAD:.0%} of sustained: p99 (ms)",
            herald=p99,
            limit=None,
            ratio=None,
            target="< 100 ms",
            passed=good and p99 < 100,
        ),
    ]
