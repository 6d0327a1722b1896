"""Erasure through Herald's real processes: `herald worker` finishes what DELETE asks (with the
user's open stream ended by the API), `herald admin erase-user` does it itself and waits, and a
worker that starts takes up an erasure a dead worker left half done."""

import time
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
import redis
import redis.asyncio as aioredis

from service import erasure
from service.keys import STREAM
from service.process import Backends
from service.settings import Settings
from tests.support.erasure import seed_inbox, traces
from tests.support.processes import herald, json_line, start_herald, stop
from tests.support.sse import open_stream

# The contract's bound for a user with up to 10,000 notifications.
TEN_THOUSAND_WITHIN = 10.0


def _user(env: dict[str, str], user: str, role: str = "member") -> dict[str, str]:
    made: dict[str, str] = json_line(
        herald("admin", "create-user", "--tenant", "acme", "--user", user, "--role", role, env=env)
    )
    return {"Authorization": f"Bearer {made['token']}"}


def _publish(env: dict[str, str], event_id: str, users: list[str]) -> None:
    r = redis.Redis.from_url(env["HERALD_REDIS_URL"])
    event = {"id": event_id, "type": "t", "tenant": "acme", "audience": {"users": users}, "message": event_id}
    r.xadd(STREAM, {"event": msgspec.json.encode(event)})
    r.close()


async def _badge(http: httpx.AsyncClient, headers: dict[str, str], want: int) -> None:
    deadline = time.monotonic() + 5
    while (await http.get("/v1/unread-count", headers=headers)).json()["unread_count"] != want:
        assert time.monotonic() < deadline, f"the badge never showed {want}"
        time.sleep(0.05)


async def _gone_within(http: httpx.AsyncClient, admin: dict[str, str], user: str, bound: float) -> float:
    """Seconds until GET /v1/admin/users/{user} answers 404."""
    started = time.monotonic()
    while (await http.get(f"/v1/admin/users/{user}", headers=admin)).status_code != 404:
        assert time.monotonic() - started < bound, f"{user} not erased within {bound} s"
        time.sleep(0.05)
    return time.monotonic() - started


async def _traces(env: dict[str, str], user_id: int, user: str) -> list[str]:
    conn = await asyncpg.connect(env["HERALD_DATABASE_URL"])
    client = aioredis.Redis.from_url(env["HERALD_REDIS_URL"])
    try:
        return await traces(conn, client, user_id, "acme", user)
    finally:
        await client.aclose()
        await conn.close()


async def _seed(env: dict[str, str], user: str, n: int) -> int:
    conn = await asyncpg.connect(env["HERALD_DATABASE_URL"])
    try:
        return await seed_inbox(conn, "acme", user, n)
    finally:
        await conn.close()


async def test_the_worker_finishes_what_delete_asks_and_a_later_event_makes_a_new_user(
    env: dict[str, str], running: str
) -> None:
    admin, alice, bob = _user(env, "root", "admin"), _user(env, "alice"), _user(env, "bob")
    user_id = await _seed(env, "alice", 10_000)  # before any count of hers is cached
    for n in range(3):
        _publish(env, f"e{n}", ["alice", "bob"])
    async with httpx.AsyncClient(base_url=running, timeout=10) as http:
        await _badge(http, alice, 10_003)
        await _badge(http, bob, 3)
        async with open_stream(running, alice) as stream:
            assert (await stream.next_event()).json()["unread_count"] == 10_003
            reply = await http.delete("/v1/admin/users/alice", headers=admin)
            assert (reply.status_code, reply.json()) == (202, {"erasing": "alice"})
            with pytest.raises(EOFError):
                await stream.next(timeout=5)
        await _gone_within(http, admin, "alice", TEN_THOUSAND_WITHIN)
        assert await _traces(env, user_id, "alice") == []
        assert (await http.get("/v1/unread-count", headers=alice)).status_code == 401
        await _badge(http, bob, 3)

        _publish(env, "later", ["alice"])
        deadline = time.monotonic() + 5
        while (shown := await http.get("/v1/admin/users/alice", headers=admin)).status_code != 200:
            assert time.monotonic() < deadline, "the later event made no user"
            time.sleep(0.05)
        assert shown.json() == {"user": "alice", "role": "member", "active": True}
        token = json_line(herald("admin", "create-token", "--tenant", "acme", "--user", "alice", env=env))["token"]
        await _badge(http, {"X-API-Key": token}, 1)


async def test_the_cli_erases_and_waits(env: dict[str, str]) -> None:
    _user(env, "carol")
    user_id = await _seed(env, "carol", 10_000)
    started = time.monotonic()
    done = json_line(herald("admin", "erase-user", "--tenant", "acme", "--user", "carol", env=env))
    assert time.monotonic() - started < TEN_THOUSAND_WITHIN
    assert done == {"tenant": "acme", "user": "carol", "erased": True, "rows": 10_000}
    assert await _traces(env, user_id, "carol") == []
    again = herald("admin", "erase-user", "--tenant", "acme", "--user", "carol", env=env)
    assert again.returncode == 1 and b"no user 'carol'" in again.stderr


async def test_a_worker_that_starts_takes_up_an_erasure_left_half_done(env: dict[str, str], tmp_path: Path) -> None:
    admin = _user(env, "root", "admin")
    _user(env, "dora")
    user_id = await _seed(env, "dora", 25_000)
    # What a worker that died after one batch leaves: the mark, rows left, no job queued.
    settings = Settings(database_url=env["HERALD_DATABASE_URL"], redis_url=env["HERALD_REDIS_URL"])
    b = await Backends.open(settings, "herald-test")
    try:
        assert await erasure.begin(b, "acme", "dora") == user_id
        progress = await erasure.run(b, user_id, batches=1)
        assert (progress.rows, progress.done) == (erasure.BATCH, False)
    finally:
        await b.close()
    procs = start_herald(env, "api", "worker", logs=tmp_path)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{env['HERALD_PORT']}", timeout=10) as http:
            shown = await http.get("/v1/admin/users/dora", headers=admin)
            assert shown.status_code in (200, 404)  # the worker may be done already
            await _gone_within(http, admin, "dora", 10)
        assert await _traces(env, user_id, "dora") == []
    finally:
        stop(procs)
