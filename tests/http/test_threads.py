"""Threads: every event of a tenant's `group` shares one notification per recipient, updated by each
later event of the group, and counted, listed and pushed as one notification everywhere."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from service import ids
from service.process import Backends
from service.settings import Settings
from service.store import fanout
from tests.support.factories import Deliver, JobRecorder, MakeUser, User, make_event
from tests.support.http import listening
from tests.support.invariants import counts_agree
from tests.support.profiles import BADGE, everything, ok, snooze_path
from tests.support.queries import rows, subscribe
from tests.support.sse import open_stream
from workers import sweep
from workers.delivery import Delivery


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


@pytest.fixture
async def bob(make_user: MakeUser) -> User:
    return await make_user(user="bob")


async def item(client: httpx.AsyncClient, who: User, row: int) -> Any:
    return ok(await client.get(f"/v1/notifications/{ids.to_scalebox(row)}", headers=who.headers))


async def listed(client: httpx.AsyncClient, who: User, **params: str) -> list[Any]:
    data = ok(await client.get("/v1/notifications", params=params, headers=who.headers))
    return list(data["notifications"])


async def badge(client: httpx.AsyncClient, who: User) -> tuple[int, int]:
    body = (await client.get(BADGE, headers=who.headers)).json()
    return body["unread_count"], body["unseen_count"]


def at(minute: int) -> str:
    return f"2026-05-13T12:{minute:02d}:00Z"


async def test_later_events_of_a_group_update_one_notification(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    first = await deliver(users=["alice"], group="pr:1", actor="bob", title="Bob commented", occurred_at=at(0))
    row = first.deliveries[0].inbox_id
    one = await item(client, alice, row)
    assert (one["group"], one["activity_count"], one["actors"], one["actor_count"]) == ("pr:1", 1, ["bob"], 1)

    second = await deliver(
        users=["alice"], group="pr:1", actor="carol", title="Carol approved", type="pr.approved", occurred_at=at(5)
    )
    assert second.deliveries[0].inbox_id == row, "the same notification, not another"
    two = await item(client, alice, row)
    assert two["title"] == "Carol approved" and two["type"] == "pr.approved"
    assert two["created_at"] == at(5)
    assert (two["activity_count"], two["actors"], two["actor_count"]) == (2, ["carol", "bob"], 2)
    shown = await everything(client, alice)
    assert shown["scalebox"] == shown["aptly"] == shown["qualytics"] == shown["listing"] == [row]
    assert shown["counts"] == (1, 1, 1, 1, 1, 1), "one notification in every count and total"
    await counts_agree(backends)


async def test_a_read_or_archived_thread_comes_back_unread_an_unread_one_adds_nothing(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    row = (await deliver(users=["alice"], group="g", occurred_at=at(0))).deliveries[0].inbox_id
    await deliver(users=["alice"], message="other")
    h = alice.headers
    assert await badge(client, alice) == (2, 2)
    await deliver(users=["alice"], group="g", occurred_at=at(1))
    assert await badge(client, alice) == (2, 2), "an unread thread adds nothing"

    await client.post("/v1/seen", headers=h)
    assert await badge(client, alice) == (2, 0)
    await deliver(users=["alice"], group="g", occurred_at=at(2))
    assert await badge(client, alice) == (2, 1), "unseen again"

    await client.patch(f"/v1/notifications/{ids.to_scalebox(row)}/read", headers=h)
    assert await badge(client, alice) == (1, 0)
    await deliver(users=["alice"], group="g", occurred_at=at(3))
    assert await badge(client, alice) == (2, 1), "unread and unseen again"
    assert (await item(client, alice, row))["is_read"] is False

    ok(await client.patch(f"/v1/notifications/{ids.to_scalebox(row)}/archive", headers=h))
    assert await badge(client, alice) == (1, 0)
    await deliver(users=["alice"], group="g", occurred_at=at(4))
    back = await item(client, alice, row)
    assert back["archived_at"] is None and back["is_read"] is False and back["activity_count"] == 5
    assert await badge(client, alice) == (2, 1)
    assert len(await listed(client, alice)) == 2
    await counts_agree(backends)


async def test_republishing_an_event_changes_nothing(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    first = await deliver(users=["alice"], id="e-1", group="g", actor="bob")
    row = first.deliveries[0].inbox_id
    await deliver(users=["alice"], id="e-2", group="g", actor="carol")
    before = await item(client, alice, row)
    for again in ("e-1", "e-2"):
        outcome = await deliver(users=["alice"], id=again, group="g", actor="dave")
        assert outcome.deliveries == []
    after = await item(client, alice, row)
    assert after == before and after["activity_count"] == 2 and after["actors"] == ["carol", "bob"]
    await counts_agree(backends)


async def test_an_older_event_adds_to_the_thread_but_not_its_fields_or_time(
    client: httpx.AsyncClient, alice: User, deliver: Deliver
) -> None:
    row = (await deliver(users=["alice"], group="g", actor="bob", title="new", occurred_at=at(10))).deliveries[0]
    await client.patch(f"/v1/notifications/{ids.to_scalebox(row.inbox_id)}/read", headers=alice.headers)
    await deliver(users=["alice"], group="g", actor="carol", title="old", occurred_at=at(1))
    got = await item(client, alice, row.inbox_id)
    assert (got["title"], got["created_at"], got["is_read"]) == ("new", at(10), False)
    # Carol's latest event is older than Bob's: Bob stays first.
    assert (got["activity_count"], got["actors"], got["actor_count"]) == (2, ["bob", "carol"], 2)


async def test_actors_are_distinct_newest_first_and_counted_in_all(
    client: httpx.AsyncClient, alice: User, deliver: Deliver
) -> None:
    row = 0
    for n in range(12):
        row = (await deliver(users=["alice"], group="g", actor=f"a{n:02d}", occurred_at=at(n))).deliveries[0].inbox_id
    got = await item(client, alice, row)
    assert got["actors"] == [f"a{n:02d}" for n in range(11, 1, -1)], "the newest ten"
    assert (got["actor_count"], got["activity_count"]) == (12, 12)
    # An actor already counted moves to the front and is not counted twice; no actor changes no list.
    await deliver(users=["alice"], group="g", actor="a00", occurred_at=at(30))
    await deliver(users=["alice"], group="g", occurred_at=at(31))
    got = await item(client, alice, row)
    assert got["actors"][:2] == ["a00", "a11"]
    assert (got["actor_count"], got["activity_count"]) == (12, 14)


async def test_read_unread_delete_and_snooze_act_on_the_thread(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    h = alice.headers
    row = (await deliver(users=["alice"], group="g", actor="bob")).deliveries[0].inbox_id
    await deliver(users=["alice"], group="g", actor="carol")
    sid = ids.to_scalebox(row)
    await client.patch(f"/v1/notifications/{sid}/read", headers=h)
    assert await badge(client, alice) == (0, 0)
    await client.patch(f"/v1/notifications/{sid}/unread", headers=h)
    assert await badge(client, alice) == (1, 1)

    # Snoozed: a new event of the group keeps it hidden until its time, then it is back, unread.
    ok(await client.patch(snooze_path(row), json={"until": "2999-01-01T00:00:00Z"}, headers=h))
    await deliver(users=["alice"], group="g", actor="dave")
    assert await badge(client, alice) == (0, 0) and await listed(client, alice) == []
    ok(await client.patch(snooze_path(row), json={"until": "2000-01-01T00:00:00Z"}, headers=h))
    back = await item(client, alice, row)
    assert (back["activity_count"], back["actors"]) == (3, ["dave", "carol", "bob"])
    assert await badge(client, alice) == (1, 1)
    assert await sweep.sweep(backends) == (0, 0)

    # Deleted: the next event of the group starts a new thread.
    assert (await client.delete(f"/v1/notifications/{sid}", headers=h)).status_code == 200
    fresh = (await deliver(users=["alice"], group="g", actor="erin")).deliveries[0].inbox_id
    assert fresh != row
    got = await item(client, alice, fresh)
    assert (got["activity_count"], got["actors"], got["actor_count"]) == (1, ["erin"], 1)
    await counts_agree(backends)


async def test_threads_of_topics_and_all(
    client: httpx.AsyncClient, backends: Backends, make_user: MakeUser, deliver: Deliver
) -> None:
    users = [await make_user(user=f"u{n}") for n in range(5)]
    await subscribe(backends, "repo:1", [u.user for u in users[:3]])
    # Some recipients hold the thread already, some read it, the others get it new.
    await deliver(users=["u0", "u1"], group="pr:9", actor="bob")
    first_u1 = ids.from_scalebox((await listed(client, users[1]))[0]["id"])
    assert first_u1 is not None
    await client.patch(f"/v1/notifications/{ids.to_scalebox(first_u1)}/read", headers=users[1].headers)
    await deliver(audience={"topics": ["repo:1"]}, group="pr:9", actor="carol")
    await deliver(audience={"all": True}, group="pr:9", actor="dave")
    for n, who in enumerate(users):
        items = await listed(client, who)
        assert len(items) == 1, who.user
        expected = {0: 3, 1: 3, 2: 2, 3: 1, 4: 1}[n]
        assert items[0]["activity_count"] == expected, who.user
        assert items[0]["is_read"] is False
    assert ids.from_scalebox((await listed(client, users[1]))[0]["id"]) == first_u1
    await counts_agree(backends)


@pytest.mark.parametrize("audience", [{"all": True}, {"topics": ["releases"]}, {"topics": ["releases", "other"]}])
async def test_a_split_fan_out_updates_threads_in_every_chunk(
    backends: Backends, deliver: Deliver, audience: dict[str, Any]
) -> None:
    """More recipients than one chunk holds (the suite's chunk is 1000): each chunk job updates its
    own recipients' threads, once, and retried jobs change nothing; for each kind of audience a
    chunk is planned by (everyone, one topic, any other)."""
    async with backends.pool.acquire() as conn:
        await conn.execute(
            """WITH t AS (INSERT INTO tenants (name) VALUES ('big') RETURNING id),
               u AS (INSERT INTO users (tenant_id, external_id) SELECT t.id, 'm' || g FROM t, generate_series(1, 2500) g
                     RETURNING id, tenant_id),
               s AS (INSERT INTO subscriptions (tenant_id, topic, user_id) SELECT tenant_id, 'releases', id FROM u)
               INSERT INTO inbox_counts (user_id) SELECT id FROM u"""
        )
    for n in range(2):
        outcome = await deliver(tenant="big", audience=audience, group="release", actor=f"r{n}")
        assert len(outcome.queued) >= 3
    found = await rows(
        backends,
        """SELECT count(*), min(i.activity), max(i.activity), min(c.unread), max(c.unread), min(c.total), max(c.total)
           FROM inbox i JOIN users u ON u.id = i.user_id JOIN inbox_counts c ON c.user_id = u.id
           JOIN tenants t ON t.id = u.tenant_id WHERE t.name = 'big'""",
    )
    assert tuple(found[0]) == (2500, 2, 2, 1, 1, 1, 1)
    await counts_agree(backends)


async def test_groups_are_per_tenant_and_per_user(
    client: httpx.AsyncClient, make_user: MakeUser, alice: User, bob: User, deliver: Deliver
) -> None:
    other = await make_user(tenant="globex", user="alice")
    await deliver(users=["alice"], group="g", actor="x")
    await deliver(tenant="globex", users=["alice"], group="g", actor="y")
    await deliver(users=["bob"], group="g", actor="z")
    mine = await listed(client, alice)
    theirs = await listed(client, other)
    bobs = await listed(client, bob)
    assert [i["actors"] for i in mine] == [["x"]]
    assert [i["actors"] for i in theirs] == [["y"]]
    assert [i["actors"] for i in bobs] == [["z"]]
    # Another user's thread is not found by its id.
    reply = await client.get(f"/v1/notifications/{bobs[0]['id']}", headers=alice.headers)
    assert reply.status_code == 404


@pytest.fixture
async def base(settings: Settings, clean: None) -> AsyncIterator[str]:
    async with listening(msgspec.structs.replace(settings, stream_heartbeat=0.3)) as url:
        yield url


async def test_a_thread_update_is_pushed_as_the_updated_item_then_the_count(
    base: str, alice: User, deliver: Deliver
) -> None:
    row = (await deliver(users=["alice"], group="g", actor="bob")).deliveries[0].inbox_id
    async with open_stream(base, alice.headers) as stream:
        hello = await stream.next_event()
        assert hello.json()["unread_count"] == 1
        await deliver(users=["alice"], group="g", actor="carol", title="Carol replied")
        note = await stream.next_event()
        assert note.event == "notification"
        pushed = note.json()
        assert pushed["id"] == ids.to_scalebox(row)
        assert (pushed["title"], pushed["activity_count"], pushed["actors"]) == ("Carol replied", 2, ["carol", "bob"])
        count = await stream.next_event()
        assert (count.event, count.json()["unread_count"]) == ("unread", 1)
        # A new thread arrives as any notification does, with its group and actor.
        await deliver(users=["alice"], group="h", actor="dave")
        new = (await stream.next_event()).json()
        assert (new["group"], new["activity_count"], new["actors"], new["actor_count"]) == ("h", 1, ["dave"], 1)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"group": ""}, "group"),
        ({"group": "g" * 201}, "group"),
        ({"group": 7}, "group"),
        ({"actor": ""}, "actor"),
        ({"actor": ["a"]}, "actor"),
        ({"actor": "a\x00b"}, "actor"),
    ],
)
async def test_a_bad_group_or_actor_is_refused_naming_it(
    client: httpx.AsyncClient, make_user: MakeUser, fields: dict[str, Any], field: str
) -> None:
    producer = await make_user(user="svc", kind="producer")
    event = {"id": "e", "type": "t", "tenant": "acme", "audience": {"users": ["a"]}, "message": "m", **fields}
    reply = await client.post("/v1/events", json=event, headers=producer.headers)
    assert reply.status_code == 422, reply.text
    assert reply.json()["field"] == field


async def test_events_of_one_group_take_turns_and_their_chunks_run_side_by_side(
    backends: Backends, fan: Delivery, jobs: JobRecorder
) -> None:
    """Three events of one group reach 2,500 users who have no thread yet, and every chunk of all
    three is started at once, again and again until done, as arq runs jobs: a chunk of a later event
    waits (GroupBusy, written nothing) while an earlier event of its group is being fanned out, so
    each user ends with one thread holding all three activities and actors."""
    users = [f"s{i:04d}" for i in range(2500)]
    for rounds in range(2):
        for n in range(3):
            await fan.ingest(make_event(users=users, group=f"race{rounds}", actor=f"a{n}"))
        pending = [args for _, args, _ in jobs.jobs]
        jobs.jobs.clear()
        assert len(pending) >= 9
        written, waited = 0, 0
        while pending:
            results = await asyncio.gather(*(fan.run_chunk(*args) for args in pending), return_exceptions=True)
            busy = [args for args, r in zip(pending, results, strict=True) if isinstance(r, fanout.GroupBusy)]
            assert all(isinstance(r, (int, fanout.GroupBusy)) for r in results), results
            written += sum(r for r in results if isinstance(r, int))
            waited += len(busy)
            pending = busy
        assert written == 3 * len(users)
        assert waited >= 6  # the later events' chunks, at least once each
    found = await rows(
        backends,
        """SELECT count(*), count(DISTINCT (i.user_id, i.thread)), min(i.activity), max(i.activity),
                  min(cardinality(a.actors)), max(cardinality(a.actors))
           FROM inbox i LEFT JOIN thread_actors a ON a.id = i.actors_id WHERE i.thread LIKE 'race%'""",
    )
    assert tuple(found[0]) == (5000, 5000, 3, 3, 3, 3)
    await counts_agree(backends)


async def test_the_chunks_of_one_grouped_event_do_not_wait_for_each_other(
    backends: Backends, fan: Delivery, jobs: JobRecorder
) -> None:
    """Every chunk of a grouped event needs the same actor node. Made inside each chunk's transaction
    (as it was), it made the event's other chunks wait for that transaction's end, so they ran one
    after another: here the first chunk is written and its transaction held open while the second
    runs, which must finish meanwhile; then the rest, and every thread holds the actor."""
    users = [f"w{i:04d}" for i in range(2500)]
    await fan.ingest(make_event(users=users, group="side", actor="a0"))
    pending = [args for _, args, _ in jobs.jobs]
    jobs.jobs.clear()
    assert len(pending) >= 3
    event_id, lo, hi = pending[0]
    written = 0
    async with backends.pool.acquire() as held:
        kind = await fanout.make_nodes(held, event_id, lo, hi)
        async with held.transaction():
            written += (await fanout.run_chunk(held, event_id, lo, hi, kind=kind)).rows
            written += await asyncio.wait_for(fan.run_chunk(*pending[1]), 10)
    for args in pending[2:]:
        written += await fan.run_chunk(*args)
    assert written == len(users)
    found = await rows(
        backends,
        """SELECT count(*), min(a.actors), max(a.actors), count(DISTINCT i.actors_id)
           FROM inbox i JOIN thread_actors a ON a.id = i.actors_id WHERE i.thread = 'side'""",
    )
    assert tuple(found[0]) == (2500, ["a0"], ["a0"], 1)
    await counts_agree(backends)


async def test_events_of_one_group_that_meet_anyway_leave_every_actor(
    backends: Backends, fan: Delivery, jobs: JobRecorder
) -> None:
    """Chunks that stop waiting for their turn (an earlier event stalled, or waited on too long) run
    beside the earlier event's: the threads they meet are read as the other left them, and an actor
    list not visible yet makes the statement run again, so no actor is lost."""
    users = [f"m{i:04d}" for i in range(2500)]
    for n in range(3):
        await fan.ingest(make_event(users=users, group="meet", actor=f"a{n}"))
    pending = [args for _, args, _ in jobs.jobs]
    jobs.jobs.clear()
    written = 0
    while pending:  # as arq would: a chunk that failed (the race ran out of quick retries) runs again
        results = await asyncio.gather(
            *(fan.run_chunk(*args, wait_turn=False) for args in pending), return_exceptions=True
        )
        again = [a for a, r in zip(pending, results, strict=True) if isinstance(r, asyncpg.PostgresError)]
        assert all(isinstance(r, (int, asyncpg.PostgresError)) for r in results), results
        written += sum(r for r in results if isinstance(r, int))
        pending = again
    assert written == 3 * len(users)
    found = await rows(
        backends,
        """SELECT count(*), min(i.activity), max(i.activity), min(cardinality(a.actors)), max(cardinality(a.actors))
           FROM inbox i LEFT JOIN thread_actors a ON a.id = i.actors_id WHERE i.thread = 'meet'""",
    )
    assert tuple(found[0]) == (2500, 3, 3, 3, 3)
    await counts_agree(backends)


async def test_a_small_event_of_a_group_waits_for_its_turn_in_the_queue(
    backends: Backends, fan: Delivery, jobs: JobRecorder
) -> None:
    """An event small enough to be written with its record (one chunk, inline) is queued instead
    while an earlier event of its group is being fanned out, and written when its turn comes."""
    users = [f"q{i:04d}" for i in range(2500)]
    await fan.ingest(make_event(users=users, group="turn", actor="big"))
    big = [args for _, args, _ in jobs.jobs]
    jobs.jobs.clear()
    small = await fan.ingest(make_event(users=users[:2], group="turn", actor="small"))
    assert small.deliveries == [] and len(small.queued) == 1  # queued, not written
    (queued,) = [args for _, args, _ in jobs.jobs]
    with pytest.raises(fanout.GroupBusy):
        await fan.run_chunk(*queued)
    for args in big:
        await fan.run_chunk(*args)
    assert await fan.run_chunk(*queued) == 2
    found = await rows(
        backends,
        """SELECT u.external_id, i.activity, a.actors FROM inbox i JOIN users u ON u.id = i.user_id
           LEFT JOIN thread_actors a ON a.id = i.actors_id WHERE i.thread = 'turn' AND i.activity = 2
           ORDER BY 1""",
    )
    assert [tuple(r) for r in found] == [("q0000", 2, ["small", "big"]), ("q0001", 2, ["small", "big"])]
    await counts_agree(backends)
