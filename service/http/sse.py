"""GET /v1/stream: a user's badge and arrivals as Server-Sent Events.

    event: unread         {"unread_count": N, "unseen_count": M}, on connect and after every change (reads and
                          deletes included, not only arrivals)
    event: notification   the new item, in the scalebox item shape, when one arrives
    : ping                a comment at least every 15 seconds, so proxies keep the line open

Every event's id is "<counts version>.<newest row id sent>". A client that reconnects with
`Last-Event-ID` first gets the unread notifications that arrived after that row (up to 100,
oldest first), then the current count. Changes come from Redis pub/sub (service/http/hub.py), so a
change made through any API process or worker reaches a stream held by any other. When the process
shuts down, open streams end cleanly (the client's EventSource reconnects elsewhere).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncGenerator
from typing import Any

import msgspec
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.response import Stream

from service import inbox
from service.counts import Change
from service.http.guard import stream_guard
from service.http.hub import RESYNC, Hub
from service.http.profiles.scalebox import present
from service.metrics import STREAMS_OPEN
from service.model import Counts, InboxItem, Principal
from service.process import Backends

HEARTBEAT = 15.0
RETRY_MS = 3000
REPLAY_MAX = 100
SENT_KEPT = 1000

# The wire format, written here rather than by Litestar's ServerSentEvent: a broadcast wakes every
# open stream at once, and each one's cost is then the whole fan-out's. One change (an arrival and
# its new count) goes out as one chunk. Every field is one line: the data is JSON, the ids digits.
PING = b": ping\r\n\r\n"
_encode = msgspec.json.Encoder().encode


def _message(event: bytes, data: bytes, event_id: str, retry: int | None = None) -> bytes:
    tail = b"retry: %d\r\n\r\n" % retry if retry is not None else b"\r\n"
    return b"id: " + event_id.encode() + b"\r\nevent: " + event + b"\r\ndata: " + data + b"\r\n" + tail


def _last_seen(header: str | None) -> int | None:
    """The newest row id a reconnecting client had, from its Last-Event-ID."""
    if not header:
        return None
    _, _, row = header.partition(".")
    return int(row) if row.isdigit() else None


class _Stream:
    def __init__(self, b: Backends, hub: Hub, who: Principal, last_row: int | None, heartbeat: float) -> None:
        self.b, self.hub, self.who = b, hub, who
        self.version = -1
        self.newest = last_row or 0
        self.replay_from = last_row
        self.heartbeat = heartbeat
        # Rows already sent (a replay and the live feed can overlap). Not "ids above the newest
        # sent": rows committed concurrently arrive in any order of id, and each must get through.
        self.sent: set[int] = set()

    def _id(self) -> str:
        return f"{self.version}.{self.newest}"

    def _unread(self, counts: Counts, retry: int | None = None) -> bytes:
        self.version = counts.version
        data = _encode({"unread_count": counts.unread, "unseen_count": counts.unseen})
        return _message(b"unread", data, self._id(), retry)

    def _notification(self, item: InboxItem) -> bytes:
        self.newest = max(self.newest, item.id)
        self.sent.add(item.id)
        if len(self.sent) > SENT_KEPT:
            self.sent = set(sorted(self.sent)[-SENT_KEPT // 2 :])
        return _message(b"notification", _encode(present(item)), self._id())

    async def events(self) -> AsyncGenerator[bytes, None]:
        STREAMS_OPEN.inc()
        try:
            # Listen first, then read: a change between the two is then seen twice, never missed.
            ahead = functools.partial(_read_ahead, self.b, self.who)  # not the stream's: it may outlive it
            async with self.hub.listen(self.who.user_id, ahead) as queue:
                counts = await self.b.counts.read(self.who.user_id)
                first = []
                if self.replay_from is not None:
                    for item in await inbox.arrived_after(self.b, self.who, self.replay_from, REPLAY_MAX):
                        first.append(self._notification(item))
                first.append(self._unread(counts, RETRY_MS))
                yield b"".join(first)
                while True:
                    try:
                        # A timeout rather than wait_for: no task made per wait, for every stream.
                        async with asyncio.timeout(self.heartbeat):
                            change = await queue.get()
                    except TimeoutError:
                        yield PING
                        continue
                    if change is None:  # the process is shutting down, or the user is being erased
                        return
                    chunk = await self._apply(change)
                    if chunk:
                        yield chunk
        finally:
            STREAMS_OPEN.dec()

    async def _apply(self, change: Change) -> bytes:
        if change is RESYNC:
            counts = await self.b.counts.read(self.who.user_id)
            return self._unread(counts) if counts.version != self.version else b""
        out = b""
        # A row already sent is skipped (a replay and the live feed overlap), unless it comes back.
        if change.item is not None and change.event is not None and (change.again or change.item not in self.sent):
            if change.again:  # a row back from a snooze, or a thread a new event updated: as it is now
                item = await inbox.find(self.b, self.who, change.item)
            else:
                item = await inbox.arrival(self.b, self.who, change.item, change.event)
            if item is not None:
                out = self._notification(item)
        # Copies can arrive out of order; only a newer one changes the badge.
        if change.v > self.version:
            out += self._unread(
                Counts(
                    user_id=self.who.user_id,
                    unread=change.unread,
                    total=change.total,
                    version=change.v,
                    unseen=change.unseen,
                )
            )
        return out


def _read_ahead(b: Backends, who: Principal, change: Change) -> asyncio.Future[Any] | None:
    """The hub's head start on an arrival (Hub.listen): the event every stream here will render
    (its read while under way, None when it is known)."""
    return None if change.event is None else inbox.read_ahead(b, who, change.event)


@get(
    "/v1/stream",
    guards=[stream_guard],
    media_type="text/event-stream",
    summary="Live badge and arrivals (Server-Sent Events)",
    description="503 with Retry-After when this API process holds HERALD_STREAM_LIMIT streams: poll meanwhile.",
)
async def live(
    request: Request[Any, Any, Any], b: NamedDependency[Backends], who: NamedDependency[Principal]
) -> Stream:
    hub: Hub = request.app.state.hub
    live = _Stream(b, hub, who, _last_seen(request.headers.get("last-event-id")), b.settings.stream_heartbeat)
    return Stream(
        live.events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"},
    )
