"""The scalebox profile, endpoint by endpoint, against the seed's shapes and semantics."""

import re
from typing import Any

import httpx
import pytest

from service import ids
from tests.support.factories import Deliver, MakeUser, User
from tests.support.profiles import ok, refused

Client = httpx.AsyncClient
BASE = "/v1/notifications"


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


@pytest.fixture
async def bob(make_user: MakeUser) -> User:
    return await make_user(user="bob")


async def make(deliver: Deliver, user: str = "alice", **fields: Any) -> str:
    outcome = await deliver(users=[user], **fields)
    return ids.to_scalebox(outcome.deliveries[0].inbox_id)


async def test_list_has_the_seed_shape(client: Client, alice: User, deliver: Deliver) -> None:
    nid = await make(
        deliver,
        type="sandbox_timeout",
        title="Sandbox Timeout Warning",
        message="Your sandbox will timeout soon",
        category="sandbox",
        entity={"type": "sandbox", "id": "sbx-abc123def456789"},
        occurred_at="2026-04-17T11:30:00Z",
    )
    data = ok(await client.get(BASE, headers={"X-API-Key": alice.token}))
    assert set(data) == {"notifications", "pagination", "unread_count"}
    assert data["pagination"] == {"page": 1, "limit": 50, "total": 1, "total_pages": 1, "next_cursor": None}
    assert data["unread_count"] == 1
    item = data["notifications"][0]
    assert item == {
        "id": nid,
        "user_id": "alice",
        "title": "Sandbox Timeout Warning",
        "message": "Your sandbox will timeout soon",
        "type": "sandbox_timeout",
        "is_read": False,
        "category": "sandbox",
        "created_at": "2026-04-17T11:30:00Z",
        "related_entity_type": "sandbox",
        "related_entity_id": "sbx-abc123def456789",
        # Herald's own, beyond the seed: no thread, not archived.
        "group": None,
        "activity_count": 1,
        "actors": [],
        "actor_count": 0,
        "archived_at": None,
        "actions": [],
        "interaction": None,
        "interacted_at": None,
    }
    assert re.fullmatch(r"ntf-[0-9a-z]{15}", item["id"])


async def test_get_one(client: Client, alice: User, bob: User, deliver: Deliver) -> None:
    nid = await make(deliver, entity={"type": "sandbox", "id": "sbx-1"})
    data = ok(await client.get(f"{BASE}/{nid}", headers=alice.headers))
    assert data["id"] == nid and data["related_entity_type"] == "sandbox" and data["related_entity_id"] == "sbx-1"
    assert refused(await client.get(f"{BASE}/{nid}", headers=bob.headers), 404) == "Notification not found"
    for bad in ("ntf-abc123def456789", "42", "ntf-", "not-an-id", ids.to_uuid(1)):
        refused(await client.get(f"{BASE}/{bad}", headers=alice.headers), 404)


async def test_limit_aliases_caps_and_pages(client: Client, alice: User, deliver: Deliver) -> None:
    for n in range(120):
        await make(deliver, message=f"n{n:03d}", occurred_at=f"2026-01-01T00:{n // 60:02d}:{n % 60:02d}Z")

    async def page(**params: Any) -> Any:
        return ok(await client.get(BASE, params=params, headers=alice.headers))

    default = await page()
    assert len(default["notifications"]) == 50
    assert {k: v for k, v in default["pagination"].items() if k != "next_cursor"} == {
        "page": 1,
        "limit": 50,
        "total": 120,
        "total_pages": 3,
    }
    assert default["notifications"][0]["message"] == "n119"
    capped = await page(limit=500)
    assert len(capped["notifications"]) == 100 and capped["pagination"]["limit"] == 100
    assert (await page(page_size=7))["pagination"]["limit"] == 7
    assert (await page(limit=5, page_size=7))["pagination"]["limit"] == 5
    second = await page(limit=10, page=2)
    assert [n["message"] for n in second["notifications"]] == [f"n{i:03d}" for i in range(109, 99, -1)]
    by_offset = await page(limit=10, offset=10, page=7)  # offset wins over page
    assert by_offset["notifications"] == second["notifications"] and by_offset["pagination"]["page"] == 2
    assert (await page(limit=10, skip=10))["notifications"] == second["notifications"]
    assert (await page(limit=10, offset=115))["notifications"][-1]["message"] == "n000"
    assert (await page(offset=500))["notifications"] == []


async def test_read_and_type_filters_with_the_overall_unread_count(
    client: Client, alice: User, deliver: Deliver
) -> None:
    first = await make(deliver, type="a")
    await make(deliver, type="a")
    await make(deliver, type="b")
    ok(await client.patch(f"{BASE}/{first}/read", headers=alice.headers))

    async def listed(**params: Any) -> Any:
        return ok(await client.get(BASE, params=params, headers=alice.headers))

    unread = await listed(read="false")
    assert [n["is_read"] for n in unread["notifications"]] == [False, False] and unread["pagination"]["total"] == 2
    read = await listed(read="true")
    assert [n["id"] for n in read["notifications"]] == [first] and read["pagination"]["total"] == 1
    typed = await listed(type="a")
    assert typed["pagination"]["total"] == 2
    both = await listed(type="a", read="false")
    assert both["pagination"]["total"] == 1
    # unread_count is the user's overall number, whatever the filters.
    assert {unread["unread_count"], read["unread_count"], typed["unread_count"], both["unread_count"]} == {2}
    assert (await listed(type="A"))["pagination"]["total"] == 0  # exact match


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": "x"}, {"page": 0}, {"offset": -1}, {"skip": -5}, {"read": "yes"}, {"page_size": 0}],
)
async def test_bad_parameters_are_400_in_the_envelope(client: Client, alice: User, params: dict[str, Any]) -> None:
    refused(await client.get(BASE, params=params, headers=alice.headers), 400)


