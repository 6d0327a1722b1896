"""Registering webhooks: who may, what is refused (400 naming the member), and where they may point."""

from __future__ import annotations

import base64
import re
from typing import Any

import httpx
import pytest

from service import ids
from service.webhooks import guard
from tests.support.factories import MakeUser, User
from tests.support.webhooks import ALL, deliveries, register

Client = httpx.AsyncClient
HOOKS = "/v1/admin/webhooks"


async def test_register_list_delete(api: Client, admin: User) -> None:
    made = await register(api, admin, "http://127.0.0.1:9/hook?x=1", ["notification.read", "inbox.bulk"])
    assert set(made) == {"id", "url", "events", "secret"}
    assert re.fullmatch(r"whk_[0-9a-f]{16}", made["id"])
    assert made["url"] == "http://127.0.0.1:9/hook?x=1" and made["events"] == ["notification.read", "inbox.bulk"]
    assert made["secret"].startswith("whsec_") and len(base64.b64decode(made["secret"][6:])) >= 24
    listed = (await api.get(HOOKS, headers=admin.headers)).json()
    # The secret was shown once: never listed.
    assert listed == {"webhooks": [{"id": made["id"], "url": made["url"], "events": made["events"]}]}
    assert await deliveries(api, admin, made["id"]) == []

    gone = await api.delete(f"{HOOKS}/{made['id']}", headers=admin.headers)
    assert gone.status_code == 204 and gone.content == b""
    assert (await api.get(HOOKS, headers=admin.headers)).json() == {"webhooks": []}
    again = await api.delete(f"{HOOKS}/{made['id']}", headers=admin.headers)
    assert again.status_code == 404 and again.json()["status"] == 404
    assert (await api.get(f"{HOOKS}/{made['id']}/deliveries", headers=admin.headers)).status_code == 404


async def test_each_registration_gets_its_own_secret_and_repeated_types_once(api: Client, admin: User) -> None:
    one = await register(api, admin, "http://127.0.0.1:9/a", ["inbox.bulk", "inbox.bulk", "event.delivered"])
    two = await register(api, admin, "http://127.0.0.1:9/a")
    assert one["secret"] != two["secret"] and one["id"] != two["id"]
    assert one["events"] == ["inbox.bulk", "event.delivered"] and two["events"] == ALL


async def test_only_an_admin_of_the_tenant(api: Client, admin: User, make_user: MakeUser) -> None:
    made = await register(api, admin, "http://127.0.0.1:9/hook")
    body = {"url": "http://127.0.0.1:9/x", "events": ["inbox.bulk"]}
    for role in ("member", "manager"):
        reader = await make_user(role=role)
        assert (await api.post(HOOKS, json=body, headers=reader.headers)).status_code == 403
        assert (await api.get(HOOKS, headers=reader.headers)).status_code == 403
        assert (await api.delete(f"{HOOKS}/{made['id']}", headers=reader.headers)).status_code == 403
        assert (await api.get(f"{HOOKS}/{made['id']}/deliveries", headers=reader.headers)).status_code == 403
    assert (await api.get(HOOKS)).status_code == 401
    producer = await make_user(user="svc", kind="producer")
    assert (await api.get(HOOKS, headers=producer.headers)).status_code == 403


async def test_tenants_see_only_their_own(api: Client, admin: User, make_user: MakeUser) -> None:
    mine = await register(api, admin, "http://127.0.0.1:9/acme")
    other = await make_user(tenant="globex", user="root", role="admin")
    theirs = await register(api, other, "http://127.0.0.1:9/globex")
    assert [h["id"] for h in (await api.get(HOOKS, headers=other.headers)).json()["webhooks"]] == [theirs["id"]]
    # Another tenant's webhook is not found, exactly as a missing one; and stays.
    assert (await api.delete(f"{HOOKS}/{mine['id']}", headers=other.headers)).status_code == 404
    assert (await api.get(f"{HOOKS}/{mine['id']}/deliveries", headers=other.headers)).status_code == 404
    assert [h["id"] for h in (await api.get(HOOKS, headers=admin.headers)).json()["webhooks"]] == [mine["id"]]
    for nonsense in ("whk_0000000000000000", "whk_zz", "123", "x" * 300):
        assert (await api.delete(f"{HOOKS}/{nonsense}", headers=admin.headers)).status_code == 404
        assert (await api.get(f"{HOOKS}/{nonsense}/deliveries", headers=admin.headers)).status_code == 404


