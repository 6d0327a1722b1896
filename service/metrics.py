"""Prometheus metrics: one registry per process, rendered at GET /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
BACKEND_UP = Gauge(
    "herald_backend_up",
    "1 while this process's probe finds the backend (postgres, redis) answering, 0 while it fails fast.",
    ["backend"],
    registry=REGISTRY,
)
STREAMS_REFUSED = Counter(
    "herald_streams_refused",
    "Server-Sent Event streams refused (503) because this process held HERALD_STREAM_LIMIT of them.",
    registry=REGISTRY,
)

# The API.
REQUESTS = Histogram(
    "herald_http_request_duration_seconds",
    "HTTP requests by route (the path template), method and status class, and how long they took.",
    ["route", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
STREAM_LENGTH = Gauge("herald_stream_length", "Entries in the event stream herald:events.", registry=REGISTRY)
STREAM_PENDING = Gauge("herald_stream_pending", "Entries read by a worker and not yet acknowledged.", registry=REGISTRY)
STREAM_LAG = Gauge("herald_stream_lag", "Entries in the stream no worker has read yet.", registry=REGISTRY)
DEAD_LETTERS = Gauge("herald_dead_letters", "Entries in the dead-letter stream herald:events:dead.", registry=REGISTRY)
QUEUED_JOBS = Gauge("herald_queued_jobs", "Fan-out chunk jobs waiting in the arq queue.", registry=REGISTRY)

# The worker.
EVENTS_INGESTED = Counter(
    "herald_events_ingested", "Events taken from the stream and fanned out (or found done).", registry=REGISTRY
)
EVENTS_DEAD_LETTERED = Counter(
    "herald_events_dead_lettered",
    "Events moved to the dead-letter stream: invalid (failed validation) or failing (fan-out kept failing).",
    ["reason"],
    registry=REGISTRY,
)
EVENTS_BATCHED = Counter(
    "herald_events_batched",
    "Events recorded and delivered together with the other small events of their stream read, by one statement.",
    registry=REGISTRY,
)
FANOUT_ROWS = Counter("herald_fanout_rows", "Inbox rows written by fan-out.", registry=REGISTRY)
HEAP_FULL_SECONDS = Histogram(
    "herald_heap_full_collection_seconds",
    "Full garbage collections of an API process, run once as many streams ended as are open (service/http/heap.py).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
FANOUT_SECONDS = Histogram(
    "herald_fanout_duration_seconds",
    "Time of one fan-out statement: a whole small event, a stream read's small events, or one chunk of a large one.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
JOB_RETRIES = Counter(
    "herald_job_retries", "Fan-out chunk jobs and stream entries retried after a failure.", ["kind"], registry=REGISTRY
)
COUNT_DRIFT = Counter(
    "herald_count_drift",
    "Users whose stored unread/total count differed from their inbox rows when reconciliation ran (should stay 0).",
    registry=REGISTRY,
)
RETENTION_DELETED = Counter(
    "herald_retention_deleted", "Rows removed by retention: inbox rows and events.", ["table"], registry=REGISTRY
)
SWEPT = Counter(
    "herald_swept",
    "Inbox rows changed by the sweep: snooze (back from a snooze) and expiry (removed when their event expired).",
    ["kind"],
    registry=REGISTRY,
)

# Webhooks out (the worker's courier, service/webhooks/courier.py).
WEBHOOK_ATTEMPTS = Counter(
    "herald_webhook_attempts",
    "Webhook delivery attempts by outcome: delivered (a 2xx), retry (failed, tried again later), failed "
    "(given up: failing for 24 hours, or its webhook deleted).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_SECONDS = Histogram(
    "herald_webhook_send_duration_seconds",
    "Time of one webhook POST, answered or not (bounded by the 10 s timeout).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
WEBHOOK_PENDING = Gauge(
    "herald_webhook_pending", "Webhook deliveries not yet delivered nor given up (all tenants).", registry=REGISTRY
)
WEBHOOK_LAG = Gauge(
    "herald_webhook_lag_seconds",
    "How long the oldest due webhook delivery has been waiting for its attempt (0 when none is due).",
    registry=REGISTRY,
)


def render() -> bytes:
    return generate_latest(REGISTRY)
