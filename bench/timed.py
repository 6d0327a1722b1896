"""The sweep's figures: snoozed rows coming back and expired rows going, each timed from the moment
the rows were due until every user concerned has a cached count that shows it (the copy in Redis is
what a badge poll answers from), then checked against PostgreSQL.

The sweep runs inside every `herald worker` (workers/sweep.py): once a second, in batches, each
batch one transaction that changes the rows and their users' counts and then copies the counts.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from bench.base import Bench, k
from bench.env import WORKERS
from bench.fan import Want, fan_event
from bench.report import Row
from bench.seed import say
from service.keys import COUNT_PREFIX
from workers import sweep

POLL = 0.02  # seconds between two looks at the counts: the resolution of the expiry figure
# The snooze figure looks more often: its sweep rate spans only a few batches of a few ms each. One
# look at 1,000 users' copies is one script of well under a millisecond in Redis.
SNOOZE_POLL = 0.005
GIVE_UP = 60.0  # seconds after the rows' time; the count copies live 60 s, so waiting longer is moot
SNOOZE_LEAD = 3.0  # seconds from seeding the snoozed rows to their time; seeding takes well under one
_KEYS = 10_000  # count copies checked by one script call, as the fan-out figure checks a chunk

# Of the users in lo..hi: how many do not yet have a cached count ("version:unread:total:unseen")
# showing ARGV[3] unread (a missing copy shows nothing), and the unread their copies show, summed.
# Runs inside Redis: one round trip per call.
_SHOWN = """
local lo, hi, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local waiting, shown = 0, 0
for id = lo, hi do
    local v = redis.call('GET', '{prefix}' .. id)
    local unread = v and tonumber(string.match(v, '^%d+:(%d+):'))
    if unread then shown = shown + unread end
    if unread ~= want then waiting = waiting + 1 end
end
return {waiting, shown}
""".replace("{prefix}", COUNT_PREFIX)

# Users in $1..$2 whose counts are not $3 unread (and as many shown and unseen): must be none.
_COUNTS_OFF = """
SELECT count(*) FROM inbox_counts
WHERE user_id BETWEEN $1 AND $2 AND (unread, total, unseen) IS DISTINCT FROM ($3, $3, $3)
"""
_SNOOZED_LEFT = "SELECT count(*) FROM inbox WHERE user_id BETWEEN $1 AND $2 AND snoozed_until IS NOT NULL"
# Found through the small partial index of rows that expire, not the 5,000,000-row table.
_EXPIRING_LEFT = "SELECT EXISTS (SELECT 1 FROM inbox WHERE expires_at IS NOT NULL AND event_id = $1)"


async def _shown(b: Bench, lo: int, hi: int, unread: int) -> tuple[int, int]:
    """How many users in lo..hi do not yet have a cached count showing `unread` unread, and the
    unread their cached counts show in all."""
    script = b.redis.register_script(_SHOWN)
    waiting = shown = 0
    for a in range(lo, hi + 1, _KEYS):
        w, s = await script(args=[a, min(hi, a + _KEYS - 1), unread])
        waiting, shown = waiting + w, shown + s
    return waiting, shown


def _note_sweep(b: Bench) -> None:
    """What both figures measure, said once however many of them run."""
    text = (
        f"snooze and expiry: the sweep of each of the {WORKERS} `herald worker` processes, every {sweep.EVERY:g} s "
        f"in batches of {sweep.WAKE_BATCH:,} wakes / {sweep.EXPIRE_BATCH:,} deletions; timed from the rows' time "
        f"until every user's Redis count copy shows the change (looked at every {SNOOZE_POLL * 1000:.0f} ms for "
        f"snoozes, {POLL * 1000:.0f} ms for expiry), "
        "then checked against inbox and inbox_counts"
    )
    if text not in b.notes:
        b.note(text)


async def snooze(b: Bench) -> list[Row]:
    """Rows snoozed until one moment, all of them; seconds from that moment until every user's
    badge count has them back, and the sweep's rate from the first row back to the last."""
    s, seed = b.sizes, b.seeder
    b.procs.workers()
    _note_sweep(b)
    lo, hi = await seed.user_group("snooze", s.snooze_users)
    rows = s.snooze_users * s.snooze_rows
    due = datetime.now(UTC) + timedelta(seconds=SNOOZE_LEAD)
    await seed.snoozed(lo, hi, s.snooze_rows, due)
    if time.time() > due.timestamp() - SNOOZE_POLL:
        raise RuntimeError(f"seeding {rows:,} snoozed rows took more than {SNOOZE_LEAD:g} s")
    say(f"{rows:,} rows of {s.snooze_users:,} users snoozed until {SNOOZE_LEAD:g} s from now")
    first = last = 0.0
    while not last:
        await asyncio.sleep(SNOOZE_POLL)
        now = time.time()
        waiting, back = await _shown(b, lo, hi, s.snooze_rows)
        if back and not first:
            first = now
        if waiting == 0:
            last = now
        elif now > due.timestamp() + GIVE_UP:
            raise RuntimeError(f"{waiting} of {s.snooze_users} users still miss snoozed rows {GIVE_UP:g} s after")
    if first < due.timestamp():
        raise RuntimeError("snoozed rows came back before their time")
    elapsed = last - due.timestamp()
    # When everything came back between two looks, the span is below the resolution: the rate is
    # then a lower bound.
    rate = rows / max(last - first, SNOOZE_POLL)
    left = await b.conn.fetchval(_SNOOZED_LEFT, lo, hi)
    off = await b.conn.fetchval(_COUNTS_OFF, lo, hi, s.snooze_rows)
    if left or off:
        b.note(f"snooze: {left} rows still snoozed, {off} users' inbox_counts not {s.snooze_rows} unread")
    say(f"snooze: {rows:,} rows back {elapsed:.2f} s after their time; {rate:,.0f} rows/s from the first to the last")
    return [
        Row(
            figure=f"snooze: {k(rows)} rows back, last one after its time (s)",
            herald=elapsed,
            limit=None,
            ratio=None,
            target="< 2 s",
            passed=elapsed < 2 and not left and not off,
        ),
        Row(
            figure=f"snooze: {k(rows)} rows back, first to last (rows/s)",
            herald=rate,
            limit=None,
            ratio=None,
            target="reference only",
            passed=True,
        ),
    ]


