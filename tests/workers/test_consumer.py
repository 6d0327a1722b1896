"""The worker side, through a real Redis stream and a real arq queue."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import pytest
from arq.connections import ArqRedis

from service.keys import ATTEMPTS, DEAD, GROUP, QUEUE, STREAM
from service.model import decode_event
from service.process import Backends
from service.settings import Settings
from tests.support.factories import event
from tests.support.queries import inbox_size
from tests.support.waits import eventually
from workers.consumer import Consumer
from workers.delivery import Delivery
from workers.main import build_worker

Running = Callable[..., Awaitable[Consumer]]


@pytest.fixture
async def running(backends: Backends, arq_pool: ArqRedis) -> AsyncIterator[Running]:
    tasks: list[tuple[Consumer, asyncio.Task[None]]] = []

    async def start(**options: Any) -> Consumer:
        consumer = Consumer(Delivery(backends, arq_pool), block=0.05, **options)
        tasks.append((consumer, asyncio.create_task(consumer.run())))
        return consumer

    yield start
    for consumer, task in tasks:
        consumer.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)


async def pending(b: Backends) -> int:
    info = await b.redis.xpending(STREAM, GROUP)
    return int(info["pending"])


async def test_an_xadded_event_becomes_rows_and_is_acknowledged(backends: Backends, running: Running) -> None:
    await running()
    await backends.redis.xadd(STREAM, {"event": event(audience={"users": ["alice", "bob"]})})
    await eventually(lambda: _equals(inbox_size(backends), 2))
    await eventually(lambda: _equals(pending(backends), 0))


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_bad_entries_are_dead_lettered_and_the_consumer_carries_on(backends: Backends, running: Running) -> None:
    consumer = await running()
    bad = [b"{not json", event(message=""), event(audience={"users": ["x\u0000"]}), event(payload=[1])]
    for raw in bad:
        await backends.redis.xadd(STREAM, {"event": raw})
    await backends.redis.xadd(STREAM, {"something": "else"})
    await backends.redis.xadd(STREAM, {"event": event(id="good")})
    await eventually(lambda: _equals(inbox_size(backends), 1))
    await eventually(lambda: _equals(backends.redis.xlen(DEAD), 5))
    # Entries of successive reads are handled concurrently: their letters may come in any order.
    letters = {fields[b"event"]: fields[b"reason"].decode() for _, fields in await backends.redis.xrange(DEAD)}
    assert sorted(letters) == sorted([*bad, b""])
    reasons = [letters[raw] for raw in bad]
    assert "message" in reasons[1] and "audience.users" in reasons[2] and "payload" in reasons[3]
    assert all(reason.startswith("invalid event") for reason in letters.values())
    await eventually(lambda: _equals(pending(backends), 0))
    assert consumer.dead == 5


async def test_entries_left_by_a_dead_consumer_are_claimed(backends: Backends, running: Running) -> None:
    await backends.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    await backends.redis.xadd(STREAM, {"event": event(id="orphan")})
    # A consumer reads the entry and dies before acknowledging it.
    taken = await backends.redis.xreadgroup(GROUP, "dead-worker", {STREAM: ">"}, count=10)
    assert len(taken[0][1]) == 1
    await running(claim_idle=0.3, claim_every=0.1)
    await eventually(lambda: _equals(inbox_size(backends), 1))
    await eventually(lambda: _equals(pending(backends), 0))


async def test_an_event_that_keeps_killing_workers_is_dead_lettered(backends: Backends, running: Running) -> None:
    await backends.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    entry = await backends.redis.xadd(STREAM, {"event": event(id="killer")})
    await backends.redis.xreadgroup(GROUP, "dead-worker", {STREAM: ">"}, count=10)
    await backends.redis.hset(ATTEMPTS, entry, 4)  # four workers already died on it
    await running(claim_idle=0.2, claim_every=0.1)
    await eventually(lambda: _equals(backends.redis.xlen(DEAD), 1))
    reason = (await backends.redis.xrange(DEAD))[0][1][b"reason"].decode()
    assert "abandoned" in reason
    assert await inbox_size(backends) == 0 and await pending(backends) == 0


async def test_publishing_the_same_event_repeatedly_gives_one_row(backends: Backends, running: Running) -> None:
    await running()
    for _ in range(5):
        await backends.redis.xadd(STREAM, {"event": event(id="same", audience={"users": ["alice", "bob"]})})
    await eventually(lambda: _equals(pending(backends), 0))
    assert await inbox_size(backends) == 2


async def test_a_split_fan_out_runs_as_arq_jobs(settings: Settings, backends: Backends, arq_pool: ArqRedis) -> None:
    users = [f"u{i}" for i in range(2500)]  # 3 chunks of at most 1000
    fan = Delivery(backends, arq_pool)
    outcome = await fan.ingest(decode_event(event(audience={"users": users})))
    assert len(outcome.queued) == 3
    assert await arq_pool.zcard(QUEUE) == 3
    worker = build_worker(settings, burst=True)
    try:
        await worker.async_run()
    finally:
        await worker.close()
    assert await inbox_size(backends) == 2500
    # At least: a burst worker running across second 30 also runs the periodic jobs (workers/main.py).
    assert worker.jobs_complete >= 3 and worker.jobs_failed == 0
    assert await arq_pool.zcard(QUEUE) == 0


async def test_a_database_without_the_schema_is_waited_for_not_blamed_on_the_event(
    servers: Any, settings: Settings, backends: Backends, running: Running
) -> None:
    import asyncpg

    from service.errors import Unavailable

    server = servers.database_url.rsplit("/", 1)[0]
    conn = await asyncpg.connect(server + "/postgres")
    await conn.execute("DROP DATABASE IF EXISTS herald_unmigrated")
    await conn.execute("CREATE DATABASE herald_unmigrated")
    await conn.close()
    bare = msgspec.structs.replace(settings, database_url=server + "/herald_unmigrated")
    early = await Backends.open(bare, "herald-test-early")
    try:
        with pytest.raises(Unavailable):
            await Delivery(early, None).ingest(decode_event(event()))  # type: ignore[arg-type]
    finally:
        await early.close()
