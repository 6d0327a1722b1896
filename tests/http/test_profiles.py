"""Across profiles: one inbox, one count, mounted wherever HERALD_PROFILES says."""

import httpx

from service import ids
from service.settings import Settings, parse_profiles
from tests.support.factories import Deliver, MakeUser
from tests.support.http import serving

Client = httpx.AsyncClient


async def test_a_change_through_one_profile_shows_in_every_other(
    client: Client, make_user: MakeUser, deliver: Deliver
) -> None:
    alice = await make_user(user="alice")
    rows = [(await deliver(users=["alice"])).deliveries[0].inbox_id for _ in range(4)]
    h = alice.headers

    async def counts() -> tuple[int, int, int, int]:
        badge = (await client.get("/v1/unread-count", headers=h)).json()["unread_count"]
        scalebox = (await client.get("/v1/notifications", headers=h)).json()["data"]["unread_count"]
        qualytics = (await client.get("/api/user-notifications", headers=h)).json()["total"]
        aptly = (
            await client.get("/aptly/v1/notifications", params={"tenantId": "acme", "status": "UNREAD"}, headers=h)
        ).json()
        return badge, scalebox, qualytics, aptly["data"]["total"]

    assert await counts() == (4, 4, 4, 4)
    await client.put(f"/api/user-notifications/acknowledge/{rows[0]}", headers=h)
    assert await counts() == (3, 3, 3, 3)
    scalebox = (await client.get(f"/v1/notifications/{ids.to_scalebox(rows[0])}", headers=h)).json()["data"]
    assert scalebox["is_read"] is True
    await client.patch(f"/aptly/v1/notifications/{ids.to_uuid(rows[0])}/unread", headers=h)
    assert await counts() == (4, 4, 4, 4)
    await client.patch(f"/v1/notifications/{ids.to_scalebox(rows[1])}/read", headers=h)
    await client.delete(f"/aptly/v1/notifications/{ids.to_uuid(rows[2])}", headers=h)
    assert await counts() == (2, 2, 2, 2)
    qualytics = (await client.get(f"/api/user-notifications/{rows[1]}", headers=h)).json()
    assert qualytics["acknowledged"] is True
    assert (await client.get(f"/api/user-notifications/{rows[2]}", headers=h)).status_code == 404


async def test_profiles_mount_where_configured(
    settings: Settings, clean: None, make_user: MakeUser, deliver: Deliver
) -> None:
    alice = await make_user(user="alice")
    await deliver(users=["alice"])
    mounted = Settings(
        database_url=settings.database_url,
        redis_url=settings.redis_url,
        profiles=parse_profiles("scalebox=/sb/v2,aptly=/x"),
    )
    async with serving(mounted) as c:
        assert (await c.get("/sb/v2/notifications", headers=alice.headers)).json()["data"]["unread_count"] == 1
        assert (await c.get("/x/notifications", params={"tenantId": "acme"}, headers=alice.headers)).json()["data"][
            "total"
        ] == 1
        assert (await c.get("/api/user-notifications", headers=alice.headers)).status_code == 404
        assert (await c.get("/v1/notifications", headers=alice.headers)).status_code == 404
        assert (await c.get("/v1/unread-count", headers=alice.headers)).json()["unread_count"] == 1
        # A miss under a mount answers in that profile's envelope.
        assert (await c.get("/sb/v2/nothing", headers=alice.headers)).json()["success"] is False
        spec = (await c.get("/schema/openapi.json")).json()["paths"]
        assert "/sb/v2/notifications/bulk-read" in spec and "/x/notifications" in spec
        assert not any(p.startswith("/api/") for p in spec)


async def test_the_openapi_document_has_every_profile_endpoint(client: Client) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    expected = {
        "/v1/notifications": {"get", "delete"},
        "/v1/notifications/{notification_id}": {"get", "delete"},
        "/v1/notifications/{notification_id}/read": {"patch"},
        "/v1/notifications/{notification_id}/unread": {"patch"},
        "/v1/notifications/read-all": {"patch"},
        "/v1/notifications/bulk-delete": {"post"},
        "/v1/notifications/bulk-read": {"patch"},
        "/v1/notifications/bulk-unread": {"patch"},
        "/aptly/v1/notifications": {"get"},
        "/aptly/v1/notifications/{notification_id}/read": {"patch"},
        "/aptly/v1/notifications/{notification_id}/unread": {"patch"},
        "/aptly/v1/notifications/read-all": {"patch"},
        "/aptly/v1/notifications/{notification_id}": {"delete"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    listing = paths["/v1/notifications"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {
        "page",
        "limit",
        "page_size",
        "offset",
        "skip",
        "read",
        "type",
    }
    response = listing["responses"]["200"]["content"]["application/json"]["schema"]
    assert response["$ref"].endswith("ListEnvelope")
    aptly = paths["/aptly/v1/notifications"]["get"]
    assert {p["name"] for p in aptly["parameters"]} >= {
        "tenantId",
        "status",
        "templateKey",
        "category",
        "entityType",
        "timePeriod",
    }
