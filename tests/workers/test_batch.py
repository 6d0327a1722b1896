"""Many small events in one statement: a stream read's small new events are recorded and delivered
together, and still exactly once, with exact counts, a bad event dead-lettered alone, republished
events and a dead worker's entries handled as on the one-event path."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from arq.connections import ArqRedis

from service import intake
from service.counts import decode_change, decode_counts
from service.keys import ATTEMPTS, DEAD, GROUP, STREAM, Channels, count_key
from service.model import decode_event
from service.process import Backends
from service.store import events
from tests.support import poison
from tests.support.factories import MakeUser, event
from tests.support.invariants import counts_agree
from tests.support.queries import inbox_of, rows
from tests.support.waits import eventually
from workers.consumer import MAX_ATTEMPTS, Consumer
from workers.delivery import Delivery

Start = Callable[..., Awaitable[Consumer]]

# The events of one statement share its transaction's time; events written one by one do not.
_BATCHES = "SELECT count(DISTINCT created_at) FROM events WHERE external_id = ANY ($1::text[])"
_COUNTS = "SELECT unread, total, unseen, version FROM inbox_counts WHERE user_id = $1"


@pytest.fixture
async def start(backends: Backends, arq_pool: ArqRedis) -> AsyncIterator[Start]:
    """Start a consumer (after the test has queued its entries, so that one read takes them all)."""
    tasks: list[tuple[Consumer, asyncio.Task[None]]] = []

    async def run(**options: Any) -> Consumer:
        consumer = Consumer(Delivery(backends, arq_pool), block=0.05, **options)
        tasks.append((consumer, asyncio.create_task(consumer.run())))
        return consumer

    yield run
    for consumer, task in tasks:
        consumer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


async def queue(b: Backends, *raws: bytes) -> list[str]:
    """XADD the entries in one MULTI (a consumer's next read sees all of them); their entry ids."""
    async with b.redis.pipeline(transaction=True) as pipe:
        for raw in raws:
            pipe.xadd(STREAM, {"event": raw})
        return [entry_id.decode() for entry_id in await pipe.execute()]


async def drained(b: Backends) -> bool:
    groups = await b.redis.xinfo_groups(STREAM)
    return bool(groups) and groups[0]["pending"] == 0 and groups[0]["lag"] == 0


async def test_a_read_of_small_events_is_one_statement_and_the_rest_go_alone(
    backends: Backends, start: Start, make_user: MakeUser
) -> None:
    for name in ("alice", "bob", "carol"):
        await make_user(user=name)
    async with backends.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO subscriptions (tenant_id, topic, user_id) SELECT tenant_id, 'ops', id FROM users"
            " WHERE external_id = 'carol'"
        )
    small = [
        event(id="s1", audience={"users": ["alice", "bob"]}),
        event(id="s2", audience={"users": ["bob", "dave"]}),  # dave is new: created first
        event(id="s3", audience={"users": ["carol"]}, actions=[{"id": "ok", "label": "OK"}], payload={"n": 1}),
    ]
    others = [
        event(id="g1", audience={"users": ["alice"]}, group="pr:1", actor="erin"),  # a thread: alone
        event(id="t1", audience={"topics": ["ops"]}),  # a topic: alone
        b"{not json",  # dead-lettered at once
    ]
    await queue(backends, small[0], others[0], small[1], others[2], others[1], small[2])
    consumer = await start()
    await eventually(lambda: drained(backends))
    assert await inbox_of(backends) == {"alice": 2, "bob": 2, "carol": 2, "dave": 1}
    found = await rows(backends, _BATCHES, ["s1", "s2", "s3"])
    assert found[0][0] == 1, "the small events were not written by one statement"
    assert (await rows(backends, _BATCHES, ["s1", "g1", "t1"]))[0][0] == 3
    assert consumer.handled == 5 and consumer.dead == 1
    assert await backends.redis.xlen(DEAD) == 1
    done = await rows(backends, "SELECT count(*) FROM events WHERE fanout_done_at IS NULL")
    assert done[0][0] == 0
    await counts_agree(backends)


