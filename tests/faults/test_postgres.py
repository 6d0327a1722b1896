"""PostgreSQL goes away for a while: readers get a quick 503 in their profile's envelope, events
wait on the stream, nothing is lost, and everything recovers without a restart."""

import time
from pathlib import Path

import httpx
import redis

from service.keys import GROUP, STREAM
from service.local.embedded import EmbeddedPostgres
from tests.support.factories import publish
from tests.support.processes import fault_env, herald, json_line, start_herald, stop
from tests.support.waits import until


def test_a_postgres_outage_answers_503_and_loses_nothing(
    servers,
    private_postgres: tuple[EmbeddedPostgres, str],
    scratch: Path,  # type: ignore[no-untyped-def]
) -> None:
    server, database_url = private_postgres
    redis_url = servers.redis_url
    redis.Redis.from_url(redis_url).flushdb()
    env = fault_env(database_url, redis_url)
    procs = start_herald(env, "api", "worker", logs=scratch / "logs")
    base = f"http://127.0.0.1:{env['HERALD_PORT']}"
    try:
        token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "bea", env=env))["token"]
        h = {"X-API-Key": token}
        publish(redis_url, "before", "bea")
        until(lambda: httpx.get(base + "/api/user-notifications", headers=h).json()["total"] == 1, what="delivery")

        server.stop()
        for path, shape in [
            ("/api/user-notifications", lambda body: isinstance(body["detail"], str)),
            ("/v1/notifications", lambda body: body["success"] is False and body["error"]),
            ("/aptly/v1/notifications?tenantId=acme", lambda body: body["statusCode"] == 503 and body["data"] is None),
        ]:
            started = time.monotonic()
            reply = httpx.get(base + path, headers=h, timeout=15)
            assert reply.status_code == 503, (path, reply.text)
            assert shape(reply.json()), reply.text
            assert time.monotonic() - started < 10, f"{path} took too long to give up"
        assert httpx.get(base + "/readyz", timeout=15).json()["postgres"].startswith("unavailable")
        # An event published meanwhile waits on the stream, pending, and is not dead-lettered.
        publish(redis_url, "during", "bea")
        r = redis.Redis.from_url(redis_url)
        until(lambda: r.xpending(STREAM, GROUP)["pending"] == 1, what="the event pending")
        time.sleep(2)
        assert r.xlen("herald:events:dead") == 0 and r.xpending(STREAM, GROUP)["pending"] == 1

        server.start()
        until(lambda: httpx.get(base + "/readyz").status_code == 200, 20, "ready again")
        until(
            lambda: httpx.get(base + "/api/user-notifications", headers=h).json().get("total") == 2,
            30,
            "the pending event",
        )
        assert r.xpending(STREAM, GROUP)["pending"] == 0 and r.xlen("herald:events:dead") == 0
        assert all(p.poll() is None for p in procs), "a process died during the outage"
        r.close()
    finally:
        stop(procs)