async def expiry(b: Bench) -> list[Row]:
    """One event to a topic's subscribers, expiring a few seconds later; seconds from its expiry
    until none of its rows is left and every recipient's badge count shows it gone."""
    s, seed = b.sizes, b.seeder
    lo, hi = await seed.user_group("expiry", s.expiry)
    await seed.subscribe("expiry", lo, hi)
    await seed.settle()
    b.procs.workers()
    _note_sweep(b)
    # Enough for the fan-out to finish before the expiry (a chunk written after it writes nothing):
    # a fan-out at 20,000 rows/s, under half the fan-out figure's rate, plus 3 s.
    lead = 3 + s.expiry / 20_000
    due = datetime.now(UTC) + timedelta(seconds=lead)
    try:
        fanned = await asyncio.wait_for(
            fan_event(b, "expiry", lo, hi, Want(split=hi, high=1, low=1), expires_at=due), lead
        )
    except TimeoutError:
        raise RuntimeError(f"the fan-out to {s.expiry:,} did not finish within {lead:g} s, before the expiry") from None
    say(f"fan-out to {s.expiry:,} in {fanned.seconds:.2f} s; they expire {due.timestamp() - time.time():.1f} s later")
    gone = done = 0.0
    while not done:
        await asyncio.sleep(POLL)
        now = time.time()
        if not gone and not await b.conn.fetchval(_EXPIRING_LEFT, fanned.event_id):
            gone = now
        if gone and (await _shown(b, lo, hi, 0))[0] == 0:
            done = now
        elif now > due.timestamp() + GIVE_UP:
            raise RuntimeError(f"rows of the expired event still there or counted {GIVE_UP:g} s after")
    if gone < due.timestamp():
        raise RuntimeError("the expiring rows went before their time")
    elapsed = done - due.timestamp()
    off = await b.conn.fetchval(_COUNTS_OFF, lo, hi, 0)
    if off:
        b.note(f"expiry: {off} users' inbox_counts still count the expired row")
    say(f"expiry: rows gone {gone - due.timestamp():.2f} s after their time, every count copy {elapsed:.2f} s after")
    return [
        Row(
            figure=f"expiry: {k(s.expiry)} rows gone, after their time (s)",
            herald=elapsed,
            limit=None,
            ratio=None,
            target="< 5 s",
            passed=elapsed < 5 and not off,
        ),
    ]