async def test_a_user_named_by_several_events_of_one_batch_gains_one_per_event(
    backends: Backends, arq_pool: ArqRedis, make_user: MakeUser
) -> None:
    alice = await make_user(user="alice")
    await make_user(user="bob")
    async with backends.pool.acquire() as conn:
        before = await conn.fetchrow(_COUNTS, alice.user_id)
    assert before is not None
    pubsub = backends.redis.pubsub()
    await pubsub.subscribe(Channels.of(backends.redis).user(alice.user_id))
    try:
        fan = Delivery(backends, arq_pool)
        given = [
            decode_event(event(id="n1", audience={"users": ["alice", "bob"]})),
            decode_event(event(id="n2", audience={"users": ["alice"]})),
            decode_event(event(id="n3", audience={"users": ["bob", "alice", "alice"]})),
        ]
        outcomes = await fan.ingest_many(given)
        assert all(o is not None for o in outcomes)
        async with backends.pool.acquire() as conn:
            after = await conn.fetchrow(_COUNTS, alice.user_id)
        assert after is not None
        assert tuple(after) == (3, 3, 3, before[3] + 1)  # +3, in one version step
        copy = decode_counts(alice.user_id, await backends.redis.get(count_key(alice.user_id)))
        assert copy is not None and (copy.unread, copy.total, copy.unseen, copy.version) == tuple(after)
        # Each row is announced to the user's streams, all with the counts after the batch.
        changes = []
        deadline = asyncio.get_running_loop().time() + 3
        while len(changes) < 3 and asyncio.get_running_loop().time() < deadline:
            # None also for the subscription's own confirmation, which is skipped.
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                changes.append(decode_change(message["data"]))
        assert {c.unread for c in changes} == {3} and len({c.item for c in changes}) == 3
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
    assert await inbox_of(backends) == {"alice": 3, "bob": 2}
    await counts_agree(backends)


async def test_a_republished_event_in_a_batch_gets_no_second_row(
    backends: Backends, arq_pool: ArqRedis, start: Start, make_user: MakeUser
) -> None:
    for name in ("alice", "bob"):
        await make_user(user=name)
    fan = Delivery(backends, arq_pool)
    first = event(id="r1", audience={"users": ["alice", "bob"]})
    await fan.ingest(decode_event(first))
    # Straight to the batch: the published one is left to the one-event path.
    again = [decode_event(first), decode_event(event(id="r2", audience={"users": ["alice"]}))]
    outcomes = await fan.ingest_many([*again, decode_event(event(id="r3", audience={"users": ["bob"]}))])
    assert outcomes[0] is None and outcomes[1] is not None and outcomes[2] is not None
    # Through the stream: republished before, and twice in the same read.
    await queue(
        backends,
        first,
        event(id="r4", audience={"users": ["alice", "bob"]}),
        event(id="r2", audience={"users": ["alice"]}),
        event(id="r4", audience={"users": ["alice", "bob"]}),
        event(id="r5", audience={"users": ["bob"]}),
    )
    await start()
    await eventually(lambda: drained(backends))
    assert await inbox_of(backends) == {"alice": 3, "bob": 4}
    duplicates = await rows(
        backends, "SELECT count(*) FROM (SELECT 1 FROM inbox GROUP BY user_id, event_id HAVING count(*) > 1) d"
    )
    assert duplicates[0][0] == 0
    assert (await rows(backends, "SELECT count(*) FROM events"))[0][0] == 5
    await counts_agree(backends)


