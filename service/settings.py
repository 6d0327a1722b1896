"""Settings: one frozen Struct, read from the environment once per process.

`load_settings()` is called by the app factory, the worker's start and the CLI, never at import,
so tests build `Settings(...)` directly. A bad value raises `SettingsError` whose message is one
line naming the variable; the CLI prints that line and exits non-zero.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from service.auth import signed
from service.errors import SettingsError

PROFILE_NAMES = ("qualytics", "scalebox", "aptly")
DEFAULT_PROFILES = "qualytics=/api,scalebox=/v1,aptly=/aptly/v1"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # None means "not configured": `herald dev` then starts embedded servers; `api`/`worker` refuse.
    database_url: str | None = None
    redis_url: str | None = None
    # A streaming replica of database_url for list and get reads (see service/backends/replica.py); None: none.
    database_replica_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    # (profile name, mount prefix) pairs, in the order given.
    profiles: tuple[tuple[str, str], ...] = (("qualytics", "/api"), ("scalebox", "/v1"), ("aptly", "/aptly/v1"))
    poll_interval: int = 30
    # How many recipients one fan-out statement (and one arq job) handles.
    fanout_chunk: int = 10_000
    # Connections per process; the API and the worker each hold one pool.
    db_pool_size: int = 10
    # Bound on how long a request waits for PostgreSQL or Redis before answering 503.
    backend_timeout: float = 5.0
    # Granian worker processes for `herald api`.
    api_workers: int = 1
    # Serve the demo page and its publish route (only `herald dev` turns this on).
    demo: bool = False
    log_format: str = "json"
    # Inbox rows (and then events) older than this many days are removed by the worker; 0: kept.
    retention_days: int = 0
    # Port of `herald worker`'s /metrics (on HERALD_HOST); 0: none. The API serves its own.
    metrics_port: int = 0
    # One log line per HTTP request (logger herald.access), with its id, route, status and time.
    access_log: bool = True
    # Seconds between keep-alive comments on an idle stream (the contract allows at most 15).
    stream_heartbeat: float = 15.0
    # Server-Sent Event streams one API process (one granian worker) holds at most; past it a new
    # stream is refused at once with 503 and Retry-After (the client polls instead).
    stream_limit: int = 10_000
    # Rate limits per API process (see service/auth/limits.py); 0 turns one off.
    rate_limit_reads: float = 1000.0  # requests per second per reader token
    rate_limit_publishes: float = 10_000.0  # events per second per producer token
    rate_limit_auth_failures: float = 10.0  # unknown tokens per second per client address
    # Browser origins allowed to call the API (CORS); empty: none, ("*",): any.
    cors_origins: tuple[str, ...] = ()
    # Peers whose X-Forwarded-For is believed (a reverse proxy or ingress), as networks.
    trusted_proxies: tuple[str, ...] = ()
    # Signed user tokens (service/auth/signed.py): the HS256 secret, and the PEM text of the RS256/ES256
    # public key (read from HERALD_JWT_PUBLIC_KEY_FILE); either, both or neither.
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    # The `aud` signed tokens must carry; None: tokens carrying one are refused.
    jwt_audience: str | None = None
    # Redis replicas that must hold a published event before it is acknowledged (Redis WAIT); 0: none.
    publish_replicas: int = 0
    # Webhooks may point at loopback, private and link-local addresses (service/webhooks/guard.py).
    webhook_allow_private: bool = False

    def require_backends(self) -> tuple[str, str]:
        """The two URLs, for the parts that cannot start embedded servers themselves."""
        if not self.database_url:
            raise SettingsError("HERALD_DATABASE_URL: required (e.g. postgresql://user@host:5432/herald)")
        if not self.redis_url:
            raise SettingsError("HERALD_REDIS_URL: required (e.g. redis://host:6379/0)")
        return self.database_url, self.redis_url


class SentinelURL(msgspec.Struct, frozen=True, kw_only=True):
    """`redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]`:
    the sentinels to ask, the name of the monitored primary, the database number, and the
    credentials of the data nodes (and, if the sentinels need one, of the sentinels)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


