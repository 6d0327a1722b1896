"""Users, tokens and subscriptions: shared by `herald admin ...` and the `/v1/admin/*` endpoints."""

from __future__ import annotations

import contextlib

import asyncpg
import redis.asyncio as aioredis

from service.auth.tokens import new_token, token_hash
from service.errors import NotFound, Unavailable
from service.keys import Channels
from service.model import Principal
from service.store import users

ROLES = ("member", "manager", "admin")


class Created(Principal, frozen=True):
    token: str


async def create_user(conn: asyncpg.Connection, tenant: str, user: str, role: str | None = "member") -> Created:
    """The user (created, or given `role` if they exist) and a new personal token for them."""
    async with conn.transaction():
        tenant_id = await users.ensure_tenant(conn, tenant)
        who = await users.upsert_user(conn, tenant_id, user, role)
        token = new_token("pat")
        await users.insert_token(conn, who.user_id, "pat", token_hash(token))
    return Created(**{f: getattr(who, f) for f in who.__struct_fields__}, token=token)


async def create_token(conn: asyncpg.Connection, tenant: str, user: str, kind: str = "pat") -> str:
    """A new token for a user, who is created as a member if they do not exist yet."""
    async with conn.transaction():
        tenant_id = await users.ensure_tenant(conn, tenant)
        who = await users.upsert_user(conn, tenant_id, user, None)
        token = new_token(kind)
        await users.insert_token(conn, who.user_id, kind, token_hash(token))
    return token


async def subscribe(conn: asyncpg.Connection, tenant: str, user: str, topic: str) -> None:
    async with conn.transaction():
        tenant_id = await users.ensure_tenant(conn, tenant)
        who = await users.upsert_user(conn, tenant_id, user, None)
        await users.subscribe(conn, tenant_id, topic, who.user_id)


async def deactivate(conn: asyncpg.Connection, client: aioredis.Redis | None, tenant: str, user: str) -> None:
    """Deactivate a user and tell every API process to forget their cached credentials."""
    tenant_id = await users.tenant_id(conn, tenant)
    user_id = None if tenant_id is None else await users.deactivate(conn, tenant_id, user)
    if user_id is None:
        raise NotFound(f"no user {user!r} in tenant {tenant!r}")
    await _forget_credentials(client, user_id)


async def revoke_token(conn: asyncpg.Connection, client: aioredis.Redis | None, token: str) -> None:
    """Revoke one token at once, in every API process."""
    user_id = await users.revoke_token(conn, token_hash(token))
    if user_id is None:
        raise NotFound("no such token, or it is already revoked")
    await _forget_credentials(client, user_id)


async def _forget_credentials(client: aioredis.Redis | None, user_id: int) -> None:
    """Every API process drops its cached credentials of this user (see service/http/hub.py)."""
    if client is not None:
        # If Redis is down, the API processes' cache TTL still bounds how long the old state lasts.
        with contextlib.suppress(Unavailable):
            await client.publish(Channels.of(client).auth, str(user_id))