def hook(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"url": "http://127.0.0.1:9/hook", "events": ["inbox.bulk"]}
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (hook(url=None), "url"),
        (hook(url=""), "url"),
        (hook(url=7), "url"),
        (hook(url="not a url"), "url"),
        (hook(url="ftp://127.0.0.1/x"), "url"),
        (hook(url="file:///etc/passwd"), "url"),
        (hook(url="http://"), "url"),
        (hook(url="http:///path"), "url"),
        (hook(url="http://127.0.0.1:99999/x"), "url"),
        (hook(url="http://user:pw@127.0.0.1/x"), "url"),
        (hook(url="http://127.0.0.1/a b"), "url"),
        (hook(url="http://127.0.0.1/" + "a" * 2000), "url"),
        (hook(url="http://no-such-host.invalid/x"), "url"),
        (hook(events=None), "events"),
        (hook(events=[]), "events"),
        (hook(events="inbox.bulk"), "events"),
        (hook(events=["inbox.bulk", "notification.snoozed"]), "events[1]"),
        (hook(events=[1]), "events[0]"),
        (hook(secret="mine"), "secret"),
    ],
)
async def test_a_bad_body_is_a_400_naming_the_member(api: Client, admin: User, body: Any, field: str) -> None:
    reply = await api.post(HOOKS, json=body, headers=admin.headers)
    assert reply.status_code == 400, reply.text
    assert reply.json()["status"] == 400 and reply.json()["field"] == field and reply.json()["error"]
    assert (await api.get(HOOKS, headers=admin.headers)).json() == {"webhooks": []}


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'"x"', b"null"])
async def test_a_body_that_is_no_object_is_a_400(api: Client, admin: User, body: bytes) -> None:
    reply = await api.post(HOOKS, content=body, headers={**admin.headers, "content-type": "application/json"})
    assert reply.status_code == 400 and reply.json()["status"] == 400


async def test_limits(api: Client, admin: User) -> None:
    for n in range(20):
        await register(api, admin, f"http://127.0.0.1:9/{n}", ["inbox.bulk"])
    over = await api.post(HOOKS, json=hook(), headers=admin.headers)
    assert over.status_code == 400 and "at most 20" in over.json()["error"]
    made = (await api.get(HOOKS, headers=admin.headers)).json()["webhooks"]
    assert len(made) == 20
    await api.delete(f"{HOOKS}/{made[0]['id']}", headers=admin.headers)
    await register(api, admin, "http://127.0.0.1:9/again", ["inbox.bulk"])
    for bad in ("0", "101", "x"):
        reply = await api.get(f"{HOOKS}/{made[1]['id']}/deliveries?limit={bad}", headers=admin.headers)
        assert reply.status_code == 400 and reply.json()["field"] == "limit"
    big = await api.post(HOOKS, content=b"{" + b" " * 20_000 + b"}", headers=admin.headers)
    assert big.status_code == 413


PRIVATE = [
    "http://127.0.0.1:8080/hook",
    "http://127.1.2.3/hook",
    "http://localhost/hook",
    "https://localhost:8443/hook",
    "http://10.0.0.1/hook",
    "http://172.16.5.4/hook",
    "http://192.168.1.10/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:a00:1]/hook",
    "http://[fe80::1]/hook",
    "http://[fd00::1]/hook",
    "http://[::]/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one number
    "http://0x7f.1/hook",
]


@pytest.mark.parametrize("url", PRIVATE)
async def test_private_addresses_are_refused_when_the_setting_is_off(
    client: Client, make_user: MakeUser, url: str
) -> None:
    admin = await make_user(user="root", role="admin")  # `client`: the default settings, private refused
    reply = await client.post(HOOKS, json=hook(url=url), headers=admin.headers)
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == "url"
    assert (await client.get(HOOKS, headers=admin.headers)).json() == {"webhooks": []}


async def test_public_addresses_are_taken_when_the_setting_is_off(client: Client, make_user: MakeUser) -> None:
    # Registration only resolves the host: nothing is sent (no worker runs here).
    admin = await make_user(user="root", role="admin")
    for url in ("https://93.184.216.34/hook", "http://[2606:4700:4700::1111]:8080/x"):
        assert (await client.post(HOOKS, json=hook(url=url), headers=admin.headers)).status_code == 201


def test_the_address_rule() -> None:
    def ok(text: str) -> bool:
        return guard.public(guard.ipaddress.ip_address(text))

    assert ok("93.184.216.34") and ok("8.8.8.8") and ok("2606:4700:4700::1111")
    for text in ("127.0.0.1", "10.1.1.1", "172.31.0.1", "192.168.0.1", "169.254.0.1", "100.127.0.1", "0.0.0.0"):
        assert not ok(text), text
    for text in ("255.255.255.255", "224.0.0.251", "239.1.1.1", "192.0.2.1", "198.18.0.1", "240.0.0.1"):
        assert not ok(text), text
    for text in ("::1", "::", "fe80::1", "fc00::1", "ff02::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "2001:db8::1"):
        assert not ok(text), text
    assert ok("::ffff:93.184.216.34")


def test_webhook_ids_round_trip() -> None:
    for n in (1, 2, 1000, (1 << 63) - 1):
        assert ids.from_webhook(ids.to_webhook(n)) == n
    assert ids.from_webhook("whk_") is None and ids.from_webhook("ntf-000") is None
