"""Webhooks and their deliveries: registration, the admin's lists, and the workers' claims.

Every admin statement is scoped by `tenant_id`: another tenant's webhook is simply not found. The
rows a change owes are written by the change itself (store/outbox.py); here they are claimed, their
outcomes recorded, and finished ones pruned.

A claim is one statement: due rows are locked with SKIP LOCKED (so several workers share them),
taken a share per endpoint, at most `per_endpoint` minus what the claiming worker already has in
flight there (so one endpoint's backlog, or a hanging endpoint, cannot fill a claim), and leased:
`tries` grows by one and `next_at` moves `lease` seconds ahead, so a row whose worker dies is due
again then. `tries` is also the claim's fencing token: an outcome is recorded only if the row was
not claimed again meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from service.model import Record

# One webhook registration at a time per tenant (a row lock on the tenant that does not block the
# users' foreign keys), so that the count below holds.
_LOCK_TENANT = "SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE"
_REGISTER = """
INSERT INTO webhooks (tenant_id, url, events, secret)
SELECT $1, $2, $3, $4
WHERE (SELECT count(*) FROM webhooks WHERE tenant_id = $1 AND deleted_at IS NULL) < $5
RETURNING id, created_at
"""
_LIST = """
SELECT id, url, events, created_at FROM webhooks WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY id
"""
# Deleting ends what the webhook still had pending: nobody will see it again.
_DELETE = """
WITH gone AS (
    UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND tenant_id = $2 AND deleted_at IS NULL RETURNING id
),
ended AS (
    UPDATE webhook_deliveries d
    SET status = 'failed', last_error = 'the webhook was deleted'
    FROM gone WHERE d.webhook_id = gone.id AND d.status = 'pending'
)
SELECT id FROM gone
"""
# The latest deliveries of a live webhook of the tenant; no row at all when there is no such webhook,
# one row of NULLs when it has no delivery yet.
_DELIVERIES = """
SELECT d.msg_id, d.type, d.status, d.tries, d.last_error, d.last_status, d.created_at, d.last_attempt_at,
       d.delivered_at, CASE WHEN d.status = 'pending' THEN d.next_at END
FROM webhooks w
LEFT JOIN LATERAL (
    SELECT * FROM webhook_deliveries d WHERE d.webhook_id = w.id ORDER BY d.id DESC LIMIT $3
) d ON true
WHERE w.id = $1 AND w.tenant_id = $2 AND w.deleted_at IS NULL
ORDER BY d.id DESC
"""

# $1 rows at most; $2/$3 the webhooks this worker has deliveries in flight to, and how many; $4 at
# most that many per webhook; $5 the lease in seconds. Nothing at all is visited while nothing is due
# (one probe of webhook_deliveries_next). Webhooks are visited in a random order, so that
# when $1 cuts the claim short no endpoint is always last. A webhook deleted in the last day is still
# visited: a change that committed as it was deleted may have written a row for it after the delete
# ended the others (that row is then recorded as failed).
_CLAIM = """
WITH busy AS (
    SELECT * FROM unnest($2::bigint[], $3::int[]) AS b (webhook_id, used)
),
picked AS (
    SELECT d.id
    FROM (
        SELECT id FROM webhooks
        WHERE (deleted_at IS NULL OR deleted_at > now() - interval '1 day')
          AND EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND next_at <= now())
        ORDER BY random()
    ) w
    CROSS JOIN LATERAL (
        SELECT d.id FROM webhook_deliveries d
        WHERE d.webhook_id = w.id AND d.status = 'pending' AND d.next_at <= now()
        ORDER BY d.next_at
        LIMIT greatest(0, $4 - coalesce((SELECT used FROM busy WHERE busy.webhook_id = w.id), 0))
        FOR UPDATE SKIP LOCKED
    ) d
    LIMIT $1
),
claimed AS (
    UPDATE webhook_deliveries d
    SET tries = d.tries + 1, next_at = now() + make_interval(secs => $5), last_attempt_at = now()
    WHERE d.id = ANY (ARRAY(SELECT id FROM picked))
    RETURNING d.id, d.tries, d.webhook_id, d.tenant_id, d.user_id, d.type, d.msg_id, d.data, d.snapshot, d.body,
              d.created_at
)
SELECT c.id, c.tries, c.webhook_id, w.url, w.secret, w.deleted_at IS NULL, c.msg_id, c.type, c.tenant_id,
       (SELECT name FROM tenants WHERE id = c.tenant_id), c.user_id,
       (SELECT external_id FROM users WHERE id = c.user_id), c.created_at, c.data, c.snapshot, c.body
FROM claimed c JOIN webhooks w ON w.id = c.webhook_id
"""

# Outcomes, many at once: delivered; or due again after its delay; or failed for good, once the row
# is older than $9 seconds (or at once, `final`: its webhook was deleted). Only rows still held by
# the claim that sent them ($2, the tries it set) and still pending are touched; the body rendered
# for the first attempt is kept for the next. Rows are found by their primary key (`= ANY`) and every
# other table by its own, however large the tables are and whatever the planner thinks of the lists.
_RECORD = """
UPDATE webhook_deliveries d
SET status = CASE WHEN o.ok THEN 'delivered'
                  WHEN o.final OR d.created_at <= now() - make_interval(secs => $9) THEN 'failed'
                  ELSE 'pending' END,
    delivered_at = CASE WHEN o.ok THEN now() END,
    next_at = CASE WHEN o.ok THEN d.next_at ELSE now() + make_interval(secs => o.delay) END,
    last_error = o.error,
    last_status = o.status,
    body = coalesce(d.body, o.body)
