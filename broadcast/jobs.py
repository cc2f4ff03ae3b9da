"""RQ job functions. Each job re-reads the alert, so a job that runs late acts on its current state.

``disseminate`` is the entry point of the fan-out pipeline: one job per issued alert.
Targeting, planning and sending hang off it in later stages; today it records on the
alert that dissemination ran, and skips an alert that was closed before it ran.
"""

from __future__ import annotations

import dataclasses

from rq import get_current_job

from broadcast.alerts import Actor, AlertService
from broadcast.audit import AuditEntry
from broadcast.records import AlertRecord, Dissemination, State
from broadcast.settings import load_settings
from broadcast.signals import load_catalogue
from broadcast.store import Change
from broadcast.users import User
from geotarget.registry import RegistryStore, TargetCache

SYSTEM = Actor(User("system", frozenset()))


def _service() -> AlertService:
    job = get_current_job()
    if job is None:
        raise RuntimeError("broadcast.jobs functions run inside an RQ worker")
    settings = load_settings()
    targets = TargetCache(RegistryStore(job.connection, settings.data_dir))
    return AlertService(job.connection, settings, load_catalogue(), targets)


def disseminate(alert_id: str) -> str:
    """Disseminate one issued alert; returns the outcome recorded on the alert."""
    service = _service()
    job = get_current_job()
    assert job is not None
    started = service.now()

    def decide(record: AlertRecord, _: dict[str, AlertRecord]) -> Change[AlertRecord]:
        now = service.now()
        outcome = "ran" if record.state is State.ISSUED else f"skipped: alert is {record.state.value}"
        previous = record.dissemination
        done = Dissemination(
            job_id=job.id, queue=job.origin,
            enqueued_at=previous.enqueued_at if previous else (job.enqueued_at or started),
            started_at=started, finished_at=now, worker=job.worker_name, outcome=outcome,
        )
        updated = dataclasses.replace(record, dissemination=done, version=record.version + 1)
        entry = AuditEntry(at=now, actor="system", action="disseminate", alert_id=record.id,
                           from_state=record.state.value, to_state=record.state.value,
                           detail=f"{outcome} (job {job.id} on {job.worker_name or 'unknown worker'})")
        return Change(result=updated, records=[updated], audit=[entry])

    record = service.act(SYSTEM, alert_id, "disseminate", decide)
    assert record.dissemination is not None
    return record.dissemination.outcome


def expire(alert_id: str) -> str:
    """Scheduled at issue for the alert's expiry time; a no-op if it was updated or cancelled first."""
    return _service().expire(alert_id).state.value
