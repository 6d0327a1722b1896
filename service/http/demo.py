"""The demo bell at /demo, and the route it publishes test events through. Only under `herald dev`
(HERALD_DEMO=1): the publish route lets any reader send themselves notifications."""

from __future__ import annotations

import secrets
import time
from importlib import resources
from typing import Any

import msgspec
from litestar import Response, Router, get, post
from litestar.di import NamedDependency

from service import intake
from service.http.envelopes import handlers
from service.http.guard import dependencies, reader_guard
from service.http.native import Accepted, render
from service.model import Principal, decode_event
from service.process import Backends

_PAGE = resources.files("service.http").joinpath("static/demo.html")


@get("/demo", include_in_schema=False, media_type="text/html")
async def page() -> Response[bytes]:
    return Response(_PAGE.read_bytes(), media_type="text/html", headers={"Cache-Control": "no-cache"})


@post("/demo/publish", guards=[reader_guard], status_code=202, include_in_schema=False)
async def publish(b: NamedDependency[Backends], who: NamedDependency[Principal]) -> Accepted:
    now = time.strftime("%H:%M:%S")
    event: dict[str, Any] = {
        "id": f"demo-{secrets.token_hex(8)}",
        "type": "demo.ping",
        "tenant": who.tenant,
        "audience": {"users": [who.user]},
        "title": "Test notification",
        "message": f"Published from the demo page at {now}.",
        "category": "Demo",
    }
    raw = msgspec.json.encode(event)
    return Accepted(await intake.enqueue(b.redis, [(decode_event(raw), raw)]))


def router() -> Router:
    return Router("/", route_handlers=[page, publish], dependencies=dependencies, exception_handlers=handlers(render))
