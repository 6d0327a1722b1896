"""Fixtures of the worker tests: a real arq pool on the test Redis."""

from collections.abc import AsyncIterator

import msgspec
import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from service.backends import Backends
from service.cache import QUEUE
from service.settings import Settings


@pytest.fixture
async def arq_pool(settings: Settings, backends: Backends) -> AsyncIterator[ArqRedis]:
    assert settings.redis_url
    pool = await create_pool(
        RedisSettings.from_dsn(settings.redis_url),
        default_queue_name=QUEUE,
        job_serializer=msgspec.msgpack.encode,
        job_deserializer=msgspec.msgpack.decode,
    )
    yield pool
    await pool.aclose()
