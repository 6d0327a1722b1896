"""Every Redis key, prefix and channel Herald uses, in one place.

Keys and channels
    herald:events                 stream of published events (field `event`), consumer group `herald`
    herald:events:dead            dead letters: fields `event` (as received) and `reason`
    herald:events:attempts        hash: stream entry id -> failed or abandoned attempts so far
    herald:queue                  arq's job queue (and arq's own `arq:*` keys for job state; an
                                  erasure's job is `erase:{user_id}`, gone once it has run)
    herald:count:{user_id}        cached counts, "version:unread:total:unseen", expiring after COUNT_TTL
                                  (or "rebuilding" while a reader rebuilds it: service/counts/copies.py)
    herald:watched                sorted set of user ids (score = id): every user who may hold a cached
                                  count or an open stream, so a fan-out copies counts to those only
                                  (service/counts/watch.py)
    herald:listening:{user_id}    the user has a stream open in some API process (refreshed while it is)
    herald:tab-groups:{user_id}   the user's tab-count breakdown at one count version, a hash (service/counts/tabs.py)
    herald:pos:{user_id}          hash: list -> remembered positions of deep pages at one count version
                                  (service/positions.py)
    herald:user:{user_id}         pub/sub: a user's count changes and arrivals, for their streams;
                                  CLOSE_STREAMS ends them (the user is being erased)
    herald:auth                   pub/sub: a user id whose cached credentials must be dropped
                                  (pub/sub channels are shared by every database of a Redis server:
                                  on database N > 0 they are herald:dbN:user:{user_id} and
                                  herald:dbN:auth, so that deployments on one server never hear
                                  each other: see `Channels`)
    herald:wrote:{user_id}        the primary's WAL position after the user's last write, for
                                  read-your-writes with a database replica (service/backends/replica.py)
    herald:reconcile:cursor       the reconcile job's place in its walk over users (workers/housekeeping.py)

The count protocol is described in service/counts/__init__.py.
"""

from __future__ import annotations

from typing import Any

STREAM = "herald:events"
GROUP = "herald"
DEAD = "herald:events:dead"
ATTEMPTS = "herald:events:attempts"
QUEUE = "herald:queue"
COUNT_PREFIX = "herald:count:"
TABS_PREFIX = "herald:tab-groups:"
WROTE_PREFIX = "herald:wrote:"
RECONCILE_CURSOR = "herald:reconcile:cursor"
# On a user's channel instead of a change: their open streams end (service/erasure.py).
CLOSE_STREAMS = b"close"
WATCHED = "herald:watched"
LISTENING_PREFIX = "herald:listening:"
POSITIONS_PREFIX = "herald:pos:"


def count_key(user_id: int) -> str:
    return f"{COUNT_PREFIX}{user_id}"


def tabs_key(user_id: int) -> str:
    return f"{TABS_PREFIX}{user_id}"


def positions_key(user_id: int) -> str:
    return f"{POSITIONS_PREFIX}{user_id}"


class Channels:
    """The pub/sub channels of the Redis database a client uses. Keys live in a database, but
    channels belong to the whole server: two deployments sharing one Redis on databases 0 and 1
    would otherwise push one's arrivals and badges to the other's streams, and drop each other's
    cached credentials. Database 0 keeps the plain names."""

    def __init__(self, database: int = 0) -> None:
        scope = "herald:" if database == 0 else f"herald:db{database}:"
        self.user_prefix = f"{scope}user:"
        self.auth = f"{scope}auth"

    @classmethod
    def of(cls, client: Any) -> Channels:
        """The channels of the database `client` (a redis-py client or pool owner) talks to."""
        return cls(int(client.connection_pool.connection_kwargs.get("db") or 0))

    def user(self, user_id: int) -> str:
        return f"{self.user_prefix}{user_id}"


def listening_key(user_id: int) -> str:
    return f"{LISTENING_PREFIX}{user_id}"


def wrote_key(user_id: int) -> str:
    return f"{WROTE_PREFIX}{user_id}"
