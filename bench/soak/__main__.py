"""`python -m bench.soak [--minutes 5] [--rate 200]`: see bench/soak/__init__.py."""

from __future__ import annotations

import argparse

from bench.soak.run import main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description="A bounded soak of real Herald processes.")
    p.add_argument("--minutes", type=float, default=5.0, help="how long the load runs (default 5)")
    p.add_argument("--rate", type=float, default=200.0, help="events published per second (default 200)")
    p.add_argument("--users", type=int, default=500, help="users in the soak's tenant (default 500)")
    p.add_argument(
        "--badge-rate",
        type=float,
        default=0.0,
        help="badge polls per second, paced; 0 (the default): each connection as fast as it is answered",
    )
    p.add_argument("--pollers", type=int, default=32, help="badge poll connections (default 32)")
    p.add_argument("--poller-procs", type=int, default=1, help="processes the badge pollers share (default 1)")
    p.add_argument("--sessions", type=float, default=40.0, help="list/ack sessions started per second (default 40)")
    p.add_argument("--api-workers", type=int, default=2, help="granian workers of `herald api` (default 2)")
    p.add_argument("--workers", type=int, default=2, help="`herald worker` processes (default 2)")
    p.add_argument("--window", type=float, default=30.0, help="seconds per reporting window (default 30)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the load")
    p.add_argument("--out", default="bench/results", help="where the JSON report goes (default bench/results)")
    return p


if __name__ == "__main__":
    raise SystemExit(main(parser().parse_args()))
