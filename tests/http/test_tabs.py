"""Tab counts (`POST /v1/counts`) and bulk actions by filter (`POST /v1/notifications/bulk`)."""

import asyncio
from collections.abc import Awaitable
from typing import Any, cast

import httpx
import pytest

from service import ids
from service.counts.tabs import TabCount, TabFilter, Tabs, count
from service.keys import tabs_key
from service.model import CountsChange, TabGroup
from service.process import Backends
from service.store import bulk
from tests.support.factories import Deliver, MakeUser, User, at, make_event
from tests.support.invariants import counts_agree
from tests.support.profiles import BADGE, everything, ok, refused
from tests.support.queries import rows
from workers import sweep
from workers.delivery import Delivery


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    return await make_user(user="alice")


async def tabs(client: httpx.AsyncClient, who: User, **filters: Any) -> dict[str, Any]:
    reply = await client.post("/v1/counts", json={"tabs": filters}, headers=who.headers)
    assert reply.status_code == 200, reply.text
    return dict(reply.json()["tabs"])


async def act(client: httpx.AsyncClient, who: User, action: str, **f: Any) -> int:
    data = ok(await client.post("/v1/notifications/bulk", json={"action": action, "filter": f}, headers=who.headers))
    assert data["action"] == action
    return int(data["changed"])


@pytest.fixture
async def inbox(alice: User, deliver: Deliver, client: httpx.AsyncClient) -> list[int]:
    """Alice's inbox: 3 scans in Datastores (one read), 2 alerts without a category, 1 archived
    alert in Alerts, and one thread of two events."""
    made = []
    for n in range(3):
        made.append((await deliver(users=["alice"], type="scan", category="Datastores", message=f"s{n}")).deliveries)
    for n in range(2):
        made.append((await deliver(users=["alice"], type="alert", message=f"a{n}")).deliveries)
    made.append((await deliver(users=["alice"], type="alert", category="Alerts")).deliveries)
    made.append((await deliver(users=["alice"], type="pr", category="Code", group="pr:1", actor="bob")).deliveries)
    await deliver(users=["alice"], type="pr", category="Code", group="pr:1", actor="carol")
    row_ids = [d[0].inbox_id for d in made]
    await client.patch(f"/v1/notifications/{ids.to_scalebox(row_ids[0])}/read", headers=alice.headers)
    await client.patch(f"/v1/notifications/{ids.to_scalebox(row_ids[5])}/archive", headers=alice.headers)
    return row_ids


async def test_each_tab_is_exact_and_the_whole_inbox_is_the_badge(
    client: httpx.AsyncClient, alice: User, inbox: list[int]
) -> None:
    got = await tabs(
        client,
        alice,
        all={},
        scans={"type": ["scan"]},
        alerts={"type": ["alert"]},
        datastores={"category": ["Datastores"]},
        both={"type": ["scan", "pr"], "category": ["Datastores", "Code"]},
        archive={"archived": True},
        everything={"archived": "all"},
        none={"type": ["nothing"]},
    )
    badge = (await client.get(BADGE, headers=alice.headers)).json()
    assert got["all"] == {"unread": badge["unread_count"], "unseen": badge["unseen_count"], "total": 6}
    assert got["all"] == {"unread": 5, "unseen": 5, "total": 6}
    assert got["scans"] == {"unread": 2, "unseen": 2, "total": 3}
    assert got["alerts"] == {"unread": 2, "unseen": 2, "total": 2}, "the archived alert is not in it"
    assert got["datastores"] == {"unread": 2, "unseen": 2, "total": 3}
    assert got["both"] == {"unread": 3, "unseen": 3, "total": 4}, "a thread is one notification"
    assert got["archive"] == {"unread": 1, "unseen": 1, "total": 1}
    assert got["everything"] == {"unread": 6, "unseen": 6, "total": 7}
    assert got["none"] == {"unread": 0, "unseen": 0, "total": 0}

    # Changes show at once (the cached breakdown is only answered at the current count version).
    await client.post("/v1/seen", headers=alice.headers)
    await client.patch("/v1/notifications/read-all", headers=alice.headers)
    again = await tabs(client, alice, all={}, scans={"type": ["scan"]}, archive={"archived": True})
    assert again == {
        "all": {"unread": 0, "unseen": 0, "total": 6},
        "scans": {"unread": 0, "unseen": 0, "total": 3},
        "archive": {"unread": 1, "unseen": 1, "total": 1},  # seen and read-all are the inbox's
    }


