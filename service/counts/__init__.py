"""The count engine: unread counts read, cached in Redis, pushed to users' streams, and copied again.

The count protocol (why the badge never drifts)
    PostgreSQL holds the exact counts (`inbox_counts`), changed in the same transaction as the rows
    they count, with a `version` that grows by one on every change. Redis only ever receives a
    copy: after its commit, a writer sends (version, counts) and the SET_COUNTS script keeps
    whichever copy has the higher version. So:
    - writers racing each other, or a reader rebuilding a cold key while a writer commits, cannot
      leave an older copy over a newer one, in any order of arrival;
    - copying is idempotent, so a retried fan-out chunk or a rebuild can always copy again;
    - a process that dies between its commit and its copy leaves, at worst, an older copy for at
      most COUNT_TTL seconds (less if the user changes anything meanwhile); it is then rebuilt from
      PostgreSQL by one primary-key read, never by counting rows. A fan-out chunk that is run
      again after its worker died copies its recipients' counts again for the same reason.
    - a fan-out copies counts only to the users who may hold a copy or an open stream (the watched
      set, watched.py), and only over copies that exist: everyone else's copy stays absent and is
      rebuilt on first read. A reader marks a cold key before its rebuild reads PostgreSQL
      (copies.py, `Copies.mark`), which is what keeps that exact.

Who does what
    `CountEngine` (one per process, `Backends.counts`) is the only way in: `read` answers a badge
    (cache, else one rebuild shared by concurrent polls, else PostgreSQL when Redis is away),
    `cached` only the cache (the fast path), `copy` sends new counts after a commit. A copy that
    fails because Redis is away is never raised: the users are recorded and copied again by the
    loop `Backends.open` starts in every process (API, worker, CLI); a fan-out chunk whose watched
    recipients could not be copied records its id range instead (`copy_range_later`). The Redis
    half, its scripts and the message a stream hears are in copies.py; the watched set in watched.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

import asyncpg
import redis.asyncio as aioredis

from service.backends import postgres
from service.backends.breaker import Breaker
from service.counts.copies import COUNT_TTL, Change, Copies, decode_change, decode_counts, encode_counts
from service.counts.tabs import TabCount, TabFilter, Tabs, count
from service.counts.watched import Watched
from service.errors import Unavailable
from service.metrics import COUNT_READS
from service.model import Counts
from service.store import inbox

__all__ = ["COUNT_TTL", "Change", "CountEngine", "decode_change", "decode_counts", "encode_counts"]

log = logging.getLogger("herald.counts")

# How long a finished rebuild still answers polls that missed Redis while it ran.
REBUILD_KEPT = 1.0
# Users remembered as not copied; past it, every copy is dropped instead (rebuilt on demand).
UNCOPIED_MAX = 100_000
# Fan-out chunks (user id ranges) remembered as not copied; past it, the same.
UNCOPIED_RANGES_MAX = 10_000
# Users per read of PostgreSQL when copying again.
_RECOPY_BATCH = 1000


class Rebuild:
    """A count read from PostgreSQL for polls that found Redis cold.

    Once its copy is in Redis, its result may still answer a poll whose Redis read began before
    that moment (such a poll could not have seen the copy), but not a later one: a later miss
    means the copy was lost again, and the count may have changed since.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.result: asyncio.Future[Counts] = loop.create_future()
        self.filled_at: int | None = None  # the poll ticket current when the copy landed


