"""Fixtures of the worker tests: a real arq pool on the test Redis."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
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


def event(**fields: Any) -> bytes:
    """A valid stream entry's event; any field can be overridden."""
    body: dict[str, Any] = {"id": "e1", "type": "t", "tenant": "acme", "audience": {"users": ["alice"]}, "message": "m"}
    body.update(fields)
    return msgspec.json.encode(body)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def rows(b: Backends) -> int:
    async with b.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM inbox"))
