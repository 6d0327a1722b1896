"""Erasing a user (DELETE /v1/admin/users/{user}): nothing of theirs left in any table or Redis key,
everyone else untouched, counts exact all along, the job run by a real arq worker, resumable; and
who may ask, and what a bad id gets."""

import time
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from service import erasure, jobs
from service.keys import count_key
from service.process import Backends
from service.settings import Settings
from tests.support.erasure import copies, others, traces
from tests.support.factories import Deliver, MakeUser, User
from tests.support.http import listening
from tests.support.invariants import counts_agree
from tests.support.queries import rows, subscribe
from tests.support.sse import Reader, open_stream
from tests.support.waits import eventually
from workers import erasure as erasure_jobs
from workers.delivery import Delivery
from workers.main import build_worker

Client = httpx.AsyncClient


class World(msgspec.Struct):
    """Alice, to be erased, with one of everything; Bob beside her; another tenant's Alice; an admin."""

    admin: User
    alice: User
    alice_again: str  # her second token
    bob: User
    elsewhere: User  # tenant globex's own "alice"


async def run_worker(settings: Settings) -> Any:
    """A real arq worker, in burst mode: it runs what is queued (the erasure job), then stops."""
    worker = build_worker(settings, burst=True)
    try:
        await worker.async_run()
    finally:
        await worker.close()
    return worker


async def ended(stream: Reader, within: float) -> bool:
    """Whether the stream ends (after heartbeats, maybe) within `within` seconds."""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            await stream.next(timeout=within)
    except EOFError:
        return True
    return False


async def world(client: Client, backends: Backends, make_user: MakeUser, deliver: Deliver) -> World:
    admin = await make_user(user="root", role="admin")
    alice, bob = await make_user(user="alice"), await make_user(user="bob")
    elsewhere = await make_user(tenant="globex", user="alice")
    async with backends.pool.acquire() as conn:
        alice_again = await _token(conn, "alice")
    await subscribe(backends, "nightly", ["alice", "bob"])
    for who in (alice, bob, elsewhere):
        reply = await client.put(
            "/v1/preferences", json={"muted": {"types": ["noise"], "categories": [], "topics": []}}, headers=who.headers
        )
        assert reply.status_code == 200
    for _ in range(3):
        await deliver(users=["alice", "bob"])
    await deliver(audience={"topics": ["nightly"]})
    await deliver(users=["alice"])
    await deliver(tenant="globex", users=["alice"])
    # Some of hers read, snoozed, seen: every kind of row state.
    listed = (await client.get("/v1/notifications", headers=alice.headers)).json()["data"]["notifications"]
    assert len(listed) == 5
    assert (await client.patch(f"/v1/notifications/{listed[0]['id']}/read", headers=alice.headers)).status_code == 200
    until = {"until": "2999-01-01T00:00:00Z"}
    snoozed = await client.patch(f"/v1/notifications/{listed[1]['id']}/snooze", json=until, headers=alice.headers)
    assert snoozed.status_code == 200
    assert (await client.post("/v1/seen", headers=alice.headers)).status_code == 200
    await deliver(users=["alice", "bob"])  # unseen again
    for who in (alice, bob, elsewhere):  # every badge and tab count cached in Redis
        assert (await client.get("/v1/unread-count", headers=who.headers)).status_code == 200
        assert (await client.post("/v1/counts", json={"tabs": {"all": {}}}, headers=who.headers)).status_code == 200
    await deliver(users=["alice"], group="g", actor="bob")  # a thread, and its archived twin
    await deliver(users=["alice"], group="g", actor="carol")
    return World(admin=admin, alice=alice, alice_again=alice_again, bob=bob, elsewhere=elsewhere)


async def _token(conn: asyncpg.Connection, user: str) -> str:
    from service import admin

    return await admin.create_token(conn, "acme", user)


async def test_nothing_of_the_user_is_left_and_everyone_else_is_untouched(
    client: Client, backends: Backends, settings: Settings, make_user: MakeUser, deliver: Deliver
) -> None:
    w = await world(client, backends, make_user, deliver)
    async with backends.pool.acquire() as conn:
        assert await traces(conn, backends.redis, w.alice.user_id, "acme", "alice")  # the check sees her
        before = await others(conn, w.alice.user_id)
    cached = await copies(backends.redis)
    assert count_key(w.alice.user_id) in cached

    reply = await client.delete("/v1/admin/users/alice", headers=w.admin.headers)
    assert (reply.status_code, reply.json()) == (202, {"erasing": "alice"})
    await run_worker(settings)

    reply = await client.get("/v1/admin/users/alice", headers=w.admin.headers)
    assert reply.status_code == 404 and reply.json()["status"] == 404
    async with backends.pool.acquire() as conn:
        assert await traces(conn, backends.redis, w.alice.user_id, "acme", "alice") == []
        assert await others(conn, w.alice.user_id) == before  # rows, counts (versions too), tokens, ...
    after = await copies(backends.redis)
    assert after == {k: v for k, v in cached.items() if k != count_key(w.alice.user_id)}
    await counts_agree(backends)
    for token in (w.alice.token, w.alice_again):
        assert (await client.get("/v1/unread-count", headers={"X-API-Key": token})).status_code == 401
    assert (await client.get("/v1/unread-count", headers=w.bob.headers)).json()["unread_count"] == 5
    assert (await client.get("/v1/unread-count", headers=w.elsewhere.headers)).json()["unread_count"] == 1


