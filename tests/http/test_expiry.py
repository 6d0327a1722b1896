"""Expiry: an event's `expires_at` takes its rows out of every list and count when it passes, with the
counts exact, whatever state each row was in."""

import asyncio
from datetime import UTC, datetime, timedelta

import httpx

from service import ids
from service.process import Backends
from tests.support.factories import Deliver, JobRecorder, MakeUser, at, make_event
from tests.support.invariants import counts_agree
from tests.support.profiles import everything, snooze_path
from workers import sweep
from workers.delivery import Delivery

BADGE = "/v1/unread-count"


async def until_passed(moment: str) -> None:
    await asyncio.sleep(max(0.0, (datetime.fromisoformat(moment) - datetime.now(UTC)).total_seconds()) + 0.05)


async def test_expired_rows_leave_every_list_and_count_and_counts_stay_exact(
    client: httpx.AsyncClient, backends: Backends, make_user: MakeUser, deliver: Deliver
) -> None:
    alice, bob = await make_user(user="alice"), await make_user(user="bob")
    lasting = (await deliver(users=["alice", "bob"])).deliveries
    expires = at(1.5)
    doomed = {d.user_id: d.inbox_id for d in (await deliver(users=["alice", "bob"], expires_at=expires)).deliveries}
    also = (await deliver(users=["alice"], expires_at=expires)).deliveries[0].inbox_id
    # Alice's rows of the expiring events are in every state: one read, one snoozed; bob's is seen.
    await client.patch(f"/v1/notifications/{ids.to_scalebox(doomed[alice.user_id])}/read", headers=alice.headers)
    await client.patch(snooze_path(also), json={"until": at(600)}, headers=alice.headers)
    await client.post("/v1/seen", headers=bob.headers)
    assert (await everything(client, alice))["counts"] == (1, 1, 1, 2, 1, 2)
    assert (await everything(client, bob))["counts"] == (2, 0, 2, 2, 2, 2)

    assert await sweep.sweep(backends) == (0, 0), "nothing expires before its time"
    await until_passed(expires)
    assert await sweep.sweep(backends) == (0, 3)

    kept = {d.user_id: d.inbox_id for d in lasting}
    for who, unread_unseen in ((alice, (1, 1)), (bob, (1, 0))):
        seen = await everything(client, who)
        row = kept[who.user_id]
        assert seen["scalebox"] == seen["aptly"] == seen["qualytics"] == seen["listing"] == [row]
        one, new = unread_unseen
        assert seen["counts"] == (one, new, one, 1, one, 1)
        gone = ids.to_scalebox(doomed[who.user_id])
        assert (await client.get(f"/v1/notifications/{gone}", headers=who.headers)).status_code == 404
    await counts_agree(backends)
    # Not even its snooze brings an expired row back.
    assert (await client.patch(snooze_path(also), json={"until": at(-1)}, headers=alice.headers)).status_code == 404


async def test_an_event_that_has_expired_reaches_nobody(
    client: httpx.AsyncClient, backends: Backends, make_user: MakeUser, deliver: Deliver
) -> None:
    alice = await make_user(user="alice")
    late = make_event(users=["alice"], expires_at=at(-1))
    assert (await deliver(late)).deliveries == []
    assert (await deliver(audience={"all": True}, expires_at=at(-1))).deliveries == []
    # Published again, it is still the same event: recorded once, delivered to nobody.
    assert (await deliver(late)).deliveries == []
    assert (await client.get(BADGE, headers=alice.headers)).json() == {"unread_count": 0, "unseen_count": 0}
    async with backends.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events") == 2
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 0


async def test_a_split_fan_out_that_expires_halfway_leaves_nothing_behind(
    backends: Backends, fan: Delivery, jobs: JobRecorder, make_user: MakeUser
) -> None:
    """Chunks written before the expiry are removed by the sweep; chunks run after it write nothing."""
    users = [f"u{n}" for n in range(2500)]
    expires = at(1.0)
    outcome = await fan.ingest(make_event(users=users, expires_at=expires))
    assert outcome.queued and len(jobs.jobs) == 3  # chunks of 1,000
    first, *rest = jobs.jobs
    assert await fan.run_chunk(*first[1]) == 1000
    await until_passed(expires)
    for _, args, _ in rest:
        assert await fan.run_chunk(*args) == 0
    assert await sweep.sweep(backends) == (0, 1000)
    async with backends.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 0
        assert await conn.fetchval("SELECT sum(unread) + sum(total) + sum(unseen) FROM inbox_counts") == 0
    await counts_agree(backends)


async def test_expiry_is_kept_beside_the_event_in_its_stored_form(backends: Backends, deliver: Deliver) -> None:
    when = datetime.now(UTC) + timedelta(days=1)
    outcome = await deliver(users=["alice"], expires_at=when.isoformat())
    async with backends.pool.acquire() as conn:
        stored = await conn.fetchval("SELECT expires_at FROM inbox WHERE id = $1", outcome.deliveries[0].inbox_id)
    assert stored == when
