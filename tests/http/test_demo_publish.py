"""The demo's publish route: what each kind puts on the event stream, and a bad kind refused."""

import msgspec
import pytest
from httpx import AsyncClient

from service.http.demo import REVIEW_GROUP, REVIEWERS
from service.keys import STREAM
from service.process import Backends
from service.settings import Settings
from tests.support.factories import MakeUser


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, demo=True)


async def published(backends: Backends) -> list[dict[str, object]]:
    return [msgspec.json.decode(fields[b"event"]) for _, fields in await backends.redis.xrange(STREAM)]


async def test_a_ping_and_thread_updates_to_the_caller(
    backends: Backends, client: AsyncClient, make_user: MakeUser
) -> None:
    kim = await make_user(user="kim")
    for kind in ("", "?kind=ping", "?kind=review", "?kind=review"):
        reply = await client.post(f"/demo/publish{kind}", headers=kim.headers)
        assert reply.status_code == 202, reply.text
        assert reply.json() == {"accepted": 1}

    ping, again, first, second = await published(backends)
    assert ping["type"] == again["type"] == "demo.ping"
    assert "group" not in ping
    assert "actions" not in ping  # a ping asks nothing of the reader (its title still records `open`)
    assert ping["audience"] == first["audience"] == {"users": ["kim"]}
    # Both comments go to the one review thread, each by one of the reviewers.
    for comment in (first, second):
        assert comment["type"] == "demo.review"
        assert comment["group"] == REVIEW_GROUP
        assert comment["actor"] in REVIEWERS
        # Each comment asks for an answer: the page's buttons.
        assert comment["actions"] == [
            {"id": "approve", "label": "Approve", "url": None},
            {"id": "request-changes", "label": "Request changes", "url": None},
        ]
    assert first["id"] != second["id"]


async def test_an_unknown_kind_is_400_and_publishes_nothing(
    backends: Backends, client: AsyncClient, make_user: MakeUser
) -> None:
    kim = await make_user(user="kim")
    reply = await client.post("/demo/publish?kind=storm", headers=kim.headers)
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == "kind"  # Herald's own envelope, naming the member
    assert await published(backends) == []
