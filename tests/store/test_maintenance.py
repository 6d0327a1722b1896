"""Retention and reconciliation: rows leave in small batches with exact counts; drift is found,
repaired and reported."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from service import inbox, keys
from service.keys import GROUP, STREAM, count_key
from service.metrics import COUNT_DRIFT, RETENTION_DELETED
from service.process import Backends
from service.settings import Settings
from tests.support.factories import Deliver, MakeUser
from tests.support.invariants import counts_agree
from tests.support.queries import rows
from workers import housekeeping
from workers.main import build_worker

OLD = (datetime.now(UTC) - timedelta(days=100)).isoformat()
RECENT = (datetime.now(UTC) - timedelta(days=1)).isoformat()


async def test_retention_removes_old_rows_and_events_with_exact_counts(
    backends: Backends, make_user: MakeUser, deliver: Deliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping, "BATCH", 7)  # several batches
    alice = await make_user(user="alice")
    await make_user(user="bob")
    old = [await deliver(users=["alice", "bob"], occurred_at=OLD) for _ in range(10)]
    new = [await deliver(users=["alice", "bob"], occurred_at=RECENT) for _ in range(3)]
    async with backends.pool.acquire() as conn:  # some of alice's old rows are read
        await conn.execute(
            "UPDATE inbox SET read_at = now() WHERE id = ANY ($1::bigint[])",
            [o.deliveries[0].inbox_id for o in old[:4]],
        )
        await conn.execute(
            """UPDATE inbox_counts c SET unread = x.u, unseen = x.s
               FROM (SELECT user_id, count(*) FILTER (WHERE read_at IS NULL) u,
                            count(*) FILTER (WHERE read_at IS NULL AND seen_at IS NULL) s
                     FROM inbox GROUP BY user_id) x WHERE x.user_id = c.user_id"""
        )
    before = RETENTION_DELETED.labels("inbox")._value.get()
    removed = await housekeeping.apply_retention(backends, 30)
    assert removed == (20, 10)
    assert RETENTION_DELETED.labels("inbox")._value.get() - before == 20
    left = await rows(backends, "SELECT event_id FROM inbox")
    assert {r[0] for r in left} == {o.event_id for o in new}
    assert {r[0] for r in await rows(backends, "SELECT id FROM events")} == {o.event_id for o in new}
    await counts_agree(backends)  # PostgreSQL and the Redis copies
    counts = await backends.counts.read(alice.user_id)
    assert (counts.unread, counts.total) == (3, 3)
    assert await housekeeping.apply_retention(backends, 30) == (0, 0)


async def test_retention_beside_live_traffic_keeps_counts_exact(
    backends: Backends, make_user: MakeUser, deliver: Deliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping, "BATCH", 50)
    monkeypatch.setattr(housekeeping, "PAUSE", 0)
    users = [await make_user(user=f"u{n}") for n in range(20)]
    names = [u.user for u in users]
    for _ in range(30):
        await deliver(users=names, occurred_at=OLD)

    async def traffic() -> None:
        for n in range(15):
            await deliver(users=names[n % 5 :], occurred_at=RECENT if n % 2 else OLD)
            who = users[n % len(users)]
            async with backends.pool.acquire() as conn:
                ids = [r[0] for r in await conn.fetch("SELECT id FROM inbox WHERE user_id = $1 LIMIT 5", who.user_id)]
            principal = await backends.auth.principal(who.token)
            await inbox.set_read(backends, principal, ids, read=n % 3 != 0)

    await asyncio.gather(
        traffic(), housekeeping.apply_retention(backends, 30), housekeeping.apply_retention(backends, 30)
    )
    await counts_agree(backends)


async def test_reconciliation_finds_repairs_and_reports_drift(
    backends: Backends, make_user: MakeUser, deliver: Deliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(housekeeping, "RECONCILE_BATCH", 3)
    users = [await make_user(user=f"u{n}") for n in range(8)]
    for _ in range(4):
        await deliver(users=[u.user for u in users])
    assert await housekeeping.reconcile(backends) == [], "nothing to find in honest counts"
    victims = [users[1], users[6]]
    async with backends.pool.acquire() as conn:
        await conn.execute(
            "UPDATE inbox_counts SET unread = 99, total = 1 WHERE user_id = ANY ($1::bigint[])",
            [v.user_id for v in victims],
        )
    await backends.redis.delete(*[count_key(v.user_id) for v in victims])
    before = COUNT_DRIFT._value.get()
    repaired = await housekeeping.reconcile(backends)
    assert sorted(c.user_id for c in repaired) == sorted(v.user_id for v in victims)
    assert all((c.unread, c.total) == (4, 4) for c in repaired)
    assert COUNT_DRIFT._value.get() - before == 2
    await counts_agree(backends)
    # A run covers a slice of the users and the next run goes on from there.
    await housekeeping.reconcile(backends, users=3)
    assert int(await backends.redis.get(keys.RECONCILE_CURSOR) or 0) > 0


async def test_the_stream_is_trimmed_of_what_every_worker_is_done_with(backends: Backends) -> None:
    r = backends.redis
    assert await housekeeping.trim_stream(backends) == 0  # no group yet: nothing is known to be done
    ids = [await r.xadd(STREAM, {"event": b"{}"}) for _ in range(10)]
    await r.xgroup_create(STREAM, GROUP, id="0")
    read = await r.xreadgroup(GROUP, "w1", {STREAM: ">"}, count=6)  # 6 handed out, 4 never read
    handed = [entry_id for entry_id, _ in read[0][1]]
    await r.xack(STREAM, GROUP, *handed[:2], *handed[3:])  # the third is still pending
    assert await housekeeping.trim_stream(backends) == 2
    left = [entry_id for entry_id, _ in await r.xrange(STREAM)]
    assert left == ids[2:]  # from the pending one on, including everything not yet read
    await r.xack(STREAM, GROUP, handed[2])
    assert await housekeeping.trim_stream(backends) == 4
    assert [entry_id for entry_id, _ in await r.xrange(STREAM)] == ids[6:]


async def test_periodic_jobs_do_not_delay_the_takeover_of_a_dead_workers_chunks(settings: Settings) -> None:
    # arq marks every job in progress for the longest timeout of any function plus 10 s; a chunk of
    # a worker that died is run again only when that mark expires, within the promised 60 s.
    worker = build_worker(settings, burst=True)
    assert worker.in_progress_timeout_s <= 50, worker.in_progress_timeout_s
    assert {"herald:retention", "herald:reconcile", "herald:trim"} <= set(worker.functions)


async def test_periodic_jobs_end_early_when_the_worker_stops(
    backends: Backends, make_user: MakeUser, deliver: Deliver
) -> None:
    # arq waits for running jobs on SIGTERM: a maintenance run must not hold the stop up.
    await make_user(user="alice")
    await deliver(users=["alice"], occurred_at=OLD)
    stopping = asyncio.Event()
    stopping.set()
    assert await housekeeping.apply_retention(backends, 30, stopping=stopping) == (0, 0)
    assert await housekeeping.reconcile(backends, stopping=stopping) == []
    assert await backends.redis.get(keys.RECONCILE_CURSOR) in (None, b"0")
    assert await housekeeping.apply_retention(backends, 30) == (1, 1)
