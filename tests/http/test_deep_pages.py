"""Deep pages by offset start from remembered positions (service/positions.py), and answer exactly
what walking the offset answers: before and after a page is remembered, and after the list changed.

The depth at which positions are used is lowered for these tests (60 rows instead of thousands);
the code path is the one a page at offset 25,000 takes."""

from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from service import positions
from service.ids import from_scalebox, to_scalebox
from service.keys import positions_key
from service.process import Backends
from tests.support.factories import Deliver, MakeUser, User

Client = httpx.AsyncClient
SCALEBOX = "/v1/notifications"
QUALYTICS = "/api/user-notifications"
ROWS = 60


@pytest.fixture
async def alice(make_user: MakeUser, deliver: Deliver, monkeypatch: pytest.MonkeyPatch) -> User:
    monkeypatch.setattr(positions, "DEEP", 20)
    user = await make_user(user="alice")
    for n in range(ROWS):  # distinct times, and every third one read later by some tests
        await deliver(users=["alice"], message=f"n{n}", occurred_at=f"2026-05-01T00:{n // 60:02d}:{n % 60:02d}Z")
    return user


async def ids(client: Client, user: User, **params: Any) -> list[str]:
    reply = await client.get(SCALEBOX, params={"limit": 10, **params}, headers=user.headers)
    assert reply.status_code == 200, reply.text
    return [n["id"] for n in reply.json()["data"]["notifications"]]


async def everything(client: Client, user: User, **params: Any) -> list[str]:
    reply = await client.get(SCALEBOX, params={"limit": 100, **params}, headers=user.headers)
    return [n["id"] for n in reply.json()["data"]["notifications"]]


async def remembered(redis_client: aioredis.Redis, user: User) -> dict[str, positions.Marks]:
    raw = await redis_client.hgetall(positions_key(user.user_id))
    return {k.decode(): msgspec.msgpack.decode(v, type=positions.Marks) for k, v in raw.items()}


async def test_a_deep_page_is_the_walked_page_before_and_after_it_is_remembered(
    client: Client, alice: User, redis_client: aioredis.Redis
) -> None:
    whole = await everything(client, alice)
    assert len(whole) == ROWS
    assert await ids(client, alice, offset=30) == whole[30:40]
    marks = (await remembered(redis_client, alice))["all:desc"]
    assert sorted(m.offset for m in marks.marks) == [30, 40]  # this page's first row, the next page's
    assert [to_scalebox(m.id) for m in sorted(marks.marks, key=lambda m: m.offset)] == [whole[30], whole[40]]
    assert await ids(client, alice, offset=30) == whole[30:40]  # a reload, from its own position
    assert await ids(client, alice, offset=40) == whole[40:50]  # the next page, from the one before
    assert await ids(client, alice, offset=33) == whole[33:43]  # between two: from 30, skipping 3
    assert await ids(client, alice, offset=55) == whole[55:60]  # the end
    assert await ids(client, alice, offset=70) == []  # past it


async def test_a_remembered_position_is_used_while_the_list_is_unchanged_and_never_after(
    client: Client, alice: User, redis_client: aioredis.Redis, deliver: Deliver
) -> None:
    whole = await everything(client, alice)
    await ids(client, alice, offset=30)
    # Plant a wrong position (the row at 35 said to be at 30), at the current version: the page
    # must start from it, which shows positions are used at all. Row 35, newest first, is n24.
    marks = (await remembered(redis_client, alice))["all:desc"]
    row_35 = from_scalebox(whole[35])
    assert row_35 is not None
    at_35 = positions.Mark(30, datetime(2026, 5, 1, 0, 0, ROWS - 1 - 35, tzinfo=UTC), row_35)
    planted = positions.Marks(marks.version, [at_35])
    await redis_client.hset(positions_key(alice.user_id), "all:desc", msgspec.msgpack.encode(planted))
    assert await ids(client, alice, offset=30) == whole[35:45]
    # Any change of the user's rows changes the count version: the planted position is dead.
    await deliver(users=["alice"], message="newest")
    fresh = await everything(client, alice)
    assert len(fresh) == ROWS + 1
    assert await ids(client, alice, offset=30) == fresh[30:40]


@pytest.mark.parametrize("read", ["false", "true"])
async def test_filtered_lists_keep_their_own_positions(
    client: Client, alice: User, redis_client: aioredis.Redis, read: str
) -> None:
    whole = await everything(client, alice)
    chosen = [r for n, r in enumerate(whole) if (n % 3 == 0) == (read == "false")]  # 40 in the list
    for row_id in chosen:
        assert (await client.patch(f"{SCALEBOX}/{row_id}/read", headers=alice.headers)).status_code == 200
    listed = await everything(client, alice, read=read)
    assert len(listed) == 40
    for offset in (21, 21, 25, 31):
        assert await ids(client, alice, offset=offset, read=read) == listed[offset : offset + 10]
    field = "unread:desc" if read == "false" else "read:desc"
    assert set(await remembered(redis_client, alice)) == {field}


async def test_oldest_first_pages_and_unremembered_lists(
    client: Client, alice: User, redis_client: aioredis.Redis
) -> None:
    def page(body: dict[str, Any]) -> list[int]:
        return [i["id"] for i in body["items"]]

    async def qualytics(**params: Any) -> list[int]:
        reply = await client.get(QUALYTICS, params={"size": 12, **params}, headers=alice.headers)
        assert reply.status_code == 200, reply.text
        return page(reply.json())

    oldest = await qualytics(size=100, sort_created="asc")
    for number in (3, 3, 4, 2):
        assert await qualytics(page=number, sort_created="asc") == oldest[(number - 1) * 12 : number * 12]
    assert "unread:asc" in await remembered(redis_client, alice)  # qualytics lists the unacknowledged
    # A list filtered on the event walks its offset and remembers nothing.
    await redis_client.delete(positions_key(alice.user_id))
    assert len(await ids(client, alice, offset=30, type="scan.completed")) <= 10
    assert await remembered(redis_client, alice) == {}


async def test_a_position_is_not_used_for_a_list_newer_than_its_cached_count(
    client: Client, alice: User, redis_client: aioredis.Redis, backends: Backends
) -> None:
    """The cached count can lag a commit (the copy follows it, or failed): the page is then read
    from a list that changed since the position was kept. It must be walked, and what it remembers
    must be kept under the list's own version, not the cached one."""
    whole = await everything(client, alice)
    await ids(client, alice, offset=30)
    before = (await remembered(redis_client, alice))["all:desc"]
    newest = from_scalebox(whole[0])
    async with backends.pool.acquire() as conn, conn.transaction():  # a change whose copy never came
        await conn.execute("DELETE FROM inbox WHERE id = $1", newest)
        await conn.execute(
            "UPDATE inbox_counts SET total = total - 1, unread = unread - 1, version = version + 1 WHERE user_id = $1",
            alice.user_id,
        )
    assert await ids(client, alice, offset=30) == whole[31:41]
    after = (await remembered(redis_client, alice))["all:desc"]
    assert after.version == before.version + 1
    assert {m.offset: to_scalebox(m.id) for m in after.marks} == {30: whole[31], 40: whole[41]}
