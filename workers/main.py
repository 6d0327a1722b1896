"""The worker process: an arq worker for fan-out chunk jobs and erasures (workers/erasure.py), with
the stream consumer, the sweep (snoozes ending, expiry; workers/sweep.py) and the webhook courier
(service/webhooks/) beside it.

One process does all four because they share everything (pools, the tenant cache, the count
publisher) and scale the same way: run more `herald worker` processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

import msgspec
import redis.exceptions
from arq.cron import cron
from arq.worker import Worker, func

from service.erasure import ERASE_JOB
from service.http.profiles.scalebox import present
from service.keys import QUEUE
from service.process import Backends, Watch
from service.settings import Settings
from service.webhooks.courier import Courier
from service.webhooks.send import Sender
from workers import sweep
from workers.consumer import Consumer
from workers.delivery import CHUNK_JOB, Delivery, fanout_chunk
from workers.erasure import erase_user, erasure_pass, resume_erasures
from workers.housekeeping import JOB_TIMEOUT, reconcile_job, retention_job, trim_job
from workers.queue import queue_pool

log = logging.getLogger("herald.worker")

# A chunk's statement is bounded well below this; a worker that dies mid-job has its job re-run
# by another once arq's in-progress mark expires (job timeout + 10 s), inside the contract's 60 s.
CHUNK_TIMEOUT = 40
# arq stops retrying after this many tries. Herald retries an unreachable backend for as long as
# it lasts (with backoff up to 30 s, this is hours) and dead-letters real failures itself earlier.
ARQ_MAX_TRIES = 1000


async def warn_without_persistence(client: Any) -> None:
    """Accepted events wait in a Redis stream (and split fan-outs in arq's queue): if Redis
    restarts without persistence, whatever was not yet consumed is gone. Say so at start."""
    try:
        config = await client.config_get("appendonly")
    except redis.exceptions.ResponseError:  # CONFIG disabled, as on some managed services
        log.info("could not read Redis's persistence settings (CONFIG is disabled); make sure AOF is on")
        return
    if config.get(b"appendonly", config.get("appendonly")) in (b"no", "no"):
        log.warning(
            "Redis persistence is off (appendonly no): a Redis restart would lose accepted events that "
            "are not yet consumed. Production needs appendonly yes with appendfsync everysec or always."
        )


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx["settings"]
    with contextlib.suppress(redis.exceptions.RedisError):  # only a warning: not worth failing a start
        await warn_without_persistence(ctx["redis"])
    backends = await Backends.open(settings, "herald-worker", ctx["watch"])
    fan = Delivery(backends, ctx["redis"])
    consumer = Consumer(fan)
    stopping = asyncio.Event()
    # A notification in a webhook is the scalebox item, rendered by that profile's one presenter.
    sender = Sender(settings.webhook_allow_private)
    courier = Courier(backends, sender, present)
    ctx.update(
        backends=backends,
        fanout=fan,
        consumer=consumer,
        consumer_task=asyncio.create_task(consumer.run()),
        sweep_task=asyncio.create_task(sweep.run(backends, stopping), name="herald-sweep"),
        sender=sender,
        courier=courier,
        courier_task=asyncio.create_task(courier.run(stopping), name="herald-webhooks"),
        stopping=stopping,
    )
    log.info("worker started: consuming %s as %s", "herald:events", consumer.name)
    # A worker coming back after a crash takes up unfinished erasures at once, not at the next pass.
    await resume_erasures(ctx)


async def shutdown(ctx: dict[str, Any]) -> None:
    consumer: Consumer | None = ctx.get("consumer")
    running = [t for t in (ctx.get("consumer_task"), ctx.get("sweep_task"), ctx.get("courier_task")) if t is not None]
    if consumer is not None:
        # Stops reading new entries; an entry being handled finishes (it is short: one chunk at most).
        consumer.stop()
    if "stopping" in ctx:
        # The sweep ends after its current batch (each is one short transaction); the courier claims
        # nothing more and lets its POSTs in flight finish (each is bounded by its 10 s timeout).
        ctx["stopping"].set()
    if running:
        # All at once, under one bound, so that the whole stop stays well inside the 30 s promised.
        _, late = await asyncio.wait(running, timeout=20)
        for task in late:
            task.cancel()
        if late:  # let them unwind, so that their connections are back in the pool before it closes
            await asyncio.wait(late, timeout=2)
    sender: Sender | None = ctx.get("sender")
    if sender is not None:
        await sender.close()
    backends: Backends | None = ctx.get("backends")
    if backends is not None:
        await backends.close()  # its probes and its loop copying counts again too
    elif "watch" in ctx:  # stopped while still waiting for Redis at start
        await ctx["watch"].stop()


class HeraldWorker(Worker):
    """arq's worker, kept alive through a Redis outage.

    arq lets a Redis error out of its poll loop, which ends the process; Herald's promise is that
    everything recovers by itself when Redis is back. So a failed poll is logged (once per outage)
    and tried again with backoff. Jobs whose end could not be recorded stay on the queue and are
    run again later, which the chunk markers make harmless.
    """

    _outage_since: float | None = None

    def handle_sig_wait_for_completion(self, signum: signal.Signals) -> None:
        # Periodic jobs check this between batches and end early: arq waits for running jobs on
        # SIGTERM, and a maintenance run's 25 s would push the stop past the 30 s promised.
        stopping: asyncio.Event | None = self.ctx.get("stopping")
        if stopping is not None:
            stopping.set()
        super().handle_sig_wait_for_completion(signum)

    async def main(self) -> None:
        # A worker starts while Redis is away (after a host reboot, or before its Redis in compose or
        # Kubernetes) and waits for it, for as long as it takes; SIGTERM still stops it at once.
        watch: Watch = self.ctx["watch"]
        watch.start()
        waited = 0.0
        while True:
            try:
                await self.pool.ping()
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                if waited == 0:
                    log.warning("Redis unreachable at start (%s); waiting for it", exc)
                delay = min(5.0, 0.2 + waited / 4)
                await asyncio.sleep(delay)
                waited += delay
        if waited:
            log.warning("Redis answers after %.1f s; starting", waited)
        await super().main()

    async def close(self) -> None:
        """arq's close, except that a Redis away at that moment (an outage, or a stop while still
        waiting for it at start) does not skip the shutdown hook: the consumer and the sweep end,
        and the pools and probes close, whatever Redis does."""
        if not self._handle_signals:
            self.handle_sig(signal.SIGUSR1)
        if not self._pool:
            return
        await asyncio.gather(*self.tasks.values())
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self.pool.delete(self.health_check_key)
        if self.on_shutdown:
            await self.on_shutdown(self.ctx)
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self.pool.aclose(close_connection_pool=True)
        self._pool = None

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        # arq takes a job slot (its semaphore and counter) before the Redis calls that claim the
        # job, and gives it back only if they answer: a Redis error there (an outage, failed fast)
        # would lose the slot for good, and after `max_jobs` of them the worker would never run a
        # job again. One job at a time, so a slot taken without a job started is given back here.
        for job_id in job_ids:
            taken = self.job_counter
            try:
                await super().start_jobs([job_id])
            except BaseException:
                if self.job_counter > taken:
                    self.job_counter -= 1
                    self.sem.release()
                raise

    async def _poll_iteration(self) -> None:
        # On SIGTERM arq ends this loop by cancelling its task. A Redis call in flight at that
        # moment can absorb the cancellation (seen here: the loop then polled on, and the worker
        # never exited); the request is still counted on the task, so the loop ends here instead.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            log.warning("the worker's poll loop outlived its cancellation; ending it")
            raise asyncio.CancelledError
        try:
            await super()._poll_iteration()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.warning("Redis unreachable (%s); the worker waits for it", exc)
            await asyncio.sleep(min(5.0, 0.1 + (time.monotonic() - self._outage_since) / 4))
            return
        if self._outage_since is not None:
            log.warning("Redis is back after %.1f s", time.monotonic() - self._outage_since)
            self._outage_since = None


def build_worker(settings: Settings, *, burst: bool = False, watch: Watch | None = None) -> Worker:
    _, redis_url = settings.require_backends()
    watch = watch or Watch(settings)
    return HeraldWorker(
        functions=[
            func(fanout_chunk, name=CHUNK_JOB, timeout=CHUNK_TIMEOUT, max_tries=ARQ_MAX_TRIES),
            # No result kept: nothing naming the erased user stays in Redis once the job is done.
            func(erase_user, name=ERASE_JOB, timeout=CHUNK_TIMEOUT, max_tries=ARQ_MAX_TRIES, keep_result=0),
        ],
        # One run of each at a time across every worker (arq's cron jobs have fixed ids per slot).
        # Their timeouts stay under CHUNK_TIMEOUT: arq's in-progress mark, and so the takeover of a
        # dead worker's chunks, lasts the longest timeout of any function plus 10 s.
        cron_jobs=[
            cron(retention_job, name="herald:retention", minute=set(range(7, 60, 10)), timeout=JOB_TIMEOUT),
            cron(reconcile_job, name="herald:reconcile", minute=set(range(2, 60, 10)), timeout=JOB_TIMEOUT),
            cron(trim_job, name="herald:trim", second={30}, timeout=JOB_TIMEOUT),
            # Beside the trim, in the same second: one moment a minute when periodic jobs start.
            cron(erasure_pass, name="herald:erasures", second={30}, timeout=JOB_TIMEOUT),
        ],
        queue_name=QUEUE,
        redis_pool=queue_pool(redis_url, settings.backend_timeout, watch.redis),
        on_startup=startup,
        on_shutdown=shutdown,
        ctx={"settings": settings, "watch": watch},
        burst=burst,
        poll_delay=0.05,
        max_jobs=4,
        job_timeout=CHUNK_TIMEOUT,
        keep_result=3600,
        # On SIGTERM: stop taking jobs, let running ones finish for up to 20 s, then cancel the rest,
        # which arq puts back on the queue.
        job_completion_wait=20,
        job_serializer=msgspec.msgpack.encode,
        job_deserializer=msgspec.msgpack.decode,
        log_results=False,
    )
