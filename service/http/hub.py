"""One Redis pub/sub connection per API process, fanned out to whoever listens in that process.

It always listens on `herald:auth` (a user whose cached credentials must be dropped) and, for each
user with at least one open stream in this process, on `herald:user:{id}` (the names of the
client's database: service/keys.py, Channels). Listeners get a queue of `Change`s; `RESYNC` tells
them messages may have been missed (the connection dropped) so they should read the counts
afresh, and `None` that the stream must end (the process is shutting down, or the user is being
erased).

If the connection drops, the whole credential cache is dropped too (invalidations may have been
missed), and every subscription is made again once Redis is back.

From the second arrival of an event whose read is still under way (a broadcast, not one
recipient's event), every message is held back until that read is done or HOLD_MAX has passed
(once per event): the read's own reply would otherwise wait behind the thousands of streams a
broadcast wakes at once (each of which then waits for it anyway), and the streams then render the
event from memory one after another.

A fan-out pushes only to watched users (service/counts/watched.py): the hub keeps every user with a
stream here in that set, from before it subscribes to their channel until LISTENING_TTL after their
last stream here ends, refreshing them every LISTENING_REFRESH seconds and again on every connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from service.auth import Authenticator
from service.counts import Change, decode_change
from service.counts.watched import LISTENING_REFRESH, Watched
from service.errors import Unavailable
from service.http.heap import Heap
from service.keys import CLOSE_STREAMS, Channels

log = logging.getLogger("herald.hub")

RESYNC = Change(v=-1, unread=-1, total=-1)
QUEUE_SIZE = 256
# The longest the hub holds changes back for a head start (seconds): past it, the streams get them
# and wait for the read themselves.
HOLD_MAX = 0.5
# Messages taken from pub/sub in a row before other tasks get a turn.
YIELD_EVERY = 256
# Events remembered as seen here (for `_worth_holding`).
EVENTS_REMEMBERED = 1024

# Told of an arrival before the user's queues get it; returns the read the streams will need while
# it is still under way (the hub holds changes back until it is done), or None.
Ahead = Callable[[Change], "asyncio.Future[Any] | None"]


class Hub:
    def __init__(self, client: aioredis.Redis, auth: Authenticator, watched: Watched, heap: Heap | None = None) -> None:
        self._redis = client
        self._heap = heap  # the process's garbage collector, tended between messages (heap.py)
        self._channels = Channels.of(client)
        self._auth = auth
        self._watched = watched
        self._refresh_at = 0.0  # when every listened user is next kept watched (monotonic)
        self._task: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        self._stopping = False
        self._listeners: dict[int, set[asyncio.Queue[Change | None]]] = {}
        self._ahead: dict[int, Ahead] = {}  # per user: told of an arrival before the queues
        # Changes held back while a head start is under way (`_hold`), in the order they came.
        self._held: list[tuple[int, Change | None]] | None = None
        self._holding: asyncio.Future[Any] | None = None
        self._hold_timer: asyncio.TimerHandle | None = None
        self._hold_started = False
        # Events whose arrivals came here (True: changes were held back for its read once already).
        self._events_seen: dict[int, bool] = {}
        self.connected = asyncio.Event()
        self.draining = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="herald-hub")

    def end_streams(self) -> None:
        """End every open stream now, and any opened from now on: the process is shutting down.
        Its server waits for open connections before shutting the app down, so streams (which
        never finish by themselves) must be ended first."""
        self.draining = True
        self._broadcast(None)

    async def stop(self) -> None:
        """End every stream, then close the connection under the reader rather than cancel it:
        redis-py's read with a timeout can swallow a cancellation and keep waiting."""
        self._stopping = True
        self.end_streams()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=2)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(self._task, 2)

    @contextlib.asynccontextmanager
    async def listen(self, user_id: int, ahead: Ahead | None = None) -> AsyncIterator[asyncio.Queue[Change | None]]:
        """A queue of the user's changes for as long as the block runs. `ahead`, if given, is called
        with each arrival (a change with a row and its event) before any queue of the user gets it:
        a broadcast wakes every stream of the process at once, and what all of them will need (the
        event, service/inbox.py read_ahead) is best started before they run, and finished before
        they wake (the module's docstring)."""
        queue: asyncio.Queue[Change | None] = asyncio.Queue(QUEUE_SIZE)
        if self.draining:
            queue.put_nowait(None)
        queues = self._listeners.setdefault(user_id, set())
        queues.add(queue)
        if self._heap is not None:
            self._heap.stream_opened()
        try:  # whatever happens from here (a client gone while subscribing too), the queue is removed
            if ahead is not None:
                self._ahead[user_id] = ahead
            if len(queues) == 1 and self._pubsub is not None and self.connected.is_set():
                try:
                    await self._watched.listening([user_id])  # before subscribing: see watched.py
                    await self._pubsub.subscribe(self._channels.user(user_id))
                except Unavailable:
                    self._refresh_at = 0.0  # watched again with everyone at the reader's next turn
                    _offer(queue, RESYNC)  # the reader will reconnect and subscribe it then
            yield queue
        finally:
            if self._heap is not None:
                self._heap.stream_ended()
            queues.discard(queue)
            if not queues:
                del self._listeners[user_id]
                self._ahead.pop(user_id, None)
                if self._pubsub is not None and self.connected.is_set() and not self._stopping:
                    with contextlib.suppress(Unavailable):
                        await self._pubsub.unsubscribe(self._channels.user(user_id))

    @property
    def listening(self) -> int:
        return sum(len(q) for q in self._listeners.values())

    async def _run(self) -> None:
        delay = 0.1
        reconnecting = False
        while not self._stopping:
            self._pubsub = pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await self._keep_watched()  # Redis may have come back without them
                await pubsub.subscribe(self._channels.auth, *(self._channels.user(u) for u in self._listeners))
                self.connected.set()
                if reconnecting:  # listeners may have missed messages while it was down
                    self._broadcast(RESYNC)
                delay = 0.1
                while not self._stopping:
                    # A bounded wait (not a blocking read), so the client's socket timeout never
                    # mistakes a quiet channel for a dead connection.
                    message = await pubsub.get_message(timeout=1.0)
                    taken = 0
                    while message is not None:
                        self._dispatch(message["channel"], message["data"])
                        taken += 1
                        # Reading what has already arrived does not give way to other tasks: so
                        # that a head start's read goes out (and its reply is taken) while a
                        # broadcast's thousands of messages come in, it gives way now and then.
                        if self._hold_started or taken % YIELD_EVERY == 0:
                            self._hold_started = False
                            await asyncio.sleep(0)
                        # What has already arrived, without a timer each: a broadcast brings one
                        # message per stream here, and a timer costs more than the message.
                        message = await pubsub.get_message(timeout=0)
                    if time.monotonic() >= self._refresh_at:
                        await self._keep_watched()
                    if self._heap is not None:
                        self._heap.tend()
            except Exception as exc:
                self.connected.clear()
                reconnecting = True
                if self._stopping:
                    return
                # Invalidations may have been missed while the connection was down.
                self._auth.forget_all()
                if isinstance(exc, Unavailable):
                    log.warning("pub/sub connection lost (%s); reconnecting", exc)
                else:  # a bug, not an outage: say so loudly, but never leave the streams deaf
                    log.exception("pub/sub failed; reconnecting")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _keep_watched(self) -> None:
        """Keep every user with a stream here in the watched set (a few script calls per 1,000)."""
        self._refresh_at = time.monotonic() + LISTENING_REFRESH
        await self._watched.listening(list(self._listeners))

    def _broadcast(self, change: Change | None) -> None:
        for queues in self._listeners.values():
            for queue in queues:
                _offer(queue, change)

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if channel == self._channels.auth.encode():
            try:
                self._auth.forget_user(int(data))
            except ValueError:
                self._auth.forget_all()
            return
        try:
            user_id = int(channel.rsplit(b":", 1)[1])
            # The user is being erased (service/erasure.py): their streams end, as at shutdown.
            change = None if data == CLOSE_STREAMS else decode_change(data)
        except (ValueError, IndexError, msgspec.DecodeError):
            log.warning("ignored a malformed message on %r", channel)
            return
        self._deliver(user_id, change)

    def _deliver(self, user_id: int, change: Change | None, may_hold: bool = True) -> None:
        if change is not None and change.event is not None and not change.again:
            reading = self._head_start(user_id, change)  # held or not, its read starts now
            if (
                self._held is None
                and may_hold
                and reading is not None
                and not reading.done()
                and self._worth_holding(change.event)
            ):
                self._hold(reading)
                self._held = []
        if self._held is not None:  # behind a head start: in order, after it
            self._held.append((user_id, change))
            return
        for queue in self._listeners.get(user_id, ()):
            _offer(queue, change)

    def _head_start(self, user_id: int, change: Change) -> asyncio.Future[Any] | None:
        ahead = self._ahead.get(user_id)
        if ahead is None:
            return None
        try:
            return ahead(change)
        except Exception:  # only a head start: the streams still get the change
            log.exception("a stream's read ahead failed")
            return None

    def _worth_holding(self, event: int) -> bool:
        """Whether to hold changes back for this arrival's read: from its event's second arrival
        here (a broadcast, not one recipient's event), and only once per event (a read that fails
        or outlasts HOLD_MAX is not waited for again)."""
        held = self._events_seen.get(event)
        if held is None:
            if len(self._events_seen) >= EVENTS_REMEMBERED:
                del self._events_seen[next(iter(self._events_seen))]
            self._events_seen[event] = False
            return False
        self._events_seen[event] = True
        return not held

    def _hold(self, reading: asyncio.Future[Any]) -> None:
        """Hold every change back until `reading` is done, or HOLD_MAX has passed."""
        self._holding = reading
        self._hold_started = True
        reading.add_done_callback(self._release)
        self._hold_timer = asyncio.get_running_loop().call_later(HOLD_MAX, self._release, reading)

    def _release(self, reading: asyncio.Future[Any]) -> None:
        if reading is not self._holding:  # an earlier hold, already released by its timer
            return
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        held, self._held, self._holding, self._hold_timer = self._held or [], None, None, None
        # Not held again for another event's read in this batch (each was started as it came in).
        for user_id, change in held:
            self._deliver(user_id, change, may_hold=False)


def _offer(queue: asyncio.Queue[Change | None], change: Change | None) -> None:
    """Put without waiting. A stream too slow to keep up loses its oldest changes; its badge stays
    right because every change carries the whole count and the newest one is always kept."""
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(change)
