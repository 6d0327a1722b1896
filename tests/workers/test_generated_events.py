"""Generated events, valid and not, through both ways in: every one is either delivered or refused
with a reason (422 over HTTP, a dead letter on the stream), and the worker never dies."""

import asyncio
import itertools
from typing import Any

import httpx
import msgspec
from arq.connections import ArqRedis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import InvalidEvent
from service.keys import DEAD, GROUP, STREAM
from service.model import decode_event
from service.process import Backends
from tests.support.factories import MakeUser
from workers.consumer import Consumer
from workers.delivery import Delivery

_ids = itertools.count()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
names = st.text(min_size=0, max_size=12)
good_names = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=12)


@st.composite
def valid_events(draw: st.DrawFn) -> bytes:
    body: dict[str, Any] = {
        "id": f"ok-{next(_ids)}-{draw(good_names)}",
        "type": draw(good_names),
        "tenant": "acme",
        "audience": {"users": draw(st.lists(st.sampled_from(["alice", "bob"]) | good_names, min_size=1, max_size=3))},
        "message": draw(good_names),
    }
    optional = {
        "title": good_names,
        "category": good_names,
        "tags": st.lists(good_names, max_size=3),
        "trigger_type": st.sampled_from(["Anomaly", "PartitionScan", "Operation", "Manual"]),
        "entity": st.fixed_dictionaries({"type": good_names, "id": good_names}),
        "actionable": st.booleans(),
        "payload": st.dictionaries(good_names, json_values, max_size=3),
        "occurred_at": st.sampled_from(["2026-05-13T12:00:00Z", "2026-05-13T12:00:00.5+02:00"]),
    }
    for field, strategy in optional.items():
        if draw(st.booleans()):
            body[field] = draw(strategy)
    return msgspec.json.encode(body)


@st.composite
def events(draw: st.DrawFn) -> bytes:
    """Mostly event-shaped objects, some of them valid, with any field possibly wrong."""
    kind = draw(st.sampled_from(["valid", "valid", "event", "event", "json", "bytes"]))
    if kind == "valid":
        return draw(valid_events())
    if kind == "bytes":
        return draw(st.binary(max_size=64))
    if kind == "json":
        return msgspec.json.encode(draw(json_values))
    body: dict[str, Any] = {
        "id": f"gen-{next(_ids)}-{draw(names)}",
        "type": draw(st.sampled_from(["scan.completed", "", "x" * 101]) | names),
        "tenant": "acme",
        "audience": draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "users": st.lists(st.sampled_from(["alice", "bob", "", "x\x00"]) | names, max_size=3),
                    "topics": st.lists(names, max_size=2),
                    "all": st.booleans(),
                },
            )
        ),
        "message": draw(names),
    }
    optional = {
        "title": names | st.integers(),
        "category": names,
        "tags": st.lists(names, max_size=3) | json_values,
        "trigger_type": st.sampled_from(["Anomaly", "Operation", "Sideways"]),
        "entity": st.fixed_dictionaries({"type": names, "id": names}) | json_values,
        "action_url": names,
        "actionable": st.booleans() | json_values,
        "payload": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
        "occurred_at": st.sampled_from(["2026-05-13T12:00:00Z", "yesterday", "2026-13-45T99:00:00Z"]),
        "expires_at": st.sampled_from(["2099-01-01T00:00:00Z", "soon"]),
    }
    for field, strategy in optional.items():
        if draw(st.booleans()):
            body[field] = draw(strategy)
    for field in draw(st.lists(st.sampled_from(sorted(body)), max_size=2)):
        body.pop(field, None)  # a required field may go missing
    return msgspec.json.encode(body)


def _valid(raw: bytes) -> bool:
    try:
        decode_event(raw)
    except InvalidEvent:
        return False
    return True


async def _drained(b: Backends) -> bool:
    groups = await b.redis.xinfo_groups(STREAM)
    group = next(g for g in groups if g["name"].decode() == GROUP)
    return bool(group["pending"] == 0 and group["lag"] == 0)


async def _delivered(b: Backends) -> set[str]:
    async with b.pool.acquire() as conn:
        return {r["external_id"] for r in await conn.fetch("SELECT external_id FROM events")}


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(events(), min_size=20, max_size=40))
async def test_every_generated_event_is_delivered_or_refused_with_a_reason(
    batch: list[bytes], backends: Backends, arq_pool: ArqRedis, client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    consumer = Consumer(Delivery(backends, arq_pool), block=0.05)
    task = asyncio.create_task(consumer.run())
    producer = await make_user(user=f"svc{next(_ids)}", kind="producer")
    dead_before = await backends.redis.xlen(DEAD)
    http_accepted: list[bytes] = []
    for raw in batch:
        reply = await client.post(
            "/v1/events", content=raw, headers={**producer.headers, "Content-Type": "application/json"}
        )
        assert reply.status_code in (202, 400, 403, 422), f"{reply.status_code} {reply.text} for {raw!r}"
        if reply.status_code == 202:
            assert _valid(raw), f"accepted over HTTP, yet invalid: {raw!r}"
            http_accepted.append(raw)
        else:
            assert reply.json()["error"], "a refusal says why"
        await backends.redis.xadd(STREAM, {"event": raw})
    deadline = asyncio.get_running_loop().time() + 20
    while not await _drained(backends):
        assert not task.done(), "the consumer died"
        assert asyncio.get_running_loop().time() < deadline, "the stream was not drained"
        await asyncio.sleep(0.05)
    delivered = await _delivered(backends)
    letters = [fields for _, fields in await backends.redis.xrange(DEAD)][dead_before:]
    dead = [fields[b"event"] for fields in letters]
    assert all(fields[b"reason"] for fields in letters), "every dead letter carries its reason"
    for raw in batch:
        if _valid(raw):
            assert decode_event(raw).id in delivered, f"a valid event was not delivered: {raw!r}"
        else:
            assert raw in dead, f"an invalid event was neither delivered nor dead-lettered: {raw!r}"
    assert len(dead) == sum(not _valid(raw) for raw in batch)
    assert not task.done(), "the consumer died"
    consumer.stop()
    await asyncio.wait_for(task, 5)
