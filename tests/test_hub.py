"""The API process's one pub/sub connection (service/http/hub.py), against a real Redis."""

import asyncio

from service.counts import Change
from service.http.hub import HOLD_MAX, Hub
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


async def test_changes_wait_for_a_head_start_under_way_in_order_and_not_past_hold_max(backends: Backends) -> None:
    """From the second arrival of an event whose read is under way (a broadcast), that arrival and
    every change after it (of any user) are held back, then handed on in the order they came; an
    event's first arrival and an arrival whose event is known are not held; a read that never ends
    holds nothing past HOLD_MAX, and is not waited for a second time."""
    hub = Hub(backends.redis, backends.auth, backends.counts.watched)
    hub.start()
    loop = asyncio.get_running_loop()
    reads: dict[int, asyncio.Future[None]] = {}

    def ahead(change: Change) -> asyncio.Future[None] | None:
        assert change.event is not None
        if change.event == 80:  # known: nothing to wait for
            return None
        return reads.setdefault(change.event, loop.create_future())

    async def arrive(user: int, version: int, item: int | None = None, event: int | None = None) -> None:
        counts = Counts(user_id=user, unread=version, total=version, version=version)
        await copies.copy([counts], None if item is None else [(item, event or 0)])

    copies = backends.counts.copies
    try:
        await asyncio.wait_for(hub.connected.wait(), 5)
        async with hub.listen(44, ahead) as mine, hub.listen(45, ahead) as other:
            await arrive(44, 1, 1004, 80)
            assert (await asyncio.wait_for(mine.get(), 5)) is not None, "a known event is not held"
            await arrive(45, 1, 1005, 81)
            first = await asyncio.wait_for(other.get(), 5)
            assert first is not None and first.item == 1005, "an event's first arrival is not held"
            await arrive(44, 2, 1006, 81)
            await arrive(45, 2)
            await arrive(44, 3)
            await asyncio.sleep(0.1)
            assert mine.empty() and other.empty(), "held from the second arrival while the read is under way"
            reads[81].set_result(None)
            got = [await asyncio.wait_for(mine.get(), 1) for _ in range(2)]
            assert [(c.v, c.item) for c in got if c is not None] == [(2, 1006), (3, None)]
            assert (await asyncio.wait_for(other.get(), 1)) is not None

            await arrive(45, 3, 1007, 82)  # its read never ends
            assert (await asyncio.wait_for(other.get(), 5)) is not None
            started = loop.time()
            await arrive(44, 4, 1008, 82)
            change = await asyncio.wait_for(mine.get(), 5)
            assert change is not None and change.item == 1008
            assert HOLD_MAX * 0.8 <= loop.time() - started < HOLD_MAX + 1.0
            started = loop.time()
            await arrive(45, 4, 1009, 82)
            change = await asyncio.wait_for(other.get(), 5)
            assert change is not None and change.item == 1009
            assert loop.time() - started < HOLD_MAX * 0.5, "not held a second time for the same read"
    finally:
        await hub.stop()
