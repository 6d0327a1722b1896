"""The connections one Herald process holds, opened once at start and closed once at stop."""

from __future__ import annotations

import asyncio

import asyncpg
import redis.asyncio as aioredis

from service.auth import Authenticator
from service.auth.limits import Limits
from service.auth.signed import Verifier
from service.backends import postgres
from service.backends.breaker import Breaker
from service.backends.redis import breaker as redis_breaker
from service.backends.redis import connect
from service.backends.replica import Reads
from service.counts import CountEngine
from service.positions import Positions
from service.settings import Settings


class Watch:
    """The process's breakers, one per backend (service/backends/breaker.py), and their probes. The
    replica's, when there is one, decides only where reads run: it never makes a process unready."""

    def __init__(self, settings: Settings) -> None:
        database_url, redis_url = settings.require_backends()
        self.postgres = postgres.breaker(database_url)
        self.redis = redis_breaker(redis_url)
        replica = settings.database_replica_url
        self.replica = postgres.breaker(replica, "postgres-replica") if replica else None

    @property
    def breakers(self) -> tuple[Breaker, Breaker]:
        """The backends a process needs (readiness)."""
        return self.postgres, self.redis

    def _all(self) -> list[Breaker]:
        return [*self.breakers, *([self.replica] if self.replica is not None else [])]

    def start(self) -> None:
        for breaker in self._all():
            breaker.start()

    async def stop(self) -> None:
        for breaker in self._all():
            await breaker.stop()


class Backends:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        client: aioredis.Redis,
        replica: asyncpg.Pool | None = None,
        watch: Watch | None = None,
    ) -> None:
        self.settings = settings
        self.watch = watch
        self.pool = pool
        self.replica = replica
        self.redis = client
        # Where inbox reads run: the replica when it may, else the primary (service/backends/replica.py).
        self.reads = Reads(pool, replica, client, min(settings.backend_timeout, 2.0))
        self.counts = CountEngine(client, pool, settings.backend_timeout, None if watch is None else watch.postgres)
        self.positions = Positions(client)
        self.auth = Authenticator(
            pool,
            settings.backend_timeout,
            Verifier(settings.jwt_secret, settings.jwt_public_key, settings.jwt_audience),
            database=None if watch is None else watch.postgres,
        )
        self.limits = Limits(
            settings.rate_limit_reads, settings.rate_limit_publishes, settings.rate_limit_auth_failures
        )

    @classmethod
    async def open(cls, settings: Settings, name: str, watch: Watch | None = None) -> Backends:
        """Every client of the process, through its breakers (made here unless given), whose
        probes start now. Nothing here waits for a backend: a process starts while one is away
        and connects when it is back."""
        database_url, redis_url = settings.require_backends()
        watch = watch or Watch(settings)
        watch.start()
        try:
            pool = await postgres.create_pool(
                database_url,
                size=settings.db_pool_size,
                timeout=settings.backend_timeout,
                name=name,
                breaker=watch.postgres,
            )
            client = connect(redis_url, settings.backend_timeout, breaker=watch.redis)
            replica = None
            if settings.database_replica_url:
                # No connection at start (min_size 0): a replica that is down must not stop the process.
                replica = await postgres.create_pool(
                    settings.database_replica_url,
                    size=settings.db_pool_size,
                    timeout=min(settings.backend_timeout, 2.0),
                    name=f"{name}-replica",
                    min_size=0,
                    breaker=watch.replica,
                )
        except BaseException:
            await watch.stop()
            raise
        backends = cls(settings, pool, client, replica, watch)
        backends.counts.start()  # every process copies again what it could not copy
        return backends

    async def close(self) -> None:
        await self.counts.stop()
        await self.redis.aclose()
        for pool in (self.replica, self.pool):
            if pool is not None:
                # A graceful close waits for the server to answer; one that stopped answering must
                # not hold up the process's exit.
                try:
                    await asyncio.wait_for(pool.close(), 5)
                except TimeoutError:
                    pool.terminate()
        if self.watch is not None:
            await self.watch.stop()
