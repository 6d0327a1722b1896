"""The breaker (service/backends/breaker.py) against real servers behind a partition: a backend that stops
answering is known by the probes alone, calls then fail at once (and PostgreSQL calls in flight
end), an error answer is not an outage, and through a long PostgreSQL outage the badge keeps
answering from what the process and Redis already hold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import msgspec
import pytest
import redis.exceptions
from redis.asyncio.connection import SSLConnection

from service import auth, counts
from service.backends import postgres
from service.backends.breaker import Breaker
from service.backends.redis import _Guarded, connect
from service.backends.redis import breaker as redis_breaker
from service.errors import Unavailable
from service.local.harness import Servers
from service.settings import Settings
from tests.support.factories import MakeUser
from tests.support.http import serving
from tests.support.partition import Partition, partition

FAST = {"every": 0.2, "within": 0.5}


def through(url: str, proxy: Partition) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.port}", f":{proxy.port}")))


async def until(check: Callable[[], bool], within: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"{what} not within {within} s"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


async def timed(call: Callable[[], Awaitable[object]]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await call()
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


@pytest.fixture
async def breaker_on(servers: Servers) -> AsyncIterator[Callable[[Breaker], Breaker]]:
    started: list[Breaker] = []

    def start(breaker: Breaker) -> Breaker:
        breaker.start()
        started.append(breaker)
        return breaker

    yield start
    for breaker in started:
        await breaker.stop()


async def test_a_partitioned_database_fails_fast_and_ends_calls_in_flight(servers: Servers, breaker_on) -> None:  # type: ignore[no-untyped-def]
    port = urlsplit(servers.database_url).port
    assert port is not None
    with partition(port) as proxy:
        url = through(servers.database_url, proxy)
        breaker = breaker_on(postgres.breaker(url, **FAST))
        pool = await postgres.create_pool(url, size=2, timeout=5.0, breaker=breaker)
        try:
            assert await postgres.run(pool, lambda conn: conn.fetchval("SELECT 1")) == 1
            await until(lambda: breaker.known, 2, "a first probe")

            proxy.blackhole()
            in_flight = asyncio.create_task(timed(lambda: postgres.run(pool, lambda conn: conn.fetchval("SELECT 2"))))
            tripped = await until(lambda: not breaker.up, 3, "the probes to notice")
            took, error = await in_flight
            # Ended when the backend was marked down, not at its 30 s statement timeout.
            assert isinstance(error, Unavailable) and took < tripped + 1.0, (took, tripped, error)
            took, error = await timed(lambda: postgres.run(pool, lambda conn: conn.fetchval("SELECT 3")))
            assert isinstance(error, Unavailable) and took < 0.05, (took, error)

            proxy.heal()
            await until(lambda: breaker.up, 3, "the probes to see it back")
            assert await postgres.run(pool, lambda conn: conn.fetchval("SELECT 4")) == 4
        finally:
            pool.terminate()


async def test_a_partitioned_redis_fails_fast(servers: Servers, breaker_on) -> None:  # type: ignore[no-untyped-def]
    port = urlsplit(servers.redis_url).port
    assert port is not None
    with partition(port) as proxy:
        url = through(servers.redis_url, proxy)
        breaker = breaker_on(redis_breaker(url, **FAST))
        client = connect(url, 5.0, breaker=breaker)
        try:
            assert await client.ping()
            proxy.blackhole()
            await until(lambda: not breaker.up, 3, "the probes to notice")
            took, error = await timed(client.ping)
            # Translated once, at the client (service/backends/redis.py), keeping redis-py's error as its cause.
            assert isinstance(error, Unavailable) and took < 0.05, (took, error)
            assert isinstance(error.__cause__, redis.exceptions.ConnectionError)
            proxy.heal()
            await until(lambda: breaker.up, 3, "the probes to see it back")
            assert await client.ping()
        finally:
            await client.aclose()


async def test_an_error_answer_is_not_an_outage(servers: Servers, breaker_on) -> None:  # type: ignore[no-untyped-def]
    # The server answers, with an error (no such database): reachable, so never failed fast.
    missing = urlunsplit(urlsplit(servers.database_url)._replace(path="/no_such_database"))
    breaker = breaker_on(postgres.breaker(missing, **FAST))
    await until(lambda: breaker.known, 3, "a probe's answer")
    await asyncio.sleep(1)
    assert breaker.up


async def test_an_error_answer_of_redis_is_not_an_outage(servers: Servers) -> None:
    # A bug (here a Lua error) is raised as Redis said it, never as Unavailable, in a call, a
    # pipeline and a script alike.
    client = connect(servers.redis_url, 5.0)
    try:
        with pytest.raises(redis.exceptions.ResponseError) as raised:
            await client.eval("return redis.error_reply('a bug')", 0)
        assert not isinstance(raised.value, Unavailable)
        async with client.pipeline(transaction=False) as pipe:
            pipe.eval("return redis.error_reply('a bug')", 0)
            with pytest.raises(redis.exceptions.ResponseError):
                await pipe.execute()
        with pytest.raises(redis.exceptions.ResponseError):
            await client.register_script("return redis.error_reply('a bug')")()
    finally:
        await client.aclose()


async def test_every_kind_of_redis_url_goes_through_the_breaker() -> None:
    breaker = Breaker("redis", lambda within: asyncio.sleep(0))
    tls = connect("rediss://127.0.0.1:1/0", 1.0, breaker=breaker)
    made = tls.connection_pool.make_connection()
    assert isinstance(made, _Guarded) and isinstance(made, SSLConnection)
    local = connect("unix:///nonexistent/redis.sock", 1.0, breaker=breaker)
    with pytest.raises(Unavailable) as raised:  # not a TypeError from an unknown argument
        await local.ping()
    assert isinstance(raised.value.__cause__, redis.exceptions.ConnectionError)
    for client in (tls, local):
        await client.aclose()


async def test_the_badge_outlives_its_caches_ttl_while_postgres_is_away(
    servers: Servers, settings: Settings, make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the credential cache's and the count copy's lifetimes, a polled badge still answers
    200 while PostgreSQL does not answer: neither can be rebuilt meanwhile, so both are kept."""
    monkeypatch.setattr(auth, "CACHE_TTL", 0.5)
    monkeypatch.setattr(counts, "COUNT_TTL", 10)
    alice = await make_user(user="alice")
    port = urlsplit(servers.database_url).port
    assert port is not None
    with partition(port) as proxy:
        proxied = msgspec.structs.replace(settings, database_url=through(servers.database_url, proxy))
        async with serving(proxied) as client:
            assert (await client.get("/v1/unread-count", headers=alice.headers)).status_code == 200
            proxy.blackhole()
            began = time.monotonic()
            answers: list[tuple[float, int]] = []
            while time.monotonic() < began + 16:
                at = time.monotonic() - began
                answers.append((at, (await client.get("/v1/unread-count", headers=alice.headers)).status_code))
                await asyncio.sleep(0.2)
            proxy.heal()
    # The probes know within about 6 s; from then on, and well past both lifetimes, 200.
    late = [status for at, status in answers if at >= 8]
    assert len(late) >= 20 and set(late) == {200}, answers
