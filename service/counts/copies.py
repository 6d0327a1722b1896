"""The copies of the counts in Redis (service/counts/__init__.py tells the protocol): the Lua
scripts that keep the newer copy, the batched reads, and what a user's stream hears.

Every script that can create a copy also adds its user to the watched set (`herald:watched`, see
watched.py) in the same call, so that "a copy exists" always implies "its user is watched": a
fan-out copies counts only to watched users (and leaves everyone else's copy absent, to be rebuilt
on first read), and that is exact only because no copy exists outside the set."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

from service.backends.breaker import Breaker
from service.counts.tabs import TABS_TTL, group_field
from service.keys import COUNT_PREFIX, TABS_PREFIX, WATCHED, Channels, count_key
from service.model import Counts, CountsChange, TabGroup

# A copy older than this is dropped and rebuilt by one primary-key read: the bound on how long a
# process that died between its commit and its copy can leave a badge behind.
COUNT_TTL = 60
# Users per copy script: each call holds Redis for a few milliseconds at most.
_PUBLISH_BATCH = 2000
# What a reader leaves in a cold user's key while it rebuilds the counts from PostgreSQL: not a copy
# (it reads as a miss), but it makes every writer that commits meanwhile update the key, and only
# a key still holding it (or an older copy) takes the rebuilt counts. See `Copies.mark`.
REBUILDING = b"rebuilding"


class Change(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a user's stream hears: the new counts, plus the new row when one arrived."""

    v: int
    unread: int
    total: int
    unseen: int = 0
    item: int | None = None  # inbox row id of a new arrival
    event: int | None = None  # its event id, so the stream can render it from one cached lookup
    # The arrival is a row coming back (its snooze ended): announced even to a stream that announced
    # it once already.
    again: bool = False


decode_change = msgspec.json.Decoder(Change).decode

# ARGV[1] the TTL, ARGV[2] 1 when the rows come back rather than arrive (Change.again), ARGV[3]
# msgpack of a flat array of seven numbers per user: user id, version, unread, total, unseen, and
# the new row's id and its event's id (0, 0: none), ARGV[4] 1 to update only copies that exist
# (a fan-out's: see `Copies.copy`), ARGV[5] msgpack of a flat array of tab changes (below). The
# copy ("version:unread:total:unseen") is kept only when newer; the message is always published and
# carries its version, so a stream applies it only if it is newer too. A copy made here adds its
# user to the watched set (the module's docstring says why).
#
# Built for fan-out chunks of thousands of users: the numbers travel as one packed argument (as
# thousands of arguments, passing them cost more than the work), the keys are built here (so they
# are not declared; Redis Cluster would need them grouped by slot, see docs/scaling.md), and the
# usual case, a newer copy, is one SET … GET: the old value comes back from the same call, and is
# put back in the rare case that it was the newer one (a reader's REBUILDING mark is older than any
# copy).
_SET_COUNTS = (
    """
local ttl, again, present = ARGV[1], ARGV[2] == '1', ARGV[4] == '1'
local v = cmsgpack.unpack(ARGV[3])
for at = 1, #v, 7 do
    local user, version, unread, total, unseen = v[at], v[at + 1], v[at + 2], v[at + 3], v[at + 4]
    local item, event = v[at + 5], v[at + 6]
    local key = '{COUNT_PREFIX}' .. user
    local value = version .. ':' .. unread .. ':' .. total .. ':' .. unseen
    local old
    if present then
        old = redis.call('SET', key, value, 'XX', 'EX', ttl, 'GET')
    else
        old = redis.call('SET', key, value, 'EX', ttl, 'GET')
        redis.call('ZADD', '{WATCHED}', user, user)
    end
    if old then
        local held = tonumber(string.match(old, '^(%d+):'))
        if held and held > version then redis.call('SET', key, old, 'EX', ttl) end
    end
    local message = '{"v":' .. version .. ',"unread":' .. unread .. ',"total":' .. total .. ',"unseen":' .. unseen
    if item ~= 0 then
        message = message .. ',"item":' .. item .. ',"event":' .. event
        if again then message = message .. ',"again":true' end
    end
    redis.call('PUBLISH', '{USER_CHANNEL}' .. user, message .. '}')
end
-- What changes did to users' tab groups (service/counts/tabs.py): per change the user, the new
-- version and how many groups, then per group its field and the total, unread and unseen to add. A
-- cached breakdown is brought forward only from the version just before; any other is left to be
-- counted again.
local tabs = cmsgpack.unpack(ARGV[5])
local at = 1
while at <= #tabs do
    local user, version, n = tabs[at], tabs[at + 1], tabs[at + 2]
    local key = '{TABS_PREFIX}' .. user
    at = at + 3
    if tonumber(redis.call('HGET', key, 'v')) == version - 1 then
        for g = at, at + 4 * (n - 1), 4 do
            local field = tabs[g]
            local total = redis.call('HINCRBY', key, 't' .. field, tabs[g + 1])
            redis.call('HINCRBY', key, 'u' .. field, tabs[g + 2])
            redis.call('HINCRBY', key, 's' .. field, tabs[g + 3])
            if total == 0 then redis.call('HDEL', key, 't' .. field, 'u' .. field, 's' .. field) end
        end
        redis.call('HSET', key, 'v', version)
        redis.call('EXPIRE', key, '{TABS_TTL}')
    end
    at = at + 4 * n
end
return #v / 7
""".replace("{COUNT_PREFIX}", COUNT_PREFIX)
    .replace("{WATCHED}", WATCHED)
    .replace("{TABS_PREFIX}", TABS_PREFIX)
    .replace("{TABS_TTL}", str(TABS_TTL))
)
# Before a reader rebuilds a cold copy: KEYS[1] the count key, ARGV[1] the user, ARGV[2] the TTL.
# The user joins the watched set and, unless a copy is there already, the key holds REBUILDING.
_MARK = """
redis.call('SET', KEYS[1], '{REBUILDING}', 'NX', 'EX', ARGV[2])
redis.call('ZADD', '{WATCHED}', ARGV[1], ARGV[1])
return 1
""".replace("{REBUILDING}", REBUILDING.decode()).replace("{WATCHED}", WATCHED)
# After the rebuild: the rebuilt copy replaces a REBUILDING mark or an older copy, never a newer
# copy, and never an absent key. An absent key means the mark is gone (expired, or Redis lost it):
# a writer that committed meanwhile may then have skipped this user, so the rebuilt counts may be
# older than PostgreSQL's, and the next read rebuilds again instead.
_FILL_COUNT = """
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
local held = tonumber(string.match(current, '^(%d+):'))
if not held or held < tonumber(ARGV[1]) then
    redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
return 1
"""


