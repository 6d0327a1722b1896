"""The invariant, as the tests assert it: service/local/invariants.py holds the check itself (the soak
runs the same one)."""

from __future__ import annotations

from service.local.invariants import check_counts
from service.process import Backends


async def counts_agree(b: Backends) -> None:
    """inbox_counts equals the shown rows (unread, total and unseen; a snoozed row is not counted),
    and Redis holds the same numbers for every user it caches; every row's copied type and category
    are its event's."""
    async with b.pool.acquire() as conn:
        found = await check_counts(conn, b.redis)
    assert found.rows_off == []
    assert found.copies_off == []
    assert found.types_off == []
