"""Inbox reads from a PostgreSQL streaming replica, with each user's own writes seen at once.

With HERALD_DATABASE_REPLICA_URL set, list and get reads (`service/inbox.py`) may run on
the replica; every write, count, stream replay and the worker stay on the primary.

Read-your-writes. After a user's write changed something (read, unread, delete, read-all), the
primary's WAL insert position, read on the same connection after the commit and so at or past the
commit record, is kept for that user in Redis (`herald:wrote:{user_id}`, the highest position wins,
for WROTE_TTL seconds) so that every API process sees it, and in this process too. A read for that
user runs on the replica only once the replica has replayed up to that position
(`pg_last_wal_replay_lsn()`, read at most every REPLAY_FRESH seconds per process, once however
many reads wait for it); until then it runs on the primary. Users without a recent write read
from the replica directly. Arrivals written by the workers are not "own writes": a new
notification may show in a list on the replica a moment after the badge counted it (the badge
comes from Redis), as replication lag allows. A get that finds nothing on the replica asks the
primary, so a row announced on a stream is always found.

The replica never makes a read fail: if it cannot be reached (or its schema is missing, or it
cancelled the query for a recovery conflict), the read runs on the primary and the replica is left
alone for DOWN_FOR seconds. If Redis cannot say whether the user wrote recently, the read runs on
the primary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, TypeVarTuple

import asyncpg
import redis.asyncio as aioredis
from prometheus_client import Counter

from service.backends import postgres
from service.errors import Unavailable
from service.keys import wrote_key
from service.metrics import REGISTRY

log = logging.getLogger("herald.replica")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

# How long a user's write sends their reads to the primary unless the replica has replayed it:
# a replica further behind than this serves a user's own older state again.
WROTE_TTL = 60
REPLAY_FRESH = 0.05
DOWN_FOR = 5.0
_REMEMBERED_MAX = 10_000

DB_READS = Counter(
    "herald_db_reads",
    "Inbox list and get reads by where they ran: replica, or primary (no replica configured, the user's "
    "own recent write not yet replayed on the replica, or the replica unreachable).",
    ["target"],
    registry=REGISTRY,
)


# Positions travel as 16 hex digits, so Lua compares them as strings.
_KEEP_HIGHEST = """
local old = redis.call('GET', KEYS[1])
if not old or old < ARGV[1] then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
    redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


# The primary's insert position, and what a page and a segment header take (they vary by build).
_POSITION = """
SELECT pg_current_wal_insert_lsn(), current_setting('wal_block_size')::bigint,
       pg_size_bytes(current_setting('wal_segment_size'))
"""
_SHORT_HEADER, _LONG_HEADER = 24, 40  # SizeOfXLogShortPHD, SizeOfXLogLongPHD


async def position(conn: asyncpg.Connection) -> int:
    """Where the WAL ends now: after a commit on this connection, at or past its commit record.

    The insert position is where the next record will start; when the last record ended exactly
    at a page boundary, that is past the next page's header, a place a standby's replay position
    (the end of the last record replayed) never equals until more WAL is written. So a position
    just past a header is taken back to the boundary: the end of the last record.
    """
    row = await conn.fetchrow(_POSITION)
    assert row is not None
    lsn, block, segment = int(row[0]), int(row[1]), int(row[2])
    if lsn % segment == _LONG_HEADER:
        return lsn - _LONG_HEADER
    if lsn % block == _SHORT_HEADER:
        return lsn - _SHORT_HEADER
    return lsn


