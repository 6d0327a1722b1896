"""Authentication as Litestar guards, so credentials are checked before a body is even parsed.

Every reader endpoint of every profile takes the token as `Authorization: Bearer <token>` or as
`X-API-Key: <token>`. The guard resolves it (cached, see service/auth.py), applies the rule of
the route (reader, producer or admin) and leaves the principal in the request scope, where the
`who` dependency picks it up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.di import NamedDependency, Provide
from litestar.handlers.base import BaseRouteHandler

from service import auth
from service.backends import Backends
from service.model import Principal

_SCOPE_KEY = "herald.principal"


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


def _guard(rule: Callable[[Principal], Principal], *, query_token: bool = False) -> Callable[..., Any]:
    async def check(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        token = token_of(connection)
        if token is None and query_token:
            token = connection.query_params.get("token")
        who = await backends_of(connection).auth.principal(token)
        connection.scope[_SCOPE_KEY] = rule(who)  # type: ignore[literal-required]

    return check


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
