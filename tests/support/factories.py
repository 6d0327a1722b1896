"""Users, events and subscriptions made the way a test needs them, and the recorder of the jobs a
fan-out enqueues."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec
import redis

from service.keys import STREAM
from service.model import Event, decode_event
from workers.delivery import Outcome

TABLES = (
    "inbox, thread_actors, fanout_chunks, events, subscriptions, tokens, inbox_counts, preferences, "
    "webhook_deliveries, webhooks, users, tenants"
)


class User(msgspec.Struct, frozen=True):
    tenant: str
    user: str
    role: str
    token: str
    user_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


MakeUser = Callable[..., Awaitable[User]]


_event_ids = itertools.count(1)


def make_event(**fields: Any) -> Event:
    """A valid event; any field can be overridden, `users=[...]` is short for the audience."""
    body: dict[str, Any] = {
        "id": f"evt-{next(_event_ids)}",
        "type": "scan.completed",
        "tenant": "acme",
        "audience": {"users": fields.pop("users", ["alice"])},
        "title": "Scan completed",
        "message": "A Scan operation on Healthcare Analytics has completed.",
    }
    body.update(fields)
    return decode_event(msgspec.json.encode(body))


def event(**fields: Any) -> bytes:
    """A valid stream entry's event; any field can be overridden."""
    body: dict[str, Any] = {"id": "e1", "type": "t", "tenant": "acme", "audience": {"users": ["alice"]}, "message": "m"}
    body.update(fields)
    return msgspec.json.encode(body)


def at(seconds: float) -> str:
    """An ISO 8601 time `seconds` from now (in the past when negative)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def publish(url: str, event_id: str, user: str) -> None:
    client = redis.Redis.from_url(url)
    event = {"id": event_id, "type": "t", "tenant": "acme", "audience": {"users": [user]}, "message": event_id}
    client.xadd(STREAM, {"event": msgspec.json.encode(event)})
    client.close()


class JobRecorder:
    """Records the chunk jobs a fan-out enqueues, so a test can run them by hand: twice, concurrently,
    or not at all. (The real arq path is tested in tests/workers.)"""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, tuple[Any, ...], str | None]] = []

    async def enqueue_job(self, function: str, *args: Any, _job_id: str | None = None, **_: Any) -> None:
        self.jobs.append((function, args, _job_id))


Deliver = Callable[..., Awaitable[Outcome]]


async def seed_topic(conn: asyncpg.Connection, topic: str, n: int) -> None:
    """`n` members of tenant acme (member-1 ... member-n) subscribed to `topic`, with counts rows,
    set-based."""
    tenant = await conn.fetchval("INSERT INTO tenants (name) VALUES ('acme') RETURNING id")
    await conn.execute(
        """WITH u AS (INSERT INTO users (tenant_id, external_id)
                      SELECT $1, 'member-' || g FROM generate_series(1, $2) g RETURNING id),
                c AS (INSERT INTO inbox_counts (user_id) SELECT id FROM u RETURNING user_id)
           INSERT INTO subscriptions (tenant_id, topic, user_id) SELECT $1, $3, user_id FROM c""",
        tenant,
        n,
        topic,
    )
