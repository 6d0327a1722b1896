"""The webhooks figure: deliveries per second, a change's webhook leaving on an idle system, and what
the outbox costs the read path. The receiver is service/local/receiver.py on this process's loop
(answering 204), reached on 127.0.0.1: the processes run with HERALD_WEBHOOK_ALLOW_PRIVATE=1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import time
from collections.abc import Iterator

import httpx

from bench.base import Bench, k
from bench.env import WORKERS
from bench.report import Row
from bench.seed import TENANT, say
from service import admin, ids
from service.local.receiver import Receiver

# Pending deliveries written straight into the outbox, then drained by the workers.
_PENDING = """
INSERT INTO webhook_deliveries (webhook_id, tenant_id, type, data)
SELECT $1, $2, 'inbox.bulk', jsonb_build_object('action', 'read', 'changed', g) FROM generate_series(1, $3) g
"""
_UNREAD_AGAIN = """
WITH r AS (UPDATE inbox SET read_at = NULL WHERE user_id = $1 AND read_at IS NOT NULL RETURNING 1)
UPDATE inbox_counts SET unread = unread + (SELECT count(*) FROM r)::int, version = version + 1 WHERE user_id = $1
"""
DRAIN = {"full": 50_000, "quick": 5_000}
CHANGES = 100  # single changes timed from the request to their arrival, on an idle system
READ_PATH_RUNS = 600  # mark-read requests per setting; read-all runs are a tenth of that
READ_ALL_ROWS = 1_000
_LIVE = "UPDATE webhooks SET deleted_at = CASE WHEN $2 THEN NULL ELSE now() END WHERE id = $1"


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("inf")


async def _read_path(
    b: Bench, http: httpx.AsyncClient, headers: dict[str, str], nid: str, user_id: int, webhook_id: int
) -> tuple[list[float], list[float]]:
    """Median mark-read and read-all times (ms), one request at a time, without and with the webhook
    in turn (deleted and restored between runs: every tenth mark, every read-all), so that the rest
    of the machine's load weighs on both alike."""
    marks: tuple[list[float], list[float]] = ([], [])
    alls: tuple[list[float], list[float]] = ([], [])
    for n in range(READ_PATH_RUNS * 2):
        live = (n // 10) % 2
        if n % 10 == 0:
            await b.conn.execute(_LIVE, webhook_id, bool(live))
        started = time.perf_counter()
        (
            await http.patch(f"/v1/notifications/{nid}/{'read' if n % 2 == 0 else 'unread'}", headers=headers)
        ).raise_for_status()
        marks[live].append(time.perf_counter() - started)
    for n in range(READ_PATH_RUNS // 10 * 2):
        live = n % 2
        await b.conn.execute(_LIVE, webhook_id, bool(live))
        await b.conn.execute(_UNREAD_AGAIN, user_id)
        started = time.perf_counter()
        (await http.patch("/v1/notifications/read-all", headers=headers)).raise_for_status()
        alls[live].append(time.perf_counter() - started)
    return (
        [statistics.median(marks[0]) * 1000, statistics.median(alls[0]) * 1000],
        [statistics.median(marks[1]) * 1000, statistics.median(alls[1]) * 1000],
    )


@contextlib.contextmanager
def _paused(pids: list[int]) -> Iterator[None]:
    """The workers stopped (SIGSTOP) for the block: the read path is timed with the outbox rows it
    writes and without their sending, which competes for the same two cores (the deliveries/s row
    measures that)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


async def webhooks(b: Bench) -> list[Row]:
    api = b.procs.api()
    workers = b.procs.workers()
    seed = b.seeder
    await seed.ensure_events(max(READ_ALL_ROWS, CHANGES))
    lo, _ = await seed.user_group("hook", 2)
    await seed.rows(lo, lo, CHANGES, spread=False)  # hook1: a notification per timed change
    await seed.rows(lo + 1, lo + 1, READ_ALL_ROWS, spread=False)  # hook2: the read path's
    await seed.settle()
    async with b.conn.transaction():
        made = await admin.create_user(b.conn, TENANT, "hook-admin", "admin")
    owner = {"Authorization": f"Bearer {made.token}"}
    one = {"Authorization": f"Bearer {await seed.token('hook1')}"}
    two = {"Authorization": f"Bearer {await seed.token('hook2')}"}
    receiver = await Receiver().start()
    try:
        async with httpx.AsyncClient(base_url=api, timeout=30) as http:
            first = (await http.get("/v1/notifications?limit=1", headers=two)).json()["data"]["notifications"][0]["id"]
            hook = await http.post(
                "/v1/admin/webhooks",
                json={
                    "url": receiver.url + "/hook",
                    "events": ["notification.read", "notification.unread", "inbox.bulk"],
                },
                headers=owner,
            )
            hook.raise_for_status()
            webhook_id = ids.from_webhook(hook.json()["id"])
            assert webhook_id is not None
            say("the read path with no webhook registered and with one taking every change, in turn")
            with _paused(workers):
                without, withhook = await _read_path(b, http, two, first, lo + 1, webhook_id)
            await _settle(b, receiver)

            # Deliveries per second: a backlog written at once, drained by the workers.
            size = DRAIN["quick" if b.sizes.wrk_seconds < 10 else "full"]
            tenant_id = await seed.tenant()
            receiver.keep = False
            before = receiver.count
            await b.conn.execute(_PENDING, webhook_id, tenant_id, size)
            started = time.perf_counter()
            with contextlib.suppress(TimeoutError):
                await receiver.wait_for(before + size, timeout=120)
            drained = time.perf_counter() - started
            rate = (receiver.count - before) / drained
            say(f"{size:,} pending deliveries drained by {WORKERS} workers in {drained:.1f} s: {rate:,.0f}/s")
            await _settle(b, receiver)

            # A change's webhook leaving, on an idle system: from the request to its arrival.
            receiver.keep = True
            receiver.received.clear()
            items = (await http.get(f"/v1/notifications?limit={CHANGES}", headers=one)).json()["data"]["notifications"]
            took = []
            for item in items:
                count = receiver.count
                started = time.monotonic()  # the receiver's clock
                (await http.patch(f"/v1/notifications/{item['id']}/read", headers=one)).raise_for_status()
                arrived = await receiver.wait_for(count + 1, timeout=10)
                took.append((arrived[-1].at - started) * 1000)
                await asyncio.sleep(0.02)
            p50, p99 = _p(took, 0.5), _p(took, 0.99)
            say(f"{len(took)} changes: their webhook arrived after p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    finally:
        await receiver.stop()
    b.note(
        f"webhooks: {size:,} pending deliveries written at once and drained by {WORKERS} workers to a receiver on "
        f"this machine (answering 204); {len(took)} mark-read requests one after another, each timed from the "
        "request to its webhook's arrival; the read path timed over HTTP, one request at a time, with no webhook "
        "and with one taking every change in turn (the workers paused, so that the outbox's cost is what differs): "
        "median of "
        f"{READ_PATH_RUNS} mark read/unread and {READ_PATH_RUNS // 10} read-all of {READ_ALL_ROWS:,} rows each"
    )
    mark_ratio, all_ratio = withhook[0] / without[0], withhook[1] / without[1]
    return [
        Row(
            figure=f"webhooks: deliveries/s ({WORKERS} workers)",
            herald=rate,
            limit=None,
            ratio=None,
            target="≥ 1,000",
            passed=rate >= 1000,
        ),
        Row(
            figure="webhooks: change → sent, idle, p99 (ms)",
            herald=p99,
            limit=None,
            ratio=None,
            target="< 1,000 ms",
            passed=p99 < 1000,
        ),
        Row(
            figure="webhooks: mark read with a webhook (ms, p50)",
            herald=withhook[0],
            limit=without[0],
            ratio=mark_ratio,
            target="≤ 1.10× without",
            passed=mark_ratio <= 1.10,
        ),
        Row(
            figure=f"webhooks: read-all of {k(READ_ALL_ROWS)} with a webhook (ms)",
            herald=withhook[1],
            limit=without[1],
            ratio=all_ratio,
            target="≤ 1.10× without",
            passed=all_ratio <= 1.10,
        ),
    ]


async def _settle(b: Bench, receiver: Receiver, quiet: float = 0.5) -> None:
    """Until nothing is pending and the receiver has been quiet for `quiet` seconds."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        count = receiver.count
        await asyncio.sleep(quiet)
        pending = await b.conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
        if not pending and receiver.count == count:
            return
