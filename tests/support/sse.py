"""A small Server-Sent Events reader for tests: the events of a streaming httpx response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec


class Message(msgspec.Struct):
    event: str | None = None
    data: str = ""
    id: str | None = None
    retry: int | None = None
    comment: str | None = None

    def json(self) -> Any:
        return msgspec.json.decode(self.data)


class Reader:
    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> Message:
        """The next event or comment; fails the test if none comes within `timeout`."""
        return await asyncio.wait_for(self._next(), timeout)

    async def next_event(self, timeout: float = 5.0) -> Message:
        """The next event, skipping heartbeat comments."""
        while True:
            message = await self.next(timeout)
            if message.comment is None:
                return message

    async def _next(self) -> Message:
        message = Message()
        seen = False
        async for line in self._lines:
            if line == "":
                if seen:
                    return message
                continue
            seen = True
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "":
                message.comment = value
            elif field == "data":
                message.data = value if not message.data else message.data + "\n" + value
            elif field == "event":
                message.event = value
            elif field == "id":
                message.id = value
            elif field == "retry":
                message.retry = int(value)
        raise EOFError("the stream ended")


@asynccontextmanager
async def open_stream(
    base: str, headers: dict[str, str] | None = None, params: dict[str, str] | None = None
) -> AsyncIterator[Reader]:
    async with (
        httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30.0)) as http,
        http.stream("GET", "/v1/stream", headers=headers, params=params) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Reader(response)
