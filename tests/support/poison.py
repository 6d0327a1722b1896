"""A real failure inside PostgreSQL, for the tests of poison events: while installed, any event of
type "poison" cannot be recorded (a trigger raises), on every path (batch, one event, chunk)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from service.process import Backends

POISON_TYPE = "poison"
POISON = """
CREATE OR REPLACE FUNCTION herald_test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.type = 'poison' THEN RAISE EXCEPTION 'poisoned event %', NEW.external_id; END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS herald_test_poison ON events;
CREATE TRIGGER herald_test_poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION herald_test_poison();
"""
CURE = "DROP TRIGGER IF EXISTS herald_test_poison ON events"


@contextlib.asynccontextmanager
async def poisoned(b: Backends) -> AsyncIterator[None]:
    """Events of type "poison" fail while the block runs (the trigger is dropped after, whatever happens)."""
    async with b.pool.acquire() as conn:
        await conn.execute(POISON)
    try:
        yield
    finally:
        async with b.pool.acquire() as conn:
            await conn.execute(CURE)
