"""The servers and processes a run needs, all started here and all stopped at the end.

PostgreSQL and Redis are the project's embedded ones (as `make test` uses) unless
HERALD_BENCH_DATABASE_URL / HERALD_BENCH_REDIS_URL name existing servers. Either way the
database is wiped at start and the Redis database is flushed (FLUSHDB of that database only).
Herald runs the way production does: `herald api --workers 2` (granian) and `herald worker`
processes, each its own OS process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from service.local.embedded import free_port
from service.local.harness import Child, Servers, herald_command, herald_env, start, stop, wait_ready

API_WORKERS = 2  # granian workers, for `herald api` and for the bare route alike (one per core)
WORKERS = 2  # `herald worker` processes: what a 2-core host runs (deploy/compose.yaml runs two)
# The API accepts HS256 user tokens signed with this (the badge figure mints one); 32 bytes at least.
JWT_SECRET = "herald-bench-signed-user-tokens-0123456789"  # noqa: S105 - a throwaway bench secret


def start_servers() -> Servers:
    """PostgreSQL and Redis, started (see the module's docstring); the Redis database flushed."""
    servers = Servers.from_env(
        "BENCH",
        database="herald_bench",
        fresh=True,
        # Append-only file on, as production runs it (docs/operations.md, "Redis must persist"), with Valkey's
        # default appendfsync everysec: the fsync happens off the request path.
        appendonly=True,
        note=lambda placement: print(f"bench: {placement}", flush=True),  # root, with the venv in a private checkout
    ).start()
    try:
        asyncio.run(_flush(servers.redis_url))
    except BaseException:
        servers.stop()
        raise
    return servers


async def _flush(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


class Processes:
    """Child processes (Herald's, the bare route's, the Django peer's), their logs in the run's
    directory."""

    def __init__(self, servers: Servers) -> None:
        self.servers = servers
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._started: dict[str, Child] = {}
        self.urls: dict[str, str] = {}
        self.env = herald_env(
            servers,
            log_format="json",
            # Every benchmark client uses one token per user at thousands of requests per second,
            # far beyond the per-token read limit (1,000/s by default) meant for one client. The limiter
            # still runs on every request (so its cost is measured); it just never refuses.
            rate_limit_reads="1000000",
            rate_limit_publishes="10000000",
            # The webhooks figure's receiver runs on this machine (127.0.0.1).
            webhook_allow_private="1",
        )

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> Child:
        """Start `args` as child `name` (a process group of its own, output in <name>.log in the
        run's directory); `stop` ends it with the rest."""
        child = start(name, args, env, log=self.servers.directory() / f"{name}.log", session=True)
        self._started[name] = child
        self.children[name] = child.proc
        return child

    def api(self) -> str:
        """`herald api --workers 2`; returns its base URL once /readyz answers 200."""
        if "api" in self.children:
            return self.urls["api"]
        port = free_port()
        env = {**self.env, "HERALD_PORT": str(port), "HERALD_JWT_SECRET": JWT_SECRET}
        base = f"http://127.0.0.1:{port}"
        child = self.spawn("api", herald_command("api", "--workers", str(API_WORKERS)), env)
        wait_ready(base + "/readyz", [child])
        self.urls["api"] = base
        return base

    def bare(self) -> str:
        """The bare Litestar route (bench/bare.py) on the same granian settings; its base URL."""
        if "bare" in self.children:
            return self.urls["bare"]
        port = free_port()
        env = {
            **self.env,
            "BENCH_BARE_REDIS_URL": self.servers.redis_url,
            "BENCH_BARE_DATABASE_URL": self.servers.database_url,
        }
        args = [sys.executable, "-m", "bench.bare", "--port", str(port), "--workers", str(API_WORKERS)]
        child = self.spawn("bare", args, env)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base + "/nothing", [child])
        self.urls["bare"] = base
        return base

    def workers(self, count: int = WORKERS) -> list[int]:
        """`herald worker` processes (started once); their pids."""
        started = []
        for i in range(count):
            name = f"worker{i}"
            if name not in self._started:
                # Each worker's own /metrics (workers/health.py), for figures that read what it did.
                port = free_port()
                self.urls[name] = f"http://127.0.0.1:{port}"
                self.spawn(name, herald_command("worker"), {**self.env, "HERALD_METRICS_PORT": str(port)})
            started.append(self._started[name])
        time.sleep(1.5)  # arq connects and the consumer joins the group
        for child in started:
            if child.proc.poll() is not None:
                raise RuntimeError(f"herald {child.name} exited at start{child.where()}")
        return [child.proc.pid for child in started]

    def stop(self, name: str | None = None) -> None:
        names = [name] if name else list(self._started)
        stop([self._started.pop(n) for n in names if n in self._started], timeout=40)
        for n in names:
            self.children.pop(n, None)
            if n.startswith("worker"):
                self.urls.pop(n, None)


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a process and, added, of its children, in MB."""
    return tree_memory_mb(pid, "VmHWM")


def tree_memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A /proc/<pid>/status memory field (VmRSS: now, VmHWM: peak) of a process and, added, of its
    descendants, in MB."""
    total = 0
    pids = [pid]
    while pids:
        p = pids.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])  # kB
            for task in Path(f"/proc/{p}/task").iterdir():
                with contextlib.suppress(OSError):
                    pids += [int(c) for c in (task / "children").read_text().split()]
    return total / 1024


async def machine(servers: Servers) -> dict[str, str]:
    conn = await asyncpg.connect(servers.database_url)
    try:
        pg_version = await conn.fetchval("SHOW server_version")
        fsync = await conn.fetchval("SHOW fsync")
        sync_commit = await conn.fetchval("SHOW synchronous_commit")
        shared = await conn.fetchval("SHOW shared_buffers")
    finally:
        await conn.close()
    client = aioredis.Redis.from_url(servers.redis_url)
    try:
        info = await client.info("server")
        persistence = await client.info("persistence")
    finally:
        await client.aclose()
    redis_name = "Valkey" if "valkey_version" in info else "Redis"
    redis_version = str(info.get("valkey_version") or info.get("redis_version"))
    wrk = shutil.which("wrk")
    wrk_version = "missing"
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        wrk_version = (out.stdout + out.stderr).split()[1] if (out.stdout + out.stderr).split() else "?"
    return {
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "PostgreSQL": f"{pg_version} ({'embedded' if servers.postgres else 'external'}; fsync={fsync}, "
        f"synchronous_commit={sync_commit}, shared_buffers={shared})",
        "Redis": f"{redis_name} {redis_version} ({'embedded' if servers.redis else 'external'}; "
        f"appendonly={'yes' if persistence.get('aof_enabled') else 'no'})",
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "wrk": wrk_version,
        "kernel": platform.release(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"
