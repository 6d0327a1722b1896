"""Where a webhook may point: public http(s) addresses only, checked at registration and again at
every connection.

A URL is refused when its host resolves to any address that is not public: loopback, private,
link-local, shared (CGNAT), multicast, reserved, unspecified, documentation ranges, and their IPv6
forms, IPv4-mapped IPv6 addresses included (`::ffff:127.0.0.1` is loopback). Otherwise a tenant admin
could make Herald's workers POST into the network they run in (the cloud's metadata service, an
internal admin port). HERALD_WEBHOOK_ALLOW_PRIVATE=1 lifts the rule, for receivers on the same host
or network (and for tests).

Checking the name at registration is not enough: its owner can re-point it afterwards. So the
workers' HTTP client connects through `GuardedBackend`, which resolves the name itself, checks every
address, and connects to an address it checked: there is no second resolution to race. TLS still
verifies the certificate against the name (the client asks for it by name).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = ("http", "https")
RESOLVE_TIMEOUT = 3.0


class Refused(httpcore.ConnectError):
    """The host resolves to an address webhooks may not reach (or does not resolve)."""


def public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # is_global is false for every private, loopback, link-local, shared, reserved, unspecified and
    # documentation range; multicast ranges are "global" to it, and no webhook's business either.
    return address.is_global and not address.is_multicast


async def resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> list[Address]:
    """Every address `host` resolves to, through the event loop's resolver (not blocking the loop)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    except (OSError, TimeoutError) as exc:
        raise Refused(f"{host} does not resolve") from exc
    found: list[Address] = []
    for _, _, _, _, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in found:
            found.append(address)
    if not found:
        raise Refused(f"{host} does not resolve")
    return found


def allowed(host: str, addresses: Iterable[Address], allow_private: bool) -> list[Address]:
    """The addresses, or Refused when one of them is not public (a name that resolves to a public
    and a private address is refused: which one a client picks is not up to Herald)."""
    addresses = list(addresses)
    if not allow_private:
        for address in addresses:
            if not public(address):
                raise Refused(f"{host} resolves to a non-public address ({address})")
    return addresses


def check_form(url: str) -> httpx.URL:
    """The URL, if it is an absolute http(s) URL with a host and no credentials; ValueError saying
    what is wrong otherwise."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError("must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        parsed = httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if not parsed.host:
        raise ValueError("needs a host")
    return parsed


def port_of(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


async def check(url: str, allow_private: bool, timeout: float = RESOLVE_TIMEOUT) -> None:
    """Registration's check: the form, then where the host resolves now. ValueError saying why not."""
    parsed = check_form(url)
    try:
        allowed(parsed.host, await resolve(parsed.host, port_of(parsed), timeout), allow_private)
    except Refused as exc:
        raise ValueError(str(exc)) from None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses `allowed` passes (see the module)."""

    def __init__(self, allow_private: bool, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.allow_private = allow_private
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = allowed(host, await resolve(host, port, timeout or RESOLVE_TIMEOUT), self.allow_private)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("webhooks connect over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)
