"""The peer Herald is measured against in the same run: django-notifications-hq 1.8.3.

The Django project in bench/peer/ (settings, the library's own URLs, commands that seed users and
notifications and time a fan-out) runs in a virtual environment of its own, bench/peer/.venv, built
here on first use with this interpreter and pip from the package index: Django 4.2 LTS (1.8.3 fails
at import on Django 5.1+), psycopg 3, gunicorn. It is never a dependency of Herald and Herald never
imports it. Each run gives it a fresh database of its own on the bench's PostgreSQL server and
serves it with gunicorn, 2 sync workers, as one of the run's child processes.

Each figure of the peer is taken as Herald's own is: the badge (`api/unread_count/`) and the lists
(`api/unread_list/?max=12` beside Herald's 12-item page, `api/all_list/?max=50` beside its 50-item
page) with the same wrk flags, for users holding as many notifications, each logged in through
Django's login view (the session cookie goes to wrk as a header); the fan-out is `notify.send` to a
queryset of as many users as Herald's, inside one `transaction.atomic()`, in rows/s.

When the peer cannot be installed or started, every row that compares with it says why and is
skipped, never filled in from another run; Herald's own rows are unaffected. A failure while
measuring it skips that row alone, its traceback printed and noted.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec

from bench import load
from bench.report import Skipped
from bench.seed import say
from service.local.embedded import create_database, free_port
from service.local.harness import NotReady, wait_ready

if TYPE_CHECKING:
    from bench.base import Bench
    from bench.env import Processes

PEER = "django-notifications-hq 1.8.3"
AT_LEAST = 10.0  # Herald's badge, lists and fan-out against the peer's
TARGET = "≥ 10× Django peer"
HOME = Path(__file__).resolve().parent / "peer"
VENV = HOME / ".venv"
REQUIREMENTS = HOME / "requirements.txt"
DATABASE = "herald_bench_peer"
WORKERS = 2  # gunicorn sync workers: one per core, as `herald api` runs two granian workers
PASSWORD = "herald-bench-peer"  # noqa: S105 - the seeded readers' password, on a loopback server

BADGE = "/inbox/notifications/api/unread_count/"
UNREAD_LIST = "/inbox/notifications/api/unread_list/?max="
ALL_LIST = "/inbox/notifications/api/all_list/?max="
_LOGIN = "/accounts/login/"
_FANOUT_USERS = "fan"  # the fan-out's recipients are users fan1 … fanN
_VERSIONS = (
    "import importlib.metadata as m, platform; "
    "print(', '.join(f'{n} {m.version(n)}' for n in ('django-notifications-hq', 'Django', 'psycopg', 'gunicorn')), "
    "f'(Python {platform.python_version()})')"
)
_NOT_INSTALLED = "could not be installed"
_NOT_STARTED = "did not start"
_INSTALL_TIMEOUT = 900.0
_COMMAND_TIMEOUT = 1800.0  # a fan-out of 1,000,000 at the peer's ~3,000 rows/s would take 6 minutes


class PeerUnavailable(RuntimeError):
    """The peer could not be installed or started: `short` says which (for the table), the message
    also why (for the notes)."""

    def __init__(self, short: str, why: str) -> None:
        super().__init__(f"{short}: {why}")
        self.short = short


class FanoutTimed(msgspec.Struct, frozen=True):
    """What `manage.py fanout` prints."""

    rows: int
    seconds: float


def reason(output: str, limit: int = 120) -> str:
    """The line of a failed command's output that says why: its last line that is neither empty nor
    pip's noise (its WARNING lines), cut to `limit` characters."""
    lines = [line.strip() for line in output.splitlines()]
    said = [line for line in lines if line and not line.startswith("WARNING:")]
    if not said:
        return "no output"
    last = said[-1]
    return last if len(last) <= limit else last[: limit - 1] + "…"


def _stamp() -> Path:
    """Names what the venv was built from (the requirements, this interpreter): either changing
    rebuilds it."""
    made_from = REQUIREMENTS.read_bytes() + sys.version.encode() + sys.base_prefix.encode()
    return VENV / f".installed-{hashlib.sha256(made_from).hexdigest()[:12]}"


