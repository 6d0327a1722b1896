"""An empty id: a path ending in `/` or holding `//` answers 404 in the envelope of the profile that
serves it, for every method, and never reaches a route (`DELETE /v1/notifications/` deletes nothing).

The state-changing cases are drawn from the app's own route table, so a route added later is covered
without touching this file.
"""

import re
from typing import Any

import httpx
import msgspec
import pytest

from service import ids
from service.http.app import create_app
from service.keys import STREAM
from service.process import Backends
from service.settings import Settings
from tests.support.factories import TABLES, Deliver, MakeUser, User
from tests.support.http import listening

Client = httpx.AsyncClient
CHANGES = ("POST", "PATCH", "PUT", "DELETE")
PARAMETER = re.compile(r"\{[^}]*\}")
ROWS = 3
# One table's rows, all of them, as one value: any insert, update or delete changes it.
DIGEST = "SELECT md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {} x"


def _routes() -> list[tuple[str, str]]:
    """(method, path format) of every state-changing route the app serves, the demo's included."""
    app = create_app(Settings(database_url="postgresql://route-table", redis_url="redis://route-table", demo=True))
    return sorted(
        (method, route.path_format)
        for route in app.routes
        for method in getattr(route, "methods", ())
        if method in CHANGES
    )


def _cases() -> list[Any]:
    """Each route's path with an empty id, with a trailing slash, and with `//`; `{}` stands for the
    id of one of the user's notifications, filled in by the test."""
    cases = []
    for method, template in _routes():
        canonical = PARAMETER.sub("{}", template)
        variants = {"slash": canonical + "/", "double": "//".join(canonical.rsplit("/", 1))}
        if "{}" in canonical:
            variants["empty id"] = canonical.replace("{}", "")
        for kind, path in variants.items():
            cases.append(pytest.param(method, canonical, path, id=f"{method} {path} ({kind})"))
    return cases


def _id(path: str, row: int) -> str:
    """A real id of `row` in the form of the profile mounted at the path (default HERALD_PROFILES)."""
    if path.startswith("/aptly/v1/"):
        return ids.to_uuid(row)
    if path.startswith("/api/"):
        return str(row)
    return ids.to_scalebox(row)


def _fill(path: str, row: int) -> str:
    """The path with its `{}`s filled: the first with the id of `row`, any later one (the action of
    `.../actions/{action}`) with an action every notification offers."""
    parts = path.split("{}")
    if len(parts) == 1:
        return path
    fills = [_id(path, row)] + ["open"] * (len(parts) - 2)
    return parts[0] + "".join(fill + part for fill, part in zip(fills, parts[1:], strict=True))


def _body(path: str, rows: list[int]) -> Any:
    """What would change the most if the request got through: every notification at once."""
    if path.startswith("/api/user-notifications/acknowledge"):
        return []  # acknowledge all
    if "/bulk-" in path:
        return {"notification_ids": [ids.to_scalebox(r) for r in rows]}
    if path.endswith("/snooze"):
        return {"until": "2999-01-01T00:00:00Z"}
    return {}


def envelope(body: Any) -> tuple[str, int | None]:
    """Which product's error shape `body` has, and the status it states (qualytics states none)."""
    assert isinstance(body, dict), body
    keys = set(body)
    if keys == {"detail"}:
        return "qualytics", None
    if keys == {"success", "error", "timestamp"} and body["success"] is False and body["error"]:
        return "scalebox", None
    if keys == {"statusCode", "timestamp", "message", "data"} and body["data"] is None and body["message"]:
        return "aptly", body["statusCode"]
    if {"error", "status"} <= keys:
        return "herald", body["status"]
    raise AssertionError(f"no known error envelope: {body}")


async def _state(b: Backends, client: Client, who: User) -> dict[str, Any]:
    """Everything a request could change: every table's rows, the event stream, and the user's view."""
    async with b.pool.acquire() as conn:
        tables = {t: await conn.fetchval(DIGEST.format(t)) for t in TABLES.split(", ")}
    listed = (await client.get("/v1/notifications", headers=who.headers)).json()["data"]
    return {
        "tables": tables,
        "stream": await b.redis.xlen(STREAM),
        "badge": (await client.get("/v1/unread-count", headers=who.headers)).json(),
        "list": [(n["id"], n["is_read"]) for n in listed["notifications"]],
    }


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, demo=True)  # the demo's publish route is a change too


@pytest.fixture
async def alice(make_user: MakeUser) -> User:
    # An admin, so that the admin routes would act too if a request got through.
    return await make_user(user="alice", role="admin")


