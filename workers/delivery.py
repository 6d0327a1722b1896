"""Turning one accepted event into inbox rows, inline or as arq jobs.

`Delivery.ingest` runs for every valid stream entry. In one transaction it creates the tenant and
any unknown named users, records the event (once per tenant and id), and cuts its audience into
chunks. An event whose audience fits in one chunk (nearly all of them) is written in that same
transaction, which keeps publish-to-visible latency to one round of statements. A larger one is
committed as a plan, and each chunk becomes an arq job (`fanout_chunk`), so several workers share
it. Either way the chunk markers make every step safe to repeat: republishing, redelivering a
stream entry or retrying a job never writes a second row for anyone.

After a chunk commits, its new counts are copied to Redis and pushed to streams for the watched
recipients only (`_announce`; service/counts/watched.py says why that is exact): a chunk of 10,000
recipients of whom nobody is looking costs one `ZRANGEBYSCORE`, not 10,000 rows read back and
10,000 keys written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec
from arq import ArqRedis, Retry

from service.backends import postgres
from service.backends.redis import translated
from service.errors import Unavailable
from service.intake import count_attempt, dead_letter, forget_attempts
from service.metrics import EVENTS_BATCHED, FANOUT_ROWS, FANOUT_SECONDS, JOB_RETRIES
from service.model import Audience, Counts, Event
from service.process import Backends
from service.store import batch, events, fanout, users

log = logging.getLogger("herald.fanout")

# A chunk job that keeps failing for a reason other than an unreachable backend is dead-lettered
# after this many failures; arq's own limit is far above it so that Herald has the last word.
CHUNK_ATTEMPTS = 5
CHUNK_JOB = "fanout_chunk"
# A chunk whose group's earlier event is still being fanned out looks again after 20 ms, 40 ms, …
# up to a second, for about 14 minutes (GROUP_WAIT_TRIES), then runs beside it.
GROUP_WAIT_MAX = 1.0
GROUP_WAIT_TRIES = 900  # under arq's max_tries (workers/main.py ARQ_MAX_TRIES)
KNOWN_USERS_KEPT = 200_000


def backoff(attempt: int) -> float:
    return float(min(30, 2 ** max(0, attempt - 1)))


def chunk_job_id(event_id: int, lo: int) -> str:
    return f"fanout:{event_id}:{lo}"


def _named_only(audience: Audience) -> bool:
    """An audience of named users only: its size is known before it is resolved."""
    return not audience.topics and not audience.all


def _one_chunk(audience: Audience, chunk: int) -> bool:
    """The rule for an event written in the transaction that records it (nearly all of them)."""
    return _named_only(audience) and len(audience.users) <= chunk


def _one_statement(event: Event, chunk: int) -> bool:
    """The rule for the one-statement delivery: a new row for every recipient, so no thread."""
    return event.group is None and _one_chunk(event.audience, chunk)


class Outcome(msgspec.Struct, frozen=True):
    event_id: int
    # What the statement returned per recipient: every recipient of an event written by the
    # one-statement path or of a thread's chunk; none for a plain chunk (see _announce).
    deliveries: list[fanout.Delivery]
    queued: list[tuple[int, int]]  # chunks left for arq jobs
    repair: list[Counts] = []  # counts copied again for a retried, already written event


class Delivery:
    def __init__(self, backends: Backends, jobs: ArqRedis) -> None:
        self.b = backends
        self.jobs = jobs
        # Tenants are never deleted, so a known tenant stays known. A known user may be erased
        # (service/erasure.py): the one-statement delivery then records nothing and this takes the
        # general path, which creates them anew (store/fanout.py, _DELIVER_NAMED).
        self._tenants: dict[str, int] = {}
        self._known: set[tuple[int, str]] = set()

    async def ingest(self, event: Event, *, retry: bool = False) -> Outcome:
        """Record a valid event and fan it out (or queue its chunks). Safe to repeat.

        `retry` says an earlier attempt may have committed and then failed to copy the counts (Redis
        down, worker killed): if the event turns out to be fanned out already in one chunk, its
        recipients' counts are copied again. (A fresh duplicate publish does not need that.)"""
        chunk = self.b.settings.fanout_chunk
        if not retry and _one_statement(event, chunk):
            delivered = await self._deliver_named(event)
            if delivered is not None:
                return delivered

        async def work(conn: asyncpg.Connection) -> tuple[Outcome, fanout.Written]:
            async with conn.transaction():
                tenant_id = self._tenants.get(event.tenant)
                if tenant_id is None:
                    tenant_id = await users.ensure_tenant(conn, event.tenant)
                await users.ensure_members(conn, tenant_id, event.audience.users)
                if event.group is not None:
                    await fanout.lock_group(conn, tenant_id, event.group)
                event_id = await events.insert(conn, tenant_id, event)
                repair: list[Counts] = []
                if event_id is None:
                    found = await events.find(conn, tenant_id, event.id)
                    assert found is not None
                    event_id, done = found
                    todo = [] if done else await fanout.pending(conn, event_id)
                    if done and retry and _one_chunk(event.audience, chunk):
                        repair = await fanout.chunk_counts(conn, event_id, 1, fanout.MAX_USER_ID)
                else:
                    at_most = len(event.audience.users) if _named_only(event.audience) else None
                    todo = await fanout.plan(conn, event_id, chunk, at_most=at_most)
                written = fanout.Written()
                if len(todo) == 1:
                    try:
                        written = await fanout.run_chunk(conn, event_id, *todo[0])
                        todo = []
                    except fanout.GroupBusy:  # an earlier event of its group first: queued
                        pass
                if not todo:
                    await fanout.finish(conn, event_id)
            self._tenants[event.tenant] = tenant_id
            return Outcome(event_id, written.deliveries, todo, repair), written

        with FANOUT_SECONDS.time():
            outcome, written = await postgres.run(self.b.pool, work, timeout=self.b.settings.backend_timeout)
        await self._announce(outcome.event_id, written)
        if outcome.repair:
            await self.b.counts.copy(outcome.repair)
        for lo, hi in outcome.queued:
            with translated():  # arq's client keeps redis-py's errors (service/backends/redis.py)
                await self.jobs.enqueue_job(
                    CHUNK_JOB, outcome.event_id, lo, hi, _job_id=chunk_job_id(outcome.event_id, lo)
                )
        return outcome

    async def _deliver_named(self, event: Event) -> Outcome | None:
        """The common event (named users only, new) in one statement; None to take the general path.

        Unknown users are created first, by a statement of their own: a user created at the same
        moment by another event's delivery becomes visible only to a statement that starts after
        that other one commits, which creating them inside the delivery would not guarantee."""

        async def work(conn: asyncpg.Connection) -> tuple[int, int, list[fanout.Delivery]] | None:
            tenant_id = self._tenants.get(event.tenant)
            if tenant_id is None:
                tenant_id = await users.ensure_tenant(conn, event.tenant)
            unknown = [u for u in set(event.audience.users) if (tenant_id, u) not in self._known]
            if unknown:
                await users.ensure_members(conn, tenant_id, unknown)
            delivered = await fanout.deliver_named(conn, tenant_id, event)
            return None if delivered is None else (tenant_id, *delivered)

        with FANOUT_SECONDS.time():
            result = await postgres.run(self.b.pool, work, timeout=self.b.settings.backend_timeout)
        if result is None:
            return None
        tenant_id, event_id, deliveries = result
        self._tenants[event.tenant] = tenant_id
        if len(self._known) > KNOWN_USERS_KEPT:
            self._known.clear()
        self._known.update((tenant_id, u) for u in event.audience.users)
        FANOUT_ROWS.inc(len(deliveries))
        await self._publish(event_id, fanout.arrived(deliveries, event))
        return Outcome(event_id, deliveries, [])

    async def ingest_many(self, given: Sequence[Event]) -> list[Outcome | None]:
        """Record and deliver the small new events of one stream read together: one statement, one
        commit, one copy of the counts (store/batch.py). For each event, its Outcome, or None when
        it takes the one-event path (`ingest`) instead: an event of a group, with topics or `all`,
        or too large for one chunk; a second copy of an event of the same read; one published
        before, or naming a user who no longer exists. Raises, with none of the events recorded
        (the users it created stay), if the batch fails as a whole: the caller then sends each
        event down the one-event path, where a bad one fails alone."""
        chunk = self.b.settings.fanout_chunk
        first: dict[tuple[str, str], int] = {}
        for at, event in enumerate(given):
            if _one_statement(event, chunk):
                first.setdefault((event.tenant, event.id), at)
        if len(first) < 2:  # nothing to share a statement with: the one-event path is as fast
            return [None] * len(given)
        chosen = [given[at] for at in first.values()]
        unknown: set[tuple[int, str]] = set()  # (tenant id, user) this worker has not met: created first

        async def work(conn: asyncpg.Connection) -> tuple[dict[str, int], dict[tuple[int, str], batch.Delivered]]:
            tenants = {name: self._tenants.get(name) for name in sorted({e.tenant for e in chosen})}
            for name, known in tenants.items():
                if known is None:
                    tenants[name] = await users.ensure_tenant(conn, name)
            ids = {name: tid for name, tid in tenants.items() if tid is not None}
            existing = self._known
            for event in chosen:
                tid = ids[event.tenant]
                for user in event.audience.users:
                    if (tid, user) not in existing:
                        unknown.add((tid, user))
            for tid in sorted({tid for tid, _ in unknown}):
                await users.ensure_members(conn, tid, sorted(u for t, u in unknown if t == tid))
            return ids, await batch.deliver(conn, [(ids[e.tenant], e) for e in chosen])

        with FANOUT_SECONDS.time():
            ids, done = await postgres.run(self.b.pool, work, timeout=self.b.settings.backend_timeout)
        self._tenants.update(ids)
        if len(self._known) > KNOWN_USERS_KEPT:
            self._known.clear()
        self._known |= unknown
        outcomes: list[Outcome | None] = [None] * len(given)
        arrived: list[tuple[int, fanout.Delivery]] = []
        for at in first.values():
            event = given[at]
            delivered = done.get((ids[event.tenant], event.id))
            if delivered is not None:
                outcomes[at] = Outcome(delivered.event_id, delivered.deliveries, [])
                arrived += ((delivered.event_id, d) for d in fanout.arrived(delivered.deliveries, event))
        EVENTS_BATCHED.inc(len(done))
        if arrived:
            FANOUT_ROWS.inc(len(arrived))
            await self.b.counts.copy([d for _, d in arrived], [(d.inbox_id, event_id) for event_id, d in arrived])
        return outcomes

    async def run_chunk(self, event_id: int, lo: int, hi: int, *, wait_turn: bool = True) -> int:
        """One chunk of a split fan-out (the arq job's body). Returns the rows written.

        A chunk found already written is a job run again after its worker died or its copy to
        Redis failed: its recipients' counts are copied again, since that copy may be the lost one."""

        async def work(conn: asyncpg.Connection) -> fanout.Written:
            # A grouped event's actor nodes, committed before the chunk: the event's other chunks
            # need the same ones, and must not wait for this chunk's transaction to find them.
            kind = await fanout.make_nodes(conn, event_id, lo, hi, wait_turn=wait_turn)
            async with conn.transaction():
                written = await fanout.run_chunk(conn, event_id, lo, hi, kind=kind)
            # After the commit, in a snapshot of its own: of two last chunks committing at once,
            # each would see the other unfinished inside its transaction, and neither would finish.
            await fanout.finish(conn, event_id)
            return written

        with FANOUT_SECONDS.time():
            written = await postgres.run(self.b.pool, work, timeout=self.b.settings.backend_timeout)
        if written.rows:
            await self._announce(event_id, written)
        else:
            await self._copy_again(event_id, lo, hi)
        return written.rows

    async def _announce(self, event_id: int, written: fanout.Written) -> None:
        """Copy a committed chunk's new counts to its watched recipients and push its rows to their
        streams. Never raised: if a backend fails here, the chunk's range is copied again later
        (without the pushes, as any copy that failed)."""
        if not written.rows:
            return
        FANOUT_ROWS.inc(written.rows)
        try:
            async for users in self.b.counts.watched.among(written.lo, written.hi):
                if written.threaded:
                    watched = set(users)
                    deliveries = [d for d in written.deliveries if d.user_id in watched]
                else:
                    deliveries = await postgres.run(
                        self.b.pool,
                        fanout.watched_deliveries,
                        event_id,
                        users,
                        timeout=self.b.settings.backend_timeout,
                    )
                await self._publish(event_id, deliveries, present=True)
        except Unavailable as exc:
            log.warning("counts of event %s not copied (%s); copied again once both backends answer", event_id, exc)
            self.b.counts.copy_range_later(written.lo, written.hi)

    async def _copy_again(self, event_id: int, lo: int, hi: int) -> None:
        """A chunk found already written: its job ran again after its worker died or its copy
        failed, so its watched recipients' counts are copied again (that copy may be the lost one)."""
        try:
            async for users in self.b.counts.watched.among(lo, hi):
                again = await postgres.run(
                    self.b.pool, fanout.chunk_counts, event_id, lo, hi, users, timeout=self.b.settings.backend_timeout
                )
                await self.b.counts.copy(again, present=True)
        except Unavailable as exc:
            log.warning("counts of event %s not copied again (%s); later, once both backends answer", event_id, exc)
            self.b.counts.copy_range_later(lo, hi)

    async def _publish(self, event_id: int, deliveries: list[fanout.Delivery], *, present: bool = False) -> None:
        """Copy the recipients' counts and announce the rows: a thread the event updated is
        announced again (`again`), as it now stands. `present`: only over copies that exist."""
        if not deliveries:
            return
        new = [d for d in deliveries if not d.again]
        threads = [d for d in deliveries if d.again]
        if new:
            await self.b.counts.copy(new, [(d.inbox_id, event_id) for d in new], present=present)
        if threads:
            await self.b.counts.copy(threads, [(d.inbox_id, event_id) for d in threads], again=True, present=present)


