"""Herald's Redis clients: every one is made by `connect` (the API, the worker's stream consumer
and its arq queue, the pub/sub hub, the CLI), each call bounded by a timeout and, with a breaker,
refused at once while Redis is known to be down (service/backends/breaker.py).

The boundary of Redis's errors: on Herald's own clients (`Client`, its pipelines and its pub/sub)
a lost connection or a timeout is raised as `service.errors.Unavailable`, here and only here, so a
caller that degrades catches that alone. Any other Redis error (a Lua `ResponseError`, a wrong
type) means a bug and goes through untouched, never mistaken for an outage. arq's own client
(`redis_class=ArqRedis`) keeps redis-py's exceptions, which arq's loop expects; Herald's calls on it
go through `translated()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar, overload

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from service.backends.breaker import Breaker
from service.errors import Unavailable
from service.settings import SENTINEL_SCHEME, parse_sentinel_url

RedisT = TypeVar("RedisT", bound=aioredis.Redis)
T = TypeVar("T")


async def cached(read: Awaitable[bytes | None], decode: Callable[[bytes], T]) -> T | None:
    """A cache entry, read and decoded: None when it is absent, cannot be decoded (another version
    wrote it) or Redis is away. Only for caches: the caller has the true answer elsewhere."""
    try:
        raw = await read
    except Unavailable:
        return None
    if raw is None:
        return None
    try:
        return decode(raw)
    except msgspec.DecodeError:
        return None


# What an unreachable Redis raises: redis-py wraps most socket errors, not all of them.
# READONLY is an outage too: the primary named a moment ago is a replica now (a failover is under way).
# So is a Redis that answers but refuses to work for now: out of memory under `noeviction`, unable
# to persist (MISCONF), without its primary or replicas, or busy in a long script. Those are a
# server's state, not a fault of the command, and they pass like an outage does.
OUTAGE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.BusyLoadingError,
    OSError,
)
_REFUSING = ("MISCONF", "MASTERDOWN", "NOREPLICAS", "BUSY ")


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Redis unreachable (connection lost or refused, timeout) or refusing work for now (see
    OUTAGE) -> Unavailable; any other error answer is a bug and goes through as it is."""
    try:
        yield
    except OUTAGE as exc:
        raise Unavailable(f"Redis is unavailable: {exc}") from exc
    except redis.exceptions.ResponseError as exc:
        if str(exc).startswith(_REFUSING):
            raise Unavailable(f"Redis is unavailable: {exc}") from exc
        raise


class _Pipeline(aioredis.client.Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        with translated():
            return await super().execute(raise_on_error)


class _PubSub(aioredis.client.PubSub):
    async def execute_command(self, *args: Any) -> Any:
        with translated():
            return await super().execute_command(*args)

    async def parse_response(self, block: bool = True, timeout: float = 0) -> Any:
        with translated():
            return await super().parse_response(block, timeout)


class Client(aioredis.Redis):
    """Herald's Redis client: redis-py's, with its outages raised as Unavailable (see above).
    redis-py's own retry of a lost connection happens first, inside `execute_command`."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        with translated():
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> aioredis.client.Pipeline:
        return _Pipeline(self.connection_pool, self.response_callbacks, transaction, shard_hint)

    def pubsub(self, **kwargs: Any) -> aioredis.client.PubSub:
        return _PubSub(self.connection_pool, event_dispatcher=self._event_dispatcher, **kwargs)


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

    return Breaker(name, probe, close=close, unreachable=(*OUTAGE, Unavailable), **timing)


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
    redis_class: type[aioredis.Redis] = Client,
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
