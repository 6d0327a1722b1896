"""The one-source audiences (service/store/audiences.py) reach exactly whom the general one reaches:
each chunk statement is run on the same event, in a transaction rolled back, and the rows compared."""

from __future__ import annotations

import asyncpg
import pytest

from service import admin
from service.process import Backends
from service.store import audiences, fanout, preferences
from tests.support.factories import MakeUser

# Whom each case's event is for, and the audience it must be taken for.
CASES = [
    ({"audience_topics": ["t"]}, audiences.ONE_TOPIC),
    ({"audience_all": True}, audiences.EVERYONE),
    ({"audience_all": True, "audience_topics": ["t", "u"], "audience_users": ["named", "gone"]}, audiences.EVERYONE),
    ({"audience_topics": ["t", "u"]}, audiences.GENERAL),
    ({"audience_topics": ["t"], "audience_users": ["named"]}, audiences.GENERAL),
]


async def recipients(conn: asyncpg.Connection, sql: str, event_id: int) -> set[int]:
    """The users a chunk statement writes rows for, over every id, rolled back."""
    tx = conn.transaction()
    await tx.start()
    try:
        chunk = "INSERT INTO fanout_chunks (event_id, lo, hi) VALUES ($1, 1, $2)"
        await conn.execute(chunk, event_id, fanout.MAX_USER_ID)
        await conn.execute(sql, event_id, 1, fanout.MAX_USER_ID)
        return {r[0] for r in await conn.fetch("SELECT user_id FROM inbox WHERE event_id = $1", event_id)}
    finally:
        await tx.rollback()


@pytest.mark.parametrize(("audience", "expected"), CASES)
async def test_a_one_source_audience_is_the_general_one(
    backends: Backends, make_user: MakeUser, audience: dict[str, object], expected: str
) -> None:
    plain = [await make_user(user=f"plain{n}") for n in range(5)]
    named = await make_user(user="named")
    gone = await make_user(user="gone")
    elsewhere = await make_user(tenant="other", user="plain0")
    mutes = {
        "no-topic": preferences.Mutes(topics=("t",)),
        "no-type": preferences.Mutes(types=("scan",)),
        "no-category": preferences.Mutes(categories=("ops",)),
        "no-other": preferences.Mutes(types=("other",), topics=("x",)),
    }
    muting = {}
    async with backends.pool.acquire() as conn:
        for name, mute in mutes.items():
            muting[name] = (await make_user(user=name)).user_id
            await preferences.replace(conn, muting[name], mute)
            await admin.subscribe(conn, "acme", name, "t")
        for user in [*plain[:3], gone]:
            await admin.subscribe(conn, "acme", user.user, "t")
        await admin.subscribe(conn, "acme", plain[3].user, "u")
        await admin.subscribe(conn, "other", elsewhere.user, "t")
        await admin.deactivate(conn, None, "acme", "gone")
        tenant = await conn.fetchval("SELECT id FROM tenants WHERE name = 'acme'")
        event_id = await conn.fetchval(
            """INSERT INTO events (tenant_id, external_id, type, category, message, occurred_at,
                                   audience_topics, audience_users, audience_all)
               VALUES ($1, 'e', 'scan', 'ops', 'm', now(), $2, $3, $4) RETURNING id""",
            tenant,
            audience.get("audience_topics", []),
            audience.get("audience_users", []),
            audience.get("audience_all", False),
        )
        source, grouped = await audiences.kind(conn, event_id)
        assert (source, grouped) == (expected, False)
        general = await recipients(conn, fanout._RUN_CHUNK[audiences.GENERAL], event_id)
        chosen = await recipients(conn, fanout._RUN_CHUNK[source], event_id)
    assert chosen == general
    assert plain[0].user_id in general and muting["no-other"] in general
    assert muting["no-type"] not in general and muting["no-category"] not in general
    assert (muting["no-topic"] in general) == (source == audiences.EVERYONE)  # `all` ignores topic mutes
    assert (named.user_id in general) == (source == audiences.EVERYONE or "named" in str(audience))
    assert gone.user_id not in general and elsewhere.user_id not in general