async def test_read_and_unread_one(client: Client, alice: User, bob: User, deliver: Deliver) -> None:
    nid = await make(deliver)
    data = ok(await client.patch(f"{BASE}/{nid}/read", headers=alice.headers), "Notification marked as read")
    assert data == {"notification_id": nid, "is_read": True}
    ok(await client.patch(f"{BASE}/{nid}/read", headers=alice.headers))  # already read: still fine
    assert ok(await client.get(f"{BASE}/{nid}", headers=alice.headers))["is_read"] is True
    data = ok(await client.patch(f"{BASE}/{nid}/unread", headers=alice.headers), "Notification marked as unread")
    assert data == {"notification_id": nid, "is_read": False}
    refused(await client.patch(f"{BASE}/{nid}/read", headers=bob.headers), 404)
    refused(await client.patch(f"{BASE}/ntf-zzzzzzzzzzzzzzz/unread", headers=alice.headers), 404)


async def test_read_all(client: Client, alice: User, bob: User, deliver: Deliver) -> None:
    first = await make(deliver)
    for _ in range(3):
        await make(deliver)
    await make(deliver, user="bob")
    ok(await client.patch(f"{BASE}/{first}/read", headers=alice.headers))
    data = ok(await client.patch(f"{BASE}/read-all", headers=alice.headers), "All notifications marked as read")
    assert data == {"marked_count": 3, "is_read": True}
    assert ok(await client.patch(f"{BASE}/read-all", headers=alice.headers)) == {"marked_count": 0, "is_read": True}
    assert ok(await client.get(BASE, headers=bob.headers))["unread_count"] == 1


async def test_delete_one_and_all(client: Client, alice: User, bob: User, deliver: Deliver) -> None:
    nid = await make(deliver)
    theirs = await make(deliver, user="bob")
    refused(await client.delete(f"{BASE}/{theirs}", headers=alice.headers), 404)
    data = ok(await client.delete(f"{BASE}/{nid}", headers=alice.headers), "Notification deleted")
    assert data == {"notification_id": nid, "deleted": True}
    refused(await client.delete(f"{BASE}/{nid}", headers=alice.headers), 404)
    for _ in range(4):
        await make(deliver)
    data = ok(await client.delete(BASE, headers=alice.headers), "All notifications deleted")
    assert data == {"deleted_count": 4}
    listed = ok(await client.get(BASE, headers=alice.headers))
    assert listed["notifications"] == [] and listed["unread_count"] == 0
    assert ok(await client.get(BASE, headers=bob.headers))["pagination"]["total"] == 1


async def test_bulk_actions_count_only_what_changed(client: Client, alice: User, bob: User, deliver: Deliver) -> None:
    mine = [await make(deliver) for _ in range(3)]
    theirs = await make(deliver, user="bob")
    sent = [mine[0], mine[1], mine[1], theirs, "ntf-garbage", "whatever"]
    data = ok(
        await client.patch(f"{BASE}/bulk-read", json={"notification_ids": sent}, headers=alice.headers),
        "Notifications marked as read",
    )
    assert data == {
        "notification_ids": [mine[0], mine[1], theirs, "ntf-garbage", "whatever"],
        "marked_count": 2,
        "is_read": True,
    }
    again = ok(await client.patch(f"{BASE}/bulk-read", json={"notification_ids": mine}, headers=alice.headers))
    assert again["marked_count"] == 1
    data = ok(
        await client.patch(f"{BASE}/bulk-unread", json={"notification_ids": [mine[0], theirs]}, headers=alice.headers),
        "Notifications marked as unread",
    )
    assert data == {"notification_ids": [mine[0], theirs], "marked_count": 1, "is_read": False}
    data = ok(
        await client.post(
            f"{BASE}/bulk-delete", json={"notification_ids": [mine[0], mine[2], theirs]}, headers=alice.headers
        ),
        "Notifications deleted",
    )
    assert data == {"notification_ids": [mine[0], mine[2], theirs], "deleted_count": 2}
    assert ok(await client.get(f"{BASE}/{theirs}", headers=bob.headers))["is_read"] is False
    remaining = ok(await client.get(BASE, headers=alice.headers))
    assert [n["id"] for n in remaining["notifications"]] == [mine[1]] and remaining["unread_count"] == 0


