import msgspec
import pytest

from service.errors import InvalidEvent
from service.model import MAX_EVENT_BYTES, decode_event, decode_events

EVENT = {
    "id": "scan-50001-completed",
    "type": "scan.completed",
    "tenant": "acme",
    "audience": {"users": ["alice", "bob"], "topics": ["datastore:101"], "all": False},
    "title": "Scan completed",
    "message": "A Scan operation on Healthcare Analytics has completed.",
    "category": "Datastores",
    "tags": ["healthcare", "nightly"],
    "trigger_type": "Operation",
    "entity": {"type": "datastore", "id": "101"},
    "action_url": "/datastores/101/activity?operation_id=50001",
    "actionable": True,
    "payload": {"action_execution": {"id": 200, "flow_execution": {"id": 300, "flow": {"id": 7, "name": "Gate"}}}},
    "occurred_at": "2026-05-13T12:00:00Z",
}


def encode(**changes: object) -> bytes:
    body = {**EVENT, **changes}
    return msgspec.json.encode({k: v for k, v in body.items() if v is not ...})


def refused(raw: bytes) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(raw)
    return caught.value


def test_the_contract_example_is_valid() -> None:
    event = decode_event(encode())
    assert event.entity is not None and event.entity.id == "101"
    assert event.occurred_at is not None and event.occurred_at.utcoffset() is not None


def test_only_the_required_fields_are_required() -> None:
    event = decode_event(b'{"id":"x","type":"t","tenant":"a","audience":{"all":true},"message":"m"}')
    assert event.occurred_at is None and event.tags == [] and event.actionable is False


@pytest.mark.parametrize("field", ["id", "type", "tenant", "audience", "message"])
def test_each_required_field_is_named_when_missing(field: str) -> None:
    error = refused(encode(**{field: ...}))
    assert field in error.message


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": "x" * 201}, "id"),
        ({"type": "t" * 101}, "type"),
        ({"message": ""}, "message"),
        ({"message": "m" * 4001}, "message"),
        ({"trigger_type": "Cron"}, "trigger_type"),
        ({"audience": {"users": [""]}}, "audience.users[0]"),
        ({"audience": {"users": ["u" * 201]}}, "audience.users[0]"),
        ({"audience": {"users": ["u"] * 10_001}}, "audience.users"),
        ({"audience": {"topics": ["t" * 201]}}, "audience.topics[0]"),
        ({"audience": {}}, "audience"),
        ({"audience": {"users": [], "topics": [], "all": False}}, "audience"),
        ({"audience": {"users": ["a"], "groups": ["x"]}}, "audience"),
        ({"occurred_at": "2026-05-13T12:00:00"}, "occurred_at"),
        ({"entity": {"type": "datastore"}}, "entity"),
        ({"message": "bad\u0000byte"}, "message"),
        ({"payload": {"deep": [{"x": "nul\u0000"}]}}, "payload.deep[0].x"),
        ({"audience": {"users": ["ok", "n\u0000"]}}, "audience.users[1]"),
    ],
)
def test_invalid_events_are_refused_naming_the_field(changes: dict[str, object], field: str) -> None:
    error = refused(encode(**changes))
    assert error.field == field, error.message


def test_unknown_fields_are_refused_not_ignored() -> None:
    assert "recipients" in refused(encode(recipients=["a"])).message


def test_the_size_limit_is_on_the_encoded_event() -> None:
    big = encode(payload={"blob": "x" * MAX_EVENT_BYTES})
    assert "limit" in refused(big).message
    assert len(encode(payload={"blob": "x" * (MAX_EVENT_BYTES - 2000)})) <= MAX_EVENT_BYTES
    decode_event(encode(payload={"blob": "x" * (MAX_EVENT_BYTES - 2000)}))


def test_not_json_is_refused() -> None:
    refused(b"{not json")
    refused(b"\xff\xfe")


def test_a_batch_names_the_member_and_keeps_each_member_as_received() -> None:
    good = encode()
    batch = decode_events(b"[" + good + b",  " + good + b"]")
    assert [raw for _, raw in batch] == [good, good]
    with pytest.raises(InvalidEvent) as caught:
        decode_events(b"[" + good + b"," + encode(message="") + b"]")
    assert (caught.value.member, caught.value.field) == (1, "message")


def test_a_single_event_has_no_member_index() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_events(encode(type=""))
    assert caught.value.member is None