FROM unnest($1::bigint[], $2::int[], $3::bool[], $4::int[], $5::text[], $6::float8[], $7::bool[], $8::bytea[])
    AS o (id, tries, ok, status, error, delay, final, body)
WHERE d.id = ANY ($1::bigint[]) AND d.id = o.id AND d.tries = o.tries AND d.status = 'pending'
RETURNING d.id, d.status
"""

_PRUNE = """
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE created_at < now() - make_interval(secs => $1) AND status <> 'pending'
    LIMIT $2
)
"""
_BACKLOG = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(next_at) FILTER (WHERE next_at <= now())), 0)::float8
FROM webhook_deliveries WHERE status = 'pending'
"""


class Webhook(Record, frozen=True):
    id: int
    url: str
    events: list[str]
    created_at: datetime


class Delivery(Record, frozen=True):
    """One row of a webhook's deliveries, as its admin sees it."""

    msg_id: str
    type: str
    status: str
    tries: int
    last_error: str | None
    last_status: int | None
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    next_attempt_at: datetime | None


class Claimed(Record, frozen=True):
    """A delivery taken by a worker, with all it needs to render, sign and send it."""

    id: int
    tries: int
    webhook_id: int
    url: str
    key: bytes
    live: bool  # False: the webhook was deleted since
    msg_id: str
    type: str
    tenant_id: int
    tenant: str
    user_id: int | None
    user: str | None
    occurred_at: datetime
    data: dict[str, Any] | None
    snapshot: dict[str, Any] | None
    body: bytes | None


class Outcome(Record, frozen=True):
    id: int
    tries: int
    ok: bool
    status: int | None
    error: str | None
    delay: float  # seconds until the next attempt, when not ok
    final: bool  # not ok, and not to be tried again
    body: bytes | None  # the body sent, kept for the next attempt


async def register(
    conn: asyncpg.Connection, tenant_id: int, url: str, events: Sequence[str], key: bytes, at_most: int
) -> Webhook | None:
    """The new webhook; None when the tenant already has `at_most`."""
    async with conn.transaction():
        await conn.execute(_LOCK_TENANT, tenant_id)
        row = await conn.fetchrow(_REGISTER, tenant_id, url, list(events), key, at_most)
    return None if row is None else Webhook(id=row[0], url=url, events=list(events), created_at=row[1])


async def listed(conn: asyncpg.Connection, tenant_id: int) -> list[Webhook]:
    return [Webhook(id=r[0], url=r[1], events=r[2], created_at=r[3]) for r in await conn.fetch(_LIST, tenant_id)]


async def delete(conn: asyncpg.Connection, tenant_id: int, webhook_id: int) -> bool:
    return await conn.fetchval(_DELETE, webhook_id, tenant_id) is not None


async def deliveries(conn: asyncpg.Connection, tenant_id: int, webhook_id: int, limit: int) -> list[Delivery] | None:
    """The webhook's latest deliveries, newest first; None when the tenant has no such webhook."""
    rows = await conn.fetch(_DELIVERIES, webhook_id, tenant_id, limit)
    if not rows:
        return None
    return [
        Delivery(
            msg_id=r[0],
            type=r[1],
            status=r[2],
            tries=r[3],
            last_error=r[4],
            last_status=r[5],
            created_at=r[6],
            last_attempt_at=r[7],
            delivered_at=r[8],
            next_attempt_at=r[9],
        )
        for r in rows
        if r[0] is not None
    ]


async def claim(
    conn: asyncpg.Connection, limit: int, busy: dict[int, int], per_endpoint: int, lease: float
) -> list[Claimed]:
    rows = await conn.fetch(_CLAIM, limit, list(busy), list(busy.values()), per_endpoint, lease)
    return [
        Claimed(
            id=r[0],
            tries=r[1],
            webhook_id=r[2],
            url=r[3],
            key=r[4],
            live=r[5],
            msg_id=r[6],
            type=r[7],
            tenant_id=r[8],
            tenant=r[9],
            user_id=r[10],
            user=r[11],
            occurred_at=r[12],
            data=r[13],
            snapshot=r[14],
            body=r[15],
        )
        for r in rows
    ]


async def record(conn: asyncpg.Connection, outcomes: Sequence[Outcome], give_up_after: float) -> list[str]:
    """Record outcomes; returns the new status of each row still held (others were claimed again)."""
    rows = await conn.fetch(
        _RECORD,
        [o.id for o in outcomes],
        [o.tries for o in outcomes],
        [o.ok for o in outcomes],
        [o.status for o in outcomes],
        [o.error for o in outcomes],
        [o.delay for o in outcomes],
        [o.final for o in outcomes],
        [o.body for o in outcomes],
        give_up_after,
    )
    return [r[1] for r in rows]


async def prune(conn: asyncpg.Connection, older_than: float, batch: int) -> int:
    """Remove up to `batch` finished deliveries older than `older_than` seconds; returns how many."""
    done: str = await conn.execute(_PRUNE, older_than, batch)
    return int(done.split()[-1])


async def backlog(conn: asyncpg.Connection) -> tuple[int, float]:
    """(pending deliveries, seconds the oldest due one has waited)."""
    row = await conn.fetchrow(_BACKLOG)
    assert row is not None
    return int(row[0]), float(row[1])
