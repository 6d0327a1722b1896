"""At most HERALD_STREAM_LIMIT open `GET /v1/stream` per API process; past it, 503 at once.

Every open tab holds a stream, and a stream holds one of the server's connection slots for as long
as it is open (see `herald api` in service/cli.py: granian admits a bounded number of connections
per worker, and whatever is past that waits unanswered in the listen queue, `/healthz` included).
So streams are counted here, in plain ASGI around the whole app, and one past the limit is refused
before anything else is done for it: `503` in Herald's native envelope with `Retry-After`. A client
then polls `/v1/unread-count` and tries the stream again later; the demo page does exactly that.
The server admits more connections than this limit, so badge polls and health checks always get in.

The count is of ASGI calls in flight, so a stream is counted from the moment it is asked for until
its response is over however it ends (the client left, the process is shutting down, an error).
"""

from __future__ import annotations

from typing import Any

import msgspec

from service.metrics import STREAMS_REFUSED

PATH = "/v1/stream"
MESSAGE = "this server holds as many event streams as it may; poll GET /v1/unread-count and try the stream again later"

Scope = dict[str, Any]


class StreamGate:
    def __init__(self, app: Any, limit: int, retry_after: int) -> None:
        self.app = app
        self.limit = limit
        self.open = 0
        body = msgspec.json.encode({"error": MESSAGE, "status": 503})
        self._headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ]
        self._body = body

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if self.open >= self.limit:
            STREAMS_REFUSED.inc()
            scope["path_template"] = PATH
            await send({"type": "http.response.start", "status": 503, "headers": list(self._headers)})
            await send({"type": "http.response.body", "body": self._body})
            return
        self.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1
