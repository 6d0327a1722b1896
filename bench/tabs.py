"""Tab counts (`tabs`, see docs/performance.md): `POST /v1/counts` with five tabs for a user with
10,000 notifications of six types and four categories, some read, seen or archived, over one
keep-alive connection to the API.

The API answers tabs from one grouped count of the user's rows (the breakdown), cached in Redis
under the user's count version and brought forward by the changes a bell makes one at a time
(service/counts/tabs.py). So three cases are timed apart: `warm`, nothing changes between calls and
each is answered from the cache; `marked`, a mark read or unread (not timed) comes before each
call, and brings the cached breakdown to its version; `recount`, the cached breakdown is dropped
before each call (as after a change of many rows), so each call counts the rows again. Every answer
is checked against a count of the rows made here, independently of the API's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
import redis

from bench.agree import counts_agree
from bench.base import Bench, k, load_average
from bench.report import Row
from bench.seed import Typed, say
from service import ids
from service.counts.tabs import breakdown_of
from service.keys import tabs_key

TYPES = [f"bench.tab.{name}" for name in ("scan", "export", "alert", "invite", "comment", "billing")]
CATEGORIES = ["Operations", "Security", "Billing", "Social"]
# Of the user's rows, those of every READ_EVERY-th event are read, and so on.
READ_EVERY, SEEN_EVERY, ARCHIVED_EVERY = 3, 2, 10
# What a bell with tabs asks: everything, two by type, one by category, one by both, the archive.
TABS: dict[str, dict[str, Any]] = {
    "all": {},
    "scans": {"type": TYPES[:2]},
    "security": {"category": [CATEGORIES[1]]},
    "mixed": {"type": TYPES[2:5], "category": CATEGORIES[:2]},
    "archive": {"archived": True},
}
STATEMENT_RUNS = 200  # the breakdown statement alone, timed this many times

# One tab's numbers for user $1 from the rows, as the contract defines them ($2 types, $3 categories,
# NULL: any; $4 'false' the inbox, 'true' the archive, 'all' both).
_TAB = """
SELECT (count(*) FILTER (WHERE read_at IS NULL))::int,
       (count(*) FILTER (WHERE read_at IS NULL AND seen_at IS NULL))::int,
       count(*)::int
FROM inbox
WHERE user_id = $1 AND snoozed_until IS NULL
  AND ($2::text[] IS NULL OR type = ANY ($2::text[]))
  AND ($3::text[] IS NULL OR category = ANY ($3::text[]))
  AND CASE $4::text WHEN 'all' THEN true WHEN 'true' THEN archived_at IS NOT NULL ELSE archived_at IS NULL END
