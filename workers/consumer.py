"""The stream consumer: `herald:events` in, inbox rows out, nothing lost and nothing stuck.

Every worker process runs one consumer in the consumer group `herald`.
- An entry is acknowledged only after its rows are committed (or after it was dead-lettered, in
  the same MULTI), so a crash at any point leaves it pending.
- Pending entries of a consumer that died are claimed by another after CLAIM_IDLE seconds. A live
  consumer re-reads its own pending entries at least every MAX_BACKOFF seconds, which refreshes
  their idle time, so a healthy peer is never robbed of work it is retrying.
- A failure is either an unreachable backend (retried with backoff for as long as it lasts,
  never counted against the event) or something about the event (counted; after MAX_ATTEMPTS,
  claims after a crash included, the entry is dead-lettered with the last reason). The consumer
  never stops on bad input, and a retried entry does not hold back the entries behind it: new
  entries are read between retries.
- A read's small new events (named users, no group) are recorded and delivered by one statement
  and acknowledged together (`handle`): what upstream services publish most costs one commit per
  read, not one per event. Everything else, every retry, and every event of a batch that failed
  as a whole takes the one-event path, so a bad event fails, and is dead-lettered, alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid

import redis.exceptions

from service.errors import InvalidEvent, Unavailable
from service.intake import acknowledge, count_attempt, dead_letter
from service.keys import GROUP, STREAM
from service.logs import request_id
from service.metrics import EVENTS_INGESTED, JOB_RETRIES
from service.model import Event, decode_event
from workers.delivery import Delivery

log = logging.getLogger("herald.consumer")

CLAIM_IDLE = 30.0  # seconds an entry sits untouched before another consumer takes it over
CLAIM_EVERY = 5.0
MAX_BACKOFF = 10.0  # well under CLAIM_IDLE: see the module docstring
MAX_ATTEMPTS = 5
# Fresh reads handled at once: the next read is taken, decoded and written while the previous
# one's statement runs, so one worker keeps PostgreSQL and itself busy at the same time.
DEPTH = 2


class Consumer:
    def __init__(
        self,
        fan: Delivery,
        *,
        batch: int = 100,
        block: float = 1.0,
        concurrency: int = 8,
        depth: int = DEPTH,
        claim_idle: float = CLAIM_IDLE,
        claim_every: float = CLAIM_EVERY,
        retry_base: float = 0.2,
    ) -> None:
        self.fan = fan
        self.retry_base = retry_base
        self.claim_idle = claim_idle
        self.claim_every = claim_every
        self.redis = fan.b.redis
        self.name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.batch = batch
        self.block = block
        self._limit = asyncio.Semaphore(concurrency)
        self.depth = depth
        self._inflight: set[asyncio.Task[None]] = set()  # fresh reads being handled (see _start)
        self._stopping = asyncio.Event()
        self._retry_at = 0.0  # when to re-read this consumer's own pending entries
        self._failures = 0  # consecutive rounds with a failure, for the backoff
        self._next_claim = 0.0
        self.handled = 0
        self.dead = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        try:
            await self._run()
            with contextlib.suppress(Exception):  # logged where it happened; the entries stay pending
                await self._settle()
        finally:
            for task in self._inflight:  # cancelled itself (a stop that took too long): so are they
                task.cancel()

    async def _run(self) -> None:
        outage = 0  # failed attempts in a row: logged once, waited on with backoff up to 2 s
        while not self._stopping.is_set():
            try:
                await self._ensure_group()
                if outage:
                    log.warning("event stream reachable again")
                    outage = 0
                await self._loop()
            except Exception as exc:
                # NOGROUP: Redis came back without the stream (it lost its data); the group is made
                # again above. Any other error answer is a bug, not an outage: logged loudly, and
                # the consumer goes on all the same (a dead consumer would stop all delivery).
                expected = isinstance(exc, Unavailable) or (
                    isinstance(exc, redis.exceptions.ResponseError) and "NOGROUP" in str(exc)
                )
                if not expected:
                    log.exception("the consumer failed; retrying")
                elif not outage:
                    log.warning("event stream unreachable (%s); retrying until it answers", exc)
                outage += 1
                # A read whose reply was lost left its entries pending on this consumer (on the
                # new primary, after a failover): read them again first, not after CLAIM_IDLE.
                self._retry_at = 0.0
                await self._pause(min(2.0, self.retry_base * outage))

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            if now >= self._next_claim:
                self._next_claim = now + self.claim_every
                await self._claim()
            if now >= self._retry_at:
                # Entries of fresh reads still being handled are pending too: they are not retried.
                await self._settle()
                mine = await self._read("0")
                failed = await self.handle(mine, retry=True)
                self._schedule_retry(failed, more=len(mine) == self.batch)
            wait = max(0.0, min(self.block, self._retry_at - time.monotonic(), self._next_claim - time.monotonic()))
            fresh = await self._read(">", wait)
            if fresh:
                await self._start(fresh)

    async def _start(self, fresh: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Handle a fresh read in a task of its own, and go on reading while at most `depth` are,
        when the stream holds a backlog (the read was full); else one at a time, so that what
        arrives meanwhile makes the next read larger rather than another small one beside it."""
        self._inflight.add(asyncio.create_task(self._fresh(fresh)))
        if len(self._inflight) >= (self.depth if len(fresh) >= self.batch else 1):
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
        self._reap()

    async def _fresh(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        failed = await self.handle(entries)
        if failed:
            self._schedule_retry(failed, more=False)

    async def _settle(self) -> None:
        """Wait until no fresh read is being handled."""
        if self._inflight:
            await asyncio.wait(self._inflight)
        self._reap()

    def _reap(self) -> None:
        """Forget the finished handlings; raise the first that failed (an outage: see run)."""
        done = {task for task in self._inflight if task.done()}
        self._inflight -= done
        failures = [task.exception() for task in done if not task.cancelled()]
        for failure in failures:
            if failure is not None:
                raise failure

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, start: str, block: float = 0.0) -> list[tuple[bytes, dict[bytes, bytes]]]:
        blocking = None if start == "0" or block <= 0 else max(1, int(block * 1000))
        reply = await self.redis.xreadgroup(GROUP, self.name, {STREAM: start}, count=self.batch, block=blocking)
        if not reply:
            return []
        entries: list[tuple[bytes, dict[bytes, bytes]]] = reply[0][1]
        return entries

    async def _claim(self) -> None:
        """Take over entries left pending by a consumer that stopped touching them."""
        reply = await self.redis.xautoclaim(
            STREAM, GROUP, self.name, min_idle_time=int(self.claim_idle * 1000), start_id="0-0", count=self.batch
        )
        claimed: list[tuple[bytes, dict[bytes, bytes] | None]] = reply[1]
        if claimed:
            log.info("claimed %d entries left pending by another consumer", len(claimed))
            # A claim means the last attempt died with its worker: it counts as an attempt, and an
            # event that keeps killing workers is dead-lettered instead of tried again.
            for entry_id, fields in claimed:
                tried = await count_attempt(self.redis, entry_id.decode())
                if tried >= MAX_ATTEMPTS:
                    raw = (fields or {}).get(b"event", b"")
                    reason = f"abandoned by {tried} workers that stopped while handling it"
                    await dead_letter(self.redis, raw, reason, ack=entry_id.decode())
                    self.dead += 1
            self._retry_at = 0.0  # handle the rest now, on this round

    def _schedule_retry(self, failed: int, more: bool) -> None:
        if failed:
            self._failures += 1
            self._retry_at = time.monotonic() + self._backoff()
        else:
            self._failures = 0
            self._retry_at = 0.0 if more else float("inf")

    def _backoff(self) -> float:
        return min(MAX_BACKOFF, self.retry_base * 2.0 ** min(self._failures, 10))

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def handle(self, entries: list[tuple[bytes, dict[bytes, bytes]]], *, retry: bool = False) -> int:
        """Handle a read's entries; returns how many are left pending for a retry.

        The valid new events that fit are recorded and delivered together, by one statement
        (`Delivery.ingest_many`); every other entry, and every entry of a retry, is handled alone,
        concurrently, as is every event of a batch that failed as a whole (so one bad event fails
        alone, and is dead-lettered alone)."""
        if not entries:
            return 0
        decoded = [await self._decode(entry_id, fields) for entry_id, fields in entries]
        results: list[str | None] = ["dead" if event is None else None for event in decoded]
        if not retry:
            await self._batch(entries, decoded, results)
        alone = [at for at, result in enumerate(results) if result is None]
        handled = await asyncio.gather(*(self._handle(entries[at], decoded[at], retry) for at in alone))
        for at, result in zip(alone, handled, strict=True):
            results[at] = result
        # Ingested entries are acknowledged together, in one round trip for the whole read.
        await acknowledge(self.redis, [e[0].decode() for e, r in zip(entries, results, strict=True) if r == "ingested"])
        return results.count("retry")

    async def _decode(self, raw_id: bytes, fields: dict[bytes, bytes] | None) -> Event | None:
        """The entry's event; None for an invalid one, which is dead-lettered (and acknowledged)."""
        raw = (fields or {}).get(b"event")
        try:
            if raw is None:
                raise InvalidEvent("stream entry has no `event` field")
            return decode_event(raw)
        except InvalidEvent as exc:
            where = f" at {exc.field}" if exc.field else ""
            token = request_id.set(_request_of(raw_id, fields))
            try:
                await dead_letter(self.redis, raw or b"", f"invalid event{where}: {exc.message}", ack=raw_id.decode())
            finally:
                request_id.reset(token)
            self.dead += 1
            return None

    async def _batch(
        self, entries: list[tuple[bytes, dict[bytes, bytes]]], decoded: list[Event | None], results: list[str | None]
    ) -> None:
        """Deliver what it can of a fresh read in one statement; marks those entries "ingested" in
        `results` (all of them "retry" if a backend is down) and leaves the rest to `_handle`."""
        valid = [at for at, event in enumerate(decoded) if event is not None]
        events = [e for e in decoded if e is not None]
        if len(events) < 2:
            return
        token = request_id.set(f"batch-{entries[valid[0]][0].decode()}")
        try:
            outcomes = await self.fan.ingest_many(events)
        except Unavailable as exc:
            log.warning("%d entries wait for a backend: %s", len(valid), exc)
            for at in valid:
                results[at] = "retry"
            return
        except Exception as exc:
            # None of the batch's events was recorded: each is tried alone, where a bad one fails alone
            # (and is counted, logged and in the end dead-lettered as any failing event is).
            log.warning("a batch of %d events failed (%s: %s); each goes alone", len(events), type(exc).__name__, exc)
            return
        finally:
            request_id.reset(token)
        for at, outcome in zip(valid, outcomes, strict=True):
            if outcome is not None:
                results[at] = "ingested"
                self.handled += 1
                EVENTS_INGESTED.inc()

    async def _handle(self, entry: tuple[bytes, dict[bytes, bytes] | None], event: Event | None, retry: bool) -> str:
        """What became of one entry handled alone: "ingested" (to acknowledge), "dead" (dead-lettered
        and acknowledged already) or "retry" (left pending)."""
        raw_id, fields = entry
        entry_id = raw_id.decode()
        request_id.set(_request_of(raw_id, fields))  # this task's log lines
        raw = (fields or {}).get(b"event", b"")
        assert event is not None  # invalid entries were dead-lettered by _decode
        async with self._limit:
            try:
                await self.fan.ingest(event, retry=retry)
            except Unavailable as exc:
                log.warning("entry %s waits for a backend: %s", entry_id, exc)
                return "retry"
            except Exception as exc:
                return await self._failed(entry_id, raw, exc)
            self.handled += 1
            EVENTS_INGESTED.inc()
            return "ingested"

    async def _failed(self, entry_id: str, raw: bytes, exc: Exception) -> str:
        attempts = await count_attempt(self.redis, entry_id)
        if attempts < MAX_ATTEMPTS:
            JOB_RETRIES.labels("entry").inc()
            log.warning("entry %s failed (attempt %d): %s: %s", entry_id, attempts, type(exc).__name__, exc)
            return "retry"
        reason = f"fan-out failed {attempts} times: {type(exc).__name__}: {exc}"
        await dead_letter(self.redis, raw, reason, ack=entry_id)
        self.dead += 1
        return "dead"


def _request_of(raw_id: bytes, fields: dict[bytes, bytes] | None) -> str:
    """What log lines about an entry carry: the id of the request that published it, or the entry's."""
    given = (fields or {}).get(b"request_id")
    return given.decode(errors="replace")[:128] if given else f"entry-{raw_id.decode()}"
