"""Signed user tokens: JWTs minted by the upstream product, checked with PyJWT.

A product's front end may hand its users short-lived tokens without asking Herald: HS256 with the
shared secret `HERALD_JWT_SECRET`, or RS256/ES256 with the private half of the public key in
`HERALD_JWT_PUBLIC_KEY_FILE`. This module only says whether a token is genuine and what it
claims; `service/auth/__init__.py` maps the claims to a user and caches the result.

Which algorithm checks a token is decided here, never by the token: HS256 exists only when a
secret is configured and is always checked with that secret; RS256 or ES256 (by the key's type)
only when a public key is. So `alg: none`, an unconfigured algorithm, or an HS256 token "signed"
with the public key as its secret (the classic algorithm confusion) are all refused.
"""

from __future__ import annotations

import re
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from service.errors import SettingsError, Unauthorized

# Seconds of clock skew tolerated between the product and Herald, for `exp`, `nbf` and `iat`.
LEEWAY = 30
ROLES = ("member", "manager", "admin")
MAX_NAME = 200  # as for user ids and tenants in events
MIN_SECRET_BYTES = 32  # RFC 7518 §3.2: an HS256 key of at least 256 bits
MIN_RSA_BITS = 2048
# header.payload.signature, base64url without padding; the signature may be empty (`alg: none`),
# which is refused by the verification, not mistaken for a Herald token.
_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")
MAX_LENGTH = 8192
MAX_EXP = 2**40


def looks_like_jwt(token: str) -> bool:
    return len(token) <= MAX_LENGTH and _SHAPE.match(token) is not None


class Claims(msgspec.Struct, frozen=True):
    tenant: str
    user: str
    role: str
    exp: int  # seconds since the epoch


def public_key_algorithm(pem: str, name: str = "HERALD_JWT_PUBLIC_KEY_FILE") -> tuple[str, Any]:
    """The algorithm a PEM public key verifies, and the loaded key; SettingsError if unusable."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{name}: not a PEM public key ({exc.__class__.__name__})") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise SettingsError(f"{name}: an RSA key needs at least {MIN_RSA_BITS} bits, got {key.key_size}")
        return "RS256", key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise SettingsError(f"{name}: an EC key must be on P-256 (for ES256), got {key.curve.name}")
        return "ES256", key
    raise SettingsError(f"{name}: expected an RSA (RS256) or P-256 EC (ES256) public key")


def check_secret(secret: str, name: str = "HERALD_JWT_SECRET") -> str:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise SettingsError(f"{name}: must be at least {MIN_SECRET_BYTES} bytes (256 bits) for HS256")
    return secret


class Verifier:
    """Checks signed tokens against the configured keys; one per process."""

    def __init__(self, secret: str | None = None, public_key: str | None = None, audience: str | None = None) -> None:
        self._keys: dict[str, Any] = {}
        if secret:
            self._keys["HS256"] = check_secret(secret).encode()
        if public_key:
            algorithm, key = public_key_algorithm(public_key)
            self._keys[algorithm] = key
        self._audience = audience or None
        self._decoder = jwt.PyJWT(options={"enforce_minimum_key_length": True})

    @property
    def algorithms(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def verify(self, token: str) -> Claims:
        """The token's claims if it is genuine, unexpired and well-formed; Unauthorized otherwise."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise Unauthorized("Invalid token") from None
        if not isinstance(algorithm, str) or algorithm not in self._keys:
            raise Unauthorized("Invalid token: signing algorithm not accepted")
        key = self._keys[algorithm]
        try:
            claims: dict[str, Any] = self._decoder.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                leeway=LEEWAY,
                options={"require": ["exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("Token expired") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"Invalid token: no {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise Unauthorized("Invalid token") from None
        return Claims(
            tenant=_name(claims, "tenant"),
            user=_name(claims, "sub"),
            role=_role(claims),
            # PyJWT has checked that it converts; bounded so that time arithmetic cannot overflow.
            exp=min(int(claims["exp"]), MAX_EXP),
        )


def _name(claims: dict[str, Any], claim: str) -> str:
    value = claims.get(claim)
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME or "\x00" in value:
        raise Unauthorized(f"Invalid token: {claim} must be a string of 1 to {MAX_NAME} characters")
    return value


def _role(claims: dict[str, Any]) -> str:
    value = claims.get("role", "member")
    if value not in ROLES:
        raise Unauthorized(f"Invalid token: role must be one of {', '.join(ROLES)}")
    return str(value)
