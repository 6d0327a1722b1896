"""The aptly profile: the Aptly notifications list, plus Herald's read/unread/read-all/delete.

Answers use `{"statusCode", "timestamp", "message", "data"}`; errors the same envelope with the
error's status and `"data": null`. Item ids are UUIDs (see service/ids.py). `tenantId` is required
on the list and must be the caller's own tenant (403 otherwise).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from litestar import Response, Router, delete, get, patch
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from service import ids, inbox
from service.errors import Forbidden
from service.http import profiles
from service.http.envelopes import Problem
from service.http.formats import PathId, months_before, now_iso_ms, relative_time
from service.http.profiles import actions
from service.model import InboxItem, InboxQuery, Principal
from service.process import Backends

PERIODS = {"1m": 1, "3m": 3, "6m": 6}
_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    413: "Payload Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Item(msgspec.Struct, kw_only=True):
    id: str
    tenantId: str
    templateKey: str
    category: str | None
    title: str | None
    message: str
    isActionable: bool
    status: Literal["UNREAD", "READ"]
    createdAt: datetime
    readAt: datetime | None
    userId: str
    entityType: str | None
    entityId: str | None
    actionUrl: str | None
    payload: dict[str, Any] | None
    relativeTime: str


class ItemPage(msgspec.Struct, kw_only=True):
    page: int
    limit: int
    total: int
    data: list[Item]


class MarkedAll(msgspec.Struct, kw_only=True):
    markedCount: int


class Deleted(msgspec.Struct, kw_only=True):
    id: str
    deleted: bool


class Envelope(msgspec.Struct, kw_only=True):
    statusCode: int
    timestamp: str
    message: str
    data: Any


class PageEnvelope(Envelope, kw_only=True):
    data: ItemPage


class ItemEnvelope(Envelope, kw_only=True):
    data: Item


class MarkedAllEnvelope(Envelope, kw_only=True):
    data: MarkedAll


class DeletedEnvelope(Envelope, kw_only=True):
    data: Deleted


E = TypeVar("E", bound=Envelope)


def present(n: InboxItem, now: datetime) -> Item:
    return Item(
        id=ids.to_uuid(n.id),
        tenantId=n.tenant,
        templateKey=n.type,
        category=n.category,
        title=n.title,
        message=n.message,
        isActionable=n.actionable,
        status="UNREAD" if n.read_at is None else "READ",
        createdAt=n.created_at,
        readAt=n.read_at,
        userId=n.user,
        entityType=n.entity_type,
        entityId=n.entity_id,
        actionUrl=n.action_url,
        payload=n.payload,
        relativeTime=relative_time(n.created_at, now),
    )


def render(problem: Problem) -> Response[Any]:
    def body(status: int) -> dict[str, Any]:
        message = problem.message if problem.message else _REASONS.get(status, "Error")
        return {"statusCode": status, "timestamp": now_iso_ms(), "message": message, "data": None}

    return actions.respond(problem, body)


def _ok(envelope: type[E], message: str, data: Any) -> E:
    return envelope(statusCode=200, timestamp=now_iso_ms(), message=message, data=data)


TenantId = Annotated[str, QueryParameter(name="tenantId", min_length=1, max_length=200, description="Your tenant.")]
PageNumber = Annotated[int, QueryParameter(ge=1, le=1_000_000, description="Page number, default 1.")]
Limit = Annotated[int, QueryParameter(ge=1, le=100, description="Items per page, default 10, at most 100.")]
Status = Annotated[Literal["UNREAD", "READ"] | None, QueryParameter(description="Filter by status.")]
TemplateKey = Annotated[str | None, QueryParameter(name="templateKey", max_length=100)]
Category = Annotated[str | None, QueryParameter(max_length=100)]
EntityType = Annotated[str | None, QueryParameter(name="entityType", max_length=100)]
TimePeriod = Annotated[
    Literal["1m", "3m", "6m", "all"], QueryParameter(name="timePeriod", description="Created within 1, 3 or 6 months.")
]


@get("/notifications", summary="List notifications")
async def list_notifications(
    b: NamedDependency[Backends],
    who: NamedDependency[Principal],
    tenant_id: TenantId,
    page: PageNumber = 1,
    limit: Limit = 10,
    status: Status = None,
    template_key: TemplateKey = None,
    category: Category = None,
    entity_type: EntityType = None,
    time_period: TimePeriod = "all",
) -> PageEnvelope:
    if tenant_id != who.tenant:
        raise Forbidden("tenantId is not your tenant")
    now = datetime.now(UTC)
    query = InboxQuery(
        read=None if status is None else status == "READ",
        types=(template_key,) if template_key else (),
        categories=(category,) if category else (),
        entity_types=(entity_type,) if entity_type else (),
        since=months_before(now, PERIODS[time_period]) if time_period in PERIODS else None,
    )
    found = await inbox.page(b, who, query, limit=limit, offset=(page - 1) * limit)
    data = ItemPage(page=page, limit=limit, total=found.total, data=[present(n, now) for n in found.items])
    return _ok(PageEnvelope, "Success", data)


async def _mark(b: Backends, who: Principal, notification_id: str, read: bool) -> ItemEnvelope:
    found = await actions.mark(b, who, notification_id, ids.from_uuid, read)
    return _ok(ItemEnvelope, actions.marked(read), present(found, datetime.now(UTC)))


@patch("/notifications/{notification_id:str}/read", summary="Mark a notification as read")
async def mark_read(
    b: NamedDependency[Backends], who: NamedDependency[Principal], notification_id: PathId
) -> ItemEnvelope:
    return await _mark(b, who, notification_id, True)


@patch("/notifications/{notification_id:str}/unread", summary="Mark a notification as unread")
async def mark_unread(
    b: NamedDependency[Backends], who: NamedDependency[Principal], notification_id: PathId
) -> ItemEnvelope:
    return await _mark(b, who, notification_id, False)


@patch("/notifications/read-all", summary="Mark all notifications as read")
async def read_all(b: NamedDependency[Backends], who: NamedDependency[Principal]) -> MarkedAllEnvelope:
    marked = await inbox.read_all(b, who)
    return _ok(MarkedAllEnvelope, "All notifications marked as read", MarkedAll(markedCount=marked))


@delete("/notifications/{notification_id:str}", summary="Delete a notification", status_code=200)
async def delete_one(
    b: NamedDependency[Backends], who: NamedDependency[Principal], notification_id: PathId
) -> DeletedEnvelope:
    await actions.delete(b, who, notification_id, ids.from_uuid)
    return _ok(DeletedEnvelope, "Notification deleted", Deleted(id=notification_id, deleted=True))


class ErrorBody(msgspec.Struct):
    statusCode: int
    timestamp: str
    message: str
    data: None


def router(prefix: str) -> Router:
    return profiles.router(
        prefix, "aptly", [list_notifications, mark_read, mark_unread, read_all, delete_one], ErrorBody, render
    )
