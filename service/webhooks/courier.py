"""The courier: every worker process's loop that takes due deliveries and POSTs them.

One round: record the outcomes of the POSTs that finished (one statement), claim as many due rows
as there is room for (one statement; store/webhooks.py), render the bodies of first attempts, and
start a task per row. It never waits for a POST: a round runs again as soon as POSTs finish, or
every IDLE seconds when none is due, so a change's webhook leaves within about IDLE seconds.

Bounds, so that a slow or dead endpoint slows nothing else: at most `in_flight` POSTs at once in the
process, at most `per_endpoint` of them to one webhook (a claim takes no more than that for it), each
bounded by send.TIMEOUT. A hanging endpoint holds its own slots only; every other tenant's
deliveries go on.

Outcomes: a 2xx is delivered. Anything else (an error status, no answer within the timeout, a
refused connection or address) is tried again after about 1, 2, 4, ... seconds (doubling, at most
MAX_DELAY apart, with a tenth of jitter) until the delivery is GIVE_UP_AFTER old; then it is failed,
counted in herald_webhook_attempts{outcome="failed"}, and shown as such in the deliveries list.
A worker that dies mid-POST leaves its rows leased: they are due again LEASE seconds after the
claim, and sent again: the receiver may see that webhook-id twice (at least once, never lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from service.backends import postgres
from service.errors import Unavailable
from service.metrics import WEBHOOK_ATTEMPTS, WEBHOOK_LAG, WEBHOOK_PENDING, WEBHOOK_SECONDS
from service.model import InboxItem, Principal
from service.process import Backends
from service.store import inbox
from service.store import webhooks as store
from service.webhooks import NOTIFICATION_TYPES
from service.webhooks.send import Attempt, Sender

log = logging.getLogger("herald.webhooks")

IDLE = 0.2  # seconds between claims while nothing is due
IN_FLIGHT = 256
PER_ENDPOINT = 32
LEASE = 60.0  # a claimed row is due again this long after its claim, if its outcome is never recorded
MAX_DELAY = 3600.0
GIVE_UP_AFTER = 24 * 3600.0
# Finished deliveries stay listed this long, then are pruned (checked every PRUNE_EVERY seconds).
KEEP = 7 * 24 * 3600.0
PRUNE_EVERY = 60.0
PRUNE_BATCH = 5_000
OBSERVE_EVERY = 5.0
GATHER = 0.005
KEPT_OUTCOMES = 10_000
# A stop lets POSTs in flight finish for this long (one timeout and a little); the rest are cancelled
# and sent again by a worker after their lease.
DRAIN = 11.0

# How a notification is shown in a webhook's `data`: the scalebox item (service/http's presenter,
# handed in by the worker so the core does not import the HTTP layer).
Present = Callable[[InboxItem], Any]


class Body(msgspec.Struct, kw_only=True):
    """What a receiver gets: the same on every attempt of one delivery."""

    id: str
    type: str
    tenant: str
    user: str | None
    occurred_at: datetime
    data: Any


def delay(tries: int) -> float:
    """Seconds before the next attempt after `tries` failed ones: about 1, 2, 4, ... at most an hour."""
    base = min(MAX_DELAY, 2.0 ** max(0, tries - 1))
    return base * random.uniform(0.9, 1.1)  # noqa: S311 - jitter, not a secret


class Courier:
    def __init__(
        self,
        b: Backends,
        sender: Sender,
        present: Present,
        *,
        in_flight: int = IN_FLIGHT,
        per_endpoint: int = PER_ENDPOINT,
        idle: float = IDLE,
        lease: float = LEASE,
        give_up_after: float = GIVE_UP_AFTER,
        drain: float = DRAIN,
    ) -> None:
        self.b = b
        self.sender = sender
        self.present = present
        self.in_flight = in_flight
        self.per_endpoint = per_endpoint
        self.idle = idle
        self.lease = lease
        self.give_up_after = give_up_after
        self.drain_for = drain
        self._busy: dict[int, int] = {}  # webhook id -> POSTs in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._done: list[store.Outcome] = []
        self._finished = asyncio.Event()
        self._next_prune = 0.0
        self._next_observe = 0.0

    async def run(self, stopping: asyncio.Event) -> None:
        """Rounds until `stopping` is set, then the POSTs in flight finish (for up to DRAIN seconds)
        and their outcomes are recorded. A backend that does not answer is waited for; no failure
        ends the loop."""
        failures = 0
        while not stopping.is_set():
            try:
                more = await self.round()
                failures = 0
            except Unavailable as exc:
                failures += 1
                if failures == 1:
                    log.warning("webhook deliveries wait for a backend: %s", exc)
                more = False
            except Exception:
                failures += 1
                log.exception("webhook courier round failed; trying again")
                more = False
            await self._wait(stopping, 0.0 if more else min(self.idle * 2**failures, 5.0))
        await self.drain(self.drain_for)

    async def round(self) -> bool:
        """One round; True when the claim was cut short by the room left (more may be due)."""
        await self._record()
        now = time.monotonic()
        if now >= self._next_observe:
            self._next_observe = now + OBSERVE_EVERY
            await self._observe()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            await postgres.run(self.b.pool, store.prune, KEEP, PRUNE_BATCH, timeout=self.b.settings.backend_timeout)
        room = self.in_flight - len(self._tasks)
        if room <= 0:
            return False
        claimed = await postgres.run(
            self.b.pool, self._claim, room, dict(self._busy), timeout=self.b.settings.backend_timeout
        )
        for delivery, body in claimed:
            self._busy[delivery.webhook_id] = self._busy.get(delivery.webhook_id, 0) + 1
            task = asyncio.create_task(self._deliver(delivery, body), name=f"herald-webhook-{delivery.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed) == room

    async def _claim(
        self, conn: asyncpg.Connection, room: int, busy: dict[int, int]
    ) -> list[tuple[store.Claimed, bytes]]:
        claimed = await store.claim(conn, room, busy, self.per_endpoint, self.lease)
        return [(c, c.body if c.body is not None else await self._render(conn, c)) for c in claimed]

    async def _render(self, conn: asyncpg.Connection, c: store.Claimed) -> bytes:
        """The body of a first attempt. A notification's `data` is its item as the change left it,
        rendered from the snapshot the change recorded and the event (which never changes), so a
        body rendered again after a crash is the same."""
        data: Any = c.data
        if c.type in NOTIFICATION_TYPES and c.snapshot is not None and c.user_id is not None and c.user is not None:
            who = Principal(
                user_id=c.user_id,
                user=c.user,
                tenant_id=c.tenant_id,
                tenant=c.tenant,
                role="member",
                active=True,
                kind="pat",
            )
            item = await inbox.snapshot(conn, who, c.snapshot)
            data = None if item is None else self.present(item)
        body = Body(id=c.msg_id, type=c.type, tenant=c.tenant, user=c.user, occurred_at=c.occurred_at, data=data)
        return msgspec.json.encode(body)

    async def _deliver(self, c: store.Claimed, body: bytes) -> None:
        started = time.monotonic()
        try:
            if not c.live:
                attempt = Attempt(ok=False, error="the webhook was deleted")
            else:
                attempt = await self.sender.send(c.url, c.msg_id, c.key, body)
        except Exception as exc:  # a bug: recorded as a failed attempt, and retried like one
            log.exception("webhook delivery %s failed unexpectedly", c.id)
            attempt = Attempt(ok=False, error=f"internal error: {type(exc).__name__}")
        finally:
            left = self._busy.get(c.webhook_id, 1) - 1
            if left > 0:
                self._busy[c.webhook_id] = left
            else:
                self._busy.pop(c.webhook_id, None)
        WEBHOOK_SECONDS.observe(time.monotonic() - started)
        self._done.append(
            store.Outcome(
                id=c.id,
                tries=c.tries,
                ok=attempt.ok,
                status=attempt.status,
                error=attempt.error,
                delay=delay(c.tries),
                final=not c.live,  # a deleted webhook's row fails at once: it would only be refused again
                body=body,
            )
        )
        self._finished.set()

    async def _record(self) -> None:
        if not self._done:
            return
        done, self._done = self._done, []
        try:
            statuses = await postgres.run(
                self.b.pool, store.record, done, self.give_up_after, timeout=self.b.settings.backend_timeout
            )
        except BaseException:
            # Recorded on a later round; past KEPT_OUTCOMES, the oldest are dropped and their rows are
            # sent again once their lease ends (at least once, still).
            self._done = (done + self._done)[-KEPT_OUTCOMES:]
            raise
        for status in statuses:
            WEBHOOK_ATTEMPTS.labels(status if status != "pending" else "retry").inc()

    async def _observe(self) -> None:
        pending, lag = await postgres.run(self.b.pool, store.backlog, timeout=self.b.settings.backend_timeout)
        WEBHOOK_PENDING.set(pending)
        WEBHOOK_LAG.set(lag)

    async def _wait(self, stopping: asyncio.Event, seconds: float) -> None:
        """Until POSTs finish, `stopping` is set, or `seconds` pass (0: only let the tasks run)."""
        if seconds > 0 and not self._finished.is_set():
            finished = asyncio.ensure_future(self._finished.wait())
            stop = asyncio.ensure_future(stopping.wait())
            try:
                await asyncio.wait([finished, stop], timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
            finally:
                finished.cancel()
                stop.cancel()
        # While POSTs finish, a moment more gathers several outcomes (and frees several slots) for
        # the next round's two statements, instead of one round per POST.
        await asyncio.sleep(GATHER if self._tasks else 0)
        self._finished.clear()

    async def drain(self, within: float = DRAIN) -> None:
        """Let the POSTs in flight finish (for up to `within` seconds) and record their outcomes."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=within)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1)
        with contextlib.suppress(Exception):
            await self._record()
