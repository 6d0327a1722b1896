"""Bulk read by filter (`bulk`, see docs/performance.md): `POST /v1/notifications/bulk` with
`{"action": "read"}` for a user with 100,000 unread notifications, timed over HTTP, then the badge
at once, which must be exact: 0 for the empty filter, and for a filter by type that matches half
of another user's notifications, the other half.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from bench.agree import counts_agree
from bench.base import Bench, k, load_average
from bench.report import Row
from bench.seed import Typed, say

TYPES = ["bench.bulk.a", "bench.bulk.b"]  # alternating: a filter by one of them matches half


async def bulk(b: Bench) -> list[Row]:
    s, seed = b.sizes, b.seeder
    n = s.bulk
    # bulk1 reads everything, bulk2 half (one type of two). Each has events and rows of its own, so
    # that neither case finds pages the other already changed since the checkpoint before it.
    # bulk3 marks all read in one statement (PATCH …/read-all): the same work without batches or filter.
    lo, hi = await seed.user_group("bulk", 3)
    for user_id in range(lo, hi + 1):
        spec = Typed(prefix=f"bulk{user_id}-", events=n, types=TYPES, categories=["Operations"])
        await seed.typed_rows(user_id, user_id, spec)
    api = b.procs.api()
    load_before = load_average()
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("bulk1", "{}", {}, n),
        ("bulk2", f'{{"type": ["{TYPES[0]}"]}} (half)', {"type": [TYPES[0]]}, n // 2),
    ]
    rows: list[Row] = []
    problems: list[str] = []
    for user, shown, where, matching in cases:
        await seed.settle()  # each case starts from a vacuumed table after a checkpoint, as read-all does
        with httpx.Client(base_url=api, headers=await b.headers(user), timeout=120) as http:
            before = http.get("/v1/unread-count").raise_for_status().json()["unread_count"]
            if before != n:
                raise RuntimeError(f"{user} has {before} unread, expected {n}")
            started = time.perf_counter()
            reply = http.post("/v1/notifications/bulk", json={"action": "read", "filter": where}).raise_for_status()
            elapsed = time.perf_counter() - started
            after = http.get("/v1/unread-count").raise_for_status().json()["unread_count"]
        changed = reply.json()["data"]["changed"]
        if changed != matching:
            problems.append(f"filter {shown}: changed {changed}, expected {matching}")
        say(f"bulk read, filter {shown}, {n:,} unread: {elapsed:.2f} s, {changed:,} changed; badge after: {after:,}")
        rows.append(
            Row(
                figure=f"bulk read by filter {shown}, {k(n)} unread (s)",
                herald=elapsed,
                limit=None,
                ratio=None,
                target="< 2 s",
                passed=elapsed < 2 and changed == matching,
            )
        )
        rows.append(
            Row(
                figure=f"badge right after bulk read by filter {shown} (unread)",
                herald=float(after),
                limit=None,
                ratio=None,
                target=f"= {n - matching:,}",
                passed=after == n - matching,
            )
        )
    await seed.settle()
    with httpx.Client(base_url=api, headers=await b.headers("bulk3"), timeout=120) as http:
        started = time.perf_counter()
        reply = http.patch("/v1/notifications/read-all").raise_for_status()
        readall = time.perf_counter() - started
    if reply.json()["data"]["marked_count"] != n:
        problems.append(f"read-all marked {reply.json()['data']['marked_count']}, expected {n}")
    say(f"read-all of {n:,} unread, the same machine and moment: {readall:.2f} s")
    rows.append(
        Row(
            figure=f"bulk reference: mark all read (one statement), {k(n)} unread (s)",
            herald=readall,
            limit=None,
            ratio=None,
            target="reference only",
            passed=True,
        )
    )
    agreement = await counts_agree(b, lo, hi)
    if not agreement.agree(copies=True):
        problems.append(f"counts after: {agreement}")
        for row in rows:
            row.passed = False
    for problem in problems:
        b.note(f"bulk: {problem}")
    b.note(
        f"bulk: three users with {k(n)} unread notifications each (type and category on each row), types {TYPES[0]} "
        f"and {TYPES[1]} alternating, each case after a vacuum and checkpoint; POST /v1/notifications/bulk "
        '{"action": "read"} timed over HTTP (httpx), then GET /v1/unread-count at once; the third user\'s PATCH '
        "/v1/notifications/read-all timed the same way, for reference; counts = rows = Redis copies "
        f"checked after ({load_before} before, {load_average()} after)"
    )
    return rows
