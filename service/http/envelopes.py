"""From any exception to one `Problem`, and from a `Problem` to each profile's error envelope.

The status of every error is decided here, once (`problem_of`); a profile only decides how a
Problem looks (its `Renderer`). Handlers are registered per router, so a route answers in its own
profile's format; `fallback` does the same for requests that match no route, in the envelope
`Envelopes` picks for the path.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.utils import normalize_path

from service.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HeraldError,
    InvalidEvent,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from service.model import NESTED_TOO_DEEPLY

log = logging.getLogger("herald.http")


class Issue(msgspec.Struct, frozen=True):
    """One reason a request was refused: where (`query`, `path`, `body`), which field, why."""

    location: str
    field: str
    message: str


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    status: int
    message: str
    issues: tuple[Issue, ...] = ()
    member: int | None = None  # the index of the refused event in a batch
    headers: dict[str, str] = {}


_STATUS: dict[type[HeraldError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    InvalidEvent: 422,
    TooManyRequests: 429,
    Unavailable: 503,
}
_HEADERS: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": "Bearer"},
    503: {"Retry-After": "1"},
}


# msgspec's words for a member missing from, or unknown to, an object: Litestar keys such an error by
# the object (`data` for the body itself), so the member is read from the message.
_MEMBER = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]+)`")


def _field(key: str, message: str) -> str:
    member = _MEMBER.match(message)
    if member is None:
        return key
    return member.group(1) if key in ("", "data") else f"{key}.{member.group(1)}"


def _issues_of(exc: ValidationException) -> tuple[Issue, ...]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    found = tuple(
        # Litestar gives the source as a ParamType enum for parameters and as "body" for bodies.
        Issue(
            str(getattr(e.get("source"), "value", e.get("source")) or "body"),
            _field(str(e.get("key") or ""), str(e.get("message") or "")),
            str(e.get("message") or exc.detail),
        )
        for e in extra
        if isinstance(e, dict)
    )
    return found or (Issue("body", "", str(exc.detail)),)


def problem_of(exc: BaseException) -> Problem:
    status: int
    if isinstance(exc, HeraldError):
        status = next(s for t, s in _STATUS.items() if isinstance(exc, t))
        issues: tuple[Issue, ...] = ()
        member = None
        if isinstance(exc, InvalidEvent):
            issues = (Issue("body", exc.field, exc.message),)
            member = exc.member
        elif isinstance(exc, BadRequest):
            issues = (Issue(exc.location, exc.field, exc.message),)
        headers = _HEADERS.get(status, {})
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        return Problem(status=status, message=exc.message, issues=issues, member=member, headers=headers)
    if isinstance(exc, ValidationException):
        issues = _issues_of(exc)
        first = issues[0]
        where = f"{first.location} parameter {first.field!r}: " if first.field else ""
        return Problem(status=400, message=f"{where}{first.message}", issues=issues)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        message = exc.detail if isinstance(exc.detail, str) and exc.detail else "Error"
        headers = {**_HEADERS.get(status, {}), **(exc.headers or {})}
        # A 400 from Litestar itself is a body it could not decode (not JSON, truncated, too deep).
        issues = (Issue("body", "", message),) if status == 400 else ()
        return Problem(status=status, message=message, issues=issues, headers=headers)
    if isinstance(exc, asyncpg.DataError):
        # A value PostgreSQL cannot take as given, like a NUL character in a filter: the request's
        # fault, and nothing was changed (the statement failed).
        message = "a parameter holds a value that cannot be used (for instance a NUL character)"
        return Problem(status=400, message=message, issues=(Issue("query", "", message),))
    if isinstance(exc, RecursionError):  # a body nested too deeply for the decoder (see service/model.py)
        return Problem(status=400, message=NESTED_TOO_DEEPLY, issues=(Issue("body", "", NESTED_TOO_DEEPLY),))
    log.error("unhandled error", exc_info=exc)
    return Problem(status=500, message="Internal server error")


Renderer = Callable[[Problem], Response[Any]]

# What each error status means, for the OpenAPI document. Every guarded route can answer each of
# them (a token is missing, forbidden or over its rate; a backend is down; a parameter is bad).
ERRORS = {
    400: "The request is malformed: a bad parameter, body or id.",
    401: "No token, or one Herald does not know.",
    403: "The token may not do this: a deactivated user, a producer token on a reader route, another tenant.",
    404: "No such notification for this user (another user's is answered the same way).",
    413: "The body is larger than the route accepts.",
    422: "The request is well-formed but refused: the failing field is named.",
    429: "Over a rate limit; `Retry-After` says when to try again.",
    503: "PostgreSQL or Redis cannot be reached right now, or (`GET /v1/stream`) this API process holds as many "
    "streams as it may; `Retry-After` says when to try again.",
}


def documented(route_handlers: Sequence[Any], envelope: type, statuses: Iterable[int] = ERRORS) -> list[Any]:
    """The handlers, each with the error answers it can give described in the OpenAPI document,
    in `envelope`, the shape of the profile's errors."""
    for handler in route_handlers:
        specs = {
            s: ResponseSpec(data_container=envelope, description=ERRORS[s], generate_examples=False) for s in statuses
        }
        handler.responses = {**specs, **(handler.responses or {})}
    return list(route_handlers)


def handlers(
    render: Renderer,
) -> dict[type[Exception] | int, Callable[[Request[Any, Any, Any], Exception], Response[Any]]]:
    """Exception handlers for a router: every error, rendered in that router's format."""

    def handle(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        return render(problem_of(exc))

    return {Exception: handle}


_PARAMETER = re.compile(r"\{[^}]*\}")  # in a path format


class Envelopes:
    """Which profile's envelope answers for a path, when no handler of its own did (a path that is no
    route, a method a route does not take, a path refused before routing).

    The router that serves the path decides, so Herald's own routes under `/v1` (`/v1/unread-count`,
    `/v1/preferences`, ...) keep Herald's envelope although scalebox is mounted there; a path no
    route serves gets the longest matching mount's, and Herald's outside every mount.
    """

    def __init__(
        self, routes: Iterable[tuple[str, Renderer]], mounts: Sequence[tuple[str, Renderer]], default: Renderer
    ) -> None:
        self.exact: dict[str, Renderer] = {}
        self.patterns: list[tuple[re.Pattern[str], Renderer]] = []
        for template, render in routes:  # Litestar's path formats: `/v1/notifications/{notification_id}`
            if "{" in template:
                pattern = "[^/]+".join(re.escape(part) for part in _PARAMETER.split(template))
                self.patterns.append((re.compile(pattern), render))
            else:
                self.exact.setdefault(template, render)
        self.mounts = sorted(mounts, key=lambda m: len(m[0]), reverse=True)
        self.default = default

    def for_path(self, path: str) -> Renderer:
        path = normalize_path(path)  # as Litestar routes it: no empty segment, no trailing slash
        if (render := self.exact.get(path)) is not None:
            return render
        for pattern, render in self.patterns:
            if pattern.fullmatch(path):
                return render
        for prefix, render in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                return render
        return self.default


def fallback(envelopes: Envelopes) -> Callable[[Request[Any, Any, Any], Exception], Response[Any]]:
    """App-level handler for requests no route took (404, 405), in the envelope of the path's owner."""

    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        return envelopes.for_path(request.url.path)(problem_of(exc))

    return handle
