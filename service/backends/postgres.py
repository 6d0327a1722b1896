"""PostgreSQL connections: the pool both processes use, and applying `schema.sql`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple, cast

import asyncpg
import msgspec

from service.backends.breaker import Breaker
from service.errors import Unavailable

log = logging.getLogger("herald.db")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# Any constant works; it only has to be the same in every `herald migrate`.
_MIGRATE_LOCK = 0x4E52_414C_4401


def _json_encode(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's default reset (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL):
    Herald sets no session state on pooled connections, and that reset cost a round trip per
    request. asyncpg still clears the connection's own state and rolls back a stray transaction."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=_json_encode, decoder=msgspec.json.decode, schema="pg_catalog")


class Pool(asyncpg.Pool):
    """asyncpg's pool, with the breaker every connection taken from it goes through (see
    `connection`): None for a pool that should simply wait, as the CLI's one-off commands do."""

    breaker: Breaker | None = None


async def create_pool(
    url: str,
    *,
    size: int = 10,
    timeout: float = 5.0,
    name: str = "herald",
    min_size: int = 0,
    breaker: Breaker | None = None,
    command_timeout: float = 30.0,
) -> Pool:
    """A pool whose every wait is bounded, so a dead database becomes an error, not a hang.

    `timeout` bounds connecting; `command_timeout` bounds each statement (fan-out chunks get more,
    they pass their own). The server-side statement_timeout is the backstop if a client vanishes.
    No connection is opened here by default (`min_size` 0): a process starts while PostgreSQL is
    away, and connects when it is back.
    """
    pool = Pool(
        url,
        min_size=min(min_size, size),
        max_size=size,
        max_queries=50_000,  # asyncpg's own defaults, which its constructor does not fill in
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        timeout=timeout,
        command_timeout=max(timeout, command_timeout),
        max_inactive_connection_lifetime=60.0,
        init=_init_connection,
        reset=_keep_session,
        server_settings={"application_name": name, "timezone": "UTC", "statement_timeout": "60s"},
    )
    pool.breaker = breaker
    await pool
    return pool


def breaker(url: str, name: str = "postgres", **timing: float) -> Breaker:
    """The breaker of the database at `url`: its probe is `SELECT 1` on a connection of its own,
    opened again after any failure, so it never waits behind the pool."""
    held: list[asyncpg.Connection] = []

    async def probe(within: float) -> None:
        try:
            if not held:
                held.append(
                    await asyncpg.connect(url, timeout=within, server_settings={"application_name": "herald-probe"})
                )
            await held[0].fetchval("SELECT 1", timeout=within)
        except BaseException:
            await close()
            raise

    async def close() -> None:
        while held:
            held.pop().terminate()

    return Breaker(name, probe, close=close, unreachable=_UNREACHABLE, **timing)


def schema_sql() -> str:
    """The DDL: packaged inside the wheel, or read from the top of a source checkout."""
    packaged = resources.files("service").joinpath("schema.sql")
    if packaged.is_file():
        return packaged.read_text()
    return (Path(__file__).resolve().parents[2] / "schema.sql").read_text()


async def migrate(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        async with conn.transaction():
            # Two processes starting together must not interleave their CREATE ... IF NOT EXISTS.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
            await conn.execute(schema_sql())
    finally:
        await conn.close()


# Failures that mean "the database is not reachable right now", as opposed to a wrong statement:
# connection-level errors (SQLSTATE class 08), operator intervention (57: shutdown, recovery,
# statement timeout), and the client-side faces of the same (socket errors, timeouts, a closed pool).
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.exceptions.InternalClientError,
)
_RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
# Unique indexes that two writers can race for, where the one that lost, run again, finds the
# winner's row and does the right thing with it: two events of one group, fanned out side by side,
# each starting a user's thread (service/store/fanout.py).
RACED = frozenset({"inbox_user_thread"})


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _RETRYABLE):
        return True
    return isinstance(exc, asyncpg.UniqueViolationError) and getattr(exc, "constraint_name", None) in RACED


# The schema is not there (yet): a process started before `herald migrate` finished. That is the
# database not being ready, not a fault of whatever was being written, so it is retried like an
# outage instead of, say, dead-lettering the event being fanned out.
_NOT_MIGRATED: tuple[type[BaseException], ...] = (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError)


@asynccontextmanager
async def connection(pool: asyncpg.Pool, timeout: float = 5.0) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection; an unreachable database surfaces as `Unavailable` within `timeout`,
    and at once while the pool's breaker knows it is down (service/backends/breaker.py)."""
    breaker = pool.breaker if isinstance(pool, Pool) else None
    if breaker is not None:
        breaker.check()
    try:
        async with pool.acquire(timeout=timeout) as proxy:
            # The pool hands out a proxy that forwards every call to its Connection.
            conn = cast(asyncpg.Connection, proxy)
            if breaker is None:
                yield conn
            else:
                with breaker.holding(conn):
                    yield conn
    except TimeoutError as exc:
        # A statement or a connect that waited its whole bound: slow, or gone? The probe decides.
        if breaker is not None:
            breaker.suspect()
        raise Unavailable("the database is unavailable") from exc
    except _UNREACHABLE as exc:
        raise Unavailable("the database is unavailable") from exc
    except _NOT_MIGRATED as exc:
        log.error("the database schema is missing or old: run `herald migrate` (%s)", exc)
        raise Unavailable("the database schema is not applied yet") from exc


async def run(
    pool: asyncpg.Pool, work: Callable[[asyncpg.Connection, *Ts], Awaitable[T]], *args: *Ts, timeout: float = 5.0
) -> T:
    """Run `work(conn, *args)` on one connection, again if PostgreSQL chose it as a deadlock victim
    (or it lost a race for one of the RACED unique indexes).

    Every statement Herald runs in `work` is atomic on its own or wrapped by `work` in a
    transaction, so running it again after such an abort is safe.
    """
    for attempt in range(4):
        try:
            async with connection(pool, timeout) as conn:
                return await work(conn, *args)
        except asyncpg.PostgresError as exc:
            if attempt == 3 or not _retryable(exc):
                raise
            await asyncio.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


async def ping(conn: asyncpg.Connection) -> None:
    await conn.fetchval("SELECT 1")
