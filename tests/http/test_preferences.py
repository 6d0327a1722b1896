"""GET and PUT /v1/preferences: the round trip, validation, and one user's preferences only."""

from typing import Any

import httpx
import pytest

from service import admin
from service.process import Backends
from tests.support.factories import Deliver, MakeUser

Client = httpx.AsyncClient
NONE = {"muted": {"types": [], "categories": [], "topics": []}}


def muted(types: list[str] | None = None, categories: list[str] | None = None, topics: list[str] | None = None) -> Any:
    return {"muted": {"types": types or [], "categories": categories or [], "topics": topics or []}}


async def test_a_user_who_muted_nothing_gets_empty_lists(client: Client, make_user: MakeUser) -> None:
    alice = await make_user(user="alice")
    reply = await client.get("/v1/preferences", headers=alice.headers)
    assert reply.status_code == 200 and reply.json() == NONE


async def test_put_replaces_and_get_returns_what_was_put(
    client: Client, make_user: MakeUser, backends: Backends
) -> None:
    alice = await make_user(user="alice")
    body = muted(["scan.completed", "scan.failed"], ["billing"], ["datastore:101"])
    put = await client.put("/v1/preferences", json=body, headers=alice.headers)
    assert put.status_code == 200 and put.json() == body
    assert (await client.get("/v1/preferences", headers=alice.headers)).json() == body

    # A second PUT replaces the whole: what it leaves out is unmuted.
    smaller = muted(topics=["datastore:7", "datastore:7", "datastore:8"])
    put = await client.put("/v1/preferences", json=smaller, headers={"X-API-Key": alice.token})
    assert put.json() == muted(topics=["datastore:7", "datastore:8"])  # repeats kept once
    assert (await client.get("/v1/preferences", headers=alice.headers)).json() == put.json()

    # Muting nothing leaves no row behind.
    assert (await client.put("/v1/preferences", json=NONE, headers=alice.headers)).json() == NONE
    async with backends.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM preferences") == 0
    assert (await client.get("/v1/preferences", headers=alice.headers)).json() == NONE


async def test_one_users_preferences_are_theirs_alone(client: Client, make_user: MakeUser) -> None:
    alice = await make_user(user="alice")
    bob = await make_user(user="bob")
    other = await make_user(tenant="globex", user="alice")  # same user id, another tenant
    await client.put("/v1/preferences", json=muted(types=["a"]), headers=alice.headers)
    await client.put("/v1/preferences", json=muted(categories=["b"]), headers=bob.headers)
    assert (await client.get("/v1/preferences", headers=alice.headers)).json() == muted(types=["a"])
    assert (await client.get("/v1/preferences", headers=bob.headers)).json() == muted(categories=["b"])
    assert (await client.get("/v1/preferences", headers=other.headers)).json() == NONE
    await client.put("/v1/preferences", json=NONE, headers=bob.headers)
    assert (await client.get("/v1/preferences", headers=alice.headers)).json() == muted(types=["a"])


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"muted": {}},
        {"muted": {"types": [], "categories": []}},  # a PUT replaces everything: all three are needed
        {"muted": {"types": [], "categories": [], "topics": []}, "extra": 1},
        {"muted": {"types": [], "categories": [], "topics": [], "tags": []}},
        muted(types=[""]),
        muted(types=["x" * 201]),
        muted(topics=[f"t{i}" for i in range(101)]),
        {"muted": {"types": "scan.completed", "categories": [], "topics": []}},
        {"muted": {"types": [7], "categories": [], "topics": []}},
        [],
        "muted",
    ],
)
async def test_a_bad_body_is_refused_and_changes_nothing(client: Client, make_user: MakeUser, body: Any) -> None:
    alice = await make_user(user="alice")
    await client.put("/v1/preferences", json=muted(types=["keep"]), headers=alice.headers)
    reply = await client.put("/v1/preferences", json=body, headers=alice.headers)
    assert reply.status_code == 400, reply.text
    assert reply.json()["status"] == 400 and reply.json()["error"]
    assert (await client.get("/v1/preferences", headers=alice.headers)).json() == muted(types=["keep"])


async def test_refusals_name_the_entry(client: Client, make_user: MakeUser) -> None:
    alice = await make_user(user="alice")
    reply = await client.put("/v1/preferences", json=muted(categories=["ok", "a\x00b"]), headers=alice.headers)
    assert reply.status_code == 400
    assert reply.json()["field"] == "muted.categories[1]" and "NUL" in reply.json()["error"]
    empty = await client.put("/v1/preferences", json=muted(topics=["ok", ""]), headers=alice.headers)
    assert empty.status_code == 400 and empty.json()["field"] == "muted.topics[1]"
    not_json = await client.put("/v1/preferences", content=b"{not json", headers=alice.headers)
    assert not_json.status_code == 400 and not_json.json()["status"] == 400
    assert (await client.get("/v1/preferences", headers=alice.headers)).json() == NONE


async def test_the_limits_themselves_are_accepted(client: Client, make_user: MakeUser) -> None:
    alice = await make_user(user="alice")
    body = muted(types=[f"{i:03d}" + "x" * 197 for i in range(100)], topics=["é" * 200])
    reply = await client.put("/v1/preferences", json=body, headers=alice.headers)
    assert reply.status_code == 200 and reply.json() == body


async def test_tokens_are_checked_as_on_every_reader_endpoint(
    client: Client, make_user: MakeUser, backends: Backends
) -> None:
    producer = await make_user(user="svc", kind="producer")
    gone = await make_user(user="gone")
    async with backends.pool.acquire() as conn:
        await admin.deactivate(conn, None, "acme", "gone")
    for method in ("GET", "PUT"):
        body = NONE if method == "PUT" else None
        assert (await client.request(method, "/v1/preferences", json=body)).status_code == 401
        bad = {"Authorization": "Bearer herald_pat_nope"}
        assert (await client.request(method, "/v1/preferences", json=body, headers=bad)).status_code == 401
        assert (await client.request(method, "/v1/preferences", json=body, headers=producer.headers)).status_code == 403
        reply = await client.request(method, "/v1/preferences", json=body, headers=gone.headers)
        assert reply.status_code == 403 and reply.json()["status"] == 403


async def test_muted_events_never_reach_the_inbox_or_the_badge(
    client: Client, make_user: MakeUser, deliver: Deliver
) -> None:
    alice = await make_user(user="alice")
    await client.put("/v1/preferences", json=muted(types=["noisy"]), headers=alice.headers)
    await deliver(type="noisy", users=["alice"])
    await deliver(type="useful", users=["alice"])
    badge = await client.get("/v1/unread-count", headers=alice.headers)
    assert badge.json()["unread_count"] == 1
    listed = await client.get("/v1/notifications", headers=alice.headers)
    assert [n["type"] for n in listed.json()["data"]["notifications"]] == ["useful"]


async def test_the_routes_are_in_the_openapi_document(client: Client) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    assert set(paths["/v1/preferences"]) >= {"get", "put"}
