"""Herald's own endpoints: badge count, publishing, administration, health.

Errors here use Herald's own envelope: `{"error": "<message>", "status": N}`, plus `member` (the
index of the refused event in a batch) and `field` (a dotted path) when a request is refused.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody

from service import admin, inbox, intake
from service.auth.limits import retry_after
from service.backends import postgres
from service.counts.tabs import TabFilter
from service.errors import Forbidden, InvalidEvent, TooManyRequests
from service.http.envelopes import Problem, documented, handlers
from service.http.guard import admin_guard, dependencies, producer_guard, reader_guard, token_key
from service.http.sse import live
from service.metrics import render as render_metrics
from service.model import Counts, Event, Input, Name, Principal, decode_events
from service.process import Backends

MAX_BATCH = 1000
MAX_EVENTS_BODY = 16 * 1024 * 1024


class UnreadCount(msgspec.Struct):
    unread_count: int
    # Unread notifications that arrived after the user last opened the bell (POST /v1/seen).
    unseen_count: int


TabName = Annotated[str, msgspec.Meta(min_length=1, max_length=50)]
Listed = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class Tab(Input, frozen=True):
    """Which notifications a tab counts; every member is optional, `{}` is the whole inbox."""

    type: Annotated[list[Listed], msgspec.Meta(min_length=1, max_length=100)] | None = None
    category: Annotated[list[Listed], msgspec.Meta(min_length=1, max_length=100)] | None = None
    archived: bool | Literal["all"] = False


class TabsBody(Input, frozen=True):
    tabs: Annotated[dict[TabName, Tab], msgspec.Meta(min_length=1, max_length=20)]


class TabNumbers(msgspec.Struct):
    unread: int
    unseen: int
    total: int


class TabsCounted(msgspec.Struct):
    tabs: dict[str, TabNumbers]


class Accepted(msgspec.Struct):
    accepted: int


class NewUser(Input, frozen=True):
    user: Name
    role: Literal["member", "manager", "admin"] = "member"


class CreatedUser(msgspec.Struct, kw_only=True):
    user: str
    role: str
    token: str


class NewSubscription(Input, frozen=True):
    user: Name
    topic: Name


class Subscription(msgspec.Struct, kw_only=True):
    user: str
    topic: str


class Health(msgspec.Struct, kw_only=True, omit_defaults=True):
    status: str
    postgres: str | None = None
    redis: str | None = None


def render(problem: Problem) -> Response[Any]:
    body: dict[str, Any] = {"error": problem.message, "status": problem.status}
    if problem.member is not None:
        body["member"] = problem.member
    if problem.issues and problem.issues[0].field:
        body["field"] = problem.issues[0].field
    return Response(body, status_code=problem.status, headers=problem.headers)


def etag_of(counts: Counts) -> str:
    # Strong, and per user: one browser switching users must never get another user's 304. Both
    # numbers are in it (the version alone would do, but a tag should say what it covers).
    return f'"{counts.user_id:x}.{counts.version:x}.{counts.unread:x}.{counts.unseen:x}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def badge_headers(etag: str, poll_interval: int) -> dict[str, str]:
    """The headers of every badge answer; the fast path (service/http/fastpath.py) sends the same."""
    return {"ETag": etag, "Cache-Control": "private, no-cache", "X-Poll-Interval": str(poll_interval)}


@get("/v1/unread-count", guards=[reader_guard], summary="Unread count for badge polling")
async def unread_count(
    request: Request[Any, Any, Any], b: NamedDependency[Backends], who: NamedDependency[Principal]
) -> Response[Any]:
    # Most polls never get here: the fast path answers them when the token and the count are
    # cached. This is the general path (cold caches, Redis down, errors), with the same answers.
    counts = await b.counts.read(who.user_id)
    etag = etag_of(counts)
    headers = badge_headers(etag, b.settings.poll_interval)
    if matches(request.headers.get("if-none-match"), etag):
        return Response(None, status_code=304, headers=headers)
    return Response(UnreadCount(counts.unread, counts.unseen), headers=headers)


@post("/v1/seen", guards=[reader_guard], status_code=200, summary="The user opened the bell: unread becomes seen")
async def seen(b: NamedDependency[Backends], who: NamedDependency[Principal]) -> UnreadCount:
    counts = await inbox.seen(b, who)
    return UnreadCount(counts.unread, counts.unseen)


@post("/v1/counts", guards=[reader_guard], status_code=200, summary="Exact counts of up to 20 tabs at once")
async def tab_counts(
    b: NamedDependency[Backends], who: NamedDependency[Principal], data: JSONBody[TabsBody]
) -> TabsCounted:
    filters = {
        name: TabFilter(
            type=None if tab.type is None else frozenset(tab.type),
            category=None if tab.category is None else frozenset(tab.category),
            archived=tab.archived,
        )
        for name, tab in data.tabs.items()
    }
    counted = await inbox.tabs(b, who, filters)
    return TabsCounted({name: TabNumbers(c.unread, c.unseen, c.total) for name, c in counted.items()})


def _event_body_doc(
    data: JSONBody[Event | Annotated[list[Event], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]],
) -> None:
    """Never called: it only shows the request body in the OpenAPI document. The handler parses
    the body itself, so that a refusal can name the member of the batch."""
    raise AssertionError("documentation only")


@post(
    "/v1/events",
    guards=[producer_guard],
    status_code=202,
    summary="Publish one event or an array of up to 1000",
    dependencies={"event_body": Provide(_event_body_doc, sync_to_thread=False)},
    request_max_body_size=MAX_EVENTS_BODY,
)
async def publish_events(
    request: Request[Any, Any, Any], b: NamedDependency[Backends], who: NamedDependency[Principal]
) -> Accepted:
    batch = decode_events(await request.body())
    if not batch:
        raise InvalidEvent("the body holds no event")
    if len(batch) > MAX_BATCH:
        raise InvalidEvent(f"at most {MAX_BATCH} events per request, got {len(batch)}")
    wait = b.limits.publishes.take(token_key(request), len(batch))
    if wait:
        raise TooManyRequests(f"too many events for this token ({len(batch)} in this request)", retry_after(wait))
    for index, (event, _) in enumerate(batch):
        if event.tenant != who.tenant:
            member = f"event {index}" if len(batch) > 1 else "the event"
            raise Forbidden(f"this producer token publishes to tenant {who.tenant!r}; {member} is for {event.tenant!r}")
    return Accepted(
        await intake.enqueue(b.redis, batch, replicas=b.settings.publish_replicas, timeout=b.settings.backend_timeout)
    )


@post("/v1/admin/users", guards=[admin_guard], status_code=201, summary="Create a user (or a new token for one)")
async def create_user(
    b: NamedDependency[Backends], who: NamedDependency[Principal], data: JSONBody[NewUser]
) -> CreatedUser:
    made = await postgres.run(
        b.pool, admin.create_user, who.tenant, data.user, data.role, timeout=b.settings.backend_timeout
    )
    return CreatedUser(user=made.user, role=made.role, token=made.token)


@post("/v1/admin/subscriptions", guards=[admin_guard], status_code=201, summary="Subscribe a user to a topic")
async def create_subscription(
    b: NamedDependency[Backends], who: NamedDependency[Principal], data: JSONBody[NewSubscription]
) -> Subscription:
    await postgres.run(b.pool, admin.subscribe, who.tenant, data.user, data.topic, timeout=b.settings.backend_timeout)
    return Subscription(user=data.user, topic=data.topic)


@get("/healthz", summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@get("/readyz", summary="PostgreSQL and Redis are reachable")
async def readyz(request: Request[Any, Any, Any]) -> Response[Health]:
    b: Backends = request.app.state.backends
    timeout = min(b.settings.backend_timeout, 2.0)

    async def database() -> str:
        await asyncio.wait_for(postgres.run(b.pool, postgres.ping, timeout=timeout), timeout)
        return "ok"

    async def cache() -> str:
        await asyncio.wait_for(b.redis.ping(), timeout)
        return "ok"

    # A backend the process's probe finds down is not asked again (service/backends/breaker.py).
    results = await asyncio.gather(database(), cache(), return_exceptions=True)
    pg, rd = (r if isinstance(r, str) else f"unavailable: {type(r).__name__}" for r in results)
    ready = pg == "ok" and rd == "ok"
    return Response(
        Health(status="ready" if ready else "unavailable", postgres=pg, redis=rd), status_code=200 if ready else 503
    )


@get("/metrics", summary="Prometheus metrics of this process", media_type="text/plain; version=0.0.4")
async def metrics(b: NamedDependency[Backends]) -> bytes:
    await intake.observe(b.redis)
    return render_metrics()


class ErrorBody(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Herald's own error envelope."""

    error: str
    status: int
    member: int | None = None
    field: str | None = None


def router() -> Router:
    guarded = documented(
        [unread_count, seen, tab_counts, live, publish_events, create_user, create_subscription], ErrorBody
    )
    erasing = ResponseSpec(data_container=ErrorBody, description="The user is being erased.", generate_examples=False)
    for handler in (create_user, create_subscription):  # the user exists again only once the erasure is done
        handler.responses = {**(handler.responses or {}), 409: erasing}
    return Router(
        "/",
        route_handlers=[*guarded, healthz, readyz, metrics],
        dependencies=dependencies,
        exception_handlers=handlers(render),
        tags=["herald"],
    )
