"""The erasure figure: a user with 1,000,000 notifications, among the read side's inbox of over
5,000,000 rows, erased through `DELETE /v1/admin/users/{user}` and the workers' job, timed until
`GET /v1/admin/users/{user}` answers 404 (the contract's "done"). Every other user's counts row must
be exactly as it was (numbers and version alike), and a few of their badges, read over HTTP, too.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.base import Bench, k
from bench.report import Row
from bench.seed import TENANT, say
from service import admin

BOUND = 30.0  # seconds, the target for 1,000,000 notifications
GIVE_UP = 120.0
POLL = 0.02
# Users whose badges are read over HTTP before and after (prepare_inbox made them).
WATCHED = ("badge-small1", "badge-big1", "list1", "other1", "other2")

_BEFORE = """
CREATE TEMP TABLE erase_before AS
SELECT user_id, unread, total, version, unseen FROM inbox_counts WHERE user_id <> $1
"""
# Counts rows of other users that differ from before, or appeared or went, since.
_CHANGED = """
SELECT count(*) FROM (
    (SELECT * FROM erase_before
     EXCEPT SELECT user_id, unread, total, version, unseen FROM inbox_counts WHERE user_id <> $1)
    UNION ALL
    (SELECT user_id, unread, total, version, unseen FROM inbox_counts WHERE user_id <> $1
     EXCEPT SELECT * FROM erase_before)
) changed
"""
_LEFT = """
SELECT (SELECT count(*) FROM inbox WHERE user_id = $1) + (SELECT count(*) FROM inbox_counts WHERE user_id = $1)
     + (SELECT count(*) FROM tokens WHERE user_id = $1) + (SELECT count(*) FROM users WHERE id = $1)
"""


async def erase(b: Bench) -> list[Row]:
    s = b.sizes
    await b.prepare_inbox()
    lo, hi = await b.seeder.user_group("erase", 1)
    await b.seeder.rows(lo, hi, s.erase, read_every=3, spread=False)
    await b.conn.execute("ANALYZE inbox, inbox_counts")
    made = await admin.create_user(b.conn, TENANT, "erase-admin", "admin")
    api = b.procs.api()
    b.procs.workers()
    watched = {user: await b.headers(user) for user in WATCHED}

    def badges(http: httpx.Client) -> dict[str, int]:
        return {
            user: http.get("/v1/unread-count", headers=h).raise_for_status().json()["unread_count"]
            for user, h in watched.items()
        }

    await b.conn.execute("DROP TABLE IF EXISTS erase_before")
    await b.conn.execute(_BEFORE, lo)
    with httpx.Client(base_url=api, headers={"Authorization": f"Bearer {made.token}"}, timeout=60) as http:
        shown_before = badges(http)
        started = time.perf_counter()
        reply = http.delete("/v1/admin/users/erase1")
        if reply.status_code != 202:
            raise RuntimeError(f"DELETE answered {reply.status_code}: {reply.text}")
        while http.get("/v1/admin/users/erase1").status_code != 404:
            if time.perf_counter() - started > GIVE_UP:
                raise RuntimeError(f"the erasure did not finish within {GIVE_UP:.0f} s")
            await asyncio.sleep(POLL)
        elapsed = time.perf_counter() - started
        shown_after = badges(http)
    changed = int(await b.conn.fetchval(_CHANGED, lo))
    left = int(await b.conn.fetchval(_LEFT, lo))
    others = int(await b.conn.fetchval("SELECT count(*) FROM erase_before"))
    say(
        f"erased a user with {s.erase:,} notifications in {elapsed:.1f} s ({s.erase / elapsed:,.0f} rows/s); "
        f"{changed} of {others:,} other users' counts changed; rows of theirs left: {left}"
    )
    if shown_after != shown_before:
        b.note(f"erase: badges of other users moved: {shown_before} -> {shown_after}")
    if left:
        b.note(f"erase: {left} rows of the erased user are left")
    return [
        Row(
            figure=f"erase a user with {k(s.erase)} notifications (s)",
            herald=elapsed,
            limit=None,
            ratio=None,
            target=f"< {BOUND:.0f} s",
            passed=elapsed < BOUND and left == 0,
        ),
        Row(
            figure="other users' counts changed by the erasure",
            herald=float(changed),
            limit=None,
            ratio=None,
            target="= 0",
            passed=changed == 0 and shown_after == shown_before,
        ),
    ]
