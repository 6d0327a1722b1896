"""The arq queue's Redis client: made by `service.backends.redis.connect` like every other Redis
client, so it has the same timeouts and follows a Sentinel failover (arq's own `RedisSettings`
would give a sentinel-backed pool without socket timeouts); its job format is service/jobs.py's."""

from __future__ import annotations

from arq import ArqRedis

from service.backends.breaker import Breaker
from service.backends.redis import connect
from service.jobs import configure


def queue_pool(redis_url: str, timeout: float, breaker: Breaker | None = None) -> ArqRedis:
    return configure(connect(redis_url, timeout, redis_class=ArqRedis, breaker=breaker))
