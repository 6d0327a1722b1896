"""The qualytics profile, endpoint by endpoint, against the seed's shapes and semantics."""

from typing import Any

import httpx
import pytest

from tests.support.factories import Deliver, MakeUser, User

Client = httpx.AsyncClient
BASE = "/api/user-notifications"

FULL = {
    "title": "Scan completed",
    "trigger_type": "Operation",
    "tags": ["healthcare", "nightly"],
    "action_url": "/datastores/101/activity?operation_id=50001",
    "payload": {"action_execution": {"id": 200, "flow_execution": {"id": 300, "flow": {"id": 7, "name": "Gate"}}}},
    "occurred_at": "2026-05-13T12:00:00Z",
}


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


@pytest.fixture
async def bob(make_user: MakeUser) -> User:
    return await make_user(user="bob")


async def test_an_item_has_the_seed_shape(client: Client, alice: User, deliver: Deliver) -> None:
    await deliver(users=["alice"], type="flow", **FULL)
    reply = await client.get(BASE, headers=alice.headers)
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"items", "total", "page", "size", "pages"}
    assert (body["total"], body["page"], body["size"], body["pages"]) == (1, 1, 12, 1)
    item = body["items"][0]
    assert set(item) == {"id", "created", "acknowledged", "notification"}
    assert isinstance(item["id"], int) and item["acknowledged"] is False
    assert item["created"] == "2026-05-13T12:00:00Z"
    assert item["notification"] == {
        "id": item["notification"]["id"],
        "created": "2026-05-13T12:00:00Z",
        "notification_type": "flow",
        "message": "A Scan operation on Healthcare Analytics has completed.",
        "target_uri": "/datastores/101/activity?operation_id=50001",
        "target_url": "https://herald.example/datastores/101/activity?operation_id=50001",
        "action_execution": {"id": 200, "flow_execution": {"id": 300, "flow": {"id": 7, "name": "Gate"}}},
    }


async def test_absolute_action_urls_and_missing_fields(client: Client, alice: User, deliver: Deliver) -> None:
    await deliver(users=["alice"], action_url="https://elsewhere.example/x")
    await deliver(users=["alice"])
    items = (await client.get(BASE, headers=alice.headers)).json()["items"]
    assert items[0]["notification"]["target_uri"] is None
    assert items[0]["notification"]["target_url"] is None
    assert items[0]["notification"]["action_execution"] is None
    assert items[1]["notification"]["target_url"] == "https://elsewhere.example/x"


async def test_both_token_headers_work(client: Client, alice: User, deliver: Deliver) -> None:
    await deliver(users=["alice"])
    for headers in ({"Authorization": f"Bearer {alice.token}"}, {"X-API-Key": alice.token}):
        assert (await client.get(BASE, headers=headers)).json()["total"] == 1


async def test_newest_first_by_default_and_oldest_first_on_request(
    client: Client, alice: User, deliver: Deliver
) -> None:
    for day in (3, 1, 2):
        await deliver(users=["alice"], message=f"day {day}", occurred_at=f"2026-05-0{day}T00:00:00Z")
    newest = [i["notification"]["message"] for i in (await client.get(BASE, headers=alice.headers)).json()["items"]]
    assert newest == ["day 3", "day 2", "day 1"]
    oldest = (await client.get(BASE, params={"sort_created": "asc"}, headers=alice.headers)).json()["items"]
    assert [i["notification"]["message"] for i in oldest] == ["day 1", "day 2", "day 3"]


async def test_pages_and_sizes(client: Client, alice: User, deliver: Deliver) -> None:
    for n in range(30):
        await deliver(users=["alice"], message=f"n{n}", occurred_at=f"2026-05-01T00:00:{n:02d}Z")
    first = (await client.get(BASE, headers=alice.headers)).json()
    assert (first["total"], first["size"], first["pages"], len(first["items"])) == (30, 12, 3, 12)
    third = (await client.get(BASE, params={"page": 3}, headers=alice.headers)).json()
    assert [i["notification"]["message"] for i in third["items"]] == [f"n{n}" for n in range(5, -1, -1)]
    big = (await client.get(BASE, params={"size": 100}, headers=alice.headers)).json()
    assert (len(big["items"]), big["pages"]) == (30, 1)
    beyond = (await client.get(BASE, params={"page": 9}, headers=alice.headers)).json()
    assert beyond["items"] == [] and beyond["total"] == 30


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"size": 0}, ["query", "size"]),
        ({"size": 101}, ["query", "size"]),
        ({"page": 0}, ["query", "page"]),
        ({"page": "x"}, ["query", "page"]),
        ({"sort_created": "sideways"}, ["query", "sort_created"]),
        ({"trigger_type": "Cron"}, ["query", "trigger_type"]),
        ({"include_acknowledged": "perhaps"}, ["query", "include_acknowledged"]),
    ],
)
async def test_bad_parameters_get_fastapi_style_422(
    client: Client, alice: User, params: dict[str, Any], where: list[str]
) -> None:
    reply = await client.get(BASE, params=params, headers=alice.headers)
    assert reply.status_code == 422
    detail = reply.json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"] == where and detail[0]["msg"]


