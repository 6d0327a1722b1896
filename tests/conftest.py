"""Shared fixtures: real PostgreSQL and Redis, a clean slate per test, factories for the rest.

The servers are HERALD_TEST_DATABASE_URL / HERALD_TEST_REDIS_URL when set (the test database is
wiped at start) and embedded ones started for the session otherwise, so `make test` needs nothing
installed. Each test starts with empty tables and an empty Redis database.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import hypothesis
import msgspec
import pytest
import redis.asyncio as aioredis

from service import admin
from service.embedded import EmbeddedPostgres, EmbeddedRedis, create_database, free_port, fresh_schema
from service.http.app import asgi, create_app
from service.model import Event, decode_event
from service.process import Backends
from service.settings import Settings
from workers.delivery import Delivery, Outcome

# Real `herald` processes (fixtures `env` and `running`) for the end-to-end tests.
pytest_plugins = ["tests.processes"]

# Property-based tests (hypothesis, schemathesis) draw the same examples on every `make test`, so
# CI is repeatable; `make soak` runs them deeper with fresh random examples (HYPOTHESIS_PROFILE=random).
hypothesis.settings.register_profile("repeatable", derandomize=True, database=None)
hypothesis.settings.register_profile("random", derandomize=False)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

TABLES = "inbox, fanout_chunks, events, subscriptions, tokens, inbox_counts, preferences, users, tenants"


class Servers(msgspec.Struct):
    database_url: str
    redis_url: str


@pytest.fixture(scope="session")
def servers(request: pytest.FixtureRequest) -> Iterator[Servers]:
    """The session's servers. If they cannot start, the run stops here, once, with the cause (the
    server's own error), rather than every test erroring on its own."""
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    scratch = tempfile.TemporaryDirectory(prefix="herald-test-")
    Path(scratch.name).chmod(0o755)  # the embedded PostgreSQL may run as another user
    try:
        try:
            database_url = os.environ.get("HERALD_TEST_DATABASE_URL")
            if not database_url:
                pg = EmbeddedPostgres(Path(scratch.name) / "postgres")
                if pg.placement:  # one line on the terminal, past the output capture
                    capture = request.config.pluginmanager.get_plugin("capturemanager")
                    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
                    if capture is not None and reporter is not None:
                        with capture.global_and_fixture_disabled():
                            # -q prints dots without the file's name, so the reporter does not
                            # know the line is open
                            reporter.write_line(("\n" if reporter.verbosity < 0 else "") + f"herald: {pg.placement}")
                started.append(pg)
                database_url = asyncio.run(create_database(pg.start(), "herald_test", fresh=True))
            asyncio.run(fresh_schema(database_url))
            redis_url = os.environ.get("HERALD_TEST_REDIS_URL")
            if not redis_url:
                rd = EmbeddedRedis(Path(scratch.name) / "redis", appendonly=False)
                started.append(rd)
                redis_url = rd.start()
        except Exception as exc:
            reason = f"herald: the test servers did not start: {exc}"
            pytest.exit(reason, returncode=pytest.ExitCode.INTERNAL_ERROR)
        yield Servers(database_url=database_url, redis_url=redis_url)
    finally:
        for server in reversed(started):
            server.stop()
        scratch.cleanup()


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


@asynccontextmanager
async def serving(settings: Settings, peer: tuple[str, int] = ("127.0.0.1", 123)) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to a fresh app on this test's own event loop.

    Litestar's AsyncTestClient runs the app's lifespan on another thread's loop and blocks the
    caller's loop while a request runs, so concurrent requests (and anything the app shares with
    the test, like a stream) would be impossible. Here the lifespan and every request share the
    test's loop, as they share a process's loop in production. The lifespan runs in a task of its
    own because it must be entered and left by the same task (it holds an anyio task group).
    """
    app = create_app(settings)
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # the start failed: raise why
    try:
        transport = httpx.ASGITransport(app=asgi(app), client=peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
            yield http
    finally:
        stop.set()
        await task


@asynccontextmanager
async def listening(settings: Settings) -> AsyncIterator[str]:
    """The app behind a real HTTP server (uvicorn) on this test's loop; yields its base URL.

    For what the in-memory transport cannot do: responses that stream (Server-Sent Events).
    """
    import uvicorn

    config = uvicorn.Config(
        asgi(create_app(settings)), host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the test server did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def client(settings: Settings, clean: None) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(settings) as c:
        yield c


class User(msgspec.Struct, frozen=True):
    tenant: str
    user: str
    role: str
    token: str
    user_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


MakeUser = Callable[..., Awaitable[User]]
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


_event_ids = itertools.count(1)


def make_event(**fields: Any) -> Event:
    """A valid event; any field can be overridden, `users=[...]` is short for the audience."""
    body: dict[str, Any] = {
        "id": f"evt-{next(_event_ids)}",
        "type": "scan.completed",
        "tenant": "acme",
        "audience": {"users": fields.pop("users", ["alice"])},
        "title": "Scan completed",
        "message": "A Scan operation on Healthcare Analytics has completed.",
    }
    body.update(fields)
    return decode_event(msgspec.json.encode(body))


class JobRecorder:
    """Records the chunk jobs a fan-out enqueues, so a test can run them by hand: twice, concurrently,
    or not at all. (The real arq path is tested in tests/workers.)"""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, tuple[Any, ...], str | None]] = []

    async def enqueue_job(self, function: str, *args: Any, _job_id: str | None = None, **_: Any) -> None:
        self.jobs.append((function, args, _job_id))


@pytest.fixture
def jobs() -> JobRecorder:
    return JobRecorder()


@pytest.fixture
def fan(backends: Backends, jobs: JobRecorder) -> Delivery:
    return Delivery(backends, jobs)  # type: ignore[arg-type]


Deliver = Callable[..., Awaitable[Outcome]]


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


async def seed_topic(conn: asyncpg.Connection, topic: str, n: int) -> None:
    """`n` members of tenant acme (member-1 ... member-n) subscribed to `topic`, with counts rows,
    set-based."""
    tenant = await conn.fetchval("INSERT INTO tenants (name) VALUES ('acme') RETURNING id")
    await conn.execute(
        """WITH u AS (INSERT INTO users (tenant_id, external_id)
                      SELECT $1, 'member-' || g FROM generate_series(1, $2) g RETURNING id),
                c AS (INSERT INTO inbox_counts (user_id) SELECT id FROM u RETURNING user_id)
           INSERT INTO subscriptions (tenant_id, topic, user_id) SELECT $1, $3, user_id FROM c""",
        tenant,
        n,
        topic,
    )
