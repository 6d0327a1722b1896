"""Real Herald processes for end-to-end tests: `herald api`, `herald worker` and the CLI."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from service.local.embedded import free_port
from tests.conftest import Servers


def herald(*args: str, env: dict[str, str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], env=env, input=stdin, capture_output=True, timeout=60
    )


@pytest.fixture
def env(servers: Servers, clean: None) -> dict[str, str]:
    """The environment of a Herald process pointed at the test servers, on a free port."""
    return {
        **os.environ,
        "HERALD_DATABASE_URL": servers.database_url,
        "HERALD_REDIS_URL": servers.redis_url,
        "HERALD_PORT": str(free_port()),
        "HERALD_PUBLIC_URL": "https://app.example",
    }


def wait_ready(base: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert all(p.poll() is None for p in procs), "a Herald process exited during start"
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the API did not become ready"
        time.sleep(0.1)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            pytest.fail("a Herald process did not stop within 30 s of SIGTERM")


def json_line(done: subprocess.CompletedProcess[bytes]) -> Any:
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().strip().splitlines()
    assert len(lines) == 1
    return msgspec.json.decode(lines[0])


@pytest.fixture
def running(env: dict[str, str]) -> Iterator[str]:
    """`herald api` and `herald worker`, ready; yields the API's base URL."""
    base = f"http://127.0.0.1:{env['HERALD_PORT']}"
    procs = [subprocess.Popen([sys.executable, "-m", "service.cli", part], env=env) for part in ("api", "worker")]
    try:
        wait_ready(base, procs)
        yield base
    finally:
        stop(procs)


def start_herald(env: dict[str, str], *parts: str, logs: Path) -> list[subprocess.Popen[bytes]]:
    """Start `herald <part>` processes; each one's log goes to `logs/<part>-<n>.log`."""
    logs.mkdir(exist_ok=True)
    procs = []
    for n, part in enumerate(parts):
        with open(logs / f"{part}-{n}.log", "ab") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "service.cli", part], env=env, stderr=log, stdout=log))
    if "api" in parts:
        wait_ready(f"http://127.0.0.1:{env['HERALD_PORT']}", procs)
    return procs
