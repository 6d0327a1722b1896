"""Pub/sub channels belong to the whole Redis server, keys to one database: two deployments on two
databases of one server must not hear each other's pushes (service/keys.py, Channels)."""

import asyncio

import redis.asyncio as aioredis

from service.counts.copies import Copies
from service.keys import WATCHED, Channels, count_key
from service.local.harness import Servers
from service.model import Counts


def test_database_zero_keeps_the_plain_names_and_others_are_scoped() -> None:
    assert (Channels(0).user(7), Channels(0).auth) == ("herald:user:7", "herald:auth")
    assert (Channels(3).user(7), Channels(3).auth) == ("herald:db3:user:7", "herald:db3:auth")
    assert Channels.of(aioredis.Redis(db=5)).user(7) == "herald:db5:user:7"


async def test_a_copy_on_one_database_is_pushed_to_its_own_channel_only(servers: Servers) -> None:
    """The same user id on databases 0 and 14 of one server: a count copied on database 14 reaches
    the listener of database 14's channel, never the one of database 0's."""
    base = servers.redis_url.rsplit("/", 1)[0] if servers.redis_url.count("/") > 2 else servers.redis_url
    zero = aioredis.Redis.from_url(base, db=0)
    four = aioredis.Redis.from_url(base, db=14)
    listener = aioredis.Redis.from_url(base, db=0)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(Channels.of(zero).user(42), Channels.of(four).user(42))
        await Copies(four).copy([Counts(user_id=42, unread=3, total=3, version=9)], [(1001, 77)])
        heard: list[bytes] = []
        async with asyncio.timeout(5):
            while not heard:
                message = await pubsub.get_message(timeout=0.2)
                if message is not None:
                    heard.append(message["channel"])
        await asyncio.sleep(0.2)  # nothing else comes
        while (message := await pubsub.get_message(timeout=0.05)) is not None:
            heard.append(message["channel"])
        assert heard == [b"herald:db14:user:42"]
    finally:
        await four.delete(count_key(42))
        await four.zrem(WATCHED, 42)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        for client in (zero, four, listener):
            await client.aclose()
