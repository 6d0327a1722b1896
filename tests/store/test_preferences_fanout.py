"""Preferences in the fan-out: muted types, categories and topics keep a user out, set-based."""

from collections.abc import Sequence

import asyncpg

from service.process import Backends
from service.store import preferences
from tests.support.factories import Deliver, JobRecorder, MakeUser, make_event, seed_topic
from tests.support.invariants import counts_agree
from tests.support.queries import inbox_of, rows, subscribe
from workers.delivery import Delivery


async def mute(
    b: Backends, user: str, *, types: Sequence[str] = (), categories: Sequence[str] = (), topics: Sequence[str] = ()
) -> None:
    async with b.pool.acquire() as conn:
        user_id = await conn.fetchval("SELECT id FROM users WHERE external_id = $1", user)
        mutes = preferences.Mutes(types=tuple(types), categories=tuple(categories), topics=tuple(topics))
        await preferences.replace(conn, user_id, mutes)


async def totals(b: Backends) -> dict[str, tuple[int, int]]:
    found = await rows(
        b, "SELECT u.external_id, c.unread, c.total FROM inbox_counts c JOIN users u ON u.id = c.user_id"
    )
    return {r[0]: (r[1], r[2]) for r in found}


async def test_a_muted_type_category_and_topic_each_keep_one_user_out_of_10000(
    backends: Backends, fan: Delivery, jobs: JobRecorder, deliver: Deliver
) -> None:
    async with backends.pool.acquire() as conn:
        await seed_topic(conn, "datastore:101", 10_000)
    await mute(backends, "member-17", types=["scan.completed"])
    await mute(backends, "member-4242", categories=["scans"])
    await mute(backends, "member-9999", topics=["datastore:101"])
    # Mutes of something else keep nobody out.
    await mute(backends, "member-5", types=["other.type"], categories=["other"], topics=["datastore:7"])
    muted = {"member-17", "member-4242", "member-9999"}
    before = await totals(backends)

    outcome = await fan.ingest(
        make_event(type="scan.completed", category="scans", audience={"topics": ["datastore:101"]})
    )
    assert len(jobs.jobs) == 10  # split in chunks of 1,000 (tests' HERALD_FANOUT_CHUNK)
    delivered = len(outcome.deliveries)
    for _, args, _ in jobs.jobs:
        delivered += await fan.run_chunk(*args)
    jobs.jobs.clear()

    assert delivered == 10_000 - 3
    inbox = await inbox_of(backends)
    assert len(inbox) == 10_000 - 3 and set(inbox.values()) == {1}
    assert muted.isdisjoint(inbox)
    after = await totals(backends)
    assert all(after[u] == before[u] == (0, 0) for u in muted)
    assert all(after[u] == (1, 1) for u in after if u not in muted)
    written = await rows(backends, "SELECT sum(rows) FROM fanout_chunks")
    assert written[0][0] == 10_000 - 3
    await counts_agree(backends)

    # The muted users still get an event of another type and category through the same topic,
    # except the one who muted the topic.
    await deliver(type="scan.failed", category="failures", audience={"topics": ["datastore:101"]})
    inbox = await inbox_of(backends)
    assert inbox["member-17"] == 1 and inbox["member-4242"] == 1 and "member-9999" not in inbox
    assert inbox["member-1"] == 2


async def test_a_muted_topic_does_not_hide_an_event_that_reaches_the_user_another_way(
    backends: Backends, deliver: Deliver
) -> None:
    await subscribe(backends, "loud", ["named", "both", "all-only", "only-loud"])
    await subscribe(backends, "quiet", ["both"])
    for user in ["named", "both", "all-only", "only-loud"]:
        await mute(backends, user, topics=["loud"])

    await deliver(audience={"users": ["named"], "topics": ["loud", "quiet"]})
    assert await inbox_of(backends) == {"named": 1, "both": 1}

    await deliver(audience={"topics": ["loud"], "all": True})
    assert await inbox_of(backends) == {"named": 2, "both": 2, "all-only": 1, "only-loud": 1}
    await counts_agree(backends)


async def test_a_muted_type_or_category_wins_over_every_way_in(backends: Backends, deliver: Deliver) -> None:
    await subscribe(backends, "t", ["typed", "categorised", "free"])
    await mute(backends, "typed", types=["scan.completed"])
    await mute(backends, "categorised", categories=["scans"])
    await deliver(
        type="scan.completed",
        category="scans",
        audience={"users": ["typed", "categorised", "free"], "topics": ["t"], "all": True},
    )
    assert await inbox_of(backends) == {"free": 1}
    # An event without a category is not caught by a muted category.
    await deliver(type="scan.completed", audience={"topics": ["t"]})
    assert await inbox_of(backends) == {"free": 2, "categorised": 1}
    await counts_agree(backends)


async def test_the_named_users_statement_honours_muted_types_and_categories(
    backends: Backends, deliver: Deliver, make_user: MakeUser
) -> None:
    for user in ["alice", "bob", "carol", "dave"]:
        await make_user(user=user)
    await mute(backends, "alice", types=["scan.completed"])
    await mute(backends, "bob", categories=["scans"])
    await mute(backends, "carol", topics=["scan.completed", "scans"])  # topics only: no effect on named users
    outcome = await deliver(type="scan.completed", category="scans", users=["alice", "bob", "carol", "dave"])
    assert sorted(d.user_id for d in outcome.deliveries) == sorted(
        r[0] for r in await rows(backends, "SELECT id FROM users WHERE external_id IN ('carol', 'dave')")
    )
    assert await inbox_of(backends) == {"carol": 1, "dave": 1}
    # Taken by the one-statement path: the event was recorded as fanned out without chunks.
    assert await rows(backends, "SELECT event_id FROM fanout_chunks") == []

    # Everyone named muted it: the event is still recorded once, with nobody to deliver to.
    alone = await deliver(type="scan.completed", users=["alice"])
    assert alone.deliveries == []
    assert len(await rows(backends, "SELECT id FROM events WHERE fanout_done_at IS NOT NULL")) == 2
    assert await inbox_of(backends) == {"carol": 1, "dave": 1}
    await counts_agree(backends)


async def test_muting_changes_future_deliveries_only(backends: Backends, deliver: Deliver) -> None:
    await deliver(users=["alice"])
    await mute(backends, "alice", types=["scan.completed"])
    await deliver(users=["alice"])
    assert await inbox_of(backends) == {"alice": 1}
    await mute(backends, "alice")  # unmute: no row is left behind
    assert await rows(backends, "SELECT user_id FROM preferences") == []
    await deliver(users=["alice"])
    assert await inbox_of(backends) == {"alice": 2}
    await counts_agree(backends)


async def test_a_chunk_copied_again_copies_only_its_recipients(backends: Backends, fan: Delivery) -> None:
    """A retried single-chunk event re-copies counts of the audience it was delivered to."""
    await subscribe(backends, "t", ["in", "out"])
    await mute(backends, "out", topics=["t"])
    event = make_event(audience={"users": ["in"], "topics": ["t"]})
    await fan.ingest(event)
    async with backends.pool.acquire() as conn:
        event_id = await conn.fetchval("SELECT id FROM events")
        again = await _chunk_counts(conn, event_id)
    ids = {r[0]: r[1] for r in await rows(backends, "SELECT external_id, id FROM users")}
    assert again == [ids["in"]]


async def _chunk_counts(conn: asyncpg.Connection, event_id: int) -> list[int]:
    from service.store import fanout

    return sorted(c.user_id for c in await fanout.chunk_counts(conn, event_id, 1, fanout.MAX_USER_ID))
