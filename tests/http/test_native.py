"""Herald's own endpoints: badge count, publishing, administration, health, OpenAPI."""

from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from service.keys import STREAM
from tests.support.factories import Deliver, MakeUser, User

Client = httpx.AsyncClient


def event(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": "e1", "type": "t", "tenant": "acme", "audience": {"users": ["alice"]}, "message": "m"}
    body.update(fields)
    return body


@pytest.fixture
async def producer(make_user: MakeUser) -> User:
    return await make_user(user="publisher", kind="producer")


async def queued(r: aioredis.Redis) -> list[dict[str, Any]]:
    return [msgspec.json.decode(fields[b"event"]) for _, fields in await r.xrange(STREAM)]


async def test_unread_count_with_its_caching_headers(client: Client, make_user: MakeUser, deliver: Deliver) -> None:
    alice = await make_user(user="alice")
    await deliver(users=["alice"])
    await deliver(users=["alice"])
    reply = await client.get("/v1/unread-count", headers=alice.headers)
    assert reply.status_code == 200 and reply.json()["unread_count"] == 2
    assert reply.headers["cache-control"] == "private, no-cache"
    assert reply.headers["x-poll-interval"] == "30"
    etag = reply.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    same = await client.get("/v1/unread-count", headers={**alice.headers, "If-None-Match": etag})
    assert same.status_code == 304 and same.content == b"" and same.headers["etag"] == etag
    await deliver(users=["alice"])
    changed = await client.get("/v1/unread-count", headers={**alice.headers, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["unread_count"] == 3
    assert changed.headers["etag"] != etag


async def test_two_users_never_share_an_etag(client: Client, make_user: MakeUser) -> None:
    a, b = await make_user(user="a"), await make_user(user="b")
    tag_a = (await client.get("/v1/unread-count", headers=a.headers)).headers["etag"]
    reply = await client.get("/v1/unread-count", headers={**b.headers, "If-None-Match": tag_a})
    assert reply.status_code == 200


async def test_publishing_queues_every_event_as_received(
    client: Client, producer: User, redis_client: aioredis.Redis
) -> None:
    one = await client.post("/v1/events", json=event(), headers=producer.headers)
    assert one.status_code == 202 and one.json() == {"accepted": 1}
    batch = [event(id=f"b{i}") for i in range(3)]
    many = await client.post("/v1/events", json=batch, headers=producer.headers)
    assert many.status_code == 202 and many.json() == {"accepted": 3}
    assert [e["id"] for e in await queued(redis_client)] == ["e1", "b0", "b1", "b2"]


async def test_one_invalid_member_refuses_the_whole_batch(
    client: Client, producer: User, redis_client: aioredis.Redis
) -> None:
    batch = [event(id="ok"), event(id="bad", audience={"users": [7]}), event(id="ok2")]
    reply = await client.post("/v1/events", json=batch, headers=producer.headers)
    assert reply.status_code == 422
    body = reply.json()
    assert body["member"] == 1 and body["field"] == "audience.users[0]" and body["error"]
    assert await queued(redis_client) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (event(message=""), "message"),
        (event(audience={}), "audience"),
        (event(trigger_type="Cron"), "trigger_type"),
        ({"id": "x"}, ""),
    ],
)
async def test_a_single_invalid_event_names_its_field(
    client: Client, producer: User, body: dict[str, Any], field: str
) -> None:
    reply = await client.post("/v1/events", json=body, headers=producer.headers)
    assert reply.status_code == 422
    assert reply.json().get("field", "") == field
    assert "member" not in reply.json()


async def test_bodies_that_are_not_events(client: Client, producer: User) -> None:
    for raw in (b"nope", b"[]", b"42", b'"x"', b"[1]"):
        reply = await client.post(
            "/v1/events", content=raw, headers={**producer.headers, "Content-Type": "application/json"}
        )
        assert reply.status_code == 422, raw
    too_many = [event(id=f"m{i}") for i in range(1001)]
    assert (await client.post("/v1/events", json=too_many, headers=producer.headers)).status_code == 422


async def test_publishing_needs_a_producer_token_of_the_events_tenant(
    client: Client, make_user: MakeUser, producer: User, redis_client: aioredis.Redis
) -> None:
    reader = await make_user(user="reader")
    assert (await client.post("/v1/events", json=event())).status_code == 401
    assert (await client.post("/v1/events", json=event(), headers=reader.headers)).status_code == 403
    other = await client.post("/v1/events", json=[event(), event(id="x", tenant="globex")], headers=producer.headers)
    assert other.status_code == 403 and "globex" in other.json()["error"]
    assert await queued(redis_client) == []


async def test_admins_create_users_with_tokens_in_their_own_tenant(client: Client, make_user: MakeUser) -> None:
    root = await make_user(user="root", role="admin")
    reply = await client.post("/v1/admin/users", json={"user": "newbie", "role": "manager"}, headers=root.headers)
    assert reply.status_code == 201
    made = reply.json()
    assert made["user"] == "newbie" and made["role"] == "manager" and made["token"].startswith("herald_pat_")
    fresh = await client.get("/api/user-notifications", headers={"Authorization": f"Bearer {made['token']}"})
    assert fresh.status_code == 200
    default = await client.post("/v1/admin/users", json={"user": "plain"}, headers=root.headers)
    assert default.json()["role"] == "member"
    sub = await client.post(
        "/v1/admin/subscriptions", json={"user": "newbie", "topic": "datastore:7"}, headers=root.headers
    )
    assert sub.status_code == 201 and sub.json() == {"user": "newbie", "topic": "datastore:7"}


async def test_admin_endpoints_refuse_others(client: Client, make_user: MakeUser) -> None:
    manager = await make_user(user="m", role="manager")
    assert (await client.post("/v1/admin/users", json={"user": "x"}, headers=manager.headers)).status_code == 403
    assert (await client.post("/v1/admin/users", json={"user": "x"})).status_code == 401
    root = await make_user(user="root", role="admin")
    bad = await client.post("/v1/admin/users", json={"user": "x", "role": "emperor"}, headers=root.headers)
    assert bad.status_code == 400
    assert (await client.post("/v1/admin/users", json={"user": ""}, headers=root.headers)).status_code == 400


async def test_deactivated_users_are_refused_at_once(client: Client, make_user: MakeUser, backends: Any) -> None:
    from service import admin

    alice = await make_user(user="alice")
    assert (await client.get("/v1/unread-count", headers=alice.headers)).status_code == 200
    async with backends.pool.acquire() as conn:
        await admin.deactivate(conn, backends.redis, "acme", "alice")
    # The principal was cached by the first call; the invalidation message drops it.
    for _ in range(50):
        reply = await client.get("/v1/unread-count", headers=alice.headers)
        if reply.status_code == 403:
            break
        import asyncio

        await asyncio.sleep(0.02)
    assert reply.status_code == 403


async def test_health(client: Client) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "postgres": "ok", "redis": "ok"}


async def test_the_openapi_document_describes_every_endpoint(client: Client) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    paths = spec["paths"]
    for path, method in [
        ("/v1/unread-count", "get"),
        ("/v1/events", "post"),
        ("/v1/admin/users", "post"),
        ("/v1/admin/subscriptions", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/api/user-notifications", "get"),
        ("/api/user-notifications/listing", "get"),
        ("/api/user-notifications/{id}", "get"),
        ("/api/user-notifications/acknowledge", "patch"),
        ("/api/user-notifications/acknowledge/{id}", "put"),
    ]:
        assert method in paths[path], (path, method)
    body = paths["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/Event"} in body["oneOf"]


async def test_oversized_bodies_are_refused(client: Client, producer: User) -> None:
    huge = b"[" + b" " * (17 * 1024 * 1024) + b"]"
    reply = await client.post(
        "/v1/events", content=huge, headers={**producer.headers, "Content-Type": "application/json"}
    )
    assert reply.status_code == 413 and reply.json()["status"] == 413


async def test_the_api_reference_can_be_browsed(client: Client) -> None:
    page = await client.get("/schema")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
