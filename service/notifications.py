"""What a reader can do with their notifications, whatever API profile they call it through.

Each operation is one atomic statement in `service/store/inbox.py` followed, when something
changed, by copying the new counts to Redis and the user's streams (`service/cache.py`). If Redis
is unreachable at that moment the change still stands: the copy is dropped, the cached counts
expire, and readers fall back to PostgreSQL meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import asyncpg
import redis.exceptions

from service import db
from service.backends import Backends
from service.errors import NotFound
from service.model import Counts, InboxItem, InboxQuery, Page, Principal
from service.store import inbox

log = logging.getLogger("herald.notifications")

# Rebuilds in flight in this process, so a cold key is read from PostgreSQL once, not once per poll.
_rebuilding: dict[int, asyncio.Future[Counts]] = {}


async def publish(b: Backends, changes: Sequence[Counts]) -> None:
    try:
        await b.counts.publish(changes)
    except redis.exceptions.RedisError as exc:
        log.warning("counts not copied to Redis (%s); they will be rebuilt from PostgreSQL", exc)


async def counts(b: Backends, user_id: int) -> Counts:
    """The user's counts: from Redis when cached, else rebuilt once from PostgreSQL.

    If Redis is unreachable, PostgreSQL answers directly: the badge degrades to one primary-key
    read instead of failing.
    """
    try:
        cached = await b.counts.get(user_id)
    except redis.exceptions.RedisError:
        return await _from_database(b, user_id)
    if cached is not None:
        return cached
    pending = _rebuilding.get(user_id)
    if pending is not None:
        return await asyncio.shield(pending)
    future: asyncio.Future[Counts] = asyncio.get_running_loop().create_future()
    _rebuilding[user_id] = future
    try:
        fresh = await _from_database(b, user_id)
        with contextlib.suppress(redis.exceptions.RedisError):
            await b.counts.fill(fresh)
        future.set_result(fresh)
        return fresh
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved here, so a rebuild nobody else awaited is not logged as lost
        raise
    finally:
        del _rebuilding[user_id]


async def _from_database(b: Backends, user_id: int) -> Counts:
    async def read(conn: asyncpg.Connection) -> Counts:
        return await inbox.counts(conn, user_id)

    return await db.run(b.pool, read, timeout=b.settings.backend_timeout)


async def page(b: Backends, who: Principal, query: InboxQuery, *, limit: int, offset: int) -> Page:
    """One page of the inbox, its total under the query, and the user's overall counts.

    Totals come from the exact counters unless the query filters on the event, in which case the
    matching rows are counted.
    """

    async def read(conn: asyncpg.Connection) -> Page:
        rows = await inbox.items(conn, who, query, limit=limit, offset=offset)
        overall = await inbox.counts(conn, who.user_id)
        if query.by_event:
            total = await inbox.count(conn, who, query)
        elif query.read is None:
            total = overall.total
        else:
            total = overall.total - overall.unread if query.read else overall.unread
        return Page(items=rows, total=total, counts=overall)

    return await db.run(b.pool, read, timeout=b.settings.backend_timeout)


async def get(b: Backends, who: Principal, row_id: int | None) -> InboxItem:
    if row_id is None:
        raise NotFound("Notification not found")

    async def read(conn: asyncpg.Connection) -> InboxItem | None:
        return await inbox.get(conn, who, row_id)

    found = await db.run(b.pool, read, timeout=b.settings.backend_timeout)
    if found is None:
        raise NotFound("Notification not found")
    return found


async def set_read(b: Backends, who: Principal, row_ids: Sequence[int], read: bool) -> list[int]:
    """Mark rows read or unread; returns the ids whose state changed."""

    async def write(conn: asyncpg.Connection) -> tuple[list[int], Counts | None]:
        return await inbox.set_read(conn, who.user_id, row_ids, read)

    changed, new = await db.run(b.pool, write, timeout=b.settings.backend_timeout)
    if new is not None:
        await publish(b, [new])
    return changed


async def set_read_one(b: Backends, who: Principal, row_id: int | None, read: bool) -> InboxItem:
    """Mark one row; NotFound unless it is the caller's. Returns the row as it now is."""
    if row_id is None:
        raise NotFound("Notification not found")
    await set_read(b, who, [row_id], read)
    return await get(b, who, row_id)


async def read_all(b: Backends, who: Principal) -> int:
    async def write(conn: asyncpg.Connection) -> tuple[int, Counts | None]:
        return await inbox.read_all(conn, who.user_id)

    changed, new = await db.run(b.pool, write, timeout=b.settings.backend_timeout)
    if new is not None:
        await publish(b, [new])
    return changed


async def delete(b: Backends, who: Principal, row_ids: Sequence[int]) -> list[int]:
    async def write(conn: asyncpg.Connection) -> tuple[list[int], Counts | None]:
        return await inbox.delete(conn, who.user_id, row_ids)

    gone, new = await db.run(b.pool, write, timeout=b.settings.backend_timeout)
    if new is not None:
        await publish(b, [new])
    return gone


async def delete_all(b: Backends, who: Principal) -> int:
    async def write(conn: asyncpg.Connection) -> tuple[int, Counts | None]:
        return await inbox.delete_all(conn, who.user_id)

    gone, new = await db.run(b.pool, write, timeout=b.settings.backend_timeout)
    if new is not None:
        await publish(b, [new])
    return gone
