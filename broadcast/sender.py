"""Sending one batch: rate-controlled, retried, deduplicated, and accounted for.

A batch job (one RQ job = one batch of up to ~1,000 recipients) runs one asyncio loop:

1. If the alert is no longer issued (cancelled, updated, expired), every recipient of the
   batch not yet final is recorded ``suppressed``: a cancel stops the fan-out within one batch.
2. Recipients already final for this alert and channel (the "done" bitmap or set) are
   skipped: a batch re-run after its worker died sends only what was not finished.
3. The rest are sent in chunks, each chunk at the moment booked for it in the
   channel's global token bucket (:mod:`broadcast.ratelimit`), so every worker on every
   machine together holds the configured rate; then through the account's emission window,
   which bounds what is written in any one second however late a worker woke for its moment.
4. Accepted -> ``sent``; permanent -> ``failed`` with the reason; suppressed (a partner's
   filters) -> ``suppressed``; throttled -> the bucket backs off and the recipients are
   retried (never counted as failed); transient -> retried with exponential backoff and
   jitter up to ``max_send_attempts``, then ``failed`` and a dead-letter entry.

The remaining window for a duplicate: a worker killed after the provider accepted a
message but before its outcome was recorded (at most ``sender_lanes`` chunks in flight,
milliseconds) sends those chunks again when RQ re-runs the batch. Providers with an idempotency key (WeChat's
client_msg_id, the webhook delivery id) drop such repeats themselves.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import logging
import math
import os
import random
import threading
import time
from collections import deque
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import redis
import redis.asyncio
import uvloop

from broadcast import accounting, keys
from broadcast.errors import TransientDeliveryError
from broadcast.fanout import Batch, subscriber_recipient
from broadcast.ratelimit import EmissionWindow, TokenBucket
from broadcast.records import AlertRecord, State
from broadcast.redis_pipelined import PipelinedRedis
from broadcast.render import build_message
from broadcast.settings import Settings
from broadcast.signals import Signal
from channels.base import ChannelContext, DeliveryStatus, Message, Recipient, adapter_class, channel_option
from geotarget.registry import Targets

T = TypeVar("T")

log = logging.getLogger(__name__)


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


class ChannelPool:
    """Open adapters (one per channel) and token buckets (one per account), with the HTTP session
    and async Redis pool they share; reused from batch to batch on one event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._context: ChannelContext | None = None
        self._adapters: dict[str, Any] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._windows: dict[str, EmissionWindow] = {}
        self._pipelined: PipelinedRedis | None = None  # the emission windows' connection

    async def context(self) -> ChannelContext:
        if self._context is None:
            http = aiohttp.ClientSession()
            # A pool that waits for a free connection rather than failing when receipts and sends peak together.
            async_redis = redis.asyncio.Redis(connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
                self.settings.effective_redis_url, max_connections=64, timeout=30))
            self._context = ChannelContext(self.settings, http, async_redis)
        return self._context

    async def adapter(self, channel: str) -> Any:
        if channel not in self._adapters:
            self._adapters[channel] = adapter_class(channel)(await self.context())
        return self._adapters[channel]

    async def drop_adapter(self, channel: str) -> None:
        """Close and forget an adapter that failed unexpectedly; the next batch opens a fresh one."""
        adapter = self._adapters.pop(channel, None)
        if adapter is not None:
            with contextlib.suppress(Exception):
                await adapter.aclose()

    async def bucket(self, channel: str) -> TokenBucket:
        if channel not in self._buckets:
            rate = self.settings.rates.get(channel, adapter_class(channel).capabilities.rate_per_second)
            account = channel_option(self.settings, channel, "account", "default")
            context = await self.context()
            assert context.redis is not None
            chunk = min(self.settings.sender_chunk, max(1, int(rate)))
            self._buckets[channel] = TokenBucket(
                context.redis, f"{channel}:{account}", rate, chunk=chunk,
                burst=max(chunk, math.floor(rate * self.settings.sender_catch_up_seconds)))
        return self._buckets[channel]

    async def window(self, channel: str) -> EmissionWindow:
        """The account's emission window: at most its rate + one chunk written in any second."""
        if channel not in self._windows:
            bucket = await self.bucket(channel)
            if self._pipelined is None:
                self._pipelined = PipelinedRedis(self.settings.effective_redis_url)
            self._windows[channel] = EmissionWindow(self._pipelined, bucket.account,
                                                    max(1, math.floor(bucket.rate)) + bucket.chunk)
        return self._windows[channel]

    async def aclose(self) -> None:
        for channel in list(self._adapters):
            await self.drop_adapter(channel)
        if self._pipelined is not None:
            await self._pipelined.close()
            self._pipelined = None
            self._windows.clear()
        if self._context is not None:
            await self._context.http.close()
            if self._context.redis is not None:
                await self._context.redis.aclose()
            self._context = None


