"""A Redis that answers but refuses to work for now (out of memory under `noeviction`): like an
outage, never a bug. Publishing answers 503, a committed change's count copy is recorded and copied
again once Redis takes writes, and nothing raises past the boundary as a 500."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import redis.asyncio as aioredis

from service import intake
from service.errors import Unavailable
from service.model import Counts, decode_events
from service.process import Backends
from service.settings import Settings
from tests.support.servers import Breakable


async def test_a_redis_out_of_memory_is_an_outage(settings: Settings, private_redis: Breakable, clean: None) -> None:
    b = await Backends.open(msgspec.structs.replace(settings, redis_url=private_redis.url), "herald-test")
    raw = aioredis.Redis.from_url(private_redis.url)
    try:
        await raw.config_set("maxmemory-policy", "noeviction")
        await raw.config_set("maxmemory", 1)  # every write is refused: OOM

        event = b'{"id": "e1", "type": "t", "tenant": "acme", "audience": {"users": ["ann"]}, "message": "m"}'
        with pytest.raises(Unavailable):
            await intake.enqueue(b.redis, decode_events(event))

        change = Counts(user_id=1, version=3, unread=1, total=1, unseen=1)
        await b.counts.copy([change])  # committed elsewhere: never raised
        assert 1 in b.counts.uncopied

        await raw.config_set("maxmemory", 0)  # room again: the record is drained by the process
        for _ in range(100):
            if not b.counts.uncopied:
                break
            await asyncio.sleep(0.05)
        assert not b.counts.uncopied
    finally:
        await raw.config_set("maxmemory", 0)
        await raw.aclose()
        await b.close()
