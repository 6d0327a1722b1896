"""The connections one Herald process holds, opened once at start and closed once at stop."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis

from service import cache, db
from service.auth import Authenticator
from service.cache import CountCache
from service.limits import Limits
from service.replica import Reads
from service.settings import Settings
from service.signed import Verifier

if TYPE_CHECKING:
    from service.notifications import Rebuild


class Backends:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, client: aioredis.Redis, replica: asyncpg.Pool | None = None
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.replica = replica
        self.redis = client
        # Where inbox reads run: the replica when it may, else the primary (service/replica.py).
        self.reads = Reads(pool, replica, client, min(settings.backend_timeout, 2.0))
        self.counts = CountCache(client)
        self.auth = Authenticator(
            pool,
            settings.backend_timeout,
            Verifier(settings.jwt_secret, settings.jwt_public_key, settings.jwt_audience),
        )
        self.limits = Limits(
            settings.rate_limit_reads, settings.rate_limit_publishes, settings.rate_limit_auth_failures
        )
        # Count rebuilds in this process, and a ticket per count read (see service/notifications.py).
        self.rebuilding: dict[int, Rebuild] = {}
        self.poll_ticket = 0
        # Users whose new counts could not be copied to Redis (it was unreachable), to copy once it is
        # back; `lost_track` when there were too many to remember (see service/notifications.py).
        self.uncopied: set[int] = set()
        self.lost_track = False

    @classmethod
    async def open(cls, settings: Settings, name: str) -> Backends:
        database_url, redis_url = settings.require_backends()
        # The pool is created lazily-tolerant: min_size connections are opened now, so a process
        # that starts while PostgreSQL is down fails fast and is restarted by its supervisor.
        pool = await db.create_pool(
            database_url, size=settings.db_pool_size, timeout=settings.backend_timeout, name=name
        )
        client = cache.connect(redis_url, settings.backend_timeout)
        replica = None
        if settings.database_replica_url:
            # No connection at start (min_size 0): a replica that is down must not stop the process.
            replica = await db.create_pool(
                settings.database_replica_url,
                size=settings.db_pool_size,
                timeout=min(settings.backend_timeout, 2.0),
                name=f"{name}-replica",
                min_size=0,
            )
        return cls(settings, pool, client, replica)

    async def close(self) -> None:
        await self.redis.aclose()
        if self.replica is not None:
            await self.replica.close()
        await self.pool.close()
