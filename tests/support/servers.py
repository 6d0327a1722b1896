"""Servers a test may break: a Redis stopped and started again on the same port and directory."""

from __future__ import annotations

from pathlib import Path

from service.local.embedded import EmbeddedRedis, free_port


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
