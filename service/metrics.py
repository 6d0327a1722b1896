"""Prometheus metrics: one registry per process, rendered at GET /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

COUNT_READS = Counter(
    "herald_count_reads",
    "Unread-count reads: hit (from Redis), rebuild (from PostgreSQL into Redis), "
    "coalesced (waited for a rebuild already running), fallback (Redis unreachable).",
    ["result"],
    registry=REGISTRY,
)
AUTH_LOOKUPS = Counter(
    "herald_auth_lookups", "Token lookups: hit (process cache) or miss (database).", ["result"], registry=REGISTRY
)
STREAMS_OPEN = Gauge("herald_streams_open", "Server-Sent Event streams open in this process.", registry=REGISTRY)


def render() -> bytes:
    return generate_latest(REGISTRY)