async def test_a_batch_with_one_bad_event_delivers_the_others_and_dead_letters_it(
    backends: Backends, start: Start, make_user: MakeUser
) -> None:
    for name in ("alice", "bob"):
        await make_user(user=name)
    async with poison.poisoned(backends):
        good = [event(id=f"good-{n}", audience={"users": ["alice", "bob"][: 1 + n % 2]}) for n in range(4)]
        bad = event(id="bad", type=poison.POISON_TYPE, audience={"users": ["alice"]})
        await queue(backends, good[0], good[1], bad, good[2], good[3])
        await start(retry_base=0.01)

        async def delivered() -> bool:
            return await inbox_of(backends) == {"alice": 4, "bob": 2}

        await eventually(delivered, timeout=3)  # at once, not after the bad one's retries
        await eventually(lambda: drained(backends), timeout=10)
    [letter] = await intake.dead_letters(backends.redis)
    assert f"fan-out failed {MAX_ATTEMPTS} times" in letter.reason and "poisoned event bad" in letter.reason
    assert letter.event.encode() == bad
    assert await backends.redis.hlen(ATTEMPTS) == 0
    assert (await rows(backends, "SELECT count(*) FROM events WHERE external_id = 'bad'"))[0][0] == 0
    await counts_agree(backends)


async def test_a_batch_committed_by_a_worker_that_died_is_taken_over_exactly_once(
    backends: Backends, arq_pool: ArqRedis, start: Start, make_user: MakeUser
) -> None:
    for name in ("alice", "bob"):
        await make_user(user=name)
    raws = [event(id=f"d{n}", audience={"users": ["alice", "bob"][: 1 + n % 2]}) for n in range(4)]
    await backends.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await queue(backends, *raws)
    # A worker reads them, commits the batch, and dies before its acknowledgement; the copies it sent
    # are lost (Redis answers with older ones, as after a restart from an older snapshot).
    taken = await backends.redis.xreadgroup(GROUP, "dead-worker", {STREAM: ">"}, count=100)
    assert len(taken[0][1]) == 4
    dead = Delivery(backends, arq_pool)
    outcomes = await dead.ingest_many([decode_event(fields[b"event"]) for _, fields in taken[0][1]])
    assert all(o is not None for o in outcomes)
    for user_id in await rows(backends, "SELECT user_id FROM inbox_counts"):
        await backends.redis.set(count_key(user_id[0]), b"0:0:0:0")
    await start(claim_idle=0.2, claim_every=0.1)
    await eventually(lambda: drained(backends), timeout=10)
    assert await inbox_of(backends) == {"alice": 4, "bob": 2}
    assert (await rows(backends, "SELECT count(*) FROM events"))[0][0] == 4
    for user_id in await rows(backends, "SELECT user_id FROM inbox_counts"):
        copy = await backends.redis.get(count_key(user_id[0]))
        assert copy != b"0:0:0:0", "the taken-over entries did not copy the counts again"
    await counts_agree(backends)


async def test_the_batched_events_are_stored_like_the_one_event_path_stores_them(
    backends: Backends, arq_pool: ArqRedis, make_user: MakeUser
) -> None:
    await make_user(user="alice")
    fields: dict[str, Any] = {
        "audience": {"users": ["alice"]},
        "title": "T",
        "category": "C",
        "tags": ["a", "b"],
        "trigger_type": "Manual",
        "entity": {"type": "datastore", "id": "7"},
        "action_url": "/x?y=1",
        "actionable": True,
        "payload": {"deep": {"list": [1, "two", None]}},
        "occurred_at": "2026-05-13T12:00:00.123456+02:00",
        "expires_at": "2099-01-01T00:00:00Z",
        "actor": "erin",
        "actions": [{"id": "approve", "label": "Approve", "url": "/a"}],
    }
    fan = Delivery(backends, arq_pool)
    await fan.ingest(decode_event(event(id="alone", **fields)))
    await fan.ingest_many([decode_event(event(id=f"batch-{n}", **fields)) for n in range(2)])
    async with backends.pool.acquire() as conn:
        ids = {r[0]: r[1] for r in await conn.fetch("SELECT external_id, id FROM events")}
        stored = [await events.stored(conn, ids[name]) for name in ("alone", "batch-0", "batch-1")]
        inbox = await conn.fetch(
            "SELECT e.external_id, i.created_at, i.expires_at, i.type, i.category, i.thread, i.activity"
            " FROM inbox i JOIN events e ON e.id = i.event_id ORDER BY e.external_id"
        )
    assert stored[1] == {**stored[0], "id": "batch-0"} and stored[2] == {**stored[0], "id": "batch-1"}
    assert len(inbox) == 3 and len({tuple(r)[1:] for r in inbox}) == 1


