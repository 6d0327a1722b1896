"""`herald …`: run the parts, administer users, publish events.

    herald dev                       everything on one machine (embedded servers when no URLs are set)
    herald api | worker | migrate    the parts, for production
    herald admin create-user --tenant T --user U [--role R]
    herald admin create-token --tenant T --user U [--kind pat|producer]
    herald admin subscribe --tenant T --user U --topic X
    herald admin deactivate-user --tenant T --user U
    herald admin erase-user --tenant T --user U
    herald admin revoke-token --token TOKEN
    herald admin dead-letters [--limit N] [--requeue ID]
    herald publish FILE|-

A bad setting stops any command with one line naming the variable, and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import msgspec

from service import admin, intake, logs
from service.auth.tokens import KINDS
from service.backends import postgres
from service.backends.redis import connect
from service.errors import HeraldError, InvalidEvent, SettingsError
from service.model import decode_events
from service.settings import Settings, load_settings

T = TypeVar("T")


def _print_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


def _fail(message: str, status: int = 1) -> None:
    sys.stderr.write(f"herald: {message}\n")
    raise SystemExit(status)


def _with_database(settings: Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    database_url, _ = settings.require_backends()

    async def run() -> T:
        conn = await asyncpg.connect(database_url, timeout=settings.backend_timeout)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return asyncio.run(run())


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> None:
    database_url, _ = settings.require_backends()
    asyncio.run(postgres.migrate(database_url))
    _print_json({"migrated": True})


# Connections a granian worker admits beyond its streams, for badge polls, health checks and the
# rest, so that a worker full of streams still answers them (see service/http/gate.py).
OTHER_CONNECTIONS = 1024
# The listen queue, for bursts of connections (every tab reconnecting after a deploy); the kernel
# caps it at net.core.somaxconn.
BACKLOG = 4096
# File descriptors a worker needs beside its connections: database pool, Redis, logs, the runtime.
OTHER_FILES = 256


def _raise_open_files(needed: int) -> None:
    """Raise this process's soft limit on open files towards `needed` (granian's workers inherit
    it): every connection is a descriptor, and the usual soft limit (1024) is far below a worker's
    streams. A hard limit below `needed` is left as it is, with a warning naming the setting."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    if soft != unlimited and soft < needed:
        soft = needed if hard == unlimited else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft != unlimited and soft < needed:
        logging.getLogger("herald.api").warning(
            "the open-file limit (%d) is below the %d a worker needs for HERALD_STREAM_LIMIT; raise it "
            "(ulimit -n, LimitNOFILE=, the container's nofile) or lower HERALD_STREAM_LIMIT",
            soft,
            needed,
        )


def cmd_api(settings: Settings, args: argparse.Namespace) -> None:
    settings.require_backends()
    from granian import Granian
    from granian.constants import Interfaces

    logs.configure("api", settings.log_format)
    # Each open stream holds one of a worker's admitted connections (granian's backpressure) for as
    # long as it is open; the app refuses streams past HERALD_STREAM_LIMIT with a 503, so the
    # server must admit more than that, or whatever comes next waits unanswered in the listen queue.
    admitted = settings.stream_limit + OTHER_CONNECTIONS
    _raise_open_files(admitted + OTHER_FILES)
    Granian(
        "service.http.app:app_from_env",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=args.workers or settings.api_workers,
        backlog=BACKLOG,
        backpressure=admitted,
        log_access=False,
        # SIGTERM: stop accepting, let requests and lifespans finish, kill what is left after 25 s.
        workers_kill_timeout=25,
    ).serve()


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    settings.require_backends()
    from service.process import Watch
    from workers import health
    from workers.main import build_worker

    logs.configure("worker", settings.log_format)
    watch = Watch(settings)
    if settings.metrics_port:
        health.serve(settings.host, settings.metrics_port, watch)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is installed on every platform we ship
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())
    build_worker(settings, burst=args.burst, watch=watch).run()


def cmd_dev(settings: Settings, args: argparse.Namespace) -> None:
    from service.local.dev import run_dev

    run_dev(settings, state_dir=args.state_dir)


def cmd_create_user(settings: Settings, args: argparse.Namespace) -> None:
    made = _with_database(settings, lambda conn: admin.create_user(conn, args.tenant, args.user, args.role))
    _print_json({"tenant": made.tenant, "user": made.user, "role": made.role, "token": made.token})


def cmd_create_token(settings: Settings, args: argparse.Namespace) -> None:
    token = _with_database(settings, lambda conn: admin.create_token(conn, args.tenant, args.user, args.kind))
    _print_json({"token": token})


def cmd_subscribe(settings: Settings, args: argparse.Namespace) -> None:
    _with_database(settings, lambda conn: admin.subscribe(conn, args.tenant, args.user, args.topic))
    _print_json({"tenant": args.tenant, "user": args.user, "topic": args.topic})


def cmd_deactivate(settings: Settings, args: argparse.Namespace) -> None:
    _, redis_url = settings.require_backends()

    async def work(conn: asyncpg.Connection) -> None:
        client = connect(redis_url, settings.backend_timeout)
        try:
            await admin.deactivate(conn, client, args.tenant, args.user)
        finally:
            await client.aclose()

    _with_database(settings, work)
    _print_json({"tenant": args.tenant, "user": args.user, "active": False})


