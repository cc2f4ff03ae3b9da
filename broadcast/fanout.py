"""Fan-out: from an issued alert to RQ batch jobs, streamed with a bounded look-ahead.

``start`` (run by the dissemination job at approval) records each channel's target count
and enqueues one planning job per channel. ``plan_channel`` cuts the channel's recipients
into batches (``batch_size``, at most the adapter's ``max_batch``) and enqueues send jobs
(:func:`broadcast.sender.send_batch`) on the alert's severity queue, but only as many as
``lookahead_seconds`` of sending at the channel's rate: 17.8 million recipients never sit
in Redis at once. Each finished batch asks for more planning when the backlog falls under
half of that (:func:`replan`), so the stream continues until every recipient is planned.

Batches of subscriber channels carry registry rows (the subscriber snapshot is pinned
for the alert at ``start``); other channels carry their recipients. A Cancel goes to the
recipients the cancelled alert reached (its "reached" bitmap or set), on every channel.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis
import shapely
from rq import Queue
from rq.exceptions import DuplicateJobError
from shapely.geometry.base import BaseGeometry

from broadcast import accounting, keys
from broadcast.model import SEVERITY_RANK, MsgType, Severity
from broadcast.queues import QUEUE_BY_SEVERITY
from broadcast.recipients import SUBSCRIBER_CHANNELS, recipients_for
from broadcast.records import AlertRecord
from broadcast.settings import Settings
from channels.base import Recipient, adapter_class, registered
from geotarget.areas import area_shape
from geotarget.registry import Targets

BATCH_JOB = "broadcast.jobs.send_batch"
PLAN_JOB = "broadcast.jobs.plan_channel"


@dataclass(frozen=True, slots=True)
class Batch:
    """What one send job carries: registry rows, or the recipients themselves."""

    alert_id: str
    channel: str
    number: int
    rows: tuple[int, ...] = ()
    recipients: tuple[Recipient, ...] = ()

    @property
    def size(self) -> int:
        return len(self.rows) or len(self.recipients)

    def to_json(self) -> str:
        return json.dumps({"alert_id": self.alert_id, "channel": self.channel, "number": self.number,
                           "rows": list(self.rows),
                           "recipients": [[r.id, r.address, r.language, dict(r.attributes)] for r in self.recipients]})

    @classmethod
    def from_json(cls, raw: str) -> Batch:
        doc = json.loads(raw)
        return cls(doc["alert_id"], doc["channel"], doc["number"], tuple(doc["rows"]),
                   tuple(Recipient(i, a, lang, attrs) for i, a, lang, attrs in doc["recipients"]))


def areas_by_severity(record: AlertRecord, targets: Targets) -> list[BaseGeometry]:
    """The alert's area per severity of its info blocks, most severe first (one entry when they agree).

    A CAP alert may carry blocks of different severity (an Extreme core inside a Severe ring):
    the public fan-out reaches the most severe area first.
    """
    city = targets.gazetteer.city.geometry
    by_severity: dict[Severity, list[BaseGeometry]] = {}
    for info in record.alert.infos:
        for a in info.areas:
            shape = area_shape(a, targets.gazetteer)
            if shape is not None:
                by_severity.setdefault(info.severity, []).append(shape.intersection(city))
    ordered = sorted(by_severity, key=SEVERITY_RANK.__getitem__, reverse=True)
    return [shapely.union_all(by_severity[s]) for s in ordered] or [shapely.Polygon()]


def selected_channels(record: AlertRecord) -> list[str]:
    chosen = (record.composition or {}).get("channels")
    return [c for c in registered() if chosen is None or c in chosen]


def batch_size(channel: str, settings: Settings) -> int:
    capabilities = adapter_class(channel).capabilities
    if capabilities.single_request:
        return capabilities.max_batch
    return max(1, min(settings.batch_size, capabilities.max_batch))


def _subscriber_rows(channel: str, areas: list[BaseGeometry], targets: Targets) -> np.ndarray:
    """Registry rows reachable on ``channel`` in ``areas``, the first area's first, each row once."""
    snapshot = targets.subscribers
    if snapshot is None:
        return np.empty(0, dtype=np.int64)
    bit = int(SUBSCRIBER_CHANNELS[channel][0])
    parts = []
    for area in areas:
        rows = snapshot.select(area)
        parts.append(rows[(np.asarray(snapshot.channels[rows]) & bit) != 0])
    if len(parts) == 1:
        return parts[0]
    joined = np.concatenate(parts)
    _, first = np.unique(joined, return_index=True)
    return joined[np.sort(first)]  # keeps the order of first appearance: the most severe area leads


def _reached_rows(client: redis.Redis, original_id: str, channel: str) -> np.ndarray:
    raw = client.get(keys.reached(original_id, channel)) or b""
    return np.flatnonzero(np.unpackbits(np.frombuffer(raw, dtype=np.uint8)))


def targets_of(client: redis.Redis, record: AlertRecord, channel: str, targets: Targets,
               partners: list[Any]) -> tuple[np.ndarray | None, list[Recipient]]:
    """Everyone the alert goes to on ``channel``: (subscriber rows, None-for-others) or (None, recipients).

    A Cancel goes to whoever the alert it cancels reached.
    """
    areas = areas_by_severity(record, targets)
    area = shapely.union_all(areas)
    cancel_of = record.replaces if record.alert.msg_type is MsgType.CANCEL else None
    if channel in SUBSCRIBER_CHANNELS:
        if cancel_of is not None:
            return _reached_rows(client, cancel_of, channel), []
        return _subscriber_rows(channel, areas, targets), []
    recipients = list(recipients_for(channel, area, targets, partners=partners))
    if channel == "app_push":  # topics ride along with the device rows
        recipients = [r for r in recipients if r.attributes.get("kind") == "topic"]
    if cancel_of is not None:
        reached = {m.decode() for m in client.smembers(keys.reached(cancel_of, channel))}
        recipients = [r for r in recipients if r.id in reached]
    return None, recipients


