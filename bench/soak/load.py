"""The load: a paced publisher, list/ack sessions, and badge pollers in their own process.

The publisher and the sessions run in the orchestrator's event loop: a few hundred requests a
second, paced. The badge pollers make thousands, so they get a process of their own. All of them
speak HTTP through `bench/soak/http.py` (see there why not httpx).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import resource
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import redis.asyncio as aioredis

from bench.soak.http import Connection, HTTPError, Pool
from bench.soak.seed import Tenant
from bench.soak.stats import Tally, Windows

STREAM = "herald:events"
TYPES = ("scan.completed", "scan.failed", "sandbox.timeout", "delegation.issued")
TRIGGERS = ("Operation", "Anomaly", "PartitionScan", "Manual")


@dataclass
class Ledger:
    """What the load did that the final checks must account for."""

    # event id -> (named users, topics), for every event the stream accepted
    published: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    # events whose publish failed in a way that leaves unknown whether they were queued
    uncertain: set[str] = field(default_factory=set)
    deleted: set[tuple[str, str]] = field(default_factory=set)  # (event id, user)
    uncertain_deletes: set[tuple[str, str]] = field(default_factory=set)
    skipped: int = 0  # publishes or sessions not started because too many were in flight
    retried: int = 0  # requests sent again on a new connection: the server closed the idle one
    closed_by_server: int = 0  # idle keep-alive connections the server closed (its timeout)


def _event_of(title: str) -> str:
    return title.removeprefix("soak ")


class Publisher:
    """Events at `rate` per second, alternately POST /v1/events and XADD, whatever the latency."""

    MAX_IN_FLIGHT = 400

    def __init__(
        self,
        port: int,
        redis_url: str,
        tenant: Tenant,
        run_id: str,
        rate: float,
        windows: Windows,
        ledger: Ledger,
        rng: random.Random,
    ) -> None:
        self.port, self.redis_url, self.tenant, self.run_id = port, redis_url, tenant, run_id
        self.rate, self.windows, self.ledger, self.rng = rate, windows, ledger, rng
        self.in_flight: set[asyncio.Task[None]] = set()

    def _event(self, n: int) -> tuple[str, list[str], list[str], bytes]:
        eid = f"{self.run_id}-{n:07d}"
        users: list[str] = []
        topics: list[str] = []
        if self.rng.random() < 0.1:
            topics = [self.rng.choice(sorted(self.tenant.topics))]
            if self.rng.random() < 0.5:
                users = [self.rng.choice(self.tenant.users)]
        else:
            users = [self.rng.choice(self.tenant.users)]
        audience: dict[str, Any] = {}
        if users:
            audience["users"] = users
        if topics:
            audience["topics"] = topics
        body = {
            "id": eid,
            "type": self.rng.choice(TYPES),
            "tenant": self.tenant.name,
            "audience": audience,
            "title": f"soak {eid}",
            "message": f"A soak operation has completed (event {n}).",
            "category": "soak",
            "trigger_type": self.rng.choice(TRIGGERS),
            "tags": ["soak", f"t{n % 7}"],
            "entity": {"type": "operation", "id": str(n)},
            "action_url": f"/operations/{n}",
        }
        return eid, users, topics, msgspec.json.encode(body)

    async def run(self, stop_at: float) -> None:
        client = Pool("127.0.0.1", self.port, 64)
        rd = aioredis.Redis.from_url(self.redis_url, client_name="herald-soak", socket_timeout=10)
        began = time.monotonic()
        n = 0
        try:
            while (now := time.monotonic()) < stop_at:
                due = int((now - began) * self.rate)
                while n < due:
                    if len(self.in_flight) >= self.MAX_IN_FLIGHT:
                        self.ledger.skipped += due - n
                        n = due
                        break
                    task = asyncio.create_task(self._one(client, rd, n))
                    self.in_flight.add(task)
                    task.add_done_callback(self.in_flight.discard)
                    n += 1
                await asyncio.sleep(0.005)
            if self.in_flight:
                await asyncio.wait(self.in_flight, timeout=15)
        finally:
            self.ledger.retried += client.retried
            self.ledger.closed_by_server += client.closed_by_server
            await client.close()
            await rd.aclose()

    async def _one(self, client: Pool, rd: aioredis.Redis, n: int) -> None:
        eid, users, topics, raw = self._event(n)
        began = time.monotonic()
        if n % 2 == 0:
            kind = "publish"
            headers = {"Authorization": f"Bearer {self.tenant.producer}", "Content-Type": "application/json"}
            try:
                reply = await client.request("POST", "/v1/events", headers, body=raw)
            except HTTPError as exc:
                self.ledger.uncertain.add(eid)
                self.windows.record(kind, began, time.monotonic(), "conn", ok=False, detail=repr(exc))
                return
            ok = reply.status == 202 and reply.json() == {"accepted": 1}
            status = str(reply.status)
            if ok:
                self.ledger.published[eid] = (users, topics)
            elif reply.status >= 500 or reply.status == 429:
                self.ledger.uncertain.add(eid)
            self.windows.record(kind, began, time.monotonic(), status, ok=ok, detail=reply.text[:200])
        else:
            kind = "xadd"
            try:
                await rd.xadd(STREAM, {"event": raw})
            except Exception as exc:  # any Redis failure is an error of the soak
                self.ledger.uncertain.add(eid)
                self.windows.record(kind, began, time.monotonic(), "redis", ok=False, detail=repr(exc))
                return
            self.ledger.published[eid] = (users, topics)
            self.windows.record(kind, began, time.monotonic(), "ok", ok=True)


class Sessions:
    """Users opening their inbox at `rate` per second: list, then act on what they see.

    A user is in at most one session at a time, so every action is on an item that exists and
    every answer is known in advance: anything but the expected status is an error.
    """

    MAX_IN_FLIGHT = 200

    def __init__(
        self, port: int, tenant: Tenant, rate: float, windows: Windows, ledger: Ledger, rng: random.Random
    ) -> None:
        self.port, self.tenant, self.rate, self.windows, self.ledger, self.rng = (
            port,
            tenant,
            rate,
            windows,
            ledger,
            rng,
        )
        self.busy: set[str] = set()
        self.in_flight: set[asyncio.Task[None]] = set()

    async def run(self, stop_at: float) -> None:
        client = Pool("127.0.0.1", self.port, 100)
        began = time.monotonic()
        n = 0
        try:
            while (now := time.monotonic()) < stop_at:
                due = int((now - began) * self.rate)
                while n < due:
                    free = [u for u in self.rng.sample(self.tenant.users, 8) if u not in self.busy]
                    if not free or len(self.in_flight) >= self.MAX_IN_FLIGHT:
                        self.ledger.skipped += 1
                    else:
                        self.busy.add(free[0])
                        task = asyncio.create_task(self._session(client, free[0]))
                        self.in_flight.add(task)
                        task.add_done_callback(self.in_flight.discard)
                    n += 1
                await asyncio.sleep(0.01)
            if self.in_flight:
                await asyncio.wait(self.in_flight, timeout=15)
        finally:
            self.ledger.retried += client.retried
            self.ledger.closed_by_server += client.closed_by_server
            await client.close()

    async def _call(self, client: Pool, kind: str, method: str, url: str, user: str, body: Any = None) -> Any:
        """One request; its JSON when it answered 200, else None (and the error is recorded)."""
        began = time.monotonic()
        headers = {"Authorization": f"Bearer {self.tenant.tokens[user]}"}
        try:
            reply = await client.request(method, url, headers, json=body)
        except HTTPError as exc:
            self.windows.record(kind, began, time.monotonic(), "conn", ok=False, detail=f"{method} {url} {exc!r}")
            return None
        now = time.monotonic()
        ok = reply.status == 200
        detail = "" if ok else f"{method} {url} {reply.text[:200]}"
        self.windows.record(kind, began, now, str(reply.status), ok=ok, detail=detail)
        return reply.json() if ok else None

    async def _session(self, client: Pool, user: str) -> None:
        try:
            if self.rng.random() < 0.5:
                await self._scalebox(client, user)
            else:
                await self._qualytics(client, user)
        finally:
            self.busy.discard(user)

    async def _scalebox(self, client: Pool, user: str) -> None:
        unread_only = self.rng.random() < 0.3
        page = await self._call(
            client, "list", "GET", "/v1/notifications?limit=20" + ("&read=false" if unread_only else ""), user
        )
        if page is None:
            return
        items = page["data"]["notifications"]
        unread = [i for i in items if not i["is_read"]]
        read = [i for i in items if i["is_read"]]
        draw = self.rng.random()
        if draw < 0.40 and unread:
            await self._call(client, "read", "PATCH", f"/v1/notifications/{unread[0]['id']}/read", user)
        elif draw < 0.55 and unread:
            ids = [i["id"] for i in unread[:3]]
            await self._call(client, "bulk", "PATCH", "/v1/notifications/bulk-read", user, {"notification_ids": ids})
        elif draw < 0.60:
            await self._call(client, "read_all", "PATCH", "/v1/notifications/read-all", user)
        elif draw < 0.68 and read:
            await self._call(client, "unread", "PATCH", f"/v1/notifications/{read[0]['id']}/unread", user)
        elif draw < 0.80 and items:
            victim = self.rng.choice(items)
            pair = (_event_of(victim["title"]), user)
            self.ledger.uncertain_deletes.add(pair)
            done = await self._call(client, "delete", "DELETE", f"/v1/notifications/{victim['id']}", user)
            if done is not None and done["data"]["deleted"]:
                self.ledger.uncertain_deletes.discard(pair)
                self.ledger.deleted.add(pair)
        elif draw < 0.84 and len(items) >= 3:
            victims = self.rng.sample(items, 3)
            pairs = {(_event_of(v["title"]), user) for v in victims}
            self.ledger.uncertain_deletes |= pairs
            body = {"notification_ids": [v["id"] for v in victims]}
            done = await self._call(client, "delete", "POST", "/v1/notifications/bulk-delete", user, body)
            if done is not None and done["data"]["deleted_count"] == len(victims):
                self.ledger.uncertain_deletes -= pairs
                self.ledger.deleted |= pairs
        elif draw < 0.92 and page["data"]["pagination"].get("next_cursor"):
            cursor = page["data"]["pagination"]["next_cursor"]
            await self._call(client, "list", "GET", f"/v1/notifications?limit=20&cursor={cursor}", user)
        elif draw < 0.95 and items:
            # Hidden for a moment: the workers' sweep brings it back while the load goes on.
            until = datetime.now(UTC) + timedelta(seconds=self.rng.uniform(0.5, 3.0))
            victim = self.rng.choice(items)["id"]
            snooze = {"until": until.isoformat()}
            await self._call(client, "snooze", "PATCH", f"/v1/notifications/{victim}/snooze", user, snooze)

    async def _qualytics(self, client: Pool, user: str) -> None:
        page = await self._call(client, "list", "GET", "/api/user-notifications?size=12", user)
        if page is None:
            return
        items = page["items"]
        draw = self.rng.random()
        if draw < 0.45 and items:
            await self._call(client, "read", "PUT", f"/api/user-notifications/acknowledge/{items[0]['id']}", user)
        elif draw < 0.60 and items:
            body = [{"id": i["id"]} for i in items[:4]]
            await self._call(client, "bulk", "PATCH", "/api/user-notifications/acknowledge", user, body)
        elif draw < 0.65:
            await self._call(client, "read_all", "PATCH", "/api/user-notifications/acknowledge", user, [])


# --- badge pollers: their own process -------------------------------------------------------------


@dataclass
class PollerPlan:
    host: str
    port: int
    tokens: list[str]
    connections: int
    rate: float  # polls per second across all connections; 0: each connection as fast as it goes
    start: float  # time.monotonic() of window 0, the same clock in every process on Linux
    width: float
    stop_at: float
    seed: int


def start_pollers(plan: PollerPlan) -> tuple[multiprocessing.process.BaseProcess, Any]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_poller_main, args=(plan, queue), name="herald-soak-pollers", daemon=True)
    proc.start()
    return proc, queue


def _poller_main(plan: PollerPlan, queue: Any) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop

            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:  # pragma: no cover
            runner = asyncio.Runner()
        with runner:
            runner.run(_pollers(plan, queue))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _pollers(plan: PollerPlan, queue: Any) -> None:
    windows = Windows(plan.start, plan.width)
    etags: dict[bytes, bytes] = {}
    rng = random.Random(plan.seed)
    tokens = [t.encode() for t in plan.tokens]
    tasks = [
        asyncio.create_task(_poll(plan, tokens, etags, windows, random.Random(rng.random())))
        for _ in range(plan.connections)
    ]
    sent = 0
    while not all(t.done() for t in tasks):
        await asyncio.sleep(0.25)
        current = windows.window(time.monotonic())
        while sent < current:
            queue.put(("window", sent, {k: t.to_dict() for k, t in windows.pop(sent).items()}, _cpu()))
            sent += 1
    for t in tasks:
        if t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    last = max([*windows.tallies, sent - 1], default=sent - 1)
    while sent <= last:
        queue.put(("window", sent, {k: t.to_dict() for k, t in windows.pop(sent).items()}, _cpu()))
        sent += 1
    queue.put(("done", sent, {}, _cpu()))


async def _poll(
    plan: PollerPlan, tokens: list[bytes], etags: dict[bytes, bytes], windows: Windows, rng: random.Random
) -> None:
    host = f"{plan.host}:{plan.port}".encode()
    conn: Connection | None = None
    interval = plan.connections / plan.rate if plan.rate > 0 else 0.0
    # Paced connections start spread over one interval, so their polls do not arrive in bursts.
    due = max(plan.start, time.monotonic()) + rng.random() * interval
    while time.monotonic() < plan.stop_at:
        if interval:
            # Open loop: a poll every `interval` seconds; one that is late goes at once (the
            # achieved rate, reported per window, shows whether the server kept up).
            due += interval
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            elif wait < -1.0:
                due = time.monotonic()  # more than a second behind: do not fire a burst to catch up
        if conn is None:
            try:
                conn = Connection(*await asyncio.open_connection(plan.host, plan.port))
            except OSError as exc:
                now = time.monotonic()
                windows.record("badge", now, now, "conn", ok=False, detail=repr(exc))
                await asyncio.sleep(0.1)
                continue
        token = rng.choice(tokens)
        tag = etags.get(token)
        request = b"GET /v1/unread-count HTTP/1.1\r\nHost: " + host + b"\r\nAuthorization: Bearer " + token
        if tag is not None:
            request += b"\r\nIf-None-Match: " + tag
        request += b"\r\n\r\n"
        began = time.monotonic()
        try:
            async with asyncio.timeout(10):
                reply, keep = await conn.exchange(request)
        except (OSError, TimeoutError, ValueError, HTTPError, asyncio.IncompleteReadError) as exc:
            windows.record("badge", began, time.monotonic(), "conn", ok=False, detail=repr(exc))
            conn.close()
            conn = None
            continue
        now = time.monotonic()
        etag = reply.headers.get(b"etag")
        if reply.status == 200:
            try:
                count = reply.json()["unread_count"]
                ok = isinstance(count, int) and count >= 0 and etag is not None
            except (msgspec.DecodeError, KeyError, TypeError):
                ok = False
            if ok and etag is not None:
                etags[token] = etag
        else:
            # 304 is right only for a tag we sent; anything else is unexpected.
            ok = reply.status == 304 and tag is not None
        windows.record("badge", began, now, str(reply.status), ok=ok, detail=reply.text[:200])
        if not keep:
            conn.close()
            conn = None
    if conn is not None:
        conn.close()


def merge_message(windows: Windows, message: tuple[str, int, dict[str, Any], float]) -> None:
    _, window, kinds, _ = message
    windows.merge(window, {k: Tally.from_dict(v) for k, v in kinds.items()})
