"""The settings of scaling out: the sentinel form of HERALD_REDIS_URL, the replica URL, and
HERALD_PUBLISH_REPLICAS against a Redis that has no replica."""

import msgspec
import pytest

from service.errors import SettingsError
from service.keys import STREAM
from service.settings import Settings, load_settings, parse_sentinel_url
from tests.support.factories import MakeUser
from tests.support.http import serving


def test_the_sentinel_form_is_read() -> None:
    s = load_settings(
        {
            "HERALD_REDIS_URL": "redis+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/3"
            "?sentinel_password=x",
            "HERALD_DATABASE_REPLICA_URL": "postgresql://herald@replica:5432/herald",
            "HERALD_PUBLISH_REPLICAS": "1",
        }
    )
    assert s.database_replica_url == "postgresql://herald@replica:5432/herald" and s.publish_replicas == 1
    assert s.redis_url is not None
    target = parse_sentinel_url(s.redis_url)
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (target.service, target.db, target.username, target.password) == ("mymaster", 3, None, "s@cret")
    assert target.sentinel_password == "x"
    assert parse_sentinel_url("redis+sentinel://h/m").db == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HERALD_REDIS_URL", "redis+sentinel://h:26379"),
        ("HERALD_REDIS_URL", "redis+sentinel://h:26379/"),
        ("HERALD_REDIS_URL", "redis+sentinel://h:port/m"),
        ("HERALD_REDIS_URL", "redis+sentinel://h:26379,/m"),
        ("HERALD_REDIS_URL", "redis+sentinel://h/m/zero"),
        ("HERALD_REDIS_URL", "redis+sentinel://h/m?db=1"),
        ("HERALD_REDIS_URL", "sentinel://h/m"),
        ("HERALD_DATABASE_REPLICA_URL", "mysql://replica"),
        ("HERALD_PUBLISH_REPLICAS", "-1"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({name: value})
    assert caught.value.message.startswith(name + ":") and "\n" not in caught.value.message


async def test_an_event_no_replica_confirms_is_refused_and_can_be_published_again(
    settings: Settings, make_user: MakeUser, redis_client: object
) -> None:
    # The test Redis has no replica: WAIT 1 times out (after half the backend timeout, well inside
    # the client's own timeout of the whole backend timeout).
    waiting = msgspec.structs.replace(settings, publish_replicas=1, backend_timeout=1.0)
    producer = await make_user(user="svc", kind="producer")
    event = {"id": "e1", "type": "t", "tenant": "acme", "audience": {"users": ["ann"]}, "message": "m"}
    async with serving(waiting) as http:
        reply = await http.post("/v1/events", json=event, headers=producer.headers)
    assert reply.status_code == 503 and "publish them again" in reply.json()["error"]
    # The event did reach the primary; publishing it again is what the producer does, and it is
    # recorded once per (tenant, id) by the worker.
    assert await redis_client.xlen(STREAM) == 1  # type: ignore[attr-defined]
    async with serving(msgspec.structs.replace(waiting, publish_replicas=0)) as http:
        assert (await http.post("/v1/events", json=event, headers=producer.headers)).status_code == 202
