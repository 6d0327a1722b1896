"""Workers and API processes killed or stopped at the worst moment: every recipient still gets
exactly one row, counts stay exact, in-flight work finishes."""

import signal
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
import redis

from service.counts import decode_counts
from service.keys import STREAM, count_key
from service.local.harness import Servers
from tests.support.factories import seed_topic
from tests.support.processes import fault_env, herald, json_line, start_herald, stop
from tests.support.waits import until

RECIPIENTS = 100_000


def sql(url: str, query: str) -> object:
    import asyncio

    async def run() -> object:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(query)
        finally:
            await conn.close()

    return asyncio.run(run())


def assert_exact(url: str, redis_url: str, recipients: int) -> None:
    assert sql(url, "SELECT count(*) FROM inbox") == recipients
    assert sql(url, "SELECT count(*) FROM (SELECT 1 FROM inbox GROUP BY user_id, event_id HAVING count(*) > 1) d") == 0
    drift = sql(
        url,
        """SELECT count(*) FROM inbox_counts c
           WHERE c.unread <> (SELECT count(*) FROM inbox i WHERE i.user_id = c.user_id AND i.read_at IS NULL)
              OR c.total <> (SELECT count(*) FROM inbox i WHERE i.user_id = c.user_id)""",
    )
    assert drift == 0
    # Every cached copy agrees with the counts it copies (some may have expired: those rebuild).
    import asyncio

    async def copies() -> None:
        conn = await asyncpg.connect(url)
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            rows = await conn.fetch("SELECT user_id, unread, total, version FROM inbox_counts")
            values = await client.mget([count_key(r[0]) for r in rows])
            for r, raw in zip(rows, values, strict=True):
                if raw is not None:
                    copy = decode_counts(r[0], raw)
                    assert (copy.unread, copy.total, copy.version) == (r[1], r[2], r[3])
        finally:
            await conn.close()
            await client.aclose()

    asyncio.run(copies())


def xadd_topic(redis_url: str, event_id: str, topic: str) -> None:
    client = redis.Redis.from_url(redis_url)
    event = {"id": event_id, "type": "t", "tenant": "acme", "audience": {"topics": [topic]}, "message": "all hands"}
    client.xadd(STREAM, {"event": msgspec.json.encode(event)})
    client.close()


@pytest.fixture
def seeded(servers: Servers, clean: None) -> Servers:
    import asyncio

    async def seed() -> None:
        conn = await asyncpg.connect(servers.database_url)
        try:
            await seed_topic(conn, "all-hands", RECIPIENTS)
        finally:
            await conn.close()

    asyncio.run(seed())
    return servers


def test_a_worker_killed_mid_fan_out_is_taken_over_exactly_once(seeded: Servers, scratch: Path) -> None:
    env = fault_env(seeded.database_url, seeded.redis_url)
    first = start_herald(env, "worker", logs=scratch / "a")
    xadd_topic(seeded.redis_url, "big-1", "all-hands")
    until(
        lambda: (sql(seeded.database_url, "SELECT count(*) FROM fanout_chunks WHERE rows IS NOT NULL") or 0) >= 1,
        30,
        "a first chunk",
    )
    first[0].send_signal(signal.SIGKILL)
    first[0].wait(10)
    written = sql(seeded.database_url, "SELECT count(*) FROM inbox")
    assert 0 < written < RECIPIENTS, "the worker was not killed in the middle"  # type: ignore[operator]
    second = start_herald(env, "worker", logs=scratch / "b")
    try:
        # The dead worker's jobs are run again once arq's in-progress mark expires (< 60 s).
        until(
            lambda: sql(seeded.database_url, "SELECT fanout_done_at IS NOT NULL FROM events") is True,
            75,
            "the takeover",
        )
        until(
            lambda: redis.Redis.from_url(seeded.redis_url).xpending(STREAM, "herald")["pending"] == 0,
            45,
            "the entry acked",
        )
    finally:
        stop(second)
    assert_exact(seeded.database_url, seeded.redis_url, RECIPIENTS)


