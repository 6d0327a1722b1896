"""Fixtures of the webhook tests: the API with private receivers allowed (they run on this machine),
an admin, and a receiver on the test's own loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from service.local.receiver import Receiver
from service.settings import Settings
from tests.support.factories import MakeUser, User
from tests.support.http import serving


@pytest.fixture
def open_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(settings, webhook_allow_private=True)


@pytest.fixture
async def api(open_settings: Settings, clean: None) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(open_settings) as c:
        yield c


@pytest.fixture
async def admin(make_user: MakeUser) -> User:
    return await make_user(user="root", role="admin")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as r:
        yield r
