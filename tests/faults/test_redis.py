"""Redis goes away, comes back with its data, or comes back empty: Herald keeps serving what it can
and recovers by itself."""

import time
from pathlib import Path

import httpx
import msgspec
import redis

from service.keys import STREAM
from tests.faults.conftest import Breakable, fault_env, start_herald, stop
from tests.processes import herald, json_line


def publish(url: str, event_id: str, user: str) -> None:
    client = redis.Redis.from_url(url)
    event = {"id": event_id, "type": "t", "tenant": "acme", "audience": {"users": [user]}, "message": event_id}
    client.xadd(STREAM, {"event": msgspec.json.encode(event)})
    client.close()


def until(check, timeout: float = 10.0, what: str = "condition") -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what} not reached within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_redis_outage_degrades_and_recovers(servers, clean: None, private_redis: Breakable, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    env = fault_env(servers.database_url, private_redis.url)
    procs = start_herald(env, "api", "worker", logs=scratch / "logs")
    base = f"http://127.0.0.1:{env['HERALD_PORT']}"
    try:
        token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "ann", env=env))["token"]
        producer = json_line(
            herald("admin", "create-token", "--tenant", "acme", "--user", "svc", "--kind", "producer", env=env)
        )
        h = {"Authorization": f"Bearer {token}"}
        publish(private_redis.url, "before", "ann")
        until(lambda: httpx.get(base + "/v1/unread-count", headers=h).json()["unread_count"] == 1, what="delivery")

        private_redis.stop()
        # The API stays up and says what is wrong.
        assert httpx.get(base + "/healthz", timeout=10).status_code == 200
        started = time.monotonic()
        ready = httpx.get(base + "/readyz", timeout=15)
        assert ready.status_code == 503 and ready.json()["redis"].startswith("unavailable")
        assert ready.json()["postgres"] == "ok" and time.monotonic() - started < 10
        # Publishing answers 503 in a clear body, and nothing is accepted half-way.
        refused = httpx.post(
            base + "/v1/events",
            json={"id": "during", "type": "t", "tenant": "acme", "audience": {"users": ["ann"]}, "message": "m"},
            headers={"Authorization": f"Bearer {producer['token']}"},
            timeout=15,
        )
        assert refused.status_code == 503 and "nothing was queued" in refused.json()["error"]
        # Reads that need only PostgreSQL keep working, the badge included (read from PostgreSQL).
        listed = httpx.get(base + "/api/user-notifications", headers=h, timeout=15)
        assert listed.status_code == 200 and listed.json()["total"] == 1
        assert httpx.get(base + "/v1/unread-count", headers=h, timeout=15).json()["unread_count"] == 1
        row = listed.json()["items"][0]["id"]
        assert httpx.put(f"{base}/api/user-notifications/acknowledge/{row}", headers=h, timeout=15).status_code == 200
        assert httpx.get(base + "/v1/unread-count", headers=h, timeout=15).json()["unread_count"] == 0

        # Redis comes back with its data (AOF): its copy of Ann's count is the old one (1). Herald
        # copies the newer count again by itself, and the worker carries on without a restart.
        private_redis.start()
        until(lambda: httpx.get(base + "/readyz").status_code == 200, what="ready again")
        until(lambda: httpx.get(base + "/v1/unread-count", headers=h).json()["unread_count"] == 0, 5, "repaired count")
        publish(private_redis.url, "after", "ann")
        until(
            lambda: httpx.get(base + "/v1/unread-count", headers=h).json()["unread_count"] == 1, what="delivery after"
        )
        assert all(p.poll() is None for p in procs), "a process died during the outage"

        # Redis restarted empty (no persistence): counts and caches rebuild, consumption resumes.
        private_redis.stop()
        private_redis.start(empty=True)
        until(lambda: httpx.get(base + "/readyz").status_code == 200, what="ready after an empty restart")
        assert httpx.get(base + "/v1/unread-count", headers=h).json()["unread_count"] == 1
        publish(private_redis.url, "after-empty", "ann")
        until(
            lambda: httpx.get(base + "/v1/unread-count", headers=h).json()["unread_count"] == 2,
            15,
            "delivery after empty",
        )
        assert all(p.poll() is None for p in procs), "a process died after the empty restart"
    finally:
        stop(procs)


def test_the_worker_warns_when_redis_does_not_persist(servers, clean: None, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    volatile = Breakable(scratch / "volatile", appendonly=False)
    volatile.start()
    env = fault_env(servers.database_url, volatile.url)
    logs = scratch / "logs"
    procs = start_herald(env, "worker", logs=logs)
    try:
        until(lambda: "persistence is off" in (logs / "worker-0.log").read_text(), what="the warning")
    finally:
        stop(procs)
        volatile.stop()
    persistent = Breakable(scratch / "persistent", appendonly=True)
    persistent.start()
    env = fault_env(servers.database_url, persistent.url)
    procs = start_herald(env, "worker", logs=scratch / "logs2")
    try:
        until(lambda: "worker started" in (scratch / "logs2" / "worker-0.log").read_text(), what="start")
        assert "persistence is off" not in (scratch / "logs2" / "worker-0.log").read_text()
    finally:
        stop(procs)
        persistent.stop()
