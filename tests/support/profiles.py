"""What the profiles answer, checked and read back the same way by every test."""

from __future__ import annotations

import re
from typing import Any

import httpx

from service import ids
from tests.support.factories import User

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
BADGE = "/v1/unread-count"


def ok(reply: Any, message: str | None = None) -> Any:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["success"] is True and STAMP.match(body["timestamp"])
    if message is not None:
        assert body["message"] == message
    return body["data"]


def refused(reply: Any, status: int) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"success", "error", "timestamp"} and body["success"] is False
    assert STAMP.match(body["timestamp"]) and body["error"]
    return str(body["error"])


def snooze_path(row: int) -> str:
    return f"/v1/notifications/{ids.to_scalebox(row)}/snooze"


async def everything(client: httpx.AsyncClient, who: User) -> dict[str, Any]:
    """What every profile shows: the ids each list holds, and each count."""
    h = who.headers
    scalebox = ok(await client.get("/v1/notifications", headers=h))
    qualytics = (await client.get("/api/user-notifications", params={"size": 100}, headers=h)).json()
    listing = (await client.get("/api/user-notifications/listing", headers=h)).json()
    aptly = (await client.get("/aptly/v1/notifications", params={"tenantId": who.tenant}, headers=h)).json()["data"]
    badge = (await client.get(BADGE, headers=h)).json()
    return {
        "scalebox": sorted(ids.from_scalebox(n["id"]) for n in scalebox["notifications"]),
        "qualytics": sorted(i["id"] for i in qualytics["items"]),
        "listing": sorted(i["id"] for i in listing),
        "aptly": sorted(ids.from_uuid(n["id"]) for n in aptly["data"]),
        "counts": (
            badge["unread_count"],
            badge["unseen_count"],
            scalebox["unread_count"],
            scalebox["pagination"]["total"],
            qualytics["total"],
            aptly["total"],
        ),
    }
