"""Snooze: `PATCH /v1/notifications/{id}/snooze` hides a notification from every list and count until
its time, when the sweep brings it back as unread and new, counted and pushed."""

import asyncio
import time
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest

from service import ids
from service.process import Backends
from service.settings import Settings
from tests.support.factories import Deliver, MakeUser, User, at
from tests.support.http import listening
from tests.support.profiles import BADGE, everything, ok, refused, snooze_path
from tests.support.sse import open_stream
from workers import sweep


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


async def rows(deliver: Deliver, n: int, user: str = "alice") -> list[int]:
    return [(await deliver(users=[user])).deliveries[0].inbox_id for _ in range(n)]


async def test_a_snoozed_notification_leaves_every_list_and_count_then_comes_back(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    keep, snoozed, read_one = await rows(deliver, 3)
    h = alice.headers
    await client.patch(f"/v1/notifications/{ids.to_scalebox(read_one)}/read", headers=h)
    await client.post("/v1/seen", headers=h)  # all seen: the one that comes back is new again
    before = await everything(client, alice)
    assert before["counts"] == (2, 0, 2, 3, 2, 3)

    until = at(1.5)
    data = ok(await client.patch(snooze_path(snoozed), json={"until": until}, headers=h), "Notification snoozed")
    assert data["notification_id"] == ids.to_scalebox(snoozed)
    assert datetime.fromisoformat(data["snoozed_until"]) == datetime.fromisoformat(until)
    hidden = await everything(client, alice)
    shown = sorted([keep, read_one])
    assert hidden["scalebox"] == hidden["aptly"] == shown
    assert hidden["qualytics"] == hidden["listing"] == [keep]  # qualytics lists unacknowledged ones
    assert hidden["counts"] == (1, 0, 1, 2, 1, 2)
    # Out of the inbox by id too, on every profile, as a missing notification is.
    sb = ids.to_scalebox(snoozed)
    for reply in (
        await client.get(f"/v1/notifications/{sb}", headers=h),
        await client.patch(f"/v1/notifications/{sb}/read", headers=h),
        await client.delete(f"/v1/notifications/{sb}", headers=h),
        await client.get(f"/api/user-notifications/{snoozed}", headers=h),
        await client.put(f"/api/user-notifications/acknowledge/{snoozed}", headers=h),
        await client.patch(f"/aptly/v1/notifications/{ids.to_uuid(snoozed)}/read", headers=h),
        await client.delete(f"/aptly/v1/notifications/{ids.to_uuid(snoozed)}", headers=h),
    ):
        assert reply.status_code == 404, reply.text
    # Read-all and delete-all act on the inbox as shown: the snoozed one is not touched.
    assert ok(await client.patch("/v1/notifications/read-all", headers=h))["marked_count"] == 1

    # Not before its time, even if the sweep runs.
    assert await sweep.sweep(backends) == (0, 0)
    assert (await everything(client, alice))["counts"] == (0, 0, 0, 2, 0, 2)
    await asyncio.sleep(max(0.0, (datetime.fromisoformat(until) - datetime.now(UTC)).total_seconds()) + 0.05)
    assert await sweep.sweep(backends) == (1, 0)
    back = await everything(client, alice)
    assert back["scalebox"] == back["aptly"] == sorted([keep, snoozed, read_one])
    assert back["qualytics"] == back["listing"] == [snoozed]
    assert back["counts"] == (1, 1, 1, 3, 1, 3), "back as unread and new"
    item = ok(await client.get(f"/v1/notifications/{sb}", headers=h))
    assert item["is_read"] is False


async def test_a_read_notification_comes_back_unread(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    (row,) = await rows(deliver, 1)
    await client.patch(f"/v1/notifications/{ids.to_scalebox(row)}/read", headers=alice.headers)
    ok(await client.patch(snooze_path(row), json={"until": at(0.3)}, headers=alice.headers))
    assert (await client.get(BADGE, headers=alice.headers)).json() == {"unread_count": 0, "unseen_count": 0}
    await asyncio.sleep(0.4)
    await sweep.sweep(backends)
    assert (await client.get(BADGE, headers=alice.headers)).json() == {"unread_count": 1, "unseen_count": 1}


async def test_moving_ending_and_repeating_a_snooze(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    row, other = await rows(deliver, 2)
    h = alice.headers
    path = snooze_path(row)
    ok(await client.patch(path, json={"until": at(60)}, headers=h))
    hidden = (await client.get(BADGE, headers=h)).json()
    assert hidden == {"unread_count": 1, "unseen_count": 1}

    # Moved later: still hidden, and the counts do not move (the ETag stays). Any offset is taken;
    # the answer is in UTC, as every time Herald writes.
    tag = (await client.get(BADGE, headers=h)).headers["etag"]
    later = (datetime.now(UTC) + timedelta(hours=1)).astimezone(timezone(timedelta(hours=2)))
    moved = ok(await client.patch(path, json={"until": later.isoformat()}, headers=h))
    assert moved["snoozed_until"].endswith("Z") and datetime.fromisoformat(moved["snoozed_until"]) == later
    assert (await client.get(BADGE, headers={**h, "If-None-Match": tag})).status_code == 304

    # A time that has passed ends the snooze at once: back as unread and new.
    ended = ok(await client.patch(path, json={"until": at(-5)}, headers=h), "Notification is in the inbox")
    assert ended["snoozed_until"] is None
    assert (await client.get(BADGE, headers=h)).json() == {"unread_count": 2, "unseen_count": 2}
    # ... and on one that is not snoozed, it changes nothing.
    await client.patch(f"/v1/notifications/{ids.to_scalebox(other)}/read", headers=h)
    ok(await client.patch(snooze_path(other), json={"until": at(-5)}, headers=h))
    assert (await client.get(BADGE, headers=h)).json() == {"unread_count": 1, "unseen_count": 1}
    assert await sweep.sweep(backends) == (0, 0)


async def test_snooze_refuses_bad_bodies_and_others_rows(
    client: httpx.AsyncClient, make_user: MakeUser, alice: User, deliver: Deliver
) -> None:
    (row,) = await rows(deliver, 1)
    bob = await make_user(user="bob")
    producer = await make_user(user="svc", kind="producer")
    path = snooze_path(row)
    for body in ({}, {"until": "tomorrow"}, {"until": "2030-01-01T00:00:00"}, {"until": 5}, {"until": at(60), "x": 1}):
        refused(await client.patch(path, json=body, headers=alice.headers), 400)
    refused(await client.patch(path, content=b"not json", headers=alice.headers), 400)
    # Someone else's, an unknown id and a malformed one are all simply not found.
    refused(await client.patch(path, json={"until": at(60)}, headers=bob.headers), 404)
    refused(await client.patch(snooze_path(row + 1000), json={"until": at(60)}, headers=alice.headers), 404)
    refused(await client.patch("/v1/notifications/ntf-nope/snooze", json={"until": at(60)}, headers=alice.headers), 404)
    refused(await client.patch(path, json={"until": at(60)}), 401)
    refused(await client.patch(path, json={"until": at(60)}, headers=producer.headers), 403)
    # Nothing was snoozed by any of it.
    assert (await client.get(BADGE, headers=alice.headers)).json()["unread_count"] == 1


async def test_it_comes_back_on_time_with_the_badge_and_the_stream_updated(
    settings: Settings, backends: Backends, alice: User, deliver: Deliver
) -> None:
    """The real sweep loop, as a worker runs it: the row is back, counted and pushed, within a few
    seconds of its time, with no read needed to notice it; and announced again to a stream that
    announced its first arrival."""
    stopping = asyncio.Event()
    sweeping = asyncio.create_task(sweep.run(backends, stopping))
    try:
        async with listening(settings) as base, httpx.AsyncClient(base_url=base) as http:
            async with open_stream(base, alice.headers) as stream:
                assert (await stream.next_event()).json() == {"unread_count": 0, "unseen_count": 0}
                (row,) = await rows(deliver, 1)
                first = await stream.next_event()
                assert first.event == "notification" and first.json()["id"] == ids.to_scalebox(row)
                assert (await stream.next_event()).json() == {"unread_count": 1, "unseen_count": 1}

                until = datetime.now(UTC) + timedelta(seconds=2)
                reply = await http.patch(snooze_path(row), json={"until": until.isoformat()}, headers=alice.headers)
                assert reply.status_code == 200, reply.text
                assert (await stream.next_event()).json() == {"unread_count": 0, "unseen_count": 0}
                came = await stream.next_event(timeout=10)
                late = (datetime.now(UTC) - until).total_seconds()
                assert came.event == "notification" and came.json()["id"] == ids.to_scalebox(row)
                assert came.json()["is_read"] is False
                assert (await stream.next_event()).json() == {"unread_count": 1, "unseen_count": 1}
                assert -0.1 < late < 2.5, f"came back {late:.2f} s after its time"

                # Ended early by the caller: back at once, and announced the same way.
                await http.patch(snooze_path(row), json={"until": at(600)}, headers=alice.headers)
                assert (await stream.next_event()).json() == {"unread_count": 0, "unseen_count": 0}
                await http.patch(snooze_path(row), json={"until": at(-1)}, headers=alice.headers)
                again = await stream.next_event()
                assert again.event == "notification" and again.json()["id"] == ids.to_scalebox(row)
                assert (await stream.next_event()).json() == {"unread_count": 1, "unseen_count": 1}
            badge = await http.get(BADGE, headers=alice.headers)
            assert badge.json() == {"unread_count": 1, "unseen_count": 1}
    finally:
        stopping.set()
        await asyncio.wait_for(sweeping, 10)


async def test_many_snoozes_end_together_and_counts_stay_exact(
    client: httpx.AsyncClient, backends: Backends, make_user: MakeUser, deliver: Deliver
) -> None:
    """More rows come back at once than one batch of the sweep holds."""
    users = [await make_user(user=f"u{n}") for n in range(3)]
    outcome = await deliver(users=[u.user for u in users])
    async with backends.pool.acquire() as conn:
        # 2,500 rows for u0, snoozed set-based to a moment that has just passed.
        # A snoozed row is not counted, so rows written snoozed need no change of the counts.
        await conn.execute(
            """WITH e AS (
                   INSERT INTO events (tenant_id, external_id, type, message, occurred_at)
                   SELECT u.tenant_id, 'bulk-' || g, 't', 'm', now()
                   FROM users u, generate_series(1, 2500) g WHERE u.id = $1
                   RETURNING id
               )
               INSERT INTO inbox (user_id, event_id, created_at, snoozed_until)
               SELECT $1, id, now(), now() - interval '1 second' FROM e""",
            users[0].user_id,
        )
    started = time.monotonic()
    woke, _ = await sweep.sweep(backends)
    assert woke == 2500, f"{woke} rows back in {time.monotonic() - started:.2f} s"
    badge = (await client.get(BADGE, headers=users[0].headers)).json()
    assert badge == {"unread_count": 2501, "unseen_count": 2501}
    for other in users[1:]:
        assert (await client.get(BADGE, headers=other.headers)).json()["unread_count"] == 1
    assert len(outcome.deliveries) == 3
