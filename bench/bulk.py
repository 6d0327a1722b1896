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
    # bulk1 reads everything, bulk2 half (one type of two); both got the same n events.
    lo, hi = await seed.user_group("bulk", 2)
    await seed.typed_rows(lo, hi, Typed(prefix="bulk-", events=n, types=TYPES, categories=["Operations"]))
    await seed.settle()
    api = b.procs.api()
    load_before = load_average()
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("bulk1", "{}", {}, n),
        ("bulk2", f'{{"type": ["{TYPES[0]}"]}} (half)', {"type": [TYPES[0]]}, n // 2),
    ]
    rows: list[Row] = []
    problems: list[str] = []
    for user, shown, where, matching in cases:
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
    agreement = await counts_agree(b, lo, hi)
    if not agreement.agree(copies=True):
        problems.append(f"counts after: {agreement}")
        for row in rows:
            row.passed = False
    for problem in problems:
        b.note(f"bulk: {problem}")
    b.note(
        f"bulk: two users with the same {k(n)} unread notifications (rows interleaved as a fan-out writes them, "
        f"type and category on each row), types {TYPES[0]} and {TYPES[1]} alternating; POST /v1/notifications/bulk "
        '{"action": "read"} timed over HTTP (httpx), then GET /v1/unread-count at once; counts = rows = Redis copies '
        f"checked after ({load_before} before, {load_average()} after)"
    )
    return rows
