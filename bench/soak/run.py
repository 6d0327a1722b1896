"""The whole soak, in order: servers, schema, seed, Herald, load, drain, checks, report."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import queue as queues
import random
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

from bench.soak import report
from bench.soak.checks import Observer, drain, stream_state, verify
from bench.soak.load import Ledger, PollerPlan, Publisher, Sessions, merge_message, start_pollers
from bench.soak.seed import Tenant, seed
from bench.soak.servers import Herald, start_servers
from bench.soak.stats import Tally, Windows
from service.local.harness import Servers

MiB = 1024 * 1024
# A process fails the soak when its RSS at the end of the load exceeds its RSS at the end of the
# first window (caches and pools warmed) by more than this many bytes and this fraction.
RSS_GROWTH_BYTES = 16 * MiB
RSS_GROWTH_FRACTION = 0.15
# Herald's redis-py pools keep every connection they open, up to max_connections=200 per process
# (service/counts/__init__.py): their size is the highest concurrency seen so far, so it may rise while the
# load's latency does and then stays. A leak keeps rising: the soak fails when the last window's
# count exceeds the count at half time by more than this many and this fraction, or any sample
# exceeds the bound.
REDIS_CLIENT_SLACK = 8
REDIS_CLIENT_FRACTION = 0.25
REDIS_POOL_SIZE = 200
DB_POOL_SIZE = 10  # Herald's default HERALD_DB_POOL_SIZE, which the soak does not change


def _runner() -> asyncio.Runner:
    try:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover
        return asyncio.Runner()


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also when started in the background, where the shell leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y-%m-%dT%H-%M")
    run_id = "soak" + started.strftime("%Y%m%d%H%M%S")
    logs = Path(".herald") / "soak" / started.strftime("%Y-%m-%dT%H-%M-%S")
    print(f"soak: starting servers (logs in {logs})", flush=True)
    servers = start_servers()
    herald: Herald | None = None
    try:
        herald = Herald(servers, logs, api_workers=args.api_workers, workers=args.workers)
        herald.cli("migrate")
        with _runner() as runner:
            runner.run(_flush(servers.redis_url))
            rng = random.Random(args.seed)
            t = time.monotonic()
            tenant = runner.run(seed(servers.database_url, run_id, users=args.users, topics=5, subscribers=25, rng=rng))
            print(
                f"soak: seeded tenant {tenant.name}: {len(tenant.users)} users, "
                f"{len(tenant.topics)} topics in {time.monotonic() - t:.1f} s",
                flush=True,
            )
            herald.start()
            print(
                f"soak: herald api --workers {args.api_workers} and {args.workers} herald worker at {herald.base}",
                flush=True,
            )
            result = runner.run(_soak(args, servers, herald, tenant, rng))
        exits = herald.stop()
        herald = None
        result["exits"] = exits
        result["logs"] = _scan_logs(logs)
        result["log_dir"] = str(logs)
        result["started_at"] = started.isoformat(timespec="seconds")
        _judge(result)
        print(report.final_text(result), flush=True)
        if args.minutes >= 5:
            for path in report.write(result, Path(args.out), stamp):
                print(f"soak: wrote {path}", flush=True)
        else:  # a short run is for trying things: it does not replace the last full run's figures
            print("soak: a run shorter than 5 minutes: results not saved", flush=True)
        return 0 if result["passed"] else 1
    except KeyboardInterrupt:
        print("\nsoak: interrupted; stopping everything it started", file=sys.stderr, flush=True)
        return 130
    finally:
        if herald is not None:
            herald.stop()
        servers.stop()


async def _flush(redis_url: str) -> None:
    """Empty the soak's Redis database (never database 0: Servers refuses it)."""
    rd = aioredis.Redis.from_url(redis_url, client_name="herald-soak")
    try:
        await rd.flushdb()
    finally:
        await rd.aclose()


