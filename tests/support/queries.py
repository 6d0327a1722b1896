"""What a test reads back from PostgreSQL, and the subscriptions it sets up there."""

from __future__ import annotations

import asyncpg

from service import admin
from service.process import Backends


async def rows(b: Backends, sql: str, *args: object) -> list[asyncpg.Record]:
    async with b.pool.acquire() as conn:
        return await conn.fetch(sql, *args)


async def inbox_of(b: Backends, tenant: str = "acme") -> dict[str, int]:
    found = await rows(
        b,
        """SELECT u.external_id, count(*) FROM inbox i JOIN users u ON u.id = i.user_id
           JOIN tenants t ON t.id = u.tenant_id WHERE t.name = $1 GROUP BY 1""",
        tenant,
    )
    return {r[0]: r[1] for r in found}


async def subscribe(b: Backends, topic: str, users: list[str], tenant: str = "acme") -> None:
    async with b.pool.acquire() as conn:
        for user in users:
            await admin.subscribe(conn, tenant, user, topic)


async def inbox_size(b: Backends) -> int:
    async with b.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM inbox"))
