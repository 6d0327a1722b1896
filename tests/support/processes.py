"""Real Herald processes for end-to-end tests: the CLI, `herald api` and `herald worker` started
through the harness (service/local/harness.py), waited for and stopped."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from service.local import harness
from service.local.embedded import free_port


def herald(*args: str, env: dict[str, str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(harness.herald_command(*args), env=env, input=stdin, capture_output=True, timeout=60)


def json_line(done: subprocess.CompletedProcess[bytes]) -> Any:
    assert done.returncode == 0, done.stderr.decode()
    lines = done.stdout.decode().strip().splitlines()
    assert len(lines) == 1
    return msgspec.json.decode(lines[0])


def _children(procs: list[subprocess.Popen[bytes]]) -> list[harness.Child]:
    return [harness.Child(" ".join(map(str, p.args[3:])) or str(p.args), p) for p in procs]  # type: ignore[index]


def wait_ready(base: str, procs: list[subprocess.Popen[bytes]]) -> None:
    harness.wait_ready(base + "/readyz", _children(procs))


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    killed = harness.stop(_children(procs), timeout=30)
    if killed:
        pytest.fail(f"{', '.join(c.name for c in killed)} did not stop within 30 s of SIGTERM")


def start_herald(env: dict[str, str], *parts: str, logs: Path) -> list[subprocess.Popen[bytes]]:
    """Start `herald <part>` processes; each one's log goes to `logs/<part>-<n>.log`."""
    children = [
        harness.start(part, harness.herald_command(part), env, log=logs / f"{part}-{n}.log")
        for n, part in enumerate(parts)
    ]
    if "api" in parts:
        harness.wait_ready(f"http://127.0.0.1:{env['HERALD_PORT']}/readyz", children)
    return [c.proc for c in children]


def fault_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "HERALD_DATABASE_URL": database_url,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_PORT": str(free_port()),
        "HERALD_BACKEND_TIMEOUT": "2",
    }
