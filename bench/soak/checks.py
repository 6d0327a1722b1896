"""What the soak watches while it runs, and what it checks once the load has stopped."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis

from bench.soak.load import Ledger
from bench.soak.seed import Tenant
from bench.soak.servers import Herald, cpu_seconds, database_name, machine_busy, redis_db, rss_bytes, tree
from service.keys import DEAD, GROUP, QUEUE, STREAM
from service.local.harness import Servers
from service.local.invariants import check_counts

MiB = 1024 * 1024


class Observer:
    """Samples of every process we started and of the servers' connection lists."""

    def __init__(self, servers: Servers, herald: Herald, db: asyncpg.Connection, rd: aioredis.Redis) -> None:
        self.servers, self.herald, self.db, self.rd = servers, herald, db, rd
        self.extra_cpu: dict[str, float] = {}  # e.g. the pollers' process, reported by itself
        self._last_cpu: dict[str, float] | None = None
        self._last_time = 0.0
        self._last_machine = (0.0, 0.0)

    def _groups(self) -> dict[str, list[int]]:
        groups = {p.name: tree(p.proc.pid) for p in self.herald.parts}
        if self.servers.postgres_pid:
            groups["postgres"] = tree(self.servers.postgres_pid)
        if self.servers.redis_pid:
            groups["redis"] = tree(self.servers.redis_pid)
        return groups

    async def sample(self) -> dict[str, Any]:
        now = time.monotonic()
        groups = self._groups()
        rss: dict[str, dict[str, int]] = {}
        for name, pids in groups.items():
            if name in ("postgres", "redis"):
                continue
            rss[name] = {str(pid): value for pid in pids if (value := rss_bytes(pid)) is not None}
        cpu = {name: sum(cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}
        cpu["soak-load"] = time.process_time()
        cpu.update(self.extra_cpu)
        busy, total = machine_busy()
        cpu_share: dict[str, float] = {}
        if self._last_cpu is not None:
            elapsed = now - self._last_time
            # Share of one core: 1.0 is one core fully busy; the machine has os.cpu_count() of them.
            cpu_share = {k: round((v - self._last_cpu.get(k, 0.0)) / elapsed, 3) for k, v in cpu.items()}
            cpu_share["machine"] = round(
                (busy - self._last_machine[0]) / max(1e-9, total - self._last_machine[1]) * (os.cpu_count() or 1), 3
            )
            known = sum(v for k, v in cpu_share.items() if k != "machine")
            cpu_share["other"] = round(max(0.0, cpu_share["machine"] - known), 3)
        self._last_cpu, self._last_time, self._last_machine = cpu, now, (busy, total)

        rows = await self.db.fetch(
            "SELECT coalesce(application_name, '') AS app, count(*) AS n FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid() GROUP BY 1",
            database_name(self.servers.database_url),
        )
        pg = {r["app"] or "(none)": r["n"] for r in rows}
        clients = await self.rd.client_list()
        redis_clients: dict[str, int] = {}
        for c in clients:
            if int(c.get("db", -1)) != redis_db(self.servers.redis_url) or c.get("name") == "herald-soak":
                continue
            name = c.get("name") or "herald"
            redis_clients[name] = redis_clients.get(name, 0) + 1
        return {
            "rss": rss,
            "rss_total": {name: sum(v.values()) for name, v in rss.items()},
            "cpu_cores": cpu_share,
            "pg_connections": pg,
            "redis_clients": redis_clients,
            "stream": await stream_state(self.rd),
        }


async def stream_state(rd: aioredis.Redis) -> dict[str, int | None]:
    """Entries written, not yet delivered (lag), delivered but not acknowledged, dead, queued jobs."""
    state: dict[str, int | None] = {"length": await rd.xlen(STREAM), "lag": None, "pending": None}
    try:
        groups = await rd.xinfo_groups(STREAM)
    except Exception:  # no group yet: no worker has read the stream
        groups = []
    for g in groups:
        if g["name"] in (GROUP, GROUP.encode()):
            state["lag"] = g.get("lag")
            state["pending"] = g.get("pending")
    state["dead"] = await rd.xlen(DEAD)
    state["queued_jobs"] = await rd.zcard(QUEUE)
    return state


async def drain(rd: aioredis.Redis, timeout: float) -> tuple[bool, float]:
    """Wait until the workers have taken and acknowledged every entry and job; (done, seconds)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        s = await stream_state(rd)
        if s["lag"] == 0 and s["pending"] == 0 and s["queued_jobs"] == 0:
            return True, time.monotonic() - began
        await asyncio.sleep(0.5)
    return False, time.monotonic() - began


async def verify(
    db: asyncpg.Connection, rd: aioredis.Redis, base: str, tenant: Tenant, ledger: Ledger
) -> dict[str, Any]:
    """Every accepted event reached exactly its recipients, and every count agrees with the rows."""
    out: dict[str, Any] = {}
    tenant_id = await db.fetchval("SELECT id FROM tenants WHERE name = $1", tenant.name)

    # 1. Events: recorded, fanned out, and nothing recorded that we did not publish.
    events = await db.fetch(
        "SELECT external_id, fanout_done_at IS NOT NULL AS done FROM events WHERE tenant_id = $1", tenant_id
    )
    recorded = {r["external_id"] for r in events}
    accepted = set(ledger.published)
    out["events_accepted"] = len(accepted)
    out["events_uncertain"] = len(ledger.uncertain)
    out["events_recorded"] = len(recorded)
    out["events_missing"] = sorted(accepted - recorded)[:20]
    out["events_missing_count"] = len(accepted - recorded)
    out["events_unexpected_count"] = len(recorded - accepted - ledger.uncertain)
    out["events_not_fanned_out"] = sum(1 for r in events if not r["done"])

    # 2. Rows: (event, recipient) pairs against what each event's audience and our deletes say.
    expected: set[tuple[str, str]] = set()
    for eid, (users, topics) in ledger.published.items():
        recipients = set(users)
        for topic in topics:
            recipients.update(tenant.topics[topic])
        expected.update((eid, u) for u in recipients)
    rows = await db.fetch(
        "SELECT e.external_id AS event, u.external_id AS user FROM inbox i "
        "JOIN events e ON e.id = i.event_id JOIN users u ON u.id = i.user_id WHERE e.tenant_id = $1",
        tenant_id,
    )
    actual = {(r["event"], r["user"]) for r in rows}
    out["rows"] = len(rows)
    out["rows_duplicated"] = len(rows) - len(actual)
    out["rows_deleted_by_soak"] = len(ledger.deleted)
    should = expected - ledger.deleted
    unsure = ledger.uncertain_deletes | {p for p in actual if p[0] in ledger.uncertain}
    missing = should - actual - unsure
    extra = actual - should - unsure
    out["rows_expected"] = len(should)
    out["rows_missing"] = len(missing)
    out["rows_unexpected"] = len(extra)
    out["rows_missing_sample"] = sorted(missing)[:10]
    out["rows_unexpected_sample"] = sorted(extra)[:10]

    # 3. Counts: the invariant (service/local/invariants.py), for this tenant: the shown rows =
    # inbox_counts (unread, total, unseen) = the Redis copy. It runs after the load, when the last
    # snoozes have come back.
    counts = await check_counts(db, rd, tenant_id)
    out["users_checked"] = counts.users
    out["counts_off"] = len(counts.rows_off)
    out["counts_off_sample"] = counts.rows_off[:10]
    out["redis_copies_present"] = counts.copies_present
    out["redis_copies_off"] = len(counts.copies_off)
    out["redis_copies_off_sample"] = counts.copies_off[:10]
    out["types_off"] = len(counts.types_off)
    out["types_off_sample"] = counts.types_off[:10]

    # 4. The badge itself, through the API, for every user (no If-None-Match).
    unread_rows = {user: shown[0] for user, shown in counts.shown.items()}
    wrong = []
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        sem = asyncio.Semaphore(16)

        async def one(user: str) -> None:
            async with sem:
                reply = await client.get("/v1/unread-count", headers={"Authorization": f"Bearer {tenant.tokens[user]}"})
            got = reply.json().get("unread_count") if reply.status_code == 200 else reply.status_code
            if got != unread_rows.get(user, 0):
                wrong.append(f"{user}: badge {got}, rows {unread_rows.get(user, 0)}")

        await asyncio.gather(*(one(u) for u in tenant.users))
    out["badges_checked"] = len(tenant.users)
    out["badges_off"] = len(wrong)
    out["badges_off_sample"] = wrong[:10]
    return out