async def test_rows_written_before_type_was_copied_count_by_their_event(
    client: httpx.AsyncClient, alice: User, inbox: list[int], backends: Backends
) -> None:
    """Rows of an older database hold no type or category of their own (NULL): tabs read them from
    the row's event, with the same numbers as rows that hold them."""
    fields = {
        "all": {},
        "scans": {"type": ["scan"]},
        "datastores": {"category": ["Datastores"]},
        "archive": {"archived": True},
    }
    before = await tabs(client, alice, **fields)
    await rows(
        backends, "UPDATE inbox SET type = NULL, category = NULL WHERE id = ANY ($1::bigint[])", inbox[:2] + inbox[5:6]
    )
    await client.post("/v1/seen", headers=alice.headers)  # a change: the breakdown is counted again
    after = await tabs(client, alice, **fields)
    seen = {name: {**numbers, "unseen": 0} for name, numbers in before.items() if name != "archive"}
    assert after == {**seen, "archive": before["archive"]}


async def test_tabs_are_the_callers_own(
    client: httpx.AsyncClient, make_user: MakeUser, alice: User, inbox: list[int]
) -> None:
    bob = await make_user(user="bob")
    stranger = await make_user(tenant="globex", user="alice")
    for who in (bob, stranger):
        assert await tabs(client, who, all={}, scans={"type": ["scan"]}) == {
            "all": {"unread": 0, "unseen": 0, "total": 0},
            "scans": {"unread": 0, "unseen": 0, "total": 0},
        }
    assert (await client.post("/v1/counts", json={"tabs": {"a": {}}})).status_code == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "tabs"),
        ({"tabs": {}}, "tabs"),
        ({"tabs": {f"t{n}": {} for n in range(21)}}, "tabs"),
        ({"tabs": {"": {}}}, "tabs"),
        ({"tabs": {"x" * 51: {}}}, "tabs"),
        ({"tabs": {"a": {"types": ["x"]}}}, "types"),
        ({"tabs": {"a": {"type": "scan"}}}, "type"),
        ({"tabs": {"a": {"type": []}}}, "type"),
        ({"tabs": {"a": {"category": [1]}}}, "category"),
        ({"tabs": {"a": {"archived": "yes"}}}, "archived"),
        ({"tabs": {"a": []}}, "a"),
        ({"tabs": {"a": {}}, "extra": 1}, "extra"),
    ],
)
async def test_a_bad_tab_body_is_400_naming_the_member(
    client: httpx.AsyncClient, alice: User, body: dict[str, Any], field: str
) -> None:
    reply = await client.post("/v1/counts", json=body, headers=alice.headers)
    assert reply.status_code == 400, reply.text
    answer = reply.json()
    assert answer["status"] == 400
    assert field in answer["error"] or field in answer.get("field", ""), answer


async def test_bulk_actions_change_exactly_the_matching_notifications(
    client: httpx.AsyncClient, backends: Backends, alice: User, inbox: list[int]
) -> None:
    assert await act(client, alice, "read", type=["scan"]) == 2, "one of the three was read already"
    assert await act(client, alice, "read", type=["scan"]) == 0
    assert (await tabs(client, alice, scans={"type": ["scan"]}))["scans"]["unread"] == 0
    assert await act(client, alice, "unread", category=["Datastores"], read=True) == 3
    assert await act(client, alice, "archive", type=["alert"]) == 2
    assert await act(client, alice, "unarchive") == 3, "without `archived`, unarchive looks at the archive"
    assert await act(client, alice, "archive", archived=True) == 0
    got = await tabs(client, alice, all={}, archive={"archived": True})
    assert got["all"]["total"] == 7 and got["archive"]["total"] == 0
    assert await act(client, alice, "delete", type=["alert"], category=["Alerts"]) == 1
    assert await act(client, alice, "read") == 6
    shown = await everything(client, alice)
    assert shown["counts"] == (0, 0, 0, 6, 0, 6)
    await counts_agree(backends)


