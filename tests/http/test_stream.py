"""GET /v1/stream: the badge and arrivals, live, over a real HTTP server."""

from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest

from service import ids
from service.process import Backends
from service.settings import Settings
from tests.support.factories import Deliver, JobRecorder, MakeUser, User, make_event
from tests.support.http import listening
from tests.support.sse import open_stream
from workers.delivery import Delivery


@pytest.fixture
async def base(settings: Settings, clean: None) -> AsyncIterator[str]:
    fast = msgspec.structs.replace(settings, stream_heartbeat=0.3)
    async with listening(fast) as url:
        yield url


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


async def test_the_count_on_connect_then_every_change(base: str, alice: User, deliver: Deliver) -> None:
    first = await deliver(users=["alice"])
    await deliver(users=["alice"])
    http = httpx.AsyncClient(base_url=base, headers=alice.headers)
    async with open_stream(base, alice.headers) as stream:
        hello = await stream.next_event()
        assert (hello.event, hello.json()["unread_count"], hello.retry) == ("unread", 2, 3000)

        # An arrival: the item in the scalebox shape, then the new count.
        arrived = await deliver(users=["alice"], type="sandbox_timeout", title="Sandbox", category="sandbox")
        note = await stream.next_event()
        assert note.event == "notification"
        item = note.json()
        assert item["id"] == ids.to_scalebox(arrived.deliveries[0].inbox_id)
        assert (item["user_id"], item["type"], item["title"], item["is_read"]) == (
            "alice",
            "sandbox_timeout",
            "Sandbox",
            False,
        )
        assert (await stream.next_event()).json()["unread_count"] == 3

        # Every kind of change, through every profile, moves the badge.
        row = first.deliveries[0].inbox_id
        await http.put(f"/api/user-notifications/acknowledge/{row}")
        assert (await stream.next_event()).json()["unread_count"] == 2
        await http.patch(f"/v1/notifications/{ids.to_scalebox(row)}/unread")
        assert (await stream.next_event()).json()["unread_count"] == 3
        await http.patch("/v1/notifications/bulk-read", json={"notification_ids": [ids.to_scalebox(row)]})
        assert (await stream.next_event()).json()["unread_count"] == 2
        await http.delete(f"/aptly/v1/notifications/{ids.to_uuid(arrived.deliveries[0].inbox_id)}")
        assert (await stream.next_event()).json()["unread_count"] == 1
        await http.patch("/aptly/v1/notifications/read-all")
        last = await stream.next_event()
        assert last.json()["unread_count"] == 0
        # A change that changes nothing sends nothing; the heartbeat keeps coming.
        await http.patch("/v1/notifications/read-all")
        ping = await stream.next(timeout=2)
        assert ping.comment == "ping" and ping.event is None and ping.data == ""
    await http.aclose()


async def test_event_ids_let_a_reconnecting_client_catch_up(base: str, alice: User, deliver: Deliver) -> None:
    await deliver(users=["alice"])
    async with open_stream(base, alice.headers) as stream:
        await stream.next_event()
        await deliver(users=["alice"], message="seen live")
        seen = await stream.next_event()
        await stream.next_event()
    assert seen.id is not None
    missed = [await deliver(users=["alice"], message=f"missed {n}") for n in range(2)]
    async with open_stream(base, {**alice.headers, "Last-Event-ID": seen.id}) as stream:
        replayed = [await stream.next_event() for _ in range(2)]
        assert [m.event for m in replayed] == ["notification", "notification"]
        assert [m.json()["message"] for m in replayed] == ["missed 0", "missed 1"]
        assert replayed[-1].json()["id"] == ids.to_scalebox(missed[-1].deliveries[0].inbox_id)
        assert (await stream.next_event()).json()["unread_count"] == 4


async def test_the_token_may_be_a_query_parameter_for_event_source(base: str, alice: User, make_user: MakeUser) -> None:
    async with open_stream(base, params={"token": alice.token}) as stream:
        assert (await stream.next_event()).event == "unread"
    async with httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/v1/stream")).status_code == 401
        assert (await http.get("/v1/stream", params={"token": "herald_pat_nope"})).status_code == 401
        producer = await make_user(user="svc", kind="producer")
        assert (await http.get("/v1/stream", headers=producer.headers)).status_code == 403


async def test_each_user_hears_only_their_own_changes(
    base: str, alice: User, make_user: MakeUser, deliver: Deliver
) -> None:
    bob = await make_user(user="bob")
    async with open_stream(base, alice.headers) as a, open_stream(base, bob.headers) as b:
        await a.next_event()
        await b.next_event()
        await deliver(users=["bob"], message="for bob")
        assert (await b.next_event()).json()["message"] == "for bob"
        await deliver(users=["alice"], message="for alice")
        assert (await a.next_event()).json()["message"] == "for alice"  # not bob's


async def test_arrivals_out_of_id_order_all_get_through(
    base: str, alice: User, deliver: Deliver, backends: Backends, jobs: JobRecorder
) -> None:
    """Rows committed concurrently reach the stream in any order of id; none may be dropped."""
    async with open_stream(base, alice.headers) as stream:
        await stream.next_event()
        # Row A is written first (lower id) but its push is held back, as by a slower worker...
        held = Delivery(backends, jobs)
        held_outcome: list[Any] = []

        async def no_push(event_id: int, deliveries: list[Any]) -> None:
            held_outcome.append((event_id, deliveries))

        held._publish = no_push  # type: ignore[method-assign]
        await held.ingest(make_event(users=["alice"], message="A, pushed late"))
        # ...while row B (higher id) is written and pushed at once.
        b = await deliver(users=["alice"], message="B")
        assert (await stream.next_event()).json()["message"] == "B"
        await stream.next_event()  # B's count
        event_id, deliveries = held_outcome[0]
        assert deliveries[0].inbox_id < b.deliveries[0].inbox_id  # A is older than what was sent
        await backends.counts.copy(deliveries, [(d.inbox_id, event_id) for d in deliveries])
        late = await stream.next_event()
        assert late.event == "notification" and late.json()["message"] == "A, pushed late"