_pack = msgspec.msgpack.Encoder().encode


def encode_counts(counts: Counts) -> bytes:
    return b"%d:%d:%d:%d" % (counts.version, counts.unread, counts.total, counts.unseen)


def decode_counts(user_id: int, raw: bytes) -> Counts | None:
    """A cached copy, or None for one this version cannot read or a reader's REBUILDING mark (it is
    then rebuilt)."""
    parts = raw.split(b":")
    if len(parts) != 4:
        return None
    version, unread, total, unseen = parts
    return Counts(user_id=user_id, version=int(version), unread=int(unread), total=int(total), unseen=int(unseen))


class Copies:
    """The Redis half of the count protocol: copies and their pushes. Scripts are registered once
    per client."""

    def __init__(self, client: aioredis.Redis, database: Breaker | None = None) -> None:
        self.redis = client
        # While PostgreSQL does not answer, a copy that expired could not be rebuilt: reads then
        # keep the copies they find alive (GETEX), so a polled badge answers through the outage.
        self._database = database
        # The users' channel names are those of the client's database (keys.Channels).
        self._set_counts = client.register_script(
            _SET_COUNTS.replace("{USER_CHANNEL}", Channels.of(client).user_prefix)
        )
        self._fill = client.register_script(_FILL_COUNT)
        self._mark = client.register_script(_MARK)
        self._waiting: dict[int, list[asyncio.Future[Counts | None]]] = {}
        self._flush_scheduled = False
        self._flushes: set[asyncio.Task[None]] = set()

    async def get(self, user_id: int) -> Counts | None:
        """The cached counts, or None. Reads asked for in the same turn of the event loop share one
        MGET: under load (every tab of every user polling) that is one Redis round trip for many
        polls instead of one each; alone, it is a single-key MGET, as fast as a GET."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Counts | None] = loop.create_future()
        self._waiting.setdefault(user_id, []).append(future)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        waiting, self._waiting, self._flush_scheduled = self._waiting, {}, False
        task = asyncio.get_running_loop().create_task(self._read(waiting))
        self._flushes.add(task)  # held until done: the loop keeps only weak references to tasks
        task.add_done_callback(self._flushes.discard)

    async def _read(self, waiting: dict[int, list[asyncio.Future[Counts | None]]]) -> None:
        users = list(waiting)
        try:
            values: list[bytes | None]
            if self._database is not None and not self._database.up:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for user in users:
                        pipe.getex(count_key(user), ex=COUNT_TTL)
                    values = await pipe.execute()
            else:
                values = await self.redis.mget([count_key(u) for u in users])
        except BaseException as exc:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for user_id, raw in zip(users, values, strict=True):
            counts = None if raw is None else decode_counts(user_id, raw)
            for future in waiting[user_id]:
                if not future.done():
                    future.set_result(counts)

    async def drop_all(self) -> None:
        """Delete every cached copy (they are rebuilt on demand), a thousand keys at a time."""
        batch: list[bytes] = []
        async for key in self.redis.scan_iter(match=COUNT_PREFIX + "*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                await self.redis.delete(*batch)
                batch = []
        if batch:
            await self.redis.delete(*batch)

    async def mark(self, user_id: int, client: aioredis.Redis | None = None) -> None:
        """Say that a reader is about to rebuild this user's copy from PostgreSQL (before it reads).

        Why first: a fan-out copies counts only to watched users, and only to copies that exist.
        With the user watched and the key marked before the read, a writer committing during the
        rebuild either updates the key (and the older rebuilt copy is then refused by `fill`) or
        checked before the mark, which is before the read, so the read already sees its commit."""
        await self._mark(keys=[count_key(user_id)], args=[user_id, COUNT_TTL], client=client)

    async def fill(self, counts: Counts, client: aioredis.Redis | None = None) -> None:
        """Cache a rebuilt copy where `mark` left its mark (or an older copy), unless a newer one is there."""
        args: list[int | bytes] = [counts.version, encode_counts(counts), COUNT_TTL]
        await self._fill(keys=[count_key(counts.user_id)], args=args, client=client)

    async def copy(
        self,
        changes: Sequence[Counts],
        arrivals: Sequence[tuple[int, int]] | None = None,
        *,
        again: bool = False,
        present: bool = False,
    ) -> None:
        """Copy new counts into Redis and tell the users' streams, in batches of one script call.

        `arrivals`, when given, holds for each change the (row id, event id) of the row that arrived
        with it; `again` says those rows come back rather than arrive for the first time. `present`
        updates only the copies that exist (a fan-out's: an absent copy is rebuilt when read, and
        creating one for each of 100,000 recipients would only fill Redis); every change is still
        published to the users' streams."""
        patches = _tab_patches(changes)
        for start in range(0, len(changes), _PUBLISH_BATCH):
            batch = changes[start : start + _PUBLISH_BATCH]
            rows = arrivals[start : start + _PUBLISH_BATCH] if arrivals is not None else [(0, 0)] * len(batch)
            flat: list[int] = []
            for counts, (item, event) in zip(batch, rows, strict=True):
                flat += (counts.user_id, counts.version, counts.unread, counts.total, counts.unseen, item, event)
            tabs: list[int | str] = []
            for (user_id, version), groups in patches[start : start + _PUBLISH_BATCH]:
                tabs += (user_id, version, len(groups))
                for group in groups:
                    tabs += (group_field(group), group.total, group.unread, group.unseen)
            args: list[int | bytes] = [COUNT_TTL, int(again), _pack(flat), int(present), _pack(tabs)]
            await self._set_counts(keys=[], args=args)


def _tab_patches(changes: Sequence[Counts]) -> list[tuple[tuple[int, int], list[TabGroup]]]:
    """What the changes did to their users' tab groups, per (user, new version): a version one
    statement gave several rows of a user (a stream read's small events) is their sum; one that any
    change of the batch does not know its groups for is not brought forward at all."""
    known: dict[tuple[int, int], list[TabGroup] | None] = {}
    for counts in changes:
        key = (counts.user_id, counts.version)
        groups = counts.tabs if isinstance(counts, CountsChange) else None
        held = known.get(key, [])
        known[key] = None if groups is None or held is None else held + groups
    return [(key, groups) for key, groups in known.items() if groups]
