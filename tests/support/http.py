"""The app served on a test's own event loop: in memory (`serving`) or behind a real HTTP server
(`listening`, for responses that stream)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from service.http.app import asgi, create_app
from service.local.embedded import free_port
from service.settings import Settings


@asynccontextmanager
async def serving(settings: Settings, peer: tuple[str, int] = ("127.0.0.1", 123)) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to a fresh app on this test's own event loop.

    Litestar's AsyncTestClient runs the app's lifespan on another thread's loop and blocks the
    caller's loop while a request runs, so concurrent requests (and anything the app shares with
    the test, like a stream) would be impossible. Here the lifespan and every request share the
    test's loop, as they share a process's loop in production. The lifespan runs in a task of its
    own because it must be entered and left by the same task (it holds an anyio task group).
    """
    app = create_app(settings)
    started, stop = asyncio.Event(), asyncio.Event()

    async def lifespan() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    task = asyncio.create_task(lifespan())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # the start failed: raise why
    try:
        transport = httpx.ASGITransport(app=asgi(app), client=peer)
        async with httpx.AsyncClient(transport=transport, base_url="http://herald.test") as http:
            yield http
    finally:
        stop.set()
        await task


@asynccontextmanager
async def listening(settings: Settings) -> AsyncIterator[str]:
    """The app behind a real HTTP server (uvicorn) on this test's loop; yields its base URL.

    For what the in-memory transport cannot do: responses that stream (Server-Sent Events).
    """
    import uvicorn

    config = uvicorn.Config(
        asgi(create_app(settings)), host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the test server did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task
