"""The watched set: the users who may hold a cached count or an open stream, the only ones a fan-out
copies counts to.

Why it exists: most recipients of a large fan-out are not looking. Their counts change in
PostgreSQL, and a copy of them in Redis would only be read if they poll within COUNT_TTL, before
which a missing copy is rebuilt from PostgreSQL by one primary-key read anyway. Copying every
recipient's counts used to be about half of a fan-out's time (returning 10,000 rows per chunk into
Python, then a script setting 10,000 keys and publishing to 10,000 channels nobody listened to).
Now a chunk returns no row per recipient: after it commits, the worker asks this set which users in
the chunk's id range are watched, and reads back and copies the counts of those alone.

Why that stays exact (`herald:watched`, a sorted set of user ids scored by id, so a chunk's id
range is one `ZRANGEBYSCORE`):
- every script that creates a count copy adds its user here in the same call (copies.py), and a
  reader adds the user (and marks the key) *before* it reads PostgreSQL to rebuild a copy
  (`Copies.mark`); so whoever could hold a copy is in the set, and a copy rebuilt from a read
  that missed a commit is refused (`Copies.fill`: a writer copied meanwhile, the mark is gone);
- an API process keeps `herald:listening:{id}` alive for every user with a stream open there,
  adding them here as it does (`listening`), before it subscribes to their channel;
- a user leaves the set only through `prune`, one atomic script, when they have neither a count
  key (a copy or a mark) nor a listening key.
A worker asks only after its chunk committed: a user who joins after that question either had no
copy before it (their read comes after the commit and sees it) or opened a stream after it (and
reads the counts after subscribing, as every stream does), so the set is a superset of who needs
the copy at that moment. Users in it who no longer look only cost a useless copy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import redis.asyncio as aioredis

from service.keys import COUNT_PREFIX, LISTENING_PREFIX, WATCHED

# A stream's listening key outlives three refreshes: a process that stops refreshing (it died) has
# its users leave the set within a minute of the last refresh plus a prune.
LISTENING_TTL = 60
LISTENING_REFRESH = 20.0
# Users per listening call, per page of `among`, and per prune call: each script holds Redis for a
# millisecond or two.
BATCH = 1000
PAGE = 10_000

# ARGV[1] the TTL, ARGV[2..] user ids: each gets a listening key and joins the set.
_LISTENING = """
local ttl = ARGV[1]
for i = 2, #ARGV do
    redis.call('SET', '{LISTENING}' .. ARGV[i], '1', 'EX', ttl)
    redis.call('ZADD', '{WATCHED}', ARGV[i], ARGV[i])
end
return #ARGV - 1
""".replace("{LISTENING}", LISTENING_PREFIX).replace("{WATCHED}", WATCHED)
# ARGV[1] the last id already looked at, ARGV[2] how many to look at: members above it that have
# neither a count key nor a listening key leave the set. Returns {last id looked at (0: the end), removed}.
_PRUNE = (
    """
local members = redis.call('ZRANGEBYSCORE', '{WATCHED}', '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
local gone = {}
for _, user in ipairs(members) do
    if redis.call('EXISTS', '{COUNT}' .. user, '{LISTENING}' .. user) == 0 then gone[#gone + 1] = user end
end
if #gone > 0 then redis.call('ZREM', '{WATCHED}', unpack(gone)) end
if #members < tonumber(ARGV[2]) then return {0, #gone} end
return {members[#members], #gone}
""".replace("{WATCHED}", WATCHED)
    .replace("{COUNT}", COUNT_PREFIX)
    .replace("{LISTENING}", LISTENING_PREFIX)
)


class Watched:
    """The watched set of one process (held by its CountEngine: `Backends.counts.watched`)."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._listening = client.register_script(_LISTENING)
        self._prune = client.register_script(_PRUNE)

    async def among(self, lo: int, hi: int) -> AsyncIterator[list[int]]:
        """The watched users with ids in lo..hi, in pages of at most PAGE ids, in id order."""
        low: str = str(lo)
        while True:
            found = await self.redis.zrangebyscore(WATCHED, low, hi, start=0, num=PAGE)
            if not found:
                return
            users = [int(u) for u in found]
            yield users
            if len(users) < PAGE:
                return
            low = f"({users[-1]}"

    async def listening(self, users: Sequence[int]) -> None:
        """Users with a stream open in this process: kept watched for LISTENING_TTL from now."""
        for start in range(0, len(users), BATCH):
            await self._listening(keys=[], args=[LISTENING_TTL, *users[start : start + BATCH]])

    async def prune(self, after: int = 0, batch: int = BATCH) -> tuple[int, int]:
        """Let users above `after` who no longer hold a copy or a stream leave the set, `batch` of
        them looked at; returns (the last id looked at, 0 at the end; how many left)."""
        last, gone = await self._prune(keys=[], args=[after, batch])
        return int(last), int(gone)
