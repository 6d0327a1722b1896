"""Herald starts before its backends (a host reboot, compose, Kubernetes): `herald api` and
`herald worker` come up against a port where nothing listens yet, say they are alive but not ready,
and serve normally once the backend answers there, without a restart."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from service.backends import postgres
from service.local.embedded import EmbeddedPostgres, EmbeddedRedis, create_database, free_port
from tests.support.processes import fault_env, herald, json_line, stop
from tests.support.servers import Breakable
from tests.support.waits import until


def start(env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    logs.mkdir(exist_ok=True)
    procs = []
    for part in ("api", "worker"):
        with open(logs / f"{part}.log", "ab") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "service.cli", part], env=env, stderr=log, stdout=log))
    return procs


def status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def alive_not_ready(api: str, worker: str, procs: list[subprocess.Popen[bytes]]) -> None:
    until(lambda: status(api + "/healthz") == 200 and status(worker + "/healthz") == 200, 20, "both alive")
    for _ in range(3):  # and they stay up, not ready, while the backend is away
        assert status(api + "/readyz") == 503 and status(worker + "/readyz") == 503
        assert all(p.poll() is None for p in procs), "a process exited while its backend was away"
        asyncio.run(asyncio.sleep(1))


def serve_an_event(env: dict[str, str], api: str, worker: str) -> None:
    until(lambda: status(api + "/readyz") == 200 and status(worker + "/readyz") == 200, 30, "both ready")
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "cy", env=env))["token"]
    event = b'{"id": "e1", "type": "t", "tenant": "acme", "audience": {"users": ["cy"]}, "message": "hi"}'
    assert herald("publish", "-", env=env, stdin=event).returncode == 0
    h = {"X-API-Key": token}
    until(lambda: httpx.get(api + "/v1/unread-count", headers=h).json().get("unread_count") == 1, 30, "delivery")


def test_start_before_postgres(private_redis: Breakable, scratch: Path) -> None:
    port = free_port()
    database_url = f"postgresql://postgres@127.0.0.1:{port}/herald"
    env = {**fault_env(database_url, private_redis.url), "HERALD_METRICS_PORT": str(free_port())}
    api, worker = f"http://127.0.0.1:{env['HERALD_PORT']}", f"http://127.0.0.1:{env['HERALD_METRICS_PORT']}"
    procs = start(env, scratch / "logs")
    server = EmbeddedPostgres(scratch / "postgres", port=port)
    try:
        alive_not_ready(api, worker, procs)
        asyncio.run(create_database(server.start(), "herald"))
        asyncio.run(postgres.migrate(database_url))
        serve_an_event(env, api, worker)
    finally:
        stop(procs)
        server.stop()


def test_start_before_redis(servers, clean: None, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**fault_env(servers.database_url, f"redis://127.0.0.1:{port}/0"), "HERALD_METRICS_PORT": str(free_port())}
    api, worker = f"http://127.0.0.1:{env['HERALD_PORT']}", f"http://127.0.0.1:{env['HERALD_METRICS_PORT']}"
    procs = start(env, scratch / "logs")
    server = EmbeddedRedis(scratch / "redis", port, appendonly=False)
    try:
        alive_not_ready(api, worker, procs)
        server.start()
        serve_an_event(env, api, worker)
    finally:
        stop(procs)
        server.stop()


def test_a_worker_waiting_for_redis_stops_cleanly_on_sigterm(servers, clean: None, scratch: Path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while the worker still waits for Redis at start: exit 0, promptly (arq's own close
    would fail on the unreachable Redis and skip the shutdown hook)."""
    env = {
        **fault_env(servers.database_url, f"redis://127.0.0.1:{free_port()}/0"),
        "HERALD_METRICS_PORT": str(free_port()),
    }
    with open(scratch / "worker.log", "ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "service.cli", "worker"], env=env, stderr=log, stdout=log)
    try:
        until(lambda: status(f"http://127.0.0.1:{env['HERALD_METRICS_PORT']}/healthz") == 200, 20, "alive")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, (scratch / "worker.log").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