async def fanout_chunk(ctx: dict[str, Any], event_id: int, lo: int, hi: int) -> int:
    """arq job: write one chunk. Unreachable backends are retried with backoff for as long as it
    takes; any other failure is retried until CHUNK_ATTEMPTS, then the event is dead-lettered."""
    worker: Delivery = ctx["fanout"]
    tries: int = ctx.get("job_try", 1)
    try:
        # Past GROUP_WAIT_TRIES a chunk stops waiting for its turn and runs (correctly, beside the
        # earlier event: see store/fanout.py) rather than use up arq's tries and be dropped.
        return await worker.run_chunk(event_id, lo, hi, wait_turn=tries < GROUP_WAIT_TRIES)
    except fanout.GroupBusy as exc:  # its turn comes when the group's earlier event is done
        raise Retry(defer=min(0.02 * tries, GROUP_WAIT_MAX)) from exc
    except Unavailable as exc:
        JOB_RETRIES.labels("chunk").inc()
        log.warning("chunk %s of event %s waits for a backend: %s", lo, event_id, exc)
        raise Retry(defer=backoff(tries)) from exc
    except Exception as exc:
        # Counted apart from arq's try number, which also counts the waits for a backend.
        field = f"job:{chunk_job_id(event_id, lo)}"
        failures = await count_attempt(worker.b.redis, field)
        if failures < CHUNK_ATTEMPTS:
            JOB_RETRIES.labels("chunk").inc()
            log.exception("chunk %s of event %s failed (%d); retrying", lo, event_id, failures)
            raise Retry(defer=backoff(failures)) from exc
        raw = await _stored_event(worker.b, event_id)
        await dead_letter(worker.b.redis, raw, f"fan-out failed {failures} times: {type(exc).__name__}: {exc}")
        await forget_attempts(worker.b.redis, field)
        return 0


async def _stored_event(b: Backends, event_id: int) -> bytes:
    """The event as Herald stored it, for a dead letter written after its stream entry was acked."""

    found = await postgres.run(b.pool, events.stored, event_id)
    return msgspec.json.encode(found if found is not None else {"herald_event_id": event_id})
