"""The outermost layer of every request: request id, access log and latency metric, security
headers and CORS, for the badge's fast path too.

It is plain ASGI rather than Litestar middleware because the badge's fast path
(service/http/fastpath.py) answers without the framework, and its responses need the same headers.

Security headers: the API answers JSON to programs, so a response may not be sniffed as something
else, framed, or leak its URL as a referrer, and inbox contents are not stored by caches unless a
route says otherwise (the badge says `private, no-cache`). HTML pages (the demo, the API docs) keep
everything but the content policy that would stop their scripts.

Every request gets an id: the caller's `X-Request-ID` when it is a sane token, else a new one. It
is sent back in `X-Request-ID`, put on every log line written while the request runs, and handed
with a published event to the worker (see service/intake.py), whose lines about that event carry
it too.

CORS (`HERALD_CORS_ORIGINS`, default none): a browser bell on another origin calls Herald with a
token in `Authorization` or `X-API-Key`, never with cookies, so no credentials mode is offered;
the allowed origin is echoed with `Vary: Origin`, and the headers a bell reads (`ETag`,
`X-Poll-Interval`, `Retry-After`) are exposed.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from service.logs import request_id
from service.metrics import REQUESTS
from service.settings import Settings

access = logging.getLogger("herald.access")
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

Scope = dict[str, Any]
Headers = list[tuple[bytes, bytes]]

_SECURITY: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_CSP_API = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_CSP_HTML = (b"content-security-policy", b"frame-ancestors 'none'")
_NO_STORE = (b"cache-control", b"no-store")

_METHODS = b"GET, POST, PUT, PATCH, DELETE"
_ALLOWED_HEADERS = b"Authorization, X-API-Key, Content-Type, If-None-Match, Last-Event-ID, X-Request-ID"
_EXPOSED = b"ETag, X-Poll-Interval, Retry-After, X-Request-ID"
_MAX_AGE = b"600"


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class Edge:
    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.any_origin = "*" in settings.cors_origins
        self.origins = {o.encode() for o in settings.cors_origins if o != "*"}
        self.cors = bool(settings.cors_origins)
        self.access_log = settings.access_log

    def _allowed(self, origin: bytes | None) -> bool:
        return origin is not None and (self.any_origin or origin in self.origins)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, b"x-request-id")
        rid = given.decode() if given is not None and _REQUEST_ID.match(given) else os.urandom(8).hex()
        token = request_id.set(rid)
        status = [500]
        try:
            await self._serve(scope, receive, send, rid.encode(), status)
        finally:
            request_id.reset(token)
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            REQUESTS.labels(route, scope["method"], str(status[0])).observe(elapsed)
            if self.access_log:
                access.info(
                    "%s %s %d",
                    scope["method"],
                    route,
                    status[0],
                    extra={"request_id": rid, "status": status[0], "ms": round(elapsed * 1000, 2)},
                )

    async def _serve(self, scope: Scope, receive: Any, send: Any, rid: bytes, status: list[int]) -> None:
        origin = _header(scope, b"origin") if self.cors else None
        allowed = self._allowed(origin)
        if allowed and scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            status[0] = 204
            await self._preflight(origin or b"", send)
            return
        cors: Headers = []
        if self.cors:
            cors.append((b"vary", b"Origin"))
            if allowed and origin is not None:
                cors += [(b"access-control-allow-origin", origin), (b"access-control-expose-headers", _EXPOSED)]

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers: Headers = list(message.get("headers", ()))
                html = cached = False
                for key, value in headers:
                    if key == b"content-type":
                        html = value.startswith(b"text/html")
                    elif key == b"cache-control":
                        cached = True
                headers += _SECURITY
                headers.append(_CSP_HTML if html else _CSP_API)
                if not cached:
                    headers.append(_NO_STORE)
                headers += cors
                headers.append((b"x-request-id", rid))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _preflight(self, origin: bytes, send: Any) -> None:
        headers: Headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", _METHODS),
            (b"access-control-allow-headers", _ALLOWED_HEADERS),
            (b"access-control-max-age", _MAX_AGE),
            (b"vary", b"Origin"),
            *_SECURITY,
            _CSP_API,
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
