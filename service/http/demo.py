"""The demo bell at /demo, and the route it publishes test events through. Only under `herald dev`
(HERALD_DEMO=1): the publish route lets any reader send themselves notifications."""

from __future__ import annotations

import secrets
import time
from importlib import resources
from typing import Annotated, Any, Literal

import msgspec
from litestar import Response, Router, get, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from service import intake
from service.http.envelopes import handlers
from service.http.guard import dependencies, reader_guard
from service.http.native import Accepted, render
from service.model import Action, Principal, decode_event
from service.process import Backends

_PAGE = resources.files("service.http").joinpath("static/demo.html")

# The review thread's people: each press of "Publish a thread update" comments as one of them, so a
# few presses show the thread line growing ("Carol and 2 others · 4 updates").
REVIEWERS = ("Alice", "Bob", "Carol", "Dave", "Erin")
REVIEW_GROUP = "demo:pr-42"
# What every comment asks of the reader: the page shows them as buttons, records the one clicked
# (POST /v1/notifications/{id}/actions/{action}) and names it in the past tense ("✓ Approved"),
# so a new comment (which clears the answer) brings the buttons back. No `url`: the demo has no
# pull request to send the reader to.
REVIEW_ACTIONS = (Action(id="approve", label="Approve"), Action(id="request-changes", label="Request changes"))

Kind = Annotated[
    Literal["ping", "review"],
    QueryParameter(
        description="ping: a lone notification; review: one more comment on the demo's review thread, "
        "offering Approve and Request changes."
    ),
]


@get("/demo", include_in_schema=False, media_type="text/html")
async def page() -> Response[bytes]:
    return Response(_PAGE.read_bytes(), media_type="text/html", headers={"Cache-Control": "no-cache"})


def sample(kind: str, who: Principal) -> dict[str, Any]:
    """The event the demo publishes to the caller: the page's tabs are named after these two types."""
    now = time.strftime("%H:%M:%S")
    event: dict[str, Any] = {
        "id": f"demo-{secrets.token_hex(8)}",
        "tenant": who.tenant,
        "audience": {"users": [who.user]},
    }
    if kind == "review":
        actor = secrets.choice(REVIEWERS)
        return event | {
            "type": "demo.review",
            "title": "Pull request #42: comments",
            "message": f"{actor} commented at {now}.",
            "category": "Reviews",
            "group": REVIEW_GROUP,
            "actor": actor,
            "actions": msgspec.to_builtins(REVIEW_ACTIONS),
        }
    return event | {
        "type": "demo.ping",
        "title": "Test notification",
        "message": f"Published from the demo page at {now}.",
        "category": "Demo",
    }


@post("/demo/publish", guards=[reader_guard], status_code=202, include_in_schema=False)
async def publish(b: NamedDependency[Backends], who: NamedDependency[Principal], kind: Kind = "ping") -> Accepted:
    raw = msgspec.json.encode(sample(kind, who))
    return Accepted(await intake.enqueue(b.redis, [(decode_event(raw), raw)]))


def router() -> Router:
    return Router("/", route_handlers=[page, publish], dependencies=dependencies, exception_handlers=handlers(render))
