"""Tokens: recognisable, unguessable, kept only as hashes, and never written to a log."""

import asyncio
import base64
import hashlib
import time
from pathlib import Path

import asyncpg
import httpx
import msgspec
import redis

from service.auth.tokens import new_token
from service.keys import STREAM
from tests.support.processes import herald, json_line, start_herald, stop


def test_tokens_carry_a_prefix_and_256_random_bits() -> None:
    seen = set()
    for kind, prefix in (("pat", "herald_pat_"), ("producer", "herald_prd_")):
        for _ in range(100):
            token = new_token(kind)
            assert token.startswith(prefix)
            secret = token.removeprefix(prefix)
            assert len(base64.urlsafe_b64decode(secret + "=")) * 8 >= 128
            seen.add(secret)
    assert len(seen) == 200


def test_no_token_is_stored_or_logged(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "HERALD_LOG_FORMAT": "json"}
    procs = start_herald(env, "api", "worker", logs=tmp_path)
    base = f"http://127.0.0.1:{env['HERALD_PORT']}"
    tokens: list[str] = []
    try:
        admin = json_line(
            herald("admin", "create-user", "--tenant", "acme", "--user", "root", "--role", "admin", env=env)
        )
        tokens.append(admin["token"])
        made = httpx.post(
            base + "/v1/admin/users", json={"user": "alice"}, headers={"Authorization": f"Bearer {admin['token']}"}
        ).json()
        tokens.append(made["token"])
        producer = json_line(
            herald("admin", "create-token", "--tenant", "acme", "--user", "svc", "--kind", "producer", env=env)
        )["token"]
        tokens.append(producer)
        alice = {"X-API-Key": made["token"]}
        event = {"id": "e1", "type": "t", "tenant": "acme", "audience": {"users": ["alice"]}, "message": "hello"}
        assert httpx.post(base + "/v1/events", json=event, headers={"X-API-Key": producer}).status_code == 202
        # Readers, right and wrong: headers, the stream's query string, errors of every kind.
        wrong = new_token("pat")
        tokens.append(wrong)
        deadline = time.monotonic() + 5
        while httpx.get(base + "/v1/unread-count", headers=alice).json()["unread_count"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for path in ("/v1/notifications", "/api/user-notifications", "/v1/notifications/ntf-zzzzzzzzzzzzzzz"):
            httpx.get(base + path, headers=alice)
            httpx.get(base + path, headers={"Authorization": f"Bearer {wrong}"})
        httpx.post(base + "/v1/events", json={"id": "bad"}, headers={"X-API-Key": producer})
        httpx.post(base + "/v1/events", json=event, headers=alice)
        with httpx.stream("GET", f"{base}/v1/stream?token={made['token']}", timeout=5) as stream:
            assert stream.status_code == 200
            next(stream.iter_lines())
        assert httpx.get(f"{base}/v1/stream?token={wrong}").status_code == 401
        # A producer writing a token into an event by mistake: the dead-letter reason must not echo it.
        redis.Redis.from_url(env["HERALD_REDIS_URL"]).xadd(STREAM, {"event": b'{"id": "' + producer.encode() + b'"'})
        assert json_line(herald("admin", "revoke-token", "--token", made["token"], env=env))
        deadline = time.monotonic() + 2
        while httpx.get(base + "/v1/unread-count", headers=alice).status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)  # the worker's dead-letter line
    finally:
        stop(procs)
    logged = b"".join(p.read_bytes() for p in tmp_path.glob("*.log"))
    assert b'"level"' in logged, "the processes logged nothing: the test would prove nothing"
    for token in tokens:
        secret = token.split("_", 2)[2]
        assert secret[:16].encode() not in logged, f"a token was written to a log: {token[:14]}…"

    async def stored() -> tuple[list[bytes], set[bytes]]:
        conn = await asyncpg.connect(env["HERALD_DATABASE_URL"])
        try:
            rows = await conn.fetch("SELECT * FROM tokens")
            return [msgspec.json.encode([str(v) for v in row.values()]) for row in rows], {r["hash"] for r in rows}
        finally:
            await conn.close()

    rows, hashes = asyncio.run(stored())
    assert hashes == {hashlib.sha256(t.encode()).digest() for t in tokens[:3]}
    for token in tokens[:3]:
        assert token.split("_", 2)[2][:16].encode() not in b"".join(rows), "a token is stored as it is"