async def test_bulk_before_is_by_the_lists_time(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    for minute in range(5):
        await deliver(users=["alice"], occurred_at=f"2026-05-13T12:0{minute}:00Z")
    assert await act(client, alice, "delete", before="2026-05-13T12:02:00Z") == 2
    assert await act(client, alice, "archive", before="2026-05-13T14:02:00+02:00") == 0
    assert await act(client, alice, "archive", before="2026-05-13T14:04:00+02:00") == 2
    assert (await client.get(BADGE, headers=alice.headers)).json()["unread_count"] == 1
    await counts_agree(backends)


async def test_bulk_works_in_batches_and_counts_stay_exact(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "BATCH", 3)
    for n in range(10):
        await deliver(users=["alice"], type="even" if n % 2 == 0 else "odd")
    assert await act(client, alice, "read", type=["even"]) == 5
    assert await act(client, alice, "archive") == 10
    assert await act(client, alice, "delete", archived=True, read=False) == 5
    assert await act(client, alice, "unarchive") == 5
    assert (await client.get(BADGE, headers=alice.headers)).json()["unread_count"] == 0
    left = await rows(backends, "SELECT count(*) FROM inbox WHERE user_id = $1", alice.user_id)
    assert left[0][0] == 5
    await counts_agree(backends)


async def test_bulk_is_the_callers_own(
    client: httpx.AsyncClient, make_user: MakeUser, alice: User, inbox: list[int]
) -> None:
    bob = await make_user(user="bob")
    assert await act(client, bob, "delete") == 0
    assert await act(client, bob, "read", archived="all") == 0
    assert (await client.get(BADGE, headers=alice.headers)).json()["unread_count"] == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"filter": {}}, "action"),
        ({"action": "explode", "filter": {}}, "action"),
        ({"action": "read"}, "filter"),
        ({"action": "read", "filter": None}, "filter"),
        ({"action": "read", "filter": {"before": "yesterday"}}, "before"),
        ({"action": "read", "filter": {"read": "yes"}}, "read"),
        ({"action": "read", "filter": {"type": "scan"}}, "type"),
        ({"action": "read", "filter": {"archived": "sometimes"}}, "archived"),
        ({"action": "read", "filter": {"colour": "red"}}, "colour"),
    ],
)
async def test_a_bad_bulk_body_is_400_naming_the_member(
    client: httpx.AsyncClient, alice: User, body: dict[str, Any], field: str
) -> None:
    message = refused(await client.post("/v1/notifications/bulk", json=body, headers=alice.headers), 400)
    assert field in message, message


async def test_a_change_that_moves_no_count_still_refreshes_the_tabs(
    client: httpx.AsyncClient, backends: Backends, alice: User, deliver: Deliver
) -> None:
    """An archived notification is in no count; when it expires, the counts' numbers stay the same
    but their version moves, so the archive tab is counted again rather than answered from the cache."""
    row = (await deliver(users=["alice"], expires_at=at(0.5))).deliveries[0].inbox_id
    ok(await client.patch(f"/v1/notifications/{ids.to_scalebox(row)}/archive", headers=alice.headers))
    assert (await tabs(client, alice, archive={"archived": True}))["archive"]["total"] == 1
    await asyncio.sleep(0.6)
    assert await sweep.sweep(backends) == (0, 1)
    assert (await tabs(client, alice, archive={"archived": True}))["archive"]["total"] == 0
    await counts_agree(backends)


FIELDS: dict[str, Any] = {
    "all": {},
    "scans": {"type": ["scan"]},
    "alerts": {"type": ["alert"]},
    "datastores": {"category": ["Datastores"]},
    "archive": {"archived": True},
    "everything": {"archived": "all"},
}


async def cached_version(backends: Backends, who: User) -> int | None:
    held = await cast(Awaitable[bytes | None], backends.redis.hget(tabs_key(who.user_id), "v"))
    return None if held is None else int(held)


async def test_changes_made_one_at_a_time_bring_the_cached_tabs_forward(
    client: httpx.AsyncClient, backends: Backends, alice: User, inbox: list[int], deliver: Deliver
) -> None:
    """Read, unread, archive, unarchive, delete, an action and seen each bring the cached breakdown
    to their new count version in the copy of their counts (no count of the rows on the next poll),
    and what it then answers is what counting the rows again answers."""
    scan, alert = ids.to_scalebox(inbox[1]), ids.to_scalebox(inbox[3])
    actions = [{"id": "approve", "label": "Approve"}]
    pressed = (await deliver(users=["alice"], type="review", category="Code", actions=actions)).deliveries[0].inbox_id
    changes = [
        ("PATCH", f"/v1/notifications/{scan}/read"),
        ("PATCH", f"/v1/notifications/{scan}/unread"),
        ("PATCH", f"/v1/notifications/{alert}/archive"),
        ("PATCH", f"/v1/notifications/{ids.to_scalebox(inbox[0])}/archive"),  # a read one
        ("PATCH", f"/v1/notifications/{alert}/unarchive"),
        ("POST", "/v1/seen"),
        ("POST", f"/v1/notifications/{ids.to_scalebox(pressed)}/actions/approve"),
        ("DELETE", f"/v1/notifications/{ids.to_scalebox(inbox[2])}"),
        ("DELETE", f"/v1/notifications/{ids.to_scalebox(inbox[5])}"),  # an archived one
    ]
    await tabs(client, alice, **FIELDS)
    for method, path in changes:
        reply = await client.request(method, path, headers=alice.headers)
        assert reply.status_code < 300, f"{method} {path}: {reply.status_code} {reply.text}"
        version = (await backends.counts.read(alice.user_id)).version
        assert await cached_version(backends, alice) == version, (
            f"{method} {path}: the cached tabs were not brought forward"
        )
        brought = await tabs(client, alice, **FIELDS)
        await backends.redis.delete(tabs_key(alice.user_id))
        assert brought == await tabs(client, alice, **FIELDS), f"{method} {path}"
    await counts_agree(backends)


