"""Many open streams: `streams` (see docs/performance.md).

`s.streams` users each hold one `GET /v1/stream` (a signed token each, as a product's front end
would hand out) against the bench's `herald api` (2 granian workers). While they are open: the
API's resident memory, badge polls and health checks each on a new connection (so each must be
admitted by the server beside the streams), and one event published to a topic all of them follow,
timed from its XADD to the `notification` event on every stream (the real path: the worker's
fan-out, the count copies published per user, each API process's one pub/sub connection).

The client is plain asyncio protocols on raw sockets, one per stream: an httpx client per stream
would cost the machine more than the server it measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from urllib.parse import urlsplit

import httpx
import jwt
import msgspec

from bench.base import Bench, k
from bench.env import API_WORKERS, JWT_SECRET, tree_memory_mb
from bench.report import Row
from bench.seed import TENANT, say
from service.keys import STREAM, Channels

TOPIC = "st-all"
OPEN_AT_ONCE = 256  # streams being opened at any moment (the rest wait their turn)
PROBES = 400  # badge polls and health checks while the streams are open (each)


def _token(user: str) -> str:
    claims = {"sub": user, "tenant": TENANT, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


class Client(asyncio.Protocol):
    """One stream, read line by line: its status, when it opened (the first `unread` event) and
    when the broadcast's `notification` arrived."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.status = 0
        self.opened = asyncio.get_running_loop().create_future()
        self.notified: float | None = None
        self.closed = False
        self._rest = b""
        self._headers_done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        lines = (self._rest + data).split(b"\n")
        self._rest = lines.pop()
        for line in lines:
            if not self._headers_done:
                if not self.status and line.startswith(b"HTTP/1.1 "):
                    self.status = int(line[9:12])
                elif line in (b"\r", b""):
                    self._headers_done = True
                    if self.status != 200 and not self.opened.done():
                        self.opened.set_result(False)
            elif line.startswith(b"event: unread"):
                if not self.opened.done():
                    self.opened.set_result(True)
            elif line.startswith(b"event: notification") and self.notified is None:
                self.notified = time.perf_counter()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.opened.done():
            self.opened.set_result(False)


def _raise_open_files(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        needed = min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
        soft = needed
    return soft


def rss_mb(pid: int) -> float:
    """Current resident set (VmRSS) of a process and its descendants, in MB."""
    return tree_memory_mb(pid, "VmRSS")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("inf")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def _probe(base: str, path: str, headers: dict[str, str]) -> list[float]:
    """Milliseconds of each of PROBES requests, each on a new connection; fails on a non-200."""
    limits = httpx.Limits(max_keepalive_connections=0)
    times = []
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=5) as http:
        for _ in range(PROBES):
            started = time.perf_counter()
            reply = await http.get(path)
            times.append((time.perf_counter() - started) * 1000)
            if reply.status_code != 200:
                raise RuntimeError(f"{path}: {reply.status_code} {reply.text[:200]} with the streams open")
    return times


