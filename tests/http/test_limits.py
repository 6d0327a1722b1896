"""Rate limits per token and per client address: 429 with Retry-After, in the caller's envelope."""

import asyncio

import httpx
import msgspec
import pytest

from service.auth.limits import Limiter
from service.settings import Settings
from tests.support.factories import MakeUser
from tests.support.http import serving


def _strict(settings: Settings, **limits: float) -> Settings:
    return msgspec.structs.replace(settings, **limits)


async def test_a_bucket_refills_and_says_how_long_to_wait() -> None:
    bucket = Limiter(rate=10, burst=3)
    assert [bucket.take("k") for _ in range(3)] == [0, 0, 0]
    wait = bucket.take("k")
    assert 0 < wait <= 0.1
    assert bucket.take("other") == 0, "buckets are per key"
    await asyncio.sleep(wait + 0.01)
    assert bucket.take("k") == 0
    # A request bigger than what is left takes nothing, so it fits once the bucket has refilled.
    assert bucket.take("k", 3) > 0
    assert Limiter(rate=0, burst=0).take("k", 10**9) == 0, "a rate of 0 is no limit"


@pytest.mark.parametrize(
    ("path", "envelope"),
    [
        ("/v1/unread-count", {"error", "status"}),
        ("/v1/notifications", {"success", "error", "timestamp"}),
        ("/api/user-notifications", {"detail"}),
        ("/aptly/v1/notifications?tenantId=acme", {"statusCode", "message", "data", "timestamp"}),
    ],
)
async def test_a_token_over_its_read_rate_gets_429_in_its_profile(
    settings: Settings, make_user: MakeUser, path: str, envelope: set[str]
) -> None:
    alice = await make_user(user="alice")
    bob = await make_user(user="bob")
    async with serving(_strict(settings, rate_limit_reads=0.5)) as client:
        # The burst is ten seconds' worth: 5 requests.
        answers = [(await client.get(path, headers=alice.headers)).status_code for _ in range(5)]
        assert answers == [200] * 5
        refused = await client.get(path, headers=alice.headers)
        assert refused.status_code == 429
        assert set(refused.json()) == envelope
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        # Another token is not held back by alice's.
        assert (await client.get(path, headers=bob.headers)).status_code == 200


async def test_the_badge_fast_path_is_limited_too(settings: Settings, make_user: MakeUser) -> None:
    alice = await make_user(user="alice")
    async with serving(_strict(settings, rate_limit_reads=0.3)) as client:
        statuses = [(await client.get("/v1/unread-count", headers=alice.headers)).status_code for _ in range(6)]
    # Three fit the burst; the first one warms the caches, the next two are served by the fast path.
    assert statuses == [200, 200, 200, 429, 429, 429]


async def test_publishes_are_counted_per_event(settings: Settings, make_user: MakeUser) -> None:
    producer = await make_user(user="svc", kind="producer")
    batch = [
        {"id": f"e{n}", "type": "t", "tenant": "acme", "audience": {"users": ["a"]}, "message": "m"} for n in range(30)
    ]
    async with serving(_strict(settings, rate_limit_publishes=5)) as client:
        first = await client.post("/v1/events", json=batch, headers=producer.headers)
        assert first.status_code == 202, first.text
        refused = await client.post("/v1/events", json=batch, headers=producer.headers)
    assert refused.status_code == 429
    assert refused.json()["status"] == 429
    assert int(refused.headers["retry-after"]) >= 1


async def test_guessing_tokens_is_slowed_per_address_and_known_tokens_still_work(
    settings: Settings, make_user: MakeUser
) -> None:
    alice = await make_user(user="alice")
    async with serving(_strict(settings, rate_limit_auth_failures=0.2)) as client:
        await client.get("/v1/notifications", headers=alice.headers)  # alice is known to this process
        guesses = [
            (await client.get("/v1/notifications", headers={"X-API-Key": f"herald_pat_guess{n}"})).status_code
            for n in range(3)
        ]
        assert guesses == [401, 401, 429]
        refused = await client.get("/api/user-notifications", headers={"Authorization": "Bearer nope"})
        assert refused.status_code == 429
        assert "detail" in refused.json()
        assert (await client.get("/v1/notifications", headers=alice.headers)).status_code == 200
        # A request without any token is not a guess.
        assert (await client.get("/v1/notifications")).status_code == 401


async def test_a_trusted_proxy_names_the_client(settings: Settings, make_user: MakeUser) -> None:
    limited = _strict(settings, rate_limit_auth_failures=0.1)
    trusting = msgspec.structs.replace(limited, trusted_proxies=("127.0.0.0/8",))

    async def guess(client: httpx.AsyncClient, forwarded: str) -> int:
        headers = {"X-API-Key": "herald_pat_wrong", "X-Forwarded-For": forwarded}
        return (await client.get("/v1/notifications", headers=headers)).status_code

    async with serving(trusting) as client:
        assert await guess(client, "203.0.113.7") == 401
        assert await guess(client, "203.0.113.7") == 429
        assert await guess(client, "198.51.100.1") == 401, "another client behind the proxy"
        # A client cannot pick its address by writing the header itself: the proxy appends the real one.
        assert await guess(client, "198.51.100.99, 203.0.113.7") == 429
    async with serving(limited) as client:
        assert await guess(client, "203.0.113.7") == 401
        assert await guess(client, "198.51.100.1") == 429, "an untrusted peer's header is ignored"
