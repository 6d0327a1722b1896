"""The arq queue's Redis client: made by `service.counts.connect` like every other Redis client, so
it has the same timeouts and follows a Sentinel failover (arq's own `RedisSettings` would give a
sentinel-backed pool without socket timeouts)."""

from __future__ import annotations

import msgspec
from arq import ArqRedis

from service.backends.breaker import Breaker
from service.backends.redis import connect
from service.keys import QUEUE


def queue_pool(redis_url: str, timeout: float, breaker: Breaker | None = None) -> ArqRedis:
    pool = connect(redis_url, timeout, redis_class=ArqRedis, breaker=breaker)
    pool.job_serializer = msgspec.msgpack.encode
    pool.job_deserializer = msgspec.msgpack.decode
    pool.default_queue_name = QUEUE
    return pool