def install() -> Path:
    """bench/peer/.venv's python; the venv is (re)built first unless it was built from these
    requirements by this interpreter."""
    python = VENV / "bin" / "python"
    stamp = _stamp()
    if stamp.exists() and python.exists():
        return python
    say(f"building bench/peer/.venv for {PEER} (once; pip from the package index)")
    steps = (
        [sys.executable, "-m", "venv", "--clear", str(VENV)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
    )
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PeerUnavailable(_NOT_INSTALLED, str(exc)) from exc
        if done.returncode != 0:
            raise PeerUnavailable(_NOT_INSTALLED, reason(done.stdout + "\n" + done.stderr))
    stamp.touch()
    return python


class Peer:
    """The peer for one run: venv, database, server and readers, each made on first use. Its
    gunicorn is one of the run's children, stopped with them. Once it failed to install or start,
    every later call raises the same PeerUnavailable."""

    def __init__(self, procs: Processes, note: Callable[[str], None]) -> None:
        self.procs = procs
        self.note = note
        self.url = ""
        self._python = VENV / "bin" / "python"
        self._env: dict[str, str] = {}
        self._failed: PeerUnavailable | None = None
        self._readers: dict[str, dict[str, str]] = {}
        self._fanned = False

    async def start(self) -> str:
        """The peer's base URL, once its venv is built, its fresh database migrated and gunicorn
        answers."""
        if self._failed is not None:
            raise self._failed
        if not self.url:
            try:
                versions = await self._start()
            except PeerUnavailable as exc:
                self._failed = exc
                self.note(f"Django peer ({PEER}) {exc}; the rows comparing with it are skipped")
                raise
            self.note(
                f"Django peer: {versions}, in bench/peer/.venv; gunicorn with {WORKERS} sync workers, its own "
                "database on the same PostgreSQL server, persistent connections (CONN_MAX_AGE 600), DEBUG off; each "
                "reader logged in through Django's login view and sent its session cookie"
            )
        return self.url

    async def _start(self) -> str:
        self._python = install()
        database_url = await create_database(self.procs.servers.database_url, DATABASE, fresh=True)
        self._env = {**os.environ, "PEER_DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "peerbench.settings"}
        try:
            versions = self._run("python", [str(self._python), "-c", _VERSIONS]).strip()
            self._manage("migrate", "--verbosity", "0")
        except RuntimeError as exc:
            raise PeerUnavailable(_NOT_STARTED, reason(str(exc))) from exc
        port = free_port()
        gunicorn = [
            *(str(VENV / "bin" / "gunicorn"), "--chdir", str(HOME), "--bind", f"127.0.0.1:{port}"),
            *("--workers", str(WORKERS), "--worker-class", "sync", "peerbench.wsgi:application"),
        ]
        child = self.procs.spawn("peer", gunicorn, self._env)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base + BADGE, [child])  # answers anyone: 0 for a caller not logged in
        except NotReady as exc:
            raise PeerUnavailable(_NOT_STARTED, f"gunicorn: {exc}") from exc
        self.url = base
        return versions

    def _run(self, what: str, argv: list[str]) -> str:
        """`argv`'s standard output; RuntimeError with the end of its standard error if it fails."""
        done = subprocess.run(
            argv, cwd=HOME, env=self._env, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{what} exited with {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    def _manage(self, *args: str) -> str:
        return self._run(f"manage.py {args[0]}", [str(self._python), "manage.py", *args])

    async def reader(self, prefix: str, rows: int, read_every: int = 0) -> dict[str, str]:
        """Request headers of the peer's user <prefix>1 (named as Herald's seed names its reader),
        made on first use with `rows` notifications, every `read_every`-th read: the session cookie
        of a login through Django's login view, as a browser would hold it."""
        await self.start()
        if prefix not in self._readers:
            user = f"{prefix}1"
            started = time.monotonic()
            self._manage("seed_users", prefix, "1", "--password", PASSWORD)
            self._manage("seed_notifications", user, str(rows), "--read-every", str(read_every))
            say(f"peer: {user} with {rows:,} notifications in {time.monotonic() - started:.1f} s")
            self._readers[prefix] = self._login(user)
        return self._readers[prefix]

    def _login(self, user: str) -> dict[str, str]:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            http.get(_LOGIN).raise_for_status()  # sets the CSRF cookie the form post must echo
            reply = http.post(
                _LOGIN,
                data={"username": user, "password": PASSWORD},
                headers={"X-CSRFToken": http.cookies.get("csrftoken") or ""},
            )
            session = http.cookies.get("sessionid")
        if reply.status_code != 302 or not session:
            raise RuntimeError(f"logging in to the peer as {user} answered {reply.status_code}: {reply.text[:300]}")
        return {"Cookie": f"sessionid={session}"}

    async def fanout(self, recipients: int) -> float:
        """Rows/s of the peer's `notify.send` to a queryset of `recipients` users (made for it), in
        one transaction: from the call until its commit returned. Once per run."""
        await self.start()
        if self._fanned:
            raise RuntimeError("the peer's fan-out runs once per run (its recipients are made for it)")
        self._fanned = True
        self._manage("seed_users", _FANOUT_USERS, str(recipients))
        out = self._manage("fanout", _FANOUT_USERS).strip().splitlines()
        timed = msgspec.json.decode(out[-1] if out else "", type=FanoutTimed)
        if timed.rows != recipients:
            raise RuntimeError(f"the peer's fan-out left {timed.rows} rows for {recipients} recipients")
        say(f"peer: notify.send to {recipients:,} users in one transaction: {timed.seconds:.1f} s")
        return timed.rows / timed.seconds


async def measured(b: Bench, what: str, measure: Callable[[], Awaitable[float | Skipped]]) -> float | Skipped:
    """`measure()`'s figure of the peer, or why the row comparing with it is skipped: the peer could
    not be installed or started (noted once, at start), or measuring it failed (the traceback
    printed and noted: Herald's own rows of the figure still count)."""
    try:
        return await measure()
    except PeerUnavailable as exc:
        return Skipped(f"Django peer {exc.short} (see notes)")
    except Exception as exc:
        traceback.print_exc()
        b.note(f"{what} of {PEER}: failed to measure: {type(exc).__name__}: {exc}")
        return Skipped(f"measuring the Django peer failed ({type(exc).__name__})")


def answers(body: Any, expect: Mapping[str, int]) -> bool:
    """Whether a JSON answer of the peer holds what `expect` says: each member it names is a number
    equal to the one given, or a list of that many items."""
    if not isinstance(body, dict):
        return False
    for key, want in expect.items():
        got = body.get(key)
        size = len(got) if isinstance(got, list) else got
        if isinstance(size, bool) or size != want:
            return False
    return True


def drain(url: str, headers: dict[str, str]) -> Any:
    """One GET of `url`, its JSON answer. gunicorn's sync workers take connections in the order they
    came and serve every request on them, even one whose client has gone: the requests wrk left
    open when a run ended are served before this one. So once it is answered, the next run starts
    on an idle peer rather than paying for the last one's leftovers (64 of them, up to seconds of
    work for a slow page)."""
    with httpx.Client(timeout=120) as http:
        reply = http.get(url, headers=headers)
    if reply.status_code != 200:
        raise RuntimeError(f"GET {url} answered {reply.status_code}: {reply.text[:300]}")
    return msgspec.json.decode(reply.content)


async def throughput(
    b: Bench, path: str, prefix: str, rows: int, read_every: int, expect: Mapping[str, int]
) -> float | Skipped:
    """Req/s of GET `path` on the peer as its user <prefix>1 holding `rows` notifications (every
    `read_every`-th read), with wrk as Herald's figures run it: one request checked against
    `expect` (see `answers`: the peer answers a session it did not accept with zeros and empty
    lists, which must not be measured), 1 s of warm-up, then the run, each started on an idle
    peer (see `drain`). Any error answer, or none at all, skips the row."""

    async def measure() -> float | Skipped:
        headers = await b.peer.reader(prefix, rows, read_every)
        url = b.peer.url + path
        body = drain(url, headers)
        if not answers(body, expect):
            raise RuntimeError(f"GET {path} as {prefix}1 answered {str(body)[:300]}")
        await asyncio.to_thread(load.wrk, url, headers=headers, seconds=1)
        drain(url, headers)
        run = await asyncio.to_thread(load.wrk, url, headers=headers, seconds=b.sizes.wrk_seconds)
        drain(url, headers)
        say(f"peer {path.rsplit('/api/', 1)[-1]} as {prefix}1 ({rows:,} notifications): {run.rps:,.0f} req/s")
        if run.bad or not run.requests:
            b.note(f"{PEER} {path}: {run.bad} of {run.requests} answers were errors; its row is skipped")
            return Skipped(f"{run.bad} of the Django peer's {run.requests} answers were errors")
        return run.rps

    return await measured(b, path, measure)


async def fanout(b: Bench, recipients: int) -> float | Skipped:
    """Rows/s of the peer's fan-out to `recipients` users, or why its row is skipped."""

    async def measure() -> float:
        return await b.peer.fanout(recipients)

    return await measured(b, "fan-out", measure)
