"""The soak's report: a table per window as it runs, a summary at the end, and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.soak.stats import Tally

MiB = 1024 * 1024
# Order of the kinds in tables; anything else follows.
KINDS = ("badge", "publish", "xadd", "list", "read", "bulk", "read_all", "unread", "delete", "snooze")


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def summarize(tally: Tally, seconds: float) -> dict[str, Any]:
    return {
        "n": tally.n,
        "per_second": round(tally.n / seconds, 1) if seconds > 0 else None,
        "errors": tally.errors,
        "throttled_429": tally.throttled,
        "statuses": dict(sorted(tally.statuses.items())),
        "p50_ms": ms(tally.percentile(0.50)),
        "p90_ms": ms(tally.percentile(0.90)),
        "p99_ms": ms(tally.percentile(0.99)),
        "p999_ms": ms(tally.percentile(0.999)),
        "max_ms": ms(tally.percentile(1.0)),
        "error_samples": tally.samples,
    }


def _fmt(value: float | None, width: int = 7) -> str:
    if value is None:
        return "-".rjust(width)
    return f"{value:{width}.1f}" if value < 100 else f"{value:{width}.0f}"


def window_header() -> str:
    return (
        f"{'window':>11} {'pub/s':>6} {'badge/s':>8} {'b p50':>6} {'b p99':>6} {'list/s':>7} {'l p50':>6} "
        f"{'l p99':>6} {'act/s':>6} {'a p99':>6} {'err':>4} {'429':>4} {'backlog':>7} {'cpu':>5} {'other':>5}"
    )


def window_line(w: dict[str, Any]) -> str:
    k = w["kinds"]
    secs = w["seconds"]
    pub = sum(k.get(x, {}).get("n", 0) for x in ("publish", "xadd")) / secs
    acts = [x for x in ("read", "bulk", "read_all", "unread", "delete", "snooze") if x in k]
    act_rate = sum(k[x]["n"] for x in acts) / secs
    act_p99 = max((k[x]["p99_ms"] or 0 for x in acts), default=None)
    badge, lst = k.get("badge", {}), k.get("list", {})
    stream = w["sample"]["stream"]
    backlog = (stream.get("lag") or 0) + (stream.get("pending") or 0)
    cpu = w["sample"]["cpu_cores"].get("machine") or 0.0
    other = w["sample"]["cpu_cores"].get("other") or 0.0
    return (
        f"{w['t0']:>4.0f}-{w['t1']:<4.0f}s {pub:6.0f} {badge.get('per_second') or 0:8.0f} "
        f"{_fmt(badge.get('p50_ms'), 6)} "
        f"{_fmt(badge.get('p99_ms'), 6)} {lst.get('per_second') or 0:7.1f} {_fmt(lst.get('p50_ms'), 6)} "
        f"{_fmt(lst.get('p99_ms'), 6)} {act_rate:6.1f} {_fmt(act_p99, 6)} "
        f"{sum(x['errors'] for x in k.values()):4d} {sum(x['throttled_429'] for x in k.values()):4d} "
        f"{backlog:7d} {cpu:5.2f} {other:5.2f}"
    )


def final_text(result: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    s = result["summary"]
    add("")
    add(
        f"== Herald soak {result['started_at']}: {result['settings']['minutes']} min, "
        f"{'PASS' if result['passed'] else 'FAIL'} =="
    )
    add(
        f"requests served: {s['requests']:,}   errors: {s['errors']}   429s: {s['throttled_429']}   "
        f"events accepted: {s['events_accepted']:,} ({s['publish_rate']:.1f}/s, target {result['settings']['rate']}/s)"
    )
    add(
        f"keep-alive connections the server closed while idle: {s['keepalive_closed_by_server']} found before use, "
        f"{s['keepalive_retries']} under a request (sent again once)"
    )
    add("")
    add(
        f"{'kind':<9} {'requests':>9} {'per s':>8} {'err':>4} {'p50 ms':>8} {'p99 ms':>8} {'p99.9':>8} "
        f"{'max':>8}  statuses"
    )
    for kind, t in result["kinds"].items():
        statuses = " ".join(f"{k}:{v}" for k, v in t["statuses"].items())
        add(
            f"{kind:<9} {t['n']:>9,} {t['per_second'] or 0:>8.1f} {t['errors']:>4} {_fmt(t['p50_ms'], 8)} "
            f"{_fmt(t['p99_ms'], 8)} {_fmt(t['p999_ms'], 8)} {_fmt(t['max_ms'], 8)}  {statuses}"
        )
    add("")
    add("RSS (MiB), idle start → end of first window → end of load → idle after drain:")
    for name, r in result["resources"]["rss"].items():
        add(
            f"  {name:<10} {r['start'] / MiB:7.1f} → {r['warm'] / MiB:7.1f} → {r['end'] / MiB:7.1f} → "
            f"{r['idle_end'] / MiB:7.1f}   growth under load {r['growth'] / MiB:+.1f} MiB ({r['processes']} processes)"
        )
    add("PostgreSQL connections by application_name, same points (bound: pool size × processes):")
    for name, r in result["resources"]["pg_connections"].items():
        add(
            f"  {name:<13} {r['start']:>3} → {r['warm']:>3} → {r['end']:>3} → {r['idle_end']:>3}   "
            f"max {r['max']}, bound {r['bound']}"
        )
    r = result["resources"]["redis_clients"]
    add(
        f"Redis clients of Herald: {r['start']} → {r['warm']} → {r['end']} → {r['idle_end']}   "
        f"max {r['max']}, {r['half_time']} at half time, bound {r['bound']}"
    )
    cpu = result["resources"]["cpu_cores_mean"]
    add("CPU, mean cores busy under load: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    add("")
    c = result["checks"]
    add(
        f"drained in {c['drain_seconds']:.1f} s; events {c['events_recorded']:,} recorded of {c['events_accepted']:,} "
        f"accepted, {c['events_missing_count']} missing, {c['events_not_fanned_out']} not fanned out, "
        f"{c['dead_letters']} dead letters"
    )
    add(
        f"rows {c['rows']:,} (expected {c['rows_expected']:,} after {c['rows_deleted_by_soak']:,} deletes): "
        f"{c['rows_missing']} missing, {c['rows_unexpected']} unexpected, {c['rows_duplicated']} duplicated"
    )
    add(
        f"counts: {c['counts_off']} of {c['users_checked']} users off; Redis copies off {c['redis_copies_off']} "
        f"of {c['redis_copies_present']}; badges off {c['badges_off']} of {c['badges_checked']}"
    )
    add(f"Herald log lines at warning/error: {result['logs']}")
    if result["failures"]:
        add("")
        add("FAILED:")
        for f in result["failures"]:
            add(f"  - {f}")
    return "\n".join(lines)


def write(result: dict[str, Any], out: Path, stamp: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1, sort_keys=False) + "\n"
    paths = [out / "soak-latest.json", out / f"soak-{stamp}.json"]
    for path in paths:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths
