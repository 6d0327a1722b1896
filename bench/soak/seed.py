"""The soak's tenant: users with tokens, a producer token, topics with subscribers.

Made through `service.admin`, the code behind `herald admin create-user / create-token /
subscribe`, on one connection: a few hundred users take a couple of seconds.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import asyncpg

from service import admin


@dataclass
class Tenant:
    name: str
    users: list[str]  # external ids, in creation order
    tokens: dict[str, str]  # user -> reader token
    producer: str
    topics: dict[str, list[str]]  # topic -> subscribers
    user_ids: dict[str, int] = field(default_factory=dict)  # user -> database id


async def seed(
    database_url: str, name: str, *, users: int, topics: int, subscribers: int, rng: random.Random
) -> Tenant:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        names = [f"user-{n:04d}" for n in range(users)]
        tokens = {}
        for user in names:
            tokens[user] = (await admin.create_user(conn, name, user, "member")).token
        producer = await admin.create_token(conn, name, "soak-producer", "producer")
        subscribed: dict[str, list[str]] = {}
        for t in range(topics):
            topic = f"datastore:{100 + t}"
            subscribed[topic] = sorted(rng.sample(names, min(subscribers, len(names))))
            for user in subscribed[topic]:
                await admin.subscribe(conn, name, user, topic)
        rows = await conn.fetch(
            "SELECT u.external_id, u.id FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE t.name = $1", name
        )
    finally:
        await conn.close()
    return Tenant(name, names, tokens, producer, subscribed, {r["external_id"]: r["id"] for r in rows})
