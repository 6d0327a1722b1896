"""A backend stops answering (its packets dropped, nothing refused) for 25 s, behind a real proxy:
after the first 10 s every request is answered within 2 s in every API process, the badge keeps
answering 200 from whichever backend is still up, the rest answers 503 in its profile's envelope,
nothing accepted is lost, and everything recovers by itself when the partition heals."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest

from service.local.embedded import EmbeddedPostgres
from tests.support.partition import Partition, partition
from tests.support.processes import fault_env, herald, json_line, start_herald, stop
from tests.support.servers import Breakable
from tests.support.waits import until

OUTAGE = 25.0
SETTLED = 10.0  # the contract's first seconds of an outage, during which a request may still wait
BOUND = 2.0


class Sample(msgspec.Struct, frozen=True):
    kind: str
    at: float  # seconds after the partition began
    took: float
    status: int  # 0: no answer within the client's 15 s


def hammer(base: str, requests: dict[str, Callable[[httpx.Client], httpx.Response]], began: float) -> list[Sample]:
    """Each kind of request, over and over from two threads each, until the outage ends."""
    samples: list[Sample] = []
    end = began + OUTAGE

    def loop(kind: str, send: Callable[[httpx.Client], httpx.Response]) -> None:
        while (now := time.monotonic()) < end:
            # A new connection for each request, so they spread over every API process.
            with httpx.Client(base_url=base, timeout=15) as client:
                try:
                    status = send(client).status_code
                except httpx.TimeoutException:
                    status = 0
            samples.append(Sample(kind, now - began, time.monotonic() - now, status))
            time.sleep(0.05)

    threads = [threading.Thread(target=loop, args=item) for item in requests.items() for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return samples


def through(
    proxy: Partition,
    base: str,
    requests: dict[str, Callable[[httpx.Client], httpx.Response]],
    *,
    quiet: bool = False,
) -> list[Sample]:
    """Partition the backend behind `proxy` and send `requests` throughout (or, `quiet`, only from
    SETTLED seconds on: no request can have timed out by then, so only the processes' own probes
    can have noticed): every request got an answer, and none after the first SETTLED seconds took
    BOUND or more. Returns the late ones."""
    proxy.blackhole()
    began = time.monotonic()
    if quiet:
        time.sleep(SETTLED)
    samples = hammer(base, requests, began)
    assert not [s for s in samples if s.status == 0], "a request got no answer at all"
    settled = [s for kind in requests for s in late(samples, kind)]
    assert not slow(settled), slow(samples)
    return settled


def late(samples: list[Sample], kind: str) -> list[Sample]:
    found = [s for s in samples if s.kind == kind and s.at >= SETTLED]
    assert len(found) >= 10, f"too few {kind} requests after the first {SETTLED:.0f} s: {len(found)}"
    return found


def slow(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.took >= BOUND]


@pytest.fixture
def proxied(
    private_postgres: tuple[EmbeddedPostgres, str], private_redis: Breakable, servers, scratch: Path
) -> Iterator[tuple[Partition, Partition, dict[str, str], str]]:  # type: ignore[no-untyped-def]
    server, database_url = private_postgres
    with partition(server.port) as pg, partition(private_redis.port) as rd:
        env = {
            **fault_env(database_url.replace(f":{server.port}/", f":{pg.port}/"), f"redis://127.0.0.1:{rd.port}/0"),
            "HERALD_BACKEND_TIMEOUT": "5",  # the default: the bound must hold without tuning
            "HERALD_API_WORKERS": "2",  # every process must notice by itself
        }
        procs = start_herald(env, "api", "worker", logs=scratch / "logs")
        try:
            yield pg, rd, env, f"http://127.0.0.1:{env['HERALD_PORT']}"
        finally:
            pg.heal()
            rd.heal()
            stop(procs)


def setup_reader(env: dict[str, str], base: str) -> tuple[dict[str, str], dict[str, str]]:
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "ann", env=env))["token"]
    producer = json_line(
        herald("admin", "create-token", "--tenant", "acme", "--user", "svc", "--kind", "producer", env=env)
    )["token"]
    return {"Authorization": f"Bearer {token}"}, {"Authorization": f"Bearer {producer}"}


def publish(base: str, producer: dict[str, str], event_id: str) -> httpx.Response:
    event = {"id": event_id, "type": "t", "tenant": "acme", "audience": {"users": ["ann"]}, "message": event_id}
    return httpx.post(base + "/v1/events", json=event, headers=producer, timeout=15)


def warm(base: str, reader: dict[str, str], producer: dict[str, str], event_id: str) -> None:
    """Every API process knows both tokens and the count: a new connection per request spreads them
    (40 requests miss one of two processes once in 2^39)."""
    until(lambda: httpx.get(base + "/v1/unread-count", headers=reader).json()["unread_count"] == 1, 20, "delivery")
    for _ in range(40):
        assert httpx.get(base + "/v1/unread-count", headers=reader).status_code == 200
        assert publish(base, producer, event_id).status_code == 202  # the same event: nothing new


async def exact(database_url: str, base: str, reader: dict[str, str]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        user = await conn.fetchval("SELECT id FROM users WHERE external_id = 'ann'")
        rows = await conn.fetchval("SELECT count(*) FROM inbox WHERE user_id = $1 AND read_at IS NULL", user)
        counted = await conn.fetchval("SELECT unread FROM inbox_counts WHERE user_id = $1", user)
    finally:
        await conn.close()
    assert rows == counted
    for _ in range(10):  # every process agrees
        assert httpx.get(base + "/v1/unread-count", headers=reader).json()["unread_count"] == rows


def messages(base: str, reader: dict[str, str]) -> list[str]:
    reply = httpx.get(base + "/v1/notifications", headers=reader, timeout=15)
    return [item["message"] for item in reply.json()["data"]["notifications"]] if reply.status_code == 200 else []


def test_redis_partition(proxied, private_postgres) -> None:  # type: ignore[no-untyped-def]
    _, rd, env, base = proxied
    reader, producer = setup_reader(env, base)
    assert publish(base, producer, "before").status_code == 202
    warm(base, reader, producer, "before")

    settled = through(
        rd,
        base,
        {
            "badge": lambda c: c.get("/v1/unread-count", headers=reader),
            "list": lambda c: c.get("/api/user-notifications", headers=reader),
            "publish": lambda c: c.post(
                "/v1/events",
                headers=producer,
                json={"id": "x", "type": "t", "tenant": "acme", "audience": {"users": ["ann"]}, "message": "x"},
            ),
        },
    )
    # The badge and the lists (PostgreSQL's) answer from PostgreSQL; publishing needs Redis.
    assert all(s.status == 200 for s in settled if s.kind != "publish"), settled
    assert all(s.status == 503 for s in settled if s.kind == "publish"), settled

    rd.heal()
    until(lambda: httpx.get(base + "/readyz").status_code == 200, 15, "ready again")
    until(lambda: publish(base, producer, "after").status_code == 202, 15, "publishing again")
    # An XADD held by the partition reaches Redis when it heals, though its producer was answered
    # 503 ("publish again"): so "x" may be there too. Either way the counts are exact.
    until(lambda: "after" in messages(base, reader), 15, "delivery")
    asyncio.run(exact(private_postgres[1], base, reader))


def test_postgres_partition(proxied, private_postgres) -> None:  # type: ignore[no-untyped-def]
    pg, _, env, base = proxied
    reader, producer = setup_reader(env, base)
    assert publish(base, producer, "before").status_code == 202
    warm(base, reader, producer, "before")

    # No request at all for the first SETTLED seconds: each process must notice by itself.
    settled = through(
        pg,
        base,
        {
            "badge": lambda c: c.get("/v1/unread-count", headers=reader),
            "list": lambda c: c.get("/v1/notifications", headers=reader),
            "read-all": lambda c: c.patch("/aptly/v1/notifications/read-all", headers=reader),
        },
        quiet=True,
    )
    # The badge answers from its cached copy; the rest needs PostgreSQL: 503 in each profile's envelope.
    assert all(s.status == 200 for s in settled if s.kind == "badge"), settled
    assert all(s.status == 503 for s in settled if s.kind != "badge"), settled
    # Accepted meanwhile (Redis is up), delivered after.
    assert publish(base, producer, "during").status_code == 202
    reply = httpx.get(base + "/v1/notifications", headers=reader, timeout=15)
    assert reply.status_code == 503 and reply.json()["success"] is False

    pg.heal()
    until(lambda: httpx.get(base + "/readyz").status_code == 200, 15, "ready again")
    until(lambda: "during" in messages(base, reader), 30, "the pending event")
    asyncio.run(exact(private_postgres[1], base, reader))


def test_a_workers_failed_copy_is_repaired_once_redis_is_back(proxied, private_postgres) -> None:  # type: ignore[no-untyped-def]
    """A snooze ends (in the worker's sweep) while Redis does not answer: the new count cannot be
    copied. Once Redis is back the worker copies it again, well before the stale copy would expire."""
    _, rd, env, base = proxied
    reader, producer = setup_reader(env, base)
    assert publish(base, producer, "snoozed").status_code == 202
    warm(base, reader, producer, "snoozed")
    row = httpx.get(base + "/v1/notifications", headers=reader).json()["data"]["notifications"][0]["id"]
    # The snooze ends well after the worker's probes know Redis is away (about 6 s at most), so the
    # sweep's copy fails at once rather than wait in the partition (and be delivered when it heals).
    until_time = datetime.now(UTC) + timedelta(seconds=9)
    snoozed = httpx.patch(
        f"{base}/v1/notifications/{row}/snooze", headers=reader, json={"until": until_time.isoformat()}
    )
    assert snoozed.status_code == 200, snoozed.text
    assert httpx.get(base + "/v1/unread-count", headers=reader).json()["unread_count"] == 0

    rd.blackhole()
    until(lambda: asyncio.run(unread_in_postgres(private_postgres[1])) == 1, 20, "the snooze to end")
    time.sleep(2)
    rd.heal()
    took = until(
        lambda: httpx.get(base + "/v1/unread-count", headers=reader).json()["unread_count"] == 1, 10, "the copy"
    )
    assert took < 10


async def unread_in_postgres(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        unread: int = await conn.fetchval(
            "SELECT c.unread FROM inbox_counts c JOIN users u ON u.id = c.user_id WHERE u.external_id = 'ann'"
        )
        return unread
    finally:
        await conn.close()
