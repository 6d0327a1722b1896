"""The qualytics profile: the In-App Notifications API of the Qualytics product.

Five endpoints under the mount (default `/api`): the paginated list, the flat listing, one
notification, bulk acknowledge and single acknowledge. Errors are FastAPI-style: `{"detail": "..."}`
for 401/403/404/503, and for a refused request 422 with `{"detail": [{"type", "loc", "msg"}]}`.

An item is an inbox row (`id`, `created`, `acknowledged`) around its event (`notification`):
`notification.id` is the event's id, shared by every recipient of the event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from litestar import Response, Router, get, patch, put
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody, QueryParameter

from service import ids, inbox
from service.errors import BadRequest
from service.http import profiles
from service.http.envelopes import Problem
from service.http.formats import PathId, pages
from service.model import MAX_NAME, TRIGGER_TYPES, InboxItem, InboxQuery, Principal, TriggerType
from service.process import Backends

LISTING_MAX = 1000
ACK_MAX = 1000


class Notification(msgspec.Struct, kw_only=True):
    id: int
    created: datetime
    notification_type: str
    message: str
    target_uri: str | None
    target_url: str | None
    action_execution: dict[str, Any] | None


class UserNotification(msgspec.Struct, kw_only=True):
    id: int
    created: datetime
    acknowledged: bool
    notification: Notification


class UserNotificationPage(msgspec.Struct, kw_only=True):
    items: list[UserNotification]
    total: int
    page: int
    size: int
    pages: int


class AcknowledgeId(msgspec.Struct, forbid_unknown_fields=True):
    id: int


class AcknowledgeResult(msgspec.Struct, kw_only=True):
    acknowledged_count: int
    requested_count: int


class Acknowledged(msgspec.Struct, kw_only=True):
    id: int
    created: datetime
    acknowledged: bool


def _target_url(public_url: str, uri: str | None) -> str | None:
    if not uri:
        return None
    if urlsplit(uri).scheme:  # already absolute
        return uri
    if not public_url:
        return uri
    return public_url + (uri if uri.startswith("/") else "/" + uri)


def present(n: InboxItem, public_url: str) -> UserNotification:
    execution = (n.payload or {}).get("action_execution")
    return UserNotification(
        id=n.id,
        created=n.created_at,
        acknowledged=n.read_at is not None,
        notification=Notification(
            id=n.event_id,
            created=n.occurred_at,
            notification_type=n.type,
            message=n.message,
            target_uri=n.action_url,
            target_url=_target_url(public_url, n.action_url),
            action_execution=execution if isinstance(execution, dict) else None,
        ),
    )


def render(problem: Problem) -> Response[Any]:
    detail: Any
    if problem.status in (400, 422) and problem.issues:
        detail = [
            {
                "type": "value_error",
                "loc": [i.location, *[p for p in i.field.replace("[", ".").replace("]", "").split(".") if p]],
                "msg": i.message,
            }
            for i in problem.issues
        ]
        status = 422  # FastAPI refuses a malformed request with 422, whatever the cause
    else:
        detail = problem.message
        status = problem.status
    return Response({"detail": detail}, status_code=status, headers=problem.headers)


MAX_TAGS = 50


IncludeAcknowledged = Annotated[
    bool, QueryParameter(description="Include notifications already marked as read (default false).")
]
TriggerTypes = Annotated[
    list[TriggerType] | None,
    QueryParameter(description=f"Only notifications whose trigger type is one of these ({', '.join(TRIGGER_TYPES)})."),
]
Tags = Annotated[
    list[str] | None,
    QueryParameter(
        max_items=MAX_TAGS, description=f"Only notifications carrying one of these tags (at most {MAX_TAGS})."
    ),
]
SortCreated = Annotated[Literal["desc", "asc"], QueryParameter(description="Order by creation date.")]
PageNumber = Annotated[int, QueryParameter(ge=1, le=1_000_000, description="Page number, from 1.")]
PageSize = Annotated[int, QueryParameter(ge=1, le=100, description="Items per page, 1 to 100.")]


def _filters(
    include_acknowledged: IncludeAcknowledged = False,
    trigger_type: TriggerTypes = None,
    tag: Tags = None,
    sort_created: SortCreated = "desc",
) -> InboxQuery:
    """The filters both lists take, as one dependency (`filters`)."""
    if any(len(t) > MAX_NAME for t in tag or ()):
        raise BadRequest(f"a tag has at most {MAX_NAME} characters", "tag", "query")
    return InboxQuery(
        read=None if include_acknowledged else False,
        trigger_types=tuple(trigger_type or ()),
        tags=tuple(tag or ()),
        ascending=sort_created == "asc",
    )


_FILTERS = {"filters": Provide(_filters, sync_to_thread=False)}


def _row_id(raw: str) -> int:
    row_id = ids.from_int(raw)
    if row_id is None and not raw.lstrip("-").isdigit():
        raise BadRequest("Input should be a valid integer", "id", "path")
    return row_id or 0  # 0 names no row: answered as not found


@get("/user-notifications", summary="List notifications (paginated)", dependencies=_FILTERS)
async def list_notifications(
    b: NamedDependency[Backends],
    who: NamedDependency[Principal],
    filters: NamedDependency[InboxQuery],
    page: PageNumber = 1,
    size: PageSize = 12,
) -> UserNotificationPage:
    found = await inbox.page(b, who, filters, limit=size, offset=(page - 1) * size)
    return UserNotificationPage(
        items=[present(n, b.settings.public_url) for n in found.items],
        total=found.total,
        page=page,
        size=size,
        pages=pages(found.total, size),
    )


@get("/user-notifications/listing", summary="List notifications (non-paginated)", dependencies=_FILTERS)
async def listing(
    b: NamedDependency[Backends], who: NamedDependency[Principal], filters: NamedDependency[InboxQuery]
) -> list[UserNotification]:
    found = await inbox.page(b, who, filters, limit=LISTING_MAX, offset=0)
    return [present(n, b.settings.public_url) for n in found.items]


@get("/user-notifications/{id:str}", summary="Get a single notification")
async def get_notification(
    b: NamedDependency[Backends], who: NamedDependency[Principal], id: PathId
) -> UserNotification:
    found = await inbox.get(b, who, _row_id(id))
    return present(found, b.settings.public_url)


@patch("/user-notifications/acknowledge", summary="Bulk mark as read", status_code=200)
async def acknowledge(
    b: NamedDependency[Backends], who: NamedDependency[Principal], data: JSONBody[list[AcknowledgeId]]
) -> AcknowledgeResult:
    if len(data) > ACK_MAX:
        raise BadRequest(f"at most {ACK_MAX} ids per request", "", "body")
    if not data:
        marked = await inbox.read_all(b, who)
        return AcknowledgeResult(acknowledged_count=marked, requested_count=marked)
    wanted = sorted({item.id for item in data})
    changed = await inbox.set_read(b, who, [i for i in wanted if ids.from_int(i)], True)
    return AcknowledgeResult(acknowledged_count=len(changed), requested_count=len(wanted))


@put("/user-notifications/acknowledge/{id:str}", summary="Mark a single notification as read")
async def acknowledge_one(b: NamedDependency[Backends], who: NamedDependency[Principal], id: PathId) -> Acknowledged:
    found = await inbox.set_read_one(b, who, _row_id(id), True)
    return Acknowledged(id=found.id, created=found.created_at, acknowledged=True)


class ValidationIssue(msgspec.Struct):
    type: str
    loc: list[str]
    msg: str


class ErrorBody(msgspec.Struct):
    """FastAPI's error shape: a message, or the list of what failed validation."""

    detail: str | list[ValidationIssue]


def router(prefix: str) -> Router:
    return profiles.router(
        prefix,
        "qualytics",
        [list_notifications, listing, get_notification, acknowledge, acknowledge_one],
        ErrorBody,
        render,
    )
