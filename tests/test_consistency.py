"""One number everywhere: the unread count never drifts, whatever ran concurrently before.

Both tests drive real PostgreSQL and Redis through the real code paths (fan-outs split into
chunks that run concurrently and sometimes twice, some of events that expire within the run, some
of events of a few groups, so threads are updated while their readers act on them, some older than
the thread they join; stream reads of small events delivered by one statement, with overlapping
recipients, republished ids and a bad event that fails the batch and is dead-lettered alone; reads,
unreads, bulk actions by ids and by filter, read-all, deletes, seen, archive and unarchive, snoozes
hidden, moved and ended, through every profile; the sweep bringing snoozes back and removing
expired rows; and lost caches), then compare at quiescence: the shown rows themselves,
`inbox_counts`, the Redis copy, `/v1/unread-count`, scalebox `unread_count` and totals of the inbox
and the archive, aptly and qualytics totals, the last `unread` event of open streams, and tab counts
(`POST /v1/counts`): the whole inbox is the badge, a tab per type counts that type's rows and the
types sum to the whole, the archive's tab counts the archived rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import msgspec
import redis.exceptions
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from service import admin, ids
from service.errors import Unavailable
from service.keys import GROUP, STREAM
from service.local.harness import Servers
from service.local.invariants import CountsCheck, add, check_counts
from service.process import Backends
from service.settings import Settings
from service.store.fanout import GroupBusy
from tests.support import poison
from tests.support.factories import TABLES, JobRecorder, at, make_event
from tests.support.http import listening, serving
from tests.support.sse import Reader, open_stream
from workers import sweep as worker_sweep
from workers.consumer import MAX_ATTEMPTS, Consumer
from workers.delivery import Delivery

USERS = [f"u{i}" for i in range(6)]
TOPIC_MEMBERS = USERS[::2]
# One event of a stream read: ("new", its users), a republished earlier event ("again"), one whose
# recording fails in PostgreSQL ("poison", see tests/support/poison.py), or one that is not valid.
Small = tuple[str, list[str]]


# Every event is of one of these types (tabs per type must sum to the whole inbox), and many are of
# one of a few groups, so that the same threads are updated again and again.
TYPES = ["scan.completed", "scan.failed", "review.requested"]
GROUPS = ["pr:1", "pr:2", "pr:3"]
ACTORS = ["ann", "bob", "cy", "dee"]
BULK_ACTIONS = ["read", "unread", "archive", "unarchive", "delete"]


def bulk_body(pick: int, via: int) -> dict[str, Any]:
    """One of the 48 filters `pick` names (read flag x archived x type and before), with one of the
    five actions."""
    f: dict[str, Any] = {}
    read = [None, True, False][pick % 3]
    archived = [None, False, True, "all"][pick // 3 % 4]
    extra = pick // 12 % 4
    if read is not None:
        f["read"] = read
    if archived is not None:
        f["archived"] = archived
    if extra & 1:
        f["type"] = [TYPES[(pick + via) % len(TYPES)]]
    if extra & 2:
        # Older than the events published "an hour ago" are none; the others are older than now.
        f["before"] = at(-1800) if pick % 2 else at(0)
    return {"action": BULK_ACTIONS[via % len(BULK_ACTIONS)], "filter": f}


async def as_a_job(work: Callable[[bool], Awaitable[object]], attempts: int = 6) -> None:
    """Fan-out work run as the worker runs it: when PostgreSQL does not answer in time, the stream
    consumer and arq run it again later (`work(True)`: an attempt may have committed before). Here
    that happens when every pooled connection is taken while the storm's operations fill the
    machine. A chunk of a group's event waits, as arq's job does, for the group's earlier events
    (store/fanout.py)."""
    attempt, waits = 0, 0
    while True:
        try:
            await work(attempt > 0)
            return
        except GroupBusy:  # a chunk after an earlier event of its group: arq runs it again later
            waits += 1
            if waits > 1500:  # 30 s: the earlier event never finished
                raise
            await asyncio.sleep(0.02)
            continue
        except Unavailable:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1 * 2**attempt)
            attempt += 1


class Harness:
    """The system under test, and every way of changing a user's inbox."""

    def __init__(self, b: Backends, http: httpx.AsyncClient) -> None:
        self.b = b
        self.http = http
        self.jobs = JobRecorder()
        self.fan = Delivery(b, self.jobs)  # type: ignore[arg-type]
        self.tokens: dict[str, str] = {}
        self.published: list[Any] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, settings: Settings) -> AsyncIterator[Harness]:
        backends = await Backends.open(settings, "herald-consistency")
        try:
            async with serving(settings) as http:
                harness = cls(backends, http)
                await harness.reset()
                yield harness
        finally:
            await backends.close()

    async def reset(self) -> None:
        async with self.b.pool.acquire() as conn:
            await conn.execute(f"TRUNCATE {TABLES} CASCADE")
            for user in USERS:
                self.tokens[user] = (await admin.create_user(conn, "acme", user)).token
            for user in TOPIC_MEMBERS:
                await admin.subscribe(conn, "acme", user, "topic")
        await self.b.redis.flushdb()
        self.published.clear()
        self.jobs = JobRecorder()
        self.fan = Delivery(self.b, self.jobs)  # type: ignore[arg-type]  # its tenant cache outlived the truncation

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    # -- changes ---------------------------------------------------------------------------

    async def publish(
        self,
        audience: dict[str, Any],
        repeat: bool = False,
        expires: float | None = None,
        *,
        group: str | None = None,
        actor: str | None = None,
        type: str = TYPES[0],
        old: bool = False,
    ) -> None:
        """Fan out an event; its chunk jobs run concurrently, and with `repeat`, twice each (and the
        event is one published before, which must change nothing). With `expires`, the event expires
        that many seconds from now; with `group` (and `actor`) it starts or updates a thread; `old`
        events happened an hour ago, before any thread they join."""
        fields: dict[str, Any] = {"type": type}
        if expires is not None:
            fields["expires_at"] = at(expires)
        if group is not None:
            fields["group"] = group
        if actor is not None:
            fields["actor"] = actor
        if old:
            fields["occurred_at"] = at(-3600)
        event = random.choice(self.published) if repeat and self.published else make_event(audience=audience, **fields)
        self.published.append(event)
        await as_a_job(lambda again: self.fan.ingest(event, retry=again))
        pending, self.jobs.jobs = self.jobs.jobs, []
        runs = [as_a_job(lambda _, args=args: self.fan.run_chunk(*args)) for _, args, _ in pending]
        if repeat:
            runs += [as_a_job(lambda _, args=args: self.fan.run_chunk(*args)) for _, args, _ in pending]
        await asyncio.gather(*runs)

    async def publish_batch(self, smalls: list[Small]) -> None:
        """Queue small events on the stream in one MULTI and handle them as a worker's read does
        (workers/consumer.py: the batch, then each left-over alone), retrying what fails until it
        is dead-lettered. Concurrent calls read each other's entries too, as workers do."""
        raws: list[bytes] = []
        for kind, users in smalls:
            if kind == "again" and self.published:
                raws.append(msgspec.json.encode(random.choice(self.published)))
                continue
            fields: dict[str, Any] = {"type": poison.POISON_TYPE} if kind == "poison" else {}
            made = make_event(users=users, **fields)
            # An invalid one (an empty message) is dead-lettered as it is read, before any batch.
            raws.append(msgspec.json.encode(msgspec.structs.replace(made, message="") if kind == "invalid" else made))
            if kind == "new":
                self.published.append(made)
        consumer = Consumer(self.fan)
        try:
            async with self.b.redis.pipeline(transaction=True) as pipe:
                pipe.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
                for raw in raws:
                    pipe.xadd(STREAM, {"event": raw})
                await pipe.execute(raise_on_error=False)  # BUSYGROUP: made by an earlier call
            for start in (">", *["0"] * MAX_ATTEMPTS):  # the read, then the retries of what failed
                read = await self.b.redis.xreadgroup(GROUP, consumer.name, {STREAM: start}, count=100)
                if not read or not read[0][1]:
                    break
                await consumer.handle(read[0][1], retry=start == "0")
        except redis.exceptions.ResponseError as exc:
            if "NOGROUP" not in str(exc):  # lose_cache emptied Redis meanwhile: the read is gone with it
                raise

    async def rows(self, user: str) -> list[int]:
        async with self.b.pool.acquire() as conn:
            found = await conn.fetch(
                "SELECT i.id FROM inbox i JOIN users u ON u.id = i.user_id WHERE u.external_id = $1 ORDER BY i.id", user
            )
        return [r[0] for r in found]

    async def change(self, kind: str, user: str, pick: int, via: int) -> None:
        rows = await self.rows(user)
        h = self.headers(user)
        row = rows[pick % len(rows)] if rows else 1
        some = rows[pick % max(len(rows), 1) :][:3] or [1]
        sb, ap = ids.to_scalebox(row), ids.to_uuid(row)
        actions: dict[str, list[Callable[[], Awaitable[httpx.Response]]]] = {
            "read": [
                lambda: self.http.put(f"/api/user-notifications/acknowledge/{row}", headers=h),
                lambda: self.http.patch(f"/v1/notifications/{sb}/read", headers=h),
                lambda: self.http.patch(f"/aptly/v1/notifications/{ap}/read", headers=h),
                lambda: self.http.patch(
                    "/api/user-notifications/acknowledge", json=[{"id": r} for r in some], headers=h
                ),
                lambda: self.http.patch(
                    "/v1/notifications/bulk-read",
                    json={"notification_ids": [ids.to_scalebox(r) for r in some]},
                    headers=h,
                ),
            ],
            "unread": [
                lambda: self.http.patch(f"/v1/notifications/{sb}/unread", headers=h),
                lambda: self.http.patch(f"/aptly/v1/notifications/{ap}/unread", headers=h),
                lambda: self.http.patch(
                    "/v1/notifications/bulk-unread",
                    json={"notification_ids": [ids.to_scalebox(r) for r in some]},
                    headers=h,
                ),
            ],
            "read_all": [
                lambda: self.http.patch("/api/user-notifications/acknowledge", json=[], headers=h),
                lambda: self.http.patch("/v1/notifications/read-all", headers=h),
                lambda: self.http.patch("/aptly/v1/notifications/read-all", headers=h),
            ],
            "delete": [
                lambda: self.http.delete(f"/v1/notifications/{sb}", headers=h),
                lambda: self.http.delete(f"/aptly/v1/notifications/{ap}", headers=h),
                lambda: self.http.post(
                    "/v1/notifications/bulk-delete",
                    json={"notification_ids": [ids.to_scalebox(r) for r in some]},
                    headers=h,
                ),
            ],
            "delete_all": [lambda: self.http.delete("/v1/notifications", headers=h)],
            "archive": [lambda: self.http.patch(f"/v1/notifications/{sb}/archive", headers=h)],
            "unarchive": [lambda: self.http.patch(f"/v1/notifications/{sb}/unarchive", headers=h)],
            "bulk": [lambda: self.http.post("/v1/notifications/bulk", json=bulk_body(pick, via), headers=h)],
            "seen": [lambda: self.http.post("/v1/seen", headers=h)],
            # Hidden for a moment (the sweep brings it back), for long, or a snooze ended at once.
            "snooze": [
                lambda: self.http.patch(f"/v1/notifications/{sb}/snooze", json={"until": at(0.2)}, headers=h),
                lambda: self.http.patch(f"/v1/notifications/{sb}/snooze", json={"until": at(60)}, headers=h),
                lambda: self.http.patch(f"/v1/notifications/{sb}/snooze", json={"until": at(-1)}, headers=h),
            ],
        }
        options = actions[kind]
        reply = await options[via % len(options)]()
        assert reply.status_code in (200, 404), reply.text

    async def lose_cache(self) -> None:
        await self.b.redis.flushdb()

    async def sweep(self) -> None:
        """What a worker does every second: snoozes that ended come back, expired rows go."""
        await worker_sweep.sweep(self.b)

    # -- the check ---------------------------------------------------------------------------

    async def check(self, streams: dict[str, Reader] | None = None) -> None:
        # The shown rows (a snoozed one is in no list and no count) = inbox_counts = the Redis copy.
        async with self.b.pool.acquire() as conn:
            found = await check_counts(conn, self.b.redis)
        assert found.rows_off == [], "inbox_counts drifted"
        assert found.copies_off == [], "the Redis copy drifted"
        assert found.types_off == [], "rows' copied types drifted from their events"
        for user in USERS:
            unread, total, unseen = found.shown[user]
            h = self.headers(user)
            answer = (await self.http.get("/v1/unread-count", headers=h)).json()
            badge = answer["unread_count"]
            assert answer["unseen_count"] == unseen, f"{user}: unseen {answer['unseen_count']} but {unseen}"
            scalebox = (await self.http.get("/v1/notifications", params={"limit": 1}, headers=h)).json()["data"]
            aptly = (
                await self.http.get(
                    "/aptly/v1/notifications", params={"tenantId": "acme", "status": "UNREAD"}, headers=h
                )
            ).json()
            qualytics = (await self.http.get("/api/user-notifications", headers=h)).json()["total"]
            seen = (badge, scalebox["unread_count"], aptly["data"]["total"], qualytics, scalebox["pagination"]["total"])
            assert seen == (unread, unread, unread, unread, total), f"{user}: {seen} but {unread} unread of {total}"
            await self.check_tabs(user, found)
            if streams and user in streams:
                assert await last_unread(streams[user]) == unread, f"the stream of {user} drifted"

    async def check_tabs(self, user: str, found: CountsCheck) -> None:
        """Tab counts and the archive against the rows: the whole inbox is the badge, each type's
        tab is that type's rows and the types sum to the whole, the archive is the archived rows."""
        h = self.headers(user)
        tabs: dict[str, Any] = {"all": {}, "archive": {"archived": True}, "everything": {"archived": "all"}}
        tabs |= {t: {"type": [t]} for t in TYPES}
        reply = await self.http.post("/v1/counts", json={"tabs": tabs}, headers=h)
        assert reply.status_code == 200, reply.text
        counted = {name: (n["unread"], n["total"], n["unseen"]) for name, n in reply.json()["tabs"].items()}
        whole, archive = found.shown[user], found.archived(user)
        typed = found.by_type.get(user, {})
        assert counted["all"] == whole, f"{user}: tab of the inbox {counted['all']} but {whole} (unread/total/unseen)"
        for t in TYPES:
            assert counted[t] == typed.get(t, (0, 0, 0)), f"{user}: tab {t} {counted[t]} but {typed.get(t)}"
        assert add(*(counted[t] for t in TYPES)) == counted["all"], f"{user}: the types do not sum to the whole"
        assert counted["archive"] == archive, f"{user}: tab of the archive {counted['archive']} but {archive}"
        assert counted["everything"] == add(whole, archive), f"{user}: inbox and archive {counted['everything']}"
        listed = await self.http.get("/v1/notifications", params={"archived": "true", "limit": 1}, headers=h)
        assert listed.json()["data"]["pagination"]["total"] == archive[1], f"{user}: the archive's list drifted"


