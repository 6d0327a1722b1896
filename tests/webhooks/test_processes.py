"""Webhooks through real `herald api` and `herald worker` processes: a change's webhook leaves within
a second, and a worker killed between the change and the delivery loses nothing (the rows wait in
PostgreSQL; another worker sends them, each with its one id)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from service.local.harness import Child, herald_command, start, wait_ready
from service.local.receiver import Received, Receiver
from tests.support.processes import herald, json_line, stop
from tests.support.webhooks import verified

BASE = "/v1/notifications"


@pytest.fixture
def hook_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "HERALD_WEBHOOK_ALLOW_PRIVATE": "1", "HERALD_LOG_FORMAT": "text"}


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def processes(hook_env: dict[str, str], logs: Path) -> Iterator[dict[str, Child]]:
    """`herald api` and `herald worker`, ready, their output in `logs`; a test may kill the worker and
    start another."""
    children = {
        part: start(part, herald_command(part), hook_env, log=logs / f"{part}.log") for part in ("api", "worker")
    }
    try:
        wait_ready(f"http://127.0.0.1:{hook_env['HERALD_PORT']}/readyz", children.values())
        yield children
    finally:
        stop([c.proc for c in children.values() if c.proc.poll() is None])


def token(env: dict[str, str], user: str, role: str = "member", kind: str = "pat") -> str:
    if kind == "producer":
        made = json_line(herald("admin", "create-token", "--tenant", "acme", "--user", user, "--kind", kind, env=env))
    else:
        made = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", user, "--role", role, env=env))
    value: str = made["token"]
    return value


async def notifications(http: httpx.AsyncClient, producer: str, alice: str, n: int) -> list[str]:
    events = [
        {"id": f"e{i}", "type": "t", "tenant": "acme", "audience": {"users": ["alice"]}, "message": "m"}
        for i in range(n)
    ]
    reply = await http.post("/v1/events", json=events, headers={"Authorization": f"Bearer {producer}"})
    assert reply.status_code == 202
    for _ in range(100):
        found = (await http.get(f"{BASE}?limit=100", headers={"X-API-Key": alice})).json()["data"]["notifications"]
        if len(found) == n:
            return [item["id"] for item in found]
        await asyncio.sleep(0.05)
    raise AssertionError("the notifications did not arrive")


async def test_a_change_leaves_within_a_second(hook_env: dict[str, str], processes: dict[str, Child]) -> None:
    admin, alice = token(hook_env, "root", "admin"), token(hook_env, "alice")
    producer = token(hook_env, "svc", kind="producer")
    async with (
        Receiver() as receiver,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hook_env['HERALD_PORT']}") as http,
    ):
        made = await http.post(
            "/v1/admin/webhooks",
            json={"url": receiver.url, "events": ["notification.read"]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert made.status_code == 201
        ids = await notifications(http, producer, alice, 10)
        took = []
        for n, nid in enumerate(ids, start=1):
            await asyncio.sleep(0.1)
            started = time.monotonic()
            assert (await http.patch(f"{BASE}/{nid}/read", headers={"X-API-Key": alice})).status_code == 200
            [*_, last] = await receiver.wait_for(n, timeout=5)
            took.append(last.at - started)
        assert all(verified(r, made.json()["secret"])["type"] == "notification.read" for r in receiver.received)
    assert max(took) < 1.0, took


async def test_a_worker_killed_between_the_change_and_the_delivery(
    hook_env: dict[str, str], processes: dict[str, Child], logs: Path
) -> None:
    admin, alice = token(hook_env, "root", "admin"), token(hook_env, "alice")
    producer = token(hook_env, "svc", kind="producer")
    answering = asyncio.Event()

    async def hang_until_answering(_: Received) -> int:
        await answering.wait()
        return 204

    conn = await asyncpg.connect(hook_env["HERALD_DATABASE_URL"])
    async with (
        Receiver(hang_until_answering) as receiver,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{hook_env['HERALD_PORT']}") as http,
    ):
        made = await http.post(
            "/v1/admin/webhooks",
            json={"url": receiver.url + "/in?token=url-secret-123", "events": ["notification.read", "inbox.bulk"]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        secret = made.json()["secret"]
        ids = await notifications(http, producer, alice, 6)
        for nid in ids[:3]:
            await http.patch(f"{BASE}/{nid}/read", headers={"X-API-Key": alice})
        await receiver.wait_for(3)  # the worker holds three POSTs open: killed now, mid-delivery
        processes["worker"].proc.kill()
        processes["worker"].proc.wait(10)
        # Changes while no worker runs: recorded all the same.
        for nid in ids[3:5]:
            await http.patch(f"{BASE}/{nid}/read", headers={"X-API-Key": alice})
        await http.patch(f"{BASE}/bulk-read", json={"notification_ids": ids[5:]}, headers={"X-API-Key": alice})
        rows = await conn.fetch("SELECT status, next_at > now() AS leased FROM webhook_deliveries ORDER BY id")
        assert [r["status"] for r in rows] == ["pending"] * 6
        assert [r["leased"] for r in rows] == [True] * 3 + [False] * 3  # the dead worker's three stay leased
        # Their lease (60 s) is over when a worker claims them again; the test does not wait for it.
        await conn.execute("UPDATE webhook_deliveries SET next_at = now() WHERE status = 'pending'")
        answering.set()
        processes["worker"] = start("worker", herald_command("worker"), hook_env, log=logs / "worker-again.log")
        deadline = time.monotonic() + 20
        while await conn.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'") < 6:
            assert time.monotonic() < deadline, "not delivered after the restart"
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
    await conn.close()
    bodies: dict[str, set[bytes]] = {}
    for request in receiver.received:
        body: dict[str, Any] = verified(request, secret)
        bodies.setdefault(body["id"], set()).add(request.body)
    # Six changes, six ids; the three killed mid-POST arrived twice, the same body each time.
    assert len(bodies) == 6 and all(len(sent) == 1 for sent in bodies.values())
    assert receiver.count == 9
    # Neither the secret (in any form) nor the URL's token is in any log line.
    written = "".join(log.read_text() for log in logs.glob("*.log"))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    assert written and "herald.access" in written
    for leak in (secret, secret.removeprefix("whsec_"), key.hex(), "url-secret-123"):
        assert leak not in written
