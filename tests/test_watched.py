"""A fan-out copies counts only to watched users (service/counts/watched.py), and the badge and the
streams stay exact: cached copies and open streams hear of every row, nobody else gets a copy, a
rebuild racing a fan-out never caches an older count, and the set forgets whoever stops looking."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from service import ids
from service.counts import decode_counts
from service.counts.copies import REBUILDING
from service.keys import WATCHED, count_key, listening_key
from service.model import Counts
from service.process import Backends
from service.settings import Settings
from service.store import fanout
from tests.support.factories import Deliver, JobRecorder, MakeUser, make_event, seed_topic
from tests.support.http import listening
from tests.support.invariants import counts_agree
from tests.support.queries import rows, subscribe
from tests.support.sse import open_stream
from workers.delivery import Delivery
from workers.housekeeping import prune_watched

TOPIC = "datastore:101"


async def member_ids(b: Backends) -> list[int]:
    return [r[0] for r in await rows(b, "SELECT id FROM users WHERE external_id LIKE 'member-%' ORDER BY id")]


async def copy_of(b: Backends, user_id: int) -> tuple[int, int] | None:
    """(version, unread) of the user's cached copy, or None."""
    raw = await b.redis.get(count_key(user_id))
    counts = None if raw is None else decode_counts(user_id, raw)
    return None if counts is None else (counts.version, counts.unread)


async def fan_out(fan: Delivery, jobs: JobRecorder, **fields: object) -> int:
    """Ingest a topic event and run its chunk jobs, as the workers would; the rows written."""
    outcome = await fan.ingest(make_event(audience={"topics": [TOPIC]}, **fields))
    written = len(outcome.deliveries)
    while jobs.jobs:
        _, args, _ = jobs.jobs.pop(0)
        written += await fan.run_chunk(*args)
    return written


async def test_a_fan_out_copies_counts_to_watched_users_only(
    backends: Backends, fan: Delivery, jobs: JobRecorder
) -> None:
    async with backends.pool.acquire() as conn:
        await seed_topic(conn, TOPIC, 2500)  # three chunks of the tests' 1,000
    users = await member_ids(backends)
    polled = users[::100]  # these polled their badge: each read cached a copy
    for user in polled:
        assert (await backends.counts.read(user)).unread == 0

    assert await fan_out(fan, jobs) == 2500
    assert [await copy_of(backends, u) for u in polled] == [(1, 1)] * len(polled)
    cold = [u for u in users if u not in polled]
    assert await backends.redis.exists(*[count_key(u) for u in cold]) == 0  # no copy made for them
    await counts_agree(backends)

    # A cold user's first read rebuilds the exact count, and caches it from then on.
    assert (await backends.counts.read(cold[7])).unread == 1
    assert await copy_of(backends, cold[7]) == (1, 1)
    assert await fan_out(fan, jobs, id="second") == 2500
    assert await copy_of(backends, cold[7]) == (2, 2)
    await counts_agree(backends)


async def test_a_rebuild_racing_a_fan_out_never_caches_an_older_count(
    backends: Backends, fan: Delivery, jobs: JobRecorder
) -> None:
    async with backends.pool.acquire() as conn:
        await seed_topic(conn, TOPIC, 10)
    user = (await member_ids(backends))[0]
    copies = backends.counts.copies
    # A reader found the key cold: it marks it, then reads PostgreSQL (before the event commits)...
    await copies.mark(user)
    assert await backends.redis.get(count_key(user)) == REBUILDING
    assert await backends.counts.cached(user) is None  # a mark is no copy
    stale = (await rows(backends, "SELECT unread, total, version, unseen FROM inbox_counts WHERE user_id = $1", user))[
        0
    ]
    # ...the fan-out commits and copies over the mark...
    await fan_out(fan, jobs)
    assert await copy_of(backends, user) == (1, 1)
    # ...and the reader's older rebuild, landing last, is refused.
    older = Counts(user_id=user, unread=stale[0], total=stale[1], version=stale[2], unseen=stale[3])
    await copies.fill(older)
    assert await copy_of(backends, user) == (1, 1)

    # A rebuild whose mark is gone (expired, or lost with Redis) caches nothing: a writer may have
    # passed the user by meanwhile, so its read may be older than the database.
    other = (await member_ids(backends))[1]
    await copies.fill(Counts(user_id=other, unread=0, total=0, version=0, unseen=0))
    assert await backends.redis.get(count_key(other)) is None
    await counts_agree(backends)


