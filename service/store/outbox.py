"""The outbox: the webhooks a change owes, written by the change's own statement.

A change of inbox rows (store/inbox.py) or the end of an event's fan-out (store/fanout.py) is one
SQL statement; each of those statements carries one more CTE, made here, that inserts a row into
`webhook_deliveries` for every registered webhook of the tenant taking the change's type. The change
and its webhooks therefore commit together or not at all: no crash of any Herald process between
the two can lose one (the workers deliver the rows later, at least once: service/webhooks/).

What it costs: a tenant without webhooks (or whose webhooks do not take the type) makes the CTE
probe the small `webhooks_live` index once and write nothing; a change that changed nothing writes
nothing either (every row of the CTE comes from the rows the change returned).

Adding a change (a statement that changes a user's rows, `WITH <rows> AS (UPDATE inbox ... RETURNING
..., inbox AS state)`): make it an f-string and add one line after its first CTE, naming the rows, the
SQL of its user and tenant, and the types to record. For a statement whose parameters are `$1` user,
`$2` row and `$3` tenant:

    _ARCHIVE = f'''
    WITH changed AS (UPDATE inbox SET ... WHERE user_id = $1 AND id = $2 ... RETURNING id, inbox AS state),
    {outbox.announce("changed", user="$1", tenant="$3", one="true", each="'notification.archived'", action="''")},
    cnt AS (...)
    SELECT ...'''

`one` is SQL that is true when the request named a single notification (one `notification.*` per
changed row, of type `each`, with the row's `state` as its snapshot) and false when it changes many
(one `inbox.bulk` whose `data` is `{"action": <action>, "changed": <rows changed>}`); a statement that
can be either takes it as a parameter (store/inbox.py's _SET_READ and _DELETE do).
"""

from __future__ import annotations

import asyncpg

# What the change statements record. The types a webhook may take are in service/webhooks/.
BULK = "inbox.bulk"
DELIVERED = "event.delivered"

# One record per changed row (`one`), its snapshot the row as the change left it (or, for a delete,
# as it was), rendered as the scalebox item when it is delivered; or one `inbox.bulk` record for the
# whole change, when anything changed. Then one delivery per live webhook of the tenant that takes
# that type.
_EACH = """SELECT {each} AS type, NULL::jsonb AS data, to_jsonb(r.{state}) AS snapshot FROM {rows} r WHERE {one}
        UNION ALL
        """
_ANNOUNCE = """hooks AS (
    INSERT INTO webhook_deliveries (webhook_id, tenant_id, user_id, type, data, snapshot)
    SELECT w.id, w.tenant_id, {user}, a.type, a.data, a.snapshot
    FROM (
        {each}SELECT '{bulk}' AS type, jsonb_build_object('action', {action}, 'changed', count(*)) AS data,
               NULL::jsonb AS snapshot
        FROM {rows} WHERE NOT {one} HAVING count(*) > 0
    ) a
    JOIN webhooks w ON w.tenant_id = {tenant} AND w.deleted_at IS NULL AND a.type = ANY (w.events)
)"""

# `event.delivered`, once per event, from a CTE (`source`) that returns the event's row only the
# one time its fan-out is recorded as complete.
_DELIVERED = """hooks AS (
    INSERT INTO webhook_deliveries (webhook_id, tenant_id, type, data)
    SELECT w.id, w.tenant_id, '{type}', jsonb_build_object('event_id', {event_key}, 'recipients', {recipients})
    FROM {source} JOIN webhooks w ON w.tenant_id = {tenant} AND w.deleted_at IS NULL AND '{type}' = ANY (w.events)
)"""


def announce(
    rows: str,
    *,
    user: str,
    tenant: str,
    action: str,
    one: str = "false",
    each: str | None = None,
    state: str = "state",
) -> str:
    """The outbox CTE (named `hooks`) of a statement whose CTE `rows` returned what it changed.

    `user`, `tenant`, `action`, `one` and `each` are SQL (parameters such as `$4`, or literals):
    `action` is the bulk action's name; `each` the per-row type, needed only when `one` can be
    true (and then `rows` must return the row as `state`)."""
    per_row = "" if each is None else _EACH.format(each=each, state=state, rows=rows, one=one)
    return _ANNOUNCE.format(each=per_row, bulk=BULK, action=action, rows=rows, one=one, user=user, tenant=tenant)


def delivered(source: str, *, tenant: str, event_key: str, recipients: str) -> str:
    """The outbox CTE (named `hooks`) recording `event.delivered` for the event `source` returns."""
    return _DELIVERED.format(type=DELIVERED, source=source, tenant=tenant, event_key=event_key, recipients=recipients)


# One `inbox.bulk` for a change made in several statements (a bulk action by filter, in batches:
# store/bulk.py), recorded once its last batch committed: $1 user, $2 tenant, $3 action, $4 changed.
_RECORD_BULK = f"""
INSERT INTO webhook_deliveries (webhook_id, tenant_id, user_id, type, data)
SELECT w.id, w.tenant_id, $1, '{BULK}', jsonb_build_object('action', $3::text, 'changed', $4::int)
FROM webhooks w WHERE w.tenant_id = $2 AND w.deleted_at IS NULL AND '{BULK}' = ANY (w.events)
"""  # noqa: S608


async def record_bulk(conn: asyncpg.Connection, user_id: int, tenant_id: int, action: str, changed: int) -> None:
    """Record the `inbox.bulk` of a change made in batches. Unlike every other change, it is not in
    the change's own transaction: a process that dies between the last batch and this statement
    leaves that request unannounced (the request fails, and repeating it announces what it changes)."""
    await conn.execute(_RECORD_BULK, user_id, tenant_id, action, changed)
