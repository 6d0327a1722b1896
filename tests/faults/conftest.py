"""Servers a test may break: a private Redis and a private PostgreSQL, stopped and started at will,
the fixtures (tests/support/servers.py holds Breakable)."""

import asyncio
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.backends import postgres
from service.local.embedded import EmbeddedPostgres, create_database
from tests.support.servers import Breakable


@pytest.fixture
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="herald-fault-") as d:
        Path(d).chmod(0o755)
        yield Path(d)


@pytest.fixture
def private_redis(scratch: Path) -> Iterator[Breakable]:
    redis = Breakable(scratch / "redis")
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture
def private_postgres(scratch: Path) -> Iterator[tuple[EmbeddedPostgres, str]]:
    server = EmbeddedPostgres(scratch / "postgres")
    url = asyncio.run(create_database(server.start(), "herald", fresh=True))
    asyncio.run(postgres.migrate(url))
    yield server, url
    server.stop()
