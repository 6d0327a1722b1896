"""The event stream: putting events on it (HTTP and CLI; producers may also XADD themselves) and
taking them off it into the dead-letter stream.

The stream is the single way into the workers, so all three ways in end in the same entries and
the same worker code. HTTP and CLI validate first and queue nothing unless every event is valid;
the MULTI makes the XADDs of one request all-or-nothing on the Redis side too.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import cast

import msgspec
import redis.asyncio as aioredis

from service.errors import NotFound, Unavailable
from service.keys import ATTEMPTS, DEAD, GROUP, QUEUE, STREAM
from service.logs import request_id
from service.metrics import DEAD_LETTERS, EVENTS_DEAD_LETTERED, QUEUED_JOBS, STREAM_LAG, STREAM_LENGTH, STREAM_PENDING
from service.model import Event

log = logging.getLogger("herald.stream")


async def enqueue(
    client: aioredis.Redis, events: list[tuple[Event, bytes]], *, replicas: int = 0, timeout: float = 5.0
) -> int:
    """XADD every event as received; returns how many. Unavailable if Redis cannot take them.

    With `replicas` (HERALD_PUBLISH_REPLICAS), the events are acknowledged only once that many
    Redis replicas hold them (WAIT, for at most half of `timeout`), so that a failover to a replica
    cannot lose an event that was acknowledged. If they do not confirm in time, the events are on
    the primary but Unavailable is raised: the producer publishes again, which is harmless since an
    event is recorded once per (tenant, id).
    """
    # The request's id travels with each event, so the worker's log lines about it carry it too.
    rid = request_id.get()
    entries = [{"event": raw, "request_id": rid} if rid else {"event": raw} for _, raw in events]
    try:
        if replicas <= 0:
            async with client.pipeline(transaction=True) as pipe:
                for fields in entries:
                    pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
                await pipe.execute()
            return len(events)
        # WAIT counts the writes made on its own connection, and does not block inside a MULTI: so
        # MULTI, the XADDs, EXEC and WAIT go down one connection, in one round trip.
        async with client.pipeline(transaction=False) as pipe:
            pipe.execute_command("MULTI")
            for fields in entries:
                pipe.xadd(STREAM, fields)  # type: ignore[arg-type]
            pipe.execute_command("EXEC")
            pipe.execute_command("WAIT", replicas, max(1, int(timeout * 500)))
            *_, done, confirmed = await pipe.execute()
        failed = [r for r in done if isinstance(r, Exception)] if isinstance(done, list) else []
        if failed:
            raise Unavailable(f"the event stream (Redis) refused the events: {failed[0]}") from failed[0]
    except Unavailable as exc:
        if replicas <= 0:
            raise Unavailable("the event stream (Redis) is unavailable; nothing was queued") from exc
        # The answer was lost, not necessarily the events: the same advice as an unconfirmed WAIT.
        raise Unavailable(
            "the event stream (Redis) did not confirm the events; publish them again (an event is delivered "
            "once however often it is published)"
        ) from exc
    if int(confirmed) < replicas:
        raise Unavailable(
            f"the events reached the Redis primary but only {confirmed} of {replicas} replicas confirmed them in "
            "time; publish them again (an event is delivered once however often it is published)"
        )
    return len(events)


async def dead_letter(client: aioredis.Redis, raw: bytes, reason: str, ack: str | None = None) -> None:
    """Move an event to the dead-letter stream and, in the same MULTI, acknowledge its entry and
    forget its attempts."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.xadd(DEAD, {"event": raw, "reason": reason[:2000]})
        if ack is not None:
            pipe.xack(STREAM, GROUP, ack)
            pipe.hdel(ATTEMPTS, ack)
        await pipe.execute()
    EVENTS_DEAD_LETTERED.labels("invalid" if reason.startswith("invalid") else "failing").inc()
    log.warning("dead-lettered an event: %s", reason)


async def acknowledge(client: aioredis.Redis, entry_ids: list[str]) -> None:
    """The entries are done with: acknowledge them and forget their attempts, in one MULTI."""
    if entry_ids:
        async with client.pipeline(transaction=True) as pipe:
            pipe.xack(STREAM, GROUP, *entry_ids)
            pipe.hdel(ATTEMPTS, *entry_ids)
            await pipe.execute()


async def count_attempt(client: aioredis.Redis, key: str) -> int:
    """One more failed (or abandoned) attempt at `key` (a stream entry id or a job id); the total."""
    return int(await cast(Awaitable[int], client.hincrby(ATTEMPTS, key, 1)))


async def forget_attempts(client: aioredis.Redis, key: str) -> None:
    await cast(Awaitable[int], client.hdel(ATTEMPTS, key))


class DeadLetter(msgspec.Struct, frozen=True):
    id: str
    reason: str
    event: str


async def dead_letters(client: aioredis.Redis, count: int = 100) -> list[DeadLetter]:
    """The oldest dead letters first, at most `count`."""
    entries = await client.xrange(DEAD, count=count)
    return [
        DeadLetter(
            id=entry_id.decode(),
            reason=fields.get(b"reason", b"").decode("utf-8", "replace"),
            event=fields.get(b"event", b"").decode("utf-8", "replace"),
        )
        for entry_id, fields in entries
    ]


async def requeue(client: aioredis.Redis, dead_id: str) -> str:
    """Put a dead letter's event back on the stream (after the cause is fixed) and remove the letter,
    in one MULTI. Returns the new stream entry's id. Republishing is safe: an event is recorded once
    per (tenant, id), so whatever was already delivered is not delivered again."""
    found = await client.xrange(DEAD, min=dead_id, max=dead_id, count=1)
    if not found:
        raise NotFound(f"no dead letter {dead_id}")
    _, fields = found[0]
    async with client.pipeline(transaction=True) as pipe:
        pipe.xadd(STREAM, {"event": fields.get(b"event", b"")})
        pipe.xdel(DEAD, dead_id)
        new_id, _ = await pipe.execute()
    return str(new_id.decode())


async def observe(client: aioredis.Redis) -> None:
    """Set the stream's gauges (length, pending, lag, dead letters, queued jobs) from Redis; read
    when metrics are scraped. Left as they were if Redis does not answer."""
    try:
        async with client.pipeline(transaction=False) as pipe:
            pipe.xlen(STREAM)
            pipe.xlen(DEAD)
            pipe.zcard(QUEUE)
            pipe.xinfo_groups(STREAM)
            length, dead, queued, groups = await pipe.execute(raise_on_error=False)
    except Unavailable:
        return
    STREAM_LENGTH.set(length if isinstance(length, int) else 0)
    DEAD_LETTERS.set(dead if isinstance(dead, int) else 0)
    QUEUED_JOBS.set(queued if isinstance(queued, int) else 0)
    group = (
        next((g for g in groups if g.get("name") in (GROUP, GROUP.encode())), None)
        if isinstance(groups, list)
        else None
    )
    if group is not None:
        STREAM_PENDING.set(int(group.get("pending") or 0))
        STREAM_LAG.set(int(group.get("lag") or 0))
