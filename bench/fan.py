"""Publishing one event to a topic as a producer would, and timing its fan-out: until every chunk
is committed and every recipient's cached count shows the new row.

Some recipients are looking (WATCH_EVERY): their cached counts are made before the event, as their
badge polls would make them, and must show it. The others have no cached copy, and a fan-out makes
none for them (their first read rebuilds it from PostgreSQL): for them the figure waits for nothing
in Redis, and checks afterwards that PostgreSQL holds every recipient's new counts."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import NamedTuple

import msgspec

from bench.base import Bench
from bench.seed import TENANT
from service.counts.copies import Copies
from service.keys import COUNT_PREFIX, STREAM
from service.model import Counts

# One recipient in this many has a cached count when the event is published (spread over the id
# range, so every chunk has some): users who polled their badge within the last minute.
WATCH_EVERY = 20

# How many recipients lo, lo + ARGV[8], … up to hi (the watched ones: no one else holds a copy)
# hold a cached count older than the wanted version (users up to `split` want version ARGV[4], the
# others ARGV[5]; of the users up to `split`, every ARGV[7]-th from ARGV[6] (0: none) muted an
# earlier event and so wants one version less), and how many hold the wanted one. A missing copy
# (or a reader's mark) is neither: it is rebuilt from PostgreSQL when read. Runs inside Redis: one
# round trip per chunk, and only the chunk's watched keys, so that checking while the fan-out runs
# holds Redis (which the fan-out's copies need) as little as it can.
_UNSEEN = """
local lo, hi, split = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local high, low = tonumber(ARGV[4]), tonumber(ARGV[5])
local base, every, step = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local unseen, shown = 0, 0
for id = lo, hi, step do
    local v = redis.call('GET', '{prefix}' .. id)
    local held = v and tonumber(string.match(v, '^(%d+):'))
    if held then
        local want = low
        if id <= split then
            want = high
            if every > 0 and (id - base) % every == 0 then want = high - 1 end
        end
        if held < want then unseen = unseen + 1 else shown = shown + 1 end
    end
end
return {unseen, shown}
""".replace("{prefix}", COUNT_PREFIX)

# Recipients in $1..$2 whose counts row is not at the wanted version (as _UNSEEN): must be none.
_VERSIONS_OFF = """
SELECT count(*) FROM inbox_counts
WHERE user_id BETWEEN $1 AND $2
  AND version <> CASE WHEN user_id > $3 THEN $5
                      WHEN $7 > 0 AND (user_id - $6) % $7 = 0 THEN $4 - 1 ELSE $4 END
