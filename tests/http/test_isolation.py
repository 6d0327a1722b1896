"""The isolation matrix: every reader endpoint of every profile, called about alice's notifications
by everyone who is not alice. Nobody gets a byte of hers, and nothing of hers changes."""

from typing import Any

import httpx
import pytest

from service import ids
from service.process import Backends
from tests.support.factories import Deliver, MakeUser, User

SECRET = "quarterly-numbers-7f3a"


def _requests(rows: list[int]) -> list[tuple[str, str, Any, bool]]:
    """(method, path, json body, names one of alice's rows in the path) for every reader endpoint."""
    row, sb, uu = rows[0], ids.to_scalebox(rows[0]), ids.to_uuid(rows[0])
    all_sb = [ids.to_scalebox(r) for r in rows]
    return [
        ("GET", "/v1/unread-count", None, False),
        ("GET", "/api/user-notifications", None, False),
        ("GET", "/api/user-notifications?size=100&page=1", None, False),
        ("GET", "/api/user-notifications/listing", None, False),
        ("GET", f"/api/user-notifications/{row}", None, True),
        ("PUT", f"/api/user-notifications/acknowledge/{row}", None, True),
        ("PATCH", "/api/user-notifications/acknowledge", [{"id": r} for r in rows], False),
        ("PATCH", "/api/user-notifications/acknowledge", [], False),
        ("GET", "/v1/notifications", None, False),
        ("GET", "/v1/notifications?read=false&limit=100", None, False),
        ("GET", f"/v1/notifications/{sb}", None, True),
        ("PATCH", f"/v1/notifications/{sb}/read", None, True),
        ("PATCH", f"/v1/notifications/{sb}/unread", None, True),
        ("PATCH", "/v1/notifications/bulk-read", {"notification_ids": all_sb}, False),
        ("PATCH", "/v1/notifications/bulk-unread", {"notification_ids": all_sb}, False),
        ("PATCH", "/v1/notifications/read-all", None, False),
        ("POST", "/v1/notifications/bulk-delete", {"notification_ids": all_sb}, False),
        ("DELETE", f"/v1/notifications/{sb}", None, True),
        ("DELETE", "/v1/notifications", None, False),
        ("PATCH", f"/v1/notifications/{sb}/snooze", {"until": "2099-01-01T00:00:00Z"}, True),
        ("PATCH", f"/v1/notifications/{sb}/snooze", {"until": "2000-01-01T00:00:00Z"}, True),
        ("GET", "/aptly/v1/notifications?tenantId=acme", None, False),
        ("GET", "/aptly/v1/notifications?tenantId=acme&status=UNREAD&limit=100", None, False),
        ("PATCH", f"/aptly/v1/notifications/{uu}/read", None, True),
        ("PATCH", f"/aptly/v1/notifications/{uu}/unread", None, True),
        ("PATCH", "/aptly/v1/notifications/read-all", None, False),
        ("DELETE", f"/aptly/v1/notifications/{uu}", None, True),
        ("GET", "/v1/preferences", None, False),
        ("PUT", "/v1/preferences", {"muted": {"types": [], "categories": [], "topics": ["x"]}}, False),
    ]


async def _state(client: httpx.AsyncClient, alice: User) -> tuple[int, list[str]]:
    page = (await client.get("/v1/notifications?limit=100", headers=alice.headers)).json()["data"]
    return page["unread_count"], sorted(n["id"] for n in page["notifications"])


@pytest.mark.parametrize("who", ["same tenant", "other tenant", "deactivated", "producer token"])
async def test_nobody_else_sees_or_changes_alices_notifications(
    who: str, client: httpx.AsyncClient, backends: Backends, make_user: MakeUser, deliver: Deliver
) -> None:
    alice = await make_user(user="alice")
    rows = [
        (await deliver(users=["alice"], title=SECRET, message=f"{SECRET} {n}")).deliveries[0].inbox_id for n in range(3)
    ]
    # The caller has notifications of their own (where a caller can have any), so "no data" is not
    # simply "an empty inbox".
    if who == "same tenant":
        caller = await make_user(user="bob")
        await deliver(users=["bob"], title="bob's own")
    elif who == "other tenant":
        caller = await make_user(tenant="globex", user="alice")  # the same user id, another tenant
        await deliver(users=["alice"], tenant="globex", title="globex's own")
    elif who == "deactivated":
        caller = await make_user(user="dave")
        await deliver(users=["dave"], title="dave's own")
        async with backends.pool.acquire() as conn:
            await conn.execute("UPDATE users SET active = false WHERE id = $1", caller.user_id)
    else:
        caller = await make_user(user="svc", kind="producer")
    hers = {"muted": {"types": [SECRET], "categories": [], "topics": []}}
    assert (await client.put("/v1/preferences", json=hers, headers=alice.headers)).status_code == 200
    before = await _state(client, alice)
    assert before[0] == 3

    for method, path, body, named in _requests(rows):
        for headers in ({"Authorization": f"Bearer {caller.token}"}, {"X-API-Key": caller.token}):
            reply = await client.request(method, path, json=body, headers=headers)
            where = f"{who}: {method} {path}"
            assert SECRET not in reply.text, where
            if body is None:  # (bulk answers echo the ids the caller sent, as the product's do)
                assert not any(ids.to_scalebox(r) in reply.text or ids.to_uuid(r) in reply.text for r in rows), where
            if who in ("deactivated", "producer token"):
                assert reply.status_code == 403, where
            elif who == "other tenant" and path.startswith("/aptly/v1/notifications?tenantId=acme"):
                assert reply.status_code == 403, where  # alice's tenant named by someone outside it
            elif named:
                assert reply.status_code == 404, where  # exactly as a missing one
            else:
                assert reply.status_code in (200, 404), where
            if path == "/v1/notifications" and method == "GET" and who in ("same tenant", "other tenant"):
                assert "s own" in reply.text, f"{where}: the caller's own notifications are listed"
            if reply.status_code == 200 and path.startswith("/v1/notifications/bulk"):
                assert all(v == 0 for k, v in reply.json()["data"].items() if k.endswith("count")), where

    assert await _state(client, alice) == before, "alice's inbox changed"
    assert (await client.get("/v1/preferences", headers=alice.headers)).json() == hers, "alice's preferences changed"
    badge = await client.get("/v1/unread-count", headers=alice.headers)
    assert badge.json()["unread_count"] == 3


async def test_a_stream_refuses_those_who_may_not_read(
    client: httpx.AsyncClient, backends: Backends, make_user: MakeUser
) -> None:
    dave = await make_user(user="dave")
    producer = await make_user(user="svc", kind="producer")
    async with backends.pool.acquire() as conn:
        await conn.execute("UPDATE users SET active = false WHERE id = $1", dave.user_id)
    for caller in (dave, producer):
        reply = await client.get("/v1/stream", headers=caller.headers)
        assert reply.status_code == 403
        reply = await client.get(f"/v1/stream?token={caller.token}")
        assert reply.status_code == 403
    assert (await client.get("/v1/stream?token=herald_pat_unknown")).status_code == 401
