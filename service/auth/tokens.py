"""API tokens: how they look, and the only form in which Herald keeps them.

A token is `herald_pat_` or `herald_prd_` followed by 43 URL-safe characters (256 random bits).
The prefix lets secret scanners recognise a leaked token and tells a reader which kind it is.
Only SHA-256 of the whole token is stored: with 256 bits of entropy a fast hash is enough (there is
nothing to brute-force), and it keeps the lookup a single primary-key probe.
"""

from __future__ import annotations

import hashlib
import secrets

KINDS = ("pat", "producer")
_PREFIX = {"pat": "herald_pat_", "producer": "herald_prd_"}


def new_token(kind: str) -> str:
    return _PREFIX[kind] + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def looks_like_token(token: str) -> bool:
    return token.startswith(("herald_pat_", "herald_prd_")) and 20 <= len(token) <= 200
