"""What a reader can do with their notifications, whatever API profile they call it through.

Each operation is one atomic statement in `service/store/inbox.py` followed, when something
changed, by copying the new counts to Redis and the user's streams (`service/counts/__init__.py`). If Redis
is unreachable at that moment the change still stands: the copy is dropped, the cached counts
expire, and readers fall back to PostgreSQL meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TypeVar, TypeVarTuple

import asyncpg
import msgspec

from service import positions
from service.backends import postgres, replica
from service.counts.tabs import TabCount, TabFilter
from service.errors import NotFound
from service.model import Counts, InboxItem, InboxQuery, Page, Position, Principal, Snoozed
from service.process import Backends
from service.store import bulk as bulk_store
from service.store import inbox, outbox

log = logging.getLogger("herald.notifications")


async def page(
    b: Backends, who: Principal, query: InboxQuery, *, limit: int, offset: int = 0, after: Position | None = None
) -> Page:
    """One page of the inbox (by offset, or after a position), its total under the query, and the
    user's overall counts.

    The counts come from the count cache (batched with everyone else's reads), concurrently with
    the page's query; totals are taken from them unless the query filters on the event, in which
    case the matching rows are counted. One row more than asked is read, to know whether another
    page follows. A page far down (offset DEEP or more) starts from a remembered position when it
    can (`_deep_page`).
    """

    field = positions.remembered(query) if after is None and offset >= positions.DEEP else None
    if field is not None:
        return await _deep_page(b, who, query, field, limit=limit, offset=offset)

    async def read(conn: asyncpg.Connection) -> tuple[list[InboxItem], int | None]:
        rows = await inbox.items(conn, who, query, limit=limit + 1, offset=offset, after=after)
        matching = None if query.counted else await inbox.count(conn, who, query)
        return rows, matching

    try:
        async with asyncio.TaskGroup() as group:
            reading = group.create_task(b.reads.run(who.user_id, read, timeout=b.settings.backend_timeout))
            counting = group.create_task(b.counts.read(who.user_id))
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None  # callers map single errors (Unavailable, ...)
    (rows, matching), overall = reading.result(), counting.result()
    total = matching if matching is not None else _counted(query, overall)
    return Page(items=rows[:limit], total=total, counts=overall, more=len(rows) > limit)


def _counted(query: InboxQuery, overall: Counts) -> int:
    """The total of a list the counters describe (`query.counted`)."""
    if query.read is None:
        return overall.total
    return overall.total - overall.unread if query.read else overall.unread


async def _deep_page(b: Backends, who: Principal, query: InboxQuery, field: str, *, limit: int, offset: int) -> Page:
    """A page far down a list the counters describe, started from the nearest position a page
    before it remembered, when the list has not changed since (service/positions.py). The counts
    and the positions are read together first: the version says which positions still hold."""
    before, overall = await asyncio.gather(b.positions.load(who.user_id, field), b.counts.read(who.user_id))
    mark = positions.nearest(before, overall.version, offset)
    start = None if mark is None else Position(created_at=mark.created_at, id=mark.id)
    skip = offset if mark is None else offset - mark.offset

    async def read(conn: asyncpg.Connection) -> tuple[list[InboxItem], int | None]:
        return await inbox.items_from(conn, who, query, limit=limit + 1, offset=skip, start=start)

    rows, version = await b.reads.run(who.user_id, read, timeout=b.settings.backend_timeout)
    if mark is not None and version != overall.version:
        # The list the page was read from is not the one the position was kept for (the cached
        # count lags a commit, or a replica lags the primary; or the page is empty): walk instead.
        start, skip = None, offset
        rows, version = await b.reads.run(who.user_id, read, timeout=b.settings.backend_timeout)
    if version is not None:
        new = positions.marks_of(offset, [Position(created_at=r.created_at, id=r.id) for r in rows])
        if not positions.known(before, version, new):
            await b.positions.remember(who.user_id, field, before, version, new)
    return Page(items=rows[:limit], total=_counted(query, overall), counts=overall, more=len(rows) > limit)


async def get(b: Backends, who: Principal, row_id: int) -> InboxItem:
    # Not found on the replica may be a row it has not received yet (one just announced on a
    # stream): the primary has the last word.
    found = await b.reads.run(
        who.user_id, inbox.get, who, row_id, timeout=b.settings.backend_timeout, again_on_primary=_missing
    )
    if found is None:
        raise NotFound("Notification not found")
    return found


async def find(b: Backends, who: Principal, row_id: int) -> InboxItem | None:
    """The user's row as it is now, or None (gone since it was announced)."""
    try:
        return await get(b, who, row_id)
    except NotFound:
        return None


def _missing(found: InboxItem | None) -> bool:
    return found is None


R = TypeVar("R")
Ts = TypeVarTuple("Ts")


async def _write(
    b: Backends,
    who: Principal,
    work: Callable[[asyncpg.Connection, *Ts], Awaitable[tuple[R, Counts | None]]],
    *args: *Ts,
    arrival: Callable[[R], tuple[int, int] | None] = lambda _: None,
) -> R:
    """Run a change of the user's inbox; when it changed something, copy the new counts to Redis
    and, with a replica, remember where the change is in the WAL (read-your-writes). `arrival`
    names the row that the change brought back, if any, to announce it on the user's streams."""

    async def write(conn: asyncpg.Connection) -> tuple[R, Counts | None, int | None]:
        result, new = await work(conn, *args)
        # After the statement's commit: the position is at or past its commit record.
        lsn = await replica.position(conn) if new is not None and b.replica is not None else None
        return result, new, lsn

    result, new, lsn = await postgres.run(b.pool, write, timeout=b.settings.backend_timeout)
    if lsn is not None:
        await b.reads.wrote(who.user_id, lsn)
    if new is not None:
        back = arrival(result)
        await b.counts.copy([new], None if back is None else [back], again=back is not None)
    return result


async def seen(b: Backends, who: Principal) -> Counts:
    """The user opened the bell: their unread notifications are seen (no longer "new"). Returns the
    counts after it."""

    async def work(conn: asyncpg.Connection) -> tuple[Counts | None, Counts | None]:
        _, new = await inbox.seen(conn, who.user_id, who.tenant_id)
        return new, new

    changed = await _write(b, who, work)
    # Nothing was unseen: the counts did not change, and the cache answers as usual.
    return changed if changed is not None else await b.counts.read(who.user_id)


async def set_read(b: Backends, who: Principal, row_ids: Sequence[int], read: bool, one: bool = False) -> list[int]:
    """Mark rows read or unread; returns the ids whose state changed. `one`: the request named one
    notification (its webhook is `notification.read`/`.unread`, not `inbox.bulk`)."""

    return await _write(b, who, inbox.set_read, who.user_id, row_ids, read, who.tenant_id, one)


async def set_read_one(b: Backends, who: Principal, row_id: int, read: bool) -> InboxItem:
    """Mark one row; NotFound unless it is the caller's. Returns the row as it now is."""
    await set_read(b, who, [row_id], read, one=True)
    return await get(b, who, row_id)


async def read_all(b: Backends, who: Principal) -> int:
    return await _write(b, who, inbox.read_all, who.user_id, who.tenant_id)


async def delete(b: Backends, who: Principal, row_ids: Sequence[int], one: bool = False) -> list[int]:
    return await _write(b, who, inbox.delete, who.user_id, row_ids, who.tenant_id, one)


async def delete_all(b: Backends, who: Principal) -> int:
    return await _write(b, who, inbox.delete_all, who.user_id, who.tenant_id)


async def set_archived(b: Backends, who: Principal, row_id: int, archived: bool) -> None:
    """Archive (or unarchive) one row; NotFound unless it is the caller's. Already so is no error."""

    async def work(conn: asyncpg.Connection) -> tuple[bool, Counts | None]:
        changed, new = await inbox.set_archived(conn, who.user_id, [row_id], archived, who.tenant_id)
        return bool(changed) or await inbox.archived(conn, who.user_id, row_id) is not None, new

    if not await _write(b, who, work):
        raise NotFound("Notification not found")


async def interact(b: Backends, who: Principal, row_id: int, action: str) -> InboxItem:
    """Record that the reader took `action` (marking the row read); NotFound unless the row is the
    caller's and offers it. Returns the row as it now is."""
    if not await _write(b, who, inbox.interact, who.user_id, row_id, action, who.tenant_id):
        raise NotFound("Notification or action not found")
    return await get(b, who, row_id)


async def bulk(b: Backends, who: Principal, action: bulk_store.Action, f: bulk_store.BulkFilter) -> int:
    """Apply `action` to every notification matching `f`, batch after batch (store/bulk.py); returns
    how many changed. The counts are copied once, at the end: one push to the user's streams."""
    changed = 0
    after: tuple[datetime, int] | None = None
    counts: Counts | None = None
    while True:
        done = await postgres.run(
            b.pool, bulk_store.batch, who.user_id, action, f, after, timeout=b.settings.backend_timeout
        )
        changed += done.changed
        counts = done.counts or counts
        if done.seen < bulk_store.BATCH or done.last is None:
            break
        after = done.last
    if changed:
        await postgres.run(
            b.pool, outbox.record_bulk, who.user_id, who.tenant_id, action, changed, timeout=b.settings.backend_timeout
        )
    if counts is not None:
        if b.replica is not None:
            await b.reads.wrote(
                who.user_id, await postgres.run(b.pool, replica.position, timeout=b.settings.backend_timeout)
            )
        await b.counts.copy([counts])
    return changed


async def tabs(b: Backends, who: Principal, filters: dict[str, TabFilter]) -> dict[str, TabCount]:
    return await b.counts.tabs(who.user_id, filters)


async def snooze(b: Backends, who: Principal, row_id: int, until: datetime) -> Snoozed:
    """Hide the row until `until`, or end its snooze when `until` has passed; NotFound unless the
    row is the caller's. A row brought back is announced on the user's streams as an arrival."""

    def back(done: Snoozed | None) -> tuple[int, int] | None:
        return (row_id, done.event_id) if done is not None and done.woke else None

    done = await _write(b, who, inbox.snooze, who.user_id, row_id, until, arrival=back)
    if done is None:
        raise NotFound("Notification not found")
    return done


async def arrived_after(b: Backends, who: Principal, row_id: int, limit: int = 100) -> list[InboxItem]:
    """Unread rows that arrived after `row_id`, oldest first (for a stream that reconnects)."""
    return await postgres.run(b.pool, inbox.arrived_after, who, row_id, limit, timeout=b.settings.backend_timeout)


# Events as rows, by (tenant, event): every connected recipient of an arrival in this process is
# rendered from one read. Events never change after they are published, so entries never go stale.
_arrivals: dict[tuple[int, int], InboxItem] = {}
_ARRIVALS_KEPT = 1024
# Reads in flight: an event for thousands of users reaches all their streams at once, and they all
# wait for the one read rather than each taking a database connection for the same row. They wait
# on an Event, not on the read itself: a stream that ends while it waits does not end the read for
# the others, and one wake-up each is all the waiting costs.
_reading: dict[tuple[int, int], tuple[asyncio.Task[InboxItem | None], asyncio.Event]] = {}


def _read_done(key: tuple[int, int], done: asyncio.Event, task: asyncio.Task[InboxItem | None]) -> None:
    _reading.pop(key, None)
    done.set()
    if not task.cancelled():
        task.exception()  # retrieved, whether or not a stream still waits for it


def _read(b: Backends, who: Principal, key: tuple[int, int]) -> tuple[asyncio.Task[InboxItem | None], asyncio.Event]:
    reading = _reading.get(key)
    if reading is None:

        async def read() -> InboxItem | None:
            # Kept by the read itself: one started ahead may end before any stream waits for it.
            template = await postgres.run(b.pool, inbox.event_as_item, who, key[1], timeout=b.settings.backend_timeout)
            if template is not None:
                _keep(key, template)
            return template

        task = asyncio.create_task(read())
        reading = _reading[key] = (task, asyncio.Event())
        task.add_done_callback(functools.partial(_read_done, key, reading[1]))
    return reading


def read_ahead(b: Backends, who: Principal, event_id: int) -> asyncio.Task[InboxItem | None] | None:
    """Start reading event `event_id` for `arrival`, unless it is known or being read; the read, or
    None when the event is known. Called as soon as an arrival reaches this process, before its
    streams wake: when an event reaches thousands of streams here at once, the read then starts
    (and ends: service/http/hub.py holds the streams back for it) ahead of their wake-ups."""
    key = (who.tenant_id, event_id)
    if key in _arrivals:
        return None
    return _read(b, who, key)[0]


async def arrival(b: Backends, who: Principal, row_id: int, event_id: int) -> InboxItem | None:
    """The new row `row_id` of event `event_id`, as it was when it arrived (unread)."""
    key = (who.tenant_id, event_id)
    template = _arrivals.get(key)
    if template is None:
        task, done = _read(b, who, key)
        await done.wait()
        template = task.result()
        if template is None:
            return None
    return msgspec.structs.replace(template, id=row_id, user=who.user)


def _keep(key: tuple[int, int], template: InboxItem) -> None:
    if key not in _arrivals and len(_arrivals) >= _ARRIVALS_KEPT:
        _arrivals.pop(next(iter(_arrivals)))
    _arrivals[key] = template
