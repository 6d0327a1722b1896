"""The one harness: PostgreSQL and Redis (the URLs given, or embedded servers), Herald's processes
started with their logs in files, and the wait until the API is ready.

`herald dev`, the tests, the benchmarks and the soak all start what they need here (asyncpg's
`cluster.py` is the model), so a fix to how a server starts or a child is waited for is made once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.local.embedded import EmbeddedPostgres, EmbeddedRedis, create_database, fresh_schema


@dataclass
class Servers:
    """PostgreSQL and Redis: `database_url` / `redis_url` when given, embedded servers under `root`
    otherwise (a temporary directory, removed at `stop`, when `root` is None).

    An embedded PostgreSQL gets a database `database` (dropped first when `fresh`); `fresh` also
    empties the database, given or embedded, and applies the schema: the tests' and benchmarks' own
    databases, never one a user named. `note` hears the one line saying where PostgreSQL's files
    went when they had to move (see EmbeddedPostgres.placement).
    """

    database_url: str = ""
    redis_url: str = ""
    root: Path | None = None
    database: str = "herald"
    fresh: bool = False
    appendonly: bool = True
    note: Callable[[str], None] | None = None
    postgres: EmbeddedPostgres | None = field(default=None, init=False)
    redis: EmbeddedRedis | None = field(default=None, init=False)
    _scratch: Path | None = field(default=None, init=False)

    @classmethod
    def from_env(cls, name: str, **options: Any) -> Servers:
        """The servers HERALD_<name>_DATABASE_URL and HERALD_<name>_REDIS_URL name; embedded ones for
        those unset (TEST for the tests, BENCH for the benchmarks, SOAK for the soak)."""
        return cls(
            database_url=os.environ.get(f"HERALD_{name}_DATABASE_URL", ""),
            redis_url=os.environ.get(f"HERALD_{name}_REDIS_URL", ""),
            **options,
        )

    def start(self) -> Servers:
        """Start what was not given; on failure, stop what was started and raise (the embedded
        server's own words are in EmbeddedServerError's message)."""
        try:
            if not self.database_url:
                self.postgres = EmbeddedPostgres(self.directory() / "postgres")
                if self.postgres.placement and self.note is not None:
                    self.note(self.postgres.placement)
                server = self.postgres.start()
                self.database_url = asyncio.run(create_database(server, self.database, fresh=self.fresh))
            if self.fresh:
                asyncio.run(fresh_schema(self.database_url))
            if not self.redis_url:
                self.redis = EmbeddedRedis(self.directory() / "redis", appendonly=self.appendonly)
                self.redis_url = self.redis.start()
        except BaseException:
            self.stop()
            raise
        return self

    def directory(self) -> Path:
        """The run's directory (embedded servers' files, logs): `root`, or a temporary one made on
        first use and removed at `stop`."""
        if self.root is None:
            self._scratch = self.root = Path(tempfile.mkdtemp(prefix="herald-"))
            self.root.chmod(0o755)  # the embedded PostgreSQL may run as another user
        return self.root

    @property
    def embedded(self) -> bool:
        return self.postgres is not None or self.redis is not None

    @property
    def postgres_pid(self) -> int | None:
        """The embedded PostgreSQL's postmaster (None when it is not ours)."""
        if self.postgres is None:
            return None
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.postgres.data / "postmaster.pid").read_text().split()[0])
        return None

    @property
    def redis_pid(self) -> int | None:
        return self.redis.pid if self.redis is not None else None

    def stop(self) -> None:
        for server in (self.redis, self.postgres):
            if server is not None:
                server.stop()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def herald_command(*args: str) -> list[str]:
    """`herald <args>` as this interpreter runs it (the venv's, whatever PATH says)."""
    return [sys.executable, "-m", "service.cli", *args]


@dataclass
class Child:
    """One process we started; `log` is where its output goes (None: our own terminal)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path | None = None

    def where(self) -> str:
        return f"; see {self.log}" if self.log is not None else ""


def start(
    name: str, argv: Sequence[str], env: Mapping[str, str], *, log: Path | None = None, session: bool = False
) -> Child:
    """Start `argv`; its stdout and stderr go to `log` (appended) when given. `session`: a process
    group of its own, so `stop` can kill its children too (granian's workers) and Ctrl-C on our
    terminal does not reach it."""
    if log is None:
        return Child(name, subprocess.Popen(argv, env=dict(env), start_new_session=session))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=session)
    return Child(name, proc, log)


class NotReady(RuntimeError):
    """A child exited during start, or the URL did not answer 200 in time."""


def wait_ready(url: str, children: Iterable[Child], timeout: float = 30) -> None:
    """Until `url` (the API's /readyz) answers 200; fails fast, naming the child that exited and its log."""
    watched = list(children)
    deadline = time.monotonic() + timeout
    while True:
        for child in watched:
            if child.proc.poll() is not None:
                raise NotReady(f"{child.name} exited during start with status {child.proc.returncode}{child.where()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as reply:  # noqa: S310
            if reply.status == 200:
                return
        if time.monotonic() > deadline:
            logs = ", ".join(str(c.log) for c in watched if c.log is not None)
            raise NotReady(f"{url} did not answer 200 within {timeout:.0f} s" + (f"; see {logs}" if logs else ""))
        time.sleep(0.1)


def stop(children: Iterable[Child], timeout: float = 30) -> list[Child]:
    """SIGTERM every child, wait up to `timeout` s in all, then kill (its whole group when it has one
    of its own); returns the children that had to be killed."""
    watched = list(children)
    for child in watched:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    killed = []
    for child in watched:
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed.append(child)
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(child.proc.pid) == child.proc.pid:
                    os.killpg(child.proc.pid, signal.SIGKILL)
                else:
                    child.proc.kill()
            child.proc.wait(5)
    return killed


def herald_env(servers: Servers, **settings: str) -> dict[str, str]:
    """This process's environment, pointed at `servers`, with HERALD_<NAME> settings added."""
    return {
        **os.environ,
        "HERALD_DATABASE_URL": servers.database_url,
        "HERALD_REDIS_URL": servers.redis_url,
        **{f"HERALD_{name.upper()}": value for name, value in settings.items()},
    }
