"""Latency histograms and per-window tallies that merge across processes.

A histogram keeps counts in logarithmic buckets 1% wide from 10 µs up, so percentiles are exact
to 1% whatever the number of samples, and the badge pollers' process can send its tallies to the
orchestrator as plain dicts.
"""

from __future__ import annotations

import math
from typing import Any

_FLOOR = 1e-5  # seconds: the lowest bucket's lower bound
_GROWTH = math.log(1.01)


def bucket(seconds: float) -> int:
    return int(math.log(max(seconds, _FLOOR) / _FLOOR) / _GROWTH)


def bucket_value(index: int) -> float:
    """The middle of a bucket, in seconds."""
    return _FLOOR * math.exp((index + 0.5) * _GROWTH)


class Tally:
    """One kind of request in one window: how many, how they ended, how long they took."""

    __slots__ = ("errors", "hist", "n", "samples", "statuses", "throttled")

    def __init__(self) -> None:
        self.n = 0
        self.errors = 0
        self.throttled = 0
        self.statuses: dict[str, int] = {}
        self.hist: dict[int, int] = {}
        # The first few unexpected answers, so a failing report says what they were.
        self.samples: list[str] = []

    def record(self, seconds: float, status: str, *, ok: bool, detail: str = "") -> None:
        self.n += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == "429":
            self.throttled += 1
        elif not ok:
            self.errors += 1
            if len(self.samples) < 5:
                self.samples.append(f"{status} {detail}"[:300])
        b = bucket(seconds)
        self.hist[b] = self.hist.get(b, 0) + 1

    def merge(self, other: Tally) -> None:
        self.n += other.n
        self.errors += other.errors
        self.throttled += other.throttled
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v
        for b, c in other.hist.items():
            self.hist[b] = self.hist.get(b, 0) + c
        self.samples.extend(other.samples[: max(0, 5 - len(self.samples))])

    def percentile(self, q: float) -> float | None:
        """Seconds at quantile q (0..1), or None without samples."""
        total = sum(self.hist.values())
        if total == 0:
            return None
        rank = max(1, math.ceil(q * total))
        seen = 0
        for b in sorted(self.hist):
            seen += self.hist[b]
            if seen >= rank:
                return bucket_value(b)
        return bucket_value(max(self.hist))

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "errors": self.errors,
            "throttled": self.throttled,
            "statuses": self.statuses,
            "hist": self.hist,
            "samples": self.samples,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Tally:
        t = cls()
        t.n, t.errors, t.throttled = raw["n"], raw["errors"], raw["throttled"]
        t.statuses = dict(raw["statuses"])
        t.hist = {int(k): v for k, v in raw["hist"].items()}
        t.samples = list(raw["samples"])
        return t


class Windows:
    """Tallies by (window, kind); a request belongs to the window in which it completed."""

    def __init__(self, start: float, width: float) -> None:
        self.start = start
        self.width = width
        self.tallies: dict[int, dict[str, Tally]] = {}

    def window(self, now: float) -> int:
        return max(0, int((now - self.start) // self.width))

    def record(self, kind: str, began: float, now: float, status: str, *, ok: bool, detail: str = "") -> None:
        w = self.tallies.setdefault(self.window(now), {})
        tally = w.get(kind)
        if tally is None:
            tally = w[kind] = Tally()
        tally.record(now - began, status, ok=ok, detail=detail)

    def merge(self, window: int, kinds: dict[str, Tally]) -> None:
        mine = self.tallies.setdefault(window, {})
        for kind, tally in kinds.items():
            if kind in mine:
                mine[kind].merge(tally)
            else:
                mine[kind] = tally

    def pop(self, window: int) -> dict[str, Tally]:
        return self.tallies.pop(window, {})
