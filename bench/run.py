"""`python -m bench [FIGURE ...] [--quick]`: run the figures, print one table, save the rows.

A full run (every figure, full sizes) writes bench/results/latest.json and a dated copy, plus the
printed report (machine included) beside each as .txt, and rewrites the table in
docs/performance.md between its markers. A quick or partial run only prints.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import traceback
from types import FrameType

import asyncpg
import redis.asyncio as aioredis

from bench import load, report
from bench.base import QUICK, Bench, Sizes
from bench.env import Processes, machine, start_servers
from bench.figures import FIGURES, WRK_FIGURES
from service.local.harness import Servers


async def _run(servers: Servers, procs: Processes, names: list[str], sizes: Sizes) -> tuple[list[report.Row], Bench]:
    conn = await asyncpg.connect(servers.database_url)
    client = aioredis.Redis.from_url(servers.redis_url)
    b = Bench(conn, client, procs, sizes)
    rows: list[report.Row] = []
    try:
        for name in names:
            print(f"\n== {name}", flush=True)
            started = time.monotonic()
            try:
                rows += await FIGURES[name](b)
            except load.WrkMissing as exc:
                b.note(f"{name}: skipped: {exc}")
            except Exception as exc:
                traceback.print_exc()
                b.note(f"{name}: failed to run: {type(exc).__name__}: {exc}")
            print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
    finally:
        await client.aclose()
        await conn.close()
    return rows, b


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Herald's benchmarks (not tests).")
    parser.add_argument(
        "figures", nargs="*", metavar="FIGURE", help=f"any of {', '.join(FIGURES)} (default: all, in that order)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs, for iterating")
    args = parser.parse_args(argv)
    unknown = [n for n in args.figures if n not in FIGURES]
    if unknown:
        parser.error(f"unknown figure {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    names = [n for n in FIGURES if n in args.figures] if args.figures else list(FIGURES)
    sizes = QUICK if args.quick else Sizes()
    if not load.available() and any(n in WRK_FIGURES for n in names):
        print(
            "bench: wrk is not installed (apt-get install -y wrk): the badge and list figures are skipped",
            file=sys.stderr,
        )
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    print("starting PostgreSQL and Redis …", flush=True)
    servers = start_servers()
    procs: Processes | None = None
    try:
        about = asyncio.run(machine(servers))
        procs = Processes(servers)
        rows, b = asyncio.run(_run(servers, procs, names, sizes))
    finally:
        if procs is not None:
            procs.stop()
        servers.stop()
    lines = ["Machine: " + "; ".join(f"{key} {value}" for key, value in about.items())]
    lines += ["", report.table(rows), ""]
    lines += [f"- {note}" for note in b.notes]
    text = "\n".join(lines)
    print("\n" + text)
    if args.quick or names != list(FIGURES):
        print("\n(quick or partial run: results not saved)")
    else:
        latest, dated = report.write(rows, text)
        report.write_docs(rows, lines[0], report.stamp_text(dated.stem), b.notes)
        print(f"\nwrote {latest}, {dated} and the table in {report.DOC}")
    if len(rows) == 0:
        raise SystemExit(1)
