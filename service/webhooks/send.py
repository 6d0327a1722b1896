"""One POST of one delivery, through the process's one pooled HTTP client.

The client (aiohttp) keeps connections to each endpoint open between deliveries, follows no redirect
(a 3xx is a failed attempt: a receiver must answer at the URL it gave), reads no proxy settings from
the environment (a proxy would connect on Herald's behalf, past the address check), and resolves
names only through guard.GuardedResolver. Every attempt is bounded by TIMEOUT as a whole, whatever
the endpoint does: connect, send, a slow answer, a hang.

Why aiohttp and not httpx: measured on this project's 2-core machines, httpx spent about 1.2 ms of CPU
on each POST and its connection pool slowed down as more POSTs were in flight (about 100 a second
with 16 in flight); aiohttp about 0.2 ms and 2,500 a second. The workers' throughput is the POSTs'.
"""

from __future__ import annotations

import asyncio
import functools

import aiohttp
import msgspec
import yarl

from service.webhooks import guard, sign

TIMEOUT = 10.0
# A receiver's answer is not needed past its status; a huge one is not read (the connection is then
# closed instead of kept).
MAX_ANSWER = 64 * 1024
USER_AGENT = "Herald-Webhooks/1"


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """How one POST went: `ok` for a 2xx; otherwise `error` says why, in words fit for the
    deliveries list (never the URL's query, which may carry a token, nor a secret)."""

    ok: bool
    status: int | None = None
    error: str | None = None


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> yarl.URL:
    return yarl.URL(url)


class Sender:
    def __init__(self, allow_private: bool, *, connections: int = 512, timeout: float = TIMEOUT) -> None:
        self.allow_private = allow_private
        self.connections = connections
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop it was made in.
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.connections, resolver=guard.GuardedResolver(self.allow_private), ttl_dns_cache=10
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                trust_env=False,
                auto_decompress=False,
                headers={"user-agent": USER_AGENT, "content-type": "application/json"},
            )
        return self._session

    async def send(self, url: str, msg_id: str, key: bytes, body: bytes) -> Attempt:
        try:
            target = _parsed(url)
            guard.literal(target.host or "", self.allow_private)
            async with (
                asyncio.timeout(self.timeout),
                self._client().post(
                    target, data=body, headers=sign.headers(key, msg_id, body), allow_redirects=False
                ) as answer,
            ):
                read = 0
                async for chunk in answer.content.iter_any():
                    read += len(chunk)
                    if read > MAX_ANSWER:
                        break
                status = answer.status
        except TimeoutError:
            return Attempt(ok=False, error=f"no answer within {self.timeout:g} s")
        except guard.Refused as exc:
            return Attempt(ok=False, error=f"could not connect: {exc}")
        except aiohttp.ClientConnectorError as exc:
            return Attempt(ok=False, error=f"could not connect: {exc.os_error or exc}"[:500])
        except (aiohttp.ClientError, ValueError) as exc:
            return Attempt(ok=False, error=f"{type(exc).__name__}: {exc}".replace(url, "the URL")[:500])
        if 200 <= status < 300:
            return Attempt(ok=True, status=status)
        return Attempt(ok=False, status=status, error=f"answered HTTP {status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