async def last_unread(stream: Reader) -> int | None:
    """The newest badge a stream has announced, once it has gone quiet."""
    value = None
    with contextlib.suppress(TimeoutError):
        while True:
            message = await stream.next_event(timeout=0.5)
            if message.event == "unread":
                value = message.json()["unread_count"]
    return value


AUDIENCES: list[dict[str, Any]] = [
    {"users": USERS[:2]},
    {"users": USERS},
    {"topics": ["topic"]},
    {"all": True},
    {"users": USERS[3:], "topics": ["topic"]},
]
KINDS = ["read", "unread", "read_all", "delete", "delete_all", "seen", "snooze", "archive", "unarchive", "bulk"]
SMALL_KINDS = ["new", "new", "new", "new", "again", "invalid", "poison"]
SMALLS = st.lists(
    st.tuples(st.sampled_from(SMALL_KINDS), st.lists(st.sampled_from(USERS), min_size=1, max_size=3)),
    min_size=2,
    max_size=6,
)


def random_smalls(rng: random.Random) -> list[Small]:
    """A read of 2 to 8 small events over few users, so that they overlap (most of one or two users,
    which fit the storm's chunks of two, so are batched); one read in four holds a poison event,
    which fails its batch as a whole."""
    kinds = [rng.choice(SMALL_KINDS[:-1]) for _ in range(rng.randint(2, 8))]
    if rng.random() < 0.25:
        kinds[rng.randrange(len(kinds))] = "poison"
    return [(kind, rng.sample(USERS, rng.choice([1, 1, 2, 2, 3]))) for kind in kinds]


