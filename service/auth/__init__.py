"""Who is calling: tokens to principals, cached per process, and the rules of who may do what.

A badge poll must not cost a database round trip, so principals are cached in memory by token
hash. The cache is correct, not just fast: revoking a token or deactivating a user publishes the
user id on `herald:auth`, every API process drops that user's entries at once (see
`service/http/hub.py`), and if that channel is ever lost the whole cache is dropped. The TTL is only a
backstop.

Signed user tokens (JWTs, see service/auth/signed.py) are verified, then mapped to their user through
a second cache keyed by (tenant, user id), so a fresh token of a known user costs a signature check
but no database round trip. Their token-hash entries expire with the token (`exp`) if that comes
before the TTL, so the badge's fast path never serves an expired token; both caches hold the user
id and are dropped by `forget_user` like any other.
"""

from __future__ import annotations

import math
import time
from typing import TypeVar

import asyncpg
import msgspec

from service.auth.signed import Claims, Verifier, looks_like_jwt
from service.auth.tokens import token_hash
from service.backends import postgres
from service.backends.breaker import Breaker
from service.errors import Forbidden, Unauthorized
from service.metrics import AUTH_LOOKUPS
from service.model import Principal
from service.store import users

CACHE_TTL = 60.0
_HIT = AUTH_LOOKUPS.labels("hit")
_MISS = AUTH_LOOKUPS.labels("miss")
CACHE_SIZE = 100_000
Entry = tuple[float, Principal, float]
K = TypeVar("K")


class Authenticator:
    def __init__(
        self,
        pool: asyncpg.Pool,
        timeout: float = 5.0,
        signed: Verifier | None = None,
        database: Breaker | None = None,
    ) -> None:
        self._pool = pool
        self._timeout = timeout
        # Entries are (fresh until, principal, never past): while the database does not answer
        # (`database` down), an entry past its TTL still serves until "never past" (a signed
        # token's expiry; never for the others), so the badge keeps answering through an outage.
        self._cache: dict[bytes, Entry] = {}
        # Signed tokens: None when neither a secret nor a public key is configured.
        self._signed = signed if signed is not None and signed.algorithms else None
        self._users: dict[tuple[str, str], Entry] = {}
        self._database = database

    def _usable(self, entry: Entry | None, now: float) -> bool:
        if entry is None:
            return False
        fresh, _, last = entry
        return fresh > now or (last > now and self._database is not None and not self._database.up)

    async def principal(self, token: str | None, digest: bytes | None = None) -> Principal:
        """The token's owner, whatever its kind or state; Unauthorized if Herald does not know it.

        `digest` is the token's hash when the caller already has it."""
        if not token:
            raise Unauthorized("Not authenticated")
        digest = digest or token_hash(token)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached is not None and self._usable(cached, now):
            _HIT.inc()
            return cached[1]
        if self._signed is not None and looks_like_jwt(token):
            return await self._signed_principal(token, digest, now)
        _MISS.inc()

        found = await postgres.run(self._pool, users.principal_by_token, digest, timeout=self._timeout)
        if found is None:
            raise Unauthorized("Invalid token")
        _remember(self._cache, digest, now + CACHE_TTL, found)
        return found

    async def _signed_principal(self, token: str, digest: bytes, now: float) -> Principal:
        assert self._signed is not None
        claims = self._signed.verify(token)
        user = await self._user(claims, now)
        # The token's role applies to its requests; the stored one was set when the user was created.
        who = msgspec.structs.replace(user, role=claims.role, kind="pat")
        # Until the token expires (no leeway: a clock-skew grace is re-checked, never cached), or the TTL.
        expires = now + (claims.exp - time.time())
        until = min(now + CACHE_TTL, expires)
        if until > now:
            _remember(self._cache, digest, until, who, last=expires)
        return who

    async def _user(self, claims: Claims, now: float) -> Principal:
        """The claimed user as stored, created (with the claimed role) on first sight."""
        key = (claims.tenant, claims.user)
        cached = self._users.get(key)
        if cached is not None and self._usable(cached, now):
            _HIT.inc()
            return cached[1]
        _MISS.inc()

        async def lookup(conn: asyncpg.Connection) -> Principal:
            tenant_id = await users.tenant_id(conn, claims.tenant)
            found = None if tenant_id is None else await users.find_user(conn, tenant_id, claims.user)
            if found is not None:
                return found
            async with conn.transaction():
                tenant_id = await users.ensure_tenant(conn, claims.tenant)
                return await users.upsert_user(conn, tenant_id, claims.user, claims.role)

        found = await postgres.run(self._pool, lookup, timeout=self._timeout)
        _remember(self._users, key, now + CACHE_TTL, found)
        return found

    def cached(self, digest: bytes) -> Principal | None:
        """The owner of the token with this hash if this process already knows it; never touches
        the database."""
        entry = self._cache.get(digest)
        if entry is None or not self._usable(entry, time.monotonic()):
            return None
        _HIT.inc()
        return entry[1]

    def forget_user(self, user_id: int) -> None:
        for digest in [d for d, (_, p, _) in self._cache.items() if p.user_id == user_id]:
            self._cache.pop(digest, None)
        for key in [k for k, (_, p, _) in self._users.items() if p.user_id == user_id]:
            self._users.pop(key, None)

    def forget_all(self) -> None:
        self._cache.clear()
        self._users.clear()


def _remember(cache: dict[K, Entry], key: K, until: float, who: Principal, last: float = math.inf) -> None:
    if len(cache) >= CACHE_SIZE and key not in cache:
        cache.pop(next(iter(cache)))
    cache[key] = (until, who, last)


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
