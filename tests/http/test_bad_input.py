"""Bad input: a clear 4xx in the caller's format, never a 500, never someone else's data."""

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support.factories import Deliver, MakeUser, User

SQL = [
    "\x00",
    "a\x00b",
    "' OR 1=1 --",
    "x'; DROP TABLE inbox; --",
    '" OR ""="',
    "%",
    "_",
    "\\",
    "1; SELECT pg_sleep(5)",
    "é\u202e",
]

# path -> a check that the body is that profile's error envelope
ENVELOPES: dict[str, Callable[[Any], bool]] = {
    "/api/": lambda b: set(b) == {"detail"},
    "/v1/events": lambda b: {"error", "status"} <= set(b),
    "/v1/notifications": lambda b: b.get("success") is False and "error" in b and "timestamp" in b,
    "/aptly/": lambda b: {"statusCode", "message", "data"} <= set(b) and b["data"] is None,
}


def _refused(reply: httpx.Response, *statuses: int) -> None:
    where = f"{reply.request.method} {reply.request.url}"
    assert reply.status_code in statuses, f"{where}: {reply.status_code} {reply.text[:200]}"
    path = reply.request.url.path
    check = next(c for prefix, c in ENVELOPES.items() if path.startswith(prefix))
    assert check(reply.json()), f"{where}: not in the profile's envelope: {reply.text[:200]}"


@pytest.fixture
async def alice(make_user: MakeUser, deliver: Deliver) -> User:
    user = await make_user(user="alice")
    await deliver(users=["alice"], tags=["nightly"], category="Datastores")
    return user


@pytest.mark.parametrize(
    "query",
    [
        "/api/user-notifications?page=-1",
        "/api/user-notifications?page=0",
        "/api/user-notifications?page=99999999999999999999999999",
        "/api/user-notifications?size=0",
        "/api/user-notifications?size=1000000",
        "/api/user-notifications?size=abc",
        "/api/user-notifications?sort_created=sideways",
        "/api/user-notifications/not-a-number",
        "/api/user-notifications?" + "&".join(f"tag=t{n}" for n in range(51)),
        "/api/user-notifications?tag=" + "t" * 201,
        "/api/user-notifications/-5",
        "/api/user-notifications/99999999999999999999999",
        "/v1/notifications?page=-1",
        "/v1/notifications?limit=-5",
        "/v1/notifications?offset=-1",
        "/v1/notifications?offset=99999999999999999999",
        "/v1/notifications?read=maybe",
        "/v1/notifications?cursor=not-a-cursor",
        "/aptly/v1/notifications?tenantId=acme&page=0",
        "/aptly/v1/notifications?tenantId=acme&limit=1000000000000",
        "/aptly/v1/notifications?tenantId=acme&timePeriod=forever",
        "/aptly/v1/notifications?tenantId=acme&status=MAYBE",
        "/aptly/v1/notifications",
    ],
)
async def test_bad_paging_and_parameters_are_refused_in_the_profiles_envelope(
    client: httpx.AsyncClient, alice: User, query: str
) -> None:
    reply = await client.get(query, headers=alice.headers)
    _refused(reply, 400, 404, 422)


async def test_sql_metacharacters_in_every_filter_are_only_text(client: httpx.AsyncClient, alice: User) -> None:
    filters = {
        "/api/user-notifications": ["tag", "trigger_type", "notification_type"],
        "/api/user-notifications/listing": ["tag"],
        "/v1/notifications": ["type", "read", "cursor"],
        "/aptly/v1/notifications": ["templateKey", "category", "entityType", "status", "timePeriod"],
    }
    for path, names in filters.items():
        for name in names:
            for value in SQL:
                params = {name: value, **({"tenantId": "acme"} if path.startswith("/aptly") else {})}
                reply = await client.get(path, params=params, headers=alice.headers)
                where = f"{path}?{name}={value!r}"
                assert reply.status_code in (200, 400, 422), f"{where}: {reply.status_code} {reply.text[:200]}"
                if reply.status_code == 200:
                    assert "Scan completed" not in reply.text, f"{where} matched something"
    # The inbox is still there, and still alice's.
    assert (await client.get("/v1/unread-count", headers=alice.headers)).json()["unread_count"] == 1


