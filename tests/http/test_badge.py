"""GET /v1/unread-count: exact, cached, conditional, and rebuilt once when the cache is cold."""

import asyncio

import httpx
import pytest
import redis.asyncio as aioredis

from service import ids
from service.counts import decode_counts
from service.keys import count_key
from service.metrics import AUTH_LOOKUPS, COUNT_READS
from service.process import Backends
from tests.support.factories import Deliver, MakeUser, User

BADGE = "/v1/unread-count"


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


async def badge(client: httpx.AsyncClient, user: User) -> tuple[int, str]:
    reply = await client.get(BADGE, headers=user.headers)
    assert reply.status_code == 200
    return reply.json()["unread_count"], reply.headers["etag"]


async def test_the_etag_changes_with_every_kind_of_change(
    client: httpx.AsyncClient, alice: User, deliver: Deliver
) -> None:
    rows = [(await deliver(users=["alice"])).deliveries[0].inbox_id for _ in range(4)]
    h = alice.headers
    sb = [ids.to_scalebox(r) for r in rows]
    changes = [
        ("arrival", lambda: deliver(users=["alice"]), 5),
        ("read", lambda: client.patch(f"/v1/notifications/{sb[0]}/read", headers=h), 4),
        ("unread", lambda: client.patch(f"/v1/notifications/{sb[0]}/unread", headers=h), 5),
        (
            "bulk read",
            lambda: client.patch("/v1/notifications/bulk-read", json={"notification_ids": sb[:2]}, headers=h),
            3,
        ),
        (
            "bulk unread",
            lambda: client.patch("/v1/notifications/bulk-unread", json={"notification_ids": sb[:1]}, headers=h),
            4,
        ),
        (
            "qualytics ack",
            lambda: client.patch("/api/user-notifications/acknowledge", json=[{"id": rows[2]}], headers=h),
            3,
        ),
        ("delete", lambda: client.delete(f"/v1/notifications/{sb[3]}", headers=h), 2),
        ("read all", lambda: client.patch("/v1/notifications/read-all", headers=h), 0),
        ("delete all", lambda: client.delete("/v1/notifications", headers=h), 0),
    ]
    count, tag = await badge(client, alice)
    assert count == 4
    for name, change, expected in changes:
        await change()
        new_count, new_tag = await badge(client, alice)
        assert new_count == expected, name
        assert new_tag != tag, f"the ETag did not change after {name}"
        stale = await client.get(BADGE, headers={**h, "If-None-Match": tag})
        assert stale.status_code == 200, name
        fresh = await client.get(BADGE, headers={**h, "If-None-Match": new_tag})
        assert fresh.status_code == 304 and fresh.content == b"", name
        tag = new_tag


async def test_a_change_that_changes_nothing_keeps_the_etag(
    client: httpx.AsyncClient, alice: User, deliver: Deliver
) -> None:
    await deliver(users=["alice"])
    await client.patch("/v1/notifications/read-all", headers=alice.headers)
    _, tag = await badge(client, alice)
    await client.patch("/v1/notifications/read-all", headers=alice.headers)
    await client.patch("/api/user-notifications/acknowledge", json=[], headers=alice.headers)
    assert (await client.get(BADGE, headers={**alice.headers, "If-None-Match": tag})).status_code == 304


async def test_the_count_is_never_capped(client: httpx.AsyncClient, alice: User, backends: Backends) -> None:
    async with backends.pool.acquire() as conn:
        # 150 distinct events for alice, written the quick way.
        tenant = await conn.fetchval("SELECT tenant_id FROM users WHERE id = $1", alice.user_id)
        await conn.execute(
            """WITH e AS (INSERT INTO events (tenant_id, external_id, type, message, occurred_at)
                          SELECT $1, 'bulk-' || g, 't', 'm', now() FROM generate_series(1, 150) g RETURNING id)
               INSERT INTO inbox (user_id, event_id, created_at) SELECT $2, id, now() FROM e""",
            tenant,
            alice.user_id,
        )
        await conn.execute(
            "UPDATE inbox_counts SET unread = 150, total = 150, unseen = 150, version = version + 1 WHERE user_id = $1",
            alice.user_id,
        )
    assert (await badge(client, alice))[0] == 150


