"""Poison events: valid events whose fan-out fails every time are set aside, and can come back."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from service import intake
from service.keys import ATTEMPTS, DEAD, GROUP, STREAM
from service.model import decode_event
from service.process import Backends
from tests.support import poison
from tests.support.factories import JobRecorder, event
from tests.support.queries import inbox_size
from tests.support.waits import eventually
from workers.consumer import MAX_ATTEMPTS, Consumer
from workers.delivery import CHUNK_ATTEMPTS, Delivery, fanout_chunk


@pytest.fixture
async def poisoned(backends: Backends) -> AsyncIterator[None]:
    async with poison.poisoned(backends):
        yield


async def test_a_poison_event_is_dead_lettered_without_blocking_the_rest(backends: Backends, poisoned: None) -> None:
    consumer = Consumer(Delivery(backends, JobRecorder()), block=0.05, retry_base=0.01)  # type: ignore[arg-type]
    task = asyncio.create_task(consumer.run())
    try:
        await backends.redis.xadd(STREAM, {"event": event(id="bad", type="poison")})
        for n in range(5):
            await backends.redis.xadd(STREAM, {"event": event(id=f"good-{n}")})

        async def the_good_ones_arrived() -> bool:
            return await inbox_size(backends) == 5

        await eventually(the_good_ones_arrived, timeout=3)  # not held back by the retries of "bad"

        async def dead_lettered() -> bool:
            return int(await backends.redis.xlen(DEAD)) == 1

        await eventually(dead_lettered, timeout=10.0)
        [letter] = await intake.dead_letters(backends.redis)
        assert f"fan-out failed {MAX_ATTEMPTS} times" in letter.reason and "poisoned event bad" in letter.reason
        assert msgspec.json.decode(letter.event)["id"] == "bad"  # the event as it was received
        assert int((await backends.redis.xpending(STREAM, GROUP))["pending"]) == 0
        assert await backends.redis.hlen(ATTEMPTS) == 0

        # Once the cause is fixed, requeueing delivers it, exactly once.
        async with backends.pool.acquire() as conn:
            await conn.execute(poison.CURE)
        await intake.requeue(backends.redis, letter.id)
        assert await backends.redis.xlen(DEAD) == 0

        async def delivered() -> bool:
            return await inbox_size(backends) == 6

        await eventually(delivered, timeout=10.0)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 5)


async def test_a_chunk_that_keeps_failing_dead_letters_its_event(backends: Backends) -> None:
    """A split fan-out whose chunk fails every time: arq retries it, then Herald dead-letters it."""
    jobs = JobRecorder()
    fan = Delivery(backends, jobs)  # type: ignore[arg-type]
    await fan.ingest(decode_event(event(id="split", audience={"users": [f"u{i}" for i in range(1500)]})))
    _, (event_id, lo, hi), _ = jobs.jobs[0]
    async with backends.pool.acquire() as conn:  # a real failure in the chunk's statement
        await conn.execute(
            """CREATE OR REPLACE FUNCTION herald_test_block() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'the disk is full (pretend)'; END $$;
               DROP TRIGGER IF EXISTS herald_test_block ON inbox;
               CREATE TRIGGER herald_test_block BEFORE INSERT ON inbox
                   FOR EACH STATEMENT EXECUTE FUNCTION herald_test_block();"""
        )
    try:
        ctx: dict[str, Any] = {"fanout": fan}
        from arq import Retry

        for attempt in range(1, CHUNK_ATTEMPTS):
            ctx["job_try"] = attempt
            with pytest.raises(Retry):
                await fanout_chunk(ctx, event_id, lo, hi)
        ctx["job_try"] = CHUNK_ATTEMPTS
        assert await fanout_chunk(ctx, event_id, lo, hi) == 0
    finally:
        async with backends.pool.acquire() as conn:
            await conn.execute("DROP TRIGGER IF EXISTS herald_test_block ON inbox")
    [letter] = await intake.dead_letters(backends.redis)
    assert f"fan-out failed {CHUNK_ATTEMPTS} times" in letter.reason and "disk is full" in letter.reason
    assert msgspec.json.decode(letter.event)["id"] == "split"
    # Requeued after the fix: the stored plan resumes, and every recipient gets one row.
    await intake.requeue(backends.redis, letter.id)
    raw = (await backends.redis.xrange(STREAM))[-1][1][b"event"]
    jobs.jobs.clear()
    await fan.ingest(decode_event(raw))
    for _, args, _ in jobs.jobs:
        await fan.run_chunk(*args)
    assert await inbox_size(backends) == 1500
