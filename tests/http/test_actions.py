"""Actions and interactions: an event's buttons on its notifications, and
`POST /v1/notifications/{id}/actions/{action}` recording which one the reader took."""

from typing import Any

import httpx
import pytest

from service import ids
from service.process import Backends
from tests.support.factories import Deliver, MakeUser, User
from tests.support.invariants import counts_agree
from tests.support.profiles import BADGE, STAMP, ok, refused

BUTTONS = [
    {"id": "approve", "label": "Approve", "url": "/reviews/7/approve"},
    {"id": "reject", "label": "Reject"},
]


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


def take(row: int, action: str) -> str:
    return f"/v1/notifications/{ids.to_scalebox(row)}/actions/{action}"


async def test_an_action_is_recorded_and_marks_the_notification_read(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    row = (await deliver(users=["alice"], actions=BUTTONS, action_url="/reviews/7")).deliveries[0].inbox_id
    plain = (await deliver(users=["alice"])).deliveries[0].inbox_id
    h = alice.headers
    item = ok(await client.get(f"/v1/notifications/{ids.to_scalebox(row)}", headers=h))
    assert item["actions"] == [BUTTONS[0], {**BUTTONS[1], "url": None}]
    assert (item["interaction"], item["interacted_at"]) == (None, None)
    other = ok(await client.get(f"/v1/notifications/{ids.to_scalebox(plain)}", headers=h))
    assert (other["actions"], other["interaction"], other["interacted_at"]) == ([], None, None)
    assert (await client.get(BADGE, headers=h)).json()["unread_count"] == 2

    taken = ok(await client.post(take(row, "approve"), headers=h), "Action recorded")
    assert taken["id"] == ids.to_scalebox(row)
    assert (taken["interaction"], taken["is_read"]) == ("approve", True)
    assert STAMP.match(taken["interacted_at"])
    assert (await client.get(BADGE, headers=h)).json()["unread_count"] == 1
    # Taking another (or the same) again records the latest and changes no count.
    assert ok(await client.post(take(row, "reject"), headers=h))["interaction"] == "reject"
    assert (await client.get(BADGE, headers=h)).json()["unread_count"] == 1
    # `open`: the reader followed the notification itself; every notification offers it.
    assert ok(await client.post(take(plain, "open"), headers=h))["interaction"] == "open"
    assert (await client.get(BADGE, headers=h)).json()["unread_count"] == 0
    listed = ok(await client.get("/v1/notifications", headers=h))["notifications"]
    assert {n["id"]: n["interaction"] for n in listed} == {
        ids.to_scalebox(row): "reject",
        ids.to_scalebox(plain): "open",
    }
    await counts_agree(backends)


async def test_an_action_not_offered_or_someone_elses_notification_is_404(
    client: httpx.AsyncClient, make_user: MakeUser, alice: User, deliver: Deliver
) -> None:
    bob = await make_user(user="bob")
    row = (await deliver(users=["alice"], actions=BUTTONS)).deliveries[0].inbox_id
    for who, action in ((alice, "delete"), (alice, "Approve"), (alice, "a" * 51), (bob, "approve"), (bob, "open")):
        refused(await client.post(take(row, action), headers=who.headers), 404)
    refused(await client.post(take(row + 999, "open"), headers=alice.headers), 404)
    refused(await client.post("/v1/notifications/ntf-x/actions/open", headers=alice.headers), 404)
    refused(await client.post(f"/v1/notifications/{ids.to_scalebox(row)}/actions/", headers=alice.headers), 404)
    assert (await client.get(BADGE, headers=alice.headers)).json()["unread_count"] == 1


async def test_a_new_event_of_a_thread_shows_its_actions_and_clears_the_last_interaction(
    client: httpx.AsyncClient, alice: User, deliver: Deliver
) -> None:
    row = (await deliver(users=["alice"], group="g", actions=BUTTONS)).deliveries[0].inbox_id
    ok(await client.post(take(row, "approve"), headers=alice.headers))
    await deliver(users=["alice"], group="g", actions=[{"id": "merge", "label": "Merge"}])
    item = ok(await client.get(f"/v1/notifications/{ids.to_scalebox(row)}", headers=alice.headers))
    assert item["actions"] == [{"id": "merge", "label": "Merge", "url": None}]
    assert (item["interaction"], item["interacted_at"], item["is_read"]) == (None, None, False)
    refused(await client.post(take(row, "approve"), headers=alice.headers), 404)


@pytest.mark.parametrize(
    ("actions", "field"),
    [
        ([{"id": f"a{n}", "label": "A"} for n in range(4)], "actions"),
        ([{"id": "open", "label": "Open"}], "actions[0].id"),
        ([{"id": "a", "label": "A"}, {"id": "a", "label": "B"}], "actions[1].id"),
        ([{"id": "Approve", "label": "A"}], "actions[0].id"),
        ([{"id": "a" * 51, "label": "A"}], "actions[0].id"),
        ([{"id": "a", "label": ""}], "actions[0].label"),
        ([{"id": "a", "label": "x" * 101}], "actions[0].label"),
        ([{"id": "a", "label": "A", "url": "u" * 2001}], "actions[0].url"),
        ([{"id": "a", "label": "A", "colour": "red"}], "actions[0]"),
        ([{"label": "A"}], "actions[0]"),
        ("approve", "actions"),
    ],
)
async def test_bad_actions_are_refused_naming_the_field(
    client: httpx.AsyncClient, make_user: MakeUser, actions: Any, field: str
) -> None:
    producer = await make_user(user="svc", kind="producer")
    event = {"id": "e", "type": "t", "tenant": "acme", "audience": {"users": ["a"]}, "message": "m", "actions": actions}
    reply = await client.post("/v1/events", json=event, headers=producer.headers)
    assert reply.status_code == 422, reply.text
    assert reply.json()["field"] == field, reply.json()