class Reads:
    """Where a user's read runs, and running it there."""

    def __init__(
        self,
        primary: asyncpg.Pool,
        replica: asyncpg.Pool | None,
        client: aioredis.Redis,
        timeout: float,
    ) -> None:
        self.primary = primary
        self.replica = replica
        self.redis = client
        self.timeout = timeout
        self._keep = client.register_script(_KEEP_HIGHEST)
        self._wrote: dict[int, tuple[int, float]] = {}  # user -> (position, until), this process's own
        self._replayed = -1
        self._replayed_at = float("-inf")
        self._reading_replay: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self._said_not_standby = False

    async def wrote(self, user_id: int, lsn: int) -> None:
        """Remember that the user's write is at `lsn` (see the module docstring)."""
        now = time.monotonic()
        if len(self._wrote) >= _REMEMBERED_MAX:
            self._wrote = {u: w for u, w in self._wrote.items() if w[1] > now}
            if len(self._wrote) >= _REMEMBERED_MAX:
                self._wrote.clear()
        known = self._wrote.get(user_id)
        self._wrote[user_id] = (max(lsn, known[0] if known else 0), now + WROTE_TTL)
        try:
            await self._keep(keys=[wrote_key(user_id)], args=[f"{lsn:016X}", WROTE_TTL])
        except Unavailable as exc:
            # This process still knows; another one reads this user from the primary while Redis is down.
            log.warning("could not record a write position in Redis (%s)", exc)

    async def _needed(self, user_id: int) -> int | None:
        """The position the replica must have replayed for this user, 0 if none; None: unknown."""
        needed = 0
        mine = self._wrote.get(user_id)
        if mine is not None:
            if mine[1] > time.monotonic():
                needed = mine[0]
            else:
                del self._wrote[user_id]
        try:
            raw: bytes | None = await self.redis.get(wrote_key(user_id))
        except Unavailable:
            return None
        return max(needed, int(raw, 16)) if raw else needed

    async def _replica_for(self, user_id: int) -> bool:
        if self.replica is None or time.monotonic() < self._down_until:
            return False
        needed = await self._needed(user_id)
        if needed is None:
            return False
        if self._replayed >= needed:
            return True
        if time.monotonic() - self._replayed_at >= REPLAY_FRESH:
            if self._reading_replay is None:
                self._reading_replay = asyncio.create_task(self._read_replay())
            await asyncio.shield(self._reading_replay)
        return self._replayed >= needed

    async def _read_replay(self) -> None:
        assert self.replica is not None
        try:
            replayed = await postgres.run(self.replica, _replay_position, timeout=self.timeout)
            if replayed is None and not self._said_not_standby:
                self._said_not_standby = True
                log.warning("the database replica is not a standby (in recovery); recent writers read the primary")
            self._replayed = -1 if replayed is None else replayed
        except Unavailable as exc:
            self._down(exc)
        finally:
            self._replayed_at = time.monotonic()
            self._reading_replay = None

    def _down(self, exc: BaseException) -> None:
        if time.monotonic() >= self._down_until:
            log.warning("the database replica is unavailable (%s); reading from the primary", exc.__cause__ or exc)
        self._down_until = time.monotonic() + DOWN_FOR

    async def run(
        self,
        user_id: int,
        work: Callable[[asyncpg.Connection, *Ts], Awaitable[T]],
        *args: *Ts,
        timeout: float,
        again_on_primary: Callable[[T], bool] | None = None,
    ) -> T:
        """Run a read of the user's on the replica if it may, else (or if that fails) on the primary.
        `again_on_primary`: a replica's result that must be checked on the primary (not found)."""
        if self.replica is not None and await self._replica_for(user_id):
            try:
                result = await postgres.run(self.replica, work, *args, timeout=min(timeout, self.timeout))
            except Unavailable as exc:
                self._down(exc)
            except asyncpg.SerializationError:  # cancelled: a conflict with recovery
                pass
            else:
                if again_on_primary is None or not again_on_primary(result):
                    DB_READS.labels("replica").inc()
                    return result
        DB_READS.labels("primary").inc()
        return await postgres.run(self.primary, work, *args, timeout=timeout)


async def _replay_position(conn: asyncpg.Connection) -> int | None:
    lsn: int | None = await conn.fetchval("SELECT pg_last_wal_replay_lsn()")
    return lsn
