"""`herald dev`: Herald on one machine, from nothing, in one command.

Uses HERALD_DATABASE_URL / HERALD_REDIS_URL when set; otherwise starts embedded PostgreSQL and
Redis (Valkey) under `./.herald/` (PostgreSQL's data under the system temp dir instead when
`nobody`, as whom it runs for root, cannot reach `./.herald/`; one line says where). Then applies
the schema, starts `herald api` and `herald worker` as child processes, creates an admin and a
producer token in the tenant `demo`, publishes a welcome notification, and prints how to try it.
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import asyncpg

from service import admin, intake
from service.backends import postgres
from service.backends.redis import connect
from service.local.embedded import EmbeddedServerError
from service.local.harness import Child, NotReady, Servers, herald_command, start, stop, wait_ready
from service.model import decode_events
from service.settings import Settings

TENANT = "demo"


async def _prepare(database_url: str, redis_url: str) -> tuple[str, str]:
    await postgres.migrate(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        made = await admin.create_user(conn, TENANT, "admin", "admin")
        producer = await admin.create_token(conn, TENANT, "publisher", "producer")
    finally:
        await conn.close()
    welcome = (
        b'{"id": "welcome-%d", "type": "herald.welcome", "tenant": "demo", "audience": {"users": ["admin"]},'
        b' "title": "Welcome to Herald", "message": "Your inbox works: this notification came through the stream.",'
        b' "category": "Getting started", "action_url": "/demo"}' % int(time.time())
    )
    client = connect(redis_url)
    try:
        await intake.enqueue(client, decode_events(welcome))
    finally:
        await client.aclose()
    return made.token, producer


def run_dev(settings: Settings, state_dir: str = ".herald") -> None:
    servers = Servers(
        database_url=settings.database_url or "",
        redis_url=settings.redis_url or "",
        root=Path(state_dir),
        note=lambda placement: print(f"herald: {placement}", flush=True),
    )
    children: list[Child] = []

    def on_signal(signum: int, _: object) -> None:
        raise KeyboardInterrupt  # SIGTERM as Ctrl-C, from the start: whatever was started gets stopped

    signal.signal(signal.SIGTERM, on_signal)
    try:
        try:
            servers.start()  # a server that cannot start stops `herald dev` with the server's own error
        except (EmbeddedServerError, RuntimeError, OSError) as exc:
            raise SystemExit(f"herald: {exc}") from None
        database_url, redis_url = servers.database_url, servers.redis_url
        base = f"http://{settings.host}:{settings.port}"
        token, producer = asyncio.run(_prepare(database_url, redis_url))

        env = {
            **os.environ,
            "HERALD_DATABASE_URL": database_url,
            "HERALD_REDIS_URL": redis_url,
            "HERALD_PUBLIC_URL": settings.public_url or base,
            "HERALD_LOG_FORMAT": os.environ.get("HERALD_LOG_FORMAT", "text"),
            "HERALD_DEMO": "1",
        }
        children += [start(part, herald_command(part), env) for part in ("api", "worker")]
        try:
            wait_ready(base + "/readyz", children)
        except NotReady as exc:
            raise SystemExit(f"herald: {exc}; see the lines above") from None
        prefix = dict(settings.profiles).get("qualytics", "/api")
        print(
            f"""
Herald is running at {base}  (OpenAPI: {base}/schema/openapi.json)
The demo bell: {base}/demo?token={token}

  admin token     {token}
  producer token  {producer}

Try it (the welcome notification should be there):
  curl -s -H "Authorization: Bearer {token}" {base}{prefix}/user-notifications

Publish another:
  curl -s -X POST {base}/v1/events -H "Authorization: Bearer {producer}" -H "Content-Type: application/json" \\
    -d '{{"id": "hello-1", "type": "hello", "tenant": "{TENANT}", \\
         "audience": {{"users": ["admin"]}}, "message": "Hello"}}'

Other terminals (herald admin ..., herald publish ...):
  export HERALD_DATABASE_URL={database_url}
  export HERALD_REDIS_URL={redis_url}

Ctrl-C stops Herald{" and its embedded servers" if servers.embedded else ""}.
""",
            flush=True,
        )
        while all(c.proc.poll() is None for c in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, lambda *_: None)  # a second SIGTERM must not cut the cleanup short
        stop(children, timeout=30)
        servers.stop()
