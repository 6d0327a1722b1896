"""The arq queue's Redis client: made by `service.cache.connect` like every other Redis client, so
it has the same timeouts and follows a Sentinel failover (arq's own `RedisSettings` would give a
sentinel-backed pool without socket timeouts)."""

from __future__ import annotations

import msgspec
from arq import ArqRedis

from service import cache
from service.breaker import Breaker
from service.cache import QUEUE


def queue_pool(redis_url: str, timeout: float, breaker: Breaker | None = None) -> ArqRedis:
    pool = cache.connect(redis_url, timeout, redis_class=ArqRedis, breaker=breaker)
    pool.job_serializer = msgspec.msgpack.encode
    pool.job_deserializer = msgspec.msgpack.decode
    pool.default_queue_name = QUEUE
    return pool