@pytest.mark.parametrize(
    ("method", "path"), [("PATCH", "bulk-read"), ("PATCH", "bulk-unread"), ("POST", "bulk-delete")]
)
@pytest.mark.parametrize(
    "body",
    [
        b'{"notification_ids": []}',
        b"{}",
        b"[]",
        b'{"notification_ids": "ntf-x"}',
        b'{"notification_ids": [1]}',
        b"nope",
        b'{"ids": ["a"]}',
    ],
)
async def test_bulk_bodies_that_are_empty_or_malformed_are_400(
    client: Client, alice: User, method: str, path: str, body: bytes
) -> None:
    reply = await client.request(
        method, f"{BASE}/{path}", content=body, headers={**alice.headers, "Content-Type": "application/json"}
    )
    refused(reply, 400)


async def test_bulk_bodies_are_limited(client: Client, alice: User) -> None:
    body = {"notification_ids": [ids.to_scalebox(i) for i in range(1, 1002)]}
    refused(await client.patch(f"{BASE}/bulk-read", json=body, headers=alice.headers), 400)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", ""),
        ("GET", "/ntf-abc123def456789"),
        ("PATCH", "/ntf-abc123def456789/read"),
        ("PATCH", "/ntf-abc123def456789/unread"),
        ("PATCH", "/read-all"),
        ("DELETE", "/ntf-abc123def456789"),
        ("DELETE", ""),
        ("POST", "/bulk-delete"),
        ("PATCH", "/bulk-read"),
        ("PATCH", "/bulk-unread"),
    ],
)
async def test_every_endpoint_refuses_missing_unknown_and_producer_tokens(
    client: Client, make_user: MakeUser, method: str, path: str
) -> None:
    body = {"json": {"notification_ids": ["x"]}} if "bulk" in path else {}
    refused(await client.request(method, BASE + path, **body), 401)
    refused(await client.request(method, BASE + path, headers={"X-API-Key": "herald_pat_unknown"}, **body), 401)
    producer = await make_user(user="svc", kind="producer")
    refused(await client.request(method, BASE + path, headers=producer.headers, **body), 403)


async def test_a_cursor_walk_sees_every_old_row_once_while_new_ones_arrive(
    client: Client, alice: User, deliver: Deliver
) -> None:
    # 1,000 rows, newest 01:39, oldest 00:00, with ties on the time on purpose: ten rows share each.
    stamp = "2026-01-01T{:02d}:{:02d}:00Z"
    old = [await make(deliver, occurred_at=stamp.format(n // 600, n // 10 % 60)) for n in range(1000)]
    seen: list[str] = []
    behind: list[str] = []  # arrived where the walk has already been: must never show
    ahead: list[str] = []  # arrived where it has yet to go: may show, once
    cursor = None
    pages_walked = 0
    while True:
        params: dict[str, Any] = {"limit": 50} if cursor is None else {"limit": 50, "cursor": cursor}
        data = ok(await client.get(BASE, params=params, headers=alice.headers))
        seen += [n["id"] for n in data["notifications"]]
        pages_walked += 1
        # Between pages: an arrival newer than everything, one dated like the newest old rows (an
        # event's own time may be in the past; a larger id puts it before them), one like the oldest.
        behind.append(await make(deliver, message="arrived meanwhile"))
        behind.append(await make(deliver, message="late, newest", occurred_at=stamp.format(1, 39)))
        ahead.append(await make(deliver, message="late, oldest", occurred_at=stamp.format(0, 0)))
        cursor = data["pagination"]["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "no row twice"
    assert set(old) <= set(seen), "every old row"
    assert not set(behind) & set(seen), "nothing from behind the walk"
    assert set(seen) - set(old) <= set(ahead)
    assert pages_walked == -(-len(seen) // 50), "full pages until the last"


async def test_cursors_follow_the_filters_and_refuse_garbage(client: Client, alice: User, deliver: Deliver) -> None:
    rows = [await make(deliver, type="a" if n % 2 else "b") for n in range(9)]
    first = ok(await client.get(BASE, params={"limit": 2, "type": "a"}, headers=alice.headers))
    nxt = first["pagination"]["next_cursor"]
    second = ok(await client.get(BASE, params={"limit": 2, "type": "a", "cursor": nxt}, headers=alice.headers))
    assert [n["type"] for n in first["notifications"] + second["notifications"]] == ["a"] * 4
    assert {n["id"] for n in first["notifications"]}.isdisjoint({n["id"] for n in second["notifications"]})
    assert set(rows) >= {n["id"] for n in second["notifications"]}
    for bad in ("nope", "A" * 22 + "x", "!" * 22):
        refused(await client.get(BASE, params={"cursor": bad}, headers=alice.headers), 400)
    # Offset pages carry a cursor too, so a client can switch to cursors at any point.
    by_offset = ok(await client.get(BASE, params={"limit": 3, "offset": 3}, headers=alice.headers))
    after = ok(
        await client.get(
            BASE, params={"limit": 3, "cursor": by_offset["pagination"]["next_cursor"]}, headers=alice.headers
        )
    )
    by_offset_next = ok(await client.get(BASE, params={"limit": 3, "offset": 6}, headers=alice.headers))
    assert after["notifications"] == by_offset_next["notifications"]
