"""RQ job functions. Each job re-reads the alert, so a job that runs late acts on its current state.

``disseminate`` (one per issued alert, on its severity queue) records that dissemination
started and starts the fan-out (:mod:`broadcast.fanout`); ``plan_channel`` enqueues the next
batches of one channel; ``send_batch`` sends one batch (:mod:`broadcast.sender`);
``expire`` is scheduled at each alert's expiry.
"""

from __future__ import annotations

import dataclasses
import json

import redis
from rq import get_current_job

from broadcast import accounting, audit, cap, fanout, keys, linkage_jobs, sender, workflow
from broadcast.alerts import Actor, AlertService
from broadcast.audit import AuditEntry
from broadcast.records import AlertRecord, Dissemination, State
from broadcast.settings import load_settings
from broadcast.signals import load_catalogue
from broadcast.store import Change
from broadcast.users import User
from channels.webhook import Partner
from geotarget.registry import RegistryStore, TargetCache, Targets

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
    if record.state is State.ISSUED:
        targets = service.targets.get()
        # Officers go first: their tasks and notices are queued before the public fan-out.
        linkage_jobs.on_issue(job.connection, record, targets.gazetteer, service.settings)
        partners = webhook_partners(job.connection)
        targeted = fanout.start(job.connection, record, targets, service.settings, partners)
        # The first look-ahead of every channel is planned here, so the first batches are queued
        # before this job ends (the planning jobs start() queued then find nothing left to do).
        for channel in targeted:
            fanout.plan(job.connection, record, channel, targets, service.settings, partners)
        audit.append(job.connection, AuditEntry(
            at=service.now(), actor="system", action="fan-out", alert_id=record.id,
            detail=", ".join(f"{channel} {count}" for channel, count in targeted.items())))
    return record.dissemination.outcome


def webhook_partners(client: redis.Redis) -> list[Partner]:
    return sorted((Partner.from_json(raw) for raw in client.hvals(keys.WEBHOOK_PARTNERS)), key=lambda p: p.id)


def _pinned(service: AlertService, client: redis.Redis, alert_id: str) -> Targets:
    raw = client.hget(keys.fanout(alert_id), "versions")
    return service.targets.at(json.loads(raw)) if raw else service.targets.get()


def plan_channel(alert_id: str, channel: str) -> int:
    """Enqueue the next batches of one channel of an alert (up to the look-ahead)."""
    service = _service()
    client = service.store.redis
    record = service.store.get(alert_id)
    if record.state is not State.ISSUED:
        return 0
    return fanout.plan(client, record, channel, _pinned(service, client, alert_id), service.settings,
                       webhook_partners(client))


def send_batch(batch_json: str) -> dict[str, int]:
    """Send one batch; returns its report (sent, failed, suppressed, skipped, throttled)."""
    service = _service()
    client = service.store.redis
    batch = fanout.Batch.from_json(batch_json)
    record = service.store.get(batch.alert_id)
    if workflow.expire(record, service.now()) is not None:
        record = service.expire(batch.alert_id)
    targets = _pinned(service, client, batch.alert_id)
    try:
        runtime = sender.runtime(service.settings)
        report = runtime.run(sender.run_batch(batch, record, signal=service.signal_of(record),
                                              cap_xml=cap.to_xml(record.alert), targets=targets,
                                              settings=service.settings, client=client, pool=runtime.pool))
    finally:
        # Whatever happened, this batch is no longer waiting; a re-run (RQ retry) counts it again.
        accounting.add(client, batch.alert_id, batch.channel, queued=-batch.size)
    fanout.replan(client, batch.alert_id, batch.channel, service.settings)
    return {"sent": report.sent, "failed": report.failed, "suppressed": report.suppressed,
            "skipped": report.skipped, "throttled": report.throttled}


def expire(alert_id: str) -> str:
    """Scheduled at issue for the alert's expiry time; a no-op if it was updated or cancelled first."""
    service = _service()
    record = service.expire(alert_id)
    if record.state is State.EXPIRED:
        linkage_jobs.close_tasks(service.store.redis, alert_id, "expired")
    return record.state.value
