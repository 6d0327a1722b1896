"""Endpoints that fail: retried with the same id after about 1, 2, 4, ... seconds, given up in the
end (and shown so), never followed through a redirect, never reached at a private address when the
setting is off, and never able to hold up another endpoint's deliveries by hanging."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from typing import Any

import httpx
import pytest

from service import ids
from service.local.receiver import Received, Receiver
from service.metrics import REGISTRY
from service.process import Backends
from tests.support.factories import Deliver, MakeUser, User
from tests.support.webhooks import courier, deliveries, register, verified

Client = httpx.AsyncClient
BASE = "/v1/notifications"


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


async def notify(deliver: Deliver, user: str = "alice", **fields: Any) -> str:
    outcome = await deliver(users=[user], **fields)
    return ids.to_scalebox(outcome.deliveries[0].inbox_id)


def attempts(outcome: str) -> float:
    return REGISTRY.get_sample_value("herald_webhook_attempts_total", {"outcome": outcome}) or 0.0


async def test_a_failing_endpoint_is_retried_with_the_same_id_and_body(
    api: Client, admin: User, alice: User, deliver: Deliver, backends: Backends
) -> None:
    tries: Counter[str] = Counter()

    async def flaky(request: Received) -> int:
        tries[request.msg_id] += 1
        return 500 if tries[request.msg_id] < 3 else 204

    async with Receiver(flaky) as receiver:
        hook = await register(api, admin, receiver.url, ["notification.read"])
        nid = await notify(deliver)
        async with courier(backends):
            await api.patch(f"{BASE}/{nid}/read", headers=alice.headers)
            first = await receiver.wait_for(1)
            pending = await deliveries(api, admin, hook["id"])
            await receiver.wait_for(3, timeout=15)
            await asyncio.sleep(0.3)
    assert receiver.count == 3
    got = receiver.received
    assert len({r.msg_id for r in got}) == 1 and len({r.body for r in got}) == 1
    assert [verified(r, hook["secret"])["type"] for r in got] == ["notification.read"] * 3
    # About 1 s, then about 2 s, apart (each with up to a tenth of jitter, plus a poll).
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert 0.85 < gaps[0] < 1.6 and 1.75 < gaps[1] < 2.7, gaps
    assert first[0].headers["webhook-timestamp"] <= got[2].headers["webhook-timestamp"]
    assert pending[0]["status"] == "pending"
    [done] = await deliveries(api, admin, hook["id"])
    assert done["status"] == "delivered" and done["tries"] == 3 and done["next_attempt_at"] is None


async def test_refused_connections_and_redirects_are_failures_and_then_given_up(
    api: Client, admin: User, alice: User, deliver: Deliver, backends: Backends
) -> None:
    async def redirect(_: Received) -> tuple[int, dict[str, str]]:
        return 307, {"location": "/elsewhere"}

    given_up = attempts("failed")
    async with Receiver(redirect) as receiver:
        moved = await register(api, admin, receiver.url + "/moved", ["inbox.bulk"])
        closed = await Receiver().start()
        await closed.stop()  # a port where nothing listens any more
        refused = await register(api, admin, closed.url, ["inbox.bulk"])
        await notify(deliver)
        async with courier(backends, give_up_after=2.5):
            await api.patch(f"{BASE}/read-all", headers=alice.headers)
            for _ in range(100):
                listed = [*(await deliveries(api, admin, moved["id"])), *(await deliveries(api, admin, refused["id"]))]
                if all(d["status"] == "failed" for d in listed):
                    break
                await asyncio.sleep(0.1)
    assert {r.path for r in receiver.received} == {"/moved"}  # never followed to /elsewhere
    [to_moved] = await deliveries(api, admin, moved["id"])
    [to_refused] = await deliveries(api, admin, refused["id"])
    assert to_moved["status"] == "failed" and to_moved["last_status"] == 307 and "307" in to_moved["last_error"]
    assert to_moved["tries"] == receiver.count >= 2
    assert to_refused["status"] == "failed" and to_refused["last_status"] is None
    assert "connect" in to_refused["last_error"] and to_refused["tries"] >= 2
    assert attempts("failed") == given_up + 2


async def test_a_hanging_endpoint_holds_up_no_other(
    api: Client, admin: User, alice: User, deliver: Deliver, backends: Backends, make_user: MakeUser
) -> None:
    release = asyncio.Event()

    async def hang(_: Received) -> int:
        await release.wait()
        return 204

    other_admin = await make_user(tenant="globex", user="root", role="admin")
    dave = await make_user(tenant="globex", user="dave")
    async with Receiver(hang) as stuck, Receiver() as fine:
        await register(api, admin, stuck.url, ["notification.read"])
        hook = await register(api, other_admin, fine.url, ["notification.read"])
        slow = [await notify(deliver) for _ in range(12)]
        quick = [await notify(deliver, user="dave", tenant="globex") for _ in range(3)]
        async with courier(backends, in_flight=8, per_endpoint=4, drain=0.5):
            for nid in slow:
                await api.patch(f"{BASE}/{nid}/read", headers=alice.headers)
            await stuck.wait_for(4)  # the stuck endpoint holds its 4 slots
            for nid in quick:
                await api.patch(f"{BASE}/{nid}/read", headers=dave.headers)
            started = asyncio.get_running_loop().time()
            await fine.wait_for(3, timeout=3)
            took = asyncio.get_running_loop().time() - started
            await asyncio.sleep(0.3)
            assert stuck.count == 4  # at most per_endpoint in flight to it
            release.set()
    assert took < 1.5
    assert all(verified(r, hook["secret"])["tenant"] == "globex" for r in fine.received)


async def test_a_private_address_is_refused_at_delivery_too(
    api: Client, admin: User, alice: User, deliver: Deliver, receiver: Receiver, backends: Backends
) -> None:
    # Registered while private addresses were allowed (or a public name re-pointed since): the
    # worker, with the setting off, does not connect.
    by_name = await register(api, admin, f"http://localhost:{receiver.port}/", ["notification.read"])
    nid = await notify(deliver)
    async with courier(backends, allow_private=False):
        await api.patch(f"{BASE}/{nid}/read", headers=alice.headers)
        for _ in range(50):
            [listed] = await deliveries(api, admin, by_name["id"])
            if listed["tries"] >= 1 and listed["last_error"]:
                break
            await asyncio.sleep(0.1)
    assert receiver.count == 0
    assert listed["status"] == "pending" and "non-public address" in listed["last_error"]


async def test_a_deleted_webhook_gets_nothing_more(
    api: Client, admin: User, alice: User, deliver: Deliver, receiver: Receiver, backends: Backends
) -> None:
    hook = await register(api, admin, receiver.url, ["notification.read", "inbox.bulk"])
    nid = await notify(deliver)
    await api.patch(f"{BASE}/{nid}/read", headers=alice.headers)  # pending: no worker runs yet
    await api.delete(f"/v1/admin/webhooks/{hook['id']}", headers=admin.headers)
    await api.patch(f"{BASE}/{nid}/unread", headers=alice.headers)  # after the delete: nothing recorded
    async with courier(backends):
        await asyncio.sleep(0.8)
    assert receiver.count == 0
    rows = await backends.pool.fetch("SELECT type, status, last_error FROM webhook_deliveries")
    assert [tuple(r) for r in rows] == [("notification.read", "failed", "the webhook was deleted")]
