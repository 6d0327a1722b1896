"""Security headers on every response, and CORS only for the origins HERALD_CORS_ORIGINS names."""

import httpx
import msgspec
import pytest

from service.errors import SettingsError
from service.settings import Settings, load_settings
from tests.support.factories import MakeUser
from tests.support.http import serving

APP = "https://app.example.com"


def _secure(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


async def test_every_kind_of_response_carries_the_security_headers(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    alice = await make_user(user="alice")
    responses = {
        "route": await client.get("/v1/notifications", headers=alice.headers),
        "error": await client.get("/api/user-notifications"),
        "no route": await client.get("/nowhere"),
        "badge, slow path": await client.get("/v1/unread-count", headers=alice.headers),
        "badge, fast path": await client.get("/v1/unread-count", headers=alice.headers),
    }
    tag = responses["badge, fast path"].headers["etag"]
    responses["badge 304"] = await client.get("/v1/unread-count", headers={**alice.headers, "If-None-Match": tag})
    assert [r.status_code for r in responses.values()] == [200, 401, 404, 200, 200, 304]
    for name, response in responses.items():
        _secure(response)
        assert "access-control-allow-origin" not in response.headers, name
    # Inbox contents are not kept by caches; the badge keeps its own rule.
    assert responses["route"].headers["cache-control"] == "no-store"
    assert responses["route"].headers["content-security-policy"].startswith("default-src 'none'")
    assert responses["badge, fast path"].headers["cache-control"] == "private, no-cache"


async def test_without_cors_origins_a_browser_gets_no_cors_answer(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    alice = await make_user(user="alice")
    reply = await client.get("/v1/unread-count", headers={**alice.headers, "Origin": APP})
    assert reply.status_code == 200
    assert "access-control-allow-origin" not in reply.headers
    preflight = await client.options(
        "/v1/unread-count", headers={"Origin": APP, "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers


async def test_a_listed_origin_may_call_from_a_browser(settings: Settings, make_user: MakeUser) -> None:
    alice = await make_user(user="alice")
    configured = msgspec.structs.replace(settings, cors_origins=(APP,))
    async with serving(configured) as client:
        preflight = await client.options(
            "/v1/notifications/read-all",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "PATCH" in preflight.headers["access-control-allow-methods"]
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in preflight.headers
        for _ in range(2):  # the slow path, then the fast path
            reply = await client.get("/v1/unread-count", headers={**alice.headers, "Origin": APP})
            assert reply.headers["access-control-allow-origin"] == APP
            assert "etag" in reply.headers["access-control-expose-headers"].lower()
            assert reply.headers["vary"] == "Origin"
            _secure(reply)
        other = await client.get("/v1/unread-count", headers={**alice.headers, "Origin": "https://evil.example"})
        assert other.status_code == 200
        assert "access-control-allow-origin" not in other.headers
        assert other.headers["vary"] == "Origin"


@pytest.mark.parametrize("value", ["app.example.com", "https://app.example.com/path", "ftp://x"])
def test_a_bad_origin_setting_stops_the_start(value: str) -> None:
    with pytest.raises(SettingsError, match="HERALD_CORS_ORIGINS"):
        load_settings({"HERALD_CORS_ORIGINS": value})


def test_origins_and_proxies_are_read_from_the_environment() -> None:
    loaded = load_settings(
        {"HERALD_CORS_ORIGINS": f"{APP}, http://localhost:3000/", "HERALD_TRUSTED_PROXIES": "10.0.0.0/8"}
    )
    assert loaded.cors_origins == (APP, "http://localhost:3000")
    assert loaded.trusted_proxies == ("10.0.0.0/8",)
    with pytest.raises(SettingsError, match="HERALD_TRUSTED_PROXIES"):
        load_settings({"HERALD_TRUSTED_PROXIES": "not-a-network"})
    with pytest.raises(SettingsError, match="HERALD_RATE_LIMIT_READS"):
        load_settings({"HERALD_RATE_LIMIT_READS": "-1"})
