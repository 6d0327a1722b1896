"""Signed user tokens (JWT) from the upstream product: HS256, RS256 and ES256, on every profile.

Genuine tokens read like Herald's own personal tokens (unknown users are created on first use);
expired, badly signed, unsigned, algorithm-confused or incomplete ones are 401 in the caller's
envelope; once a user is known, neither a repeated nor a fresh token costs a database round trip.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service import admin, auth
from service.auth import Authenticator
from service.auth.signed import Verifier
from service.auth.tokens import token_hash
from service.errors import Unauthorized
from service.http import fastpath
from service.metrics import AUTH_LOOKUPS
from service.process import Backends
from service.settings import Settings
from service.store import users
from tests.support.factories import Deliver, MakeUser
from tests.support.http import serving

SECRET = "a-shared-secret-of-at-least-32-bytes!"
BADGE = "/v1/unread-count"

# (path, where the number of alice's notifications is in the answer, error envelope keys)
LISTS = [
    ("/api/user-notifications", ("total",), {"detail"}),
    ("/v1/notifications", ("data", "pagination", "total"), {"success", "error", "timestamp"}),
    ("/aptly/v1/notifications?tenantId=acme", ("data", "total"), {"statusCode", "message", "data", "timestamp"}),
    (BADGE, ("unread_count",), {"error", "status"}),
]


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


class Signer(msgspec.Struct):
    """Mints tokens the way the product would, and the settings that make Herald accept them."""

    algorithm: str
    key: Any
    settings: dict[str, str]

    def token(self, **claims: Any) -> str:
        body = {"sub": "alice", "tenant": "acme", "exp": int(time.time()) + 300, **claims}
        return jwt.encode({k: v for k, v in body.items() if v is not None}, self.key, algorithm=self.algorithm)

    def headers(self, **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(**claims)}"}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def signers(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> dict[str, Signer]:
    return {
        "HS256": Signer(algorithm="HS256", key=SECRET, settings={"jwt_secret": SECRET}),
        "RS256": Signer(algorithm="RS256", key=rsa_key, settings={"jwt_public_key": _pem(rsa_key)}),
        "ES256": Signer(algorithm="ES256", key=ec_key, settings={"jwt_public_key": _pem(ec_key)}),
    }


def _with(settings: Settings, **changes: Any) -> Settings:
    return msgspec.structs.replace(settings, **changes)


@pytest.fixture
async def hs256(settings: Settings, clean: None) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(_with(settings, jwt_secret=SECRET)) as client:
        yield client


def _dig(body: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        body = body[key]
    return body


def _forge(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """A token built by hand (PyJWT refuses to build the malicious ones)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()) if secret else ""
    return f"{signing_input}.{signature}"


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "ES256"])
async def test_a_signed_token_reads_every_profile(
    algorithm: str,
    settings: Settings,
    backends: Backends,
    deliver: Deliver,
    signers: dict[str, Signer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer = signers[algorithm]
    await deliver(users=["alice"])
    await deliver(users=["alice", "bob"])
    await deliver(users=["bob"])
    answered: list[bool] = []
    badge = fastpath.FastPath._badge

    async def spy(self: fastpath.FastPath, scope: Any, send: Any) -> bool:
        answered.append(await badge(self, scope, send))
        return answered[-1]

    monkeypatch.setattr(fastpath.FastPath, "_badge", spy)
    async with serving(_with(settings, **signer.settings)) as client:
        headers = signer.headers()
        for path, where, _ in LISTS:
            reply = await client.get(path, headers=headers)
            assert reply.status_code == 200, (path, reply.text)
            assert _dig(reply.json(), where) == 2, path
        # The badge: the token is known to this process by now, so the fast path answers.
        answered.clear()
        again = await client.get(BADGE, headers=headers)
        assert again.status_code == 200 and again.json()["unread_count"] == 2
        assert answered == [True]
        # Herald's own tokens go on working beside signed ones.
        async with backends.pool.acquire() as conn:
            made = await admin.create_user(conn, "acme", "bob")
        own = await client.get(BADGE, headers={"Authorization": f"Bearer {made.token}"})
        assert own.json()["unread_count"] == 2


async def test_an_unknown_user_is_created_on_first_use(
    hs256: httpx.AsyncClient, backends: Backends, signers: dict[str, Signer], deliver: Deliver
) -> None:
    headers = signers["HS256"].headers(sub="carol", tenant="newco", role="manager")
    reply = await hs256.get("/v1/notifications", headers=headers)
    assert reply.status_code == 200, reply.text
    assert reply.json()["data"]["notifications"] == []
    async with backends.pool.acquire() as conn:
        tenant_id = await users.tenant_id(conn, "newco")
        assert tenant_id is not None
        carol = await users.find_user(conn, tenant_id, "carol")
        counts = await conn.fetchval("SELECT unread FROM inbox_counts WHERE user_id = $1", carol and carol.user_id)
    assert carol is not None and carol.active and carol.role == "manager"
    assert counts == 0
    await deliver(tenant="newco", users=["carol"])
    assert (await hs256.get(BADGE, headers=headers)).json()["unread_count"] == 1
    # The same user from another tenant is someone else.
    elsewhere = await hs256.get(BADGE, headers=signers["HS256"].headers(sub="carol", tenant="acme"))
    assert elsewhere.json()["unread_count"] == 0


def _refusals(signers: dict[str, Signer], rsa_key: rsa.RSAPrivateKey) -> dict[str, tuple[str, str]]:
    """(signer whose settings Herald runs with, token) for every kind of token that must be refused."""
    now = int(time.time())
    hs, rs = signers["HS256"], signers["RS256"]
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "expired": ("HS256", hs.token(exp=now - 120)),
        "expired RS256": ("RS256", rs.token(exp=now - 120)),
        "wrong secret": ("HS256", jwt.encode({"sub": "alice", "tenant": "acme", "exp": now + 60}, "x" * 40)),
        "wrong key": ("RS256", jwt.encode({"sub": "alice", "tenant": "acme", "exp": now + 60}, other, "RS256")),
        "tampered": ("HS256", hs.token()[:-4] + "AAAA"),
        "alg none": ("HS256", jwt.encode({"sub": "alice", "tenant": "acme", "exp": now + 60}, None, "none")),
        "alg none, forged": ("RS256", _forge({"alg": "none"}, {"sub": "a", "tenant": "acme", "exp": now + 60}, b"")),
        # The public key is public: an HS256 token using it as the HMAC secret must not pass.
        "algorithm confusion": (
            "RS256",
            _forge(
                {"alg": "HS256", "typ": "JWT"}, {"sub": "a", "tenant": "acme", "exp": now + 60}, _pem(rsa_key).encode()
            ),
        ),
        "RS256 when only a secret is set": ("HS256", rs.token()),
        "missing exp": ("HS256", hs.token(exp=None)),
        "missing sub": ("HS256", hs.token(sub=None)),
        "missing tenant": ("HS256", hs.token(tenant=None)),
        "empty tenant": ("HS256", hs.token(tenant="")),
        "numeric tenant": ("HS256", hs.token(tenant=7)),
        "long sub": ("HS256", hs.token(sub="x" * 201)),
        "NUL in sub": ("HS256", hs.token(sub="al\x00ice")),
        "unknown role": ("HS256", hs.token(role="owner")),
        "not yet valid": ("HS256", hs.token(nbf=now + 600)),
        "an audience nobody configured": ("HS256", hs.token(aud="someone-else")),
        "not a JWT at all": ("HS256", "eyJhbGciOiJIUzI1NiJ9.e30"),
    }


REFUSALS = [
    "expired",
    "expired RS256",
    "wrong secret",
    "wrong key",
    "tampered",
    "alg none",
    "alg none, forged",
    "algorithm confusion",
    "RS256 when only a secret is set",
    "missing exp",
    "missing sub",
    "missing tenant",
    "empty tenant",
    "numeric tenant",
    "long sub",
    "NUL in sub",
    "unknown role",
    "not yet valid",
    "an audience nobody configured",
    "not a JWT at all",
]


@pytest.mark.parametrize("case", REFUSALS)
async def test_bad_signed_tokens_are_401_in_every_profile(
    case: str, settings: Settings, backends: Backends, signers: dict[str, Signer], rsa_key: rsa.RSAPrivateKey
) -> None:
    configured, token = _refusals(signers, rsa_key)[case]
    async with serving(_with(settings, **signers[configured].settings)) as client:
        for path, _, envelope in LISTS:
            reply = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert reply.status_code == 401, (path, reply.text)
            assert set(reply.json()) == envelope, path
    async with backends.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users") == 0, "a refused token created nobody"


async def test_an_expired_token_says_so(hs256: httpx.AsyncClient, signers: dict[str, Signer]) -> None:
    reply = await hs256.get(BADGE, headers=signers["HS256"].headers(exp=int(time.time()) - 60))
    assert reply.status_code == 401 and reply.json()["error"] == "Token expired"


async def test_an_audience_when_configured(settings: Settings, clean: None, signers: dict[str, Signer]) -> None:
    hs = signers["HS256"]
    async with serving(_with(settings, jwt_secret=SECRET, jwt_audience="herald")) as client:
        assert (await client.get(BADGE, headers=hs.headers(aud="herald"))).status_code == 200
        assert (await client.get(BADGE, headers=hs.headers(aud=["app", "herald"]))).status_code == 200
        assert (await client.get(BADGE, headers=hs.headers(aud="app"))).status_code == 401
        assert (await client.get(BADGE, headers=hs.headers())).status_code == 401


async def test_both_a_secret_and_a_public_key(
    settings: Settings, clean: None, signers: dict[str, Signer], rsa_key: rsa.RSAPrivateKey
) -> None:
    both = _with(settings, jwt_secret=SECRET, jwt_public_key=_pem(rsa_key))
    async with serving(both) as client:
        for algorithm in ("HS256", "RS256"):
            assert (await client.get(BADGE, headers=signers[algorithm].headers())).status_code == 200
        assert (await client.get(BADGE, headers=signers["ES256"].headers())).status_code == 401


async def test_signed_tokens_are_refused_when_none_are_configured(
    client: httpx.AsyncClient, signers: dict[str, Signer]
) -> None:
    reply = await client.get("/v1/notifications", headers=signers["HS256"].headers())
    assert reply.status_code == 401 and set(reply.json()) == {"success", "error", "timestamp"}


async def test_a_signed_token_is_a_reader_not_a_producer(hs256: httpx.AsyncClient, signers: dict[str, Signer]) -> None:
    event = {"id": "e1", "type": "t", "tenant": "acme", "audience": {"users": ["a"]}, "message": "m"}
    reply = await hs256.post("/v1/events", json=event, headers=signers["HS256"].headers())
    assert reply.status_code == 403 and reply.json()["status"] == 403


async def test_the_claimed_role_applies_to_the_request(hs256: httpx.AsyncClient, signers: dict[str, Signer]) -> None:
    hs = signers["HS256"]
    body = {"user": "dave"}
    assert (await hs256.post("/v1/admin/users", json=body, headers=hs.headers(role="member"))).status_code == 403
    made = await hs256.post("/v1/admin/users", json=body, headers=hs.headers(role="admin"))
    assert made.status_code == 201, made.text
    # alice was created as a member by her first token; the admin claim still applies to its requests,
    # and a token without a role claim is a member's again.
    assert (await hs256.post("/v1/admin/users", json=body, headers=hs.headers())).status_code == 403


async def test_a_deactivated_user_is_refused_at_once(
    hs256: httpx.AsyncClient, backends: Backends, signers: dict[str, Signer]
) -> None:
    hs = signers["HS256"]
    headers = hs.headers()
    assert (await hs256.get(BADGE, headers=headers)).status_code == 200
    async with backends.pool.acquire() as conn:
        await admin.deactivate(conn, backends.redis, "acme", "alice")
    for _ in range(50):
        reply = await hs256.get(BADGE, headers=headers)
        if reply.status_code == 403:
            break
        await asyncio.sleep(0.02)
    assert reply.status_code == 403 and reply.json()["status"] == 403
    fresh = await hs256.get("/api/user-notifications", headers=hs.headers(role="admin"))
    assert fresh.status_code == 403 and set(fresh.json()) == {"detail"}, "a new token does not revive her"


async def test_a_known_user_costs_no_database_round_trip(
    hs256: httpx.AsyncClient, signers: dict[str, Signer], monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = 0
    run = auth.postgres.run

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal trips
        trips += 1
        return await run(*args, **kwargs)

    # Only the authenticator's database calls are counted (the badge route may read counts too).
    monkeypatch.setattr(auth, "postgres", SimpleNamespace(run=counting))
    misses = AUTH_LOOKUPS.labels("miss")._value.get()
    hs = signers["HS256"]
    first = hs.headers()
    assert (await hs256.get(BADGE, headers=first)).status_code == 200
    assert trips == 1, "the first token of an unknown user: one lookup (and creation)"
    for _ in range(3):
        assert (await hs256.get(BADGE, headers=first)).status_code == 200
    for n in range(3):  # the product mints new tokens: each is verified, the user is known
        assert (await hs256.get(BADGE, headers=hs.headers(exp=int(time.time()) + 300 + n))).status_code == 200
    assert (await hs256.get("/v1/notifications", headers=hs.headers(role="manager"))).status_code == 200
    assert trips == 1
    assert AUTH_LOOKUPS.labels("miss")._value.get() == misses + 1


async def test_failed_signed_tokens_count_as_failed_authentications(
    settings: Settings, clean: None, signers: dict[str, Signer]
) -> None:
    hs = signers["HS256"]
    strict = _with(settings, jwt_secret=SECRET, rate_limit_auth_failures=0.2)
    async with serving(strict) as client:
        expired = hs.headers(exp=int(time.time()) - 120)
        assert [(await client.get(BADGE, headers=expired)).status_code for _ in range(3)] == [401, 401, 429]


async def test_cached_principals_expire_with_the_token(backends: Backends, signers: dict[str, Signer]) -> None:
    hs = signers["HS256"]
    authn = Authenticator(backends.pool, 2.0, Verifier(secret=SECRET))
    soon = hs.token(exp=int(time.time()) + 2)
    who = await authn.principal(soon)
    assert (who.tenant, who.user, who.kind, who.role) == ("acme", "alice", "pat", "member")
    assert authn.cached(token_hash(soon)) == who
    await asyncio.sleep(2.1)
    assert authn.cached(token_hash(soon)) is None, "never served from the cache after its exp"
    # Within the clock-skew leeway it is still accepted, but checked again each time, never cached.
    assert await authn.principal(soon) == who
    assert authn.cached(token_hash(soon)) is None
    with pytest.raises(Unauthorized):
        await authn.principal(hs.token(exp=int(time.time()) - 31))


async def test_forgetting_a_user_drops_their_signed_tokens(backends: Backends, signers: dict[str, Signer]) -> None:
    hs = signers["HS256"]
    authn = Authenticator(backends.pool, 2.0, Verifier(secret=SECRET))
    token = hs.token()
    who = await authn.principal(token)
    misses = AUTH_LOOKUPS.labels("miss")._value.get()
    authn.forget_user(who.user_id)
    assert authn.cached(token_hash(token)) is None
    await authn.principal(hs.token(exp=int(time.time()) + 100))
    assert AUTH_LOOKUPS.labels("miss")._value.get() == misses + 1, "the user is looked up again"


async def test_a_herald_token_is_unaffected(settings: Settings, make_user: MakeUser) -> None:
    alice = await make_user(user="alice")
    async with serving(_with(settings, jwt_secret=SECRET)) as client:
        assert (await client.get(BADGE, headers=alice.headers)).status_code == 200
        assert (await client.get(BADGE, headers={"X-API-Key": "herald_pat_" + "x" * 43})).status_code == 401
