"""The figures: fan-out (with mutes), badge (with a signed token too), list, publish → visible and
mark all read here, the sweep's (snooze, expiry) in bench/timed.py, many open streams in
bench/streams.py, erasing a user in bench/erase.py, the grouped fan-out in bench/threads.py, tab counts in
bench/tabs.py, bulk read by filter in bench/bulk.py and many small events in bench/small.py. Each measures
Herald and, where there is one, the raw limit of this machine in the same run, and returns table rows. See
docs/performance.md for what each figure means and why it is measured this way."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import jwt
import msgspec

from bench import bare, bulk, django_peer, erase, load, small, streams, tabs, threads, timed, webhooks
from bench.base import Bench, k, raw_tables
from bench.django_peer import AT_LEAST, TARGET
from bench.env import API_WORKERS, JWT_SECRET, WORKERS, peak_rss_mb
from bench.fan import WATCH_EVERY, Want, fan_event
from bench.report import Row, Skipped, ratio_row
from bench.seed import NEWEST, TENANT, say
from service import ids
from service.keys import STREAM, positions_key
from service.model import Position


def _wrk(url: str, **kw: Any) -> Awaitable[load.Load]:
    return asyncio.to_thread(load.wrk, url, **kw)


def _valid(b: Bench, what: str, run: load.Load) -> bool:
    if run.bad:
        b.note(f"{what}: {run.bad} of {run.requests} answers were errors (non-2xx/3xx or socket errors)")
    return run.bad == 0


# --- 1. fan-out ------------------------------------------------------------------------------------

MUTED_TYPE = "bench.fanout.muted"
MUTE_EVERY = 100  # one subscriber in this many mutes MUTED_TYPE: 1%, spread over the id range
# Rows of the event that went to users who muted its type: must be none.
_MUTED_GOT = """
SELECT count(*) FROM preferences p JOIN inbox i ON i.user_id = p.user_id AND i.event_id = $1
WHERE $2 = ANY (p.muted_types)
"""

_RAW = "INSERT INTO bench_raw_inbox (user_id, event_id, created_at) SELECT g, 1, $2 FROM generate_series(1, $1) g"
_RAW_ON_CONFLICT = _RAW + " ON CONFLICT DO NOTHING"


async def raw_insert(conn: asyncpg.Connection, n: int, statement: str, runs: int = 3) -> float:
    """Rows/s of a server-side INSERT … SELECT of n rows into an empty table of the inbox's shape
    and indexes (LIKE inbox INCLUDING ALL: identity, unique constraint, the two list indexes);
    the median of `runs`, each into a freshly truncated table."""
    await conn.execute("DROP TABLE IF EXISTS bench_raw_inbox; CREATE TABLE bench_raw_inbox (LIKE inbox INCLUDING ALL)")
    times = []
    try:
        for _ in range(runs):
            await conn.execute("TRUNCATE bench_raw_inbox")
            started = time.perf_counter()
            await conn.execute(statement, n, NEWEST)
            times.append(time.perf_counter() - started)
    finally:
        await conn.execute("DROP TABLE bench_raw_inbox")
    return n / statistics.median(times)


_FLOOR = """
WITH audience AS (
    SELECT s.user_id FROM subscriptions s JOIN tenants t ON t.id = s.tenant_id
    JOIN users u ON u.id = s.user_id AND u.active
    WHERE t.name = $1 AND s.topic = $2
),
ins AS (
    INSERT INTO bench_raw_inbox (user_id, event_id, created_at) SELECT user_id, 1, $3 FROM audience
    RETURNING user_id
)
UPDATE bench_raw_counts c SET unread = c.unread + 1, total = c.total + 1, version = c.version + 1
WHERE c.user_id = ANY (ARRAY(SELECT user_id FROM ins))
"""


async def floor_insert(conn: asyncpg.Connection, topic: str, runs: int = 3) -> float:
    """Rows/s of the least any fan-out that keeps rows and counts in PostgreSQL must do there: find
    the topic's active subscribers, insert their rows and add one to each one's counts row, in one
    server-side statement, with no Herald code, no chunking and no Redis. If this is below the
    fan-out target, no design of that kind reaches the target on this machine."""
    times = []
    n = 0
    async with raw_tables(conn):
        for _ in range(runs):
            await conn.execute("TRUNCATE bench_raw_inbox, bench_raw_counts")
            await conn.execute("INSERT INTO bench_raw_counts SELECT * FROM inbox_counts")
            await conn.execute("VACUUM ANALYZE bench_raw_counts")
            started = time.perf_counter()
            n = int((await conn.execute(_FLOOR, TENANT, topic, NEWEST)).split()[-1])
            times.append(time.perf_counter() - started)
    return n / statistics.median(times)


async def fanout(b: Bench) -> list[Row]:
    s, seed = b.sizes, b.seeder
    say(f"seeding {s.fanout_big:,} subscribers")
    lo, hi = await seed.user_group("fan", s.fanout_big)
    split = lo + s.fanout - 1  # the small topic's last subscriber
    await seed.subscribe("fan-small", lo, split)
    await seed.subscribe("fan-big", lo, hi)
    # Seeded before the unmuted fan-outs too, so that every fan-out below reads the same preferences
    # table: they differ only in whether the event's type is muted.
    muted = await seed.mute(MUTED_TYPE, lo, split, MUTE_EVERY)
    await seed.settle()
    say(f"raw limit: INSERT … SELECT of {s.raw:,} rows into (LIKE inbox INCLUDING ALL)")
    limit = await raw_insert(b.conn, s.raw, _RAW)
    on_conflict = await raw_insert(b.conn, s.raw, _RAW_ON_CONFLICT)
    say(f"raw: {limit:,.0f} rows/s plain, {on_conflict:,.0f} rows/s with ON CONFLICT DO NOTHING")
    floor = await floor_insert(b.conn, "fan-small")
    say(f"floor (rows + counts, SQL only): {floor:,.0f} rows/s at {s.fanout:,}")
    floor_big = await floor_insert(b.conn, "fan-big")
    say(f"floor (rows + counts, SQL only): {floor_big:,.0f} rows/s at {s.fanout_big:,}")
    await seed.settle()  # the floor's tables are gone; the fan-outs start from a checkpoint, as the floor did
    b.note(
        f"fan-out limit: plain INSERT … SELECT (Herald's fan-out INSERT has no ON CONFLICT; that form ran at "
        f"{on_conflict:,.0f} rows/s); fan-out ran on {WORKERS} `herald worker` processes, HERALD_FANOUT_CHUNK=10000"
    )
    b.note(
        "fan-out floor: the topic's active subscribers found, their rows inserted and their counts rows bumped by "
        "one server-side statement into empty copies of inbox and inbox_counts (median of 3 at each size): no "
        "chunks, no Redis, no Herald code"
    )
    pids = b.procs.workers()
    first = await fan_event(b, "fan-small", lo, split, Want(split=split, high=1, low=1))
    small = first.seconds
    say(f"fan-out 1 × {s.fanout:,}: {small:.2f} s; {first.shown:,} of {first.watched:,} cached counts show it")
    b.note(
        f"fan-out: one recipient in {WATCH_EVERY} held a cached count (made as a badge poll makes it) when the event "
        f"was published, and must show it; the others have none and get none (rebuilt from PostgreSQL when read); "
        "after each fan-out every recipient's counts row is checked at its new version"
    )
    # The muted twin starts, as the first did, from a vacuumed table after a checkpoint, not amid
    # the cleanup of the first one's rows.
    await seed.settle()
    lagging = Want(split=split, high=2, low=1, base=lo, every=MUTE_EVERY)
    rows = s.fanout - muted
    twin = await fan_event(
        b, "fan-small", lo, split, lagging, name="fanout-fan-small-muted", kind=MUTED_TYPE, rows=rows
    )
    got = await b.conn.fetchval(_MUTED_GOT, twin.event_id, MUTED_TYPE)
    if got:
        raise RuntimeError(f"{got} of the {muted} users who muted {MUTED_TYPE} received it")
    say(f"fan-out 1 × {s.fanout:,}, {muted:,} of them muted: {twin.seconds:.2f} s")
    b.note(
        f"fan-out with mutes: the {k(s.fanout)} topic again, every {MUTE_EVERY}th subscriber muting the event's "
        "type (a `preferences` row each), timed like the first; its rows/s count the rows written"
    )
    large = await fan_event(b, "fan-big", lo, hi, msgspec.structs.replace(lagging, high=3))
    big = large.seconds
    say(f"fan-out 1 × {s.fanout_big:,}: {big:.2f} s; {large.shown:,} of {large.watched:,} cached counts show it")
    rss = max(peak_rss_mb(pid) for pid in pids)
    unmuted = s.fanout / small
    # Last, so that nothing of the peer's runs beside Herald's fan-outs.
    peer = await django_peer.fanout(b, s.fanout)
    if not isinstance(peer, Skipped):
        b.note(
            f"fan-out against the Django peer: its `notify.send` to a queryset of {k(s.fanout)} users inside one "
            "`transaction.atomic()` (one INSERT per recipient), timed in its process until the commit returned"
        )
    return [
        _reference(
            f"fan-out floor: {k(s.fanout)} subscribers' rows + counts, one SQL statement (rows/s)", floor, limit
        ),
        _reference(
            f"fan-out floor: {k(s.fanout_big)} subscribers' rows + counts, one SQL statement (rows/s)", floor_big, limit
        ),
        ratio_row(f"fan-out 1 event × {k(s.fanout)} vs floor (rows/s)", unmuted, floor, 0.8, "≥ 0.8× floor"),
        ratio_row(
            f"fan-out 1 event × {k(s.fanout_big)} vs floor (rows/s)", s.fanout_big / big, floor_big, 0.8, "≥ 0.8× floor"
        ),
        _reference(f"fan-out 1 event × {k(s.fanout)} vs raw INSERT (rows/s)", unmuted, limit),
        _reference(f"fan-out 1 event × {k(s.fanout_big)} vs raw INSERT (rows/s)", s.fanout_big / big, limit),
        ratio_row(
            f"fan-out 1 event × {k(s.fanout)}, against the Django peer (rows/s)", unmuted, peer, AT_LEAST, TARGET
        ),
        ratio_row(
            f"fan-out 1 event × {k(s.fanout)}, 1% muted (rows/s)",
            rows / twin.seconds,
            unmuted,
            0.9,
            "≥ 0.9× unmuted fan-out",
        ),
        Row(
            figure=f"fan-out 1 × {k(s.fanout_big)}: worker peak RSS (MB)",
            herald=rss,
            limit=None,
            ratio=None,
            target="< 250 MB",
            passed=rss < 250,
        ),
    ]


def _reference(figure: str, herald: float, limit: float) -> Row:
    """A row shown beside the others for what it says, with no target of its own."""
    return Row(figure=figure, herald=herald, limit=limit, ratio=herald / limit, target="reference only", passed=True)


# --- 2. badge --------------------------------------------------------------------------------------


def signed_headers(user: str) -> dict[str, str]:
    """A signed user token (HS256 JWT) for `user`, as an upstream product would mint it."""
    claims = {"sub": user, "tenant": TENANT, "exp": int(time.time()) + 3600}
    return {"Authorization": f"Bearer {jwt.encode(claims, JWT_SECRET, algorithm='HS256')}"}


async def badge(b: Bench) -> list[Row]:
    s = b.sizes
    await b.prepare_inbox()
    api, bare_url = b.procs.api(), b.procs.bare()
    await b.redis.set(bare.KEY, str(s.badge_small))
    load.check(bare_url + "/count", {}, 200)
    await _wrk(bare_url + "/count", seconds=1)  # warm-up
    limit = await _wrk(bare_url + "/count", seconds=s.wrk_seconds)
    limit_ok = _valid(b, "bare route", limit)
    say(f"bare route, one Redis GET: {limit.rps:,.0f} req/s")
    b.note(f"badge limit: bare Litestar route doing one Redis GET, granian with {API_WORKERS} workers, wrk -t2 -c64")
    b.note(
        "badge signed token: an HS256 JWT (sub, tenant, exp an hour ahead) minted with PyJWT for the 1k-unread "
        "user; after the warm-up each API process knows it from its token cache, as it knows a Herald token"
    )
    rows = []
    ok200: dict[str, tuple[float, bool]] = {}  # Herald's 200 path, by user: req/s, valid
    url = api + "/v1/unread-count"
    cases = (
        ("", "badge-small1", s.badge_small, await b.headers("badge-small1"), ("200", "304")),
        ("", "badge-big1", s.badge_big, await b.headers("badge-big1"), ("200", "304")),
        (", signed token", "badge-small1", s.badge_small, signed_headers("badge-small1"), ("200",)),
    )
    for how, user, n, headers, statuses in cases:
        reply = httpx.get(url, headers=headers)
        body = reply.json() if reply.status_code == 200 else {}
        if body.get("unread_count") != n or not isinstance(body.get("unseen_count"), int):
            raise RuntimeError(f"{url} for {user}{how}: {reply.status_code} {reply.text}")
        etag = reply.headers["etag"]
        await _wrk(url, headers=headers, seconds=1)  # warm-up: every API process caches the token and count
        for label in statuses:
            extra = {"If-None-Match": etag} if label == "304" else {}
            load.check(url, {**headers, **extra}, int(label))
            run = await _wrk(url, headers={**headers, **extra}, seconds=s.wrk_seconds)
            what = f"badge {label}, {k(n)} unread{how}"
            valid = _valid(b, what, run)
            say(f"{what}: {run.rps:,.0f} req/s")
            row = ratio_row(f"{what} (req/s)", run.rps, limit.rps, 1.0, "≥ 1.0× bare route + Redis GET")
            row.passed = row.passed and valid and limit_ok
            rows.append(row)
            if label == "200" and not how:
                ok200[user] = (run.rps, valid)
    # The peer's own badge for users with as many unread (it has no 304 and no signed token).
    for prefix, n in (("badge-small", s.badge_small), ("badge-big", s.badge_big)):
        peer = await django_peer.throughput(b, django_peer.BADGE, prefix, n, 0, {"unread_count": n})
        herald, ok = ok200[f"{prefix}1"]
        row = ratio_row(f"badge 200, {k(n)} unread, against the Django peer (req/s)", herald, peer, AT_LEAST, TARGET)
        row.passed = row.passed and ok
        rows.append(row)
    return rows


# --- 3. list ---------------------------------------------------------------------------------------


FIRST_VISITS = 200


async def list_pages(b: Bench) -> list[Row]:
    s = b.sizes
    await b.prepare_inbox()
    api = b.procs.api()
    headers = await b.headers("list1")
    user_id = await b.seeder.user_id("list1")
    at = await b.conn.fetchrow(
        "SELECT created_at, id FROM inbox WHERE user_id = $1 ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1",
        user_id,
        s.deep - 1,
    )
    assert at is not None
    cursor = ids.to_cursor(Position(created_at=at[0], id=at[1]))
    page = s.deep // 12 + 1  # qualytics lists unacknowledged rows (half of this user's), 12 a page
    urls = {
        "scalebox first page (50)": (api + "/v1/notifications", 50),
        "qualytics first page (12)": (api + "/api/user-notifications", 12),
        f"scalebox cursor after {k(s.deep)} rows": (api + f"/v1/notifications?cursor={cursor}", 50),
        f"qualytics page={page} (offset {(page - 1) * 12:,})": (api + f"/api/user-notifications?page={page}", 12),
    }
    for name, (url, size) in urls.items():
        body = httpx.get(url, headers=headers).raise_for_status().json()
        got = len(body["data"]["notifications"]) if "data" in body else len(body["items"])
        if got != size:
            raise RuntimeError(f"{name}: {got} items, expected {size}: {str(body)[:300]}")
        await _wrk(url, headers=headers, seconds=1, threads=1, connections=1)  # warm-up
    p50: dict[str, float] = {}
    for name, (url, _) in urls.items():
        run = await _wrk(url, headers=headers, seconds=s.p50_seconds, threads=1, connections=1)
        _valid(b, name, run)
        p50[name] = run.p50_ms
        say(f"{name}: p50 {run.p50_ms:.2f} ms, one connection")
    b.note(
        "list p50: measured by wrk over one keep-alive connection (-t1 -c1), so it includes the client and the "
        "loopback: an upper bound on the server-side time (Herald sends no Server-Timing)"
    )
    rows = []
    names = list(urls)
    walked = await _first_visits(b, user_id, headers, urls[names[3]][0], urls[names[1]][0])
    for name in names[:2]:
        rows.append(
            Row(
                figure=f"list {name}, {k(s.list_rows)} rows: p50 (ms)",
                herald=p50[name],
                limit=None,
                ratio=None,
                target="< 5 ms",
                passed=p50[name] < 5,
            )
        )
    bare_url = f"{b.procs.bare()}/page/{user_id}?size=12"
    await _wrk(bare_url, seconds=1)  # warm-up
    bare_run = await _wrk(bare_url, seconds=s.wrk_seconds)
    say(f"bare route, the same 12-row query: {bare_run.rps:,.0f} req/s")
    herald = {}
    for name in names[:2]:
        run = await _wrk(urls[name][0], headers=headers, seconds=s.wrk_seconds)
        herald[name] = (run.rps, _valid(b, name, run))
        say(f"{name}: {run.rps:,.0f} req/s")
    # The peer's pages of the same work, for a user with the same notifications (half of them read):
    # all of them 50 at a time beside scalebox's first page, the unread ones 12 at a time beside qualytics'.
    unread = s.list_rows - s.list_rows // 2
    peer = {
        names[0]: await django_peer.throughput(
            b,
            django_peer.ALL_LIST + "50",
            "list",
            s.list_rows,
            2,
            {"all_list": 50, "all_count": s.list_rows},
        ),
        names[1]: await django_peer.throughput(
            b,
            django_peer.UNREAD_LIST + "12",
            "list",
            s.list_rows,
            2,
            {"unread_list": 12, "unread_count": unread},
        ),
    }
    if not isinstance(peer[names[1]], Skipped):
        b.note(
            f"list against the Django peer: its `api/all_list/?max=50` beside the scalebox first page and its "
            f"`api/unread_list/?max=12` beside the qualytics one, for a user with the same {k(s.list_rows)} "
            "notifications, half read; wrk -t2 -c64 as for Herald"
        )
    row = ratio_row(
        "list limit: bare Litestar route, the same 12-row query, no auth/counts/profile (req/s)",
        bare_run.rps,
        peer[names[1]],
        0.0,
        "reference only",
    )
    row.passed = row.passed and _valid(b, "bare page", bare_run)
    rows.append(row)
    for name in names[:2]:
        rps, ok = herald[name]
        row = ratio_row(f"list {name}, against the Django peer (req/s)", rps, peer[name], AT_LEAST, TARGET)
        row.passed = row.passed and ok
        rows.append(row)
    deep_walked, first_httpx = walked
    rows.append(
        Row(
            figure=f"list {names[3]}, first visit (no position remembered): p50 (ms)",
            herald=deep_walked,
            limit=first_httpx,
            ratio=deep_walked / first_httpx,
            target="reference only",
            passed=True,
        )
    )
    for deep, first in ((names[3], names[1]), (names[2], names[0])):
        ratio = p50[deep] / p50[first]
        rows.append(
            Row(
                figure=f"list {deep}: p50 (ms)",
                herald=p50[deep],
                limit=p50[first],
                ratio=ratio,
                target="≤ 2.0× first page",
                passed=ratio <= 2.0,
            )
        )
    return rows


async def _first_visits(b: Bench, user_id: int, headers: dict[str, str], deep: str, first: str) -> tuple[float, float]:
    """p50 of the deep page when no position is remembered (the user's positions dropped before
    each request, so each walks its offset), and of the first page timed the same way (httpx, one
    connection): what a jump to a page nobody visited since the last change costs."""
    times: dict[str, list[float]] = {deep: [], first: []}
    async with httpx.AsyncClient(headers=headers) as client:
        for _ in range(FIRST_VISITS):
            for url in (deep, first):
                await b.redis.delete(positions_key(user_id))
                started = time.perf_counter()
                (await client.get(url)).raise_for_status()
                times[url].append((time.perf_counter() - started) * 1000)
    p50 = statistics.median(times[deep]), statistics.median(times[first])
    say(f"deep page, first visit: p50 {p50[0]:.2f} ms; first page timed the same way: {p50[1]:.2f} ms")
    b.note(
        f"list first visit: {FIRST_VISITS} requests each of the deep page and the first page over one httpx "
        "connection, the user's remembered positions dropped before each (service/positions.py), so every deep "
        "page walks its offset in the index; the wrk rows above repeat one URL, so all but the first of their "
        "deep requests start from the position the first remembered"
    )
    return p50


# --- 4. publish → visible --------------------------------------------------------------------------


async def visible(b: Bench) -> list[Row]:
    """Single-recipient events XADDed at a steady rate; each recipient holds GET /v1/stream open.

    A row's `notification` event is sent by the API only after the worker committed the row and
    published the new counts, so its arrival time bounds from above the moment the row became
    readable over HTTP. One arrival in 25 is checked with a GET of the user's list at once."""
    s = b.sizes
    api = b.procs.api()
    b.procs.workers()
    lo, hi = await b.seeder.user_group("pv", s.visible_users)
    names = [f"pv{i}" for i in range(1, hi - lo + 2)]
    tokens = {name: await b.seeder.token(name) for name in names}
    warmup = s.visible_rate  # the first second fills the caches (tenant, known users); not counted
    total = warmup + int(s.visible_rate * s.visible_seconds)
    events = [
        msgspec.json.encode(
            {
                "id": f"visible-{i}",
                "type": "bench.visible",
                "tenant": TENANT,
                "audience": {"users": [names[i % len(names)]]},
                "title": str(i),
                "message": "Your export is ready.",
            }
        )
        for i in range(total)
    ]
    sent: dict[int, float] = {}
    arrived: dict[int, float] = {}
    checks: list[asyncio.Task[bool]] = []
    ready = 0
    limits = httpx.Limits(max_connections=len(names) + 50, max_keepalive_connections=len(names) + 50)
    async with httpx.AsyncClient(base_url=api, timeout=httpx.Timeout(30, read=None), limits=limits) as http:

        async def readable(name: str, item_id: str, seq: int) -> bool:
            path = f"/v1/notifications/{item_id}"
            reply = await http.get(path, headers={"Authorization": f"Bearer {tokens[name]}"})
            return reply.status_code == 200 and reply.json()["data"]["title"] == str(seq)

        async def listen(name: str) -> None:
            nonlocal ready
            headers = {"Authorization": f"Bearer {tokens[name]}", "Accept": "text/event-stream"}
            async with http.stream("GET", "/v1/stream", headers=headers) as reply:
                kind = ""
                async for line in reply.aiter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:") and kind == "unread" and not ready_seen.get(name):
                        ready_seen[name] = True
                        ready += 1
                    elif line.startswith("data:") and kind == "notification":
                        item = msgspec.json.decode(line[5:])
                        seq = int(item["title"])
                        arrived[seq] = time.perf_counter()
                        if seq % 25 == 0:
                            checks.append(asyncio.create_task(readable(name, item["id"], seq)))

        ready_seen: dict[str, bool] = {}
        listeners = [asyncio.create_task(listen(name)) for name in names]
        try:
            deadline = time.perf_counter() + 30
            while ready < len(names):
                if time.perf_counter() > deadline:
                    raise RuntimeError("the event streams did not open within 30 s")
                await asyncio.sleep(0.05)
            say(f"{len(names)} event streams open; publishing {total:,} events at {s.visible_rate}/s")
            start = time.perf_counter() + 0.2
            for i, raw in enumerate(events):
                delay = start + i / s.visible_rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent[i] = time.perf_counter()
                await b.redis.xadd(STREAM, {"event": raw})
            rate = (total - 1) / (sent[total - 1] - sent[0])
            deadline = time.perf_counter() + 30
            while len(arrived) < total and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
            results = await asyncio.gather(*checks)
        finally:
            for task in listeners:
                task.cancel()
            await asyncio.gather(*listeners, return_exceptions=True)
    latencies = sorted((arrived[i] - sent[i]) * 1000 for i in arrived if i >= warmup)
    missing = total - warmup - len(latencies)
    unreadable = results.count(False)
    if missing:
        b.note(f"publish → visible: {missing} of {total - warmup} events never arrived")
    if unreadable:
        b.note(f"publish → visible: {unreadable} of {len(results)} sampled rows were not readable when announced")
    b.note(
        f"publish → visible: {total - warmup:,} single-recipient events XADDed at {rate:,.0f}/s to {len(names)} "
        f"users after {warmup} not counted, each timed to the user's GET /v1/stream announcing the row (sent after "
        "the commit, the count copy and one event read by the API: an upper bound); "
        f"{len(results)} sampled rows read back over HTTP at once"
    )
    p50 = latencies[len(latencies) // 2] if latencies else float("inf")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("inf")
    say(f"publish → visible at {rate:,.0f}/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    good = not missing and not unreadable and rate >= s.visible_rate * 0.95
    return [
        Row(
            figure=f"publish → visible at {s.visible_rate}/s: p50 (ms)",
            herald=p50,
            limit=None,
            ratio=None,
            target="< 20 ms",
            passed=good and p50 < 20,
        ),
        Row(
            figure=f"publish → visible at {s.visible_rate}/s: p99 (ms)",
            herald=p99,
            limit=None,
            ratio=None,
            target="< 100 ms",
            passed=good and p99 < 100,
        ),
    ]


# --- 5. mark all read ------------------------------------------------------------------------------


async def readall(b: Bench) -> list[Row]:
    s = b.sizes
    await b.prepare_inbox()
    api = b.procs.api()
    headers = await b.headers("readall1")
    with httpx.Client(base_url=api, headers=headers, timeout=60) as http:
        before = http.get("/v1/unread-count").raise_for_status().json()["unread_count"]
        if before != s.readall:
            raise RuntimeError(f"read-all user has {before} unread, expected {s.readall}")
        started = time.perf_counter()
        reply = http.patch("/v1/notifications/read-all").raise_for_status()
        elapsed = time.perf_counter() - started
        after = http.get("/v1/unread-count").raise_for_status().json()["unread_count"]
    marked = reply.json()["data"]["marked_count"]
    if marked != s.readall:
        b.note(f"read-all marked {marked} rows, expected {s.readall}")
    say(f"read-all of {s.readall:,} unread: {elapsed * 1000:.0f} ms; badge right after: {after}")
    return [
        Row(
            figure=f"mark all read, {k(s.readall)} unread (s)",
            herald=elapsed,
            limit=None,
            ratio=None,
            target="< 1 s",
            passed=elapsed < 1 and marked == s.readall,
        ),
        Row(
            figure="badge right after read-all (unread)",
            herald=float(after),
            limit=None,
            ratio=None,
            target="= 0",
            passed=after == 0,
        ),
    ]


Figure = Callable[[Bench], Awaitable[list[Row]]]
FIGURES: dict[str, Figure] = {
    "fanout": fanout,
    "badge": badge,
    "list": list_pages,
    "visible": visible,
    "readall": readall,
    "snooze": timed.snooze,
    "expiry": timed.expiry,
    "streams": streams.streams,
    "erase": erase.erase,
    "grouped": threads.grouped,
    "tabs": tabs.tabs,
    "bulk": bulk.bulk,
    "webhooks": webhooks.webhooks,
    "small": small.small,
}
HTTP_FIGURES = {"badge", "list", "visible", "readall", "streams", "erase", "tabs", "bulk", "webhooks"}
WRK_FIGURES = {"badge", "list"}