async def test_counts_agree_after_a_storm_of_concurrent_operations(
    servers: Servers, settings: Settings, clean: None
) -> None:
    # Chunks of two recipients: every multi-user event is a split fan-out whose chunks race.
    small = msgspec.structs.replace(settings, fanout_chunk=2)
    rng = random.Random(20261122)
    async with Harness.running(small) as h, listening(small) as base, poison.poisoned(h.b):
        for _ in range(3):
            await h.publish({"users": USERS})
        async with contextlib.AsyncExitStack() as stack:
            streams = {u: await stack.enter_async_context(open_stream(base, h.headers(u))) for u in USERS[:3]}
            for reader in streams.values():
                await reader.next_event()

            def random_operation() -> Awaitable[None]:
                roll = rng.random()
                if roll < 0.2:
                    expires = rng.choice([None, None, None, 0.3, 2.0])
                    group = rng.choice([None, None, *GROUPS])
                    return h.publish(
                        rng.choice(AUDIENCES),
                        repeat=rng.random() < 0.2,
                        expires=expires,
                        group=group,
                        actor=rng.choice([None, *ACTORS]) if group else None,
                        type=rng.choice(TYPES),
                        old=rng.random() < 0.2,
                    )
                if roll < 0.32:
                    return h.publish_batch(random_smalls(rng))
                if roll < 0.35:
                    return h.lose_cache()
                if roll < 0.41:
                    return h.sweep()
                return h.change(rng.choice(KINDS), rng.choice(USERS), rng.randrange(48), rng.randrange(5))

            for _ in range(12):
                await asyncio.gather(*(random_operation() for _ in range(25)))
            # Some snoozes and expiries fell due during the storm and were swept while it raged;
            # the rest are swept now, and then every number agrees again.
            await asyncio.sleep(0.3)
            await h.sweep()
            await h.check(streams)