def cmd_erase_user(settings: Settings, args: argparse.Namespace) -> None:
    from service import erasure
    from service.process import Backends

    async def run() -> erasure.Progress:
        b = await Backends.open(settings, "herald-cli")
        try:
            return await erasure.erase(b, args.tenant, args.user)
        finally:
            await b.close()

    done = asyncio.run(run())
    _print_json({"tenant": args.tenant, "user": args.user, "erased": True, "rows": done.rows})


def cmd_revoke_token(settings: Settings, args: argparse.Namespace) -> None:
    _, redis_url = settings.require_backends()

    async def work(conn: asyncpg.Connection) -> None:
        client = connect(redis_url, settings.backend_timeout)
        try:
            await admin.revoke_token(conn, client, args.token)
        finally:
            await client.aclose()

    _with_database(settings, work)
    _print_json({"revoked": True})


def cmd_dead_letters(settings: Settings, args: argparse.Namespace) -> None:
    _, redis_url = settings.require_backends()

    async def run() -> None:
        client = connect(redis_url, settings.backend_timeout)
        try:
            if args.requeue:
                _print_json({"requeued": args.requeue, "entry": await intake.requeue(client, args.requeue)})
                return
            for letter in await intake.dead_letters(client, args.limit):
                _print_json(letter)
        finally:
            await client.aclose()

    asyncio.run(run())


def cmd_publish(settings: Settings, args: argparse.Namespace) -> None:
    _, redis_url = settings.require_backends()
    raw = sys.stdin.buffer.read() if args.file == "-" else open(args.file, "rb").read()  # noqa: SIM115
    try:
        batch = decode_events(raw)
    except InvalidEvent as exc:
        where = " ".join(p for p in (f"event {exc.member}" if exc.member is not None else "", exc.field) if p)
        _fail(f"invalid event{': ' + where if where else ''}: {exc.message}; nothing was published")
    if not batch:
        _fail("no event to publish")

    async def run() -> int:
        client = connect(redis_url, settings.backend_timeout)
        try:
            return await intake.enqueue(
                client, batch, replicas=settings.publish_replicas, timeout=settings.backend_timeout
            )
        finally:
            await client.aclose()

    _print_json({"accepted": asyncio.run(run())})


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="herald", description="Self-hosted in-app notifications.")
    sub = top.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", help="run everything on this machine (embedded servers if no URLs are set)")
    dev.add_argument("--state-dir", default=".herald", help="where embedded servers keep their data")
    dev.set_defaults(run=cmd_dev)
    api = sub.add_parser("api", help="serve the HTTP API (granian)")
    api.add_argument("--workers", type=int, default=0, help="worker processes (default HERALD_API_WORKERS)")
    api.set_defaults(run=cmd_api)
    worker = sub.add_parser("worker", help="consume events and fan them out")
    worker.add_argument("--burst", action="store_true", help=argparse.SUPPRESS)
    worker.set_defaults(run=cmd_worker)
    sub.add_parser("migrate", help="apply schema.sql (idempotent)").set_defaults(run=cmd_migrate)

    adm = sub.add_parser("admin", help="users, tokens and subscriptions").add_subparsers(dest="action", required=True)
    p = adm.add_parser("create-user", help="create a user (or give them a role) and print a new token")
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--role", choices=admin.ROLES, default=None, help="default: member for a new user")
    p.set_defaults(run=cmd_create_user)
    p = adm.add_parser("create-token", help="print a new token for a user")
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--kind", choices=KINDS, default="pat")
    p.set_defaults(run=cmd_create_token)
    p = adm.add_parser("subscribe", help="subscribe a user to a topic")
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--topic", required=True)
    p.set_defaults(run=cmd_subscribe)
    p = adm.add_parser("deactivate-user", help="deactivate a user (their tokens stop working at once)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    p.set_defaults(run=cmd_deactivate)
    p = adm.add_parser("erase-user", help="erase a user and everything Herald keeps for them (waits until done)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    p.set_defaults(run=cmd_erase_user)
    p = adm.add_parser("dead-letters", help="list dead-lettered events (one JSON line each), or requeue one")
    p.add_argument("--limit", type=int, default=100, help="how many to list, oldest first")
    p.add_argument("--requeue", metavar="ID", help="put this dead letter's event back on the stream")
    p.set_defaults(run=cmd_dead_letters)
    p = adm.add_parser("revoke-token", help="revoke a token (it stops working within a second)")
    p.add_argument("--token", required=True, help="the token itself (only its hash is stored)")
    p.set_defaults(run=cmd_revoke_token)

    pub = sub.add_parser("publish", help="publish one event or an array of events from a file or stdin")
    pub.add_argument("file", help="a JSON file, or - for standard input")
    pub.set_defaults(run=cmd_publish)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = load_settings()
        args.run(settings, args)
    except SettingsError as exc:
        _fail(exc.message, 2)
    except HeraldError as exc:
        _fail(exc.message)
    except (OSError, asyncpg.PostgresError) as exc:
        _fail(f"{type(exc).__name__}: {exc}")
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
