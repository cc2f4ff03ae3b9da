"""Prometheus metrics of the fan-out, in the text exposition format 0.0.4.

:func:`render_metrics` reads everything afresh from Redis on each scrape; it keeps no state
and writes nothing (RQ registries are counted without RQ's cleanup, which would move
abandoned jobs and delete expired entries as a side effect of being looked at).

Families (all gauges: each is a snapshot read from Redis, and some of them go down):

- ``broadcast_recipients{alert,channel,state}``: the counters of :mod:`broadcast.accounting`,
  state one of targeted, queued, sent, failed, suppressed, pending, delivered, undelivered;
- ``broadcast_send_rate{alert,channel}``: messages accepted per second over the last
  :data:`broadcast.accounting.RATE_WINDOW_SECONDS` seconds;
- ``broadcast_eta_seconds{alert,channel}``: seconds until nothing is pending at that rate;
  absent while it is unknown (recipients pending, nothing sent lately);
- ``broadcast_queue_jobs{queue}``: jobs waiting in each RQ queue of :data:`broadcast.queues.WORKER_QUEUES`;
- ``broadcast_queue_started_jobs{queue}``, ``broadcast_queue_failed_jobs{queue}``,
  ``broadcast_queue_scheduled_jobs{queue}``: the sizes of the queue's RQ registries;
- ``broadcast_rate_limit_current{account}`` and ``broadcast_rate_limit_cap{account}``: the rate in
  force (tokens/s) of each provider account that is throttled below its cap, read from its AIMD hash
  (:func:`broadcast.keys.rate_aimd`). An account at its cap has no hash, so no sample.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import redis
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from broadcast import accounting, keys
from broadcast.queues import WORKER_QUEUES

# What an HTTP handler should answer with.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The states of broadcast_recipients, in output order.
RECIPIENT_STATES = ("targeted", "queued", "sent", "failed", "suppressed", "pending", "delivered", "undelivered")


@dataclass
class _Family:
    name: str
    help: str
    samples: list[tuple[dict[str, str], float | int]] = field(default_factory=list)
    type: str = "gauge"

    def add(self, value: float | int, **labels: str) -> None:
        self.samples.append((labels, value))

    def lines(self) -> Iterator[str]:
        yield f"# HELP {self.name} {escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.type}"
        for labels, value in self.samples:
            yield f"{self.name}{format_labels(labels)} {format_value(value)}"


def escape_label_value(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and line feed escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text escapes only backslash and line feed."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{escape_label_value(str(value))}"' for name, value in labels.items()) + "}"


def format_value(value: float | int) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def recent_alert_ids(client: redis.Redis, hours: float = 24, *, now: float | None = None) -> list[str]:
    """Ids of the alerts created in the last ``hours`` hours (keys.ALERTS_BY_CREATION), newest first."""
    if not (hours > 0):
        raise ValueError(f"hours must be above 0, not {hours!r}")
    cutoff = (time.time() if now is None else now) - hours * 3600
    return [_text(v) for v in client.zrevrangebyscore(keys.ALERTS_BY_CREATION, "+inf", cutoff)]


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


def _aimd_key_parts() -> tuple[str, str]:
    """The text before and after the account name in keys.rate_aimd(account)."""
    marker = "\x00"
    prefix, suffix = keys.rate_aimd(marker).split(marker)
    return prefix, suffix


def throttled_accounts(client: redis.Redis) -> dict[str, tuple[float, float | None]]:
    """account -> (rate in force, cap) of every account with an AIMD hash (SCAN: never blocks Redis)."""
    prefix, suffix = _aimd_key_parts()
    pattern = _glob_escape(prefix) + "*" + _glob_escape(suffix)
    names = sorted({_text(k) for k in client.scan_iter(match=pattern, count=500)})
    names = [k for k in names if k.startswith(prefix) and k.endswith(suffix) and len(k) > len(prefix) + len(suffix)]
    if not names:
        return {}
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hmget(name, ["current", "cap"])
        rows = pipe.execute()
    result: dict[str, tuple[float, float | None]] = {}
    for name, (current, cap) in zip(names, rows, strict=True):
        if current is None:  # expired or deleted (recovered) since the scan
            continue
        rate, ceiling = float(current), None if cap is None else float(cap)
        if ceiling is not None:
            rate = min(rate, ceiling)  # what the GCRA script uses
        result[name[len(prefix):len(name) - len(suffix)]] = (rate, ceiling)
    return result


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def render_metrics(client: redis.Redis, *, alert_ids: Iterable[str],
                   queues: Sequence[str] = WORKER_QUEUES) -> str:
    """Every metric of the fan-out, as Prometheus text exposition format 0.0.4.

    Args:
        client: A (synchronous) Redis client; call it from a thread in async code.
        alert_ids: The alerts to report on (see :func:`recent_alert_ids`); repeats are ignored.
            An alert without progress yet has no samples.
        queues: The RQ queues to report on.

    Raises:
        redis.RedisError: Redis could not be asked.
    """
    recipients = _Family("broadcast_recipients", "Recipients of an alert on a channel, by state "
                         "(pending = targeted - sent - failed - suppressed).")
    rate = _Family("broadcast_send_rate", "Messages of an alert accepted by the channel's provider per second, "
                   f"over the last {accounting.RATE_WINDOW_SECONDS} seconds.")
    eta = _Family("broadcast_eta_seconds", "Seconds until no recipient of the alert is pending on the channel, "
                  "at the current send rate; absent when unknown.")
    queued = _Family("broadcast_queue_jobs", "Jobs waiting in an RQ queue.")
    started = _Family("broadcast_queue_started_jobs", "Jobs of an RQ queue being executed (its started registry).")
    failed = _Family("broadcast_queue_failed_jobs", "Jobs of an RQ queue that failed (its failed registry).")
    scheduled = _Family("broadcast_queue_scheduled_jobs", "Jobs of an RQ queue scheduled for later.")
    current = _Family("broadcast_rate_limit_current", "Rate in force of a provider account throttled below its "
                      "cap by AIMD, tokens per second; absent when at the cap.")
    cap = _Family("broadcast_rate_limit_cap", "Configured rate (cap) of a provider account throttled by AIMD, "
                  "tokens per second; absent when at the cap.")

    for alert_id in _unique(alert_ids):
        for progress in accounting.read(client, alert_id):
            labels = {"alert": alert_id, "channel": progress.channel}
            values = {**progress.counts, "pending": progress.pending}
            for state in RECIPIENT_STATES:
                recipients.add(values.get(state, 0), **labels, state=state)
            rate.add(float(progress.rate), **labels)
            if progress.eta_seconds is not None:
                eta.add(float(progress.eta_seconds), **labels)

    for name in queues:
        queue = Queue(name, connection=client)
        queued.add(queue.count, queue=name)
        for family, registry_class in ((started, StartedJobRegistry), (failed, FailedJobRegistry),
                                       (scheduled, ScheduledJobRegistry)):
            registry = registry_class(name, connection=client)
            family.add(registry.get_job_count(cleanup=False), queue=name)

    for account, (in_force, ceiling) in throttled_accounts(client).items():
        current.add(in_force, account=account)
        if ceiling is not None:
            cap.add(ceiling, account=account)

    families = (recipients, rate, eta, queued, started, failed, scheduled, current, cap)
    return "\n".join(line for family in families for line in family.lines()) + "\n"
