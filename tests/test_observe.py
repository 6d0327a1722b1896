"""What an operator watches: /metrics of the API and of the worker, and JSON logs whose lines carry
the id of the request they are about, from the API through the stream into the worker."""

import time
from pathlib import Path

import httpx
import msgspec
import redis

from service.keys import STREAM
from service.local.embedded import free_port
from tests.support.factories import MakeUser
from tests.support.processes import herald, json_line, start_herald, stop


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when it is absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))  # as prometheus_client writes them
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            head, _, value = line.rpartition(" ")
            if head == name or head == f"{name}{{{wanted}}}":
                return float(value)
    return 0.0


async def test_requests_are_counted_by_route_and_carry_a_request_id(
    client: httpx.AsyncClient, make_user: MakeUser
) -> None:
    alice = await make_user(user="alice")
    for _ in range(3):
        await client.get("/v1/unread-count", headers=alice.headers)  # the first by the route, then the fast path
    await client.get("/v1/notifications/ntf-000000000000000", headers=alice.headers)
    given = await client.get("/v1/notifications", headers={**alice.headers, "X-Request-ID": "trace-42.a:b"})
    assert given.headers["x-request-id"] == "trace-42.a:b"
    made = await client.get("/v1/notifications", headers={**alice.headers, "X-Request-ID": "bad id\twith junk"})
    assert made.headers["x-request-id"] != "bad id\twith junk" and len(made.headers["x-request-id"]) == 16
    text = (await client.get("/metrics")).text
    count = "herald_http_request_duration_seconds_count"
    assert _sample(text, count, route="/v1/unread-count", method="GET", status="200") >= 3
    assert _sample(text, count, route="/v1/notifications/{notification_id}", method="GET", status="404") >= 1
    assert _sample(text, count, route="/v1/notifications", method="GET", status="200") >= 2
    for gauge in ("herald_stream_length", "herald_stream_pending", "herald_dead_letters", "herald_queued_jobs"):
        assert f"\n{gauge} " in text, gauge
    assert "herald_count_reads_total" in text and "herald_auth_lookups_total" in text


def test_the_worker_reports_and_one_id_follows_an_event(env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = {**env, "HERALD_LOG_FORMAT": "json", "HERALD_METRICS_PORT": str(port)}
    procs = start_herald(env, "api", "worker", logs=tmp_path)
    base = f"http://127.0.0.1:{env['HERALD_PORT']}"
    client = redis.Redis.from_url(env["HERALD_REDIS_URL"])
    try:
        producer = json_line(
            herald("admin", "create-token", "--tenant", "acme", "--user", "svc", "--kind", "producer", env=env)
        )["token"]
        event = {"id": "e1", "type": "t", "tenant": "acme", "audience": {"users": ["a", "b"]}, "message": "m"}
        reply = httpx.post(
            base + "/v1/events", json=event, headers={"X-API-Key": producer, "X-Request-ID": "publish-7f"}
        )
        assert reply.status_code == 202
        # The entry carries the request's id to the worker.
        entries = client.xrange(STREAM)
        assert entries[-1][1][b"request_id"] == b"publish-7f"
        # An entry the worker refuses: its log line names the request it came from.
        client.xadd(STREAM, {"event": b"{broken", "request_id": b"publish-8e"})
        deadline = time.monotonic() + 10
        while True:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            if _sample(text, "herald_events_dead_lettered_total", reason="invalid") >= 1:
                break
            assert time.monotonic() < deadline, text[-2000:]
            time.sleep(0.1)
        assert _sample(text, "herald_events_ingested_total") >= 1
        assert _sample(text, "herald_fanout_rows_total") == 2
        assert _sample(text, "herald_fanout_duration_seconds_count") >= 1
    finally:
        stop(procs)
        client.close()
    lines = [
        msgspec.json.decode(line)
        for path in tmp_path.glob("*.log")
        for line in path.read_bytes().splitlines()
        if line.startswith(b"{")
    ]
    access = [line for line in lines if line["logger"] == "herald.access" and line.get("request_id") == "publish-7f"]
    assert access and access[0]["status"] == 202 and access[0]["process"] == "api"
    dead = [line for line in lines if line["process"] == "worker" and "dead-lettered" in line["message"]]
    assert dead and dead[0]["request_id"] == "publish-8e"
