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
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from service.local.embedded import EmbeddedPostgres, EmbeddedRedis, create_database, free_port, fresh_schema

API_WORKERS = 2  # granian workers, for `herald api` and for the bare route alike (one per core)
WORKERS = 2  # `herald worker` processes: what a 2-core host runs (deploy/compose.yaml runs two)
# The API accepts HS256 user tokens signed with this (the badge figure mints one); 32 bytes at least.
JWT_SECRET = "herald-bench-signed-user-tokens-0123456789"  # noqa: S105 - a throwaway bench secret


class Servers:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="herald-bench-"))
        self.root.chmod(0o755)  # the embedded PostgreSQL may run as another user
        self.started: list[EmbeddedPostgres | EmbeddedRedis] = []
        self.embedded_pg = False
        self.embedded_redis = False
        self.database_url = ""
        self.redis_url = ""

    def start(self) -> None:
        database_url = os.environ.get("HERALD_BENCH_DATABASE_URL")
        if not database_url:
            pg = EmbeddedPostgres(self.root / "postgres")
            if pg.placement:  # root, with the venv (the binaries) in a private checkout
                print(f"bench: {pg.placement}", flush=True)
            self.started.append(pg)
            self.embedded_pg = True
            database_url = asyncio.run(create_database(pg.start(), "herald_bench", fresh=True))
        self.database_url = database_url
        asyncio.run(fresh_schema(database_url))
        redis_url = os.environ.get("HERALD_BENCH_REDIS_URL")
        if not redis_url:
            # Append-only file on, as production runs it (README "Redis must persist"), with
            # Valkey's default appendfsync everysec: the fsync happens off the request path.
            rd = EmbeddedRedis(self.root / "redis", appendonly=True)
            self.started.append(rd)
            self.embedded_redis = True
            redis_url = rd.start()
        self.redis_url = redis_url
        asyncio.run(_flush(redis_url))

    def stop(self) -> None:
        for server in reversed(self.started):
            server.stop()
        self.started.clear()
        shutil.rmtree(self.root, ignore_errors=True)


async def _flush(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


class Processes:
    """Child processes (Herald's and the bare route's), their logs in the run's directory."""

    def __init__(self, servers: Servers) -> None:
        self.servers = servers
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: dict[str, str] = {}
        self.env = {
            **os.environ,
            "HERALD_DATABASE_URL": servers.database_url,
            "HERALD_REDIS_URL": servers.redis_url,
            "HERALD_LOG_FORMAT": "json",
            # Every benchmark client uses one token per user at thousands of requests per second,
            # far beyond the per-token read limit (1,000/s by default) meant for one client. The limiter
            # still runs on every request (so its cost is measured); it just never refuses.
            "HERALD_RATE_LIMIT_READS": "1000000",
            "HERALD_RATE_LIMIT_PUBLISHES": "10000000",
        }

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.servers.root / f"{name}.log", "ab")  # noqa: SIM115 - held by the child
        child = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.children[name] = child
        return child

    def api(self) -> str:
        """`herald api --workers 2`; returns its base URL once /readyz answers 200."""
        if "api" in self.children:
            return self.urls["api"]
        port = free_port()
        env = {**self.env, "HERALD_PORT": str(port), "HERALD_JWT_SECRET": JWT_SECRET}
        base = f"http://127.0.0.1:{port}"
        child = self._spawn("api", [sys.executable, "-m", "service.cli", "api", "--workers", str(API_WORKERS)], env)
        _wait_http(base + "/readyz", child, self.servers.root / "api.log")
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
        child = self._spawn("bare", args, env)
        base = f"http://127.0.0.1:{port}"
        _wait_http(base + "/nothing", child, self.servers.root / "bare.log")
        self.urls["bare"] = base
        return base

    def workers(self, count: int = WORKERS) -> list[int]:
        """`herald worker` processes (started once); their pids."""
        pids = []
        for i in range(count):
            name = f"worker{i}"
            child = self.children.get(name) or self._spawn(
                name, [sys.executable, "-m", "service.cli", "worker"], self.env
            )
            pids.append(child.pid)
        time.sleep(1.5)  # arq connects and the consumer joins the group
        for i in range(count):
            if self.children[f"worker{i}"].poll() is not None:
                raise RuntimeError(f"herald worker exited at start; see {self.servers.root / f'worker{i}.log'}")
        return pids

    def stop(self, name: str | None = None) -> None:
        names = [name] if name else list(self.children)
        for n in names:
            child = self.children.get(n)
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for n in names:
            child = self.children.pop(n, None)
            if child is None:
                continue
            try:
                child.wait(40)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait(5)


def _wait_http(url: str, child: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"{child.args!r} exited at start; see {log}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310
            if reply.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s; see {log}")


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
        "PostgreSQL": f"{pg_version} ({'embedded' if servers.embedded_pg else 'external'}; fsync={fsync}, "
        f"synchronous_commit={sync_commit}, shared_buffers={shared})",
        "Redis": f"{redis_name} {redis_version} ({'embedded' if servers.embedded_redis else 'external'}; "
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
