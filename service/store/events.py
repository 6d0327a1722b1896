"""Events: one row per published (tenant, id), whatever number of times it was published."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from service.model import Event

# The insert of an event, shared with the one-statement delivery in store/fanout.py. $19 marks the
# fan-out done at once (that delivery writes the rows in the same statement). ON CONFLICT DO NOTHING:
# a republished event returns no row, and the caller resumes its fan-out instead of starting another.
INSERT_EVENT = """
INSERT INTO events (
    tenant_id, external_id, type, title, message, category, tags, trigger_type,
    entity_type, entity_id, action_url, actionable, payload,
    audience_users, audience_topics, audience_all, occurred_at, expires_at, fanout_done_at, grp, actor,
    actions
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
          coalesce($17, now()), $18, CASE WHEN $19 THEN now() END, $20, $21, $22)
ON CONFLICT (tenant_id, external_id) DO NOTHING
RETURNING id, occurred_at, expires_at, type, category
"""
_FIND = """
SELECT id, fanout_done_at IS NOT NULL FROM events WHERE tenant_id = $1 AND external_id = $2
"""
_OCCURRED_AT = "SELECT occurred_at FROM events WHERE id = $1"
_STORED = """
SELECT e.external_id, e.type, t.name, e.audience_users, e.audience_topics, e.audience_all, e.message,
       e.title, e.category, e.tags, e.trigger_type, e.entity_type, e.entity_id, e.action_url,
       e.actionable, e.payload, e.occurred_at, e.expires_at, e.grp, e.actor, e.actions
FROM events e JOIN tenants t ON t.id = e.tenant_id WHERE e.id = $1
"""


def insert_args(tenant_id: int, event: Event, *, done: bool = False) -> list[Any]:
    """The parameters of INSERT_EVENT, in order."""
    entity = event.entity
    return [
        tenant_id,
        event.id,
        event.type,
        event.title,
        event.message,
        event.category,
        event.tags,
        event.trigger_type,
        entity.type if entity else None,
        entity.id if entity else None,
        event.action_url,
        event.actionable,
        event.payload,
        sorted(set(event.audience.users)),
        sorted(set(event.audience.topics)),
        event.audience.all,
        event.occurred_at,
        event.expires_at,
        done,
        event.group,
        event.actor,
        msgspec.to_builtins(event.actions) if event.actions else None,
    ]


async def insert(conn: asyncpg.Connection, tenant_id: int, event: Event) -> int | None:
    """The new event's id, or None when (tenant, id) was already published."""
    row = await conn.fetchrow(INSERT_EVENT, *insert_args(tenant_id, event))
    return None if row is None else int(row[0])


async def find(conn: asyncpg.Connection, tenant_id: int, external_id: str) -> tuple[int, bool] | None:
    """(event id, whether its fan-out has finished) of an already published event."""
    row = await conn.fetchrow(_FIND, tenant_id, external_id)
    return None if row is None else (row[0], row[1])


async def occurred_at(conn: asyncpg.Connection, event_id: int) -> datetime | None:
    value: datetime | None = await conn.fetchval(_OCCURRED_AT, event_id)
    return value


async def stored(conn: asyncpg.Connection, event_id: int) -> dict[str, Any] | None:
    """The event in its wire format, as Herald stored it."""
    r = await conn.fetchrow(_STORED, event_id)
    if r is None:
        return None
    return {
        "id": r[0],
        "type": r[1],
        "tenant": r[2],
        "audience": {"users": r[3], "topics": r[4], "all": r[5]},
        "message": r[6],
        "title": r[7],
        "category": r[8],
        "tags": r[9],
        "trigger_type": r[10],
        "entity": {"type": r[11], "id": r[12]} if r[11] is not None else None,
        "action_url": r[13],
        "actionable": r[14],
        "payload": r[15],
        "occurred_at": r[16],
        "expires_at": r[17],
        "group": r[18],
        "actor": r[19],
        "actions": r[20] or [],
    }