async def test_acknowledged_ones_are_hidden_unless_asked_for(client: Client, alice: User, deliver: Deliver) -> None:
    first = await deliver(users=["alice"])
    await deliver(users=["alice"])
    row = first.deliveries[0].inbox_id
    assert (await client.put(f"{BASE}/acknowledge/{row}", headers=alice.headers)).status_code == 200
    unread = (await client.get(BASE, headers=alice.headers)).json()
    assert unread["total"] == 1 and all(not i["acknowledged"] for i in unread["items"])
    everything = (await client.get(BASE, params={"include_acknowledged": "true"}, headers=alice.headers)).json()
    assert everything["total"] == 2
    assert [i["acknowledged"] for i in everything["items"]] == [False, True]


async def test_trigger_type_and_tag_filters_are_repeatable_ors(client: Client, alice: User, deliver: Deliver) -> None:
    await deliver(users=["alice"], message="anomaly", trigger_type="Anomaly", tags=["a"])
    await deliver(users=["alice"], message="manual", trigger_type="Manual", tags=["b", "c"])
    await deliver(users=["alice"], message="plain")

    async def messages(params: list[tuple[str, str]]) -> set[str]:
        body = (await client.get(BASE, params=params, headers=alice.headers)).json()
        assert body["total"] == len(body["items"])
        return {i["notification"]["message"] for i in body["items"]}

    assert await messages([("trigger_type", "Anomaly")]) == {"anomaly"}
    assert await messages([("trigger_type", "Anomaly"), ("trigger_type", "Manual")]) == {"anomaly", "manual"}
    assert await messages([("tag", "c")]) == {"manual"}
    assert await messages([("tag", "a"), ("tag", "c")]) == {"anomaly", "manual"}
    assert await messages([("tag", "a"), ("trigger_type", "Manual")]) == set()
    assert await messages([("tag", "zzz")]) == set()


async def test_listing_is_a_flat_array_of_the_same_items(client: Client, alice: User, deliver: Deliver) -> None:
    for _ in range(15):
        await deliver(users=["alice"], **FULL)
    listing = (await client.get(f"{BASE}/listing", headers=alice.headers)).json()
    page = (await client.get(BASE, params={"size": 100}, headers=alice.headers)).json()
    assert isinstance(listing, list) and len(listing) == 15
    assert listing == page["items"]


async def test_get_one_and_its_errors(client: Client, alice: User, bob: User, deliver: Deliver) -> None:
    mine = (await deliver(users=["alice"])).deliveries[0].inbox_id
    reply = await client.get(f"{BASE}/{mine}", headers=alice.headers)
    assert reply.status_code == 200 and reply.json()["id"] == mine
    # Another user's id answers exactly like a missing one.
    theirs = await client.get(f"{BASE}/{mine}", headers=bob.headers)
    missing = await client.get(f"{BASE}/999999", headers=bob.headers)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json() == {"detail": "Notification not found"}
    assert (await client.get(f"{BASE}/-1", headers=alice.headers)).status_code == 404
    bad = await client.get(f"{BASE}/abc", headers=alice.headers)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["path", "id"]


async def test_a_shared_event_gives_each_recipient_their_own_row(
    client: Client, alice: User, bob: User, deliver: Deliver
) -> None:
    outcome = await deliver(users=["alice", "bob"])
    a = (await client.get(BASE, headers=alice.headers)).json()["items"][0]
    b = (await client.get(BASE, headers=bob.headers)).json()["items"][0]
    assert a["id"] != b["id"]
    assert a["notification"]["id"] == b["notification"]["id"] == outcome.event_id
    assert (await client.get(f"{BASE}/{a['id']}", headers=bob.headers)).status_code == 404


