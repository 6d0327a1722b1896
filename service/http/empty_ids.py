"""A path with an empty segment — one ending in `/` or holding `//` — is refused with 404 before
routing, whatever the method, in the envelope of the profile that serves the path.

Such a path is what a client sends when the id it builds a URL from is empty: `/v1/notifications/`
for `/v1/notifications/{id}`. Litestar routes a path with its empty segments dropped, so that
request would reach the collection: `DELETE /v1/notifications/` would delete the whole inbox, and
`GET /v1/notifications/` answer the list where one notification was asked for. Refusing here, in
front of the app and of the badge's fast path, covers every route, present and future, and no
handler ever sees an empty id. Reads are refused too: one rule for every method keeps the answers
equal to the OpenAPI document, where an empty id can only be a missing notification (404). `/`
alone is not refused.
"""

from __future__ import annotations

from typing import Any

from service.http.envelopes import Envelopes, Problem

MESSAGE = "Not Found: the path ends in '/' or holds '//' (an empty id)"

Scope = dict[str, Any]


def has_empty_segment(path: str) -> bool:
    return path != "/" and (path.endswith("/") or "//" in path)


class EmptyIds:
    def __init__(self, app: Any, envelopes: Envelopes) -> None:
        self.app = app
        self.envelopes = envelopes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and has_empty_segment(scope["path"]):
            await self._refuse(scope, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Any) -> None:
        response = self.envelopes.for_path(scope["path"])(Problem(status=404, message=MESSAGE))
        body = response.render(response.content, "application/json")
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
