"""The aptly profile: the list with every filter, and Herald's read/unread/read-all/delete."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from service import ids
from tests.support.factories import Deliver, MakeUser, User

Client = httpx.AsyncClient
BASE = "/aptly/v1/notifications"
MS_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


def ok(reply: Any, message: str = "Success") -> Any:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["statusCode"] == 200 and body["message"] == message and MS_STAMP.match(body["timestamp"])
    return body["data"]


def refused(reply: Any, status: int) -> None:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"statusCode", "timestamp", "message", "data"}
    assert body["statusCode"] == status and body["data"] is None and body["message"]


def ago(**delta: float) -> str:
    return (datetime.now(UTC) - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_an_item_has_every_field_of_the_seed(client: Client, alice: User, deliver: Deliver) -> None:
    outcome = await deliver(
        users=["alice"],
        type="DELEGATION_ISSUED",
        category="Delegations",
        title="Delegation Issued",
        message="Delegation ABC123 was issued to you. Click to review.",
        actionable=True,
        entity={"type": "delegation", "id": "123456"},
        action_url="https://example.com/delegations/123456",
        payload={"assignedBy": "John Doe", "priority": "high"},
        occurred_at=ago(hours=2, minutes=5),
    )
    data = ok(await client.get(BASE, params={"tenantId": "acme"}, headers=alice.headers))
    assert (data["page"], data["limit"], data["total"]) == (1, 10, 1)
    item = data["data"][0]
    assert item["id"] == ids.to_uuid(outcome.deliveries[0].inbox_id)
    uuid.UUID(item["id"])
    assert {k: v for k, v in item.items() if k not in ("id", "createdAt")} == {
        "tenantId": "acme",
        "templateKey": "DELEGATION_ISSUED",
        "category": "Delegations",
        "title": "Delegation Issued",
        "message": "Delegation ABC123 was issued to you. Click to review.",
        "isActionable": True,
        "status": "UNREAD",
        "readAt": None,
        "userId": "alice",
        "entityType": "delegation",
        "entityId": "123456",
        "actionUrl": "https://example.com/delegations/123456",
        "payload": {"assignedBy": "John Doe", "priority": "high"},
        "relativeTime": "2 hours ago",
    }


async def test_tenant_id_is_required_and_must_be_the_callers(client: Client, alice: User) -> None:
    refused(await client.get(BASE, headers=alice.headers), 400)
    refused(await client.get(BASE, params={"tenantId": "globex"}, headers=alice.headers), 403)


async def test_every_filter(client: Client, alice: User, deliver: Deliver) -> None:
    await deliver(
        users=["alice"], type="A", category="x", entity={"type": "delegation", "id": "1"}, occurred_at=ago(days=10)
    )
    await deliver(
        users=["alice"], type="B", category="y", entity={"type": "invoice", "id": "2"}, occurred_at=ago(days=70)
    )
    old = await deliver(users=["alice"], type="A", category="y", occurred_at=ago(days=150))
    await deliver(users=["alice"], type="C", occurred_at=ago(days=400))
    await client.patch(f"{BASE}/{ids.to_uuid(old.deliveries[0].inbox_id)}/read", headers=alice.headers)

    async def keys(**params: Any) -> list[str]:
        data = ok(await client.get(BASE, params={"tenantId": "acme", **params}, headers=alice.headers))
        assert data["total"] == len(data["data"])
        return [i["templateKey"] for i in data["data"]]

    assert await keys() == ["A", "B", "A", "C"]
    assert await keys(status="READ") == ["A"]
    assert await keys(status="UNREAD") == ["A", "B", "C"]
    assert await keys(templateKey="A") == ["A", "A"]
    assert await keys(category="y") == ["B", "A"]
    assert await keys(entityType="invoice") == ["B"]
    assert await keys(timePeriod="1m") == ["A"]
    assert await keys(timePeriod="3m") == ["A", "B"]
    assert await keys(timePeriod="6m") == ["A", "B", "A"]
    assert await keys(timePeriod="all") == ["A", "B", "A", "C"]
    assert await keys(templateKey="A", status="UNREAD", timePeriod="1m") == ["A"]


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"page": 0}, {"status": "unread"}, {"timePeriod": "2m"}, {"page": "x"}],
)
async def test_bad_parameters_are_400_in_the_envelope(client: Client, alice: User, params: dict[str, Any]) -> None:
    refused(await client.get(BASE, params={"tenantId": "acme", **params}, headers=alice.headers), 400)


async def test_pages(client: Client, alice: User, deliver: Deliver) -> None:
    for n in range(25):
        await deliver(users=["alice"], message=f"m{n}", occurred_at=f"2026-01-01T00:00:{n:02d}Z")
    first = ok(await client.get(BASE, params={"tenantId": "acme"}, headers=alice.headers))
    assert (first["total"], len(first["data"])) == (25, 10) and first["data"][0]["message"] == "m24"
    third = ok(await client.get(BASE, params={"tenantId": "acme", "page": 3}, headers=alice.headers))
    assert [i["message"] for i in third["data"]] == [f"m{n}" for n in range(4, -1, -1)]
    wide = ok(await client.get(BASE, params={"tenantId": "acme", "limit": 100}, headers=alice.headers))
    assert (wide["limit"], len(wide["data"])) == (100, 25)


async def test_read_unread_read_all_and_delete(
    client: Client, alice: User, make_user: MakeUser, deliver: Deliver
) -> None:
    bob = await make_user(user="bob")
    rows = [ids.to_uuid((await deliver(users=["alice"])).deliveries[0].inbox_id) for _ in range(3)]
    item = ok(await client.patch(f"{BASE}/{rows[0]}/read", headers=alice.headers), "Notification marked as read")
    assert item["id"] == rows[0] and item["status"] == "READ" and MS_STAMP.match(item["readAt"] or "") is None
    assert item["readAt"] is not None and item["readAt"].endswith("Z")
    item = ok(await client.patch(f"{BASE}/{rows[0]}/unread", headers=alice.headers), "Notification marked as unread")
    assert item["status"] == "UNREAD" and item["readAt"] is None
    refused(await client.patch(f"{BASE}/{rows[0]}/read", headers=bob.headers), 404)
    refused(await client.patch(f"{BASE}/not-a-uuid/read", headers=alice.headers), 404)
    refused(await client.patch(f"{BASE}/{uuid.uuid4()}/read", headers=alice.headers), 404)
    assert ok(await client.patch(f"{BASE}/read-all", headers=alice.headers), "All notifications marked as read") == {
        "markedCount": 3
    }
    deleted = ok(await client.delete(f"{BASE}/{rows[1]}", headers=alice.headers), "Notification deleted")
    assert deleted == {"id": rows[1], "deleted": True}
    refused(await client.delete(f"{BASE}/{rows[1]}", headers=alice.headers), 404)
    listed = ok(await client.get(BASE, params={"tenantId": "acme"}, headers=alice.headers))
    assert listed["total"] == 2 and {i["status"] for i in listed["data"]} == {"READ"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "?tenantId=acme"), ("PATCH", "/x/read"), ("PATCH", "/x/unread"), ("PATCH", "/read-all"), ("DELETE", "/x")],
)
async def test_every_endpoint_refuses_bad_credentials(
    client: Client, make_user: MakeUser, method: str, path: str
) -> None:
    refused(await client.request(method, BASE + path), 401)
    refused(await client.request(method, BASE + path, headers={"Authorization": "Bearer nope"}), 401)
    producer = await make_user(user="svc", kind="producer")
    refused(await client.request(method, BASE + path, headers=producer.headers), 403)
