"""An admin's view of one user of their tenant: `GET /v1/admin/users/{user}` and
`DELETE /v1/admin/users/{user}`, which erases them (service/erasure.py). `POST /v1/admin/users`,
which creates one, is with Herald's other endpoints (service/http/native.py). Errors are in
Herald's own envelope, like theirs.

Everything is scoped to the admin's tenant: another tenant's user is a user that does not exist
(404). The id is the one upstream systems use (1–200 characters, no NUL); an id holding a `/`
cannot be named in a path, and `herald admin erase-user` erases it.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Router, delete, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import PathParameter

from service import erasure
from service.backends import postgres
from service.errors import BadRequest, Conflict, NotFound
from service.http.envelopes import documented, handlers
from service.http.guard import admin_guard, dependencies
from service.http.native import ErrorBody, render
from service.model import MAX_NAME, Principal
from service.process import Backends
from service.store import users

UserId = Annotated[
    str, PathParameter(min_length=1, max_length=MAX_NAME, description="The user's id, as upstream systems name them.")
]
# What these routes can answer besides success; 404 and 409 are described for them below.
STATUSES = (400, 401, 403, 429, 503)
_NOT_FOUND = ResponseSpec(
    data_container=ErrorBody, description="No such user in the admin's tenant (or no longer).", generate_examples=False
)
_CONFLICT = ResponseSpec(
    data_container=ErrorBody, description="An admin cannot erase themselves.", generate_examples=False
)


class UserState(msgspec.Struct, kw_only=True):
    user: str
    role: str
    # False once deactivated, and while being erased.
    active: bool


class Erasing(msgspec.Struct, kw_only=True):
    erasing: str


def _checked(user: str) -> str:
    """PostgreSQL text cannot hold a NUL character: refused naming the parameter."""
    if "\x00" in user:
        raise BadRequest("a user id may not contain a NUL character", "user", "path")
    return user


@get(
    "/v1/admin/users/{user:str}",
    guards=[admin_guard],
    summary="A user of the admin's tenant",
    description="404 once the user is erased, or if there never was one.",
    responses={404: _NOT_FOUND},
)
async def get_user(b: NamedDependency[Backends], who: NamedDependency[Principal], user: UserId) -> UserState:
    found = await postgres.run(
        b.pool, users.find_user, who.tenant_id, _checked(user), timeout=b.settings.backend_timeout
    )
    if found is None:
        raise NotFound(f"no user {user!r} in this tenant")
    return UserState(user=found.user, role=found.role, active=found.active)


@delete(
    "/v1/admin/users/{user:str}",
    guards=[admin_guard],
    status_code=202,
    summary="Erase a user and everything Herald keeps for them",
    description="Answers at once; the erasure finishes in the background, and then GET answers 404.",
    responses={404: _NOT_FOUND, 409: _CONFLICT},
)
async def erase_user(b: NamedDependency[Backends], who: NamedDependency[Principal], user: UserId) -> Erasing:
    if _checked(user) == who.user:
        raise Conflict("an admin cannot erase themselves: another admin, or `herald admin erase-user`, can")
    await erasure.request(b, who.tenant, user)
    return Erasing(erasing=user)


def router() -> Router:
    return Router(
        "/",
        route_handlers=documented([get_user, erase_user], ErrorBody, STATUSES),
        dependencies=dependencies,
        exception_handlers=handlers(render),
        tags=["herald"],
    )