class CountMachine(RuleBasedStateMachine):
    """After every step, every number a client can see equals the unread rows."""

    loop: asyncio.AbstractEventLoop
    harness: Harness

    def run(self, work: Awaitable[None]) -> None:
        self.loop.run_until_complete(work)

    @initialize()
    def fresh_state(self) -> None:
        self.run(self.harness.reset())

    @rule(
        audience=st.sampled_from(AUDIENCES),
        repeat=st.booleans(),
        expires=st.sampled_from([None, -1.0, 0.1, 60.0]),
        group=st.sampled_from([None, *GROUPS]),
        actor=st.sampled_from([None, *ACTORS]),
        type=st.sampled_from(TYPES),
        old=st.booleans(),
    )
    def publish(
        self,
        audience: dict[str, Any],
        repeat: bool,
        expires: float | None,
        group: str | None,
        actor: str | None,
        type: str,
        old: bool,
    ) -> None:
        self.run(self.harness.publish(audience, repeat, expires, group=group, actor=actor, type=type, old=old))

    @rule(kind=st.sampled_from(KINDS), user=st.sampled_from(USERS), pick=st.integers(0, 47), via=st.integers(0, 4))
    def change(self, kind: str, user: str, pick: int, via: int) -> None:
        self.run(self.harness.change(kind, user, pick, via))

    @rule(
        first=st.tuples(st.sampled_from(KINDS), st.sampled_from(USERS), st.integers(0, 47), st.integers(0, 4)),
        second=st.tuples(st.sampled_from(KINDS), st.sampled_from(USERS), st.integers(0, 47), st.integers(0, 4)),
        audience=st.sampled_from(AUDIENCES),
        group=st.sampled_from([None, *GROUPS]),
        actor=st.sampled_from([None, *ACTORS]),
    )
    def concurrently(
        self,
        first: tuple[str, str, int, int],
        second: tuple[str, str, int, int],
        audience: dict[str, Any],
        group: str | None,
        actor: str | None,
    ) -> None:
        """Two user actions and a publish at once: with a group, a thread update racing them."""

        async def together() -> None:
            await asyncio.gather(
                self.harness.change(*first),
                self.harness.change(*second),
                self.harness.publish(audience, group=group, actor=actor),
            )

        self.run(together())

    @rule(smalls=SMALLS)
    def publish_batch(self, smalls: list[Small]) -> None:
        self.run(self.harness.publish_batch(smalls))

    @rule(
        smalls=SMALLS,
        change=st.tuples(st.sampled_from(KINDS), st.sampled_from(USERS), st.integers(0, 30), st.integers(0, 4)),
    )
    def batch_among_changes(self, smalls: list[Small], change: tuple[str, str, int, int]) -> None:
        async def together() -> None:
            await asyncio.gather(
                self.harness.publish_batch(smalls), self.harness.change(*change), self.harness.publish_batch(smalls)
            )

        self.run(together())

    @rule()
    def lose_cache(self) -> None:
        self.run(self.harness.lose_cache())

    @rule(wait=st.sampled_from([0.0, 0.25]))
    def sweep(self, wait: float) -> None:
        async def later() -> None:
            await asyncio.sleep(wait)  # long enough for the short snoozes and expiries to fall due
            await self.harness.sweep()

        self.run(later())

    @invariant()
    def one_number_everywhere(self) -> None:
        self.run(self.harness.check())


def test_counts_never_drift_under_any_sequence(servers: Servers) -> None:
    settings = Settings(
        database_url=servers.database_url, redis_url=servers.redis_url, fanout_chunk=2, backend_timeout=2.0
    )
    loop = asyncio.new_event_loop()
    stack = contextlib.AsyncExitStack()
    try:
        CountMachine.loop = loop
        CountMachine.harness = loop.run_until_complete(stack.enter_async_context(Harness.running(settings)))
        loop.run_until_complete(stack.enter_async_context(poison.poisoned(CountMachine.harness.b)))
        run_state_machine_as_test(
            CountMachine,
            settings=hypothesis_settings(
                max_examples=12,
                stateful_step_count=15,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
                derandomize=True,
            ),
        )
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()