def test_two_workers_racing_on_one_event(seeded: Servers, scratch: Path) -> None:
    env = fault_env(seeded.database_url, seeded.redis_url)
    workers = start_herald(env, "worker", "worker", logs=scratch / "w")
    try:
        for _ in range(3):  # the same event published three times, consumed by both workers at once
            xadd_topic(seeded.redis_url, "big-2", "all-hands")
        until(
            lambda: sql(seeded.database_url, "SELECT fanout_done_at IS NOT NULL FROM events") is True, 60, "the fan-out"
        )
        until(lambda: redis.Redis.from_url(seeded.redis_url).xpending(STREAM, "herald")["pending"] == 0, 30, "acks")
    finally:
        stop(workers)
    assert sql(seeded.database_url, "SELECT count(*) FROM events") == 1
    assert_exact(seeded.database_url, seeded.redis_url, RECIPIENTS)


def test_a_worker_stopped_mid_fan_out_finishes_or_returns_its_jobs(seeded: Servers, scratch: Path) -> None:
    env = fault_env(seeded.database_url, seeded.redis_url)
    first = start_herald(env, "worker", logs=scratch / "a")
    xadd_topic(seeded.redis_url, "big-3", "all-hands")
    until(
        lambda: (sql(seeded.database_url, "SELECT count(*) FROM fanout_chunks WHERE rows IS NOT NULL") or 0) >= 1,
        30,
        "a first chunk",
    )
    started = time.monotonic()
    first[0].send_signal(signal.SIGTERM)
    assert first[0].wait(30) == 0 and time.monotonic() - started < 30
    second = start_herald(env, "worker", logs=scratch / "b")
    try:
        until(lambda: sql(seeded.database_url, "SELECT fanout_done_at IS NOT NULL FROM events") is True, 60, "the rest")
    finally:
        stop(second)
    assert_exact(seeded.database_url, seeded.redis_url, RECIPIENTS)


def test_an_api_stopped_while_a_request_is_in_flight_finishes_it(servers: Servers, clean: None, scratch: Path) -> None:
    env = fault_env(servers.database_url, servers.redis_url)
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "cal", env=env))["token"]
    api = start_herald(env, "api", logs=scratch / "api")
    base = f"http://127.0.0.1:{env['HERALD_PORT']}"
    answer: dict[str, httpx.Response] = {}
    import asyncio

    async def hold_the_row() -> None:
        # Cal has one unread notification; holding its row makes "mark all read" wait mid-statement.
        conn = await asyncpg.connect(servers.database_url)
        try:
            await conn.execute(
                """WITH u AS (SELECT id, tenant_id FROM users WHERE external_id = 'cal'),
                        e AS (INSERT INTO events (tenant_id, external_id, type, message, occurred_at)
                              SELECT tenant_id, 'held', 't', 'm', now() FROM u RETURNING id)
                   INSERT INTO inbox (user_id, event_id, created_at) SELECT u.id, e.id, now() FROM u, e"""
            )
            await conn.execute(
                "UPDATE inbox_counts SET unread = 1, total = 1, unseen = 1, version = version + 1"
                " WHERE user_id = (SELECT id FROM users WHERE external_id = 'cal')"
            )
            async with conn.transaction():
                await conn.execute("SELECT 1 FROM inbox FOR UPDATE")
                request = threading.Thread(
                    target=lambda: answer.setdefault(
                        "r", httpx.patch(base + "/v1/notifications/read-all", headers={"X-API-Key": token}, timeout=30)
                    )
                )
                request.start()
                await asyncio.sleep(1.0)  # the request is now in flight
                api[0].send_signal(signal.SIGTERM)
                await asyncio.sleep(1.0)  # it is still in flight when the process is asked to stop
            request.join(30)
        finally:
            await conn.close()

    try:
        asyncio.run(hold_the_row())
        assert answer["r"].status_code == 200
        assert answer["r"].json()["data"]["marked_count"] == 1
        assert api[0].wait(30) == 0
    finally:
        stop(api)