async def test_while_being_erased_the_user_is_inactive_and_cannot_be_made_again(
    client: Client, backends: Backends, settings: Settings, make_user: MakeUser, deliver: Deliver
) -> None:
    w = await world(client, backends, make_user, deliver)
    assert (await client.delete("/v1/admin/users/alice", headers=w.admin.headers)).status_code == 202

    async def refused() -> bool:  # every API process drops her cached credentials (herald:auth)
        return (await client.get("/v1/unread-count", headers=w.alice.headers)).status_code == 403

    await eventually(refused)
    shown = await client.get("/v1/admin/users/alice", headers=w.admin.headers)
    assert shown.json() == {"user": "alice", "role": "member", "active": False}
    made = await client.post("/v1/admin/users", json={"user": "alice"}, headers=w.admin.headers)
    assert made.status_code == 409 and "being erased" in made.json()["error"]
    topic = {"user": "alice", "topic": "t"}
    assert (await client.post("/v1/admin/subscriptions", json=topic, headers=w.admin.headers)).status_code == 409
    # The fan-out skips her; asking again is harmless.
    await deliver(users=["alice", "bob"])
    assert (await client.delete("/v1/admin/users/alice", headers=w.admin.headers)).status_code == 202
    await run_worker(settings)

    assert (await client.get("/v1/admin/users/alice", headers=w.admin.headers)).status_code == 404
    made = await client.post("/v1/admin/users", json={"user": "alice"}, headers=w.admin.headers)
    assert made.status_code == 201
    fresh = {"X-API-Key": made.json()["token"]}
    assert (await client.get("/v1/unread-count", headers=fresh)).json()["unread_count"] == 0
    assert (await client.get("/v1/notifications", headers=fresh)).json()["data"]["notifications"] == []
    assert (await client.get("/v1/preferences", headers=fresh)).json()["muted"]["types"] == []
    assert (await client.get("/v1/unread-count", headers=w.bob.headers)).json()["unread_count"] == 6
    await counts_agree(backends)


async def test_a_later_event_naming_the_erased_id_creates_a_new_empty_user(
    client: Client, backends: Backends, settings: Settings, make_user: MakeUser, deliver: Deliver, fan: Delivery
) -> None:
    w = await world(client, backends, make_user, deliver)
    assert any(user == "alice" for _, user in fan._known), "the worker remembers her: its fast path is tested"
    await client.delete("/v1/admin/users/alice", headers=w.admin.headers)
    await run_worker(settings)

    outcome = await deliver(users=["alice", "bob"])
    # Two rows of the event (the outcome lists only the users whose counts it copied: the watched).
    [(written,)] = await rows(backends, "SELECT count(*) FROM inbox WHERE event_id = $1", outcome.event_id)
    assert written == 2
    shown = await client.get("/v1/admin/users/alice", headers=w.admin.headers)
    assert shown.json() == {"user": "alice", "role": "member", "active": True}
    [(new_id, unread, total)] = await rows(
        backends,
        """SELECT u.id, c.unread, c.total FROM users u JOIN tenants t ON t.id = u.tenant_id
           JOIN inbox_counts c ON c.user_id = u.id WHERE t.name = 'acme' AND u.external_id = 'alice'""",
    )
    assert new_id != w.alice.user_id and (unread, total) == (1, 1)
    # And once more, now that the worker knows the new one.
    again = await deliver(users=["alice"])
    assert (await rows(backends, "SELECT count(*) FROM inbox WHERE event_id = $1", again.event_id))[0][0] == 1
    await counts_agree(backends)


async def test_open_streams_of_the_user_end_and_others_go_on(
    settings: Settings, clean: None, make_user: MakeUser, deliver: Deliver
) -> None:
    admin, alice, bob = await make_user(user="root", role="admin"), await make_user(user="alice"), await make_user()
    fast = msgspec.structs.replace(settings, stream_heartbeat=0.3)
    async with (
        listening(fast) as base,
        open_stream(base, alice.headers) as hers,
        open_stream(base, bob.headers) as his,
        httpx.AsyncClient(base_url=base, headers=admin.headers) as http,
    ):
        assert (await hers.next_event()).event == "unread"
        assert (await his.next_event()).event == "unread"
        assert (await http.delete("/v1/admin/users/alice")).status_code == 202
        assert await ended(hers, within=5)
        await deliver(users=[bob.user])
        assert (await his.next_event()).event == "notification"
        refused = await http.get("/v1/stream", headers=alice.headers)
        assert refused.status_code == 403


