"""Webhooks in tests: registering through the API, a courier on the test's own loop, and checking
what a receiver got the way a receiver would (the Standard Webhooks library)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
from standardwebhooks.webhooks import Webhook

from service.http.profiles.scalebox import present
from service.local.receiver import Received
from service.process import Backends
from service.webhooks.courier import Courier
from service.webhooks.send import Sender
from tests.support.factories import User

ALL = [
    "notification.read",
    "notification.unread",
    "notification.archived",
    "notification.interacted",
    "notification.deleted",
    "inbox.bulk",
    "event.delivered",
]


async def register(client: httpx.AsyncClient, admin: User, url: str, events: Sequence[str] = ALL) -> dict[str, Any]:
    reply = await client.post("/v1/admin/webhooks", json={"url": url, "events": list(events)}, headers=admin.headers)
    assert reply.status_code == 201, reply.text
    made: dict[str, Any] = reply.json()
    return made


async def deliveries(client: httpx.AsyncClient, admin: User, webhook_id: str) -> list[dict[str, Any]]:
    reply = await client.get(f"/v1/admin/webhooks/{webhook_id}/deliveries", headers=admin.headers)
    assert reply.status_code == 200, reply.text
    found: list[dict[str, Any]] = reply.json()["deliveries"]
    return found


def verified(request: Received, secret: str) -> dict[str, Any]:
    """The body, once the spec's own library has verified its signature (it raises otherwise)."""
    body: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    assert body["id"] == request.headers["webhook-id"]
    return body


@asynccontextmanager
async def courier(backends: Backends, *, allow_private: bool = True, **options: Any) -> AsyncIterator[Courier]:
    """The worker's courier, running on the test's loop until the block ends."""
    sender = Sender(allow_private, **({"timeout": options.pop("timeout")} if "timeout" in options else {}))
    running = Courier(backends, sender, present, **options)
    stopping = asyncio.Event()
    task = asyncio.create_task(running.run(stopping))
    try:
        yield running
    finally:
        stopping.set()
        # A hanging endpoint's POSTs are left to their timeout by a real stop; a test does not wait.
        await asyncio.wait_for(asyncio.shield(task), 15)
        await sender.close()


async def outbox(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch("SELECT * FROM webhook_deliveries ORDER BY id")
    finally:
        await conn.close()