def start(client: redis.Redis, record: AlertRecord, targets: Targets, settings: Settings,
          partners: list[Any]) -> dict[str, int]:
    """Record each channel's targets and enqueue its first planning job; returns channel -> targeted."""
    queue = Queue(QUEUE_BY_SEVERITY[record.alert.severity], connection=client)
    targeted = {}
    for channel in selected_channels(record):
        rows, recipients = targets_of(client, record, channel, targets, partners)
        count = (len(rows) if rows is not None else 0) + len(recipients)
        targeted[channel] = count
        with client.pipeline() as pipe:
            pipe.hsetnx(keys.progress(record.id), f"{channel}:targeted", count)
            pipe.hsetnx(keys.fanout(record.id), f"{channel}:cursor", 0)
            pipe.hsetnx(keys.fanout(record.id), f"{channel}:total", count)
            pipe.execute()
        _enqueue_planning(queue, record.id, channel)
    client.hset(keys.fanout(record.id), mapping={"versions": json.dumps(targets.versions),
                                                 "severity_queue": queue.name})
    return targeted


def _enqueue_planning(queue: Queue, alert_id: str, channel: str) -> None:
    with contextlib.suppress(DuplicateJobError):  # a planning job for this channel is queued already
        queue.enqueue(PLAN_JOB, alert_id, channel, job_id=f"plan-{alert_id}-{channel}", unique=True,
                      at_front=True, result_ttl=0, failure_ttl=86400)


def plan(client: redis.Redis, record: AlertRecord, channel: str, targets: Targets, settings: Settings,
         partners: list[Any]) -> int:
    """Enqueue the next batches of ``channel`` up to the look-ahead; returns how many recipients were queued."""
    lock = client.lock(keys.fanout_plan_lock(record.id, channel), timeout=60, blocking_timeout=0)
    if not lock.acquire(blocking=False):
        return 0  # another worker is planning this channel right now
    try:
        state = {k.decode(): v.decode() for k, v in client.hgetall(keys.fanout(record.id)).items()}
        cursor, total = int(state.get(f"{channel}:cursor", 0)), int(state.get(f"{channel}:total", 0))
        if cursor >= total:
            return 0
        rate = settings.rates.get(channel, adapter_class(channel).capabilities.rate_per_second)
        counts = {c.channel: c.counts for c in accounting.read(client, record.id)}
        backlog = counts.get(channel, {}).get("queued", 0)
        room = max(0, int(rate * settings.lookahead_seconds) - backlog)
        size = batch_size(channel, settings)
        if room == 0:
            return 0
        rows, recipients = targets_of(client, record, channel, targets, partners)
        queue = Queue(state.get("severity_queue") or QUEUE_BY_SEVERITY[record.alert.severity], connection=client)
        planned = 0
        number = cursor // size
        while cursor < total and planned < room:
            end = min(cursor + size, total)
            if rows is not None:
                batch = Batch(record.id, channel, number, rows=tuple(int(r) for r in rows[cursor:end]))
            else:
                batch = Batch(record.id, channel, number, recipients=tuple(recipients[cursor:end]))
            with client.pipeline() as pipe:
                pipe.multi()
                queue.enqueue(BATCH_JOB, batch.to_json(), job_id=f"send-{record.id}-{channel}-{number}",
                              job_timeout=settings.batch_timeout_seconds, result_ttl=3600, failure_ttl=7 * 86400,
                              retry=_retry(), pipeline=pipe)
                accounting.add(pipe, record.id, channel, queued=end - cursor)
                pipe.hset(keys.fanout(record.id), f"{channel}:cursor", end)
                pipe.execute()
            planned += end - cursor
            cursor = end
            number += 1
        return planned
    finally:
        lock.release()


def replan(client: redis.Redis, alert_id: str, channel: str, settings: Settings) -> None:
    """After a batch: ask for more planning if the channel's backlog fell under half the look-ahead."""
    state = client.hmget(keys.fanout(alert_id), [f"{channel}:cursor", f"{channel}:total", "severity_queue"])
    cursor, total = int(state[0] or 0), int(state[1] or 0)
    if cursor >= total:
        return
    rate = settings.rates.get(channel, adapter_class(channel).capabilities.rate_per_second)
    queued = int(client.hget(keys.progress(alert_id), f"{channel}:queued") or 0)
    if queued < rate * settings.lookahead_seconds / 2:
        _enqueue_planning(Queue((state[2] or b"alerts-unknown").decode(), connection=client), alert_id, channel)


def _retry():  # type: ignore[no-untyped-def]
    from rq import Retry

    # A batch whose worker died is re-run by RQ (its done bitmap makes the re-run skip what was sent).
    return Retry(max=3, interval=[0, 5, 15])


def subscriber_recipient(targets: Targets, channel: str, row: int) -> Recipient:
    """The registry row as a recipient of ``channel`` (slot = row)."""
    snapshot = targets.subscribers
    assert snapshot is not None
    column = SUBSCRIBER_CHANNELS[channel][1]
    address = f"+{int(snapshot.phones[row])}" if column is None else bytes(getattr(snapshot, column)[row]).decode()
    language = snapshot.languages[int(snapshot.language[row])]
    return Recipient(str(int(snapshot.ids[row])), address, language, {"row": str(row)})

