"""One POST of one delivery, through the process's one pooled HTTP client.

The client (httpx) keeps connections to each endpoint open between deliveries, follows no redirect
(a 3xx is a failed attempt: a receiver must answer at the URL it gave), reads no proxy settings from
the environment (a proxy would connect on Herald's behalf, past the address check), and connects
only through guard.GuardedBackend. Every attempt is bounded by TIMEOUT as a whole, whatever the
endpoint does: connect, send, a slow answer, a hang.
"""

from __future__ import annotations

import asyncio

import httpcore
import httpx
import msgspec

from service.webhooks import sign
from service.webhooks.guard import GuardedBackend

TIMEOUT = 10.0
# A receiver's answer is not needed past its status; a huge one is not read (the connection is then
# closed instead of kept).
MAX_ANSWER = 64 * 1024
USER_AGENT = "Herald-Webhooks/1"


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """How one POST went: `ok` for a 2xx; otherwise `error` says why, in words fit for the
    deliveries list (never the URL, which may carry a token, nor a secret)."""

    ok: bool
    status: int | None = None
    error: str | None = None


class _Transport(httpx.AsyncHTTPTransport):
    """httpx's transport over a connection pool whose every connection goes through the guard.
    httpx has no parameter for a pool's network backend, so the pool it made is replaced."""

    def __init__(self, allow_private: bool, limits: httpx.Limits) -> None:
        super().__init__(trust_env=False, limits=limits)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(allow_private),
        )


class Sender:
    def __init__(self, allow_private: bool, *, connections: int = 512, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections, keepalive_expiry=30)
        self.client = httpx.AsyncClient(
            transport=_Transport(allow_private, limits),
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            headers={"user-agent": USER_AGENT, "content-type": "application/json"},
        )

    async def send(self, url: str, msg_id: str, key: bytes, body: bytes) -> Attempt:
        try:
            async with asyncio.timeout(self.timeout):
                async with self.client.stream("POST", url, content=body, headers=sign.headers(key, msg_id, body)) as r:
                    read = 0
                    async for chunk in r.aiter_raw():
                        read += len(chunk)
                        if read > MAX_ANSWER:
                            break
                    status = r.status_code
        except (TimeoutError, httpx.TimeoutException):
            return Attempt(ok=False, error=f"no answer within {self.timeout:g} s")
        except httpx.ConnectError as exc:
            return Attempt(ok=False, error=f"could not connect: {exc}"[:500])
        except httpx.HTTPError as exc:
            return Attempt(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
        if 200 <= status < 300:
            return Attempt(ok=True, status=status)
        return Attempt(ok=False, status=status, error=f"answered HTTP {status}")

    async def close(self) -> None:
        await self.client.aclose()
