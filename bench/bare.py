"""Raw limits served like `herald api`: bare Litestar routes doing only their I/O.

Same framework, same server (granian, ASGI, same worker count, no access log), same Redis client
settings (service.counts.connect) and same event loop as Herald's API. `/count` is the badge's
limit: one HTTP request plus one Redis `GET`. `/page/{user}` is the list's: the same first-page
query through Herald's query layer (`service/store/inbox.py`), its rows written as JSON, with no
authentication, no counts and no profile around it. `/nothing` answers without any I/O.

    python -m bench.bare --port 8100 --workers 2
    (BENCH_BARE_REDIS_URL and BENCH_BARE_DATABASE_URL name the servers)
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, get

from service.backends import postgres
from service.backends.redis import connect
from service.model import InboxItem, InboxQuery, Principal
from service.store import inbox

KEY = "bench:bare:count"


def create_app() -> Litestar:
    url = os.environ["BENCH_BARE_REDIS_URL"]
    database_url = os.environ["BENCH_BARE_DATABASE_URL"]

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        client = connect(url)
        app.state.redis = client
        app.state.pool = await postgres.create_pool(database_url, size=10)
        try:
            yield
        finally:
            await client.aclose()
            await app.state.pool.close()

    @get("/page/{user_id:int}")
    async def page(user_id: int, size: int = 12) -> list[InboxItem]:
        who = Principal(user_id=user_id, user="", tenant_id=0, tenant="", role="member", active=True, kind="pat")
        async with app.state.pool.acquire() as conn:
            return await inbox.items(conn, who, InboxQuery(read=False), limit=size)

    @get("/count")
    async def count() -> dict[str, int]:
        raw = await app.state.redis.get(KEY)
        return {"unread_count": int(raw or 0)}

    @get("/nothing")
    async def nothing() -> dict[str, int]:
        return {"unread_count": 0}

    app = Litestar([count, nothing, page], lifespan=[lifespan], openapi_config=None)
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