"""
_UNREAD_ROW = """
SELECT id FROM inbox WHERE user_id = $1 AND read_at IS NULL AND archived_at IS NULL AND snoozed_until IS NULL
ORDER BY created_at DESC, id DESC LIMIT 1
"""

Answer = dict[str, dict[str, int]]


async def _expected(b: Bench, user_id: int) -> Answer:
    answer: Answer = {}
    for name, tab in TABS.items():
        archived = tab.get("archived", False)
        where = "all" if archived == "all" else "true" if archived else "false"
        found = await b.conn.fetchrow(_TAB, user_id, tab.get("type"), tab.get("category"), where)
        assert found is not None
        answer[name] = {"unread": found[0], "unseen": found[1], "total": found[2]}
    return answer


def _timed(
    http: httpx.Client, seconds: float, check: Callable[[int, Answer], None], between: Callable[[int], None]
) -> list[float]:
    """POST /v1/counts for `seconds` (at least 50 calls); the milliseconds of each call. `between(i)`
    runs before call i, untimed; `check(i, answer)` after it."""
    body = msgspec.json.encode({"tabs": TABS})
    headers = {"Content-Type": "application/json"}
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 50:
        i = len(samples)
        between(i)
        started = time.perf_counter()
        reply = http.post("/v1/counts", content=body, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        if reply.status_code != 200:
            raise RuntimeError(f"POST /v1/counts: {reply.status_code} {reply.text[:300]}")
        check(i, reply.json()["tabs"])
    return samples


def _badge_times(http: httpx.Client, seconds: float) -> list[float]:
    """GET /v1/unread-count over the same connection for `seconds`: what the client, the loopback and
    Herald's request path cost without the tabs, to read the tab figures against."""
    samples: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 50:
        started = time.perf_counter()
        http.get("/v1/unread-count").raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def tabs(b: Bench) -> list[Row]:
    s, seed = b.sizes, b.seeder
    n = s.tabs_rows
    # The user is the first of `tabs_spread` users who all got the same events, so that each of
    # its rows lies among others' rows, as fan-outs leave them, not packed in a few pages.
    lo, hi = await seed.user_group("tabs", s.tabs_spread)
    spec = Typed(
        prefix="tabs-",
        events=n,
        types=TYPES,
        categories=CATEGORIES,
        read_every=READ_EVERY,
        seen_every=SEEN_EVERY,
        archived_every=ARCHIVED_EVERY,
    )
    await seed.typed_rows(lo, hi, spec)
    await seed.settle()
    user_id = lo
    api = b.procs.api()
    expected = await _expected(b, user_id)
    load_before = load_average()
    problems: list[str] = []

    def check(want: Answer) -> Callable[[int, Answer], None]:
        def compare(i: int, got: Answer) -> None:
            if got != want and len(problems) < 3:
                problems.append(f"call {i}: {got} != {want} (from the rows)")

        return compare

    public = ids.to_scalebox(await b.conn.fetchval(_UNREAD_ROW, user_id))
    with httpx.Client(base_url=api, headers=await b.headers("tabs1"), timeout=30) as http:
        badge = http.get("/v1/unread-count").raise_for_status().json()
        if (badge["unread_count"], badge["unseen_count"]) != (expected["all"]["unread"], expected["all"]["unseen"]):
            problems.append(f"the badge says {badge}, the rows {expected['all']}")
        _timed(http, 0.5, check(expected), lambda i: None)  # warm-up: connection, token, count copy
        warm = _timed(http, s.p50_seconds, check(expected), lambda i: None)
        polls = _badge_times(http, s.p50_seconds)

        def mark(how: str) -> None:
            http.patch(f"/v1/notifications/{public}/{how}").raise_for_status()

        # The two states the cold calls alternate between, counted from the rows: one row read, then
        # unread again (a mark read may also mark it seen, so the second is not the first state).
        mark("read")
        mark("unread")
        unread_again = await _expected(b, user_id)
        mark("read")
        read = await _expected(b, user_id)
        states = (check(unread_again), check(read))
        # Call i follows a mark unread when i is even, a mark read when odd: each changes the version.
        marked = _timed(
            http,
            s.p50_seconds,
            lambda i, got: states[i % 2](i, got),
            lambda i: mark("read" if i % 2 else "unread"),
        )
        # The last call followed a mark read or unread: that state stays, and each call counts it.
        last = states[(len(marked) - 1) % 2]
        dropper = redis.Redis(**b.redis.connection_pool.connection_kwargs)

        def drop(i: int) -> None:
            dropper.delete(tabs_key(user_id))

        try:
            recount = _timed(http, s.p50_seconds, last, drop)
        finally:
            dropper.close()
    agreement = await counts_agree(b, user_id, user_id)
    if not agreement.agree(copies=False):
        problems.append(f"counts: {agreement}")
    statement = []
    for _ in range(STATEMENT_RUNS):
        started = time.perf_counter()
        await breakdown_of(b.conn, user_id)
        statement.append((time.perf_counter() - started) * 1000)
    for problem in problems:
        b.note(f"tabs: {problem}")
    shown = expected["all"]
    say(
        f"tabs, warm: p50 {_p(warm, 0.5):.2f} ms p99 {_p(warm, 0.99):.2f} ms ({len(warm)} calls); "
        f"marked: p50 {_p(marked, 0.5):.2f} ms p99 {_p(marked, 0.99):.2f} ms ({len(marked)} calls); "
        f"recount: p50 {_p(recount, 0.5):.2f} ms p99 {_p(recount, 0.99):.2f} ms ({len(recount)} calls); "
        f"badge p50 {_p(polls, 0.5):.2f} ms; statement alone p50 {statistics.median(statement):.2f} ms"
    )
    b.note(
        f"tabs: one user with {k(n)} notifications ({shown['total']:,} in the inbox, {shown['unread']:,} unread; "
        f"the rest archived) of {len(TYPES)} types × {len(CATEGORIES)} categories, each row among those of "
        f"{s.tabs_spread - 1} other users of the same events; POST /v1/counts with 5 tabs ({', '.join(TABS)}) timed "
        "by an httpx client over one keep-alive connection (client and loopback included); warm: nothing changes "
        "between calls (the breakdown cached per count version answers); marked: a PATCH …/read or …/unread of one "
        "row (untimed) before each call, whose copy of the counts brings the cached breakdown forward; recount: "
        "the cached breakdown deleted from Redis (untimed) before each call, so each call counts the rows again; "
        "every answer checked against the rows. "
        f"The breakdown statement alone: {STATEMENT_RUNS} runs over asyncpg from the bench process "
        f"({load_before} before, {load_average()} after)"
    )
    good = not problems
    rows = []
    cases = (
        ("unchanged between calls (cached)", warm, True),
        ("a mark read or unread before each call (brought forward)", marked, True),
        ("the cached breakdown dropped before each call (recount)", recount, False),
    )
    for case, samples, targeted in cases:
        p50, p99 = _p(samples, 0.5), _p(samples, 0.99)
        rows.append(
            Row(
                figure=f"tabs: 5 tabs, {k(n)} notifications, {case}: p50 (ms)",
                herald=p50,
                limit=None,
                ratio=None,
                target="< 5 ms" if targeted else "reference only",
                passed=good and (p50 < 5 or not targeted),
            )
        )
        rows.append(
            Row(
                figure=f"tabs: 5 tabs, {k(n)} notifications, {case}: p99 (ms)",
                herald=p99,
                limit=None,
                ratio=None,
                target="reference only",
                passed=good,
            )
        )
    rows.append(
        Row(
            figure="tabs reference: GET /v1/unread-count over the same connection: p50 (ms)",
            herald=_p(polls, 0.5),
            limit=None,
            ratio=None,
            target="reference only",
            passed=True,
        )
    )
    rows.append(
        Row(
            figure=f"tabs: the grouped count statement alone, {k(n)} notifications: p50 (ms)",
            herald=statistics.median(statement),
            limit=None,
            ratio=None,
            target="reference only",
            passed=True,
        )
    )
    return rows
