"""Waiting for a condition a test cannot be told about, with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def until(check: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> float:
    """Poll `check` until it is true; the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout, f"{what} not reached within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)
