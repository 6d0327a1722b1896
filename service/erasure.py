"""Erasing a user: what `DELETE /v1/admin/users/{user}`, `herald admin erase-user` and the
worker's erasure job share.

The steps, and why in this order
    begin    One statement marks the user (inactive, `erasing_since`; schema.sql, "Erasure"). From
             then on the fan-out skips them, their tokens are refused (every API process drops its
             cached credentials of them, told on herald:auth), their open streams end, and an
             admin who creates them again is told they are being erased (409).
    run      Waits for the inbox writers that began before the mark (store/erasure.py says why),
             then deletes the user's rows in batches of BATCH, each its own short transaction that
             takes them off the user's own counts row: the counts stay exact all along, and no
             other user's counts row is ever touched. Then the user's Redis keys go and their
             streams are told to close again; last, one transaction deletes whatever is left (rows a
             batch did not meet, preferences, subscriptions, tokens, counts) and the user row.

Resumable: every step can be run again, and the mark says work is left until the user row is gone.
A worker that dies midway leaves the mark and the batches it did not do: arq runs the job again,
and the periodic pass (workers/erasure.py) queues it again for any user still marked, for instance
when Redis was away as the erasure was asked for. Two erasers of one user at once (the CLI and a
worker) only share the work. Once the user row is gone, a later event naming that id creates a
new, empty user (store/fanout.py makes sure a worker that still remembers the old one does too).

What stays: the events themselves. An event belongs to its producer and to all its recipients; its
`audience.users` may name the erased id and its text may mention them, until retention
(HERALD_RETENTION_DAYS) removes it (docs/operations.md, "Erasure").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
import msgspec
import redis.asyncio as aioredis
from arq import ArqRedis

from service import jobs
from service.backends import postgres
from service.errors import NotFound, Unavailable
from service.keys import (
    CLOSE_STREAMS,
    WATCHED,
    Channels,
    count_key,
    listening_key,
    positions_key,
    tabs_key,
    wrote_key,
)
from service.process import Backends
from service.store import erasure as store
from service.store import users

log = logging.getLogger("herald.erasure")

ERASE_JOB = "erase_user"
# Rows per batch: each batch is one short transaction (a few tens of milliseconds here), so locks
# are held briefly and fan-outs and readers get their turn; about 200,000 rows a second in all.
BATCH = 10_000
# How long to wait for the inbox writers that began before the mark. They are fan-out statements
# and bulk changes, bounded far below this; one still running after it is waited for again on the
# next run rather than now.
WRITERS_WAIT = 30.0
_WRITERS_POLL = 0.02
# Users the periodic pass queues at a time.
PASS_LIMIT = 1000


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """What one run did: inbox rows deleted, and whether the erasure is finished."""

    rows: int
    done: bool


def job_id(user_id: int) -> str:
    """The erasure job's id: one job per user however many times the erasure is asked for."""
    return f"erase:{user_id}"


async def begin(b: Backends, tenant: str, user: str) -> int:
    """Mark the user of `tenant` as being erased and tell every process; their id. NotFound when
    there is no such user. Marking a user already being erased is harmless."""

    async def work(conn: asyncpg.Connection) -> int | None:
        tenant_id = await users.tenant_id(conn, tenant)
        return None if tenant_id is None else await store.mark(conn, tenant_id, user)

    user_id = await postgres.run(b.pool, work, timeout=b.settings.backend_timeout)
    if user_id is None:
        raise NotFound(f"no user {user!r} in tenant {tenant!r}")
    # At once where Redis answers; if it does not, the cached credentials expire within a minute
    # (and every process drops them all when its pub/sub connection drops), and the run says it again.
    with contextlib.suppress(Unavailable):
        await _forget(b.redis, user_id)
    return user_id


async def request(b: Backends, tenant: str, user: str) -> int:
    """Begin the erasure and queue the job that finishes it (the API's way); the user's id.

    The mark is the request: if the job cannot be queued now (Redis away), the periodic pass
    queues it once Redis answers, so the request still stands."""
    user_id = await begin(b, tenant, user)
    try:
        await jobs.enqueue(jobs.queue_of(b.redis), ERASE_JOB, user_id, job_id=job_id(user_id))
    except Unavailable as exc:
        log.warning("erasure of user %d not queued (%s); the periodic pass queues it", user_id, exc)
    return user_id


