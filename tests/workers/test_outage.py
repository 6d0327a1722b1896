"""The worker through a Redis outage: nothing it holds is lost for good."""

import pytest
import redis.exceptions

from service.process import Watch
from service.settings import Settings
from workers.main import build_worker


async def test_a_redis_error_while_claiming_a_job_gives_its_slot_back(settings: Settings, clean: None) -> None:
    """arq takes a job slot before claiming the job in Redis; if Redis fails right then (failed fast
    in an outage), the slot must come back, or after `max_jobs` such errors no job ever runs again."""
    watch = Watch(settings)
    worker = build_worker(settings, watch=watch)
    free = worker.sem._value
    watch.redis.up = False  # what the probes decide in an outage (they are not running here)
    try:
        for _ in range(worker.max_jobs + 2):
            with pytest.raises(redis.exceptions.ConnectionError):
                await worker.start_jobs([b"some-job"])
        assert worker.job_counter == 0
        assert worker.sem._value == free  # every slot free again
    finally:
        watch.redis.up = True
        await worker.pool.aclose()
