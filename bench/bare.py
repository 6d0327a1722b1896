"""The badge's raw limit: a bare Litestar route doing one Redis GET, served like `herald api`.

Same framework, same server (granian, ASGI, same worker count, no access log), same Redis client
settings (service.cache.connect) and same event loop as Herald's API: what is left is the cost of
one HTTP request plus one Redis round trip on this machine. `/nothing` answers without any I/O.

    python -m bench.bare --port 8100 --workers 2      (BENCH_BARE_REDIS_URL names the Redis)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, get

from service import cache

KEY = "bench:bare:count"


def create_app() -> Litestar:
    url = os.environ["BENCH_BARE_REDIS_URL"]

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = cache.connect(url)
        app.state.redis = client
        try:
            yield
        finally:
            await client.aclose()

    @get("/count")
    async def count() -> dict[str, int]:
        raw = await app.state.redis.get(KEY)
        return {"unread_count": int(raw or 0)}

    @get("/nothing")
    async def nothing() -> dict[str, int]:
        return {"unread_count": 0}

    app = Litestar([count, nothing], lifespan=[lifespan], openapi_config=None)
    return app


def main() -> None:
    from granian import Granian
    from granian.constants import Interfaces

    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    # The same arguments as `herald api` (service/cli.py cmd_api).
    Granian(
        "bench.bare:create_app",
        factory=True,
        address="127.0.0.1",
        port=args.port,
        interface=Interfaces.ASGI,
        workers=args.workers,
        log_access=False,
        workers_kill_timeout=25,
    ).serve()


if __name__ == "__main__":
    main()
