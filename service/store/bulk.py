"""Bulk actions by filter (`POST /v1/notifications/bulk`): read, unread, archive, unarchive or delete
every notification of a user that matches a filter, in batches.

Each batch is one statement and its own transaction: it takes the next `BATCH` matching rows in the
lists' order (newest first, after where the previous batch ended), changes those whose state
changes, and changes the user's counts by exactly what it changed, as every single change does.
So the work is done in constant memory at any inbox size, never holds the counts row for long,
and stays exact whatever runs beside it; a failure part way leaves the batches before it done and
counted, which is what a repeated request finishes. Rows that arrive while it runs are newer than
where the first batch began, and are left as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from service.model import Archived, Counts, Record
from service.store.counts import as_counts

Action = Literal["read", "unread", "archive", "unarchive", "delete"]
BATCH = 5000


class BulkFilter(Record, frozen=True):
    types: list[str] | None = None
    categories: list[str] | None = None
    archived: Archived = "false"
    read: bool | None = None
    before: datetime | None = None


class Batch(msgspec.Struct, frozen=True):
    seen: int  # rows the batch looked at
    changed: int
    last: tuple[datetime, int] | None  # where the next batch starts
    counts: Counts | None


# The rows each action can change (the others already are in its end state), and the change. A
# changed row returns what its user's counts gain: (unread, unseen, total).
_STATE: dict[Action, str] = {
    "read": "i.read_at IS NULL",
    "unread": "i.read_at IS NOT NULL",
    "archive": "i.archived_at IS NULL",
    "unarchive": "i.archived_at IS NOT NULL",
    "delete": "true",
}
# Each change finds the batch's rows by their primary key, `i.id = ANY (ARRAY(SELECT id FROM batch))`.
# Joined to the batch instead (`FROM batch b WHERE i.id = b.id`), PostgreSQL sizes the batch at its
# LIMIT and, on an inbox of up to a few million rows, hashes it against a scan of the whole table,
# once per batch (docs/performance.md, bulk).
# (An archived row is in no count: "counted" is `i.archived_at IS NULL`.)
_CHANGE: dict[Action, str] = {
    "read": """UPDATE inbox i SET read_at = now()
    WHERE i.id = ANY (ARRAY(SELECT id FROM batch)) AND i.user_id = $1 AND i.read_at IS NULL
    RETURNING -(i.archived_at IS NULL)::int, -(i.archived_at IS NULL AND i.seen_at IS NULL)::int, 0""",
    "unread": """UPDATE inbox i SET read_at = NULL
    WHERE i.id = ANY (ARRAY(SELECT id FROM batch)) AND i.user_id = $1 AND i.read_at IS NOT NULL
    RETURNING (i.archived_at IS NULL)::int, (i.archived_at IS NULL AND i.seen_at IS NULL)::int, 0""",
    "archive": """UPDATE inbox i SET archived_at = now()
    WHERE i.id = ANY (ARRAY(SELECT id FROM batch)) AND i.user_id = $1 AND i.archived_at IS NULL
    RETURNING -(i.read_at IS NULL)::int, -(i.read_at IS NULL AND i.seen_at IS NULL)::int, -1""",
    "unarchive": """UPDATE inbox i SET archived_at = NULL
    WHERE i.id = ANY (ARRAY(SELECT id FROM batch)) AND i.user_id = $1 AND i.archived_at IS NOT NULL
    RETURNING (i.read_at IS NULL)::int, (i.read_at IS NULL AND i.seen_at IS NULL)::int, 1""",
    "delete": """DELETE FROM inbox i
    WHERE i.id = ANY (ARRAY(SELECT id FROM batch)) AND i.user_id = $1
    RETURNING -(i.archived_at IS NULL AND i.read_at IS NULL)::int,
              -(i.archived_at IS NULL AND i.read_at IS NULL AND i.seen_at IS NULL)::int,
              -(i.archived_at IS NULL)::int""",
}
_ARCHIVED = {"false": " AND i.archived_at IS NULL", "true": " AND i.archived_at IS NOT NULL", "all": ""}
# A row written before type and category were copied onto rows (NULL type) is matched on its event.
_TYPES = """ AND (i.type = ANY ($2::text[])
    OR (i.type IS NULL AND EXISTS (SELECT 1 FROM events e WHERE e.id = i.event_id AND e.type = ANY ($2::text[]))))"""
_CATEGORIES = """ AND (i.category = ANY ($3::text[]) OR (i.type IS NULL
    AND EXISTS (SELECT 1 FROM events e WHERE e.id = i.event_id AND e.category = ANY ($3::text[]))))"""
_READ = {True: " AND i.read_at IS NOT NULL", False: " AND i.read_at IS NULL"}
_BEFORE = " AND i.created_at < $5"
_AFTER = " AND (i.created_at, i.id) < ($6, $7)"

# `typed` only names every parameter's type: a statement leaves some unused, and PostgreSQL must
# still know them.
_STATEMENT = """
WITH typed AS (SELECT $2::text[], $3::text[], $4::boolean, $5::timestamptz, $6::timestamptz, $7::bigint),
batch AS (
    SELECT i.id, i.created_at FROM inbox i
    WHERE i.user_id = $1 AND i.snoozed_until IS NULL{where}
    ORDER BY i.created_at DESC, i.id DESC
    LIMIT $8
    FOR UPDATE
),
changed AS (
    {change}
),
cnt AS (
    UPDATE inbox_counts
    SET unread = unread + (SELECT coalesce(sum(d.u), 0) FROM changed d (u, n, t))::int,
        unseen = unseen + (SELECT coalesce(sum(d.n), 0) FROM changed d (u, n, t))::int,
        total = total + (SELECT coalesce(sum(d.t), 0) FROM changed d (u, n, t))::int,
        version = version + 1
    WHERE user_id = $1 AND EXISTS (SELECT 1 FROM changed)
    RETURNING user_id, unread, total, version, unseen
)
SELECT (SELECT count(*) FROM batch)::int, (SELECT count(*) FROM changed)::int, l.created_at, l.id,
       cnt.user_id, cnt.unread, cnt.total, cnt.version, cnt.unseen
FROM (VALUES (1)) one
LEFT JOIN (SELECT created_at, id FROM batch ORDER BY created_at, id LIMIT 1) l ON true
LEFT JOIN cnt ON true
"""


def statement(action: Action, f: BulkFilter, *, first: bool) -> str:
    """The batch statement for this action and filter: fixed fragments only, values are parameters."""
    where = _ARCHIVED[f.archived] + " AND " + _STATE[action]
    if f.types is not None:
        where += _TYPES
    if f.categories is not None:
        where += _CATEGORIES
    if f.read is not None:
        where += _READ[f.read]
    if f.before is not None:
        where += _BEFORE
    if not first:
        where += _AFTER
    return _STATEMENT.format(where=where, change=_CHANGE[action])


async def batch(
    conn: asyncpg.Connection, user_id: int, action: Action, f: BulkFilter, after: tuple[datetime, int] | None
) -> Batch:
    sql = statement(action, f, first=after is None)
    last_at, last_id = after if after is not None else (None, None)
    row = await conn.fetchrow(sql, user_id, f.types, f.categories, f.read, f.before, last_at, last_id, BATCH)
    assert row is not None
    return Batch(
        seen=row[0],
        changed=row[1],
        last=None if row[2] is None else (row[2], row[3]),
        counts=None if row[4] is None else as_counts(row, 4),
    )
