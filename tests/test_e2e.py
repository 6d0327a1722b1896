"""Herald as it runs: real `herald api`, `herald worker` and CLI processes, events sent by XADD."""

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest
import redis

from service.keys import STREAM
from service.local.embedded import free_port
from tests.support.processes import herald, json_line, stop, wait_ready
from tests.support.sse import open_stream


def test_an_event_sent_by_xadd_is_readable_within_a_second(env: dict[str, str], running: str) -> None:
    made = json_line(
        herald("admin", "create-user", "--tenant", "acme", "--user", "alice", "--role", "manager", env=env)
    )
    assert set(made) == {"tenant", "user", "role", "token"}
    assert (made["tenant"], made["user"], made["role"]) == ("acme", "alice", "manager")
    headers = {"Authorization": f"Bearer {made['token']}"}
    event = {
        "id": "scan-50001-completed",
        "type": "scan.completed",
        "tenant": "acme",
        "audience": {"users": ["alice"]},
        "message": "A Scan operation on Healthcare Analytics has completed.",
        "action_url": "/datastores/101",
    }
    r = redis.Redis.from_url(env["HERALD_REDIS_URL"])
    sent = time.monotonic()
    r.xadd(STREAM, {"event": msgspec.json.encode(event)})
    while True:
        body = httpx.get(running + "/api/user-notifications", headers=headers, timeout=2).json()
        if body["total"] == 1:
            break
        assert time.monotonic() - sent < 1.0, "not visible within one second"
        time.sleep(0.01)
    assert body["items"][0]["notification"]["target_url"] == "https://app.example/datastores/101"
    count = httpx.get(running + "/v1/unread-count", headers=headers).json()
    assert count["unread_count"] == 1
    r.close()


def test_the_cli_publishes_subscribes_and_deactivates(env: dict[str, str], running: str) -> None:
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "bob", env=env))["token"]
    headers = {"X-API-Key": token}
    assert json_line(herald("admin", "subscribe", "--tenant", "acme", "--user", "bob", "--topic", "nightly", env=env))
    producer = json_line(
        herald("admin", "create-token", "--tenant", "acme", "--user", "svc", "--kind", "producer", env=env)
    )
    assert producer["token"].startswith("herald_prd_")
    batch = [
        {"id": f"n{i}", "type": "t", "tenant": "acme", "audience": {"topics": ["nightly"]}, "message": f"m{i}"}
        for i in range(3)
    ]
    assert json_line(herald("publish", "-", env=env, stdin=msgspec.json.encode(batch))) == {"accepted": 3}
    deadline = time.monotonic() + 5
    while httpx.get(running + "/api/user-notifications", headers=headers).json()["total"] != 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The producer token publishes over HTTP too.
    reply = httpx.post(
        running + "/v1/events",
        json={**batch[0], "id": "http-1"},
        headers={"Authorization": f"Bearer {producer['token']}"},
    )
    assert reply.status_code == 202
    bad = herald("publish", "-", env=env, stdin=b'[{"id": "x"}]')
    assert bad.returncode == 1 and b"event 0" in bad.stderr and b"nothing was published" in bad.stderr
    assert (
        json_line(herald("admin", "deactivate-user", "--tenant", "acme", "--user", "bob", env=env))["active"] is False
    )
    deadline = time.monotonic() + 1
    while httpx.get(running + "/v1/unread-count", headers=headers).status_code != 403:
        assert time.monotonic() < deadline, "deactivation not effective within a second"
        time.sleep(0.02)


def test_migrate_is_idempotent(env: dict[str, str]) -> None:
    assert json_line(herald("migrate", env=env)) == {"migrated": True}
    assert json_line(herald("migrate", env=env)) == {"migrated": True}


async def test_a_change_through_one_api_process_reaches_a_stream_held_by_another(
    env: dict[str, str], running: str
) -> None:
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "carol", env=env))["token"]
    headers = {"Authorization": f"Bearer {token}"}
    other_env = {**env, "HERALD_PORT": str(free_port())}
    other = f"http://127.0.0.1:{other_env['HERALD_PORT']}"
    second = subprocess.Popen([sys.executable, "-m", "service.cli", "api"], env=other_env)
    try:
        wait_ready(other, [second])
        async with open_stream(running, headers) as stream:
            assert (await stream.next_event()).json()["unread_count"] == 0
            event = {"id": "x1", "type": "t", "tenant": "acme", "audience": {"users": ["carol"]}, "message": "hi"}
            r = redis.Redis.from_url(env["HERALD_REDIS_URL"])
            r.xadd(STREAM, {"event": msgspec.json.encode(event)})
            r.close()
            note = await stream.next_event()
            assert note.event == "notification" and note.json()["message"] == "hi"
            assert (await stream.next_event()).json()["unread_count"] == 1
            async with httpx.AsyncClient(base_url=other, headers=headers) as http:
                assert (await http.patch("/v1/notifications/read-all")).json()["data"]["marked_count"] == 1
            assert (await stream.next_event()).json()["unread_count"] == 0
    finally:
        stop([second])


