"""Archive: `PATCH /v1/notifications/{id}/archive` and `/unarchive` put a notification away and bring it
back: out of every list of every profile and every count, with its read and seen state kept."""

import httpx
import pytest

from service import ids
from service.process import Backends
from tests.support.factories import Deliver, MakeUser, User
from tests.support.invariants import counts_agree
from tests.support.profiles import BADGE, everything, ok, refused, snooze_path


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


def path(row: int, action: str = "archive") -> str:
    return f"/v1/notifications/{ids.to_scalebox(row)}/{action}"


async def test_archive_leaves_every_list_and_count_and_unarchive_brings_it_back_as_it_was(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    h = alice.headers
    rows = [(await deliver(users=["alice"], message=f"n{n}")).deliveries[0].inbox_id for n in range(3)]
    unread_seen, read_one, keep = rows
    await client.post("/v1/seen", headers=h)
    await client.patch(f"/v1/notifications/{ids.to_scalebox(read_one)}/read", headers=h)
    assert (await everything(client, alice))["counts"] == (2, 0, 2, 3, 2, 3)

    for row in (unread_seen, read_one):
        data = ok(await client.patch(path(row), headers=h), "Notification archived")
        assert data == {"notification_id": ids.to_scalebox(row), "archived": True}
    shown = await everything(client, alice)
    assert shown["scalebox"] == shown["aptly"] == shown["qualytics"] == shown["listing"] == [keep]
    assert shown["counts"] == (1, 0, 1, 1, 1, 1)
    await counts_agree(backends)

    # The archive's own list, and both; items say when they were archived.
    archive = ok(await client.get("/v1/notifications", params={"archived": "true"}, headers=h))
    assert sorted(ids.from_scalebox(n["id"]) for n in archive["notifications"]) == sorted([unread_seen, read_one])
    assert all(n["archived_at"] is not None for n in archive["notifications"])
    assert archive["pagination"]["total"] == 2 and archive["unread_count"] == 1
    both = ok(await client.get("/v1/notifications", params={"archived": "all"}, headers=h))
    assert both["pagination"]["total"] == 3
    inbox = ok(await client.get("/v1/notifications", params={"archived": "false"}, headers=h))
    assert [n["archived_at"] for n in inbox["notifications"]] == [None]

    # Again is no error and changes nothing.
    ok(await client.patch(path(read_one), headers=h))
    assert (await client.get(BADGE, headers=h)).json()["unread_count"] == 1

    for row in (unread_seen, read_one):
        data = ok(await client.patch(path(row, "unarchive"), headers=h), "Notification unarchived")
        assert data == {"notification_id": ids.to_scalebox(row), "archived": False}
    back = await everything(client, alice)
    assert back["scalebox"] == sorted(rows)
    assert back["counts"] == (2, 0, 2, 3, 2, 3), "read and seen state kept"
    await counts_agree(backends)


async def test_an_archived_notification_is_still_the_users(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    h = alice.headers
    row = (await deliver(users=["alice"])).deliveries[0].inbox_id
    other = (await deliver(users=["alice"])).deliveries[0].inbox_id
    ok(await client.patch(path(row), headers=h))
    sid = ids.to_scalebox(row)
    assert ok(await client.get(f"/v1/notifications/{sid}", headers=h))["archived_at"] is not None
    # Read, unread and delete act on it and change no count; snooze and the "all" actions do not.
    ok(await client.patch(f"/v1/notifications/{sid}/read", headers=h))
    assert (await client.get(BADGE, headers=h)).json()["unread_count"] == 1
    refused(await client.patch(snooze_path(row), json={"until": "2999-01-01T00:00:00Z"}, headers=h), 404)
    assert ok(await client.patch("/v1/notifications/read-all", headers=h))["marked_count"] == 1
    assert ok(await client.delete("/v1/notifications", headers=h))["deleted_count"] == 1
    assert ok(await client.get("/v1/notifications", params={"archived": "true"}, headers=h))["pagination"]["total"] == 1
    ok(await client.delete(f"/v1/notifications/{sid}", headers=h))
    assert ok(await client.get("/v1/notifications", params={"archived": "all"}, headers=h))["pagination"]["total"] == 0
    assert other != row
    await counts_agree(backends)


async def test_another_users_or_a_missing_notification_is_not_found(
    client: httpx.AsyncClient, make_user: MakeUser, alice: User, deliver: Deliver
) -> None:
    bob = await make_user(user="bob")
    stranger = await make_user(tenant="globex", user="alice")
    row = (await deliver(users=["alice"])).deliveries[0].inbox_id
    for who in (bob, stranger):
        for action in ("archive", "unarchive"):
            refused(await client.patch(path(row, action), headers=who.headers), 404)
    refused(await client.patch(path(row + 1000), headers=alice.headers), 404)
    refused(await client.patch("/v1/notifications/ntf-nope/archive", headers=alice.headers), 404)
    refused(await client.patch("/v1/notifications//archive", headers=alice.headers), 404)
    assert (await client.get(BADGE, headers=alice.headers)).json()["unread_count"] == 1
    assert (await client.patch(path(row), headers={})).status_code == 401


async def test_the_list_refuses_a_bad_archived_value(client: httpx.AsyncClient, alice: User) -> None:
    message = refused(await client.get("/v1/notifications", params={"archived": "yes"}, headers=alice.headers), 400)
    assert "archived" in message
