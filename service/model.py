"""Data shapes shared by the API and the workers: the event wire format and what the store returns.

Every limit of the event format is a `msgspec.Meta` constraint on the field, so one decode both
parses and validates; `decode_event` adds the two rules msgspec cannot say (at least one recipient
source, no NUL anywhere) and turns msgspec's message into a field path.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from service.errors import InvalidEvent

MAX_EVENT_BYTES = 64 * 1024
MAX_AUDIENCE_USERS = 10_000

TriggerType = Literal["Anomaly", "PartitionScan", "Operation", "Manual"]
TRIGGER_TYPES: tuple[str, ...] = ("Anomaly", "PartitionScan", "Operation", "Manual")

MAX_NAME = 200  # user ids, topics, tags
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
Short = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


class Input(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of everything decoded from the outside: unknown fields are refused, not ignored."""


class Audience(Input, frozen=True):
    users: Annotated[list[Name], msgspec.Meta(max_length=MAX_AUDIENCE_USERS)] = []
    topics: Annotated[list[Name], msgspec.Meta(max_length=100)] = []
    all: bool = False


class Entity(Input, frozen=True):
    type: Short
    id: Name


ACTION_ID = r"^[a-z0-9_-]{1,50}$"
OPEN = "open"  # the reserved action: the reader followed the notification itself (its action_url)
MAX_ACTIONS = 3


class Action(Input, frozen=True):
    """A button a notification offers; taking it is recorded (POST .../actions/{id})."""

    id: Annotated[str, msgspec.Meta(pattern=ACTION_ID)]
    label: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    url: Annotated[str, msgspec.Meta(max_length=2000)] | None = None


class Event(Input, frozen=True):
    id: Name
    type: Short
    tenant: Name
    audience: Audience
    message: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    title: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    category: Annotated[str, msgspec.Meta(max_length=100)] | None = None
    tags: Annotated[list[Short], msgspec.Meta(max_length=50)] = []
    trigger_type: TriggerType | None = None
    entity: Entity | None = None
    action_url: Annotated[str, msgspec.Meta(max_length=2000)] | None = None
    actionable: bool = False
    payload: dict[str, Any] | None = None
    occurred_at: AwareTime | None = None
    expires_at: AwareTime | None = None
    # Threads: every event of a tenant's `group` shares one notification per recipient, which lists
    # the events' distinct `actor`s (see schema.sql, thread_actors).
    group: Name | None = None
    actor: Name | None = None
    actions: Annotated[list[Action], msgspec.Meta(max_length=MAX_ACTIONS)] = []


_event_decoder = msgspec.json.Decoder(Event)
_events_decoder = msgspec.json.Decoder(Event | list[Event])
_PATH_RE = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _split_msgspec_error(exc: msgspec.DecodeError) -> tuple[str, str]:
    """msgspec says "Expected `str`, got `int` - at `$.audience.users[0]`": split message and path."""
    text = str(exc)
    match = _PATH_RE.search(text)
    if not match:
        return text, ""
    return text[: match.start()], match.group("path").lstrip(".")


def _nul_at(value: Any, path: str) -> str | None:
    """The path of the first string holding a NUL (PostgreSQL text and jsonb cannot store one)."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _nul_at(key, path) or _nul_at(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_at(item, f"{path}[{index}]")
            if found:
                return found
    return None


def check_event(event: Event, member: int | None = None, *, nul_free: bool = False) -> Event:
    """The rules a type cannot carry. Raises InvalidEvent naming the field. `nul_free`: the caller
    knows no string holds a NUL (see decode_event), which spares the walk over every string."""
    aud = event.audience
    if not (aud.users or aud.topics or aud.all):
        raise InvalidEvent("needs at least one recipient source: users, topics or all", "audience", member)
    taken: set[str] = set()
    for index, action in enumerate(event.actions):
        if action.id == OPEN:
            raise InvalidEvent(
                f"{OPEN!r} is reserved (it records that the notification itself was followed)",
                f"actions[{index}].id",
                member,
            )
        if action.id in taken:
            raise InvalidEvent(f"duplicate action id {action.id!r}", f"actions[{index}].id", member)
        taken.add(action.id)
    for field in () if nul_free else event.__struct_fields__:
        value = getattr(event, field)
        if isinstance(value, msgspec.Struct):
            value = msgspec.to_builtins(value)
        where = _nul_at(value, field)
        if where:
            raise InvalidEvent("strings may not contain a NUL character", where, member)
    return event


def decode_event(raw: bytes | str) -> Event:
    """One event from its JSON text, validated. Raises InvalidEvent."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_EVENT_BYTES:
        raise InvalidEvent(f"event is {len(data)} bytes, the limit is {MAX_EVENT_BYTES}")
    try:
        event = _event_decoder.decode(data)
    except msgspec.DecodeError as exc:
        message, path = _split_msgspec_error(exc)
        raise InvalidEvent(message, path) from None
    except RecursionError:
        raise InvalidEvent(NESTED_TOO_DEEPLY) from None
    # JSON can only put a NUL in a string as the escape \u0000 (msgspec refuses a raw one): without
    # that text anywhere, no string holds one. This is most of the cost of decoding a small event.
    return check_event(event, nul_free=_NUL_ESCAPE not in data)


