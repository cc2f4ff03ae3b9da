"""Exact accounting of every recipient of every alert, per channel.

Counters live in one Redis hash per alert (field ``<channel>:<counter>``):

- ``targeted``: recipients the alert reaches on the channel (set when planning starts);
- ``queued``: recipients in batches waiting for or being processed by a worker;
- ``sent``: accepted by the provider; ``failed``: permanently refused, or retries exhausted;
- ``suppressed``: not sent on purpose (a partner's filters, or the alert was cancelled first);
- ``delivered`` / ``undelivered``: delivery receipts, when the provider gives them.

``pending`` is derived: targeted - sent - failed - suppressed. Every recipient reaches a
final state (sent, failed or suppressed) exactly once: :data:`FINALIZE` sets the
recipient's slot in the channel's "done" bitmap or set and counts it only if it was not
set before, in one script, so a batch that runs twice (a worker died) cannot count twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from broadcast import keys

COUNTERS = ("targeted", "queued", "sent", "failed", "suppressed", "delivered", "undelivered")
FINAL = ("sent", "failed", "suppressed")
RATE_WINDOW_SECONDS = 5

# KEYS[1] progress hash, KEYS[2] done key (bitmap or set), KEYS[3] reached key (bitmap or set),
# KEYS[4] per-second sent counts (hash).
# ARGV[1] channel, ARGV[2] "bits" or "set", ARGV[3] epoch second now, ARGV[4] TTL seconds,
# ARGV[5] receipt-owner key prefix, ARGV[6] early-receipt key prefix, ARGV[7] owner TTL,
# ARGV[8] the outcomes, one per line: slot TAB outcome ("sent" | "failed" | "suppressed") TAB
# provider message id ("" if none); one argument rather than three per recipient (cheaper to send).
# A sent message with a provider id gets its receipt owner (broadcast.receipts), or, when its
# final receipt came first, has that receipt counted now.
# Returns how many were newly final (the rest were final already).
FINALIZE = """
local channel, kind, second, ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local owner_prefix, early_prefix, owner_ttl = ARGV[5], ARGV[6], tonumber(ARGV[7])
local fresh = 0
for slot, outcome, ref in string.gmatch(ARGV[8], '([^\\t\\n]+)\\t([^\\t\\n]+)\\t([^\\t\\n]*)') do
  local was
  if kind == 'bits' then
    was = redis.call('SETBIT', KEYS[2], tonumber(slot), 1)
  else
    was = 1 - redis.call('SADD', KEYS[2], slot)
  end
  if was == 0 then
    fresh = fresh + 1
    redis.call('HINCRBY', KEYS[1], channel .. ':' .. outcome, 1)
    if outcome == 'sent' then
      if kind == 'bits' then
        redis.call('SETBIT', KEYS[3], tonumber(slot), 1)
      else
        redis.call('SADD', KEYS[3], slot)
      end
      redis.call('HINCRBY', KEYS[4], second, 1)
      if ref ~= '' then
        local early = redis.call('GET', early_prefix .. ref)
        if early then
          redis.call('HINCRBY', KEYS[1], channel .. ':' .. early, 1)
          redis.call('DEL', early_prefix .. ref)
        else
          redis.call('SET', owner_prefix .. ref, KEYS[1] .. '|' .. channel, 'EX', owner_ttl)
        end
      end
    end
  end
