"""The API profiles: presenters of the same core (service/inbox.py), each in its product's paths,
field names and envelopes. What makes a profile's router is written once, here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from litestar import Router

from service.http.envelopes import Renderer, documented, handlers
from service.http.guard import dependencies, reader_guard


def router(prefix: str, tag: str, route_handlers: Sequence[Any], error_body: type, render: Renderer) -> Router:
    """Reader routes under `prefix`, answering every error with `render` and documenting it as
    `error_body`."""
    return Router(
        prefix,
        route_handlers=documented(route_handlers, error_body),
        guards=[reader_guard],
        dependencies=dependencies,
        exception_handlers=handlers(render),
        tags=[tag],
    )
