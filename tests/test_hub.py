"""The API process's one pub/sub connection (service/http/hub.py), against a real Redis."""

import asyncio

from service.counts import Change
from service.http.hub import Hub
from service.keys import Channels
from service.model import Counts
from service.process import Backends


async def test_an_arrival_is_told_ahead_before_any_queue_has_it(backends: Backends) -> None:
    """A broadcast wakes every stream of the process at once: what they all need (the event) is
    started from the hub as each arrival comes in, before the user's queues get it. A change that
    is not an arrival (a count alone, a row coming back) is not told ahead."""
    hub = Hub(backends.redis, backends.auth, backends.counts.watched)
    hub.start()
    told: list[tuple[int | None, int]] = []  # (event, items already queued when told)
    try:
        await asyncio.wait_for(hub.connected.wait(), 5)
        queue: asyncio.Queue[Change | None]
        async with hub.listen(42, lambda change: told.append((change.event, queue.qsize()))) as queue:
            copies = backends.counts.copies
            await copies.copy([Counts(user_id=42, unread=1, total=1, version=1)], [(1001, 77)])
            await copies.copy([Counts(user_id=42, unread=0, total=1, version=2)])
            await copies.copy([Counts(user_id=42, unread=1, total=1, version=3)], [(1001, 77)], again=True)
            got = [await asyncio.wait_for(queue.get(), 5) for _ in range(3)]
        assert [(c.v, c.item, c.event, c.again) for c in got if c is not None] == [
            (1, 1001, 77, False),
            (2, None, None, False),
            (3, 1001, 77, True),
        ]
        assert told == [(77, 0)]
    finally:
        await hub.stop()


async def test_a_malformed_message_or_a_failing_head_start_leaves_the_connection_alone(backends: Backends) -> None:
    """Either used to end the hub's read: the connection was made again, every cached credential
    dropped and every stream told to read its counts afresh. Now the one message is passed over."""
    hub = Hub(backends.redis, backends.auth, backends.counts.watched)
    hub.start()

    def fails(change: Change) -> None:
        raise RuntimeError("a bug in a head start")

    try:
        await asyncio.wait_for(hub.connected.wait(), 5)
        async with hub.listen(43, fails) as queue:
            channel = Channels.of(backends.redis).user(43)
            await backends.redis.publish(channel, b"{not a change")
            copies = backends.counts.copies
            await copies.copy([Counts(user_id=43, unread=1, total=1, version=1)], [(1002, 78)])
            await copies.copy([Counts(user_id=43, unread=2, total=2, version=2)], [(1003, 79)])
            got = [await asyncio.wait_for(queue.get(), 5) for _ in range(2)]
            assert [(c.v, c.item) for c in got if c is not None] == [(1, 1002), (2, 1003)]
            assert queue.empty(), "no RESYNC: the connection was never made again"
    finally:
        await hub.stop()
