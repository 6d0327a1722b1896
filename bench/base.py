"""What every figure shares: the sizes of a run and the Bench each figure is handed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import redis.asyncio as aioredis

from bench.django_peer import Peer
from bench.env import Processes
from bench.seed import Seeder, say


class Sizes(msgspec.Struct, frozen=True, kw_only=True):
    fanout: int = 100_000  # recipients of the fan-out figure (and of its muted twin)
    fanout_big: int = 1_000_000  # recipients of the large fan-out (peak RSS)
    raw: int = 100_000  # rows of the raw INSERT … SELECT
    events: int = 1_000_000  # seeded events (the 1M-unread user needs one each)
    badge_small: int = 1_000
    badge_big: int = 1_000_000
    list_rows: int = 100_000  # rows of the list user
    filler_users: int = 2_450  # other users, so the inbox has at least 5,000,000 rows
    filler_rows: int = 2_000
    deep: int = 25_000  # depth (rows skipped) of the deep page
    readall: int = 100_000  # unread rows of the mark-all-read user
    visible_rate: int = 500  # events/s of the publish → visible figure
    visible_seconds: float = 10
    visible_users: int = 100
    snooze_users: int = 1_000  # users of the snooze figure, each with snooze_rows snoozed rows
    snooze_rows: int = 10
    expiry: int = 100_000  # recipients of the expiring event
    streams: int = 10_000  # open GET /v1/stream, one user each
    erase: int = 1_000_000  # notifications of the user erased (at most `events`)
    tabs_rows: int = 10_000  # notifications of the tab-counts user
    tabs_spread: int = 50  # users who got the same events, so the tab user's rows lie among theirs
    bulk: int = 100_000  # unread notifications of each bulk-read user
    small: int = 100_000  # small events (1–10 named users each) drained from the stream, per run
    small_users: int = 10_000  # the users they name
    small_seconds: float = 10  # publish → visible of small events, after a second of warm-up
    wrk_seconds: float = 10  # each throughput run
    p50_seconds: float = 5  # each single-connection latency run


QUICK = Sizes(
    fanout=10_000,
    fanout_big=50_000,
    raw=10_000,
    events=20_000,
    badge_small=1_000,
    badge_big=20_000,
    list_rows=10_000,
    filler_users=40,
    filler_rows=2_000,
    deep=2_500,
    readall=10_000,
    visible_seconds=3,
    visible_users=20,
    snooze_users=500,  # 5,000 rows: still several of the sweep's batches
    expiry=10_000,
    streams=2_000,
    erase=20_000,
    tabs_spread=5,
    bulk=10_000,
    small=10_000,
    small_users=2_000,
    small_seconds=3,
    wrk_seconds=3,
    p50_seconds=2,
)


def k(n: int) -> str:
    """1000 -> 1k, 1000000 -> 1M."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"


def load_average() -> str:
    """The machine's 1-minute load average, for a figure's note: on a shared machine, what else ran
    beside it explains much of a figure's spread."""
    return f"load average {os.getloadavg()[0]:.1f}"


class Bench:
    """What the figures share: the servers' connections, the processes, the seed, the sizes, the
    Django peer (started on first use)."""

    def __init__(self, conn: asyncpg.Connection, redis: aioredis.Redis, procs: Processes, sizes: Sizes) -> None:
        self.conn = conn
        self.redis = redis
        self.procs = procs
        self.sizes = sizes
        self.seeder = Seeder(conn)
        self.notes: list[str] = []
        self.peer = Peer(procs, self.note)
        self._inbox_ready = False

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  ! {text}", flush=True)

    async def prepare_inbox(self) -> None:
        """The read side's data set: every badge, list and read-all user, among other users'
        rows so that the inbox holds at least 5,000,000 rows (full size). Seeded once per run."""
        if self._inbox_ready:
            return
        s, seed = self.sizes, self.seeder
        say("seeding the inbox")
        await seed.ensure_events(max(s.events, s.badge_big, s.list_rows, s.readall, s.filler_rows))
        for name, n in (("badge-small", s.badge_small), ("badge-big", s.badge_big), ("readall", s.readall)):
            lo, hi = await seed.user_group(name, 1)
            await seed.rows(lo, hi, n, spread=False)
        lo, hi = await seed.user_group("list", 1)
        await seed.rows(lo, hi, s.list_rows, read_every=2, spread=False)
        lo, hi = await seed.user_group("other", s.filler_users)
        await seed.rows(lo, hi, s.filler_rows, read_every=2)
        await seed.settle()
        total = await self.conn.fetchval("SELECT count(*) FROM inbox")
        users = await self.conn.fetchval("SELECT count(DISTINCT user_id) FROM inbox")
        say(f"inbox: {total:,} rows of {users:,} users")
        self._inbox_ready = True

    async def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.seeder.token(user)}"}


@contextlib.asynccontextmanager
async def raw_tables(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """Empty copies of inbox and inbox_counts with their indexes (bench_raw_inbox, bench_raw_counts)
    for a floor statement, dropped after."""
    await conn.execute(
        "DROP TABLE IF EXISTS bench_raw_inbox, bench_raw_counts;"
        " CREATE TABLE bench_raw_inbox (LIKE inbox INCLUDING ALL);"
        " CREATE TABLE bench_raw_counts (LIKE inbox_counts INCLUDING ALL)"
    )
    try:
        yield
    finally:
        await conn.execute("DROP TABLE bench_raw_inbox, bench_raw_counts")