async def streams(b: Bench) -> list[Row]:
    n = b.sizes.streams
    files = _raise_open_files(n + 1024)
    if files < n + 256:
        raise RuntimeError(f"the open-file limit ({files}) is too low for {n:,} streams; raise it (ulimit -n)")
    lo, hi = await b.seeder.user_group("st", n)
    await b.seeder.subscribe(TOPIC, lo, hi)
    await b.seeder.settle()  # as after every figure's seeding
    api = b.procs.api()
    b.procs.workers()
    api_pid = b.procs.children["api"].pid
    before = rss_mb(api_pid)
    url = urlsplit(api)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    names = [f"st{i}" for i in range(1, n + 1)]
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    gate = asyncio.Semaphore(OPEN_AT_ONCE)

    async def open_one(name: str) -> None:
        request = (
            f"GET /v1/stream HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
            f"Authorization: Bearer {_token(name)}\r\n\r\n"
        ).encode()
        async with gate:
            _, client = await loop.create_connection(lambda: Client(request), host, port)
            clients.append(client)
            await asyncio.wait_for(client.opened, 30)

    say(f"opening {n:,} streams ({OPEN_AT_ONCE} at a time)")
    started = time.perf_counter()
    opening = await asyncio.gather(*(open_one(name) for name in names), return_exceptions=True)
    opened_in = time.perf_counter() - started
    failures = [r for r in opening if isinstance(r, BaseException)]
    try:
        held = sum(1 for c in clients if c.status == 200 and not c.closed)
        refused = sum(1 for c in clients if c.status == 503)
        say(f"{held:,} streams held, {refused:,} refused, {len(failures):,} failed, in {opened_in:.1f} s")
        if failures:
            b.note(f"streams: {len(failures)} streams failed to open, first: {failures[0]!r}")
        await asyncio.sleep(2)  # settle: the last opens' allocations, then measure
        rss = rss_mb(api_pid)
        say(f"API RSS: {before:.0f} MB before, {rss:.0f} MB with the streams open")

        badge_headers = {"Authorization": f"Bearer {_token(names[0])}"}
        await _probe(api, "/v1/unread-count", badge_headers)  # warm-up: each worker caches the token
        badge = await _probe(api, "/v1/unread-count", badge_headers)
        health = await _probe(api, "/healthz", {})
        say(f"badge p99 {_pct(badge, 0.99):.1f} ms, /healthz p99 {_pct(health, 0.99):.1f} ms (new connections)")

        event = {
            "id": "streams-broadcast",
            "type": "bench.streams",
            "tenant": TENANT,
            "audience": {"topics": [TOPIC]},
            "message": "Maintenance tonight at 22:00.",
        }
        # When the worker publishes the first and the last recipient's count copy: what the API
        # processes take after that is theirs.
        published: dict[int, float] = {}
        pubsub = b.redis.pubsub()
        channels = Channels.of(b.redis)
        await pubsub.subscribe(channels.user(lo), channels.user(hi))

        async def watch() -> None:
            while len(published) < 2:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None:
                    published.setdefault(int(message["channel"].rsplit(b":", 1)[1]), time.perf_counter())

        watcher = asyncio.create_task(watch())
        sent = time.perf_counter()
        await b.redis.xadd(STREAM, {"event": msgspec.json.encode(event)})
        live = [c for c in clients if c.status == 200 and not c.closed]
        deadline = sent + 30
        while any(c.notified is None for c in live) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        latencies = [(c.notified - sent) * 1000 for c in live if c.notified is not None]
        missed = len(live) - len(latencies)
        if missed:
            b.note(f"streams: the broadcast did not reach {missed} of {len(live)} open streams within 30 s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher, 1)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        p50, p99 = _pct(latencies, 0.5), _pct(latencies, 0.99)
        first, last = ((published[u] - sent) * 1000 if u in published else float("nan") for u in (lo, hi))
        say(
            f"broadcast to {len(live):,} streams: first {min(latencies, default=0):.0f} ms, p50 {p50:.0f} ms, "
            f"p99 {p99:.0f} ms; count copies published from {first:.0f} to {last:.0f} ms"
        )
        still = sum(1 for c in clients if c.status == 200 and not c.closed)
    finally:
        for c in clients:
            if c.transport is not None:
                c.transport.close()
        await asyncio.sleep(1)
    b.note(
        f"streams: {k(n)} users each open GET /v1/stream with a signed token ({OPEN_AT_ONCE} opening at a time; "
        f"all open in {opened_in:.1f} s) against `herald api --workers {API_WORKERS}` with the default "
        "HERALD_STREAM_LIMIT; RSS is the VmRSS sum of granian's main and worker processes, idle before: "
        f"{before:.0f} MB; badge and /healthz: {PROBES} sequential requests each, every one on a new "
        "connection; broadcast: one event XADDed to a topic all of them follow, timed to the `notification` "
        "event on every stream (fan-out, count copies and pub/sub included)"
    )
    return [
        Row(
            figure=f"streams: held open of {k(n)} asked",
            herald=float(held),
            limit=float(n),
            ratio=held / n,
            target=f"all {k(n)}",
            passed=held == n and still == n,
        ),
        Row(
            figure=f"streams: API RSS with {k(n)} open (MB)",
            herald=rss,
            limit=None,
            ratio=None,
            target="< 1024 MB",
            passed=rss < 1024,
        ),
        Row(
            figure=f"streams: broadcast to {k(n)} open, p50 (ms)",
            herald=p50,
            limit=None,
            ratio=None,
            target="reference only",
            passed=not missed,
        ),
        Row(
            figure=f"streams: broadcast to {k(n)} open, p99 (ms)",
            herald=p99,
            limit=None,
            ratio=None,
            target="< 1000 ms",
            passed=not missed and p99 < 1000,
        ),
        Row(
            figure=f"streams: badge p99 with {k(n)} open, new connections (ms)",
            herald=_pct(badge, 0.99),
            limit=None,
            ratio=None,
            target="< 50 ms",
            passed=_pct(badge, 0.99) < 50,
        ),
        Row(
            figure=f"streams: /healthz p99 with {k(n)} open, new connections (ms)",
            herald=_pct(health, 0.99),
            limit=None,
            ratio=None,
            target="< 50 ms",
            passed=_pct(health, 0.99) < 50,
        ),
    ]
