"""Many small events (a few named recipients each) recorded and delivered in one statement.

What upstream services publish most is a steady stream of small events, one to ten named users
each. Written one event at a time that is one statement, one commit and one round trip per event:
the round trips, not the work, set the pace. A stream read of such events is written here instead by
one statement, so one commit: every event recorded (once per tenant and id) and marked fanned out,
every recipient's row, and every recipient's counts.

What the statement keeps from the one-event path (fanout.py, _DELIVER_NAMED):
- an event already published (a conflict on (tenant_id, external_id)) is left out: no record, no row,
  and it is missing from the answer, so the caller sends it down the one-event path, which resumes or
  repairs whatever an earlier publish left undone; so is an event naming a user who does not exist,
  whom that path creates;
- deactivated users, users who muted the event's type or category, and expired events get no row;
- the events are inserted in (tenant, id) order, so two batches holding the same ids (a republish
  read by two workers) wait for each other's entries in one order and cannot deadlock;
- the counts rows are locked in user-id order, as every fan-out locks them, before any is changed;
  a user reached by several events of the batch gains +n at once (one version step for the lot).
The caller creates the named users it does not know first (users.ensure_members, in a statement of
its own, as _DELIVER_NAMED explains), and passes no event with a `group` (a thread takes the one-event
path) or with topics or `all` (their audience is resolved in chunks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

from service.model import Event
from service.store import events, outbox
from service.store.fanout import Delivery

# The columns of INSERT_EVENT's parameters, in its order ($1..$22): the batch's JSON carries the same
# values under these names. zip(strict=True) fails loudly if the two ever disagree.
_COLUMNS = (
    "tenant_id",
    "external_id",
    "type",
    "title",
    "message",
    "category",
    "tags",
    "trigger_type",
    "entity_type",
    "entity_id",
    "action_url",
    "actionable",
    "payload",
    "audience_users",
    "audience_topics",
    "audience_all",
    "occurred_at",
    "expires_at",
    "done",
    "grp",
    "actor",
    "actions",
)

# $1: a JSON array of events, one object per event with _COLUMNS as keys (jsonb_to_recordset turns
# JSON arrays into text[] and JSON null into SQL NULL, as the one-event insert stores them).
#   given     the batch's events, in (tenant, id) order;
#   ev        their records, already marked fanned out; a conflict (published before) inserts nothing,
#             and neither does an event naming a user who does not exist (any more: the caller
#             created the users it did not know, and a user it knew may have been erased since);
#   ins       one row per active, existing, not muting recipient of each new, unexpired event: each
#             event's users looked up by their unique index (OFFSET 0 keeps the lookup per event: the
#             planner, joining on the tenant alone, would otherwise scan every user of the tenant and
#             test each against every event's list);
#   gains     what each recipient's counts gain: one per new row;
#   locked    the counts rows, locked in user-id order before `cnt` changes any (its gate waits for it);
#   cnt       the new counts.
# The answer is three lists in one: (0, tenant id, event id, id) per recorded event, (1, event id, user
# id, row id) per row and (2, user id, version, unread, total, unseen) per recipient, put together by
# the caller: joined here, the CTEs' unknown sizes (estimated at one row) made PostgreSQL loop over
# every pair.
_DELIVER_BATCH = (
    """
