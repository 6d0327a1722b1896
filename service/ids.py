"""Public notification ids: one inbox row id, written the way each profile's clients expect.

qualytics shows the row id as an integer; scalebox wants `ntf-` + 15 characters of [0-9a-z]; aptly
wants a UUID. All three are reversible encodings of the same bigint, so the inbox table carries no
extra column or index for them. The scalebox and aptly forms pass the id through a fixed 64-bit
permutation so they do not read as a counter, and carry a check value so a mistyped or invented id
is refused before any query. They are not secrets: every lookup is scoped to the caller anyway.
Anything that does not decode is `None`, which callers answer as "not found", never as an error.
"""

from __future__ import annotations

import base64
import functools
import struct
import uuid
from datetime import UTC, datetime, timedelta

from service.model import Position

_M64 = (1 << 64) - 1
_K1 = 0x9E3779B97F4A7C15
_K2 = 0xBF58476D1CE4E5B9
_K1_INV = pow(_K1, -1, 1 << 64)
_K2_INV = pow(_K2, -1, 1 << 64)
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_SCALEBOX_BODY = 13  # 36**13 > 2**64
_SCALEBOX_CHECK = 2


def _mix(x: int) -> int:
    x = (x * _K1) & _M64
    x ^= x >> 32
    x = (x * _K2) & _M64
    x ^= x >> 29
    return x


def _unmix(x: int) -> int:
    x ^= (x >> 29) ^ (x >> 58)
    x = (x * _K2_INV) & _M64
    x ^= x >> 32
    return (x * _K1_INV) & _M64


def _check(x: int, bits: int) -> int:
    return _mix(x ^ 0x5DEECE66D) & ((1 << bits) - 1)


_PAIRS = [a + b for a in _DIGITS for b in _DIGITS]
_SIX = 36**6  # below 2**32: arithmetic on each six-digit piece stays on small integers


def _six_digits(value: int) -> str:
    high, low = divmod(value, 1296 * 1296)
    middle, low = divmod(low, 1296)
    return _PAIRS[high] + _PAIRS[middle] + _PAIRS[low]


def _base36(value: int, width: int) -> str:
    """`value` (below 36**13) as `width` base-36 digits. Cut into six-digit pieces first: a list
    page writes fifty ids, and digit-by-digit division of a 64-bit number was a tenth of its time."""
    top, low = divmod(value, _SIX)
    top, middle = divmod(top, _SIX)
    text = _DIGITS[top] + _six_digits(middle) + _six_digits(low) if top < 36 else ""
    if not text:
        raise ValueError("too large for 13 base-36 digits")
    return text[-width:].rjust(width, "0")


# The encodings are pure functions, and the ids of a user's latest rows are written again on every
# poll of their first page: remembered, a page of fifty costs fifty dictionary lookups instead of
# a third of the request's time.
_REMEMBERED = 1 << 16


@functools.lru_cache(maxsize=_REMEMBERED)
def to_scalebox(row_id: int) -> str:
    body = _mix(row_id)
    return "ntf-" + _PAIRS[_check(body, 10) % 1296] + _base36(body, _SCALEBOX_BODY)  # 2 check digits


def from_scalebox(text: str) -> int | None:
    if len(text) != 4 + _SCALEBOX_CHECK + _SCALEBOX_BODY or not text.startswith("ntf-"):
        return None
    digits = text[4:]
    if any(c not in _DIGITS for c in digits):
        return None
    check, body = int(digits[:_SCALEBOX_CHECK], 36), int(digits[_SCALEBOX_CHECK:], 36)
    if body > _M64 or check != _check(body, 10) % 36**_SCALEBOX_CHECK:
        return None
    return _positive(_unmix(body))


@functools.lru_cache(maxsize=_REMEMBERED)
def to_uuid(row_id: int) -> str:
    a = _mix(row_id)
    hi = (a >> 16) << 16 | 0x8000 | ((a >> 4) & 0xFFF)  # version 8: "custom"
    lo = (0b10 << 62) | ((a & 0xF) << 58) | _check(a, 58)  # RFC 4122 variant
    return str(uuid.UUID(int=(hi << 64) | lo))


def from_uuid(text: str) -> int | None:
    try:
        value = uuid.UUID(text).int
    except (ValueError, AttributeError, TypeError):
        return None
    hi, lo = value >> 64, value & _M64
    if (hi >> 12) & 0xF != 8 or lo >> 62 != 0b10:
        return None
    a = ((hi >> 16) << 16) | ((hi & 0xFFF) << 4) | ((lo >> 58) & 0xF)
    if lo & ((1 << 58) - 1) != _check(a, 58):
        return None
    return _positive(_unmix(a))


def from_int(text: str | int) -> int | None:
    try:
        value = int(text)
    except (TypeError, ValueError):
        return None
    return _positive(value)


def _positive(value: int) -> int | None:
    # Row ids come from a bigint identity; anything outside it cannot name a row.
    return value if 0 < value < (1 << 63) else None


# Cursors: where a page ended (created time in microseconds, row id), as 22 URL-safe characters.
# Opaque to clients; not secret either, since a cursor only positions the caller's own list.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_cursor(position: Position) -> str:
    micros = (position.created_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(struct.pack(">qq", micros, position.id)).decode().rstrip("=")


def from_cursor(text: str) -> Position | None:
    if len(text) != 22:
        return None
    try:
        micros, row_id = struct.unpack(">qq", base64.urlsafe_b64decode(text + "=="))
        created = _EPOCH + timedelta(microseconds=micros)
    except (ValueError, struct.error, OverflowError):
        return None
    return Position(created_at=created, id=row_id)


# Webhooks: `whk_` + 16 hex digits, the same permutation as the notification ids (not a counter).
def to_webhook(webhook_id: int) -> str:
    return f"whk_{_mix(webhook_id):016x}"


def from_webhook(text: str) -> int | None:
    digits = text.removeprefix("whk_")
    if len(text) != 20 or len(digits) != 16 or any(c not in "0123456789abcdef" for c in digits):
        return None
    return _positive(_unmix(int(digits, 16)))