end
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('EXPIRE', KEYS[4], 300)
return fresh
"""


@dataclass(frozen=True, slots=True)
class ChannelProgress:
    channel: str
    counts: dict[str, int]
    rate: float  # sent per second over the last RATE_WINDOW_SECONDS

    @property
    def pending(self) -> int:
        c = self.counts
        return c["targeted"] - c["sent"] - c["failed"] - c["suppressed"]

    @property
    def eta_seconds(self) -> float | None:
        if self.pending == 0:
            return 0.0
        return self.pending / self.rate if self.rate > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {**self.counts, "pending": self.pending, "rate_per_second": round(self.rate, 1),
                "eta_seconds": None if self.eta_seconds is None else round(self.eta_seconds, 1)}


def done_kind(channel: str) -> str:
    """Subscriber channels track recipients by registry row (a bitmap); others by id (a set)."""
    from broadcast.recipients import SUBSCRIBER_CHANNELS

    return "bits" if channel in SUBSCRIBER_CHANNELS else "set"


def add(client: redis.Redis | redis.client.Pipeline, alert_id: str, channel: str, **deltas: int) -> None:
    for counter, delta in deltas.items():
        if delta:
            client.hincrby(keys.progress(alert_id), f"{channel}:{counter}", delta)


def finalize(client: redis.Redis, alert_id: str, channel: str,
             outcomes: Sequence[tuple[str | int, str] | tuple[str | int, str, str | None]], ttl_seconds: int) -> int:
    """Record final outcomes (slot, "sent" | "failed" | "suppressed"[, provider message id]);
    returns how many were new."""
    if not outcomes:
        return 0
    return int(client.eval(FINALIZE, *_finalize_args(alert_id, channel, outcomes, ttl_seconds)))  # type: ignore[arg-type]


async def finalize_async(client: redis.asyncio.Redis, alert_id: str, channel: str,
                         outcomes: Sequence[tuple[str | int, str] | tuple[str | int, str, str | None]],
                         ttl_seconds: int) -> int:
    """:func:`finalize` on the sender's event loop, without blocking it."""
    if not outcomes:
        return 0
    return int(await client.eval(FINALIZE, *_finalize_args(alert_id, channel, outcomes, ttl_seconds)))  # type: ignore[misc]


def _finalize_args(alert_id: str, channel: str,
                   outcomes: Sequence[tuple[str | int, str] | tuple[str | int, str, str | None]],
                   ttl_seconds: int) -> list[Any]:
    args: list[Any] = [4, keys.progress(alert_id), keys.done(alert_id, channel), keys.reached(alert_id, channel),
                       keys.sent_per_second(alert_id, channel),
                       channel, done_kind(channel), int(time.time()), ttl_seconds, keys.receipt_owner(""),
                       keys.receipt_early(""), keys.RECEIPT_OWNER_TTL_SECONDS]
    lines = []
    for slot, outcome, *ref in outcomes:
        if isinstance(slot, str) and ("\t" in slot or "\n" in slot):
            raise ValueError(f"recipient slot {slot!r} holds a tab or newline")
        lines.append(f"{slot}\t{outcome}\t{(ref[0] if ref else None) or ''}")
    args.append("\n".join(lines))
    return args


MAX_BITMAP_SPAN = 1 << 16  # bytes of the done bitmap read at once; sparser batches ask bit by bit


def already_final(client: redis.Redis, alert_id: str, channel: str, slots: Sequence[str | int]) -> list[bool]:
    key = keys.done(alert_id, channel)
    if slots and done_kind(channel) == "bits":
        rows = [int(slot) for slot in slots]
        low, high = min(rows) >> 3, max(rows) >> 3
        if high - low < MAX_BITMAP_SPAN:
            # A batch's rows lie close together: one GETRANGE, and the bits are read here.
            chunk = client.getrange(key, low, high)
            found = []
            for row in rows:
                at = (row >> 3) - low
                found.append(at < len(chunk) and bool(chunk[at] >> (7 - (row & 7)) & 1))
            return found
    with client.pipeline(transaction=False) as pipe:
        for slot in slots:
            if done_kind(channel) == "bits":
                pipe.getbit(key, int(slot))
            else:
                pipe.sismember(key, str(slot))
        return [bool(v) for v in pipe.execute()]


def read(client: redis.Redis, alert_id: str) -> list[ChannelProgress]:
    """Progress of every channel the alert goes out on."""
    raw = {k.decode(): int(v) for k, v in client.hgetall(keys.progress(alert_id)).items()}
    channels = sorted({field.split(":", 1)[0] for field in raw})
    now = int(time.time())
    result = []
    for channel in channels:
        counts = {counter: raw.get(f"{channel}:{counter}", 0) for counter in COUNTERS}
        seconds = client.hmget(keys.sent_per_second(alert_id, channel),
                               [str(s) for s in range(now - RATE_WINDOW_SECONDS, now)])
        rate = sum(int(v) for v in seconds if v) / RATE_WINDOW_SECONDS
        result.append(ChannelProgress(channel, counts, rate))
    return result
