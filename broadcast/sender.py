"""Sending one batch: rate-controlled, retried, deduplicated, and accounted for.

A batch job (one RQ job = one batch of up to ~1,000 recipients) runs one asyncio loop:

1. If the alert is no longer issued (cancelled, updated, expired), every recipient of the
   batch not yet final is recorded ``suppressed``: a cancel stops the fan-out within one batch.
2. Recipients already final for this alert and channel (the "done" bitmap or set) are
   skipped: a batch re-run after its worker died sends only what was not finished.
3. The rest are sent in chunks, each chunk after taking that many tokens from the
   channel's global token bucket (:mod:`broadcast.ratelimit`), so every worker on every
   machine together holds the configured rate.
4. Accepted -> ``sent``; permanent -> ``failed`` with the reason; suppressed (a partner's
   filters) -> ``suppressed``; throttled -> the bucket backs off and the recipients are
   retried (never counted as failed); transient -> retried with exponential backoff and
   jitter up to ``max_send_attempts``, then ``failed`` and a dead-letter entry.

The remaining window for a duplicate: a worker killed after the provider accepted a
message but before its outcome was recorded (one chunk in flight, milliseconds) sends that
chunk again when RQ re-runs the batch. Providers with an idempotency key (WeChat's
client_msg_id, the webhook delivery id) drop such repeats themselves.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field

import aiohttp
import redis
import redis.asyncio

from broadcast import accounting, keys
from broadcast.errors import TransientDeliveryError
from broadcast.fanout import Batch, subscriber_recipient
from broadcast.ratelimit import TokenBucket
from broadcast.records import AlertRecord, State
from broadcast.render import build_message
from broadcast.settings import Settings
from broadcast.signals import Signal
from channels.base import ChannelContext, DeliveryStatus, Message, Recipient, adapter_class, channel_option
from geotarget.registry import Targets

CHUNK = 100


@dataclass
class BatchReport:
    sent: int = 0
    failed: int = 0
    suppressed: int = 0
    skipped: int = 0  # already final before this run
    throttled: int = 0
    attempts: dict[str, int] = field(default_factory=dict)


def slot_of(recipient: Recipient) -> str:
    return recipient.attributes.get("row", recipient.id)


def materialize(batch: Batch, targets: Targets) -> list[Recipient]:
    if batch.rows:
        return [subscriber_recipient(targets, batch.channel, row) for row in batch.rows]
    return list(batch.recipients)


async def run_batch(batch: Batch, record: AlertRecord, *, signal: Signal | None, cap_xml: bytes,
                    targets: Targets, settings: Settings, client: redis.Redis) -> BatchReport:
    report = BatchReport()
    recipients = materialize(batch, targets)
    ttl = settings.dedupe_ttl_seconds
    finished = accounting.already_final(client, batch.alert_id, batch.channel, [slot_of(r) for r in recipients])
    todo = [r for r, done in zip(recipients, finished, strict=True) if not done]
    report.skipped = len(recipients) - len(todo)
    if record.state is not State.ISSUED:
        report.suppressed = accounting.finalize(client, batch.alert_id, batch.channel,
                                                [(slot_of(r), "suppressed") for r in todo], ttl)
        _log_dead(client, batch, f"alert {record.state.value} before this batch was sent", [])
        return report
    message = build_message(batch.channel, batch.alert_id, record.alert, signal=signal,
                            timezone=settings.timezone, cap_xml=cap_xml)
    rate = settings.rates.get(batch.channel, adapter_class(batch.channel).capabilities.rate_per_second)
    async with aiohttp.ClientSession() as http:
        # A pool that waits for a free connection rather than failing when receipts and sends peak together.
        async_redis = redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
            settings.effective_redis_url, max_connections=64, timeout=30))
        try:
            context = ChannelContext(settings, http, async_redis)
            account = channel_option(settings, batch.channel, "account", "default")
            bucket = TokenBucket(async_redis, f"{batch.channel}:{account}", rate, chunk=min(CHUNK, max(1, int(rate))))
            adapter = adapter_class(batch.channel)(context)
            try:
                await _send_all(adapter, bucket, message, deque(todo), batch, report, settings, client)
            finally:
                await adapter.aclose()
        finally:
            await async_redis.aclose()
    return report


async def _send_all(adapter, bucket: TokenBucket, message: Message, queue: deque[Recipient],  # type: ignore[no-untyped-def]
                    batch: Batch, report: BatchReport, settings: Settings, client: redis.Redis) -> None:
    ttl = settings.dedupe_ttl_seconds
    while queue:
        reason = ""
        # A whole chunk of tokens, then the chunk: few Redis round trips, and no message leaves
        # while the bucket is empty (the rest of the time the batch is waiting, not sending).
        if adapter.capabilities.single_request:  # one request for them all, one token
            want = len(queue)
            await bucket.take(1)
        else:
            want = min(bucket.chunk, len(queue))
            await bucket.take(want)
        part = [queue.popleft() for _ in range(want)]
        try:
            results = await adapter.send(message, part)
        except TransientDeliveryError as err:  # the whole channel is down: back off, try the part again
            results = None
            reason = err.message
        outcomes: list[tuple[str, str]] = []
        retry: list[Recipient] = []
        throttled = False
        failures = []
        if results is None:
            retry = part
        else:
            for recipient, result in zip(part, results, strict=True):
                if result.status is DeliveryStatus.ACCEPTED:
                    outcomes.append((slot_of(recipient), "sent"))
                elif result.status is DeliveryStatus.SUPPRESSED:
                    outcomes.append((slot_of(recipient), "suppressed"))
                elif result.status is DeliveryStatus.PERMANENT:
                    outcomes.append((slot_of(recipient), "failed"))
                    failures.append((recipient.id, result.error or "permanent"))
                elif result.status is DeliveryStatus.THROTTLED:
                    throttled = True
                    report.throttled += 1
                    queue.append(recipient)  # not an attempt: the provider asked us to wait
                else:
                    retry.append(recipient)
                    reason = result.error or "transient"
        for recipient in retry:
            attempts = report.attempts.get(recipient.id, 0) + 1
            report.attempts[recipient.id] = attempts
            if attempts >= settings.max_send_attempts:
                outcomes.append((slot_of(recipient), "failed"))
                failures.append((recipient.id, f"gave up after {attempts} attempts: {reason}"))
            else:
                queue.append(recipient)
        accounting.finalize(client, batch.alert_id, batch.channel, outcomes, ttl)
        report.sent += sum(1 for _, o in outcomes if o == "sent")
        report.failed += sum(1 for _, o in outcomes if o == "failed")
        report.suppressed += sum(1 for _, o in outcomes if o == "suppressed")
        if failures:
            _log_dead(client, batch, "permanent failures", failures)
        if throttled:
            await bucket.throttled()
        elif outcomes:
            await bucket.recovered(len(outcomes))
        if retry and queue:
            # Exponential backoff with jitter before the retried recipients come round again.
            worst = max(report.attempts.get(r.id, 1) for r in retry)
            await asyncio.sleep(min(settings.retry_backoff_max_seconds,
                                    settings.retry_backoff_seconds * 2 ** (worst - 1)) * (0.5 + random.random()))


def _log_dead(client: redis.Redis, batch: Batch, why: str, failures: list[tuple[str, str]]) -> None:
    """Append to the alert's dead-letter list (capped), so operators can see what did not go out and why."""
    if not failures and "before this batch" not in why:
        return
    entry = {"at": time.time(), "channel": batch.channel, "batch": batch.number, "why": why,
             "recipients": failures[:50], "count": len(failures)}
    with client.pipeline() as pipe:
        pipe.rpush(keys.dead_letters(batch.alert_id), json.dumps(entry, ensure_ascii=False))
        pipe.ltrim(keys.dead_letters(batch.alert_id), -1000, -1)
        pipe.expire(keys.dead_letters(batch.alert_id), 30 * 86400)
        pipe.execute()
