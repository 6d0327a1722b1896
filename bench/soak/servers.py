"""The servers and Herald processes of a soak, and what /proc says about them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

from service.local.embedded import EmbeddedPostgres, EmbeddedRedis, create_database, free_port

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


async def ensure_database(url: str) -> str:
    """The database the URL names (`heraldsoak` when it names none), created first if missing."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "heraldsoak"
    return await create_database(urlunsplit(parts._replace(path="/postgres")), name)


@dataclass
class Servers:
    """PostgreSQL and Redis: embedded ones in a temporary directory, or the ones named."""

    database_url: str = ""
    redis_url: str = ""
    embedded: list[EmbeddedPostgres | EmbeddedRedis] = field(default_factory=list)
    scratch: tempfile.TemporaryDirectory[str] | None = None
    postgres_pid: int | None = None
    redis_pid: int | None = None

    @classmethod
    def start(cls) -> Servers:
        s = cls()
        try:
            database_url = os.environ.get("HERALD_SOAK_DATABASE_URL", "")
            redis_url = os.environ.get("HERALD_SOAK_REDIS_URL", "")
            if not (database_url and redis_url):
                s.scratch = tempfile.TemporaryDirectory(prefix="herald-soak-")
                Path(s.scratch.name).chmod(0o755)  # the embedded PostgreSQL may run as another user
            if database_url:
                s.database_url = asyncio.run(ensure_database(database_url))
            else:
                assert s.scratch is not None
                pg = EmbeddedPostgres(Path(s.scratch.name) / "postgres")
                if pg.placement:  # root, with the venv (the binaries) in a private checkout
                    print(f"soak: {pg.placement}", flush=True)
                s.embedded.append(pg)
                s.database_url = asyncio.run(ensure_database(pg.start().rsplit("/", 1)[0] + "/heraldsoak"))
                with contextlib.suppress(OSError, ValueError):
                    s.postgres_pid = int((pg.data / "postmaster.pid").read_text().split()[0])
            if redis_url:
                if int(urlsplit(redis_url).path.lstrip("/") or 0) == 0:
                    raise SystemExit("soak: HERALD_SOAK_REDIS_URL must name a database other than 0 (it is flushed)")
                s.redis_url = redis_url
            else:
                assert s.scratch is not None
                rd = EmbeddedRedis(Path(s.scratch.name) / "redis")
                s.embedded.append(rd)
                s.redis_url = rd.start()
                if rd._process is not None:
                    s.redis_pid = rd._process.pid
        except BaseException:
            s.stop()
            raise
        return s

    @property
    def database_name(self) -> str:
        return urlsplit(self.database_url).path.lstrip("/")

    @property
    def redis_db(self) -> int:
        return int(urlsplit(self.redis_url).path.lstrip("/") or 0)

    def stop(self) -> None:
        for server in reversed(self.embedded):
            with contextlib.suppress(Exception):
                server.stop()
        self.embedded.clear()
        if self.scratch is not None:
            with contextlib.suppress(OSError):
                self.scratch.cleanup()
            self.scratch = None


@dataclass
class Part:
    """One `herald <role>` process we started."""

    name: str  # api, worker-1, ...
    proc: subprocess.Popen[bytes]
    log: Path


class Herald:
    """`herald api --workers N` and `herald worker` processes, with their logs in `logs/`."""

    def __init__(self, servers: Servers, logs: Path, *, api_workers: int, workers: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logs = logs
        self.api_workers = api_workers
        self.workers = workers
        self.env = {
            **os.environ,
            "HERALD_DATABASE_URL": servers.database_url,
            "HERALD_REDIS_URL": servers.redis_url,
            "HERALD_PORT": str(self.port),
            "HERALD_LOG_FORMAT": "json",
            # The soak measures capacity, not the per-token limits (see the report's settings).
            "HERALD_RATE_LIMIT_READS": "0",
            "HERALD_RATE_LIMIT_PUBLISHES": "0",
        }
        self.parts: list[Part] = []

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", *args], env=self.env, capture_output=True, timeout=120, check=True
        )

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        roles = [("api", ["api", "--workers", str(self.api_workers)])]
        roles += [(f"worker-{n + 1}", ["worker"]) for n in range(self.workers)]
        for name, args in roles:
            path = self.logs / f"{name}.log"
            with open(path, "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "service.cli", *args], env=self.env, stdout=log, stderr=log
                )
            self.parts.append(Part(name, proc, path))
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for part in self.parts:
                if part.proc.poll() is not None:
                    raise RuntimeError(f"herald {part.name} exited during start; see {part.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/readyz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not become ready within {timeout:.0f} s")
            time.sleep(0.2)

    def alive(self) -> list[str]:
        """Names of parts that have exited (none, while all is well)."""
        return [p.name for p in self.parts if p.proc.poll() is not None]

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every part, wait up to 40 s, then kill; their exit statuses."""
        for part in self.parts:
            if part.proc.poll() is None:
                part.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 40
        for part in self.parts:
            try:
                part.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for pid in reversed(tree(part.proc.pid)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                part.proc.wait(5)
        return {p.name: p.proc.returncode for p in self.parts}


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(pid: int) -> list[int]:
    """The process and all its descendants, parents first."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(sorted(kids.get(p, [])))
    return out


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / TICKS, total / TICKS