@pytest.mark.parametrize(("method", "canonical", "path"), _cases())
async def test_a_change_with_an_empty_id_answers_404_and_changes_nothing(
    backends: Backends,
    client: Client,
    alice: User,
    make_user: MakeUser,
    deliver: Deliver,
    method: str,
    canonical: str,
    path: str,
) -> None:
    rows = [(await deliver(users=["alice"])).deliveries[0].inbox_id for _ in range(ROWS)]
    producer = await make_user(user="svc", kind="producer")
    who = producer if canonical == "/v1/events" else alice
    # The envelope the route's own errors come in: its answer without a token.
    route = _fill(canonical, rows[0])
    own = await client.request(method, route)
    assert own.status_code == 401, own.text
    before = await _state(backends, client, alice)
    assert len(before["list"]) == ROWS and before["badge"]["unread_count"] == ROWS

    sent = _fill(path, rows[0])
    reply = await client.request(method, sent, json=_body(canonical, rows), headers=who.headers)

    assert reply.status_code == 404, reply.text
    profile, status = envelope(reply.json())
    assert profile == envelope(own.json())[0]
    assert status in (None, 404)
    assert await _state(backends, client, alice) == before


@pytest.mark.parametrize(
    ("path", "profile"),
    [
        ("/v1/notifications/", "scalebox"),
        ("/v1/notifications//read", "scalebox"),
        ("/api/user-notifications/", "qualytics"),
        ("/aptly/v1/notifications/", "aptly"),
        ("/v1/unread-count/", "herald"),  # past the badge's fast path too
        ("/v1//unread-count", "herald"),
        ("/v1/preferences/", "herald"),
        ("/healthz/", "herald"),
        ("/schema/", "herald"),
        ("/nowhere/", "herald"),
    ],
)
async def test_reads_with_an_empty_segment_answer_404_too(
    client: Client, alice: User, deliver: Deliver, path: str, profile: str
) -> None:
    await deliver(users=["alice"])
    reply = await client.get(path, headers=alice.headers)
    assert reply.status_code == 404, reply.text
    assert envelope(reply.json())[0] == profile
    head = await client.head(path, headers=alice.headers)
    assert head.status_code == 404 and head.content == b""
    assert head.headers["x-content-type-options"] == "nosniff"  # still behind the edge


async def test_the_paths_without_an_empty_segment_are_untouched(client: Client, alice: User) -> None:
    for path in ("/healthz", "/schema", "/schema/openapi.json", "/v1/unread-count", "/v1/notifications"):
        assert (await client.get(path, headers=alice.headers)).status_code == 200, path
    # `/` itself is no empty id: it is simply no route.
    assert envelope((await client.get("/")).json()) == ("herald", 404)


async def test_a_method_a_route_does_not_take_answers_in_the_routes_envelope(client: Client, alice: User) -> None:
    # Herald's own routes under /v1 keep Herald's envelope, though scalebox is mounted at /v1.
    assert envelope((await client.delete("/v1/unread-count", headers=alice.headers)).json()) == ("herald", 405)
    assert envelope((await client.put("/v1/notifications", headers=alice.headers)).json())[0] == "scalebox"
    assert envelope((await client.get("/v1/nothing-here", headers=alice.headers)).json())[0] == "scalebox"


async def test_an_empty_id_in_a_bulk_body_is_refused(client: Client, alice: User, deliver: Deliver) -> None:
    row = (await deliver(users=["alice"])).deliveries[0].inbox_id
    reply = await client.patch(
        "/v1/notifications/bulk-read", json={"notification_ids": [ids.to_scalebox(row), ""]}, headers=alice.headers
    )
    assert reply.status_code == 400, reply.text
    assert (await client.get("/v1/unread-count", headers=alice.headers)).json()["unread_count"] == 1


async def test_a_real_server_refuses_too(settings: Settings, alice: User, deliver: Deliver) -> None:
    # Through a socket: neither the client nor the server folds the empty segment away first.
    await deliver(users=["alice"])
    async with listening(settings) as base, httpx.AsyncClient(base_url=base) as http:
        for path in ("/v1/notifications/", "/v1/notifications//read", "/api/user-notifications/acknowledge/"):
            reply = await http.request("DELETE" if path.endswith("s/") else "PATCH", path, headers=alice.headers)
            assert reply.status_code == 404, (path, reply.text)
        assert (await http.get("/v1/unread-count", headers=alice.headers)).json()["unread_count"] == 1
