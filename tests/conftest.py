"""Shared fixtures: real PostgreSQL and Redis, a clean slate per test, factories for the rest.

The servers are HERALD_TEST_DATABASE_URL / HERALD_TEST_REDIS_URL when set (the test database is
wiped at start) and embedded ones started for the session otherwise (service/local/harness.py), so
`make test` needs nothing installed. Each test starts with empty tables and an empty Redis database.
Helpers that are not fixtures live in tests/support/.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import hypothesis
import pytest
import redis.asyncio as aioredis

from service import admin
from service.local.embedded import free_port
from service.local.harness import Servers, herald_command, start, wait_ready
from service.model import Event
from service.process import Backends
from service.settings import Settings
from tests.support.factories import TABLES, Deliver, JobRecorder, MakeUser, User, make_event
from tests.support.http import serving
from tests.support.processes import stop
from workers.delivery import Delivery, Outcome

# Property-based tests (hypothesis, schemathesis) draw the same examples on every `make test`, so
# CI is repeatable; `make soak` runs them deeper with fresh random examples (HYPOTHESIS_PROFILE=random).
hypothesis.settings.register_profile("repeatable", derandomize=True, database=None)
hypothesis.settings.register_profile("random", derandomize=False)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="session")
def servers(request: pytest.FixtureRequest) -> Iterator[Servers]:
    """The session's servers. If they cannot start, the run stops here, once, with the cause (the
    server's own error), rather than every test erroring on its own."""

    def note(placement: str) -> None:  # one line on the terminal, past the output capture
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        if capture is not None and reporter is not None:
            with capture.global_and_fixture_disabled():
                # -q prints dots without the file's name, so the reporter does not know the line is open
                reporter.write_line(("\n" if reporter.verbosity < 0 else "") + f"herald: {placement}")

    servers = Servers.from_env(
        "TEST",
        database="herald_test",
        fresh=True,
        appendonly=False,
        note=note,
    )
    try:
        servers.start()
    except Exception as exc:
        pytest.exit(f"herald: the test servers did not start: {exc}", returncode=pytest.ExitCode.INTERNAL_ERROR)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def settings(servers: Servers) -> Settings:
    return Settings(
        database_url=servers.database_url,
        redis_url=servers.redis_url,
        public_url="https://herald.example",
        fanout_chunk=1000,
        db_pool_size=8,
        backend_timeout=2.0,
    )


@pytest.fixture
async def clean(servers: Servers) -> None:
    conn = await asyncpg.connect(servers.database_url)
    try:
        await conn.execute(f"TRUNCATE {TABLES} CASCADE")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(servers.redis_url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


@pytest.fixture
async def backends(settings: Settings, clean: None) -> AsyncIterator[Backends]:
    opened = await Backends.open(settings, "herald-test")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def redis_client(backends: Backends) -> aioredis.Redis:
    return backends.redis


@pytest.fixture
async def client(settings: Settings, clean: None) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings) as c:
        yield c


_names = itertools.count(1)


@pytest.fixture
def make_user(backends: Backends) -> MakeUser:
    """A user with a personal token: `await make_user()` or `make_user(user="bob", role="admin")`."""

    async def make(tenant: str = "acme", user: str | None = None, role: str = "member", kind: str = "pat") -> User:
        name = user or f"user{next(_names)}"
        async with backends.pool.acquire() as conn:
            made = await admin.create_user(conn, tenant, name, role)
            token = made.token if kind == "pat" else await admin.create_token(conn, tenant, name, kind)
        return User(tenant=tenant, user=name, role=made.role, token=token, user_id=made.user_id)

    return make


@pytest.fixture
def jobs() -> JobRecorder:
    return JobRecorder()


@pytest.fixture
def fan(backends: Backends, jobs: JobRecorder) -> Delivery:
    return Delivery(backends, jobs)  # type: ignore[arg-type]


@pytest.fixture
def deliver(fan: Delivery, jobs: JobRecorder) -> Deliver:
    """Ingest an event the way the worker does, running any split chunks at once."""

    async def run(event: Event | None = None, **fields: Any) -> Outcome:
        outcome = await fan.ingest(event or make_event(**fields))
        while jobs.jobs:
            _, (event_id, lo, hi), _ = jobs.jobs.pop(0)
            await fan.run_chunk(event_id, lo, hi)
        return outcome

    return run


@pytest.fixture
def env(servers: Servers, clean: None) -> dict[str, str]:
    """The environment of a Herald process pointed at the test servers, on a free port."""
    return {
        **os.environ,
        "HERALD_DATABASE_URL": servers.database_url,
        "HERALD_REDIS_URL": servers.redis_url,
        "HERALD_PORT": str(free_port()),
        "HERALD_PUBLIC_URL": "https://app.example",
    }


@pytest.fixture
def running(env: dict[str, str]) -> Iterator[str]:
    """`herald api` and `herald worker`, ready; yields the API's base URL."""
    base = f"http://127.0.0.1:{env['HERALD_PORT']}"
    children = [start(part, herald_command(part), env) for part in ("api", "worker")]
    try:
        wait_ready(base + "/readyz", children)
        yield base
    finally:
        stop([c.proc for c in children])
