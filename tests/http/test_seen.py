"""Seen vs read: `unseen_count` beside `unread_count`, POST /v1/seen, and both in the ETag and the stream."""

import httpx

from service import ids
from tests.support.factories import Deliver, MakeUser
from tests.support.http import listening
from tests.support.sse import open_stream

BADGE = "/v1/unread-count"


async def test_seen_is_not_read(client: httpx.AsyncClient, make_user: MakeUser, deliver: Deliver) -> None:
    alice = await make_user(user="alice")
    h = alice.headers
    rows = [(await deliver(users=["alice"])).deliveries[0].inbox_id for _ in range(3)]
    first = await client.get(BADGE, headers=h)
    assert first.json() == {"unread_count": 3, "unseen_count": 3}
    fast = await client.get(BADGE, headers=h)  # the fast path answers the same
    assert fast.json() == first.json() and fast.headers["etag"] == first.headers["etag"]

    opened = await client.post("/v1/seen", headers=h)
    assert opened.status_code == 200
    assert opened.json() == {"unread_count": 3, "unseen_count": 0}
    after = await client.get(BADGE, headers={**h, "If-None-Match": first.headers["etag"]})
    assert after.status_code == 200, "the ETag covers the unseen count"
    assert after.json() == {"unread_count": 3, "unseen_count": 0}

    new = (await deliver(users=["alice"])).deliveries[0].inbox_id
    assert (await client.get(BADGE, headers=h)).json() == {"unread_count": 4, "unseen_count": 1}
    # Reading the new one takes it off both numbers; reading an old one only off unread.
    await client.patch(f"/v1/notifications/{ids.to_scalebox(new)}/read", headers=h)
    await client.patch(f"/v1/notifications/{ids.to_scalebox(rows[0])}/read", headers=h)
    assert (await client.get(BADGE, headers=h)).json() == {"unread_count": 2, "unseen_count": 0}
    # Marked unread again, a seen notification is unread but not new.
    await client.patch(f"/v1/notifications/{ids.to_scalebox(rows[0])}/unread", headers=h)
    assert (await client.get(BADGE, headers=h)).json() == {"unread_count": 3, "unseen_count": 0}
    # Seen twice changes nothing the second time.
    assert (await client.post("/v1/seen", headers=h)).json() == {"unread_count": 3, "unseen_count": 0}
    await deliver(users=["alice"])
    await client.delete("/v1/notifications", headers=h)
    assert (await client.get(BADGE, headers=h)).json() == {"unread_count": 0, "unseen_count": 0}


async def test_only_a_reader_marks_seen(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    producer = await make_user(user="svc", kind="producer")
    assert (await client.post("/v1/seen")).status_code == 401
    assert (await client.post("/v1/seen", headers=producer.headers)).status_code == 403


async def test_the_stream_carries_both_numbers(settings, make_user: MakeUser, deliver: Deliver) -> None:  # type: ignore[no-untyped-def]
    alice = await make_user(user="alice")
    await deliver(users=["alice"])
    async with (
        listening(settings) as base,
        httpx.AsyncClient(base_url=base) as http,
        open_stream(base, alice.headers) as stream,
    ):
        hello = await stream.next_event()
        assert hello.event == "unread" and hello.json() == {"unread_count": 1, "unseen_count": 1}
        await http.post("/v1/seen", headers=alice.headers)
        changed = await stream.next_event()
        assert changed.json() == {"unread_count": 1, "unseen_count": 0}
