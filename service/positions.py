"""Deep pages by offset, started from remembered positions.

A page at offset N (`?page=2084`, `?offset=25000`) is found from the list's index, but OFFSET still
walks the N index entries before it: on a 2-core machine about 1 ms per 25,000 entries, twice the
whole first page. The rows themselves are only read for the page (service/store/inbox.py), so what
is left is the index's own walk. It is avoided when the walk was already made: every deep page
remembers where it started and where the next one starts (the row at its offset and the row after
its last), and a later request for an offset at or past a remembered one starts its index scan at
that row and skips only the difference. A reload of the same page, the next page, and the page
after a page skip nothing.

A remembered position holds only while the list is what it was: it is kept under the user's count
version read in the same statement as the page (one snapshot), and used only while the count
version the reader sees is that one, and the page read from it is of that version too (the cached
count can lag a commit, a replica the primary): else the page walks its offset. Every change of a
user's rows changes that version (see service/counts/__init__.py), so a list that changed since
never starts from an old position. Only the inbox lists the counters describe (unfiltered, or
unread or read only; newest or oldest first) are remembered; a page filtered on the event, or of
the archive, walks its offset.

Storage: one Redis hash per user, `herald:pos:{user_id}`, a field per list (read filter and
order), each holding at most KEPT positions of one version (msgpack), expiring TTL seconds after
the last deep page. Only row ids and times: nothing the user wrote. It is a cache: when Redis is
away, a deep page walks its offset.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from datetime import datetime
from typing import cast

import msgspec
import redis.asyncio as aioredis

from service.backends import redis as redis_cache
from service.errors import Unavailable
from service.keys import positions_key
from service.model import InboxQuery, Position

log = logging.getLogger("herald.positions")

# Below this offset the walk costs less than the Redis round trip that would avoid it.
DEEP = 2000
KEPT = 32
TTL = 900


class Mark(msgspec.Struct, array_like=True, frozen=True):
    """The row at `offset` in one version of one list."""

    offset: int
    created_at: datetime
    id: int


class Marks(msgspec.Struct, array_like=True, frozen=True):
    version: int
    marks: list[Mark]


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Marks).decode


def remembered(query: InboxQuery) -> str | None:
    """The field of the list the query reads, or None when its positions are not remembered."""
    if not query.counted:
        return None
    read = {None: "all", True: "read", False: "unread"}[query.read]
    return f"{read}:{'asc' if query.ascending else 'desc'}"


class Positions:
    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def load(self, user_id: int, field: str) -> Marks | None:
        """The list's remembered positions, of whatever version (None: none, or Redis is away)."""
        found = cast(Awaitable[bytes | None], self._redis.hget(positions_key(user_id), field))
        return await redis_cache.cached(found, _decode)

    async def remember(self, user_id: int, field: str, before: Marks | None, version: int, new: list[Mark]) -> None:
        """Add `new` (read at count `version`) to the positions loaded as `before`; the newest KEPT
        stay. Two pages remembered at once may lose one another's positions: only a later walk."""
        older = before.marks if before is not None and before.version == version else []
        replaced = {m.offset for m in new}
        marks = Marks(version, (new + [m for m in older if m.offset not in replaced])[:KEPT])
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(positions_key(user_id), field, _encode(marks))  # type: ignore[arg-type]  # bytes are fine
                pipe.expire(positions_key(user_id), TTL)
                await pipe.execute()
        except Exception as exc:  # only a cache: the page stands
            if not isinstance(exc, Unavailable):
                log.exception("a page's positions could not be remembered")


def nearest(marks: Marks | None, version: int, offset: int) -> Mark | None:
    """The remembered row at or before `offset` closest to it, if `marks` are of `version`."""
    if marks is None or marks.version != version:
        return None
    return max((m for m in marks.marks if m.offset <= offset), key=lambda m: m.offset, default=None)


def known(marks: Marks | None, version: int, new: list[Mark]) -> bool:
    """True when `marks` already hold every one of `new` (a reload of a remembered page)."""
    return marks is not None and marks.version == version and all(m in marks.marks for m in new)


def marks_of(offset: int, rows: list[Position]) -> list[Mark]:
    """What a page read at `offset` (`rows`: its rows and the one after, as read) lets a later page
    start from: its first row, and the row after its last (the next page's first)."""
    if not rows:
        return []
    found = [Mark(offset, rows[0].created_at, rows[0].id)]
    if len(rows) > 1:
        found.append(Mark(offset + len(rows) - 1, rows[-1].created_at, rows[-1].id))
    return found
