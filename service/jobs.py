"""The arq job queue as every Herald process sees it: the workers run its jobs (workers/main.py),
the worker's fan-out and the API and CLI enqueue them. One place says how a job is written to
Redis, so that whoever enqueues and whoever runs agree."""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis
from arq import ArqRedis

from service.backends.redis import translated
from service.keys import QUEUE


def configure(pool: ArqRedis) -> ArqRedis:
    """Herald's queue and its job format (msgpack, as the workers decode it) on an arq client."""
    pool.job_serializer = msgspec.msgpack.encode
    pool.job_deserializer = msgspec.msgpack.decode
    pool.default_queue_name = QUEUE
    return pool


def queue_of(client: aioredis.Redis) -> ArqRedis:
    """An arq client on the connections of one of Herald's own clients (its pool, timeouts and
    breaker), for a process that only enqueues now and then: no connections of its own to open or
    close."""
    return configure(ArqRedis(connection_pool=client.connection_pool))


async def enqueue(queue: ArqRedis, function: str, *args: Any, job_id: str) -> bool:
    """Queue a job under a fixed id; False when a job of that id is queued or running already.
    Raises Unavailable when Redis is (arq's client keeps redis-py's own errors)."""
    with translated():
        return await queue.enqueue_job(function, *args, _job_id=job_id) is not None
