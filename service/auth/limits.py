"""Rate limits: token buckets per token (reads, publishes) and per client address (failed logins).

The buckets live in each API process's memory, not in Redis: the badge poll is Herald's hottest
request and is answered with one Redis GET (see service/http/fastpath.py); a shared limiter would
double that. The price is that a limit holds per process, so with N API processes a token can get
up to N times its rate — docs/operations.md says so. The point of the limits is to keep one runaway
client (a tab polling in a loop, a producer stuck retrying, someone guessing tokens, each guess a
database lookup) from taking the capacity every other user shares, which per-process buckets do.

A bucket holds `burst` units and refills at `rate` per second; a request takes one unit (a publish
takes one per event). An empty bucket answers how long until the request would fit, which becomes
the 429's `Retry-After`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable

# Buckets remembered per limiter. Beyond this the oldest is forgotten (it starts full again), so a
# flood of distinct keys costs bounded memory and at worst lets a forgotten key through once.
MAX_KEYS = 100_000


class Limiter:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        # key -> (units left, monotonic time they were counted)
        self._buckets: dict[Hashable, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _level(self, key: Hashable, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self.burst
        left, then = entry
        return min(self.burst, left + (now - then) * self.rate)

    def take(self, key: Hashable, units: float = 1.0) -> float:
        """Take `units` from `key`'s bucket: 0 if they were there, else seconds until they would be.

        Nothing is taken from a bucket that cannot pay in full, so a refused client that backs off
        for `Retry-After` seconds gets through.
        """
        if not self.enabled:
            return 0.0
        now = time.monotonic()
        level = self._level(key, now)
        if level < units:
            return (min(units, self.burst) - level) / self.rate
        if key not in self._buckets and len(self._buckets) >= MAX_KEYS:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[key] = (level - units, now)
        return 0.0

    def wait(self, key: Hashable) -> float:
        """Seconds until `key` could take one unit (0: it can now); takes nothing."""
        if not self.enabled:
            return 0.0
        level = self._level(key, time.monotonic())
        return 0.0 if level >= 1.0 else (1.0 - level) / self.rate


def retry_after(seconds: float) -> int:
    """Whole seconds for a `Retry-After` header: never 0, so a client always backs off."""
    return max(1, math.ceil(seconds))


class Limits:
    """The three limiters of an API process, from the settings (a rate of 0 turns one off)."""

    def __init__(self, reads: float, publishes: float, auth_failures: float) -> None:
        # Bursts of ten seconds' worth: a page load's flurry of requests, or a producer's batch of
        # 1000 events at the default rate, never meets the limit; only a sustained excess does.
        self.reads = Limiter(reads, reads * 10)
        self.publishes = Limiter(publishes, publishes * 10)
        self.auth_failures = Limiter(auth_failures, auth_failures * 10)
