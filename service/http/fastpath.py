"""The badge poll without the framework, for the common case.

Every open tab polls GET /v1/unread-count, so it is the request Herald serves most. When the
token's owner is already in this process's credential cache and their count is in Redis, this
ASGI wrapper answers from those two alone (one Redis GET), skipping routing, guards, dependency
injection and the response machinery, which cost more than half the time of a poll when profiled.
While Redis does not answer, it answers from PostgreSQL itself (asking Redis a second time in the
route would double the wait). Anything else — no or unknown token, a cold count, another path — goes
to the Litestar route, which answers the same way (`tests/http/test_badge.py` checks both agree).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar

from service.auth.tokens import token_hash
from service.errors import Unavailable
from service.http.native import badge_headers, etag_of, matches
from service.metrics import COUNT_READS
from service.process import Backends

PATH = "/v1/unread-count"
_encode = msgspec.json.Encoder().encode
_HIT = COUNT_READS.labels("hit")

Scope = dict[str, Any]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _token(scope: Scope) -> str | None:
    authorization = _header(scope, b"authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return _header(scope, b"x-api-key") or None


class FastPath:
    def __init__(self, app: Litestar) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == "GET"
            and await self._badge(scope, send)
        ):
            return
        await self.app(scope, receive, send)  # type: ignore[arg-type]

    async def _badge(self, scope: Scope, send: Any) -> bool:
        b: Backends | None = getattr(self.app.state, "backends", None)
        token = _token(scope)
        if b is None or token is None:
            return False
        key = token_hash(token)
        who = b.auth.cached(key)
        if who is None or who.kind != "pat" or not who.active:
            return False
        if b.limits.reads.take(key):
            return False  # the route answers 429 in its own envelope
        try:
            counts = await b.counts.cached(who.user_id)
            if counts is None:
                return False  # cold: the route rebuilds it, once however many polls ask
            _HIT.inc()
        except Unavailable:
            # Redis did not answer: PostgreSQL answers here, rather than the route asking Redis again.
            try:
                counts = await b.counts.fallback(who.user_id)
            except Unavailable:
                return False  # neither: the route answers 503 in its envelope

        scope["path_template"] = PATH
        etag = etag_of(counts)
        headers = [(k.lower().encode(), v.encode()) for k, v in badge_headers(etag, b.settings.poll_interval).items()]
        if matches(_header(scope, b"if-none-match"), etag):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return True
        body = _encode({"unread_count": counts.unread, "unseen_count": counts.unseen})
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True