async def test_a_cold_cache_is_rebuilt_once_for_many_concurrent_polls(
    client: httpx.AsyncClient, alice: User, deliver: Deliver, redis_client: aioredis.Redis
) -> None:
    for _ in range(3):
        await deliver(users=["alice"])
    await badge(client, alice)  # warms the credential cache
    await redis_client.flushdb()
    before = COUNT_READS.labels("rebuild")._value.get()
    replies = await asyncio.gather(*(client.get(BADGE, headers=alice.headers) for _ in range(50)))
    assert {r.json()["unread_count"] for r in replies} == {3}
    assert COUNT_READS.labels("rebuild")._value.get() - before == 1


async def test_a_flushed_cache_comes_back_exact(
    client: httpx.AsyncClient, alice: User, deliver: Deliver, redis_client: aioredis.Redis, backends: Backends
) -> None:
    rows = [(await deliver(users=["alice"])).deliveries[0].inbox_id for _ in range(3)]
    await client.put(f"/api/user-notifications/acknowledge/{rows[0]}", headers=alice.headers)
    count, tag = await badge(client, alice)
    await redis_client.flushdb()
    assert await redis_client.get(count_key(alice.user_id)) is None
    again, same_tag = await badge(client, alice)
    assert (again, same_tag) == (count, tag) == (2, tag)  # the version lives in PostgreSQL
    cached = await redis_client.get(count_key(alice.user_id))
    assert cached is not None
    async with backends.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT unread, total, version, unseen FROM inbox_counts WHERE user_id = $1", alice.user_id
        )
    assert decode_counts(alice.user_id, cached) == decode_counts(
        alice.user_id, b"%d:%d:%d:%d" % (row[2], row[0], row[1], row[3])
    )
    # Later changes land on the rebuilt copy.
    await deliver(users=["alice"])
    assert (await badge(client, alice))[0] == 3


async def test_an_older_copy_never_replaces_a_newer_one(backends: Backends, alice: User) -> None:
    from service.model import Counts

    newer = Counts(user_id=alice.user_id, unread=1, total=5, version=10)
    older = Counts(user_id=alice.user_id, unread=7, total=7, version=9)
    await backends.counts.copy([newer])
    await backends.counts.copy([older])
    await backends.counts.fill(older)
    assert await backends.counts.cached(alice.user_id) == newer


async def test_the_poll_interval_comes_from_the_settings(alice: User, settings: object, clean: None) -> None:
    import msgspec

    from tests.support.http import serving

    async with serving(msgspec.structs.replace(settings, poll_interval=7)) as c:  # type: ignore[type-var]
        assert (await c.get(BADGE, headers=alice.headers)).headers["x-poll-interval"] == "7"


async def test_the_fast_path_and_the_full_route_answer_alike(
    client: httpx.AsyncClient, alice: User, deliver: Deliver, backends: Backends
) -> None:
    """The first poll goes through the full route (nothing cached yet); later ones take the
    fast path. Status, headers and body must not tell them apart."""
    await deliver(users=["alice"])
    misses = AUTH_LOOKUPS.labels("miss")._value.get()

    def shape(reply: httpx.Response) -> tuple[int, dict[str, str], bytes]:
        keep = ("etag", "cache-control", "x-poll-interval", "content-type")
        return reply.status_code, {k: reply.headers[k] for k in keep if k in reply.headers}, reply.content

    slow = await client.get(BADGE, headers=alice.headers)
    assert AUTH_LOOKUPS.labels("miss")._value.get() == misses + 1  # the guard ran: the full route
    fast = await client.get(BADGE, headers=alice.headers)
    assert AUTH_LOOKUPS.labels("miss")._value.get() == misses + 1
    assert shape(fast) == shape(slow)
    assert fast.headers["content-length"] == str(len(fast.content))
    etag = slow.headers["etag"]
    await redis_flush_count(backends, alice)
    slow304 = await client.get(BADGE, headers={**alice.headers, "If-None-Match": etag})
    fast304 = await client.get(BADGE, headers={**alice.headers, "If-None-Match": f'W/{etag}, "other"'})
    assert shape(slow304) == shape(fast304) and slow304.status_code == 304
    # Whatever the fast path cannot vouch for goes to the full route and its errors.
    assert (await client.get(BADGE)).status_code == 401
    assert (await client.get(BADGE, headers={"X-API-Key": "herald_pat_unknown"})).status_code == 401


async def redis_flush_count(b: Backends, user: User) -> None:
    await b.redis.delete(count_key(user.user_id))
