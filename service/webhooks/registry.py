"""A tenant's webhooks as its admins manage them: register, list, delete, and see the deliveries.

Shared by the `/v1/admin/webhooks` endpoints (service/http/webhooks.py). Each operation is scoped to
the admin's tenant; another tenant's webhook is not found, exactly as a missing one.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from service import ids
from service.backends import postgres
from service.errors import BadRequest, NotFound
from service.model import Principal
from service.process import Backends
from service.store import webhooks as store
from service.webhooks import guard, sign

MAX_PER_TENANT = 20
NOT_FOUND = "Webhook not found"


class Registered(msgspec.Struct, frozen=True, kw_only=True):
    webhook: store.Webhook
    secret: str  # whsec_..., shown this once


async def register(b: Backends, who: Principal, url: str, events: Sequence[str]) -> Registered:
    """A new webhook of the admin's tenant. BadRequest naming `url` when it is malformed or points
    where webhooks may not go (see guard.py), or when the tenant has MAX_PER_TENANT already."""
    try:
        await guard.check(url, b.settings.webhook_allow_private)
    except ValueError as exc:
        raise BadRequest(f"url {exc}", "url") from None
    key = sign.new_key()
    types = list(dict.fromkeys(events))
    made = await postgres.run(
        b.pool, store.register, who.tenant_id, url, types, key, MAX_PER_TENANT, timeout=b.settings.backend_timeout
    )
    if made is None:
        raise BadRequest(f"a tenant has at most {MAX_PER_TENANT} webhooks; delete one first", "url")
    return Registered(webhook=made, secret=sign.shown(key))


async def listed(b: Backends, who: Principal) -> list[store.Webhook]:
    return await postgres.run(b.pool, store.listed, who.tenant_id, timeout=b.settings.backend_timeout)


def _webhook_id(text: str) -> int:
    found = ids.from_webhook(text)
    if found is None:
        raise NotFound(NOT_FOUND)
    return found


async def delete(b: Backends, who: Principal, public_id: str) -> None:
    """Delete the webhook: nothing more is sent to it, pending deliveries included."""
    gone = await postgres.run(
        b.pool, store.delete, who.tenant_id, _webhook_id(public_id), timeout=b.settings.backend_timeout
    )
    if not gone:
        raise NotFound(NOT_FOUND)


async def deliveries(b: Backends, who: Principal, public_id: str, limit: int) -> list[store.Delivery]:
    found = await postgres.run(
        b.pool, store.deliveries, who.tenant_id, _webhook_id(public_id), limit, timeout=b.settings.backend_timeout
    )
    if found is None:
        raise NotFound(NOT_FOUND)
    return found