async def _soak(
    args: argparse.Namespace, servers: Servers, herald: Herald, tenant: Tenant, rng: random.Random
) -> dict[str, Any]:
    db = await asyncpg.connect(servers.database_url, server_settings={"application_name": "herald-soak"})
    rd = aioredis.Redis.from_url(servers.redis_url, client_name="herald-soak", socket_timeout=10)
    observer = Observer(servers, herald, db, rd)
    pollers: list[tuple[Any, Any]] = []
    try:
        await observer.sample()  # CPU baseline
        await asyncio.sleep(1)
        start_sample = await observer.sample()
        duration = args.minutes * 60
        width = args.window
        start = time.monotonic() + 0.5
        stop_at = start + duration
        windows = Windows(start, width)
        ledger = Ledger()
        per_proc = [
            args.pollers // args.poller_procs + (i < args.pollers % args.poller_procs) for i in range(args.poller_procs)
        ]
        for i, connections in enumerate(per_proc):
            plan = PollerPlan(
                "127.0.0.1",
                herald.port,
                list(tenant.tokens.values()),
                connections,
                args.badge_rate * connections / args.pollers,
                start,
                width,
                stop_at,
                args.seed + i,
            )
            pollers.append(start_pollers(plan))
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        publisher = Publisher(herald.port, servers.redis_url, tenant, tenant.name, args.rate, windows, ledger, rng)
        sessions = Sessions(herald.port, tenant, args.sessions, windows, ledger, rng)
        load = [asyncio.create_task(publisher.run(stop_at)), asyncio.create_task(sessions.run(stop_at))]

        print(report.window_header(), flush=True)
        records: list[dict[str, Any]] = []
        poller_cpu = [0.0] * len(pollers)
        count = math.ceil(duration / width - 1e-9)
        for w in range(count):
            t0, t1 = w * width, min((w + 1) * width, duration)
            await asyncio.sleep(max(0.0, start + t1 + 0.3 - time.monotonic()))
            if w == count - 1:
                await asyncio.gather(*load)
            for i, (_, q) in enumerate(pollers):
                message = await _next_window(q, w)
                merge_message(windows, message)
                poller_cpu[i] = message[3]
            observer.extra_cpu = {"soak-pollers": sum(poller_cpu)}
            sample = await observer.sample()
            kinds = windows.pop(w)
            records.append(
                {
                    "index": w,
                    "t0": t0,
                    "t1": t1,
                    "seconds": t1 - t0,
                    "kinds": {k: report.summarize(kinds[k], t1 - t0) for k in _ordered(kinds)},
                    "sample": sample,
                    "_tallies": kinds,
                }
            )
            print(report.window_line(records[-1]), flush=True)
            dead = herald.alive()
            if dead:
                raise RuntimeError(f"herald {', '.join(dead)} exited during the soak; see {herald.logs}")
        for proc, _ in pollers:
            await asyncio.to_thread(proc.join, 15)

        print("soak: load stopped; waiting for the workers to drain the stream", flush=True)
        drained, drain_seconds = await drain(rd, timeout=180)
        # Count copies follow the commit; let the last ones land, and the last snoozes (3 s at most)
        # come back, so that nothing changes while the checks read.
        await asyncio.sleep(4)
        idle_sample = await observer.sample()
        checks = await verify(db, rd, herald.base, tenant, ledger)
        checks["drained"] = drained
        checks["drain_seconds"] = round(drain_seconds, 1)
        checks["dead_letters"] = (await stream_state(rd))["dead"]
        return _assemble(args, herald, tenant, ledger, records, start_sample, idle_sample, checks, duration)
    finally:
        for proc, _ in pollers:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        await rd.aclose()
        await db.close()


