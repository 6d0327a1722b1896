"""A user's inbox: the one query layer every API profile reads and writes through.

Every statement is scoped by `user_id` first: another user's row is simply not found.
Every change of read state or membership updates `inbox_counts` in the same statement, and only by
the number of rows that really changed, so the counts stay exact under any interleaving (two
concurrent "mark read" of one row: the second waits for the row lock, re-checks `read_at IS NULL`,
and changes nothing).

A snoozed row is out of the inbox until its time (schema.sql, "Shown rows"): every statement here
but `snooze` sees only shown rows (`snoozed_until IS NULL`), so a snoozed row is not found, not
listed and not counted, and nothing but `snooze` and the sweep (store/due.py) can change it.

An archived row is out of every list but the archive's and out of every count, yet still the user's:
it is found by its id, can be read, unread or deleted (changing no count), and comes back with its
read and seen state when unarchived. "Counted" below means shown and not archived. Statements about
"all" of the inbox (read-all, seen, delete-all) mean the inbox, not the archive.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from service.model import (
    ACTORS_SHOWN,
    Action,
    Counts,
    CountsChange,
    InboxItem,
    InboxQuery,
    Position,
    Principal,
    Snoozed,
    TabGroup,
)
from service.store import outbox
from service.store.counts import as_counts

# An item's columns, in the order _item reads them. A thread's actors come from its node (schema.sql,
# thread_actors): the newest ACTORS_SHOWN of them, and how many in all.
_ITEM = f"""i.id, i.created_at, i.read_at, e.id, e.external_id, e.type, e.title, e.message, e.category,
       e.tags, e.trigger_type, e.entity_type, e.entity_id, e.action_url, e.actionable, e.payload,
       e.occurred_at, i.thread, i.activity, coalesce(ta.actors[1:{ACTORS_SHOWN}], ARRAY[]::text[]),
       coalesce(cardinality(ta.actors), 0), i.archived_at, e.actions, i.interaction, i.interacted_at"""
_COLUMNS = f"""
SELECT {_ITEM}
FROM inbox i JOIN events e ON e.id = i.event_id LEFT JOIN thread_actors ta ON ta.id = i.actors_id
WHERE i.user_id = $1 AND i.snoozed_until IS NULL
"""  # noqa: S608
# The page found from the index alone, then its rows read and joined to their events: rows
# skipped by OFFSET are only index entries (an index-only scan of (user_id, created_at, id), or of
# its unread twin), never heap rows or joins; a deep page cost 40x the first when every skipped
# row was joined. For queries that filter on inbox columns only; a filter on the event needs the
# join to choose the rows.
_PAGE_FIRST = (
    """
WITH k AS (
    SELECT i.id FROM inbox i WHERE i.user_id = $1 AND i.snoozed_until IS NULL{where}{order}{page}
)
SELECT """  # noqa: S608
    + _ITEM
    + """{version}
FROM k JOIN inbox i ON i.id = k.id JOIN events e ON e.id = i.event_id
LEFT JOIN thread_actors ta ON ta.id = i.actors_id{order}
"""
)
_COUNT_JOINED = (
    "SELECT count(*) FROM inbox i JOIN events e ON e.id = i.event_id WHERE i.user_id = $1 AND i.snoozed_until IS NULL"
)
# Which rows a list or count looks at (InboxQuery.archived). The inbox's is literally the list
# indexes' predicate (with the shown one every statement starts with), so that they are used.
_ARCHIVED = {
    "false": " AND i.archived_at IS NULL",
    "true": " AND i.archived_at IS NOT NULL",
    "all": "",
}
_GET = _COLUMNS + " AND i.id = $2"  # archived or not: an archived notification is still the user's
# An event in the shape of a new, unread row of it (row id and user are filled in by the caller):
# a stream renders an arrival from this, cached per event, instead of reading each row.
_EVENT_AS_ITEM = """
SELECT 0, e.occurred_at, NULL::timestamptz, e.id, e.external_id, e.type, e.title, e.message, e.category,
       e.tags, e.trigger_type, e.entity_type, e.entity_id, e.action_url, e.actionable, e.payload,
       e.occurred_at, e.grp, 1, CASE WHEN e.actor IS NULL THEN '{}' ELSE ARRAY[e.actor] END,
       CASE WHEN e.actor IS NULL THEN 0 ELSE 1 END, NULL::timestamptz, e.actions, NULL, NULL::timestamptz
