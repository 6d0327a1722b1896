"""Tenants, users, tokens and topic subscriptions."""

from __future__ import annotations

import asyncpg

from service.errors import Conflict
from service.model import Principal
from service.store import erasure

_ENSURE_TENANT = """
WITH found AS (SELECT id FROM tenants WHERE name = $1),
     made AS (INSERT INTO tenants (name) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM found)
              ON CONFLICT (name) DO NOTHING RETURNING id)
SELECT id FROM found UNION ALL SELECT id FROM made
"""
_TENANT_ID = "SELECT id FROM tenants WHERE name = $1"

# Creates the users that do not exist yet (as members) together with their counts row, and returns
# nothing: callers that need ids resolve them afterwards. Sorted so that two concurrent calls take
# the unique-index locks in the same order and cannot deadlock.
_ENSURE_MEMBERS = """
WITH made AS (
    INSERT INTO users (tenant_id, external_id)
    SELECT $1, x FROM (SELECT DISTINCT unnest($2::text[]) AS x ORDER BY 1) wanted
    ON CONFLICT (tenant_id, external_id) DO NOTHING
    RETURNING id
)
INSERT INTO inbox_counts (user_id) SELECT id FROM made
"""
_SET_ROLE = """
UPDATE users SET role = $3 WHERE tenant_id = $1 AND external_id = $2 AND role <> $3
"""
_USER = """
SELECT u.id, u.external_id, u.tenant_id, t.name, u.role, u.active
FROM users u JOIN tenants t ON t.id = u.tenant_id
WHERE u.tenant_id = $1 AND u.external_id = $2
"""
_DEACTIVATE = "UPDATE users SET active = false WHERE tenant_id = $1 AND external_id = $2 RETURNING id"
_INSERT_TOKEN = "INSERT INTO tokens (hash, user_id, kind) VALUES ($1, $2, $3)"  # noqa: S105 - SQL, not a secret
_PRINCIPAL_BY_TOKEN = """
SELECT u.id, u.external_id, u.tenant_id, t.name, u.role, u.active, k.kind
FROM tokens k JOIN users u ON u.id = k.user_id JOIN tenants t ON t.id = u.tenant_id
WHERE k.hash = $1 AND k.revoked_at IS NULL
"""  # noqa: S105 - SQL, not a secret
_REVOKE_TOKEN = """
UPDATE tokens SET revoked_at = now() WHERE hash = $1 AND revoked_at IS NULL RETURNING user_id
"""  # noqa: S105 - SQL, not a secret
_SUBSCRIBE = """
INSERT INTO subscriptions (tenant_id, topic, user_id) VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING
"""


async def ensure_tenant(conn: asyncpg.Connection, name: str) -> int:
    tenant_id: int | None = await conn.fetchval(_ENSURE_TENANT, name)
    if tenant_id is None:  # lost a race with a concurrent insert of the same name
        tenant_id = await conn.fetchval(_TENANT_ID, name)
    assert tenant_id is not None
    return tenant_id


async def tenant_id(conn: asyncpg.Connection, name: str) -> int | None:
    value: int | None = await conn.fetchval(_TENANT_ID, name)
    return value


async def ensure_members(conn: asyncpg.Connection, tenant_id: int, external_ids: list[str]) -> None:
    if external_ids:
        await conn.execute(_ENSURE_MEMBERS, tenant_id, external_ids)


def _principal(row: asyncpg.Record, kind: str) -> Principal:
    return Principal(
        user_id=row[0], user=row[1], tenant_id=row[2], tenant=row[3], role=row[4], active=row[5], kind=kind
    )


async def upsert_user(conn: asyncpg.Connection, tenant_id: int, external_id: str, role: str | None) -> Principal:
    """The user, created if missing; `role`, when given, replaces the current one. Conflict while
    the user is being erased: they exist again only once that is done."""
    await ensure_members(conn, tenant_id, [external_id])
    if await erasure.erasing(conn, tenant_id, external_id):
        raise Conflict(f"user {external_id!r} is being erased; try again once that is done")
    if role is not None:
        await conn.execute(_SET_ROLE, tenant_id, external_id, role)
    row = await conn.fetchrow(_USER, tenant_id, external_id)
    assert row is not None
    return _principal(row, "pat")


async def find_user(conn: asyncpg.Connection, tenant_id: int, external_id: str) -> Principal | None:
    row = await conn.fetchrow(_USER, tenant_id, external_id)
    return None if row is None else _principal(row, "pat")


async def deactivate(conn: asyncpg.Connection, tenant_id: int, external_id: str) -> int | None:
    value: int | None = await conn.fetchval(_DEACTIVATE, tenant_id, external_id)
    return value


async def insert_token(conn: asyncpg.Connection, user_id: int, kind: str, digest: bytes) -> None:
    await conn.execute(_INSERT_TOKEN, digest, user_id, kind)


async def principal_by_token(conn: asyncpg.Connection, digest: bytes) -> Principal | None:
    row = await conn.fetchrow(_PRINCIPAL_BY_TOKEN, digest)
    return None if row is None else _principal(row, row[6])


async def revoke_token(conn: asyncpg.Connection, digest: bytes) -> int | None:
    """Revoke a token; its owner's id, or None if no live token has that hash."""
    value: int | None = await conn.fetchval(_REVOKE_TOKEN, digest)
    return value


async def subscribe(conn: asyncpg.Connection, tenant_id: int, topic: str, user_id: int) -> None:
    await conn.execute(_SUBSCRIBE, tenant_id, topic, user_id)
