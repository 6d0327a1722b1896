"""Herald's Redis clients: every one is made by `connect` (the API, the worker's stream consumer
and its arq queue, the pub/sub hub, the CLI), each call bounded by a timeout and, with a breaker,
refused at once while Redis is known to be down (service/backends/breaker.py)."""

from __future__ import annotations

from typing import Any, TypeVar, overload

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from service.backends.breaker import Breaker
from service.settings import SENTINEL_SCHEME, parse_sentinel_url

RedisT = TypeVar("RedisT", bound=aioredis.Redis)


class _SentinelPool(SentinelConnectionPool):
    """A primary's pool that also closes its clients of the sentinels when it is closed for good
    (`aclose`): they are the caller's to close, and otherwise linger as unclosed sockets."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # a full close; a change of primary closes only idle connections
            for client in self.sentinel_manager.sentinels:
                await client.aclose()


class _Guarded:
    """A connection that goes through its breaker (service/backends/breaker.py): nothing is sent, and no
    connection is made, while the breaker knows Redis is down; a read or a connect that waited its
    whole timeout asks the breaker to probe at once."""

    breaker: Breaker | None

    def __init__(self, *, breaker: Breaker | None = None, **kwargs: Any) -> None:
        self.breaker = breaker
        super().__init__(**kwargs)

    def _check(self) -> None:
        if self.breaker is not None and not self.breaker.up:
            raise redis.exceptions.ConnectionError(f"{self.breaker.name} is not answering")

    def _timed_out(self) -> None:
        if self.breaker is not None:
            self.breaker.suspect()

    async def connect(self) -> None:
        self._check()
        try:
            await super().connect()  # type: ignore[misc]
        except redis.exceptions.TimeoutError:
            self._timed_out()
            raise

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        self._check()
        await super().send_packed_command(command, check_health)  # type: ignore[misc]

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.exceptions.TimeoutError:
            self._timed_out()
            raise


_GUARDED: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _guard(pool: aioredis.ConnectionPool, breaker: Breaker) -> None:
    """The pool's connections, of whichever class the URL chose (TCP, TLS, Unix socket, Sentinel),
    through the breaker."""
    plain = pool.connection_class
    if plain not in _GUARDED:
        _GUARDED[plain] = type(f"Guarded{plain.__name__}", (_Guarded, plain), {})
    pool.connection_class = _GUARDED[plain]
    pool.connection_kwargs["breaker"] = breaker


def breaker(url: str, name: str = "redis", **timing: float) -> Breaker:
    """The breaker of the Redis at `url`: its probe is a PING on a client of its own, made in the
    probing thread's loop on first use."""
    held: list[aioredis.Redis] = []

    async def probe(within: float) -> None:
        if not held:
            held.append(connect(url, PROBE_TIMEOUT, retry=False))
        await held[0].ping()

    async def close() -> None:
        while held:
            await held.pop().aclose()

    unreachable = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
    return Breaker(name, probe, close=close, unreachable=unreachable, **timing)


# The probe's client gives up sooner than the breaker's bound on a probe, so its socket is closed
# cleanly (and opened again next time) rather than cancelled mid-read.
PROBE_TIMEOUT = 1.5


@overload
def connect(url: str, timeout: float = ..., *, breaker: Breaker | None = ..., retry: bool = ...) -> aioredis.Redis: ...
@overload
def connect(
    url: str, timeout: float = ..., *, redis_class: type[RedisT], breaker: Breaker | None = ..., retry: bool = ...
) -> RedisT: ...
def connect(
    url: str,
    timeout: float = 5.0,
    *,
    redis_class: type[aioredis.Redis] = aioredis.Redis,
    breaker: Breaker | None = None,
    retry: bool = True,
) -> aioredis.Redis:
    """A client whose every call gives up after `timeout`, so an unreachable Redis is an error
    (answered 503) rather than a hang; it reconnects by itself when Redis is back. With a
    `breaker`, no call waits for a Redis the breaker knows is down (service/backends/breaker.py).

    `redis+sentinel://host:26379,host2:26379/mymaster/0` gives a client of whichever node the
    sentinels name as the primary of `mymaster`: every new connection asks them, so after a
    failover the next connection (the retry of a failed call, or the next call) reaches the new
    primary, with the same timeouts. Every Redis client of Herald is made here (the API, the
    worker's stream consumer and its arq queue, the pub/sub hub, the CLI).
    """
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        "retry": Retry(NoBackoff(), 1 if retry else 0),
        "max_connections": 200,
    }
    if not url.startswith(SENTINEL_SCHEME + "://"):
        plain: aioredis.Redis = redis_class.from_url(url, **options)
        if breaker is not None:
            _guard(plain.connection_pool, breaker)
        return plain
    target = parse_sentinel_url(url)
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "password": target.sentinel_password,
        },
    )
    client: aioredis.Redis = sentinels.master_for(
        target.service,
        redis_class=redis_class,
        connection_pool_class=_SentinelPool,
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )
    if breaker is not None:
        _guard(client.connection_pool, breaker)
    return client
