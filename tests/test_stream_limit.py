"""HERALD_STREAM_LIMIT against a real `herald api` (granian): past the limit a stream is refused at
once with 503 and Retry-After, everything else is still answered, and a closed stream frees its
place."""

import asyncio
import contextlib
import subprocess
import sys
import time

import httpx
import msgspec

from tests.support.processes import herald, json_line, stop, wait_ready
from tests.support.sse import Reader

LIMIT = 5


async def _open(
    stack: contextlib.AsyncExitStack, http: httpx.AsyncClient, headers: dict[str, str]
) -> tuple[httpx.Response, Reader]:
    """A stream asked for and, when admitted, its first event read; the response stays open on `stack`."""
    response = await asyncio.wait_for(stack.enter_async_context(http.stream("GET", "/v1/stream", headers=headers)), 2)
    reader = Reader(response)
    if response.status_code == 200:
        assert (await reader.next_event(timeout=2)).event == "unread"
    return response, reader


async def test_streams_past_the_limit_are_refused_at_once_and_the_rest_is_answered(env: dict[str, str]) -> None:
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "tabs", env=env))["token"]
    headers = {"Authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{env['HERALD_PORT']}"
    api = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "api", "--workers", "1"], env={**env, "HERALD_STREAM_LIMIT": str(LIMIT)}
    )
    timeout = httpx.Timeout(5.0, read=30.0)
    limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
    try:
        wait_ready(base, [api])
        async with (
            httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits) as streams,
            httpx.AsyncClient(base_url=base, timeout=timeout) as http,
        ):
            # Each open stream's exit stack and reader: a reader dropped would close its response.
            held: list[tuple[contextlib.AsyncExitStack, Reader]] = []
            try:
                for _ in range(LIMIT):
                    stack = contextlib.AsyncExitStack()
                    response, reader = await _open(stack, streams, headers)
                    held.append((stack, reader))
                    assert response.status_code == 200
                # Full: more are refused at once, in Herald's envelope, and told when to come back.
                for _ in range(3):
                    started = time.monotonic()
                    async with contextlib.AsyncExitStack() as stack:
                        response, _ = await _open(stack, streams, headers)
                        body = msgspec.json.decode(await response.aread())
                    assert time.monotonic() - started < 1
                    assert response.status_code == 503
                    assert response.headers["retry-after"] == "30"  # HERALD_POLL_INTERVAL
                    assert body["status"] == 503 and "stream" in body["error"]
                    assert response.headers["content-type"] == "application/json"
                # Everything else is still answered while the streams are open.
                for _ in range(5):
                    assert (await http.get("/healthz")).status_code == 200
                    badge = await http.get("/v1/unread-count", headers=headers)
                    assert badge.status_code == 200 and badge.json()["unread_count"] == 0
                metrics = (await http.get("/metrics")).text
                assert "herald_streams_refused_total 3.0" in metrics
                assert "herald_streams_open 5.0" in metrics

                # Two tabs close: two streams are admitted again (once the server has seen them go),
                # and the next one is refused.
                for stack, _ in held[:2]:
                    await stack.aclose()
                del held[:2]
                admitted = 0
                deadline = time.monotonic() + 5
                while admitted < 2:
                    assert time.monotonic() < deadline, "a closed stream's place was not freed within 5 s"
                    stack = contextlib.AsyncExitStack()
                    response, reader = await _open(stack, streams, headers)
                    if response.status_code == 200:
                        held.append((stack, reader))
                        admitted += 1
                    else:
                        await stack.aclose()
                        await asyncio.sleep(0.05)
                async with contextlib.AsyncExitStack() as stack:
                    response, _ = await _open(stack, streams, headers)
                    assert response.status_code == 503
            finally:
                for stack, _ in held:
                    await stack.aclose()
    finally:
        stop([api])
