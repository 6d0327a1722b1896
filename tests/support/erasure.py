"""What an erasure must leave behind: nothing of the user, in any table or Redis key, and everyone
else exactly as they were."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

# Every table with a user_id column, found in the catalog: a table added later is checked too.
_USER_TABLES = """
SELECT table_name FROM information_schema.columns
WHERE table_schema = current_schema() AND column_name = 'user_id' ORDER BY 1
"""
# Everyone's rows, in every table that holds per-user state, as text, apart from one user's.
_OTHERS = {
    "users": "SELECT u.*::text FROM users u WHERE u.id <> $1 ORDER BY id",
    "inbox": "SELECT i.*::text FROM inbox i WHERE i.user_id <> $1 ORDER BY id",
    "inbox_counts": "SELECT c.*::text FROM inbox_counts c WHERE c.user_id <> $1 ORDER BY user_id",
    "tokens": "SELECT k.*::text FROM tokens k WHERE k.user_id <> $1 ORDER BY hash",
    "subscriptions": "SELECT s.*::text FROM subscriptions s WHERE s.user_id <> $1 ORDER BY 1",
    "preferences": "SELECT p.*::text FROM preferences p WHERE p.user_id <> $1 ORDER BY user_id",
}


async def traces(conn: asyncpg.Connection, redis: aioredis.Redis, user_id: int, tenant: str, user: str) -> list[str]:
    """Everything that still names the user: rows of theirs in any table, their user row, and any
    Redis key that names their id (as its last part) or their external id."""
    found: list[str] = []
    for (table,) in await conn.fetch(_USER_TABLES):
        n = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE user_id = $1", user_id)  # noqa: S608 - a catalog name
        if n:
            found.append(f"{table}: {n} rows")
    if await conn.fetchval("SELECT count(*) FROM users WHERE id = $1", user_id):
        found.append("users: the user row")
    named = await conn.fetchval(
        "SELECT count(*) FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE t.name = $1 AND u.external_id = $2",
        tenant,
        user,
    )
    if named:
        found.append(f"users: {named} rows named {user!r}")
    async for raw in redis.scan_iter(count=1000):
        key = raw.decode(errors="replace")
        if key.rsplit(":", 1)[-1] == str(user_id) or user in key:
            found.append(f"redis: {key}")
    return found


async def others(conn: asyncpg.Connection, user_id: int) -> dict[str, list[str]]:
    """Every other user's state, to compare before and after."""
    return {table: [r[0] for r in await conn.fetch(sql, user_id)] for table, sql in _OTHERS.items()}


async def copies(redis: aioredis.Redis) -> dict[str, bytes | None]:
    """Every cached count copy in Redis, by key."""
    keys = sorted([k.decode() async for k in redis.scan_iter(match="herald:count:*", count=1000)])
    values = await redis.mget(keys) if keys else []
    return dict(zip(keys, values, strict=True))


# $3 notifications for user $1 of tenant $2, each of an event of its own, with the counts to match
# (as the fan-out would leave them): a big inbox in one statement.
_SEED = """
WITH ev AS (
    INSERT INTO events (tenant_id, external_id, type, message, occurred_at, fanout_done_at)
    SELECT $2::bigint, 'seeded-' || $1::bigint || '-' || g, 'seeded', 'A seeded notification',
           now() - g * interval '1 second', now()
    FROM generate_series(1, $3) g
    RETURNING id, occurred_at
),
ins AS (INSERT INTO inbox (user_id, event_id, created_at) SELECT $1::bigint, id, occurred_at FROM ev RETURNING 1)
UPDATE inbox_counts
SET unread = unread + (SELECT count(*) FROM ins), total = total + (SELECT count(*) FROM ins),
    unseen = unseen + (SELECT count(*) FROM ins), version = version + 1
WHERE user_id = $1
"""


async def seed_inbox(conn: asyncpg.Connection, tenant: str, user: str, n: int) -> int:
    """Give an existing user `n` unread notifications; their id."""
    found = await conn.fetchrow(
        """SELECT u.id, u.tenant_id FROM users u JOIN tenants t ON t.id = u.tenant_id
           WHERE t.name = $1 AND u.external_id = $2""",
        tenant,
        user,
    )
    assert found is not None
    await conn.execute(_SEED, found[0], found[1], n)
    return int(found[0])
