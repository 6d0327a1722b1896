"""A tenant admin's webhooks: `POST/GET /v1/admin/webhooks`, `DELETE /v1/admin/webhooks/{id}` and
`GET /v1/admin/webhooks/{id}/deliveries`.

Herald's own envelope, like the other admin endpoints; a bad body or parameter is a 400 naming the
member. Ids are `whk_` + 16 hex digits; another tenant's id, or one that does not decode, is 404.
What is registered and how deliveries go: service/webhooks/.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Response, Router, delete, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from service import ids
from service.http.envelopes import documented, handlers
from service.http.formats import PathId
from service.http.guard import admin_guard, dependencies
from service.http.native import ErrorBody, render
from service.model import Input, Principal
from service.process import Backends
from service.webhooks import TYPES, Type, registry

MAX_URL = 2000
MAX_BODY = 16 * 1024
STATUSES = (400, 401, 403, 404, 413, 429, 503)


class NewWebhook(Input, frozen=True):
    url: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL, description="An http:// or https:// URL.")]
    events: Annotated[
        list[Type], msgspec.Meta(min_length=1, max_length=len(TYPES), description="The types to deliver.")
    ]


class Webhook(msgspec.Struct, kw_only=True):
    id: str
    url: str
    events: list[str]


class CreatedWebhook(Webhook, kw_only=True):
    secret: str  # whsec_ + base64 of the key: shown once, never again


class Webhooks(msgspec.Struct, kw_only=True):
    webhooks: list[Webhook]


class Delivery(msgspec.Struct, kw_only=True):
    id: str  # the webhook-id the receiver saw (the same on every try)
    type: str
    status: str  # pending | delivered | failed
    tries: int
    last_error: str | None
    last_status: int | None  # the HTTP status of the last answer, if any
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    next_attempt_at: datetime | None  # pending: when it is tried (again)


class Deliveries(msgspec.Struct, kw_only=True):
    deliveries: list[Delivery]


Limit = Annotated[int, QueryParameter(ge=1, le=100, description="How many, the latest first (default 100).")]


@post(
    "/v1/admin/webhooks",
    guards=[admin_guard],
    status_code=201,
    summary="Register a webhook for the admin's tenant (its secret is shown once)",
    request_max_body_size=MAX_BODY,
)
async def create_webhook(
    b: NamedDependency[Backends], who: NamedDependency[Principal], data: JSONBody[NewWebhook]
) -> CreatedWebhook:
    made = await registry.register(b, who, data.url, data.events)
    hook = made.webhook
    return CreatedWebhook(id=ids.to_webhook(hook.id), url=hook.url, events=hook.events, secret=made.secret)


@get("/v1/admin/webhooks", guards=[admin_guard], summary="The tenant's webhooks (without their secrets)")
async def list_webhooks(b: NamedDependency[Backends], who: NamedDependency[Principal]) -> Webhooks:
    found = await registry.listed(b, who)
    return Webhooks(webhooks=[Webhook(id=ids.to_webhook(h.id), url=h.url, events=h.events) for h in found])


@delete(
    "/v1/admin/webhooks/{webhook_id:str}",
    guards=[admin_guard],
    status_code=204,
    summary="Delete a webhook (its pending deliveries are not sent)",
)
async def delete_webhook(
    b: NamedDependency[Backends], who: NamedDependency[Principal], webhook_id: PathId
) -> Response[None]:
    await registry.delete(b, who, webhook_id)
    return Response(None, status_code=204)


@get(
    "/v1/admin/webhooks/{webhook_id:str}/deliveries",
    guards=[admin_guard],
    summary="A webhook's latest deliveries and how their attempts went",
)
async def list_deliveries(
    b: NamedDependency[Backends], who: NamedDependency[Principal], webhook_id: PathId, limit: Limit = 100
) -> Deliveries:
    found = await registry.deliveries(b, who, webhook_id, limit)
    return Deliveries(
        deliveries=[
            Delivery(
                id=d.msg_id,
                type=d.type,
                status=d.status,
                tries=d.tries,
                last_error=d.last_error,
                last_status=d.last_status,
                created_at=d.created_at,
                last_attempt_at=d.last_attempt_at,
                delivered_at=d.delivered_at,
                next_attempt_at=d.next_attempt_at,
            )
            for d in found
        ]
    )


def router() -> Router:
    return Router(
        "/",
        route_handlers=documented(
            [create_webhook, list_webhooks, delete_webhook, list_deliveries], ErrorBody, STATUSES
        ),
        dependencies=dependencies,
        exception_handlers=handlers(render),
        tags=["herald"],
    )
