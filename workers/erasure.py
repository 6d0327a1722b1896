"""The erasure job (`erase_user`, one per user, queued by DELETE /v1/admin/users/{user}) and the
periodic pass that queues it again for any user still marked as being erased.

The work itself is service/erasure.py's. A job runs it for at most BUDGET seconds, then asks arq to
run it again at once (`Retry` keeps the job's place and id): arq marks a running job for its
timeout plus 10 s, and a long job would delay the takeover of a dead worker's fan-out chunks by as
much (workers/main.py). A job whose worker dies is run again by arq once that mark expires; one
that was never queued, or lost with a Redis that restarted empty, is queued by the pass.
"""

from __future__ import annotations

import logging
from typing import Any

from arq import Retry

from service import erasure
from service.errors import Unavailable
from service.process import Backends

log = logging.getLogger("herald.erasure")

# Seconds of work per run of the job; well under the job's timeout (workers/main.py).
BUDGET = 25.0
# Seconds before a run that met an unreachable backend is tried again.
WAIT = 5.0


async def erase_user(ctx: dict[str, Any], user_id: int) -> int:
    """arq job: go on with the user's erasure; the inbox rows it deleted in this run."""
    b: Backends = ctx["backends"]
    try:
        progress = await erasure.run(b, user_id, budget=BUDGET, stopping=ctx.get("stopping"))
    except Unavailable as exc:
        log.warning("erasure of user %d waits for a backend: %s", user_id, exc)
        raise Retry(defer=WAIT) from exc
    if not progress.done:
        # Out of time, stopping, or waiting for a writer: the same job again, straight away (or,
        # when the worker is stopping, by whichever worker takes it).
        raise Retry(defer=0 if progress.rows else 1)
    return progress.rows


async def erasure_pass(ctx: dict[str, Any]) -> None:
    """Periodic: queue the job of every user still marked (one job per user: a queued or running
    one is left alone)."""
    await erasure.queue_marked(ctx["backends"], ctx["redis"])


async def resume_erasures(ctx: dict[str, Any]) -> None:
    """The pass, once, as the worker starts; a backend still away only leaves it to the next pass."""
    try:
        await erasure_pass(ctx)
    except Unavailable as exc:
        log.warning("unfinished erasures not looked for at start (%s); the next pass does", exc)