@pytest.fixture
async def base(settings: Settings, clean: None) -> AsyncIterator[str]:
    async with listening(msgspec.structs.replace(settings, stream_heartbeat=0.3)) as url:
        yield url


async def test_an_open_stream_hears_a_topic_fan_out_without_a_cached_copy(
    base: str, backends: Backends, make_user: MakeUser, deliver: Deliver
) -> None:
    alice = await make_user(user="alice")
    await subscribe(backends, TOPIC, ["alice", "bob"])
    async with open_stream(base, alice.headers) as stream:
        assert (await stream.next_event()).json()["unread_count"] == 0
        assert await backends.redis.exists(listening_key(alice.user_id)) == 1
        # Her copy expires while the stream stays open, and the set is pruned: the stream alone
        # keeps her watched.
        await backends.redis.delete(count_key(alice.user_id))
        await prune_watched(backends)
        assert await backends.redis.zrange(WATCHED, 0, -1) == [str(alice.user_id).encode()]
        outcome = await deliver(audience={"topics": [TOPIC]}, message="to the topic")
        assert outcome.deliveries == []  # a plain chunk returns no row per recipient
        note = await stream.next_event()
        assert (note.event, note.json()["message"]) == ("notification", "to the topic")
        row = (await rows(backends, "SELECT id FROM inbox WHERE user_id = $1", alice.user_id))[0][0]
        assert note.json()["id"] == ids.to_scalebox(row)
        assert (await stream.next_event()).json() == {"unread_count": 1, "unseen_count": 1}
    bob = (await rows(backends, "SELECT id FROM users WHERE external_id = 'bob'"))[0][0]
    assert await backends.redis.get(count_key(bob)) is None  # nobody looked: nothing cached
    async with httpx.AsyncClient(base_url=base, headers=alice.headers) as http:
        assert (await http.get("/v1/unread-count")).json()["unread_count"] == 1
    await counts_agree(backends)


async def test_the_set_forgets_users_who_hold_neither_a_copy_nor_a_stream(backends: Backends) -> None:
    watched = backends.counts.watched
    await backends.redis.zadd(WATCHED, {str(u): u for u in range(1, 2501)})
    await backends.redis.set(count_key(7), b"3:1:1:1")
    await backends.redis.set(count_key(8), REBUILDING)  # a reader mid-rebuild
    await watched.listening([2000])
    gone = await prune_watched(backends)
    assert gone == 2497
    assert await backends.redis.zrange(WATCHED, 0, -1) == [b"7", b"8", b"2000"]
    assert [u async for u in watched.among(1, 10)] == [[7, 8]]
    assert [u async for u in watched.among(9, 10**18)] == [[2000]]


async def test_a_chunk_whose_copy_was_lost_is_copied_again_to_its_watched_users(
    backends: Backends, fan: Delivery, jobs: JobRecorder
) -> None:
    async with backends.pool.acquire() as conn:
        await seed_topic(conn, TOPIC, 1500)
    users = await member_ids(backends)
    for user in users[:3]:
        await backends.counts.read(user)
    await backends.counts.stop()  # no loop copying in the background: the test drains it
    await fan.ingest(make_event(audience={"topics": [TOPIC]}))
    chunks = [args for _, args, _ in jobs.jobs]
    # The chunks commit, and their copies are lost (Redis failed, or the worker died, meanwhile).
    async with backends.pool.acquire() as conn:
        for event_id, lo, hi in chunks:
            async with conn.transaction():
                await fanout.run_chunk(conn, event_id, lo, hi)
    assert await copy_of(backends, users[0]) == (0, 0)

    # A failed announcement records each chunk's range; the loop copies their watched users again.
    for _, lo, hi in chunks:
        backends.counts.copy_range_later(lo, hi)
    await backends.counts.recopy()
    assert not backends.counts.uncopied_ranges
    assert [await copy_of(backends, u) for u in users[:3]] == [(1, 1)] * 3
    assert await backends.redis.get(count_key(users[3])) is None  # still nobody else's

    # A chunk job run again (its worker died after the commit) writes nothing and copies again.
    await backends.redis.set(count_key(users[1]), b"0:0:0:0")
    for args in chunks:
        assert await fan.run_chunk(*args) == 0
    assert await copy_of(backends, users[1]) == (1, 1)
    assert await backends.redis.get(count_key(users[3])) is None
    await counts_agree(backends)
