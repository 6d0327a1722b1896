"""Publishing one event to a topic as a producer would, and timing its fan-out: until every chunk
is committed and every recipient's cached count shows the new row."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import NamedTuple

import msgspec

from bench.base import Bench
from bench.seed import TENANT
from service.keys import COUNT_PREFIX, STREAM

# How many recipients in lo..hi do not yet show a cached count of at least the wanted version
# (users up to `split` want version ARGV[4], the others ARGV[5]; of the users up to `split`, every
# ARGV[7]-th from ARGV[6] (0: none) muted an earlier event and so wants one version less). Runs
# inside Redis: checking a chunk's 10,000 keys is one round trip.
_UNSEEN = """
local lo, hi, split = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local high, low = tonumber(ARGV[4]), tonumber(ARGV[5])
local base, every = tonumber(ARGV[6]), tonumber(ARGV[7])
local unseen = 0
for id = lo, hi do
    local v = redis.call('GET', '{prefix}' .. id)
    local want = low
    if id <= split then
        want = high
        if every > 0 and (id - base) % every == 0 then want = high - 1 end
    end
    if not v or tonumber(string.match(v, '^(%d+)')) < want then unseen = unseen + 1 end
end
return unseen
""".replace("{prefix}", COUNT_PREFIX)

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
    lo..hi) and return the seconds until its fan-out is committed (every chunk) and every
    recipient's cached count shows it, and the event's id. It must have written `rows` rows
    (default: one per recipient).

    With `group` (and `actor`) the event belongs to a thread. A recipient who already holds the
    thread gets no new row: their row is updated, takes this event's id, and their counts still
    change version once, so `want` and the row check hold for updates as for new rows."""
    name = name or f"fanout-{topic}"
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
            a, z = max(lo, chunk_lo), min(hi, chunk_hi)
            args = [a, z, want.split, want.high, want.low, want.base, want.every]
            if a > z or await unseen(args=args) == 0:
                checked.add(chunk_lo)
        if done and len(checked) == len(chunks):
            elapsed = time.perf_counter() - started
            written = await b.conn.fetchval("SELECT count(*) FROM inbox WHERE event_id = $1", event_id)
            if written != expected:
                raise RuntimeError(f"fan-out of {name} wrote {written} rows, expected {expected}")
            return Fanned(elapsed, event_id)
    raise RuntimeError(f"fan-out of {name} did not finish within 600 s")
