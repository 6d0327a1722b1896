"""The scalebox profile: the ScaleBox Notifications API.

Ten endpoints under the mount (default `/v1`): list, get, read, unread, read-all, delete,
delete-all, bulk-delete, bulk-read, bulk-unread; and Herald's snooze, archive, unarchive and bulk
action by filter, in the same forms. Answers
use the `{"success", "data", "timestamp"}` envelope (plus `message` on actions); errors are
`{"success": false, "error", "timestamp"}`. Notification ids are `ntf-` + 15 characters (see
service/ids.py); one that does not decode is simply not found.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from litestar import Response, Router, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from service import ids, inbox
from service.errors import BadRequest, NotFound
from service.http import profiles
from service.http.envelopes import Problem
from service.http.formats import PathId, pages
from service.http.profiles import actions
from service.model import ACTION_ID, Action, Archived, AwareTime, InboxItem, InboxQuery, Input, Principal
from service.process import Backends
from service.store.bulk import BulkFilter

LIMIT_DEFAULT = 50
LIMIT_MAX = 100
BULK_MAX = 1000


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Item(msgspec.Struct, kw_only=True):
    id: str
    user_id: str
    title: str | None
    message: str
    type: str
    is_read: bool
    category: str | None
    created_at: datetime
    related_entity_type: str | None
    related_entity_id: str | None
    # Threads: the group (null for a notification that is no thread), its distinct events, its
    # distinct actors (newest first, at most 10) and how many there are in all.
    group: str | None
    activity_count: int
    actors: list[str]
    actor_count: int
    archived_at: datetime | None  # null when not archived
    # Engagement: the buttons the notification offers, and the one the reader took last (or "open").
    actions: list[Action]
    interaction: str | None
    interacted_at: datetime | None


class Pagination(msgspec.Struct, kw_only=True):
    page: int
    limit: int
    total: int
    total_pages: int
    next_cursor: str | None  # keyset paging: pass back as `cursor`; null on the last page


class ListData(msgspec.Struct, kw_only=True):
    notifications: list[Item]
    pagination: Pagination
    unread_count: int


class ReadState(msgspec.Struct, kw_only=True):
    notification_id: str
    is_read: bool


class MarkedAll(msgspec.Struct, kw_only=True):
    marked_count: int
    is_read: bool


class Deleted(msgspec.Struct, kw_only=True):
    notification_id: str
    deleted: bool


class DeletedAll(msgspec.Struct, kw_only=True):
    deleted_count: int


class BulkDeleted(msgspec.Struct, kw_only=True):
    notification_ids: list[str]
    deleted_count: int


class BulkMarked(msgspec.Struct, kw_only=True):
    notification_ids: list[str]
    marked_count: int
    is_read: bool


class BulkBody(msgspec.Struct, forbid_unknown_fields=True):
    # An empty id is refused (400) like an empty id in a path (404): the answer echoes the ids sent,
    # and a client that turned an echoed "" into a path would reach another route.
    notification_ids: list[Annotated[str, msgspec.Meta(min_length=1)]]


class SnoozeBody(Input, frozen=True):
    # ISO 8601 with a time zone; a time that has passed ends the snooze. A string, parsed strictly
    # by `_until`: Litestar converts bodies leniently, and would take a number as a Unix time.
    until: Annotated[str, msgspec.Meta(max_length=64, extra_json_schema={"format": "date-time"})]


def _until(body: SnoozeBody) -> datetime:
    try:
        return msgspec.convert(body.until, AwareTime)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"until: {exc}", "until") from None


class ArchiveState(msgspec.Struct, kw_only=True):
    notification_id: str
    archived: bool


Listed = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class Filter(Input, frozen=True):
    """A bulk action's filter: a tab's members (type, category, archived) plus read and before."""

    type: Annotated[list[Listed], msgspec.Meta(min_length=1, max_length=100)] | None = None
    category: Annotated[list[Listed], msgspec.Meta(min_length=1, max_length=100)] | None = None
    archived: bool | Literal["all"] | None = None
    read: bool | None = None
    before: Annotated[str, msgspec.Meta(max_length=64, extra_json_schema={"format": "date-time"})] | None = None


class BulkActionBody(Input, frozen=True):
    action: Literal["read", "unread", "archive", "unarchive", "delete"]
    filter: Filter


class BulkDone(msgspec.Struct, kw_only=True):
    action: str
    changed: int


def _archived(value: bool | Literal["all"] | None, default: Archived = "false") -> Archived:
    if value is None:
        return default
    return "all" if value == "all" else "true" if value else "false"


def _bulk_filter(body: BulkActionBody) -> BulkFilter:
    f = body.filter
    before = None
    if f.before is not None:
        try:
            before = msgspec.convert(f.before, AwareTime)
        except msgspec.ValidationError as exc:
            raise BadRequest(f"filter.before: {exc}", "filter.before") from None
    # Unarchiving can only change archived notifications: without `archived`, it looks at the archive.
    return BulkFilter(
        types=f.type,
        categories=f.category,
        archived=_archived(f.archived, "true" if body.action == "unarchive" else "false"),
        read=f.read,
        before=before,
    )


class SnoozeState(msgspec.Struct, kw_only=True):
    notification_id: str
    snoozed_until: datetime | None  # null: in the inbox


class Envelope(msgspec.Struct, kw_only=True, omit_defaults=True):
    success: bool
    data: Any
    timestamp: str
    message: str | None = None


# Typed envelopes, so the OpenAPI document shows each endpoint's real `data`.
class ListEnvelope(Envelope, kw_only=True):
    data: ListData


class ItemEnvelope(Envelope, kw_only=True):
    data: Item


class ReadStateEnvelope(Envelope, kw_only=True):
    data: ReadState


class MarkedAllEnvelope(Envelope, kw_only=True):
    data: MarkedAll


class DeletedEnvelope(Envelope, kw_only=True):
    data: Deleted


class DeletedAllEnvelope(Envelope, kw_only=True):
    data: DeletedAll


class BulkDeletedEnvelope(Envelope, kw_only=True):
    data: BulkDeleted


class BulkMarkedEnvelope(Envelope, kw_only=True):
    data: BulkMarked


class SnoozeEnvelope(Envelope, kw_only=True):
    data: SnoozeState


class ArchiveEnvelope(Envelope, kw_only=True):
    data: ArchiveState


class BulkDoneEnvelope(Envelope, kw_only=True):
    data: BulkDone


E = TypeVar("E", bound=Envelope)


def present(n: InboxItem) -> Item:
    return Item(
        id=ids.to_scalebox(n.id),
        user_id=n.user,
        title=n.title,
        message=n.message,
        type=n.type,
        is_read=n.read_at is not None,
        category=n.category,
        created_at=n.created_at,
        related_entity_type=n.entity_type,
        related_entity_id=n.entity_id,
        group=n.group,
        activity_count=n.activity,
        actors=n.actors,
        actor_count=n.actor_count,
        archived_at=n.archived_at,
        actions=n.actions,
        interaction=n.interaction,
        interacted_at=n.interacted_at,
    )


def render(problem: Problem) -> Response[Any]:
    # The seed's list of errors: 400 for a bad request body or parameter, 404, 500; Herald adds
    # 401/403/413/503 in the same shape.
    return actions.respond(problem, lambda _: {"success": False, "error": problem.message, "timestamp": timestamp()})


def _ok(envelope: type[E], data: Any, message: str | None = None) -> E:
    return envelope(success=True, data=data, timestamp=timestamp(), message=message)


def _bulk_ids(body: BulkBody) -> tuple[list[str], list[int]]:
    """The ids as sent (each once, in order) and the row ids among them that can exist."""
    if not body.notification_ids:
        raise BadRequest("notification_ids must not be empty", "notification_ids")
    if len(body.notification_ids) > BULK_MAX:
        raise BadRequest(f"at most {BULK_MAX} notification_ids per request", "notification_ids")
    sent = list(dict.fromkeys(body.notification_ids))
    return sent, [r for r in map(ids.from_scalebox, sent) if r is not None]


Limit = Annotated[int | None, QueryParameter(ge=1, description="Max items, default 50, capped at 100.")]
PageSize = Annotated[int | None, QueryParameter(name="page_size", ge=1, description="Alias of limit.")]
Offset = Annotated[int | None, QueryParameter(ge=0, le=10_000_000, description="Overrides page when given.")]
Skip = Annotated[int | None, QueryParameter(ge=0, le=10_000_000, description="Alias of offset.")]
PageNumber = Annotated[int, QueryParameter(ge=1, le=1_000_000, description="Page number, default 1.")]
ReadFilter = Annotated[
    Literal["true", "false"] | None, QueryParameter(description="true for read only, false for unread only.")
]
TypeFilter = Annotated[str | None, QueryParameter(max_length=100, description="Exact notification type.")]
ArchivedFilter = Annotated[
    Literal["false", "true", "all"],
    QueryParameter(description="false (default): the inbox; true: the archive; all: both."),
]
Cursor = Annotated[
    str | None,
    QueryParameter(max_length=64, description="next_cursor of the previous page; overrides page and offset."),
]


@get("/notifications", summary="List notifications")
async def list_notifications(
    b: NamedDependency[Backends],
    who: NamedDependency[Principal],
    page: PageNumber = 1,
    limit: Limit = None,
    page_size: PageSize = None,
    offset: Offset = None,
    skip: Skip = None,
    read: ReadFilter = None,
    type: TypeFilter = None,  # the seed names it `type`
    cursor: Cursor = None,
    archived: ArchivedFilter = "false",
) -> ListEnvelope:
    size = min(limit or page_size or LIMIT_DEFAULT, LIMIT_MAX)
    query = InboxQuery(read=None if read is None else read == "true", types=(type,) if type else (), archived=archived)
    if cursor is not None:
        after = ids.from_cursor(cursor)
        if after is None:
            raise BadRequest("cursor is not one this API gave out", "cursor", "query")
        found = await inbox.page(b, who, query, limit=size, after=after)
    else:
        start = offset if offset is not None else skip
        if start is None:
            start = (page - 1) * size
        else:
            page = start // size + 1
        found = await inbox.page(b, who, query, limit=size, offset=start)
    end = found.end
    data = ListData(
        notifications=[present(n) for n in found.items],
        pagination=Pagination(
            page=page,
            limit=size,
            total=found.total,
            total_pages=pages(found.total, size),
            next_cursor=ids.to_cursor(end) if end else None,
        ),
        unread_count=found.counts.unread,
    )
    return _ok(ListEnvelope, data)


@get("/notifications/{notification_id:str}", summary="Get notification")
async def get_notification(
    b: NamedDependency[Backends], who: NamedDependency[Principal], notification_id: PathId
) -> ItemEnvelope:
    found = await actions.get(b, who, notification_id, ids.from_scalebox)
    return _ok(ItemEnvelope, present(found))


async def _mark(b: Backends, who: Principal, notification_id: str, read: bool) -> ReadStateEnvelope:
    await actions.mark(b, who, notification_id, ids.from_scalebox, read)
    return _ok(ReadStateEnvelope, ReadState(notification_id=notification_id, is_read=read), actions.marked(read))


@patch("/notifications/{notification_id:str}/read", summary="Mark notification as read")
async def mark_read(
    b: NamedDependency[Backends], who: NamedDependency[Principal], notification_id: PathId
) -> ReadStateEnvelope:
    return await _mark(b, who, notification_id, True)


@patch("/notifications/{notification_id:str}/unread", summary="Mark notification as unread")
async def mark_unread(
    b: NamedDependency[Backends], who: NamedDependency[Principal], notification_id: PathId
) -> ReadStateEnvelope:
    return await _mark(b, who, notification_id, False)


@patch("/notifications/read-all", summary="Mark all notifications as read")
async def read_all(b: NamedDependency[Backends], who: NamedDependency[Principal]) -> MarkedAllEnvelope:
    marked = await inbox.read_all(b, who)
    return _ok(MarkedAllEnvelope, MarkedAll(marked_count=marked, is_read=True), "All notifications marked as read")


@delete("/notifications/{notification_id:str}", summary="Delete notification", status_code=200)
async def delete_one(
    b: NamedDependency[Backends], who: NamedDependency[Principal], notification_id: PathId
) -> DeletedEnvelope:
    await actions.delete(b, who, notification_id, ids.from_scalebox)
    return _ok(DeletedEnvelope, Deleted(notification_id=notification_id, deleted=True), "Notification deleted")


@delete("/notifications", summary="Delete all notifications", status_code=200)
async def delete_all(b: NamedDependency[Backends], who: NamedDependency[Principal]) -> DeletedAllEnvelope:
    gone = await inbox.delete_all(b, who)
    return _ok(DeletedAllEnvelope, DeletedAll(deleted_count=gone), "All notifications deleted")


@post("/notifications/bulk-delete", summary="Bulk delete notifications", status_code=200)
async def bulk_delete(
    b: NamedDependency[Backends], who: NamedDependency[Principal], data: JSONBody[BulkBody]
) -> BulkDeletedEnvelope:
    sent, rows = _bulk_ids(data)
    gone = await inbox.delete(b, who, rows)
    result = BulkDeleted(notification_ids=sent, deleted_count=len(gone))
    return _ok(BulkDeletedEnvelope, result, "Notifications deleted")


async def _bulk_mark(b: Backends, who: Principal, body: BulkBody, read: bool) -> BulkMarkedEnvelope:
    sent, rows = _bulk_ids(body)
    changed = await inbox.set_read(b, who, rows, read)
    result = BulkMarked(notification_ids=sent, marked_count=len(changed), is_read=read)
    return _ok(BulkMarkedEnvelope, result, actions.marked(read, "Notifications"))


@patch("/notifications/bulk-read", summary="Bulk mark notifications as read")
async def bulk_read(
    b: NamedDependency[Backends], who: NamedDependency[Principal], data: JSONBody[BulkBody]
) -> BulkMarkedEnvelope:
    return await _bulk_mark(b, who, data, True)


@patch("/notifications/bulk-unread", summary="Bulk mark notifications as unread")
async def bulk_unread(
    b: NamedDependency[Backends], who: NamedDependency[Principal], data: JSONBody[BulkBody]
) -> BulkMarkedEnvelope:
    return await _bulk_mark(b, who, data, False)


@patch("/notifications/{notification_id:str}/snooze", summary="Snooze a notification until a time")
async def snooze(
    b: NamedDependency[Backends],
    who: NamedDependency[Principal],
    notification_id: PathId,
    data: JSONBody[SnoozeBody],
) -> SnoozeEnvelope:
    done = await inbox.snooze(b, who, actions.row_id(notification_id, ids.from_scalebox), _until(data))
    state = SnoozeState(notification_id=notification_id, snoozed_until=done.until)
    return _ok(
        SnoozeEnvelope, state, "Notification snoozed" if done.until is not None else "Notification is in the inbox"
    )


async def _archive(b: Backends, who: Principal, notification_id: str, archived: bool) -> ArchiveEnvelope:
    await inbox.set_archived(b, who, actions.row_id(notification_id, ids.from_scalebox), archived)
    state = ArchiveState(notification_id=notification_id, archived=archived)
    return _ok(ArchiveEnvelope, state, "Notification archived" if archived else "Notification unarchived")


@patch("/notifications/{notification_id:str}/archive", summary="Archive a notification")
async def archive(
    b: NamedDependency[Backends], who: NamedDependency[Principal], notification_id: PathId
) -> ArchiveEnvelope:
    return await _archive(b, who, notification_id, True)


@patch("/notifications/{notification_id:str}/unarchive", summary="Bring an archived notification back")
async def unarchive(
    b: NamedDependency[Backends], who: NamedDependency[Principal], notification_id: PathId
) -> ArchiveEnvelope:
    return await _archive(b, who, notification_id, False)


@post("/notifications/bulk", summary="Apply an action to every notification matching a filter", status_code=200)
async def bulk_action(
    b: NamedDependency[Backends], who: NamedDependency[Principal], data: JSONBody[BulkActionBody]
) -> BulkDoneEnvelope:
    changed = await inbox.bulk(b, who, data.action, _bulk_filter(data))
    return _ok(BulkDoneEnvelope, BulkDone(action=data.action, changed=changed))


@post(
    "/notifications/{notification_id:str}/actions/{action:str}",
    summary="Record that the reader took an action (or 'open'); marks the notification read",
    status_code=200,
)
async def take_action(
    b: NamedDependency[Backends], who: NamedDependency[Principal], notification_id: PathId, action: PathId
) -> ItemEnvelope:
    row = actions.row_id(notification_id, ids.from_scalebox)
    if not re.fullmatch(ACTION_ID, action):
        raise NotFound("Notification or action not found")
    taken = await inbox.interact(b, who, row, action)
    return _ok(ItemEnvelope, present(taken), "Action recorded")


class ErrorBody(msgspec.Struct):
    success: bool
    error: str
    timestamp: str


def router(prefix: str) -> Router:
    return profiles.router(
        prefix,
        "scalebox",
        [
            list_notifications,
            get_notification,
            mark_read,
            mark_unread,
            read_all,
            delete_one,
            delete_all,
            bulk_delete,
            bulk_read,
            bulk_unread,
            snooze,
            archive,
            unarchive,
            bulk_action,
            take_action,
        ],
        ErrorBody,
        render,
    )