async def erase(b: Backends, tenant: str, user: str, pause: float = 0.5) -> Progress:
    """Begin the erasure and run it here until it is done (the CLI's way). Raises Unavailable if a
    backend is away: the mark stays, and a worker finishes the erasure."""
    user_id = await begin(b, tenant, user)
    rows = 0
    while True:
        progress = await run(b, user_id)
        rows += progress.rows
        if progress.done:
            return Progress(rows=rows, done=True)
        await asyncio.sleep(pause)  # a writer still running, or a token added meanwhile: again


async def run(
    b: Backends,
    user_id: int,
    *,
    budget: float | None = None,
    stopping: asyncio.Event | None = None,
    batches: int | None = None,
) -> Progress:
    """Go on with the erasure of a marked user: for about `budget` seconds at most, until `stopping`
    is set, or for `batches` batches at most (each None: no limit), but always at least one batch,
    so that every run makes progress. Not done when it stopped early or must be run again; raises
    Unavailable when a backend is away."""
    started = time.monotonic()
    timeout = b.settings.backend_timeout

    def stop_early(taken: int) -> bool:
        late = budget is not None and time.monotonic() - started > budget
        enough = batches is not None and taken >= batches
        return late or enough or (stopping is not None and stopping.is_set())

    if not await postgres.run(b.pool, store.still_marked, user_id, timeout=timeout):
        return Progress(rows=0, done=True)  # done by another eraser meanwhile, or never asked for
    if not await postgres.run(b.pool, _writers_ended, timeout=timeout):
        log.warning("erasure of user %d waits for inbox writers still running; it goes on later", user_id)
        return Progress(rows=0, done=False)
    rows = after = taken = 0
    while True:
        done = await postgres.run(b.pool, store.batch, user_id, after, BATCH, timeout=timeout)
        taken += 1
        rows += done.rows
        after = done.after
        if done.counts is not None:  # the copy in Redis stays equal to the counts until it goes
            await b.counts.copy([done.counts])
        if done.rows < BATCH:
            break
        if stop_early(taken):
            return Progress(rows=rows, done=False)
    await _forget(b.redis, user_id)  # raises Unavailable: the mark stays, and this is run again
    try:
        finished = await postgres.run(b.pool, store.finish, user_id, timeout=timeout)
    except asyncpg.ForeignKeyViolationError:
        # Something naming the user was added meanwhile (a token created as the erasure began):
        # the whole transaction rolled back, and the next run deletes it too.
        log.warning("erasure of user %d met a new row of theirs; it goes on later", user_id)
        return Progress(rows=rows, done=False)
    # A count copied by a write that committed just before the last batch may land after the keys
    # went; once more, and if Redis is away now the copy expires by itself (COUNT_TTL).
    with contextlib.suppress(Unavailable):
        await _forget(b.redis, user_id)
    if finished:
        log.info("erased user %d: %d inbox rows in %.1f s", user_id, rows, time.monotonic() - started)
    return Progress(rows=rows, done=True)


async def queue_marked(b: Backends, queue: ArqRedis) -> int:
    """Queue the job of every user still marked (the periodic pass); how many were queued anew."""
    marked = await postgres.run(b.pool, store.marked, PASS_LIMIT, timeout=b.settings.backend_timeout)
    queued = 0
    for user_id in marked:
        queued += await jobs.enqueue(queue, ERASE_JOB, user_id, job_id=job_id(user_id))
    if queued:
        log.warning("queued the erasure of %d users again", queued)
    return queued


async def _writers_ended(conn: asyncpg.Connection) -> bool:
    """Wait until every transaction that held the inbox's write lock now has ended (at most
    WRITERS_WAIT seconds); whether they all did."""
    waiting = await store.writers(conn)
    deadline = time.monotonic() + WRITERS_WAIT
    while await store.running(conn, waiting):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(_WRITERS_POLL)
    return True


async def _forget(client: aioredis.Redis, user_id: int) -> None:
    """The user's keys in Redis go, every API process drops its cached credentials of the user
    (service/http/hub.py), and their open streams end. One round trip; raises Unavailable."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.delete(
            count_key(user_id), tabs_key(user_id), wrote_key(user_id), listening_key(user_id), positions_key(user_id)
        )
        pipe.zrem(WATCHED, user_id)  # the set of users whose counts a fan-out copies (service/counts/watch.py)
        channels = Channels.of(client)
        pipe.publish(channels.auth, str(user_id))
        pipe.publish(channels.user(user_id), CLOSE_STREAMS)
        await pipe.execute()
