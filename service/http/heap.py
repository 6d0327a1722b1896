"""The API process's garbage collector, with thousands of streams open.

CPython's cyclic collector now and then scans every object it tracks (a "full" collection). An API
process holding 5,000 streams tracks a few million objects, nearly all of them the streams' own
(their tasks, generators, queues, requests), alive for as long as the streams are: measured on the
machine of docs/performance.md, each full collection then stopped the process for 480–750 ms,
collected nothing, and came every few seconds while streams were opening, and in the middle of a
broadcast to all of them (a burst of allocations is what sets one off).

So the live heap is moved out of the collector's way (`gc.freeze`, which costs nothing whatever
the heap's size): once the app is loaded, and again after every FREEZE_AFTER streams opened (after
a collection of the young generations, so that little garbage is frozen with it), so that automatic
collections only ever scan what was made since. What freezing gives up is collecting reference
cycles that run through frozen objects: a stream that ends leaves a few such objects behind (and
what they reach), and so may a request that was under way at a freeze. They are collected by one
full collection of everything (`gc.unfreeze`, `gc.collect`, `gc.freeze`) once as many streams have
ended as are open, and at least FULL_AFTER: what is kept meanwhile is at most the leftovers of that
many ended streams. That collection still stops the process, for as long as a full one did before
(about 100 ms per 1,000 open streams; `herald_heap_full_collection_seconds`), but once per that many
streams ended rather than every few seconds.
"""

from __future__ import annotations

import gc
import logging
import time

from service.metrics import HEAP_FULL_SECONDS

log = logging.getLogger("herald.heap")

# Streams opened since the heap was last frozen before it is frozen again.
FREEZE_AFTER = 256
# Streams ended since the last full collection before another may run (and at least as many as open).
FULL_AFTER = 1024


class Heap:
    """Counts streams opened and ended, and freezes or collects the heap when the hub's loop calls
    `tend` (between its reads of pub/sub)."""

    def __init__(self) -> None:
        self.open = 0  # streams open now
        self.opened = 0  # since the last freeze
        self.ended = 0  # since the last full collection

    def start(self) -> None:
        """Once the app is loaded: its modules, routes and backends are alive for good."""
        gc.collect()
        gc.freeze()

    def stop(self) -> None:
        """The app is shutting down: everything frozen is the collector's again (a process that
        runs another app after this one, as tests do, would otherwise never collect it)."""
        gc.unfreeze()

    def stream_opened(self) -> None:
        self.open += 1
        self.opened += 1

    def stream_ended(self) -> None:
        self.open -= 1
        self.ended += 1

    def tend(self) -> None:
        if self.ended >= max(FULL_AFTER, self.open):
            started = time.perf_counter()
            gc.unfreeze()
            collected = gc.collect()
            gc.freeze()
            took = time.perf_counter() - started
            HEAP_FULL_SECONDS.observe(took)
            log.info(
                "full garbage collection after %d streams ended: %d objects freed in %.0f ms (%d open)",
                self.ended,
                collected,
                took * 1000,
                self.open,
            )
            self.opened = self.ended = 0
        elif self.opened >= FREEZE_AFTER:
            gc.collect(1)
            gc.freeze()
            self.opened = 0
