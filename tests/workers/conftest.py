"""Fixtures of the worker tests: a real arq pool on the test Redis."""

from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis

from service.process import Backends
from service.settings import Settings
from workers.queue import queue_pool


@pytest.fixture
async def arq_pool(settings: Settings, backends: Backends) -> AsyncIterator[ArqRedis]:
    assert settings.redis_url
    pool = queue_pool(settings.redis_url, settings.backend_timeout)
    yield pool
    await pool.aclose()