class SenderRuntime:
    """What a worker process keeps from one batch to the next: an event loop in a thread of its
    own, and on it a :class:`ChannelPool`.

    So an SMPP session stays bound between batches (answering the SMSC's enquire_link and storing
    delivery receipts as they come) instead of binding and unbinding once per batch; the RQ job
    thread hands each batch to the loop and waits. One per process (see :func:`runtime`).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self.pool = ChannelPool(settings)
        self.loop = uvloop.new_event_loop()  # the loop's own work is a large part of a sender's CPU
        self._thread = threading.Thread(target=self.loop.run_forever, name="sender-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the runtime's loop and wait for it (an RQ job timeout cancels it)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        if self.pid != os.getpid() or not self.loop.is_running():
            return
        with contextlib.suppress(Exception):
            self.run(asyncio.wait_for(self.pool.aclose(), 10))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


_RUNTIMES: dict[int, SenderRuntime] = {}


def runtime(settings: Settings) -> SenderRuntime:
    """This process's sender runtime, made on first use (again after a fork or a settings change)."""
    current = _RUNTIMES.get(os.getpid())
    if current is not None and current.settings == settings:
        return current
    if current is not None:
        current.close()
    _RUNTIMES.clear()  # a forked child must not touch its parent's loop
    made = _RUNTIMES[os.getpid()] = SenderRuntime(settings)
    atexit.register(made.close)
    return made


async def run_batch(batch: Batch, record: AlertRecord, *, signal: Signal | None, cap_xml: bytes,
                    targets: Targets, settings: Settings, client: redis.Redis,
                    pool: ChannelPool) -> BatchReport:
    """Send one batch through ``pool`` (the worker's open adapters and token buckets)."""
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
    adapter = await pool.adapter(batch.channel)
    bucket = await pool.bucket(batch.channel)
    window = await pool.window(batch.channel)
    context = await pool.context()
    assert context.redis is not None
    try:
        await _send_all(adapter, Pacing(bucket, window), message, deque(todo), batch, report, settings, client,
                        context.redis)
    except Exception:
        await pool.drop_adapter(batch.channel)  # the next batch opens a fresh one
        raise
    return report


async def _send_all(adapter, pacing: Pacing, message: Message, queue: deque[Recipient],  # type: ignore[no-untyped-def]
                    batch: Batch, report: BatchReport, settings: Settings, client: redis.Redis,
                    async_redis: redis.asyncio.Redis) -> None:
    """Send everything in ``queue`` over a few lanes, each one chunk at a time.

    With one lane a chunk's last responses and its bookkeeping leave the provider connection
    idle; ``sender_lanes`` chunks in flight keep it busy. The token bucket still holds the rate.
    """
    lanes = 1 if adapter.capabilities.single_request else max(1, settings.sender_lanes)
    busy = 0

    async def lane() -> None:
        nonlocal busy
        while True:
            if not queue:
                if busy == 0:
                    return
                await asyncio.sleep(0.005)  # another lane may put retries back
                continue
            busy += 1
            try:
                await _send_chunk(adapter, pacing, message, queue, batch, report, settings, client, async_redis)
            finally:
                busy -= 1

    running = [asyncio.ensure_future(lane()) for _ in range(lanes)]
    try:
        await asyncio.gather(*running)
    except BaseException:
        # One lane failed (Redis gone, say): stop the others before the batch fails, or they would
        # go on sending its recipients while RQ runs it again.
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        raise