async def test_a_batch_keeps_tenants_apart_and_applies_mutes_deactivation_and_expiry(
    backends: Backends, arq_pool: ArqRedis, make_user: MakeUser
) -> None:
    for tenant in ("acme", "globex"):
        for name in ("alice", "bob", "carol"):
            await make_user(tenant=tenant, user=name)
    async with backends.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO preferences (user_id, muted_types) SELECT u.id, ARRAY['noisy'] FROM users u"
            " JOIN tenants t ON t.id = u.tenant_id WHERE t.name = 'acme' AND u.external_id = 'bob'"
        )
        await conn.execute(
            "UPDATE users SET active = false FROM tenants t"
            " WHERE t.id = users.tenant_id AND t.name = 'globex' AND users.external_id = 'carol'"
        )
    everyone = {"users": ["alice", "bob", "carol"]}
    given = [
        decode_event(event(id="same-id", tenant="acme", audience=everyone)),
        decode_event(event(id="same-id", tenant="globex", audience=everyone)),  # same id, other tenant
        decode_event(event(id="noisy", tenant="acme", type="noisy", audience=everyone)),  # bob muted it
        decode_event(event(id="gone", tenant="acme", audience=everyone, expires_at="2020-01-01T00:00:00Z")),
    ]
    outcomes = await Delivery(backends, arq_pool).ingest_many(given)
    assert all(o is not None for o in outcomes)
    assert [len(o.deliveries) for o in outcomes if o is not None] == [3, 2, 2, 0]
    assert await inbox_of(backends, "acme") == {"alice": 2, "bob": 1, "carol": 2}
    assert await inbox_of(backends, "globex") == {"alice": 1, "bob": 1}
    # Every row belongs to a user of its event's tenant.
    crossed = await rows(
        backends,
        "SELECT count(*) FROM inbox i JOIN events e ON e.id = i.event_id JOIN users u ON u.id = i.user_id"
        " WHERE u.tenant_id <> e.tenant_id",
    )
    assert crossed[0][0] == 0
    done = await rows(backends, "SELECT count(*) FROM events WHERE fanout_done_at IS NOT NULL")
    assert done[0][0] == 4
    await counts_agree(backends)


async def test_an_event_naming_a_user_who_is_gone_is_left_to_the_one_event_path(
    backends: Backends, arq_pool: ArqRedis, make_user: MakeUser
) -> None:
    await make_user(user="alice")
    fan = Delivery(backends, arq_pool)
    await fan.ingest_many([decode_event(event(id=f"k{n}", audience={"users": ["alice", "zed"]})) for n in range(2)])
    # zed is known to this worker now; then the user is removed (as an erasure does) behind its back.
    async with backends.pool.acquire() as conn:
        await conn.execute(
            "WITH z AS (SELECT id FROM users WHERE external_id = 'zed'),"
            " i AS (DELETE FROM inbox WHERE user_id IN (SELECT id FROM z)),"
            " c AS (DELETE FROM inbox_counts WHERE user_id IN (SELECT id FROM z))"
            " DELETE FROM users WHERE id IN (SELECT id FROM z)"
        )
    outcomes = await fan.ingest_many(
        [
            decode_event(event(id="to-zed", audience={"users": ["alice", "zed"]})),
            decode_event(event(id="to-alice", audience={"users": ["alice"]})),
        ]
    )
    assert outcomes[0] is None and outcomes[1] is not None  # not recorded: the one-event path creates zed
    recorded = await rows(backends, "SELECT external_id FROM events ORDER BY external_id")
    assert [r[0] for r in recorded] == ["k0", "k1", "to-alice"]
    await counts_agree(backends)
