"""Running RQ workers on our queues, most severe first.

Workers are stateless: start as many as the machine has cores, on as many machines as
needed, all pointing at the one Redis primary. The scheduler (for expiries and, later,
reminders) runs inside workers started with ``with_scheduler``; RQ elects one at a time.
"""

from __future__ import annotations

import gc
import logging

import redis
from rq import SimpleWorker, Worker

from broadcast.queues import WORKER_QUEUES
from broadcast.settings import Settings

log = logging.getLogger(__name__)


def warm_up(connection: redis.Redis, settings: Settings) -> None:
    """Load the signal catalogue and the current registries before the first job, not during it.

    The first SMS of a red warning should leave within a second of approval; reading the
    facility registry alone takes about a second, so it happens here, once per process.
    """
    import broadcast.jobs  # noqa: F401  (the job functions and every module they use: ~0.2 s of imports)
    from broadcast import sender
    from broadcast.signals import load_catalogue
    from channels.base import registered
    from geotarget.registry import RegistryStore, TargetCache

    load_catalogue()
    try:
        TargetCache(RegistryStore(connection, settings.data_dir)).get()
    except (redis.RedisError, OSError) as exc:
        log.warning("could not pre-load the registries (%s); the first job will", exc)
    # The sender's loop, HTTP session (its TLS context alone takes ~0.1 s) and adapters.
    runtime = sender.runtime(settings)

    async def open_adapters() -> None:
        for channel in registered():
            try:
                await runtime.pool.adapter(channel)
            except Exception as exc:  # a misconfigured channel fails its own batches, with the reason
                log.warning("channel %s could not be prepared: %s", channel, exc)

    runtime.run(open_adapters())
    # What is loaded now (modules, templates, the gazetteer) lives as long as the process: keep it out
    # of the collector's full passes, which otherwise stall the sender's loop for tens of ms.
    gc.freeze()


def run_worker(settings: Settings, *, name: str | None = None, burst: bool = False, fork: bool = False,
               with_scheduler: bool = True, max_jobs: int | None = None) -> bool:
    """Work the alert queues until stopped (or, with ``burst``, until they are empty).

    Jobs are coarse (one alert, later one batch of recipients), so by default a job runs in
    the worker process itself (RQ's SimpleWorker) rather than paying for a fork per job;
    ``fork`` isolates each job in a child process instead.

    Returns:
        True if the worker processed any job.
    """
    connection = redis.Redis.from_url(settings.effective_redis_url)
    warm_up(connection, settings)
    worker_class = Worker if fork else SimpleWorker
    worker = worker_class(list(WORKER_QUEUES), name=name, connection=connection)
    return worker.work(burst=burst, with_scheduler=with_scheduler, logging_level="INFO", max_jobs=max_jobs)
