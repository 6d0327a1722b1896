"""A Redis failover under load, on real servers: the primary is killed, the sentinels promote a
replica, and the same `herald api` and `herald worker` processes carry on. Every event that was
acknowledged (202) is delivered exactly once, and the counts are exact."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest

from service.local.embedded import free_port
from service.local.harness import Servers
from tests.support.processes import herald, json_line, start_herald, stop
from tests.support.replication import Sentinels

USERS = ("ann", "ben")


class Publisher(threading.Thread):
    """Publishes events one after another, as a careful producer does: an event that is not
    acknowledged is published again (same id) until it is."""

    def __init__(self, base: str, token: str) -> None:
        super().__init__(daemon=True)
        self.base, self.token = base, token
        self.accepted: list[str] = []  # ids acknowledged with 202, in order
        self.refused = 0  # answers other than 202 (and failed connections), all retried
        self.attempted: set[str] = set()
        self.stopping = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.token}"}) as http:
            n = 0
            while not self.stopping.is_set():
                event_id = f"evt-{n:05d}"
                body = {
                    "id": event_id,
                    "type": "t",
                    "tenant": "acme",
                    "audience": {"users": list(USERS)},
                    "message": "m",
                }
                self.attempted.add(event_id)
                try:
                    status = http.post("/v1/events", json=body, timeout=10).status_code
                except httpx.HTTPError:
                    status = 0
                if status == 202:
                    self.accepted.append(event_id)
                    n += 1
                    time.sleep(0.02)
                else:
                    self.refused += 1
                    time.sleep(0.1)


def until(check, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what} not reached within {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - started


def ready(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


async def delivered(database_url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT u.external_id, e.external_id FROM inbox i JOIN users u ON u.id = i.user_id "
            "JOIN events e ON e.id = i.event_id"
        )
    finally:
        await conn.close()
    found: dict[str, list[str]] = {u: [] for u in USERS}
    for user, event in rows:
        found[user].append(event)
    return found


def test_a_redis_failover_loses_no_accepted_event(
    sentinels: Sentinels, servers: Servers, clean: None, tmp_path: Path
) -> None:
    import asyncio

    env = {
        **os.environ,
        "HERALD_DATABASE_URL": servers.database_url,
        "HERALD_REDIS_URL": sentinels.url,
        "HERALD_PORT": str(free_port()),
        "HERALD_BACKEND_TIMEOUT": "2",
        # An event is acknowledged only once a replica holds it too: the promoted one has it.
        "HERALD_PUBLISH_REPLICAS": "1",
        "HERALD_RATE_LIMIT_PUBLISHES": "0",
    }
    base = f"http://127.0.0.1:{env['HERALD_PORT']}"
    tokens = {
        u: json_line(herald("admin", "create-user", "--tenant", "acme", "--user", u, env=env))["token"] for u in USERS
    }
    producer = json_line(
        herald("admin", "create-token", "--tenant", "acme", "--user", "svc", "--kind", "producer", env=env)
    )
    procs = start_herald(env, "api", "worker", logs=tmp_path / "logs")
    publisher = Publisher(base, producer["token"])
    try:
        publisher.start()
        until(lambda: len(publisher.accepted) >= 30, 15, "30 events accepted before the failover")

        old = sentinels.primary.port
        sentinels.primary.kill()
        killed_at, before = time.monotonic(), len(publisher.accepted)
        promoted = until(lambda: sentinels.master_port() not in (0, old), 30, "a replica promoted")
        # The same processes answer again, without a restart, and keep accepting events.
        until(lambda: ready(base), 30, "the API ready again")
        until(lambda: len(publisher.accepted) >= before + 30, 30, "30 events accepted after the failover")
        back = time.monotonic() - killed_at
        publisher.stopping.set()
        publisher.join(15)

        # Also through the CLI, on the sentinel URL.
        cli = herald("publish", "-", env=env, stdin=msgspec.json.encode(
            {"id": "from-cli", "type": "t", "tenant": "acme", "audience": {"users": list(USERS)}, "message": "m"}
        ))  # fmt: skip
        assert json_line(cli) == {"accepted": 1}
        accepted = [*publisher.accepted, "from-cli"]
        letters = herald("admin", "dead-letters", env=env)
        assert letters.returncode == 0 and letters.stdout == b"", letters.stderr.decode()

        # Every acknowledged event is delivered, exactly once per recipient; nothing else is.
        def all_there() -> bool:
            found = asyncio.run(delivered(servers.database_url))
            return all(set(accepted) <= set(events) for events in found.values())

        until(all_there, 45, "every accepted event delivered")
        found = asyncio.run(delivered(servers.database_url))
        for user in USERS:
            assert len(found[user]) == len(set(found[user])), "an event was delivered twice"
            assert set(found[user]) <= publisher.attempted | {"from-cli"}
            # Exact counts, from the badge (Redis, rebuilt or copied) and from the list.
            h = {"Authorization": f"Bearer {tokens[user]}"}
            assert httpx.get(base + "/v1/unread-count", headers=h).json()["unread_count"] == len(found[user])
        assert all(p.poll() is None for p in procs), "a Herald process died during the failover"
        print(  # noqa: T201 (the figures of the run, shown with -s)
            f"\nfailover: promoted after {promoted:.1f} s, API publishing again after {back:.1f} s; "
            f"{len(accepted)} accepted, {publisher.refused} refused and retried, "
            f"{len(found[USERS[0]]) - len(accepted)} delivered beyond the accepted"
        )
    finally:
        publisher.stopping.set()
        stop(procs)


pytestmark = pytest.mark.timeout(120)