WITH given AS (
    SELECT * FROM jsonb_to_recordset($1::jsonb) AS g (
        tenant_id bigint, external_id text, type text, title text, message text, category text, tags text[],
        trigger_type text, entity_type text, entity_id text, action_url text, actionable boolean, payload jsonb,
        audience_users text[], occurred_at timestamptz, expires_at timestamptz, actor text, actions jsonb
    )
),
ev AS (
    INSERT INTO events (
        tenant_id, external_id, type, title, message, category, tags, trigger_type,
        entity_type, entity_id, action_url, actionable, payload,
        audience_users, occurred_at, expires_at, fanout_done_at, actor, actions
    )
    SELECT tenant_id, external_id, type, title, message, category, coalesce(tags, '{}'), trigger_type,
           entity_type, entity_id, action_url, coalesce(actionable, false), payload,
           coalesce(audience_users, '{}'), coalesce(occurred_at, now()), expires_at, now(), actor, actions
    FROM given g
    WHERE NOT EXISTS (
        SELECT 1 FROM unnest(g.audience_users) AS named (external_id)
        WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.tenant_id = g.tenant_id AND u.external_id = named.external_id)
    )
    ORDER BY tenant_id, external_id
    ON CONFLICT (tenant_id, external_id) DO NOTHING
    RETURNING id, tenant_id, external_id, occurred_at, expires_at, type, category, audience_users
),
ins AS (
    INSERT INTO inbox (user_id, event_id, created_at, expires_at, type, category)
    SELECT u.id, ev.id, ev.occurred_at, ev.expires_at, ev.type, ev.category
    FROM ev CROSS JOIN LATERAL (
        SELECT u.id FROM users u
        WHERE u.tenant_id = ev.tenant_id AND u.external_id = ANY (ev.audience_users) AND u.active
        OFFSET 0
    ) u
    WHERE (ev.expires_at IS NULL OR ev.expires_at > now())
      AND NOT EXISTS (
          SELECT 1 FROM preferences p
          WHERE p.user_id = u.id AND (ev.type = ANY (p.muted_types) OR ev.category = ANY (p.muted_categories))
      )
    RETURNING id, user_id, event_id
),
gains AS (SELECT user_id, count(*)::int AS n FROM ins GROUP BY user_id),
locked AS (
    SELECT c.user_id FROM inbox_counts c
    WHERE c.user_id = ANY (ARRAY(SELECT user_id FROM gains))
    ORDER BY c.user_id
    FOR UPDATE
),
cnt AS (
    UPDATE inbox_counts c
    SET unread = c.unread + g.n, total = c.total + g.n, unseen = c.unseen + g.n, version = c.version + 1
    FROM gains g
    WHERE c.user_id = g.user_id AND (SELECT count(*) FROM locked) >= 0
    RETURNING c.user_id, c.unread, c.total, c.version, c.unseen
),
"""  # noqa: S608 (fixed fragments only; each event's `event.delivered` webhooks, recorded with it)
    + outbox.delivered(
        "ev",
        tenant="ev.tenant_id",
        event_key="ev.external_id",
        recipients="(SELECT count(*) FROM ins WHERE ins.event_id = ev.id)",
    )
    + """
SELECT 0, ev.tenant_id, ev.external_id, ev.id, NULL::bigint, NULL::int, NULL::int FROM ev
UNION ALL
SELECT 1, ins.event_id, NULL, ins.user_id, ins.id, NULL, NULL FROM ins
UNION ALL
SELECT 2, cnt.user_id, NULL, cnt.version, cnt.unread, cnt.total, cnt.unseen FROM cnt
"""
)


class Delivered(msgspec.Struct, frozen=True, kw_only=True):
    """A batch event that was new: its id and its recipients' rows (none when nobody received it)."""

    event_id: int
    deliveries: list[Delivery]


def _record(tenant_id: int, event: Event) -> dict[str, Any]:
    return dict(zip(_COLUMNS, events.insert_args(tenant_id, event, done=True), strict=True))


async def deliver(conn: asyncpg.Connection, batch: Sequence[tuple[int, Event]]) -> dict[tuple[int, str], Delivered]:
    """Record and deliver (tenant id, event) pairs in one statement. Each (tenant id, event id) must
    appear once. Returns the new events by (tenant id, event id); one published before is missing."""
    if not batch:
        return {}
    if any(e.group is not None or e.audience.topics or e.audience.all for _, e in batch):
        raise ValueError("a batch takes events of named users only, and no thread")
    # The connection's jsonb codec (backends/postgres.py) encodes the list, with msgspec.
    rows = await conn.fetch(_DELIVER_BATCH, [_record(t, e) for t, e in batch])
    recorded: dict[int, tuple[int, str]] = {}
    arrived: list[tuple[int, int, int]] = []
    counts: dict[int, tuple[int, int, int, int]] = {}
    for r in rows:
        if r[0] == 0:
            recorded[r[3]] = (r[1], r[2])
        elif r[0] == 1:
            arrived.append((r[1], r[3], r[4]))
        else:
            counts[r[1]] = (r[3], r[4], r[5], r[6])
    found = {key: Delivered(event_id=event_id, deliveries=[]) for event_id, key in recorded.items()}
    for event_id, user_id, inbox_id in arrived:
        if user_id not in counts:  # no counts row (none is ever missing): the row stands, uncopied
            continue
        version, unread, total, unseen = counts[user_id]
        found[recorded[event_id]].deliveries.append(
            Delivery(user_id=user_id, inbox_id=inbox_id, unread=unread, total=total, version=version, unseen=unseen)
        )
    return found