async def test_a_tab_change_applies_only_to_the_version_just_before(
    client: httpx.AsyncClient, backends: Backends, alice: User, inbox: list[int]
) -> None:
    """A change's groups bring a cached breakdown forward only from the version just before it: a
    change arriving before an earlier one, or a second time, leaves it alone (counted again)."""
    before = await tabs(client, alice, **FIELDS)
    counts = await backends.counts.read(alice.user_id)
    one_read = [TabGroup("scan", "Datastores", False, 0, -1, -1)]

    def change(version: int) -> CountsChange:
        return CountsChange(
            user_id=alice.user_id,
            unread=counts.unread - 1,
            total=counts.total,
            version=version,
            unseen=0,
            tabs=one_read,
        )

    await backends.counts.copy([change(counts.version + 2)])
    assert await cached_version(backends, alice) == counts.version, "a change two versions on"
    await backends.counts.copy([change(counts.version + 1)])
    await backends.counts.copy([change(counts.version + 1)])  # again: already brought forward
    assert await cached_version(backends, alice) == counts.version + 1
    cache = Tabs(backends.redis, backends.pool, 1.0)
    stored = await cache.cached(alice.user_id)
    assert stored is not None
    assert count(stored, TabFilter(type=frozenset({"scan"}))) == TabCount(
        unread=before["scans"]["unread"] - 1, unseen=before["scans"]["unseen"] - 1, total=before["scans"]["total"]
    )
    # A count of the rows (at the older version) does not replace a breakdown brought further.
    counted = await cache.breakdown(alice.user_id, counts.version + 2, None)
    assert counted.version == counts.version
    assert await cached_version(backends, alice) == counts.version + 1
    await backends.counts.drop_all()  # the copies above were made up
    await backends.redis.delete(tabs_key(alice.user_id))


async def test_a_change_of_a_row_without_its_own_type_counts_the_tabs_again(
    client: httpx.AsyncClient, backends: Backends, alice: User, inbox: list[int]
) -> None:
    """A row written before type and category were copied onto rows cannot name its group: its
    change leaves the cached breakdown behind, and the next poll counts the rows again."""
    await rows(backends, "UPDATE inbox SET type = NULL, category = NULL WHERE id = $1", inbox[1])
    await client.post("/v1/seen", headers=alice.headers)  # a change: counted again on the next poll
    before = await tabs(client, alice, **FIELDS)
    held = await cached_version(backends, alice)
    ok(await client.patch(f"/v1/notifications/{ids.to_scalebox(inbox[1])}/read", headers=alice.headers))
    assert await cached_version(backends, alice) == held
    after = await tabs(client, alice, **FIELDS)
    for name in ("all", "scans", "datastores"):
        assert after[name] == {**before[name], "unread": before[name]["unread"] - 1}, name
    assert await cached_version(backends, alice) == (await backends.counts.read(alice.user_id)).version


async def test_new_rows_of_named_users_bring_the_cached_tabs_forward(
    client: httpx.AsyncClient, backends: Backends, alice: User, inbox: list[int], fan: Delivery, deliver: Deliver
) -> None:
    """Small events to named users (one at a time, or several in one stream read, which gives a
    user several rows in one count version) bring the cached breakdown forward; a fan-out to a topic
    (whose chunks do not return each recipient's version) leaves it to be counted again."""
    await tabs(client, alice, **FIELDS)
    await deliver(users=["alice"], type="scan", category="Datastores")
    version = (await backends.counts.read(alice.user_id)).version
    assert await cached_version(backends, alice) == version, "one event"
    brought = await tabs(client, alice, **FIELDS)
    assert brought["scans"]["total"] == 4

    batch = [
        make_event(id=f"tabs-batch-{n}", users=["alice"], type=kind) for n, kind in enumerate(["scan", "alert", "scan"])
    ]
    outcomes = await fan.ingest_many(batch)
    assert all(o is not None for o in outcomes), "all three in one statement"
    version = (await backends.counts.read(alice.user_id)).version
    assert await cached_version(backends, alice) == version, "three events of one read"
    brought = await tabs(client, alice, **FIELDS)
    await backends.redis.delete(tabs_key(alice.user_id))
    assert brought == await tabs(client, alice, **FIELDS)
    assert brought["scans"]["total"] == 6 and brought["alerts"]["total"] == 3

    await rows(
        backends,
        "INSERT INTO subscriptions (tenant_id, topic, user_id) SELECT tenant_id, 'tabs', id FROM users WHERE id = $1",
        alice.user_id,
    )
    held = await cached_version(backends, alice)
    await deliver(audience={"topics": ["tabs"]}, type="alert")
    assert await cached_version(backends, alice) == held, "a topic's fan-out: counted again"
    assert (await tabs(client, alice, **FIELDS))["alerts"]["total"] == 4
    await counts_agree(backends)