async def _next_window(q: Any, window: int) -> tuple[str, int, dict[str, Any], float]:
    """The pollers' tallies for `window` (they send every window in order, then "done")."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            message: tuple[str, int, dict[str, Any], float] = await asyncio.to_thread(q.get, True, 1.0)
        except queues.Empty:
            continue
        if message[0] == "window" and message[1] == window:
            return message
        if message[0] == "done":
            return ("window", window, {}, message[3])
    raise RuntimeError(f"the badge pollers sent nothing for window {window} within 30 s")


def _ordered(kinds: dict[str, Any]) -> list[str]:
    return [k for k in report.KINDS if k in kinds] + sorted(k for k in kinds if k not in report.KINDS)


def _assemble(
    args: argparse.Namespace,
    herald: Herald,
    tenant: Tenant,
    ledger: Ledger,
    records: list[dict[str, Any]],
    start_sample: dict[str, Any],
    idle_sample: dict[str, Any],
    checks: dict[str, Any],
    duration: float,
) -> dict[str, Any]:
    totals: dict[str, Tally] = {}
    for r in records:
        for kind, tally in r.pop("_tallies").items():
            totals.setdefault(kind, Tally()).merge(tally)
    kinds = {k: report.summarize(totals[k], duration) for k in _ordered(totals)}
    warm = records[0]["sample"]
    end = records[-1]["sample"]

    rss = {}
    for name in end["rss_total"]:
        series = [r["sample"]["rss_total"].get(name, 0) for r in records]
        rss[name] = {
            "start": start_sample["rss_total"].get(name, 0),
            "warm": warm["rss_total"].get(name, 0),
            "end": end["rss_total"].get(name, 0),
            "idle_end": idle_sample["rss_total"].get(name, 0),
            "growth": end["rss_total"].get(name, 0) - warm["rss_total"].get(name, 0),
            "max": max(series),
            "per_window": series,
            "processes": len(end["rss"].get(name, {})),
        }
    pg_names = sorted(
        {n for s in [start_sample, idle_sample, *(r["sample"] for r in records)] for n in s["pg_connections"]}
    )
    bounds = {"herald-api": DB_POOL_SIZE * args.api_workers, "herald-worker": DB_POOL_SIZE * args.workers}
    pg = {}
    for name in pg_names:
        series = [r["sample"]["pg_connections"].get(name, 0) for r in records]
        pg[name] = {
            "start": start_sample["pg_connections"].get(name, 0),
            "warm": series[0],
            "end": series[-1],
            "idle_end": idle_sample["pg_connections"].get(name, 0),
            "max": max(series),
            "bound": bounds.get(name),
            "per_window": series,
        }

    def clients(sample: dict[str, Any]) -> int:
        return int(sum(sample["redis_clients"].values()))

    redis_series = [clients(r["sample"]) for r in records]
    cpu_names = sorted({k for r in records for k in r["sample"]["cpu_cores"]})
    cpu_mean = {k: round(sum(r["sample"]["cpu_cores"].get(k, 0) for r in records) / len(records), 2) for k in cpu_names}
    requests = sum(t.n for t in totals.values())
    return {
        "settings": {
            "minutes": args.minutes,
            "rate": args.rate,
            "users": len(tenant.users),
            "topics": {t: len(s) for t, s in tenant.topics.items()},
            "badge_rate": args.badge_rate or "as fast as they go",
            "badge_connections": args.pollers,
            "poller_processes": args.poller_procs,
            "session_rate": args.sessions,
            "api_workers": args.api_workers,
            "workers": args.workers,
            "window_seconds": args.window,
            "seed": args.seed,
            "herald_env": {k: v for k, v in herald.env.items() if k.startswith("HERALD_") and "URL" not in k},
            "servers": "external" if os.environ.get("HERALD_SOAK_DATABASE_URL") else "embedded",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_at_end": os.getloadavg(),
        },
        "summary": {
            "requests": requests,
            "errors": sum(t.errors for t in totals.values()),
            "throttled_429": sum(t.throttled for t in totals.values()),
            "events_accepted": len(ledger.published),
            "publish_rate": len(ledger.published) / duration,
            "skipped_for_backpressure": ledger.skipped,
            "keepalive_retries": ledger.retried,
            "keepalive_closed_by_server": ledger.closed_by_server,
            "badge_per_second": kinds.get("badge", {}).get("per_second"),
        },
        "kinds": kinds,
        "windows": records,
        "resources": {
            "rss": rss,
            "pg_connections": pg,
            "redis_clients": {
                "start": clients(start_sample),
                "warm": redis_series[0],
                "half_time": redis_series[(len(redis_series) - 1) // 2],
                # pools of every process, plus one pub/sub connection per API worker and worker
                "bound": (REDIS_POOL_SIZE + 1) * (args.api_workers + args.workers),
                "end": redis_series[-1],
                "idle_end": clients(idle_sample),
                "max": max(redis_series),
                "per_window": redis_series,
            },
            "cpu_cores_mean": cpu_mean,
            "thresholds": {
                "rss_growth": f"end of load vs end of first window: fail above +{RSS_GROWTH_BYTES // MiB} MiB "
                f"and +{RSS_GROWTH_FRACTION:.0%} together",
                "pg_connections": "fail if any sample exceeds HERALD_DB_POOL_SIZE × processes",
                "redis_clients": f"fail if the end exceeds the count at half time by more than "
                f"{REDIS_CLIENT_SLACK} and {REDIS_CLIENT_FRACTION:.0%}, or any sample exceeds the pools' bound",
            },
        },
        "checks": checks,
    }


def _scan_logs(logs: Path) -> dict[str, int]:
    levels: dict[str, int] = {}
    for path in sorted(logs.glob("*.log")):
        for line in path.read_bytes().splitlines():
            try:
                entry = msgspec.json.decode(line)
                level = str(entry.get("level", "?")) if isinstance(entry, dict) else "?"
            except msgspec.DecodeError:
                # granian's own lines: "[INFO] Started worker-1"
                text = line.decode("utf-8", "replace")
                level = text[1 : text.find("]")].lower() if text.startswith("[") and "]" in text else "unstructured"
            if level not in ("info", "debug"):
                key = f"{path.stem}:{level}"
                levels[key] = levels.get(key, 0) + 1
    return levels


def _judge(result: dict[str, Any]) -> None:
    failures: list[str] = []
    s, c, res = result["summary"], result["checks"], result["resources"]
    if s["errors"]:
        failures.append(f"{s['errors']} request errors")
    if s["publish_rate"] < 0.95 * result["settings"]["rate"]:
        failures.append(
            f"the publisher held {s['publish_rate']:.1f} events/s, under 95% of {result['settings']['rate']}"
        )
    if not c["drained"]:
        failures.append(f"the workers did not drain the stream within {c['drain_seconds']} s")
    for key, what in (
        ("events_missing_count", "accepted events never recorded"),
        ("events_unexpected_count", "events recorded that were never published"),
        ("events_not_fanned_out", "events not fanned out"),
        ("rows_missing", "inbox rows missing (lost deliveries)"),
        ("rows_unexpected", "inbox rows nobody should have"),
        ("rows_duplicated", "duplicated inbox rows"),
        ("counts_off", "users whose inbox_counts differ from their rows"),
        ("redis_copies_off", "Redis count copies that differ from inbox_counts"),
        ("types_off", "inbox rows whose copied type or category is not their event's"),
        ("badges_off", "badges that differ from the rows"),
        ("dead_letters", "dead-lettered events"),
    ):
        if c[key]:
            failures.append(f"{c[key]} {what}")
    for name, r in res["rss"].items():
        if r["growth"] > RSS_GROWTH_BYTES and r["growth"] > RSS_GROWTH_FRACTION * r["warm"]:
            failures.append(
                f"{name} RSS grew {r['growth'] / MiB:.1f} MiB under load ({r['warm'] / MiB:.0f} → {r['end'] / MiB:.0f})"
            )
    for name, r in res["pg_connections"].items():
        if r["bound"] is not None and r["max"] > r["bound"]:
            failures.append(f"{name} held {r['max']} PostgreSQL connections, over its bound of {r['bound']}")
    rc = res["redis_clients"]
    if rc["end"] > rc["half_time"] + max(REDIS_CLIENT_SLACK, REDIS_CLIENT_FRACTION * rc["half_time"]):
        failures.append(f"Herald's Redis clients kept growing: {rc['half_time']} at half time → {rc['end']}")
    if rc["max"] > rc["bound"]:
        failures.append(f"Herald held {rc['max']} Redis connections, over its bound of {rc['bound']}")
    for name, status in result["exits"].items():
        if status not in (0, -signal.SIGTERM):
            failures.append(f"herald {name} exited with status {status} on SIGTERM")
    bad_logs = {k: v for k, v in result["logs"].items() if k.split(":")[-1] in ("error", "critical", "unstructured")}
    if bad_logs:
        failures.append(f"Herald logged errors: {bad_logs}")
    result["failures"] = failures
    result["passed"] = not failures
