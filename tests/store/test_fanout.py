"""Fan-out: audience resolution, exactly one row per recipient, chunking, and counts."""

import asyncio
import itertools

from service.counts import decode_counts
from service.keys import count_key
from service.process import Backends
from service.store import fanout
from tests.support.factories import Deliver, JobRecorder, MakeUser, make_event
from tests.support.invariants import counts_agree
from tests.support.queries import inbox_of, rows, subscribe
from workers.delivery import Delivery


async def test_named_users_are_created_as_members_and_each_gets_one_row(backends: Backends, deliver: Deliver) -> None:
    await deliver(users=["alice", "bob", "alice"])
    assert await inbox_of(backends) == {"alice": 1, "bob": 1}
    roles = await rows(backends, "SELECT external_id, role, active FROM users ORDER BY 1")
    assert [tuple(r) for r in roles] == [("alice", "member", True), ("bob", "member", True)]
    await counts_agree(backends)


async def test_topics_reach_subscribers_and_all_reaches_every_active_user(
    backends: Backends, deliver: Deliver, make_user: MakeUser
) -> None:
    await subscribe(backends, "datastore:101", ["carol", "dave"])
    await subscribe(backends, "datastore:101", ["erin"], tenant="other")
    await make_user(user="frank")
    await deliver(audience={"topics": ["datastore:101"]})
    assert await inbox_of(backends) == {"carol": 1, "dave": 1}
    assert await inbox_of(backends, "other") == {}
    await deliver(audience={"all": True})
    assert await inbox_of(backends) == {"carol": 2, "dave": 2, "frank": 1}
    await counts_agree(backends)


async def test_a_user_reached_through_several_sources_gets_one_row(backends: Backends, deliver: Deliver) -> None:
    await subscribe(backends, "t1", ["alice", "bob"])
    await subscribe(backends, "t2", ["bob", "carol"])
    await deliver(audience={"users": ["alice", "bob"], "topics": ["t1", "t2"], "all": True})
    assert await inbox_of(backends) == {"alice": 1, "bob": 1, "carol": 1}
    await counts_agree(backends)


async def test_deactivated_users_receive_nothing(backends: Backends, deliver: Deliver, make_user: MakeUser) -> None:
    from service import admin

    await make_user(user="gone")
    async with backends.pool.acquire() as conn:
        await admin.deactivate(conn, None, "acme", "gone")
    await deliver(audience={"users": ["gone", "here"], "all": True})
    assert await inbox_of(backends) == {"here": 1}


async def test_republishing_the_same_tenant_and_id_adds_nothing(backends: Backends, deliver: Deliver) -> None:
    event = make_event(users=["alice", "bob"])
    first = await deliver(event)
    again = await deliver(event)
    assert again.event_id == first.event_id and again.deliveries == []
    assert await inbox_of(backends) == {"alice": 1, "bob": 1}
    assert len(await rows(backends, "SELECT id FROM events")) == 1
    # The same id in another tenant is another event.
    await deliver(make_event(id=event.id, tenant="other", users=["alice"]))
    assert await inbox_of(backends, "other") == {"alice": 1}
    await counts_agree(backends)


async def test_a_large_audience_is_split_into_chunk_jobs(backends: Backends, fan: Delivery, jobs: JobRecorder) -> None:
    users = [f"u{i:05d}" for i in range(3500)]  # settings.fanout_chunk is 1000 in tests
    outcome = await fan.ingest(make_event(users=users[:3500][:10_000]))
    assert outcome.deliveries == []  # nothing written inline
    assert [job[0] for job in jobs.jobs] == ["fanout_chunk"] * 4
    assert len({job[2] for job in jobs.jobs}) == 4  # one job id per chunk: arq dedupes re-enqueues
    # Several workers may share it: run the chunks concurrently.
    written = await asyncio.gather(*(fan.run_chunk(*args) for _, args, _ in jobs.jobs))
    assert sorted(written) == [500, 1000, 1000, 1000]
    assert sum((await inbox_of(backends)).values()) == 3500
    done = await rows(backends, "SELECT fanout_done_at IS NOT NULL FROM events")
    assert done[0][0] is True
    await counts_agree(backends)


async def test_a_retried_or_duplicated_chunk_writes_nothing_twice(
    backends: Backends, fan: Delivery, jobs: JobRecorder
) -> None:
    await fan.ingest(make_event(users=[f"u{i}" for i in range(2500)]))
    first = jobs.jobs[0][1]
    # The same chunk twice at once (two workers racing), then once more later (a retry).
    results = await asyncio.gather(fan.run_chunk(*first), fan.run_chunk(*first))
    assert sorted(results) == [0, 1000]
    assert await fan.run_chunk(*first) == 0
    for _, args, _ in jobs.jobs[1:]:
        await fan.run_chunk(*args)
    assert set((await inbox_of(backends)).values()) == {1}
    assert sum((await inbox_of(backends)).values()) == 2500
    await counts_agree(backends)


async def test_a_redelivered_entry_resumes_an_unfinished_fan_out(
    backends: Backends, fan: Delivery, jobs: JobRecorder
) -> None:
    event = make_event(users=[f"u{i}" for i in range(2500)])
    await fan.ingest(event)
    await fan.run_chunk(*jobs.jobs[0][1])  # one chunk done, then the worker "dies"
    jobs.jobs.clear()
    await fan.ingest(event)  # the stream entry is delivered again
    assert len(jobs.jobs) == 2  # only the chunks still to do are queued again
    for _, args, _ in jobs.jobs:
        await fan.run_chunk(*args)
    assert sum((await inbox_of(backends)).values()) == 2500
    await counts_agree(backends)


async def test_chunks_cover_every_id_so_late_users_are_not_lost(backends: Backends) -> None:
    async with backends.pool.acquire() as conn:
        tenant = await conn.fetchval("INSERT INTO tenants (name) VALUES ('acme') RETURNING id")
        await conn.execute(
            "INSERT INTO users (tenant_id, external_id) SELECT $1, 'u' || g FROM generate_series(1, 250) g", tenant
        )
        event_id = await conn.fetchval(
            """INSERT INTO events (tenant_id, external_id, type, message, audience_all, occurred_at)
               VALUES ($1, 'e', 't', 'm', true, now()) RETURNING id""",
            tenant,
        )
        chunks = await fanout.plan(conn, event_id, 100)
    assert len(chunks) == 3
    assert chunks[0][0] == 1 and chunks[-1][1] == fanout.MAX_USER_ID
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(chunks))


async def test_counts_are_copied_to_redis_with_the_new_rows(backends: Backends, deliver: Deliver) -> None:
    await deliver(users=["alice"])
    await deliver(users=["alice", "bob"])
    alice = (await rows(backends, "SELECT id FROM users WHERE external_id = 'alice'"))[0][0]
    raw = await backends.redis.get(count_key(alice))
    assert raw is not None
    counts = decode_counts(alice, raw)
    assert (counts.unread, counts.total) == (2, 2)
    await counts_agree(backends)


async def test_a_new_user_named_by_two_events_at_once_gets_both(backends: Backends) -> None:
    """Two workers create the same new user at the same moment: each event must still reach them."""
    for round_ in range(20):
        a, b = Delivery(backends, JobRecorder()), Delivery(backends, JobRecorder())  # type: ignore[arg-type]
        name = f"newbie-{round_}"
        await asyncio.gather(a.ingest(make_event(users=[name])), b.ingest(make_event(users=[name, "other"])))
        assert (await inbox_of(backends))[name] == 2
    await counts_agree(backends)
