"""What the aptly and scalebox presenters do alike with a notification named in a path: read the
id as the profile writes it, call the core (service/inbox.py), and answer a missing row as not found.

Each profile keeps its own routes, field names and envelope; it passes its id decoder here and
renders what comes back. Both seeds also answer a refused request with 400 (never 422), in their own
error body (`respond`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Response

from service import inbox
from service.errors import NotFound
from service.http.envelopes import Problem
from service.model import InboxItem, Principal
from service.process import Backends

Decode = Callable[[str], int | None]

NOT_FOUND = "Notification not found"


def row_id(text: str, decode: Decode) -> int:
    # An id that does not decode names no row: not found, as another user's row is (never a 400).
    found = decode(text)
    if found is None:
        raise NotFound(NOT_FOUND)
    return found


def marked(read: bool, what: str = "Notification") -> str:
    return f"{what} marked as read" if read else f"{what} marked as unread"


async def get(b: Backends, who: Principal, text: str, decode: Decode) -> InboxItem:
    return await inbox.get(b, who, row_id(text, decode))


async def mark(b: Backends, who: Principal, text: str, decode: Decode, read: bool) -> InboxItem:
    return await inbox.set_read_one(b, who, row_id(text, decode), read)


async def delete(b: Backends, who: Principal, text: str, decode: Decode) -> None:
    if not await inbox.delete(b, who, [row_id(text, decode)], one=True):
        raise NotFound(NOT_FOUND)


def respond(problem: Problem, body: Callable[[int], dict[str, Any]]) -> Response[Any]:
    """`problem` as the profile's error `body` for its status; a refused request is a 400."""
    status = 400 if problem.status == 422 else problem.status
    return Response(body(status), status_code=status, headers=problem.headers)
