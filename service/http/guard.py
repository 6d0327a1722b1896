"""Authentication as Litestar guards, so credentials are checked before a body is even parsed.

Every reader endpoint of every profile takes the token as `Authorization: Bearer <token>` or as
`X-API-Key: <token>`. The guard resolves it (cached, see service/auth/__init__.py), applies the rule of
the route (reader, producer or admin) and leaves the principal in the request scope, where the
`who` dependency picks it up.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler

from service import auth
from service.auth.limits import retry_after
from service.auth.tokens import token_hash
from service.errors import TooManyRequests, Unauthorized
from service.model import Principal
from service.process import Backends

_SCOPE_KEY = "herald.principal"
_LIMIT_KEY = "herald.limit-key"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def token_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return connection.headers.get("x-api-key") or None


def backends_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Backends:
    found: Backends = connection.app.state.backends
    return found


@functools.lru_cache(maxsize=8)
def _networks(trusted: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in trusted)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in n for n in networks)


def client_address(connection: ASGIConnection[Any, Any, Any, Any], trusted: tuple[str, ...]) -> str:
    """The caller's address: the peer, or, when the peer is a trusted proxy, the nearest address in
    X-Forwarded-For that is not one (anything further left could have been written by the client)."""
    peer = connection.scope.get("client")
    address = peer[0] if peer else "unknown"
    networks = _networks(trusted)
    if not networks or not _trusted(address, networks):
        return address
    hops = [h.strip() for h in ",".join(connection.headers.getall("x-forwarded-for", [])).split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop
    return hops[0] if hops else address


async def _principal(connection: ASGIConnection[Any, Any, Any, Any], token: str | None, key: bytes) -> Principal:
    """The token's owner. A token this process does not know costs a database lookup, so unknown
    tokens are limited per client address: guessing is slowed, valid cached tokens from the same
    address (a shared office NAT) go on working."""
    b = backends_of(connection)
    if token is None:
        return await b.auth.principal(None)
    who = b.auth.cached(key)
    if who is not None:
        return who
    address = client_address(connection, b.settings.trusted_proxies)
    wait = b.limits.auth_failures.wait(address)
    if wait:
        raise TooManyRequests("too many failed authentications from this address", retry_after(wait))
    try:
        return await b.auth.principal(token, key)
    except Unauthorized:
        b.limits.auth_failures.take(address)
        raise


def _guard(rule: Callable[[Principal], Principal], *, query_token: bool = False) -> Callable[..., Any]:
    async def check(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        token = token_of(connection)
        if token is None and query_token:
            token = connection.query_params.get("token")
        key = token_hash(token or "")
        who = rule(await _principal(connection, token, key))
        if who.kind == "pat":
            # Publishes are counted per event by the route; everything else a token does is a read.
            wait = backends_of(connection).limits.reads.take(key)
            if wait:
                raise TooManyRequests("too many requests for this token", retry_after(wait))
        connection.scope[_SCOPE_KEY] = who  # type: ignore[literal-required]
        connection.scope[_LIMIT_KEY] = key  # type: ignore[literal-required]

    return check


def token_key(connection: ASGIConnection[Any, Any, Any, Any]) -> bytes:
    """The rate-limit key of the request's token (its hash), set by the guard."""
    key: bytes = connection.scope[_LIMIT_KEY]  # type: ignore[literal-required]
    return key


reader_guard = _guard(auth.reader)
producer_guard = _guard(auth.producer)
admin_guard = _guard(auth.admin)
# Streams also take `?token=`: a browser's EventSource cannot send headers.
stream_guard = _guard(auth.reader, query_token=True)


def _backends(request: ASGIConnection[Any, Any, Any, Any]) -> Backends:
    return backends_of(request)


def _who(request: ASGIConnection[Any, Any, Any, Any], b: NamedDependency[Backends]) -> Principal:
    # `b` is not needed here; asking for it makes Litestar resolve the two one after the other.
    # Dependencies of the same level are resolved in an anyio task group per request, which cost
    # about 8 % of a badge poll when profiled.
    who: Principal = request.scope[_SCOPE_KEY]  # type: ignore[literal-required]
    return who


# Router dependencies: `who: NamedDependency[Principal]`, `b: NamedDependency[Backends]`.
dependencies = {
    "who": Provide(_who, sync_to_thread=False),
    "b": Provide(_backends, sync_to_thread=False),
}