async def test_it_resumes_where_a_run_stopped_with_exact_counts_meanwhile(
    client: Client,
    backends: Backends,
    settings: Settings,
    make_user: MakeUser,
    deliver: Deliver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(erasure, "BATCH", 2)
    w = await world(client, backends, make_user, deliver)
    user_id = await erasure.begin(backends, "acme", "alice")
    # A worker that did one batch and died: rows left, counts exact (the Redis copy too), no job queued.
    progress = await erasure.run(backends, user_id, batches=1)
    assert (progress.rows, progress.done) == (2, False)
    await counts_agree(backends)
    [(left,)] = await rows(backends, "SELECT count(*) FROM inbox WHERE user_id = $1", user_id)
    assert left == 5  # of seven: six shown (a thread of two events among them) and one snoozed
    # The periodic pass queues the job again (once), and the worker finishes it in runs of one batch.
    queue = jobs.queue_of(backends.redis)
    assert await erasure.queue_marked(backends, queue) == 1
    assert await erasure.queue_marked(backends, queue) == 0
    monkeypatch.setattr(erasure_jobs, "BUDGET", 0.0)
    worker = await run_worker(settings)
    assert worker.jobs_retried >= 2
    async with backends.pool.acquire() as conn:
        assert await traces(conn, backends.redis, w.alice.user_id, "acme", "alice") == []
    assert (await client.get("/v1/admin/users/alice", headers=w.admin.headers)).status_code == 404
    await counts_agree(backends)


async def test_two_erasers_at_once_share_the_work(
    client: Client, backends: Backends, make_user: MakeUser, deliver: Deliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    monkeypatch.setattr(erasure, "BATCH", 1)
    w = await world(client, backends, make_user, deliver)
    user_id = await erasure.begin(backends, "acme", "alice")
    done = await asyncio.gather(erasure.run(backends, user_id), erasure.run(backends, user_id))
    # Each deletes what the other has not; the one that finishes first takes any row left with it.
    assert all(p.done for p in done) and sum(p.rows for p in done) <= 7  # her seven rows
    async with backends.pool.acquire() as conn:
        assert await traces(conn, backends.redis, w.alice.user_id, "acme", "alice") == []
    await counts_agree(backends)


async def test_only_an_admin_of_the_users_tenant_may_see_or_erase_them(
    client: Client, backends: Backends, make_user: MakeUser
) -> None:
    await make_user(user="root", role="admin")
    bob = await make_user(user="bob")
    other_admin = await make_user(tenant="globex", user="boss", role="admin")
    manager = await make_user(user="meg", role="manager")
    producer = await make_user(user="svc", kind="producer")
    for method in ("GET", "DELETE"):
        url = "/v1/admin/users/bob"
        elsewhere = await client.request(method, url, headers=other_admin.headers)
        assert elsewhere.status_code == 404 and set(elsewhere.json()) == {"error", "status"}
        for who in (bob, manager, producer):
            assert (await client.request(method, url, headers=who.headers)).status_code == 403
        assert (await client.request(method, url)).status_code == 401
        assert (await client.request(method, url, headers={"X-API-Key": "herald_pat_" + "x" * 43})).status_code == 401
    [(active, erasing)] = await rows(backends, "SELECT active, erasing_since FROM users WHERE id = $1", bob.user_id)
    assert (active, erasing) == (True, None)
    assert (await client.get("/v1/unread-count", headers=bob.headers)).status_code == 200


async def test_bad_ids(client: Client, backends: Backends, make_user: MakeUser) -> None:
    admin = await make_user(user="root", role="admin")
    for method in ("GET", "DELETE"):
        for bad in ("x" * 201, "a%00b"):
            reply = await client.request(method, f"/v1/admin/users/{bad}", headers=admin.headers)
            assert reply.status_code == 400, (method, bad, reply.text)
            assert reply.json()["field"] == "user" and reply.json()["status"] == 400
        missing = await client.request(method, "/v1/admin/users/nobody", headers=admin.headers)
        assert missing.status_code == 404 and "nobody" in missing.json()["error"]
        empty = await client.request(method, "/v1/admin/users/", headers=admin.headers)
        assert empty.status_code == 404
    longest = await client.get("/v1/admin/users/" + "x" * 200, headers=admin.headers)
    assert longest.status_code == 404  # a valid id, just no such user
    itself = await client.delete("/v1/admin/users/root", headers=admin.headers)
    assert itself.status_code == 409 and "themselves" in itself.json()["error"]
    shown = await client.get("/v1/admin/users/root", headers=admin.headers)
    assert shown.json() == {"user": "root", "role": "admin", "active": True}


async def test_the_openapi_document_describes_both(client: Client) -> None:
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    item = paths["/v1/admin/users/{user}"]
    assert set(item) >= {"get", "delete"}
    assert {"202", "400", "404", "409"} <= set(item["delete"]["responses"])
    assert "409" in paths["/v1/admin/users"]["post"]["responses"]
