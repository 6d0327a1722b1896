"""Servers a test may break: a private Redis and a private PostgreSQL, stopped and started at will,
and real Herald processes pointed at them."""

import asyncio
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.backends import postgres
from service.embedded import EmbeddedPostgres, EmbeddedRedis, create_database, free_port
from tests.conftest import Servers
from tests.processes import start_herald, stop


class Breakable:
    """A Redis that can be stopped and started again on the same port and directory."""

    def __init__(self, root: Path, appendonly: bool = True) -> None:
        self.root, self.port, self.appendonly = root, free_port(), appendonly
        self.server: EmbeddedRedis | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, empty: bool = False) -> None:
        if empty:
            for f in self.root.glob("**/*.aof*"):
                f.unlink()
            for f in self.root.glob("appendonlydir/*"):
                f.unlink()
        self.server = EmbeddedRedis(self.root, self.port, appendonly=self.appendonly)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


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


def fault_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "HERALD_DATABASE_URL": database_url,
        "HERALD_REDIS_URL": redis_url,
        "HERALD_PORT": str(free_port()),
        "HERALD_BACKEND_TIMEOUT": "2",
    }


__all__ = ["Breakable", "Servers", "fault_env", "start_herald", "stop"]
