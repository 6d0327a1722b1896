"""A bounded soak of Herald: real processes, real servers, minutes of mixed load.

`python -m bench.soak [--minutes 5] [--rate 200]` (or `make soak`) starts PostgreSQL and Redis
(embedded, in a temporary directory, unless HERALD_SOAK_DATABASE_URL / HERALD_SOAK_REDIS_URL name
existing ones), applies the schema, starts `herald api --workers 2` and `herald worker` the way
production does, seeds a tenant, then runs concurrently:

- a publisher at a paced rate (half POST /v1/events with a producer token, half XADD),
- badge pollers: closed-loop GET /v1/unread-count with If-None-Match, as fast as they go,
- list and acknowledge sessions through the scalebox and qualytics profiles.

Every 30 seconds it records requests, errors and p50/p99 per kind, and the RSS, CPU and
connection counts of every process. At the end it checks that no event was lost and every count
agrees with the rows, prints a report, writes `bench/results/soak-latest.json` (and a dated copy)
and exits non-zero if anything failed. Modules:

    stats.py     latency histograms and per-window tallies, mergeable across processes
    servers.py   embedded servers, Herald processes, process trees, RSS and CPU
    seed.py      the tenant, its users, tokens and subscriptions
    load.py      the publisher and list/ack sessions (httpx) and the badge pollers (own process)
    checks.py    samples of processes and pools, the drain, the final consistency checks
    report.py    the printed table and the JSON file
    run.py       the whole run, in order
"""