SENTINEL_SCHEME = "redis+sentinel"
_SENTINEL_FORM = "redis+sentinel://host:26379,host2:26379/mymaster/0"


def parse_sentinel_url(url: str, name: str = "HERALD_REDIS_URL") -> SentinelURL:
    """Parse the sentinel form by hand: urlsplit cannot read several hosts in one netloc."""
    scheme, sep, rest = url.partition("://")
    if scheme != SENTINEL_SCHEME or not sep:
        raise SettingsError(f"{name}: expected {_SENTINEL_FORM}")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if colon else None)
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, port = item.strip(), "26379"
        if host.startswith("["):  # [::1]:26379
            host, _, after = host[1:].partition("]")
            port = after.removeprefix(":") or port
        elif host.count(":") == 1:
            host, port = host.split(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise SettingsError(f"{name}: bad sentinel address {item!r}; expected {_SENTINEL_FORM}")
        sentinels.append((host, int(port)))
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise SettingsError(f"{name}: expected the primary's name (and a database) after the hosts: {_SENTINEL_FORM}")
    sentinel_password = None
    for key, values in parse_qs(query).items():
        if key != "sentinel_password":
            raise SettingsError(f"{name}: unknown option {key!r} (only sentinel_password)")
        sentinel_password = values[-1]
    return SentinelURL(
        sentinels=tuple(sentinels),
        service=unquote(parts[0]),
        db=int(parts[1]) if len(parts) == 2 else 0,
        username=username,
        password=password,
        sentinel_password=sentinel_password,
    )


def _redis_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw and raw.startswith(SENTINEL_SCHEME + "://"):
        parse_sentinel_url(raw, name)
        return raw
    try:
        return _url(env, name, ("redis", "rediss", "unix"))
    except SettingsError:
        raise SettingsError(
            f"{name}: expected a URL starting with redis://, rediss:// or unix://, or {_SENTINEL_FORM}"
        ) from None


_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")


N = TypeVar("N", int, float)


def _number(env: Mapping[str, str], name: str, kind: type[N], default: N, lo: N, hi: N) -> N:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}: must be between {lo} and {hi}, got {value}")
    return value


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    parts = urlsplit(raw)
    if parts.scheme not in schemes or not (parts.hostname or parts.path):
        raise SettingsError(f"{name}: expected a URL starting with {' or '.join(s + '://' for s in schemes)}")
    return raw


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise SettingsError(f"{name}: expected 1 or 0, got {raw!r}")
    return raw in ("1", "true", "yes", "on")


def _origins(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in env.get(name, "").split(",") if o.strip())
    for origin in origins:
        parts = urlsplit(origin)
        if origin != "*" and (parts.scheme not in ("http", "https") or not parts.netloc or parts.path):
            raise SettingsError(f"{name}: expected * or origins like https://app.example.com, got {origin!r}")
    return origins


