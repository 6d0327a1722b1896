"""wrk as the load generator, in a process of its own; its report parsed into numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.error
import urllib.request

import msgspec


class WrkMissing(RuntimeError):
    pass


class Load(msgspec.Struct, kw_only=True):
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int  # non-2xx/3xx answers plus socket errors: a run with any is not a valid figure


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(report: str) -> Load:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", report)
    total = re.search(r"(\d+) requests in", report)
    p50 = re.search(r"^\s+50%\s+(\S+)", report, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", report, re.M)
    if not (rps and total and p50 and p99):
        raise ValueError("could not read wrk's report:\n" + report)
    bad = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", report)
    if non2xx:
        bad += int(non2xx.group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    if errors:
        bad += sum(int(g) for g in errors.groups())
    return Load(
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        requests=int(total.group(1)),
        bad=bad,
    )


def available() -> bool:
    return shutil.which("wrk") is not None


def check(url: str, headers: dict[str, str], status: int) -> bytes:
    """One request before the load, so a wrong token or route fails loudly instead of being measured."""
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
            got, body = int(reply.status), bytes(reply.read())
    except urllib.error.HTTPError as exc:
        got, body = exc.code, bytes(exc.read())
    if got != status:
        raise RuntimeError(f"GET {url} answered {got}, expected {status}: {body[:300]!r}")
    return body


def wrk(
    url: str, *, headers: dict[str, str] | None = None, seconds: float = 10, threads: int = 2, connections: int = 64
) -> Load:
    binary = shutil.which("wrk")
    if binary is None:
        raise WrkMissing("wrk is not installed (apt-get install -y wrk); HTTP figures need it")
    args = [binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    done = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse(done.stdout)