async def test_sigterm_ends_open_streams_cleanly_and_the_api_exits(env: dict[str, str]) -> None:
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "dan", env=env))["token"]
    base = f"http://127.0.0.1:{env['HERALD_PORT']}"
    api = subprocess.Popen([sys.executable, "-m", "service.cli", "api"], env=env)
    try:
        wait_ready(base, [api])
        async with open_stream(base, {"X-API-Key": token}) as stream:
            await stream.next_event()
            started = time.monotonic()
            api.send_signal(signal.SIGTERM)
            with pytest.raises(EOFError):  # the stream ends: no error, no cut connection
                await stream.next(timeout=10)
            assert time.monotonic() - started < 5
        assert api.wait(30) == 0
    finally:
        stop([api])


def test_the_demo_is_only_served_under_herald_dev(running: str) -> None:
    assert httpx.get(f"{running}/demo").status_code == 404
    assert httpx.post(f"{running}/demo/publish").status_code == 404


def test_a_revoked_token_stops_working_within_a_second_even_when_cached(env: dict[str, str], running: str) -> None:
    made = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "gus", env=env))
    other = json_line(herald("admin", "create-token", "--tenant", "acme", "--user", "gus", env=env))["token"]
    for _ in range(3):  # cached now, on the fast path
        assert httpx.get(running + "/v1/unread-count", headers={"X-API-Key": made["token"]}).status_code == 200
    assert json_line(herald("admin", "revoke-token", "--token", made["token"], env=env)) == {"revoked": True}
    deadline = time.monotonic() + 1
    while httpx.get(running + "/v1/unread-count", headers={"X-API-Key": made["token"]}).status_code != 401:
        assert time.monotonic() < deadline, "revocation not effective within a second"
        time.sleep(0.02)
    # The user's other token still works; revoking twice is an error.
    assert httpx.get(running + "/v1/unread-count", headers={"X-API-Key": other}).status_code == 200
    again = herald("admin", "revoke-token", "--token", made["token"], env=env)
    assert again.returncode == 1 and b"already revoked" in again.stderr


def test_dead_letters_are_listed_and_requeued_from_the_cli(env: dict[str, str], running: str) -> None:
    r = redis.Redis.from_url(env["HERALD_REDIS_URL"])
    r.xadd(
        STREAM, {"event": b'{"id": "x", "type": "t", "tenant": "acme", "audience": {"users": ["ann"]}, "message": ""}'}
    )
    deadline = time.monotonic() + 5
    while r.xlen("herald:events:dead") == 0:
        assert time.monotonic() < deadline, "the invalid event was not dead-lettered"
        time.sleep(0.05)
    r.close()
    listed = herald("admin", "dead-letters", env=env)
    assert listed.returncode == 0
    [letter] = [msgspec.json.decode(line) for line in listed.stdout.splitlines()]
    assert set(letter) == {"id", "reason", "event"} and "message" in letter["reason"]
    requeued = json_line(herald("admin", "dead-letters", "--requeue", letter["id"], env=env))
    assert requeued["requeued"] == letter["id"]
    missing = herald("admin", "dead-letters", "--requeue", letter["id"], env=env)
    assert missing.returncode == 1 and b"no dead letter" in missing.stderr


def test_expiry_and_snooze_happen_at_their_time_in_the_real_processes(env: dict[str, str], running: str) -> None:
    """No read triggers them: the worker's sweep does, and the badge shows it within a second or two."""
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "ivy", env=env))["token"]
    headers = {"Authorization": f"Bearer {token}"}
    expires = datetime.now(UTC) + timedelta(seconds=3)
    batch = [
        {"id": "short-lived", "type": "t", "tenant": "acme", "audience": {"users": ["ivy"]}, "message": "soon gone",
         "expires_at": expires.isoformat()},
        {"id": "lasting", "type": "t", "tenant": "acme", "audience": {"users": ["ivy"]}, "message": "stays"},
    ]  # fmt: skip
    assert herald("publish", "-", env=env, stdin=msgspec.json.encode(batch)).returncode == 0

    def badge() -> int:
        return int(httpx.get(running + "/v1/unread-count", headers=headers, timeout=2).json()["unread_count"])

    deadline = time.monotonic() + 5
    while badge() < 2:
        assert time.monotonic() < deadline, "not delivered"
        time.sleep(0.05)
    listed = httpx.get(running + "/v1/notifications", headers=headers).json()["data"]["notifications"]
    lasting = next(n["id"] for n in listed if n["message"] == "stays")
    snooze_until = expires + timedelta(seconds=2)
    reply = httpx.patch(
        f"{running}/v1/notifications/{lasting}/snooze", json={"until": snooze_until.isoformat()}, headers=headers
    )
    assert reply.status_code == 200, reply.text
    assert badge() == 1

    def when(count: int) -> float:
        """Seconds from now until the badge shows `count` (polling only the cached count)."""
        started = time.monotonic()
        while badge() != count:
            assert time.monotonic() - started < 10, f"the badge never showed {count}"
            time.sleep(0.05)
        return time.monotonic() - started

    when(0)
    assert -0.1 < (datetime.now(UTC) - expires).total_seconds() < 2.5, "expired on time"
    when(1)
    assert -0.1 < (datetime.now(UTC) - snooze_until).total_seconds() < 2.5, "back on time"
    listed = httpx.get(running + "/v1/notifications", headers=headers).json()["data"]["notifications"]
    assert [(n["id"], n["is_read"]) for n in listed] == [(lasting, False)]
