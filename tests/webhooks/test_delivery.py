"""Deliveries to a real HTTP receiver: what each change sends, signed as Standard Webhooks say
(verified with the spec's own library), exactly the types asked for, to the right tenant only."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import msgspec
import pytest

from service import ids
from service.local.receiver import Receiver
from service.process import Backends
from service.settings import Settings
from tests.support.factories import Deliver, JobRecorder, MakeUser, User, make_event
from tests.support.webhooks import courier, deliveries, outbox, register, verified
from workers.delivery import Delivery

Client = httpx.AsyncClient
BASE = "/v1/notifications"
SUBSCRIBE = (
    "INSERT INTO subscriptions (tenant_id, topic, user_id) SELECT tenant_id, 'news', id FROM users WHERE id = $1"
)
CHANGES = ["notification.read", "notification.unread", "notification.deleted", "inbox.bulk"]


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


async def notify(deliver: Deliver, user: str = "alice", **fields: Any) -> str:
    outcome = await deliver(users=[user], **fields)
    return ids.to_scalebox(outcome.deliveries[0].inbox_id)


async def received_bodies(receiver: Receiver, secret: str, count: int) -> list[dict[str, Any]]:
    return [verified(r, secret) for r in await receiver.wait_for(count)]


async def test_a_read_is_signed_and_carries_the_scalebox_item(
    api: Client, admin: User, alice: User, deliver: Deliver, receiver: Receiver, backends: Backends
) -> None:
    hook = await register(api, admin, receiver.url + "/in", ["notification.read"])
    nid = await notify(
        deliver, category="scans", entity={"type": "scan", "id": "7"}, occurred_at="2026-04-17T11:30:00Z"
    )
    async with courier(backends):
        reply = await api.patch(f"{BASE}/{nid}/read", headers=alice.headers)
        assert reply.status_code == 200
        [body] = await received_bodies(receiver, hook["secret"], 1)
    request = receiver.received[0]
    assert request.path == "/in" and request.headers["content-type"] == "application/json"
    assert request.headers["webhook-signature"].startswith("v1,") and request.headers["webhook-id"].startswith("msg_")
    assert set(body) == {"id", "type", "tenant", "user", "occurred_at", "data"}
    assert body["type"] == "notification.read" and body["tenant"] == "acme" and body["user"] == "alice"
    assert body["occurred_at"].endswith("Z")
    # `data` is the item as the scalebox profile shows it, read after the change.
    item = (await api.get(f"{BASE}/{nid}", headers=alice.headers)).json()["data"]
    assert body["data"] == item and item["is_read"] is True and item["id"] == nid
    # A receiver with another secret refuses it.
    with pytest.raises(Exception, match="signature"):
        verified(request, "whsec_" + "A" * 44)
    [listed] = await deliveries(api, admin, hook["id"])
    assert listed["id"] == body["id"] and listed["status"] == "delivered" and listed["tries"] == 1
    assert listed["last_status"] == 204 and listed["last_error"] is None and listed["delivered_at"]


async def test_each_single_change_sends_its_type(
    api: Client, admin: User, alice: User, deliver: Deliver, receiver: Receiver, backends: Backends
) -> None:
    hook = await register(api, admin, receiver.url, CHANGES)
    first, second = await notify(deliver), await notify(deliver)
    async with courier(backends):
        await api.patch(f"{BASE}/{first}/read", headers=alice.headers)
        await api.patch(f"{BASE}/{first}/read", headers=alice.headers)  # changes nothing: no webhook
        await api.patch(f"{BASE}/{first}/unread", headers=alice.headers)
        await api.put(f"/api/user-notifications/acknowledge/{ids.from_scalebox(second)}", headers=alice.headers)
        await api.delete(f"{BASE}/{second}", headers=alice.headers)
        await api.delete(f"{BASE}/{second}", headers=alice.headers)  # 404: no webhook
        bodies = await received_bodies(receiver, hook["secret"], 4)
        await asyncio.sleep(0.5)
    assert receiver.count == 4
    got = sorted((b["data"]["id"], b["type"], b["data"]["is_read"]) for b in bodies)
    assert got == sorted(
        [
            (first, "notification.read", True),
            (first, "notification.unread", False),
            (second, "notification.read", True),
            # A deleted notification is shown as it was when it went.
            (second, "notification.deleted", True),
        ]
    )


async def test_requests_that_change_many_send_one_inbox_bulk(
    api: Client, admin: User, alice: User, deliver: Deliver, receiver: Receiver, backends: Backends, make_user: MakeUser
) -> None:
    hook = await register(api, admin, receiver.url, CHANGES)
    made = [await notify(deliver) for _ in range(4)]
    aptly_user = await make_user(user="carol")
    for _ in range(2):
        await notify(deliver, user="carol")
    async with courier(backends):
        await api.post("/v1/seen", headers=alice.headers)
        await api.patch(f"{BASE}/bulk-read", json={"notification_ids": made[:3]}, headers=alice.headers)
        await api.patch(f"{BASE}/bulk-unread", json={"notification_ids": made[:2]}, headers=alice.headers)
        await api.patch(f"{BASE}/bulk-read", json={"notification_ids": made[:3]}, headers=alice.headers)
        await api.post("/v1/seen", headers=alice.headers)  # nothing unseen is left: no webhook
        await api.patch("/api/user-notifications/acknowledge", json=[], headers=alice.headers)  # the 4th
        await api.patch("/aptly/v1/notifications/read-all", headers=aptly_user.headers)
        await api.post(f"{BASE}/bulk-delete", json={"notification_ids": made[:1]}, headers=alice.headers)
        await api.delete(BASE, headers=alice.headers)
        await api.patch(f"{BASE}/read-all", headers=alice.headers)  # nothing left unread: no webhook
        bodies = await received_bodies(receiver, hook["secret"], 8)
        await asyncio.sleep(0.5)
    assert receiver.count == 8
    got = sorted((b["user"], b["data"]["action"], b["data"]["changed"]) for b in bodies)
    assert all(b["type"] == "inbox.bulk" and set(b["data"]) == {"action", "changed"} for b in bodies)
    assert got == sorted(
        [
            ("alice", "read", 3),
            ("alice", "unread", 2),
            ("alice", "read", 2),
            ("alice", "seen", 4),
            ("alice", "read", 1),
            ("carol", "read", 2),
            ("alice", "delete", 1),
            ("alice", "delete", 3),
        ]
    )


async def test_a_webhook_gets_only_the_types_it_takes(
    api: Client, admin: User, alice: User, deliver: Deliver, receiver: Receiver, backends: Backends
) -> None:
    bulk = await register(api, admin, receiver.url + "/bulk", ["inbox.bulk"])
    reads = await register(api, admin, receiver.url + "/reads", ["notification.read", "notification.unread"])
    nid = await notify(deliver)
    async with courier(backends):
        await api.patch(f"{BASE}/{nid}/read", headers=alice.headers)
        await api.patch(f"{BASE}/read-all", headers=alice.headers)  # nothing to read: nothing sent
        await api.patch(f"{BASE}/bulk-unread", json={"notification_ids": [nid]}, headers=alice.headers)
        await receiver.wait_for(2)
        await asyncio.sleep(0.5)
    assert receiver.count == 2
    by_path = {r.path: r for r in receiver.received}
    assert verified(by_path["/reads"], reads["secret"])["type"] == "notification.read"
    assert verified(by_path["/bulk"], bulk["secret"])["data"] == {"action": "unread", "changed": 1}
    # Each delivery has its own id, and is listed under its own webhook only.
    assert [d["type"] for d in await deliveries(api, admin, reads["id"])] == ["notification.read"]
    assert [d["type"] for d in await deliveries(api, admin, bulk["id"])] == ["inbox.bulk"]


async def test_event_delivered_once_per_event(
    api: Client, admin: User, alice: User, deliver: Deliver, receiver: Receiver, backends: Backends, make_user: MakeUser
) -> None:
    hook = await register(api, admin, receiver.url, ["event.delivered"])
    await make_user(user="bob")
    async with courier(backends):
        await deliver(id="one", users=["alice", "bob", "ghost"])  # ghost is created, then receives too
        await deliver(id="one", users=["alice", "bob", "ghost"])  # published again: nothing new
        await deliver(id="nobody", users=["alice"], expires_at="2020-01-01T00:00:00Z")  # expired: 0 rows
        bodies = await received_bodies(receiver, hook["secret"], 2)
        await asyncio.sleep(0.5)
    assert receiver.count == 2
    assert sorted((b["data"]["event_id"], b["data"]["recipients"]) for b in bodies) == [("nobody", 0), ("one", 3)]
    assert all(b["type"] == "event.delivered" and b["user"] is None for b in bodies)


async def test_event_delivered_once_after_a_fanout_in_many_chunks(
    api: Client,
    admin: User,
    settings: Settings,
    receiver: Receiver,
    backends: Backends,
    make_user: MakeUser,
) -> None:
    hook = await register(api, admin, receiver.url, ["event.delivered"])
    for n in range(7):
        user = await make_user(user=f"m{n}")
        await backends.pool.execute(
            SUBSCRIBE,
            user.user_id,
        )
    # Chunks of 2 recipients: four arq jobs, run here by hand, the first one twice.
    small = Backends(msgspec.structs.replace(settings, fanout_chunk=2), backends.pool, backends.redis)
    jobs = JobRecorder()
    fan = Delivery(small, jobs)  # type: ignore[arg-type]
    await fan.ingest(make_event(id="big", audience={"topics": ["news"]}))
    chunks = [args for _, args, _ in jobs.jobs]
    assert len(chunks) == 4
    async with courier(backends):
        for event_id, lo, hi in [chunks[0], *chunks, chunks[-1]]:
            await fan.run_chunk(event_id, lo, hi)
        [body] = await received_bodies(receiver, hook["secret"], 1)
        await asyncio.sleep(0.5)
    assert receiver.count == 1
    assert body["data"] == {"event_id": "big", "recipients": 7}


async def test_tenants_are_isolated(
    api: Client, admin: User, alice: User, deliver: Deliver, receiver: Receiver, backends: Backends, make_user: MakeUser
) -> None:
    other_admin = await make_user(tenant="globex", user="root", role="admin")
    theirs = await register(api, other_admin, receiver.url + "/globex")
    mine = await register(api, admin, receiver.url + "/acme")
    dave = await make_user(tenant="globex", user="dave")
    nid = await notify(deliver)
    other = await notify(deliver, user="dave", tenant="globex")
    async with courier(backends):
        await api.patch(f"{BASE}/{nid}/read", headers=alice.headers)
        await api.patch(f"{BASE}/{other}/read", headers=dave.headers)
        await receiver.wait_for(4)  # each tenant's read, and each event's event.delivered
        await asyncio.sleep(0.5)
    assert receiver.count == 4
    for request in receiver.received:
        tenant = request.path.strip("/")
        body = verified(request, (theirs if tenant == "globex" else mine)["secret"])
        assert body["tenant"] == tenant
        if body["type"] == "notification.read":
            assert body["user"] == ("dave" if tenant == "globex" else "alice")
    assert len(await deliveries(api, other_admin, theirs["id"])) == 2


async def test_with_no_webhook_nothing_is_written(
    api: Client, alice: User, deliver: Deliver, backends: Backends
) -> None:
    nid = await notify(deliver)
    await api.patch(f"{BASE}/{nid}/read", headers=alice.headers)
    await api.patch(f"{BASE}/read-all", headers=alice.headers)
    await api.post("/v1/seen", headers=alice.headers)
    await api.delete(BASE, headers=alice.headers)
    assert await outbox(backends.settings.database_url or "") == []


async def test_archive_actions_and_bulk_by_filter_send_their_types(
    api: Client, admin: User, alice: User, deliver: Deliver, receiver: Receiver, backends: Backends
) -> None:
    kinds = ["notification.archived", "notification.interacted", "notification.read", "inbox.bulk"]
    hook = await register(api, admin, receiver.url, kinds)
    first = await notify(deliver, actions=[{"id": "approve", "label": "Approve"}])
    second, _ = await notify(deliver, type="scan"), await notify(deliver, type="scan")
    async with courier(backends):
        assert (await api.patch(f"{BASE}/{second}/archive", headers=alice.headers)).status_code == 200
        assert (await api.patch(f"{BASE}/{second}/unarchive", headers=alice.headers)).status_code == 200  # no type
        assert (await api.post(f"{BASE}/{first}/actions/approve", headers=alice.headers)).status_code == 200
        body = {"action": "archive", "filter": {"type": ["scan"]}}
        assert (await api.post(f"{BASE}/bulk", json=body, headers=alice.headers)).status_code == 200
        body = {"action": "read", "filter": {"type": ["nothing"]}}  # changes nothing: no webhook
        assert (await api.post(f"{BASE}/bulk", json=body, headers=alice.headers)).status_code == 200
        bodies = await received_bodies(receiver, hook["secret"], 3)
        await asyncio.sleep(0.5)
    assert receiver.count == 3
    got = {b["type"]: b["data"] for b in bodies}
    assert got["notification.archived"]["id"] == second and got["notification.archived"]["archived_at"]
    # Taking an action sends `notification.interacted` only, though it also marks the notification read.
    assert got["notification.interacted"]["id"] == first
    assert got["notification.interacted"]["interaction"] == "approve" and got["notification.interacted"]["is_read"]
    assert got["inbox.bulk"] == {"action": "archive", "changed": 2}


async def test_small_events_written_together_each_send_event_delivered(
    api: Client, admin: User, alice: User, receiver: Receiver, backends: Backends
) -> None:
    """The batched path (a stream read's small events in one statement) records each event's
    `event.delivered` in that statement, as the one-event path does."""
    hook = await register(api, admin, receiver.url, ["event.delivered"])
    fan = Delivery(backends, JobRecorder())  # type: ignore[arg-type]
    outcomes = await fan.ingest_many([make_event(id=f"small-{n}", users=["alice"]) for n in range(3)])
    assert all(o is not None for o in outcomes), "written together"
    async with courier(backends):
        bodies = await received_bodies(receiver, hook["secret"], 3)
        await asyncio.sleep(0.5)
    assert receiver.count == 3
    assert sorted((b["data"]["event_id"], b["data"]["recipients"], b["user"]) for b in bodies) == [
        (f"small-{n}", 1, None) for n in range(3)
    ]
