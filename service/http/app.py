"""The Litestar application: Herald's own endpoints plus the API profiles named in HERALD_PROFILES."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig

from service.http import demo, native, preferences, users, webhooks
from service.http.edge import Edge
from service.http.empty_ids import EmptyIds
from service.http.envelopes import Envelopes, Renderer, fallback
from service.http.fastpath import FastPath
from service.http.gate import StreamGate
from service.http.heap import Heap
from service.http.hub import Hub
from service.http.profiles import aptly, qualytics, scalebox
from service.process import Backends
from service.settings import Settings, load_settings

log = logging.getLogger("herald.api")

# name -> (router factory, error renderer). Each profile is a presenter over the same core.
PROFILES: dict[str, tuple[Callable[[str], Router], Renderer]] = {
    "qualytics": (qualytics.router, qualytics.render),
    "scalebox": (scalebox.router, scalebox.render),
    "aptly": (aptly.router, aptly.render),
}

ADMIN = "/v1/admin"  # Herald's administration endpoints, answered in Herald's own envelope
# Beyond the largest legitimate body (a bulk action of 1000 ids); /v1/events sets its own.
MAX_BODY = 1024 * 1024


def _end_streams_on_sigterm(hub: Hub) -> Callable[[], None]:
    """On SIGTERM, end open streams at once, then let the server's own handling go on.

    The server (granian) stops taking connections on SIGTERM and waits for open ones to finish
    before it shuts the app down; a stream never finishes by itself. asyncio delivers signals to
    the loop through a wakeup fd and still calls the Python-level handler, so a handler set here
    runs beside the server's loop handler without replacing it.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(hub.end_streams)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    settings.require_backends()
    mounts = [(prefix, PROFILES[name]) for name, prefix in settings.profiles if name in PROFILES]

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        backends = await Backends.open(settings, "herald-api")
        heap = Heap()
        hub = Hub(backends.redis, backends.auth, backends.counts.watched, heap)
        hub.start()
        heap.start()  # after the backends and the hub: they live as long as the process
        app.state.backends = backends
        app.state.hub = hub
        restore = _end_streams_on_sigterm(hub)
        try:
            yield
        finally:
            restore()
            await hub.stop()
            await backends.close()
            heap.stop()

    # Each router with the renderer of its errors: Herald's own routes answer in Herald's envelope.
    owned: list[tuple[Router, Renderer]] = [
        (native.router(), native.render),
        (preferences.router(), native.render),
        (users.router(), native.render),
        (webhooks.router(), native.render),
    ]
    owned += [(make(prefix), render) for prefix, (make, render) in mounts]
    if settings.demo:
        owned.append((demo.router(), native.render))
    envelopes = Envelopes(
        [(route.path_format, render) for router, render in owned for route in router.routes],
        # Everything under /v1/admin is Herald's, whatever profile is mounted at /v1: a user id
        # holding a `/` makes a path no route serves, and it is still answered in Herald's envelope.
        [(prefix, render) for prefix, (_, render) in mounts] + [(ADMIN, native.render)],
        native.render,
    )
    app = Litestar(
        route_handlers=[router for router, _ in owned],
        lifespan=[lifespan],
        exception_handlers={404: fallback(envelopes), 405: fallback(envelopes)},
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
    app.state.settings = settings
    app.state.envelopes = envelopes
    return app


def asgi(app: Litestar) -> Edge:
    """What the server runs: the app behind the badge's fast path, behind the stream limit, behind
    the refusal of empty ids (which covers both), behind the headers and CORS."""
    settings: Settings = app.state.settings
    # A refused stream is told to come back after one poll interval, polling meanwhile.
    gate = StreamGate(FastPath(app), settings.stream_limit, settings.poll_interval)
    return Edge(EmptyIds(gate, app.state.envelopes), settings)


def app_from_env() -> Any:
    """Entry point for granian (`--factory`): settings from the environment of each worker."""
    return asgi(create_app())