_NUL_ESCAPE = b"\\u0000"
_raw_list_decoder = msgspec.json.Decoder(list[msgspec.Raw])
# msgspec decodes nested JSON recursively; a body nested thousands deep (an attack, never an event)
# exhausts the interpreter's stack, which Python reports as RecursionError.
NESTED_TOO_DEEPLY = "JSON nested too deeply"


def decode_events(raw: bytes) -> list[tuple[Event, bytes]]:
    """One event or an array of events (the HTTP body, `herald publish`), each with its own bytes.

    All or nothing: the first invalid member raises InvalidEvent with `member` set to its index
    (None when the body is a single object). Each member is validated by the same decoder as a
    stream entry and is queued exactly as it was received.
    """
    if raw.lstrip()[:1] != b"[":
        return [(decode_event(raw), raw)]
    try:
        members = _raw_list_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"not a JSON array of events: {exc}") from None
    except RecursionError:
        raise InvalidEvent(NESTED_TOO_DEEPLY) from None
    events: list[tuple[Event, bytes]] = []
    for index, member in enumerate(members):
        data = bytes(member)
        try:
            events.append((decode_event(data), data))
        except InvalidEvent as exc:
            exc.member = index
            raise
    return events


def encode_event(event: Event) -> bytes:
    return msgspec.json.encode(event)


# ---- what the store hands back -------------------------------------------------------------


class Record(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the shapes rows become inside `service/store`."""


class Principal(Record, frozen=True):
    """Who a token belongs to. Cached per API process, so keep it small and immutable."""

    user_id: int
    user: str
    tenant_id: int
    tenant: str
    role: str
    active: bool
    kind: str  # "pat" | "producer"


class Counts(Record, frozen=True):
    """A user's inbox numbers; `version` grows with every change, so the newest copy wins."""

    user_id: int
    unread: int
    total: int
    version: int
    # Unread and not yet seen: arrived after the user last opened the bell (POST /v1/seen).
    unseen: int = 0


class TabGroup(msgspec.Struct, array_like=True, frozen=True):
    """A user's shown notifications of one type, category and archive state, and how many of them
    there are, are unread, and are unseen (service/counts/tabs.py). Signed, it is what one change
    did to that group."""

    type: str
    category: str | None
    archived: bool
    total: int
    unread: int
    unseen: int


class CountsChange(Counts, frozen=True):
    """New counts, with what the same change did to the user's tab groups (`tabs`), when the
    statement knows it: the cached breakdown at the version before is then brought to this one
    instead of being counted again. None: not known (a change of many rows, or rows that predate
    copied types); the breakdown is counted again when next asked."""

    tabs: list[TabGroup] | None = None


class InboxItem(Record, frozen=True):
    """One notification in one user's inbox, joined with its event."""

    id: int
    user: str
    created_at: datetime
    read_at: datetime | None
    event_id: int
    event_key: str
    type: str
    title: str | None
    message: str
    category: str | None
    tags: list[str]
    trigger_type: str | None
    entity_type: str | None
    entity_id: str | None
    action_url: str | None
    actionable: bool
    payload: dict[str, Any] | None
    occurred_at: datetime
    tenant: str
    group: str | None = None  # the thread's group; None for a notification that is no thread
    activity: int = 1  # distinct events in the thread
    actors: list[str] = []  # distinct actors, newest first, at most ACTORS_SHOWN
    actor_count: int = 0  # distinct actors in all
    archived_at: datetime | None = None
    actions: list[Action] = []
    interaction: str | None = None  # the id of the action the reader took last, if any
    interacted_at: datetime | None = None


ACTORS_SHOWN = 10

# Which notifications a list or a count looks at: the inbox (not archived), the archive, or both.
Archived = Literal["false", "true", "all"]


class InboxQuery(Record, frozen=True):
    """What a reader asks of their inbox, in the terms every profile's filters map onto.

    Several values in one tuple match any of them (OR); different fields combine with AND.
    """

    read: bool | None = None
    types: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    entity_types: tuple[str, ...] = ()
    trigger_types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    since: datetime | None = None
    before: datetime | None = None
    ascending: bool = False
    archived: Archived = "false"

    @property
    def by_event(self) -> bool:
        """True when a filter looks at the event, so totals need counting rather than the counters."""
        return bool(
            self.types
            or self.categories
            or self.entity_types
            or self.trigger_types
            or self.tags
            or self.since
            or self.before
        )

    @property
    def counted(self) -> bool:
        """True when the user's counters answer the total (the inbox, filtered on read state at most)."""
        return not self.by_event and self.archived == "false"


class Snoozed(Record, frozen=True):
    """A snooze as it now stands: hidden `until` then, or (None) in the inbox; `woke` when the
    request ended a snooze, so the row is back as a new arrival of event `event_id`."""

    event_id: int
    until: datetime | None
    woke: bool


class Position(Record, frozen=True):
    """Where a page ended, in the list's order (created, then id): the next page starts after it."""

    created_at: datetime
    id: int


class Page(Record, frozen=True):
    items: list[InboxItem]
    total: int
    counts: Counts
    more: bool  # whether rows follow the last item of this page

    @property
    def end(self) -> Position | None:
        """The position after which the next page starts; None on the last page."""
        if not self.more or not self.items:
            return None
        last = self.items[-1]
        return Position(created_at=last.created_at, id=last.id)