"""
_COUNTS_OF = "SELECT user_id, unread, total, version, unseen FROM inbox_counts WHERE user_id = ANY ($1::bigint[])"

_EVENT_ID = "SELECT e.id FROM events e JOIN tenants t ON t.id = e.tenant_id WHERE t.name = $1 AND e.external_id = $2"


class Want(msgspec.Struct, frozen=True, kw_only=True):
    """The count version each recipient's cached copy must reach once the event is fanned out:
    `high` for user ids up to `split`, `low` above it. Users base, base + every, … up to `split`
    (every 0: none) muted an earlier event, got no row of it, and so want one version less."""

    split: int
    high: int
    low: int
    base: int = 0
    every: int = 0


class Fanned(NamedTuple):
    seconds: float
    event_id: int
    watched: int  # recipients with a cached count before the event
    shown: int  # cached counts showing the event when the fan-out was done


async def watch(b: Bench, lo: int, hi: int, every: int = WATCH_EVERY) -> int:
    """Cache the counts of users lo, lo + every, … up to hi, as a badge poll that found them cold
    would (service/counts/__init__.py, CountEngine.read: mark, read PostgreSQL, fill), pipelined.
    Returns how many."""
    users = list(range(lo, hi + 1, every))
    copies = Copies(b.redis)
    for start in range(0, len(users), 10_000):
        batch = users[start : start + 10_000]
        async with b.redis.pipeline(transaction=False) as pipe:
            for user in batch:
                await copies.mark(user, client=pipe)
            await pipe.execute()
        rows = await b.conn.fetch(_COUNTS_OF, batch)
        async with b.redis.pipeline(transaction=False) as pipe:
            for r in rows:
                await copies.fill(Counts(user_id=r[0], unread=r[1], total=r[2], version=r[3], unseen=r[4]), client=pipe)
            await pipe.execute()
    return len(users)


async def fan_event(
    b: Bench,
    topic: str,
    lo: int,
    hi: int,
    want: Want,
    *,
    name: str = "",
    kind: str = "bench.fanout",
    rows: int | None = None,
    expires_at: datetime | None = None,
    group: str | None = None,
    actor: str | None = None,
) -> Fanned:
    """XADD one event `name` (default fanout-<topic>) of type `kind` for `topic` (recipients
    lo..hi), one in WATCH_EVERY of them holding a cached count (`watch`), and return the seconds
    until its fan-out is committed (every chunk) and every recipient's cached count shows it, and
    the event's id. It must have written `rows` rows (default: one per recipient), and every
    recipient's counts row must be at the wanted version.

    With `group` (and `actor`) the event belongs to a thread. A recipient who already holds the
    thread gets no new row: their row is updated, takes this event's id, and their counts still
    change version once, so `want` and the row check hold for updates as for new rows."""
    name = name or f"fanout-{topic}"
    watched = await watch(b, lo, hi)
    expected = hi - lo + 1 if rows is None else rows
    unseen = b.redis.register_script(_UNSEEN)
    event = msgspec.json.encode(
        {
            "id": name,
            "type": kind,
            "tenant": TENANT,
            "audience": {"topics": [topic]},
            "title": "Maintenance tonight",
            "message": "The platform is read-only from 02:00 to 03:00 UTC.",
            "trigger_type": "Manual",
            "expires_at": expires_at,
        }
        | ({} if group is None else {"group": group})
        | ({} if actor is None else {"actor": actor})
    )
    checked: set[int] = set()
    shown = 0
    started = time.perf_counter()
    await b.redis.xadd(STREAM, {"event": event})
    event_id = None
    deadline = started + 600
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.02)
        if event_id is None:
            event_id = await b.conn.fetchval(_EVENT_ID, TENANT, name)
            continue
        done = await b.conn.fetchval("SELECT fanout_done_at IS NOT NULL FROM events WHERE id = $1", event_id)
        chunks = await b.conn.fetch(
            "SELECT lo, hi FROM fanout_chunks WHERE event_id = $1 AND done_at IS NOT NULL", event_id
        )
        for chunk_lo, chunk_hi in chunks:
            if chunk_lo in checked:
                continue
            # The chunk's first watched recipient (`watch` caches lo, lo + WATCH_EVERY, …).
            a, z = lo + -(-(max(lo, chunk_lo) - lo) // WATCH_EVERY) * WATCH_EVERY, min(hi, chunk_hi)
            args = [a, z, want.split, want.high, want.low, want.base, want.every, WATCH_EVERY]
            if a > z:
                checked.add(chunk_lo)
                continue
            behind, up_to_date = await unseen(args=args)
            if behind == 0:
                checked.add(chunk_lo)
                shown += up_to_date
        if done and len(checked) == len(chunks):
            elapsed = time.perf_counter() - started
            written = await b.conn.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event_id)
            if written != expected:
                raise RuntimeError(f"fan-out of {name} wrote {written} rows, expected {expected}")
            off = await b.conn.fetchval(_VERSIONS_OFF, lo, hi, want.split, want.high, want.low, want.base, want.every)
            if off:
                raise RuntimeError(f"fan-out of {name}: {off} recipients' counts are not at the wanted version")
            return Fanned(elapsed, event_id, watched, shown)
    raise RuntimeError(f"fan-out of {name} did not finish within 600 s")
