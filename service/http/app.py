"""The Litestar application: Herald's own endpoints plus the API profiles named in HERALD_PROFILES."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig

from service.backends import Backends
from service.http import native
from service.http.errors import Renderer, fallback
from service.http.profiles import aptly, qualytics, scalebox
from service.hub import Hub
from service.settings import Settings, load_settings

log = logging.getLogger("herald.api")

# name -> (router factory, error renderer). Each profile is a presenter over the same core.
PROFILES: dict[str, tuple[Callable[[str], Router], Renderer]] = {
    "qualytics": (qualytics.router, qualytics.render),
    "scalebox": (scalebox.router, scalebox.render),
    "aptly": (aptly.router, aptly.render),
}

# Beyond the largest legitimate body (a bulk action of 1000 ids); /v1/events sets its own.
MAX_BODY = 1024 * 1024


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    settings.require_backends()
    mounts = [(prefix, PROFILES[name]) for name, prefix in settings.profiles if name in PROFILES]

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        backends = await Backends.open(settings, "herald-api")
        hub = Hub(backends.redis, backends.auth)
        hub.start()
        app.state.backends = backends
        app.state.hub = hub
        try:
            yield
        finally:
            await hub.stop()
            await backends.close()

    return Litestar(
        route_handlers=[native.router(), *(make(prefix) for prefix, (make, _) in mounts)],
        lifespan=[lifespan],
        exception_handlers={
            404: fallback([(prefix, render) for prefix, (_, render) in mounts], native.render),
            405: fallback([(prefix, render) for prefix, (_, render) in mounts], native.render),
        },
        openapi_config=OpenAPIConfig(
            title="Herald",
            version="0.1.0",
            description="Self-hosted in-app notifications: Herald's own endpoints and its API profiles.",
            path="/schema",
        ),
        request_max_body_size=MAX_BODY,
        debug=False,
        logging_config=None,
    )


def app_from_env() -> Any:
    """Entry point for granian (`--factory`): settings from the environment of each worker."""
    return create_app()
