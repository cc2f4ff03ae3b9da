"""Alert records in Redis, and the one way to change them: an optimistic transaction.

:meth:`AlertStore.transact` WATCHes the records it reads, lets a pure decision function
say what to write (records, audit entries, RQ jobs), and writes all of it in one
MULTI/EXEC, retrying if another process changed a record meanwhile. So an approval,
its audit entry and its dissemination job are stored together or not at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis

from broadcast import audit, keys
from broadcast.audit import AuditEntry
from broadcast.errors import BroadcastError, NotFound
from broadcast.model import Alert
from broadcast.queues import JobRequest, enqueue
from broadcast.records import AlertRecord, AlertStatus

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Change(Generic[T]):
    """What a decision wants written. ``error`` is raised after the rest is committed."""

    result: T | None = None
    records: Sequence[AlertRecord] = ()
    audit: Sequence[AuditEntry] = ()
    jobs: Sequence[JobRequest] = ()
    error: BroadcastError | None = None


def cap_key(alert: Alert) -> str:
    return f"{alert.sender}|{alert.identifier}|{alert.sent.isoformat()}"


class AlertStore:
    def __init__(self, client: redis.Redis, job_timeout: int = 600) -> None:
        self.redis = client
        self._job_timeout = job_timeout

    def get(self, alert_id: str) -> AlertRecord:
        raw = self.redis.get(keys.alert(alert_id))
        if raw is None:
            raise NotFound(f"no alert {alert_id}", field="id")
        return AlertRecord.from_json(raw)

    def status(self, alert_id: str) -> AlertStatus:
        """The alert's state, expiry, successor and version, without reading the whole record.

        Raises:
            NotFound: no such alert.
        """
        found = AlertStatus.from_fields(alert_id, self.redis.hmget(keys.alert_status(alert_id), AlertStatus.FIELDS))
        return found if found is not None else self.status_of_record(alert_id)

    def status_of_record(self, alert_id: str) -> AlertStatus:
        """The status from the record itself, for a record stored before statuses were kept; stores it.

        Raises:
            NotFound: no such alert.
        """
        status = AlertStatus.of(self.get(alert_id))
        # Field by field only where absent: a writer that stored a newer record meanwhile wrote a whole
        # newer status in its transaction, and this must not overwrite it.
        with self.redis.pipeline(transaction=True) as pipe:
            for name, value in status.as_fields().items():
                pipe.hsetnx(keys.alert_status(alert_id), name, value)
            pipe.execute()
        return status

    def list(self, *, limit: int = 50, offset: int = 0) -> list[AlertRecord]:
        ids = self.redis.zrevrange(keys.ALERTS_BY_CREATION, offset, offset + limit - 1)
        raws = self.redis.mget([keys.alert(i.decode()) for i in ids]) if ids else []
        return [AlertRecord.from_json(raw) for raw in raws if raw is not None]

    def count(self) -> int:
        return int(self.redis.zcard(keys.ALERTS_BY_CREATION))

    def find_by_cap(self, alert: Alert) -> str | None:
        found = self.redis.hget(keys.ALERTS_BY_CAP_REFERENCE, cap_key(alert))
        return found.decode() if found else None

    def find_by_reference(self, sender: str, identifier: str, sent_iso: str) -> str | None:
        found = self.redis.hget(keys.ALERTS_BY_CAP_REFERENCE, f"{sender}|{identifier}|{sent_iso}")
        return found.decode() if found else None

    def transact(self, alert_ids: Sequence[str], decide: Callable[[dict[str, AlertRecord]], Change[T]]) -> T | None:
        """Read ``alert_ids`` under WATCH, call ``decide`` with them, write what it returns atomically.

        Raises:
            NotFound: one of ``alert_ids`` does not exist.
            BroadcastError: the ``error`` of the returned Change, after its writes are committed.
        """
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    watched = [keys.alert(i) for i in alert_ids]
                    if watched:
                        pipe.watch(*watched)
                    records = {}
                    for alert_id in alert_ids:
                        raw = pipe.get(keys.alert(alert_id))
                        if raw is None:
                            raise NotFound(f"no alert {alert_id}", field="id")
                        records[alert_id] = AlertRecord.from_json(raw)
                    change = decide(records)
                    pipe.multi()
                    self._write(pipe, change)
                    pipe.execute()
                    break
                except redis.WatchError:
                    continue
        if change.error is not None:
            raise change.error
        return change.result

    def _write(self, pipe: redis.client.Pipeline, change: Change[T]) -> None:
        for record in change.records:
            pipe.set(keys.alert(record.id), record.to_json())
            pipe.hset(keys.alert_status(record.id), mapping=AlertStatus.of(record).as_fields())
            if record.version == 1:
                pipe.zadd(keys.ALERTS_BY_CREATION, {record.id: record.created.at.timestamp()})
            pipe.hset(keys.ALERTS_BY_CAP_REFERENCE, cap_key(record.alert), record.id)
        for entry in change.audit:
            audit.append(pipe, entry)
        for job in change.jobs:
            enqueue(self.redis, pipe, job, self._job_timeout)
