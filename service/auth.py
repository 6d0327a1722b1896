"""Who is calling: tokens to principals, cached per process, and the rules of who may do what.

A badge poll must not cost a database round trip, so principals are cached in memory by token
hash. The cache is correct, not just fast: revoking a token or deactivating a user publishes the
user id on `herald:auth`, every API process drops that user's entries at once (see
`service/hub.py`), and if that channel is ever lost the whole cache is dropped. The TTL is only a
backstop.
"""

from __future__ import annotations

import time

import asyncpg

from service import db
from service.errors import Forbidden, Unauthorized
from service.metrics import AUTH_LOOKUPS
from service.model import Principal
from service.store import users
from service.tokens import token_hash

CACHE_TTL = 60.0
_HIT = AUTH_LOOKUPS.labels("hit")
_MISS = AUTH_LOOKUPS.labels("miss")
CACHE_SIZE = 100_000


class Authenticator:
    def __init__(self, pool: asyncpg.Pool, timeout: float = 5.0) -> None:
        self._pool = pool
        self._timeout = timeout
        self._cache: dict[bytes, tuple[float, Principal]] = {}

    async def principal(self, token: str | None, digest: bytes | None = None) -> Principal:
        """The token's owner, whatever its kind or state; Unauthorized if Herald does not know it.

        `digest` is the token's hash when the caller already has it."""
        if not token:
            raise Unauthorized("Not authenticated")
        digest = digest or token_hash(token)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            _HIT.inc()
            return cached[1]
        _MISS.inc()

        async def lookup(conn: asyncpg.Connection) -> Principal | None:
            return await users.principal_by_token(conn, digest)

        found = await db.run(self._pool, lookup, timeout=self._timeout)
        if found is None:
            raise Unauthorized("Invalid token")
        if len(self._cache) >= CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[digest] = (now + CACHE_TTL, found)
        return found

    def cached(self, digest: bytes) -> Principal | None:
        """The owner of the token with this hash if this process already knows it; never touches
        the database."""
        entry = self._cache.get(digest)
        if entry is None or entry[0] <= time.monotonic():
            return None
        _HIT.inc()
        return entry[1]

    def forget_user(self, user_id: int) -> None:
        for digest in [d for d, (_, p) in self._cache.items() if p.user_id == user_id]:
            self._cache.pop(digest, None)

    def forget_all(self) -> None:
        self._cache.clear()


def reader(who: Principal) -> Principal:
    """Readers: active users with a personal token. Producer tokens only publish."""
    if who.kind != "pat":
        raise Forbidden("a producer token cannot read notifications")
    if not who.active:
        raise Forbidden("this user is deactivated")
    return who


def producer(who: Principal) -> Principal:
    if who.kind != "producer":
        raise Forbidden("publishing needs a producer token")
    if not who.active:
        raise Forbidden("this user is deactivated")
    return who


def admin(who: Principal) -> Principal:
    reader(who)
    if who.role != "admin":
        raise Forbidden("this needs the admin role")
    return who
