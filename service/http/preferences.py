"""A reader's preferences: `GET /v1/preferences` and `PUT /v1/preferences`.

`{"muted": {"types": [...], "categories": [...], "topics": [...]}}`: events of a muted type or
category, or reaching the user only through muted topics, are not delivered to them. The fan-out
applies the mutes (service/store/fanout.py); muting changes future deliveries only. Errors are in
Herald's own envelope, like the other native endpoints.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Router, get, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from service.backends import postgres
from service.errors import BadRequest
from service.http.envelopes import documented, handlers
from service.http.guard import dependencies, reader_guard
from service.http.native import ErrorBody, render
from service.model import Input, Name, Principal
from service.process import Backends
from service.store import preferences as store

MAX_MUTES = 100  # entries in each list
MutedList = Annotated[list[Name], msgspec.Meta(max_length=MAX_MUTES)]
# What a preferences route can answer besides 200 (a 404 would be a path that is no route at all).
STATUSES = (400, 401, 403, 413, 429, 503)


class Muted(Input, frozen=True):
    types: MutedList
    categories: MutedList
    topics: MutedList


class Preferences(Input, frozen=True):
    """The whole of a user's preferences: a PUT replaces them, so every list is required."""

    muted: Muted


def _shape(mutes: store.Mutes) -> Preferences:
    return Preferences(
        muted=Muted(types=list(mutes.types), categories=list(mutes.categories), topics=list(mutes.topics))
    )


def _checked(values: list[str], field: str) -> tuple[str, ...]:
    """The list without repeats (first one kept); a NUL character, which PostgreSQL text cannot
    hold, is refused naming the entry."""
    for index, value in enumerate(values):
        if "\x00" in value:
            raise BadRequest("strings may not contain a NUL character", f"muted.{field}[{index}]")
    return tuple(dict.fromkeys(values))


@get("/v1/preferences", guards=[reader_guard], summary="What the caller muted")
async def get_preferences(b: NamedDependency[Backends], who: NamedDependency[Principal]) -> Preferences:
    return _shape(await postgres.run(b.pool, store.get, who.user_id, timeout=b.settings.backend_timeout))


@put("/v1/preferences", guards=[reader_guard], summary="Replace what the caller muted")
async def put_preferences(
    b: NamedDependency[Backends], who: NamedDependency[Principal], data: JSONBody[Preferences]
) -> Preferences:
    muted = data.muted
    mutes = store.Mutes(
        types=_checked(muted.types, "types"),
        categories=_checked(muted.categories, "categories"),
        topics=_checked(muted.topics, "topics"),
    )

    await postgres.run(b.pool, store.replace, who.user_id, mutes, timeout=b.settings.backend_timeout)
    return _shape(mutes)


def router() -> Router:
    return Router(
        "/",
        route_handlers=documented([get_preferences, put_preferences], ErrorBody, STATUSES),
        dependencies=dependencies,
        exception_handlers=handlers(render),
        tags=["herald"],
    )
