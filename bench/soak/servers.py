"""The servers and Herald processes of a soak, and what /proc says about them."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from service.local.embedded import create_database, free_port
from service.local.harness import Child, Servers, herald_command, herald_env, start, stop, wait_ready

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


async def ensure_database(url: str) -> str:
    """The database the URL names (`heraldsoak` when it names none), created first if missing."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "heraldsoak"
    return await create_database(urlunsplit(parts._replace(path="/postgres")), name)


def start_servers() -> Servers:
    """PostgreSQL and Redis: the ones HERALD_SOAK_DATABASE_URL / HERALD_SOAK_REDIS_URL name, or
    embedded ones in a temporary directory."""
    servers = Servers.from_env(
        "SOAK",
        database="heraldsoak",
        note=lambda placement: print(f"soak: {placement}", flush=True),  # root, with the venv in a private checkout
    )
    if servers.redis_url and redis_db(servers.redis_url) == 0:
        raise SystemExit("soak: HERALD_SOAK_REDIS_URL must name a database other than 0 (it is flushed)")
    if servers.database_url:
        servers.database_url = asyncio.run(ensure_database(servers.database_url))
    return servers.start()


def database_name(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def redis_db(url: str) -> int:
    return int(urlsplit(url).path.lstrip("/") or 0)


class Herald:
    """`herald api --workers N` and `herald worker` processes, with their logs in `logs/`."""

    def __init__(self, servers: Servers, logs: Path, *, api_workers: int, workers: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.logs = logs
        self.api_workers = api_workers
        self.workers = workers
        self.env = herald_env(
            servers,
            port=str(self.port),
            log_format="json",
            # The soak measures capacity, not the per-token limits (see the report's settings).
            rate_limit_reads="0",
            rate_limit_publishes="0",
        )
        self.parts: list[Child] = []

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(herald_command(*args), env=self.env, capture_output=True, timeout=120, check=True)

    def start(self) -> None:
        roles = [("api", ["api", "--workers", str(self.api_workers)])]
        roles += [(f"worker-{n + 1}", ["worker"]) for n in range(self.workers)]
        for name, args in roles:
            self.parts.append(start(name, herald_command(*args), self.env, log=self.logs / f"{name}.log", session=True))
        wait_ready(self.base + "/readyz", self.parts, timeout=60)

    def alive(self) -> list[str]:
        """Names of parts that have exited (none, while all is well)."""
        return [p.name for p in self.parts if p.proc.poll() is not None]

    def stop(self) -> dict[str, int | None]:
        """SIGTERM every part, wait up to 40 s, then kill; their exit statuses."""
        stop(self.parts, timeout=40)
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
