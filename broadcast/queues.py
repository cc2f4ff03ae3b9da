"""RQ queues: one per CAP severity, taken by workers most severe first.

A red warning issued while a yellow one is still being sent overtakes the yellow one's
queued jobs, because every worker drains ``alerts-extreme`` before looking further.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from rq import Queue

from broadcast.model import Severity

QUEUE_BY_SEVERITY: dict[Severity, str] = {
    Severity.EXTREME: "alerts-extreme",
    Severity.SEVERE: "alerts-severe",
    Severity.MODERATE: "alerts-moderate",
    Severity.MINOR: "alerts-minor",
    Severity.UNKNOWN: "alerts-unknown",
}
# Housekeeping (expiry, later reminders) never waits behind dissemination of a minor alert.
HOUSEKEEPING_QUEUE = "housekeeping"
WORKER_QUEUES: tuple[str, ...] = (
    QUEUE_BY_SEVERITY[Severity.EXTREME],
    QUEUE_BY_SEVERITY[Severity.SEVERE],
    HOUSEKEEPING_QUEUE,
    QUEUE_BY_SEVERITY[Severity.MODERATE],
    QUEUE_BY_SEVERITY[Severity.MINOR],
    QUEUE_BY_SEVERITY[Severity.UNKNOWN],
)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A job to enqueue in the same Redis transaction as the state change that calls for it."""

    func: str  # dotted path, so the API process need not import the job's dependencies
    args: tuple[Any, ...]
    queue: str
    job_id: str
    at: datetime | None = None  # run at this time (RQ's scheduler) instead of now
    kwargs: dict[str, Any] = field(default_factory=dict)


def enqueue(connection: redis.Redis, pipe: redis.client.Pipeline, request: JobRequest, timeout: int) -> None:
    """Add ``request`` to ``pipe``, which must already be in MULTI mode."""
    queue = Queue(request.queue, connection=connection)
    options = {"job_id": request.job_id, "job_timeout": timeout, "result_ttl": 7 * 86400,
               "failure_ttl": 30 * 86400, "pipeline": pipe}
    if request.at is None:
        queue.enqueue(request.func, *request.args, **request.kwargs, **options)
    else:
        queue.enqueue_at(request.at, request.func, *request.args, **request.kwargs, **options)