async def _send_chunk(adapter, pacing: Pacing, message: Message, queue: deque[Recipient],  # type: ignore[no-untyped-def]
                      batch: Batch, report: BatchReport, settings: Settings, client: redis.Redis,
                      async_redis: redis.asyncio.Redis) -> None:
    ttl = settings.dedupe_ttl_seconds
    reason = ""
    bucket = pacing.bucket
    if adapter.capabilities.single_request:  # one request for them all, one token
        part = list(queue)
        queue.clear()
        tokens = 1
    else:
        part = [queue.popleft() for _ in range(min(bucket.chunk, len(queue)))]
        tokens = len(part)
    try:
        results = await pacing.send(adapter, message, part, tokens)
    except TransientDeliveryError as err:  # the whole channel is down: back off, try the part again
        results = None
        reason = err.message
    outcomes: list[tuple[str, str] | tuple[str, str, str | None]] = []
    retry: list[Recipient] = []
    throttled = False
    failures = []
    if results is None:
        retry = part
    else:
        for recipient, result in zip(part, results, strict=True):
            if result.status is DeliveryStatus.ACCEPTED:
                # The provider's id is kept only where a receipt will come back for it.
                outcomes.append((slot_of(recipient), "sent",
                                 result.provider_ref if adapter.capabilities.supports_receipts else None))
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
    await accounting.finalize_async(async_redis, batch.alert_id, batch.channel, outcomes, ttl)
    report.sent += sum(1 for o in outcomes if o[1] == "sent")
    report.failed += sum(1 for o in outcomes if o[1] == "failed")
    report.suppressed += sum(1 for o in outcomes if o[1] == "suppressed")
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


@dataclass
class Pacing:
    """When a chunk may go: the account's token bucket (the rate) and emission window (the busiest second)."""

    bucket: TokenBucket
    window: EmissionWindow

    async def send(self, adapter: Any, message: Message, part: list[Recipient], tokens: int) -> list[Any]:
        """Send ``part`` (worth ``tokens``) through ``adapter`` at its moment.

        An adapter that takes an :class:`~channels.base.Emission` prepares the chunk before the
        moment and says when it has left; for the others the moment comes first and the chunk counts
        as written when the send returns.
        """
        emission = ChunkEmission(self, tokens)
        try:
            if adapter.capabilities.takes_emission:
                return list(await adapter.send(message, part, emission=emission))
            await emission.ready()
            return list(await adapter.send(message, part))
        finally:
            await emission.close()


class ChunkEmission:
    """The moment of one chunk (see channels.base.Emission): its tokens are booked ahead in the
    bucket (few Redis round trips, and no message leaves before the bucket allows it); at that
    moment the window admits it, and it is reported written when the adapter says so."""

    def __init__(self, pacing: Pacing, tokens: int) -> None:
        self.pacing = pacing
        self.tokens = tokens
        self.ticket: str | None = None
        self._report: Awaitable[bool] | None = None

    async def ready(self) -> None:
        if self.ticket is not None:
            raise RuntimeError("a chunk has one moment")
        await self.pacing.bucket.take(self.tokens)
        self.ticket = await self.pacing.window.admit(self.tokens)

    def written(self) -> None:
        if self.ticket is not None and self._report is None:
            self._report = self.pacing.window.report(self.ticket)  # leaves now, right behind the chunk

    async def close(self) -> None:
        """Report the chunk written if the adapter did not (it has returned, so nothing more leaves)."""
        self.written()
        if self._report is None:
            return
        try:
            await self._report
        except Exception as exc:  # what was sent is recorded all the same; the ticket goes stale
            log.warning("could not report a chunk of %s written: %s", self.pacing.window.account, exc)


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
