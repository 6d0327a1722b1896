"""Webhooks out: a tenant's endpoints told of changes, at least once, signed as Standard Webhooks say.

    API request ──one statement──▶ inbox rows changed + webhook_deliveries rows (store/outbox.py)
    fan-out's end ─one statement─▶ event marked done + webhook_deliveries rows
    worker (courier.py) ── claim due rows (SKIP LOCKED, a lease) ── POST, signed (sign.py),
                           through the guarded client (send.py, guard.py) ── record the outcome

- Registration (registry.py, `POST /v1/admin/webhooks`): an http(s) URL whose host does not resolve
  to a loopback, private, link-local or otherwise non-public address (unless
  HERALD_WEBHOOK_ALLOW_PRIVATE=1), the types it takes, and a secret shown once.
- Recording: in the change's own statement, so a change is never announced without happening nor
  happens without being announced.
- Delivery: the courier in every worker process claims due rows a share per endpoint, POSTs them
  concurrently with at most PER_ENDPOINT in flight per endpoint (a hanging endpoint holds those
  slots only), retries after about 1, 2, 4, ... seconds (at most an hour apart) and gives up after
  GIVE_UP_AFTER. The address check runs again whenever the client resolves the endpoint's name, on
  the addresses it then connects to, so it cannot be raced (guard.py).
"""

from __future__ import annotations

from typing import Literal

from service.store.outbox import BULK, DELIVERED

NOTIFICATION_TYPES = (
    "notification.read",
    "notification.unread",
    "notification.archived",
    "notification.interacted",
    "notification.deleted",
)
TYPES: tuple[str, ...] = (*NOTIFICATION_TYPES, BULK, DELIVERED)
Type = Literal[
    "notification.read",
    "notification.unread",
    "notification.archived",
    "notification.interacted",
    "notification.deleted",
    "inbox.bulk",
    "event.delivered",
]
