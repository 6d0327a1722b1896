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
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg

from service import admin
from service import intake as stream
from service.backends import postgres as db
from service.backends import redis as cache
from service.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError, create_database
from service.model import decode_events
from service.settings import Settings

TENANT = "demo"


async def _prepare(database_url: str, redis_url: str) -> tuple[str, str]:
    await db.migrate(database_url)
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
    client = cache.connect(redis_url)
    try:
        await stream.enqueue(client, decode_events(welcome))
    finally:
        await client.aclose()
    return made.token, producer


def _wait_ready(url: str, children: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(c.poll() is not None for c in children):
            raise SystemExit("herald: a child process exited during start; see the lines above")
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/readyz", timeout=1) as reply:  # noqa: S310
            if reply.status == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"herald: the API did not become ready within {timeout:.0f} s")


def _start_servers(settings: Settings, root: Path, servers: list[EmbeddedPostgres | EmbeddedRedis]) -> tuple[str, str]:
    """The two URLs: the configured ones, or embedded servers' (appended to `servers`). A server
    that cannot start stops `herald dev` with one message carrying the server's own error."""
    try:
        database_url = settings.database_url
        if not database_url:
            pg = EmbeddedPostgres(root / "postgres")
            if pg.placement:
                print(f"herald: {pg.placement}", flush=True)
            servers.append(pg)
            database_url = asyncio.run(create_database(pg.start(), "herald"))
        redis_url = settings.redis_url
        if not redis_url:
            rd = EmbeddedRedis(root / "redis")
            servers.append(rd)
            redis_url = rd.start()
    except (EmbeddedServerError, RuntimeError, OSError) as exc:
        raise SystemExit(f"herald: {exc}") from None
    return database_url, redis_url


def run_dev(settings: Settings, state_dir: str = ".herald") -> None:
    root = Path(state_dir)
    servers: list[EmbeddedPostgres | EmbeddedRedis] = []
    children: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, _: object) -> None:
        raise KeyboardInterrupt  # SIGTERM as Ctrl-C, from the start: whatever was started gets stopped

    signal.signal(signal.SIGTERM, on_signal)
    try:
        database_url, redis_url = _start_servers(settings, root, servers)
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
        for part in ("api", "worker"):
            children.append(subprocess.Popen([sys.executable, "-m", "service.cli", part], env=env))
        _wait_ready(base, children)
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

Ctrl-C stops Herald{" and its embedded servers" if servers else ""}.
""",
            flush=True,
        )
        while all(c.poll() is None for c in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, lambda *_: None)  # a second SIGTERM must not cut the cleanup short
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
        for server in reversed(servers):
            server.stop()
