"""List reads on a real streaming replica, and a user's own writes seen at once (read-your-writes)."""

from __future__ import annotations

import asyncio
import time

import httpx

from service import admin, ids
from service.backends.replica import REPLAY_FRESH
from service.local.harness import Servers
from service.metrics import REGISTRY
from service.process import Backends
from service.settings import Settings
from tests.support.factories import JobRecorder, make_event
from tests.support.http import serving
from tests.support.replication import Replicated
from workers.delivery import Delivery

BASE = "/v1/notifications"


def reads(target: str) -> float:
    return REGISTRY.get_sample_value("herald_db_reads_total", {"target": target}) or 0.0


async def listed(http: httpx.AsyncClient, token: str) -> list[dict[str, object]]:
    reply = await http.get(BASE, headers={"X-API-Key": token})
    assert reply.status_code == 200, reply.text
    items: list[dict[str, object]] = reply.json()["data"]["notifications"]
    return items


async def test_lists_read_the_replica_and_a_users_own_writes_are_seen_at_once(
    replicated: Replicated, servers: Servers, clean: None
) -> None:
    settings = Settings(
        database_url=replicated.primary_url,
        redis_url=servers.redis_url,
        database_replica_url=replicated.standby_url,
        backend_timeout=2.0,
        db_pool_size=4,
    )
    writer = await Backends.open(settings, "herald-test")
    try:
        async with writer.pool.acquire() as conn:
            alice = (await admin.create_user(conn, "acme", "alice")).token
            bob = (await admin.create_user(conn, "acme", "bob")).token
        fan = Delivery(writer, JobRecorder())  # type: ignore[arg-type]
        for n in range(3):
            await fan.ingest(make_event(id=f"before-{n}", users=["alice", "bob"]))
        await replicated.caught_up()

        async with serving(settings) as http:
            # Caught up: lists are read on the replica.
            on_replica = reads("replica")
            assert len(await listed(http, alice)) == 3
            assert reads("replica") == on_replica + 1

            # Replay paused: what the workers write now is not on the replica yet, so a list read
            # there does not show it (the proof that lists are read there) ...
            await replicated.pause_replay()
            await fan.ingest(make_event(id="during", users=["alice", "bob"]))
            assert len(await listed(http, alice)) == 3
            assert len(await listed(http, bob)) == 3
            assert reads("replica") == on_replica + 3

            # ... but Alice's own write is seen by Alice at once, however far behind the replica is:
            # her reads go to the primary until the replica has replayed it.
            first = (await listed(http, alice))[-1]["id"]
            marked = await http.patch(f"{BASE}/{first}/read", headers={"X-API-Key": alice})
            assert marked.status_code == 200, marked.text
            on_primary = reads("primary")
            mine = await listed(http, alice)
            assert len(mine) == 4 and {n["id"]: n["is_read"] for n in mine}[first] is True
            got = await http.get(f"{BASE}/{first}", headers={"X-API-Key": alice})
            assert got.json()["data"]["is_read"] is True
            read_all = await http.patch(f"{BASE}/read-all", headers={"X-API-Key": alice})
            assert read_all.json()["data"]["marked_count"] == 3
            assert all(n["is_read"] for n in await listed(http, alice))
            assert reads("primary") == on_primary + 3
            # Another API process (its own connections and memory) knows through Redis.
            async with serving(settings) as other:
                mine = await listed(other, alice)
                assert len(mine) == 4 and all(n["is_read"] for n in mine)
            # Bob wrote nothing: he still reads the (paused) replica.
            assert len(await listed(http, bob)) == 3

            # A row announced on a stream but not yet on the replica is found on the primary.
            row = await fan.ingest(make_event(id="announced", users=["bob"]))
            announced = ids.to_scalebox(row.deliveries[0].inbox_id)
            assert (await http.get(f"{BASE}/{announced}", headers={"X-API-Key": bob})).status_code == 200

            # Replay resumed and caught up: Alice's reads return to the replica, which has her writes.
            await replicated.resume_replay()
            await replicated.caught_up()
            await asyncio.sleep(REPLAY_FRESH * 2)
            on_replica = reads("replica")
            mine = await listed(http, alice)
            assert len(mine) == 4 and all(n["is_read"] for n in mine)
            assert len(await listed(http, bob)) == 5
            assert reads("replica") == on_replica + 2
            # Another process's view: the standby itself served those reads.
            served = await replicated.on_standby(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'herald-api-replica'"
            )
            assert served >= 1  # type: ignore[operator]

            # The replica goes away: reads fall back to the primary, never a 503.
            await asyncio.to_thread(replicated.standby.stop)
            started = time.monotonic()
            on_primary = reads("primary")
            mine = await listed(http, alice)
            assert len(mine) == 4 and time.monotonic() - started < 3
            assert len(await listed(http, bob)) == 5
            assert reads("primary") == on_primary + 2
    finally:
        await writer.close()