async def test_acknowledge_one(client: Client, alice: User, bob: User, deliver: Deliver) -> None:
    row = (await deliver(users=["alice"], occurred_at="2026-05-13T12:00:00Z")).deliveries[0].inbox_id
    reply = await client.put(f"{BASE}/acknowledge/{row}", headers=alice.headers)
    assert reply.status_code == 200
    assert reply.json() == {"id": row, "created": "2026-05-13T12:00:00Z", "acknowledged": True}
    assert (await client.put(f"{BASE}/acknowledge/{row}", headers=alice.headers)).status_code == 200  # idempotent
    assert (await client.put(f"{BASE}/acknowledge/{row}", headers=bob.headers)).status_code == 404
    assert (await client.put(f"{BASE}/acknowledge/424242", headers=alice.headers)).status_code == 404
    assert (await client.get(f"{BASE}/{row}", headers=alice.headers)).json()["acknowledged"] is True


async def test_bulk_acknowledge_counts(client: Client, alice: User, bob: User, deliver: Deliver) -> None:
    mine = [(await deliver(users=["alice"])).deliveries[0].inbox_id for _ in range(3)]
    theirs = (await deliver(users=["bob"])).deliveries[0].inbox_id
    body = [{"id": mine[0]}, {"id": mine[1]}, {"id": mine[1]}, {"id": theirs}, {"id": 987654}]
    reply = await client.patch(f"{BASE}/acknowledge", json=body, headers=alice.headers)
    assert reply.status_code == 200
    # Four distinct ids were sent; two of them went from unread to read.
    assert reply.json() == {"acknowledged_count": 2, "requested_count": 4}
    again = await client.patch(f"{BASE}/acknowledge", json=[{"id": mine[0]}], headers=alice.headers)
    assert again.json() == {"acknowledged_count": 0, "requested_count": 1}
    # Bob's notification was not touched.
    assert (await client.get(BASE, headers=bob.headers)).json()["total"] == 1


async def test_an_empty_array_acknowledges_everything_unread(client: Client, alice: User, deliver: Deliver) -> None:
    for _ in range(5):
        await deliver(users=["alice"])
    first = (await client.get(BASE, headers=alice.headers)).json()["items"][0]["id"]
    await client.put(f"{BASE}/acknowledge/{first}", headers=alice.headers)
    reply = await client.patch(f"{BASE}/acknowledge", json=[], headers=alice.headers)
    assert reply.json() == {"acknowledged_count": 4, "requested_count": 4}
    assert (await client.get(BASE, headers=alice.headers)).json()["total"] == 0
    assert (await client.get("/v1/unread-count", headers=alice.headers)).json()["unread_count"] == 0


@pytest.mark.parametrize(
    "body",
    [b'{"id": 1}', b'[{"id": "one"}]', b"[1, 2]", b'[{"ident": 1}]', b"not json", b'[{"id": 1}'],
)
async def test_malformed_acknowledge_bodies_get_422(client: Client, alice: User, body: bytes) -> None:
    reply = await client.patch(
        f"{BASE}/acknowledge", content=body, headers={**alice.headers, "Content-Type": "application/json"}
    )
    assert reply.status_code == 422
    assert isinstance(reply.json()["detail"], list)


async def test_too_many_ids_are_refused(client: Client, alice: User) -> None:
    reply = await client.patch(f"{BASE}/acknowledge", json=[{"id": i} for i in range(1, 1002)], headers=alice.headers)
    assert reply.status_code == 422


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", BASE),
        ("GET", f"{BASE}/listing"),
        ("GET", f"{BASE}/1"),
        ("PATCH", f"{BASE}/acknowledge"),
        ("PUT", f"{BASE}/acknowledge/1"),
    ],
)
async def test_every_endpoint_needs_a_valid_reader_token(
    client: Client, make_user: MakeUser, method: str, path: str
) -> None:
    body = {"json": []} if method == "PATCH" else {}
    none = await client.request(method, path, **body)
    assert none.status_code == 401 and isinstance(none.json()["detail"], str)
    unknown = await client.request(method, path, headers={"Authorization": "Bearer herald_pat_nope"}, **body)
    assert unknown.status_code == 401
    producer = await make_user(user="svc", kind="producer")
    assert (await client.request(method, path, headers=producer.headers, **body)).status_code == 403


async def test_credentials_are_checked_before_the_body(client: Client) -> None:
    reply = await client.patch(f"{BASE}/acknowledge", content=b"garbage", headers={"Content-Type": "application/json"})
    assert reply.status_code == 401


async def test_every_role_may_read(client: Client, make_user: MakeUser, deliver: Deliver) -> None:
    for role in ("member", "manager", "admin"):
        user = await make_user(user=f"r-{role}", role=role)
        await deliver(users=[user.user])
        assert (await client.get(BASE, headers=user.headers)).json()["total"] == 1


async def test_unknown_paths_under_the_mount_answer_in_this_profile(client: Client, alice: User) -> None:
    reply = await client.get("/api/nothing-here", headers=alice.headers)
    assert reply.status_code == 404 and "detail" in reply.json()
