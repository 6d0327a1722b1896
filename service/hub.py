"""One Redis pub/sub connection per API process, fanned out to whoever listens in that process.

It always listens on `herald:auth` (a user whose cached credentials must be dropped). If the
connection drops, messages may have been missed, so the whole credential cache is dropped and the
subscriptions are made again once Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.client import PubSub

from service.auth import Authenticator
from service.cache import AUTH_CHANNEL

log = logging.getLogger("herald.hub")


class Hub:
    def __init__(self, client: aioredis.Redis, auth: Authenticator) -> None:
        self._redis = client
        self._auth = auth
        self._task: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        self._stopping = False
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="herald-hub")

    async def stop(self) -> None:
        """Close the connection under the reader rather than cancel it: redis-py's read with a
        timeout can swallow a cancellation and keep waiting. Cancel only if that did not work."""
        self._stopping = True
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=2)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(self._task, 2)

    async def _run(self) -> None:
        delay = 0.1
        while not self._stopping:
            self._pubsub = pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(AUTH_CHANNEL)
                self.connected.set()
                delay = 0.1
                while not self._stopping:
                    # A bounded wait (not a blocking read), so the client's socket timeout never
                    # mistakes a quiet channel for a dead connection.
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._dispatch(message["channel"], message["data"])
            except (redis.exceptions.RedisError, OSError) as exc:
                self.connected.clear()
                if self._stopping:
                    return
                # Invalidations may have been missed while the connection was down.
                self._auth.forget_all()
                log.warning("pub/sub connection lost (%s); reconnecting", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if channel == AUTH_CHANNEL.encode():
            try:
                self._auth.forget_user(int(data))
            except ValueError:
                self._auth.forget_all()