def _networks(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    networks = tuple(n.strip() for n in env.get(name, "").split(",") if n.strip())
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise SettingsError(f"{name}: expected addresses or networks like 10.0.0.0/8, got {network!r}") from None
    return networks


def _jwt_secret(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "")
    return signed.check_secret(raw, name) if raw else None


def _jwt_public_key(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name, "")
    if not path:
        return None
    try:
        with open(path, encoding="ascii") as file:
            pem = file.read(1 << 16)
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{name}: cannot read {path!r} ({exc.__class__.__name__})") from None
    signed.public_key_algorithm(pem, name)
    return pem


def parse_profiles(raw: str, name: str = "HERALD_PROFILES") -> tuple[tuple[str, str], ...]:
    mounts: list[tuple[str, str]] = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        profile, sep, prefix = item.partition("=")
        profile, prefix = profile.strip(), prefix.strip().rstrip("/")
        if not sep or profile not in PROFILE_NAMES:
            raise SettingsError(
                f"{name}: expected name=/prefix with name one of {', '.join(PROFILE_NAMES)}, got {item!r}"
            )
        if not _PREFIX_RE.match(prefix):
            raise SettingsError(f"{name}: prefix for {profile} must look like /api, got {prefix!r}")
        if any(p == profile for p, _ in mounts):
            raise SettingsError(f"{name}: {profile} is mounted twice")
        mounts.append((profile, prefix))
    return tuple(mounts)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    public_url = env.get("HERALD_PUBLIC_URL", "").rstrip("/")
    if public_url and urlsplit(public_url).scheme not in ("http", "https"):
        raise SettingsError(f"HERALD_PUBLIC_URL: expected an http(s) URL, got {public_url!r}")
    host = env.get("HERALD_HOST", "127.0.0.1")
    if not host or any(c.isspace() for c in host):
        raise SettingsError(f"HERALD_HOST: expected a host name or address, got {host!r}")
    log_format = env.get("HERALD_LOG_FORMAT", "json")
    if log_format not in ("json", "text"):
        raise SettingsError(f"HERALD_LOG_FORMAT: expected json or text, got {log_format!r}")
    return Settings(
        database_url=_url(env, "HERALD_DATABASE_URL", ("postgresql", "postgres")),
        redis_url=_redis_url(env, "HERALD_REDIS_URL"),
        database_replica_url=_url(env, "HERALD_DATABASE_REPLICA_URL", ("postgresql", "postgres")),
        host=host,
        port=_number(env, "HERALD_PORT", int, 8000, 1, 65535),
        public_url=public_url,
        profiles=parse_profiles(env.get("HERALD_PROFILES", DEFAULT_PROFILES)),
        poll_interval=_number(env, "HERALD_POLL_INTERVAL", int, 30, 1, 86_400),
        fanout_chunk=_number(env, "HERALD_FANOUT_CHUNK", int, 10_000, 100, 100_000),
        db_pool_size=_number(env, "HERALD_DB_POOL_SIZE", int, 10, 2, 200),
        backend_timeout=_number(env, "HERALD_BACKEND_TIMEOUT", float, 5.0, 0.1, 9.0),
        api_workers=_number(env, "HERALD_API_WORKERS", int, 1, 1, 64),
        stream_limit=_number(env, "HERALD_STREAM_LIMIT", int, 10_000, 1, 1_000_000),
        demo=env.get("HERALD_DEMO", "") == "1",
        log_format=log_format,
        access_log=_flag(env, "HERALD_ACCESS_LOG", True),
        metrics_port=_number(env, "HERALD_METRICS_PORT", int, 0, 0, 65535),
        retention_days=_number(env, "HERALD_RETENTION_DAYS", int, 0, 0, 36_500),
        rate_limit_reads=_number(env, "HERALD_RATE_LIMIT_READS", float, 1000.0, 0, 1e6),
        rate_limit_publishes=_number(env, "HERALD_RATE_LIMIT_PUBLISHES", float, 10_000.0, 0, 1e7),
        rate_limit_auth_failures=_number(env, "HERALD_RATE_LIMIT_AUTH_FAILURES", float, 10.0, 0, 1e6),
        cors_origins=_origins(env, "HERALD_CORS_ORIGINS"),
        trusted_proxies=_networks(env, "HERALD_TRUSTED_PROXIES"),
        jwt_secret=_jwt_secret(env, "HERALD_JWT_SECRET"),
        jwt_public_key=_jwt_public_key(env, "HERALD_JWT_PUBLIC_KEY_FILE"),
        jwt_audience=env.get("HERALD_JWT_AUDIENCE") or None,
        publish_replicas=_number(env, "HERALD_PUBLISH_REPLICAS", int, 0, 0, 16),
        webhook_allow_private=_flag(env, "HERALD_WEBHOOK_ALLOW_PRIVATE", False),
    )