FROM events e WHERE e.id = $1 AND e.tenant_id = $2
"""
# What arrived after row $2, oldest first: replayed to a stream that reconnects.
_ARRIVED_AFTER = _COLUMNS + " AND i.archived_at IS NULL AND i.id > $2 AND i.read_at IS NULL ORDER BY i.id LIMIT $3"

# Filter fragments; `{}` is the number of the parameter that carries the value.
_READ = " AND i.read_at IS NOT NULL"
_UNREAD = " AND i.read_at IS NULL"  # with the shown predicate, literally the partial index's, so it is used
_BY_FIELD = {
    "types": " AND e.type = ANY (${}::text[])",
    "categories": " AND e.category = ANY (${}::text[])",
    "entity_types": " AND e.entity_type = ANY (${}::text[])",
    "trigger_types": " AND e.trigger_type = ANY (${}::text[])",
    "tags": " AND e.tags && ${}::text[]",
    "since": " AND i.created_at >= ${}",
    "before": " AND i.created_at < ${}",
}
# Keyset paging: rows strictly after a position in the list's order. A row comparison, so the
# (user_id, created_at, id) index serves it at any depth.
_AFTER_NEWEST_FIRST = " AND (i.created_at, i.id) < (${}, ${})"
_AFTER_OLDEST_FIRST = " AND (i.created_at, i.id) > (${}, ${})"
# A deep page started at a remembered row (service/positions.py): that row and the rows after it.
_FROM_NEWEST_FIRST = " AND (i.created_at, i.id) <= (${}, ${})"
_FROM_OLDEST_FIRST = " AND (i.created_at, i.id) >= (${}, ${})"
# The user's count version, read by the page's statement (so in its snapshot): what its rows'
# positions are remembered under.
_VERSION = ", (SELECT c.version FROM inbox_counts c WHERE c.user_id = $1)"
_NEWEST_FIRST = " ORDER BY i.created_at DESC, i.id DESC"
_OLDEST_FIRST = " ORDER BY i.created_at ASC, i.id ASC"
_PAGE = " LIMIT ${} OFFSET ${}"

_COUNTS = "SELECT user_id, unread, total, version, unseen FROM inbox_counts WHERE user_id = $1"
_COUNTS_OF = "SELECT user_id, unread, total, version, unseen FROM inbox_counts WHERE user_id = ANY ($1::bigint[])"

# How each change of read state or membership ends: `cnt` applies to the user's counts row what the
# statement's first CTE (`{rows}`) changed, in the same statement, and only when it changed
# something; the one result row is `{result}` and the new counts, or NULLs when nothing changed (then
# the counts row was not touched). Filled in below, at import: the statements stay constants.
_NEW_COUNTS = """\
    WHERE user_id = $1 AND EXISTS (SELECT 1 FROM {rows})
    RETURNING user_id, unread, total, version, unseen
)
SELECT {result}, cnt.user_id, cnt.unread, cnt.total, cnt.version, cnt.unseen, {tabs}
FROM (VALUES (1)) one LEFT JOIN cnt ON true
"""
# What the change did to the user's tab groups (service/counts/tabs.py: the cached breakdown is
# brought forward by it instead of being counted again), from `source`: rows naming their group
# (tab_type, tab_category, tab_archived) and what they add to it (d_total, d_unread, d_unseen,
# signed), as the breakdown counts: archived rows too, unlike the badge. NULL when a row has no type
# of its own (written before types were copied onto rows): the breakdown is then counted again.
_TAB_CHANGE = """(
    SELECT CASE WHEN count(*) = count(g.tab_type)
                THEN jsonb_agg(jsonb_build_array(g.tab_type, g.tab_category, g.tab_archived, g.t, g.u, g.s)) END
    FROM (SELECT tab_type, tab_category, tab_archived,
                 sum(d_total)::int AS t, sum(d_unread)::int AS u, sum(d_unseen)::int AS s
          FROM {source} GROUP BY 1, 2, 3) g
)"""
# A change whose effect on the tab groups is not worked out (one of many rows): counted again.
_NO_TAB_CHANGE = "NULL::jsonb"


def _tabs_of(source: str) -> str:
    return _TAB_CHANGE.format(source=source)


# Rows deleted (`gone`, returning _GONE): off the counts as they stood; an archived row was in none.
_GONE_COUNTS = """cnt AS (
    UPDATE inbox_counts
    SET unread = unread - (SELECT count(*) FILTER (WHERE unread) FROM gone)::int,
        unseen = unseen - (SELECT count(*) FILTER (WHERE unseen) FROM gone)::int,
        total = total - (SELECT count(*) FILTER (WHERE counted) FROM gone)::int,
        version = version + 1
""" + _NEW_COUNTS.replace("{rows}", "gone")  # noqa: S608
# A removed row's group, as the breakdown counted it (for _TAB_CHANGE).
_GONE_GROUP = """type AS tab_type, category AS tab_category, archived_at IS NOT NULL AS tab_archived,
    -1 AS d_total, -(read_at IS NULL)::int AS d_unread, -(read_at IS NULL AND seen_at IS NULL)::int AS d_unseen"""

# $3 true: unread -> read; false: read -> unread. Only rows whose state changes are touched. $4 is the
# tenant and $5 whether the request named one notification, for the webhooks (store/outbox.py).
_READ_TYPE = "CASE WHEN $3 THEN 'notification.read' ELSE 'notification.unread' END"
_READ_ACTION = "CASE WHEN $3 THEN 'read' ELSE 'unread' END"
_SET_READ = f"""
WITH changed AS (
    UPDATE inbox SET read_at = CASE WHEN $3 THEN now() END
    WHERE user_id = $1 AND id = ANY ($2::bigint[]) AND (read_at IS NULL) = $3 AND snoozed_until IS NULL
    RETURNING id, seen_at IS NULL AS unseen, archived_at IS NULL AS counted, inbox AS state,
              type AS tab_type, category AS tab_category, archived_at IS NOT NULL AS tab_archived,
              0 AS d_total, CASE WHEN $3 THEN -1 ELSE 1 END AS d_unread,
              CASE WHEN seen_at IS NOT NULL THEN 0 WHEN $3 THEN -1 ELSE 1 END AS d_unseen
),
{outbox.announce("changed", user="$1", tenant="$4", one="$5", each=_READ_TYPE, action=_READ_ACTION)},
cnt AS (
    UPDATE inbox_counts
    SET unread = unread + (CASE WHEN $3 THEN -1 ELSE 1 END)
            * (SELECT count(*) FILTER (WHERE counted) FROM changed)::int,
        unseen = unseen + (CASE WHEN $3 THEN -1 ELSE 1 END)
            * (SELECT count(*) FILTER (WHERE unseen AND counted) FROM changed)::int,
        version = version + 1
""" + _NEW_COUNTS.format(rows="changed", result="ARRAY(SELECT id FROM changed)", tabs=_tabs_of("changed"))  # noqa: S608
# Subtracts what it changed rather than writing 0: a fan-out row committed after this statement's
# snapshot is still unread, and its +1 is already in the counts row this UPDATE waits for.
_READ_ALL = f"""
WITH changed AS (
    UPDATE inbox SET read_at = now()
    WHERE user_id = $1 AND read_at IS NULL AND snoozed_until IS NULL AND archived_at IS NULL
    RETURNING seen_at IS NULL AS unseen
),
{outbox.announce("changed", user="$1", tenant="$2", action="'read'")},
cnt AS (
    UPDATE inbox_counts
    SET unread = unread - (SELECT count(*) FROM changed)::int,
        unseen = unseen - (SELECT count(*) FILTER (WHERE unseen) FROM changed)::int,
        version = version + 1
""" + _NEW_COUNTS.format(rows="changed", result="(SELECT count(*) FROM changed)", tabs=_NO_TAB_CHANGE)  # noqa: S608
# The user opened the bell: every unread row not yet seen is seen now. Subtracts what it changed, as
# _READ_ALL does, so an arrival committed after this statement's snapshot stays unseen.
_SEEN = f"""
WITH changed AS (
    UPDATE inbox SET seen_at = now()
    WHERE user_id = $1 AND read_at IS NULL AND seen_at IS NULL AND snoozed_until IS NULL AND archived_at IS NULL
    RETURNING type AS tab_type, category AS tab_category, false AS tab_archived, 0 AS d_total, 0 AS d_unread,
              -1 AS d_unseen
),
{outbox.announce("changed", user="$1", tenant="$2", action="'seen'")},
cnt AS (
    UPDATE inbox_counts
    SET unseen = unseen - (SELECT count(*) FROM changed)::int, version = version + 1
""" + _NEW_COUNTS.format(rows="changed", result="(SELECT count(*) FROM changed)", tabs=_tabs_of("changed"))  # noqa: S608
_GONE = """archived_at IS NULL AND read_at IS NULL AS unread,
    archived_at IS NULL AND read_at IS NULL AND seen_at IS NULL AS unseen, archived_at IS NULL AS counted"""
_DELETE = f"""
WITH gone AS (
    DELETE FROM inbox WHERE user_id = $1 AND id = ANY ($2::bigint[]) AND snoozed_until IS NULL
    RETURNING id, {_GONE}, inbox AS state, {_GONE_GROUP}
),
{outbox.announce("gone", user="$1", tenant="$3", one="$4", each="'notification.deleted'", action="'delete'")},
""" + _GONE_COUNTS.format(result="ARRAY(SELECT id FROM gone)", tabs=_tabs_of("gone"))  # noqa: S608
_DELETE_ALL = f"""
WITH gone AS (
    DELETE FROM inbox WHERE user_id = $1 AND snoozed_until IS NULL AND archived_at IS NULL
    RETURNING {_GONE}
),
{outbox.announce("gone", user="$1", tenant="$2", action="'delete'")},
""" + _GONE_COUNTS.format(result="(SELECT count(*) FROM gone)", tabs=_NO_TAB_CHANGE)  # noqa: S608


# $3 true: archive; false: unarchive. Only rows whose state changes are touched; they leave (or
# rejoin) the counts with their read and seen state as it stands. $4 is the tenant, for the
# `notification.archived` webhook (unarchiving has no webhook type: the NULL type matches none).
_SET_ARCHIVED = f"""
WITH changed AS (
    UPDATE inbox SET archived_at = CASE WHEN $3 THEN now() END
    WHERE user_id = $1 AND id = ANY ($2::bigint[]) AND (archived_at IS NULL) = $3 AND snoozed_until IS NULL
    RETURNING id, read_at IS NULL AS unread, read_at IS NULL AND seen_at IS NULL AS unseen, inbox AS state,
              type AS tab_type, category AS tab_category
),
{
    outbox.announce(
        "changed",
        user="$1",
        tenant="$4",
        one="true",
        each="CASE WHEN $3 THEN 'notification.archived' END",
        action="'archive'",
    )
},
cnt AS (
    UPDATE inbox_counts
    SET unread = unread + (CASE WHEN $3 THEN -1 ELSE 1 END) * (SELECT count(*) FILTER (WHERE unread) FROM changed)::int,
        unseen = unseen + (CASE WHEN $3 THEN -1 ELSE 1 END) * (SELECT count(*) FILTER (WHERE unseen) FROM changed)::int,
        total = total + (CASE WHEN $3 THEN -1 ELSE 1 END) * (SELECT count(*) FROM changed)::int,
        version = version + 1
""" + _NEW_COUNTS.format(  # noqa: S608
    rows="changed",
    result="ARRAY(SELECT id FROM changed)",
    # Each row leaves its group of the other archive state and joins the group of this one.
    tabs=_tabs_of(
        """(SELECT tab_type, tab_category, moved.archived AS tab_archived, moved.sign AS d_total,
                  moved.sign * unread::int AS d_unread, moved.sign * unseen::int AS d_unseen
           FROM changed CROSS JOIN (VALUES ($3, 1), (NOT $3, -1)) AS moved (archived, sign)) AS moves"""
    ),
)
# The reader took action $3 of row $2 (or 'open': followed the notification itself): recorded, and
# the row is read. The action must be one the row's event offers. The row is locked and read as it
# is first (`old`), so the counts lose exactly what it was worth: an unread row in the inbox.
_INTERACT = f"""
WITH old AS (
    SELECT i.id, i.read_at IS NULL AND i.archived_at IS NULL AS unread,
           i.read_at IS NULL AND i.archived_at IS NULL AND i.seen_at IS NULL AS unseen,
           i.type AS tab_type, i.category AS tab_category, i.archived_at IS NOT NULL AS tab_archived, 0 AS d_total,
           -(i.read_at IS NULL)::int AS d_unread, -(i.read_at IS NULL AND i.seen_at IS NULL)::int AS d_unseen
    FROM inbox i JOIN events e ON e.id = i.event_id
    WHERE i.user_id = $1 AND i.id = $2 AND i.snoozed_until IS NULL
      AND ($3 = 'open' OR e.actions @> jsonb_build_array(jsonb_build_object('id', $3::text)))
    FOR UPDATE OF i
),
changed AS (
    UPDATE inbox i SET interaction = $3, interacted_at = now(), read_at = coalesce(i.read_at, now())
    FROM old WHERE i.id = old.id
    RETURNING old.unread, old.unseen, i AS state
),
{outbox.announce("changed", user="$1", tenant="$4", one="true", each="'notification.interacted'", action="'read'")},
cnt AS (
    UPDATE inbox_counts
    SET unread = unread - (SELECT count(*) FILTER (WHERE unread) FROM changed)::int,
        unseen = unseen - (SELECT count(*) FILTER (WHERE unseen) FROM changed)::int,
        version = version + 1
""" + _NEW_COUNTS.format(rows="changed", result="(SELECT count(*) FROM changed)", tabs=_tabs_of("old"))  # noqa: S608
# Whether row $2 is the user's (archived or not), for a change that changed nothing.
_OWNS = "SELECT archived_at IS NOT NULL FROM inbox WHERE user_id = $1 AND id = $2 AND snoozed_until IS NULL"


# Snooze row $2 until $3, or end its snooze when $3 has passed. The row is locked first and read as
# it is now (`old`); what happens follows from that:
#   shown,   $3 ahead    hidden until $3, and taken off the counts as it stood (unread, unseen, total)
#   snoozed, $3 ahead    only the time moves; it was not counted and still is not
#   snoozed, $3 passed   back at once, as the sweep brings it back: unread, new, counted
#   shown,   $3 passed   nothing to do
# So the counts change exactly when `shown = hide`. Taking the row lock before the counts row is the
# order of every other writer.
_SNOOZE = """
WITH old AS (
    SELECT id, event_id, snoozed_until IS NULL AS shown, $3::timestamptz > now() AS hide,
           read_at IS NULL AS unread, read_at IS NULL AND seen_at IS NULL AS unseen
    FROM inbox WHERE user_id = $1 AND id = $2 AND archived_at IS NULL
    FOR UPDATE
),
changed AS (
    UPDATE inbox i
    SET snoozed_until = CASE WHEN old.hide THEN $3::timestamptz END,
        read_at = CASE WHEN old.hide THEN i.read_at END,
        seen_at = CASE WHEN old.hide THEN i.seen_at END
    FROM old
    WHERE i.id = old.id AND (old.hide OR NOT old.shown)
    RETURNING old.shown, old.hide, old.unread, old.unseen
),
delta AS (
    SELECT CASE WHEN hide THEN -unread::int ELSE 1 END AS unread,
           CASE WHEN hide THEN -unseen::int ELSE 1 END AS unseen,
           CASE WHEN hide THEN -1 ELSE 1 END AS total
    FROM changed WHERE shown = hide
),
cnt AS (
    UPDATE inbox_counts c
    SET unread = c.unread + d.unread, unseen = c.unseen + d.unseen, total = c.total + d.total,
        version = c.version + 1
    FROM delta d
    WHERE c.user_id = $1
    RETURNING c.user_id, c.unread, c.total, c.version, c.unseen
)
SELECT old.event_id, old.hide, NOT old.shown AND NOT old.hide AS woke,
       cnt.user_id, cnt.unread, cnt.total, cnt.version, cnt.unseen
FROM old LEFT JOIN cnt ON true
"""


def _where(query: InboxQuery, params: list[Any]) -> str:
    sql = _ARCHIVED[query.archived]
    if query.read is True:
        sql += _READ
    elif query.read is False:
        sql += _UNREAD
    for field, fragment in _BY_FIELD.items():
        value = getattr(query, field)
        if value:
            params.append(list(value) if isinstance(value, tuple) else value)
            sql += fragment.format(len(params))
    return sql


_as_actions = msgspec.json.Decoder(list[Action]).decode


def _actions(stored: Any) -> list[Action]:
    """The event's actions as stored (jsonb, decoded by the pool's codec or as text)."""
    if not stored:
        return []
    if isinstance(stored, str):
        return _as_actions(stored)
    return msgspec.convert(stored, list[Action])


def _item(row: asyncpg.Record, who: Principal) -> InboxItem:
    return InboxItem(
        id=row[0],
        user=who.user,
        tenant=who.tenant,
        created_at=row[1],
        read_at=row[2],
        event_id=row[3],
        event_key=row[4],
        type=row[5],
        title=row[6],
        message=row[7],
        category=row[8],
        tags=row[9],
        trigger_type=row[10],
        entity_type=row[11],
        entity_id=row[12],
        action_url=row[13],
        actionable=row[14],
        payload=row[15],
        occurred_at=row[16],
        group=row[17],
        activity=row[18],
        actors=row[19],
        actor_count=row[20],
        archived_at=row[21],
        actions=_actions(row[22]),
        interaction=row[23],
        interacted_at=row[24],
    )


def _counts(row: asyncpg.Record, offset: int) -> Counts | None:
    if row[offset] is None:
        return None
    return as_counts(row, offset)


_as_tab_groups = msgspec.json.Decoder(list[TabGroup]).decode


def _tab_groups(stored: Any) -> list[TabGroup] | None:
    """A statement's _TAB_CHANGE (jsonb, decoded by the pool's codec or as text)."""
    if stored is None:
        return None
    if isinstance(stored, str):
        return _as_tab_groups(stored)
    return msgspec.convert(stored, list[TabGroup])


async def _change(conn: asyncpg.Connection, sql: str, *args: Any) -> tuple[Any, Counts | None]:
    """Run one of the statements ending in _NEW_COUNTS: what it returns, and the new counts if any
    (with what the change did to the tab groups, when the statement works it out)."""
    row = await conn.fetchrow(sql, *args)
    assert row is not None  # always one row, NULL counts when nothing changed
    if row[1] is None:
        return row[0], None
    return row[0], CountsChange(
        user_id=row[1], unread=row[2], total=row[3], version=row[4], unseen=row[5], tabs=_tab_groups(row[6])
    )


async def items(
    conn: asyncpg.Connection,
    who: Principal,
    query: InboxQuery,
    *,
    limit: int,
    offset: int = 0,
    after: Position | None = None,
) -> list[InboxItem]:
    found, _ = await _items(conn, who, query, limit=limit, offset=offset, after=after)
    return found


async def items_from(
    conn: asyncpg.Connection, who: Principal, query: InboxQuery, *, limit: int, offset: int, start: Position | None
) -> tuple[list[InboxItem], int | None]:
    """A page of a list the counters describe (not `by_event`), `offset` rows on from the row at
    `start` (inclusive; None: from the top), and the user's count version in the same snapshot
    (None when the page is empty)."""
    assert not query.by_event, "a page filtered on the event is not started from a position"
    return await _items(conn, who, query, limit=limit, offset=offset, start=start, versioned=True)


async def _items(
    conn: asyncpg.Connection,
    who: Principal,
    query: InboxQuery,
    *,
    limit: int,
    offset: int,
    after: Position | None = None,
    start: Position | None = None,
    versioned: bool = False,
) -> tuple[list[InboxItem], int | None]:
    params: list[Any] = [who.user_id]
    where = _where(query, params)
    for position, (newest, oldest) in (
        (after, (_AFTER_NEWEST_FIRST, _AFTER_OLDEST_FIRST)),
        (start, (_FROM_NEWEST_FIRST, _FROM_OLDEST_FIRST)),
    ):
        if position is not None:
            params += [position.created_at, position.id]
            where += (oldest if query.ascending else newest).format(len(params) - 1, len(params))
    order = _OLDEST_FIRST if query.ascending else _NEWEST_FIRST
    params += [limit, offset]
    page = _PAGE.format(len(params) - 1, len(params))
    by_index = _PAGE_FIRST.format(where=where, order=order, page=page, version=_VERSION if versioned else "")
    sql = _COLUMNS + where + order + page if query.by_event else by_index
    rows = await conn.fetch(sql, *params)
    version = rows[0][-1] if versioned and rows else None
    return [_item(r, who) for r in rows], version


async def count(conn: asyncpg.Connection, who: Principal, query: InboxQuery) -> int:
    """How many rows match: only for filters the counters cannot answer (see InboxQuery.counted)."""
    params: list[Any] = [who.user_id]
    value: int = await conn.fetchval(_COUNT_JOINED + _where(query, params), *params)
    return value


async def get(conn: asyncpg.Connection, who: Principal, row_id: int) -> InboxItem | None:
    row = await conn.fetchrow(_GET, who.user_id, row_id)
    return None if row is None else _item(row, who)


async def event_as_item(conn: asyncpg.Connection, who: Principal, event_id: int) -> InboxItem | None:
    row = await conn.fetchrow(_EVENT_AS_ITEM, event_id, who.tenant_id)
    return None if row is None else _item(row, who)


async def arrived_after(conn: asyncpg.Connection, who: Principal, row_id: int, limit: int) -> list[InboxItem]:
    return [_item(r, who) for r in await conn.fetch(_ARRIVED_AFTER, who.user_id, row_id, limit)]


async def counts(conn: asyncpg.Connection, user_id: int) -> Counts:
    row = await conn.fetchrow(_COUNTS, user_id)
    if row is None:  # a user made before their counts row existed cannot happen, but never fail a read
        return Counts(user_id=user_id, unread=0, total=0, version=0)
    return as_counts(row)


async def counts_of(conn: asyncpg.Connection, user_ids: Sequence[int]) -> list[Counts]:
    rows = await conn.fetch(_COUNTS_OF, list(user_ids))
    return [as_counts(r) for r in rows]


# Every change takes the user's tenant, for the webhooks it records (store/outbox.py); those that can
# name one notification also take `one`: one `notification.*` per changed row instead of one `inbox.bulk`.


async def set_read(
    conn: asyncpg.Connection, user_id: int, row_ids: Sequence[int], read: bool, tenant_id: int, one: bool = False
) -> tuple[list[int], Counts | None]:
    """Mark rows read (or unread); returns the ids that changed and the new counts if any did."""
    changed, new = await _change(conn, _SET_READ, user_id, list(row_ids), read, tenant_id, one)
    return list(changed), new


async def read_all(conn: asyncpg.Connection, user_id: int, tenant_id: int) -> tuple[int, Counts | None]:
    return await _change(conn, _READ_ALL, user_id, tenant_id)


async def seen(conn: asyncpg.Connection, user_id: int, tenant_id: int) -> tuple[int, Counts | None]:
    """Mark every unread row the user has not seen as seen; returns how many and the new counts."""
    return await _change(conn, _SEEN, user_id, tenant_id)


async def delete(
    conn: asyncpg.Connection, user_id: int, row_ids: Sequence[int], tenant_id: int, one: bool = False
) -> tuple[list[int], Counts | None]:
    gone, new = await _change(conn, _DELETE, user_id, list(row_ids), tenant_id, one)
    return list(gone), new


async def delete_all(conn: asyncpg.Connection, user_id: int, tenant_id: int) -> tuple[int, Counts | None]:
    return await _change(conn, _DELETE_ALL, user_id, tenant_id)


async def snooze(
    conn: asyncpg.Connection, user_id: int, row_id: int, until: datetime
) -> tuple[Snoozed | None, Counts | None]:
    """Hide the row until `until`, or bring it back now when `until` has passed (see _SNOOZE).
    None when the row is not the user's; the new counts when they changed."""
    row = await conn.fetchrow(_SNOOZE, user_id, row_id, until)
    if row is None:
        return None, None
    # In UTC, as every time Herald answers with, whatever offset the caller wrote.
    return Snoozed(event_id=row[0], until=until.astimezone(UTC) if row[1] else None, woke=row[2]), _counts(row, 3)


async def set_archived(
    conn: asyncpg.Connection, user_id: int, row_ids: Sequence[int], archived: bool, tenant_id: int
) -> tuple[list[int], Counts | None]:
    """Archive (or unarchive) rows; returns the ids that changed and the new counts if any did."""
    changed, new = await _change(conn, _SET_ARCHIVED, user_id, list(row_ids), archived, tenant_id)
    return list(changed), new


async def archived(conn: asyncpg.Connection, user_id: int, row_id: int) -> bool | None:
    """Whether the user's row is archived; None when it is not theirs (or not shown)."""
    value: bool | None = await conn.fetchval(_OWNS, user_id, row_id)
    return value


async def interact(
    conn: asyncpg.Connection, user_id: int, row_id: int, action: str, tenant_id: int
) -> tuple[bool, Counts | None]:
    """Record that the reader took `action` on the row, and mark it read. False when the row is not
    the user's or does not offer that action."""
    taken, new = await _change(conn, _INTERACT, user_id, row_id, action, tenant_id)
    return bool(taken), new


# ---- webhooks ---------------------------------------------------------------------------------
# A row as a change left it (the snapshot the change recorded for its webhooks, store/outbox.py),
# read through the same columns as every list and get, the snapshot standing in for the table: a
# webhook's `data` is rendered by the one renderer of items, from the event as it is joined anywhere.
_FROM_SNAPSHOT = "FROM jsonb_populate_record(NULL::inbox, $2::jsonb) i"
_SNAPSHOT = _COLUMNS.replace("FROM inbox i", _FROM_SNAPSHOT, 1)
assert _FROM_SNAPSHOT in _SNAPSHOT, "_COLUMNS must read `FROM inbox i`"


async def snapshot(conn: asyncpg.Connection, who: Principal, state: dict[str, Any]) -> InboxItem | None:
    """The notification as it was in `state` (a row of `inbox` as JSON); None when its event is gone."""
    row = await conn.fetchrow(_SNAPSHOT, who.user_id, state)
    return None if row is None else _item(row, who)