async def test_a_tenant_id_made_of_sql_is_just_another_tenant(client: httpx.AsyncClient, alice: User) -> None:
    reply = await client.get("/aptly/v1/notifications", params={"tenantId": "acme' OR '1'='1"}, headers=alice.headers)
    _refused(reply, 403)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PATCH", "/v1/notifications/bulk-read"),
        ("POST", "/v1/notifications/bulk-delete"),
        ("PATCH", "/api/user-notifications/acknowledge"),
    ],
)
async def test_bad_bodies_are_refused(client: httpx.AsyncClient, alice: User, method: str, path: str) -> None:
    bodies: list[bytes] = [
        b"{",  # truncated
        b"\xff\xfe\x00not utf-8",
        b"[" * 10_000 + b"]" * 10_000,  # nested far beyond any real body
        b'{"notification_ids": ' + b"[" * 500 + b"]" * 500 + b"}",
        b'{"notification_ids": "ntf-000000000000000"}',
        b'{"notification_ids": [' + b",".join([b'"ntf-000000000000000"'] * 1001) + b"]}",
        b'{"notification_ids": [], "extra": 1}',
        b"null",
        b'"\\u0000"',
    ]
    headers = {**alice.headers, "Content-Type": "application/json"}
    for body in bodies:
        reply = await client.request(method, path, content=body, headers=headers)
        _refused(reply, 400, 413, 422)
    too_big = await client.request(method, path, content=b" " * (2 * 1024 * 1024), headers=headers)
    _refused(too_big, 413)


async def test_bad_events_are_refused_with_a_reason(client: httpx.AsyncClient, make_user: MakeUser) -> None:
    producer = await make_user(user="svc", kind="producer")
    headers = {**producer.headers, "Content-Type": "application/json"}
    good = b'{"id": "e1", "type": "t", "tenant": "acme", "audience": {"users": ["a"]}, "message": "m"}'
    bodies = [
        b"\xff" + good,
        b"[" * 10_000 + b"]" * 10_000,
        good.replace(b'"m"', b'{"a":' * 300 + b"1" + b"}" * 300),
        good.replace(b'"m"', b'"m\\u0000"'),
        good.replace(b'"e1"', b'"' + b"x" * 201 + b'"'),
        good.replace(b'"e1"', b"1e999"),
        good.replace(b'["a"]', b"[" + b",".join([b'"u"'] * 10_001) + b"]"),
        b"[]",
        b"",
    ]
    for body in bodies:
        _refused(await client.post("/v1/events", content=body, headers=headers), 400, 422)
    _refused(await client.post("/v1/events", content=b"[" + b",".join([good] * 1001) + b"]", headers=headers), 422)
    _refused(await client.post("/v1/events", content=b" " * (17 * 1024 * 1024), headers=headers), 413)
    # Nothing of any refused request was queued.
    assert (await client.post("/v1/events", content=good, headers=headers)).json() == {"accepted": 1}


def test_oversized_headers_and_bodies_through_the_real_server(env: dict[str, str], running: str) -> None:
    """Through granian, as in production: limits hold before the app, and the process lives on."""
    huge = httpx.get(running + "/v1/unread-count", headers={"X-API-Key": "x" * 200_000})
    assert 400 <= huge.status_code < 500
    many = httpx.get(running + "/v1/unread-count", headers={f"X-Pad-{n}": "y" * 100 for n in range(300)})
    assert 400 <= many.status_code < 500
    body = httpx.patch(
        running + "/v1/notifications/bulk-read",
        content=b"[" * (4 * 1024 * 1024),
        headers={"X-API-Key": "herald_pat_x", "Content-Type": "application/json"},
    )
    assert body.status_code in (401, 413)  # credentials are checked before a body is read
    assert httpx.get(running + "/healthz").status_code == 200
