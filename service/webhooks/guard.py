"""Where a webhook may point: public http(s) addresses only, checked at registration and again at
every connection.

A URL is refused when its host is or resolves to any address that is not public: loopback, private,
link-local, shared (CGNAT), multicast, reserved, unspecified, documentation ranges, and their IPv6
forms, IPv4-mapped IPv6 addresses included (`::ffff:127.0.0.1` is loopback). Otherwise a tenant admin
could make Herald's workers POST into the network they run in (the cloud's metadata service, an
internal admin port). HERALD_WEBHOOK_ALLOW_PRIVATE=1 lifts the rule, for receivers on the same host
or network (and for tests).

Checking the name at registration is not enough: its owner can re-point it afterwards. So the
workers' HTTP client resolves names through `GuardedResolver`, which checks every address it
returns, and connects only to those addresses: there is no second resolution to race. TLS still
verifies the certificate against the name. A host written as an address is not resolved by the
client at all; the sender checks it itself (`literal`).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
import yarl

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = ("http", "https")
RESOLVE_TIMEOUT = 3.0


class Refused(OSError):
    """The host resolves to an address webhooks may not reach (or does not resolve). An OSError, so
    that the client reports it as a failed connection."""


def public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # is_global is false for every private, loopback, link-local, shared, reserved, unspecified and
    # documentation range; multicast ranges are "global" to it, and no webhook's business either.
    return address.is_global and not address.is_multicast


async def _infos(host: str, port: int, family: int, timeout: float) -> list[Any]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, family=family), timeout)
    except (OSError, TimeoutError) as exc:
        raise Refused(f"{host} does not resolve") from exc
    if not infos:
        raise Refused(f"{host} does not resolve")
    return list(infos)


def _address(sockaddr: Any) -> Address:
    return ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])


async def resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> list[Address]:
    """Every address `host` resolves to, through the event loop's resolver (not blocking the loop)."""
    found: list[Address] = []
    for *_, sockaddr in await _infos(host, port, socket.AF_UNSPEC, timeout):
        address = _address(sockaddr)
        if address not in found:
            found.append(address)
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


def check_form(url: str) -> yarl.URL:
    """The URL as the client will read it, if it is an absolute http(s) URL with a host and no
    credentials; ValueError saying what is wrong otherwise."""
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("must not contain spaces or control characters")
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise ValueError("must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
        parsed = yarl.URL(url)
        port = parsed.port
    except (ValueError, TypeError) as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if not parsed.host or port is None:
        raise ValueError("needs a host")
    return parsed


def literal(host: str, allow_private: bool) -> None:
    """Refused when `host` is written as an address that is not public (a name is the resolver's)."""
    refusal = _literal_refusal(host) if not allow_private else None
    if refusal is not None:
        raise Refused(refusal)


@functools.lru_cache(maxsize=4096)
def _literal_refusal(host: str) -> str | None:
    # Cached: parsing an address is a good part of a POST's own cost, and every delivery asks.
    try:
        address = ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return None
    return None if public(address) else f"{host} is a non-public address"


async def check(url: str, allow_private: bool, timeout: float = RESOLVE_TIMEOUT) -> None:
    """Registration's check: the form, then where the host resolves now. ValueError saying why not."""
    parsed = check_form(url)
    host, port = parsed.host or "", parsed.port or 0  # check_form made sure of both
    try:
        allowed(host, await resolve(host, port, timeout), allow_private)
    except Refused as exc:
        raise ValueError(str(exc)) from None


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's resolver for the workers' client: names resolve only to addresses `allowed` passes
    (a refusal fails the attempt as a connection error, naming the address)."""

    def __init__(self, allow_private: bool, timeout: float = RESOLVE_TIMEOUT) -> None:
        self.allow_private = allow_private
        self.timeout = timeout

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        infos = await _infos(host, port, family, self.timeout)
        allowed(host, [_address(info[4]) for info in infos], self.allow_private)
        return [
            aiohttp.abc.ResolveResult(
                hostname=host,
                host=str(info[4][0]),
                port=int(info[4][1]),
                family=info[0],
                proto=info[2],
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for info in infos
        ]

    async def close(self) -> None:
        pass
