"""Standard Webhooks signing (standardwebhooks.com): secrets, and the three headers of a delivery.

A secret is `whsec_` + base64 of 32 random bytes; the key is those bytes, and only they are stored.
A delivery is signed with `v1,` + base64 of HMAC-SHA256 over `<webhook-id>.<webhook-timestamp>.<body>`,
which the spec's libraries in every language verify (the tests use its Python one). The timestamp
is the attempt's, so a retry carries a fresh one (receivers refuse old timestamps) and the same id.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

PREFIX = "whsec_"
KEY_BYTES = 32


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def shown(key: bytes) -> str:
    """The secret as the admin is shown it, once."""
    return PREFIX + base64.b64encode(key).decode()


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(key: bytes, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(key, msg_id, timestamp, body),
    }