class CountEngine:
    def __init__(
        self, client: aioredis.Redis, pool: asyncpg.Pool, timeout: float, database: Breaker | None = None
    ) -> None:
        self.copies = Copies(client, database)
        self.watched = Watched(client)
        self._tabs = Tabs(client, pool, timeout)
        self._pool = pool
        self._timeout = timeout
        # Count rebuilds in this process, and a ticket per count read (see Rebuild).
        self._rebuilding: dict[int, Rebuild] = {}
        self._poll_ticket = 0
        # Users whose new counts could not be copied (Redis was away), to copy once it is back;
        # `lost_track` when there were too many to remember.
        self.uncopied: set[int] = set()
        self.uncopied_ranges: set[tuple[int, int]] = set()
        self.lost_track = False
        self._recopying: asyncio.Task[None] | None = None

    # -- reading ------------------------------------------------------------------------------

    async def cached(self, user_id: int) -> Counts | None:
        """The cached counts, or None (batched with every read of the same turn of the loop)."""
        return await self.copies.get(user_id)

    async def read(self, user_id: int) -> Counts:
        """The user's counts: from Redis when cached, else rebuilt once from PostgreSQL.

        If Redis is unreachable, PostgreSQL answers directly: the badge degrades to one primary-key
        read instead of failing."""
        self._poll_ticket += 1
        ticket = self._poll_ticket
        try:
            cached = await self.copies.get(user_id)
        except Unavailable:
            return await self.fallback(user_id)
        if cached is not None:
            COUNT_READS.labels("hit").inc()
            return cached
        running = self._rebuilding.get(user_id)
        if running is not None and (running.filled_at is None or ticket <= running.filled_at):
            COUNT_READS.labels("coalesced").inc()
            return await asyncio.shield(running.result)
        COUNT_READS.labels("rebuild").inc()
        loop = asyncio.get_running_loop()
        rebuild = self._rebuilding[user_id] = Rebuild(loop)
        try:
            try:
                await self.copies.mark(user_id)  # first: see Copies.mark
                marked = True
            except Unavailable:  # Redis just went away: answer from PostgreSQL, cache nothing
                marked = False
            fresh = await self._from_database(user_id)
            try:
                if marked:
                    await self.copies.fill(fresh)
            except Exception as exc:  # the count read stands; the copy is only a cache
                if not isinstance(exc, Unavailable):
                    log.exception("a rebuilt count could not be cached")
            rebuild.filled_at = self._poll_ticket
            rebuild.result.set_result(fresh)
            # Polls that missed Redis just before the copy landed may still be on their way here.
            loop.call_later(REBUILD_KEPT, self._forget_rebuild, user_id, rebuild)
            return fresh
        except BaseException as exc:
            self._forget_rebuild(user_id, rebuild)
            rebuild.result.set_exception(exc)
            rebuild.result.exception()  # retrieved here, so a rebuild nobody else awaited is not logged as lost
            raise

    async def fallback(self, user_id: int) -> Counts:
        """The counts from PostgreSQL alone, for a reader that just found Redis unavailable (asking
        Redis again would only wait for it twice)."""
        COUNT_READS.labels("fallback").inc()
        return await self._from_database(user_id)

    async def tabs(self, user_id: int, tabs: dict[str, TabFilter]) -> dict[str, TabCount]:
        """Each tab's exact numbers, at the version of the counts the badge answers with (see
        tabs.py): the unfiltered tab is the badge."""
        # The cached breakdown is read beside the counts, not after them: one Redis round trip
        # for a poll while nothing changes.
        version, cached = await asyncio.gather(self._version(user_id), self._tabs.cached(user_id))
        breakdown = await self._tabs.breakdown(user_id, version, cached)
        return {name: count(breakdown, tab) for name, tab in tabs.items()}

    async def _version(self, user_id: int) -> int | None:
        """The version of the counts the badge answers with; None while Redis is away."""
        try:
            return (await self.read(user_id)).version
        except Unavailable:
            return None

    def _forget_rebuild(self, user_id: int, rebuild: Rebuild) -> None:
        if self._rebuilding.get(user_id) is rebuild:
            del self._rebuilding[user_id]

    async def _from_database(self, user_id: int) -> Counts:
        return await postgres.run(self._pool, inbox.counts, user_id, timeout=self._timeout)

    # -- copying ------------------------------------------------------------------------------

    async def copy(
        self,
        changes: Sequence[Counts],
        arrivals: Sequence[tuple[int, int]] | None = None,
        *,
        again: bool = False,
        present: bool = False,
    ) -> None:
        """Copy new counts to Redis and the users' streams (see Copies.copy). If Redis is away the
        users are recorded and copied again once it is back (the arrivals' pushes are lost): never
        raised, since the change itself is committed."""
        try:
            await self.copies.copy(changes, arrivals, again=again, present=present)
        except Exception as exc:
            if isinstance(exc, Unavailable):
                log.warning("counts not copied to Redis (%s); copied again once it is back", exc)
            else:  # a bug, not an outage: say so loudly, and still never fail a committed change
                log.exception("counts not copied to Redis; copied again later")
            self._record(c.user_id for c in changes)

    async def fill(self, counts: Counts) -> None:
        """Cache a rebuilt copy unless a newer one is there (raises if Redis fails)."""
        await self.copies.fill(counts)

    async def drop_all(self) -> None:
        await self.copies.drop_all()

    def copy_range_later(self, lo: int, hi: int) -> None:
        """A fan-out chunk's recipients (ids lo..hi) whose counts could not be copied (a backend
        failed after its commit): their watched users are copied by the loop that copies again."""
        self.uncopied_ranges.add((lo, hi))
        if len(self.uncopied_ranges) > UNCOPIED_RANGES_MAX:
            self.uncopied_ranges.clear()
            self.lost_track = True

    def _record(self, users: Iterable[int]) -> None:
        self.uncopied.update(users)
        if len(self.uncopied) > UNCOPIED_MAX:
            self.uncopied.clear()
            self.lost_track = True

    async def recopy(self) -> None:
        """Copy again what could not be copied; raises (keeping the record) if a backend fails."""
        if self.lost_track:
            await self.copies.drop_all()  # too many to name: every copy is rebuilt on demand
            self.lost_track = False
        for lo, hi in list(self.uncopied_ranges):
            async for watched in self.watched.among(lo, hi):
                fresh = await postgres.run(self._pool, inbox.counts_of, watched, timeout=self._timeout)
                await self.copies.copy(fresh, present=True)
            self.uncopied_ranges.discard((lo, hi))
        users = list(self.uncopied)
        for start in range(0, len(users), _RECOPY_BATCH):
            batch = users[start : start + _RECOPY_BATCH]
            await self.copies.copy(await postgres.run(self._pool, inbox.counts_of, batch, timeout=self._timeout))
            self.uncopied.difference_update(batch)
        if users:
            log.warning("copied the counts of %d users again after Redis came back", len(users))

    async def _keep_copies(self, every: float) -> None:
        """Copy again, once Redis answers, the counts whose copy failed while it did not. A Redis
        that kept its data would otherwise serve the older copy until it expires; one that lost it
        rebuilds on demand anyway."""
        while True:
            await asyncio.sleep(every)
            if self.uncopied or self.uncopied_ranges or self.lost_track:
                try:
                    await self.recopy()
                except Unavailable:
                    continue
                except Exception:  # a bug: logged, and the loop goes on (it must outlive anything)
                    log.exception("copying counts again failed")

    def start(self, every: float = 1.0) -> None:
        """Start the loop that copies again (once per process: Backends.open)."""
        if self._recopying is None:
            self._recopying = asyncio.get_running_loop().create_task(self._keep_copies(every), name="herald-recopy")

    async def stop(self) -> None:
        task, self._recopying = self._recopying, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=2)  # bounded: a stop must not wait on a dead backend
