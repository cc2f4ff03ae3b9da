"""Global rate control: one GCRA token bucket per provider account, shared through Redis.

Every worker on every machine that sends through one provider account (``"sms:smpp:szalert"``)
takes its tokens from the same bucket in Redis, so the account's configured rate holds however
many workers there are. Four Lua scripts keep the state consistent:

- ``GCRA_SCRIPT`` grants up to ``n`` tokens at once (a chunk; partial grants allowed) and says how
  long until the next token. Its clock is Redis ``TIME``, so machines with skewed clocks agree.
- ``RESERVE_SCRIPT`` books a chunk for the earliest moment it conforms (what senders use, through
  ``take``): a sender busy elsewhere keeps its place instead of leaving the bucket idle.
- ``THROTTLE_SCRIPT`` and ``RECOVER_SCRIPT`` run AIMD on the account's current rate: halve it when
  the provider says slow down (HTTP 429, SMPP ``ESME_RTHROTTLED`` 0x58), add back linearly as sends
  succeed, never above the configured rate (the cap) nor below a floor. The GCRA script reads that
  current rate, so every worker slows down together.

The guarantee: with a configured rate ``r`` tokens/s and a burst ``b`` tokens, the tokens granted
in any closed window of ``W`` seconds on the Redis clock never exceed ``r * W + b``; over any one
second, at most ``r + b``. It holds in every AIMD state. Why: the backlog ``L`` (tokens granted and
not yet paid for by elapsed time) is at most ``b`` after every grant, drains at the current rate,
which is never above ``r``, and rises by exactly the tokens granted. So the grants in ``[t, t + W]``
are ``L(t + W) - L(t) + drained <= b + r * W``. When the rate changes, the backlog is carried over
as a number of tokens (re-expressed at the new rate), so throttling never forgives granted tokens.

Redis 5 or later is needed (scripts calling ``TIME`` are replicated by their effects).
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from broadcast import keys
from broadcast.redis_pipelined import PipelinedRedis, RedisReplyError, Script

# Lua helpers shared by the three scripts. Numbers are stored with %.17g: tostring() and Redis's own
# number-to-argument conversion may keep only 14 significant digits, and a time in µs has 16.
_LUA_COMMON = """
local function now_us()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function num(x)
    return string.format('%.17g', x)
end

local function current_rate(aimd_key, cap)
    local current = tonumber(redis.call('HGET', aimd_key, 'current'))
    if current and current < cap then
        return current
    end
    return cap
end

-- The bucket's theoretical arrival time, counted at `interval` µs per token. A backlog counted at
-- another rate is re-expressed at this one: granted tokens must drain at the new rate, neither
-- forgiven (a throttled account would get an extra burst) nor charged twice.
local function load_tat(bucket_key, now, interval)
    local state = redis.call('HMGET', bucket_key, 'tat', 'interval')
    local tat, old = tonumber(state[1]), tonumber(state[2])
    if not tat or tat <= now then
        return now, false
    end
    if old and old ~= interval then
        return now + (tat - now) * interval / old, true
    end
    return tat, false
end

local function store_tat(bucket_key, now, tat, interval, grace_ms)
    redis.call('HSET', bucket_key, 'tat', num(tat), 'interval', num(interval))
    redis.call('PEXPIRE', bucket_key, math.ceil((tat - now) / 1000) + grace_ms)
end

local function rescale(bucket_key, now, rate, grace_ms)
    local interval = 1000000 / rate
    local tat, changed = load_tat(bucket_key, now, interval)
    if changed then
        store_tat(bucket_key, now, tat, interval, grace_ms)
    end
end
"""

# GCRA: take up to n tokens from the account's bucket.
# The burst tolerance tau is fixed in time (burst tokens at the cap), so a throttled bucket is
# proportionally less bursty; it never drops below one interval, or no token could ever be granted.
# KEYS[1]  bucket hash (keys.rate_bucket): tat (µs, Redis clock), interval (µs per token)
# KEYS[2]  AIMD hash (keys.rate_aimd), read only: current (tokens/s)
# ARGV[1]  cap: the configured rate, tokens/s (> 0)
# ARGV[2]  burst: tokens that can be taken at once after idleness, at the cap (>= 1)
# ARGV[3]  n: tokens wanted (>= 1)
# ARGV[4]  grace_ms: how long the bucket key outlives its drained backlog
# Returns {granted (0..n), ms until the next token can be granted (0: now), Redis time in µs (text)}.
GCRA_SCRIPT = (
    _LUA_COMMON
    + """
local now = now_us()
local cap, burst, n, grace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local interval = 1000000 / current_rate(KEYS[2], cap)
local tau = math.max(burst * 1000000 / cap, interval)
local tat, rescaled = load_tat(KEYS[1], now, interval)
-- The epsilon absorbs float error in the division only (far below a µs).
local granted = math.floor((now + tau - tat) / interval + 1e-9)
if granted > n then
    granted = n
elseif granted < 0 then
    granted = 0
end
tat = tat + granted * interval
if granted > 0 or rescaled then
    store_tat(KEYS[1], now, tat, interval, grace)
end
local wait_ms = math.ceil((tat + interval - tau - now) / 1000)
if wait_ms < 0 then
    wait_ms = 0
end
return {granted, wait_ms, num(now)}
"""
)

# GCRA with reservation: book n tokens now for the earliest moment they conform, up to a horizon.
# A sender that books ahead and sleeps until its moment keeps the bucket in use while it is busy
# elsewhere (a chunk in flight, a job boundary); polling instead leaves the bucket full and idle
# between asks, and tokens that overflow a full bucket are lost to the rate. A booking is the
# grant GCRA would make if the sender asked exactly at that moment, and bookings are made in time
# order, so the guarantee of GCRA_SCRIPT holds for the moments the tokens are used.
# KEYS/ARGV[1..4] as GCRA_SCRIPT (n is cut to the burst), ARGV[5] horizon (µs, >= 0).
# Returns {booked (0 or n), µs from now until the booked tokens may be used (or, when 0 were
# booked, ms until asking again can succeed), Redis time in µs (text)}.
RESERVE_SCRIPT = (
    _LUA_COMMON
    + """
local now = now_us()
local cap, burst, n, grace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local horizon = tonumber(ARGV[5])
local interval = 1000000 / current_rate(KEYS[2], cap)
local tau = math.max(burst * 1000000 / cap, interval)
local tat, rescaled = load_tat(KEYS[1], now, interval)
local fit = math.max(1, math.floor(tau / interval + 1e-9))
if n > fit then
    n = fit
end
local at = tat + n * interval - tau
if at < now then
    at = now
end
if at - now > horizon then
    if rescaled then
        store_tat(KEYS[1], now, tat, interval, grace)
    end
    return {0, math.ceil((at - now - horizon) / 1000), num(now)}
end
store_tat(KEYS[1], now, tat + n * interval, interval, grace)
return {n, math.ceil(at - now), num(now)}
"""
)

# AIMD decrease: halve the account's current rate, not below the floor. Signals within the holdoff
# of the last decrease are ignored: every worker with messages in flight hears the same 429s, and
# one slowdown must halve the rate once, not once per worker.
# KEYS[1]  AIMD hash (keys.rate_aimd): cap, current (tokens/s), decreased_at (µs, Redis clock)
# KEYS[2]  bucket hash (keys.rate_bucket): its backlog is re-expressed at the new rate
# ARGV[1]  cap (tokens/s)   ARGV[2]  floor (tokens/s)   ARGV[3]  holdoff (µs)
# ARGV[4]  AIMD hash TTL (ms)   ARGV[5]  bucket grace (ms)
# Returns the rate in force afterwards, tokens/s (text).
THROTTLE_SCRIPT = (
    _LUA_COMMON
    + """
local now = now_us()
local cap, floor, holdoff = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local old = current_rate(KEYS[1], cap)
local last = tonumber(redis.call('HGET', KEYS[1], 'decreased_at'))
if last and now - last < holdoff then
    return num(old)
end
local new = math.max(old / 2, floor)
redis.call('HSET', KEYS[1], 'cap', num(cap), 'current', num(new), 'decreased_at', num(now))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
rescale(KEYS[2], now, new, tonumber(ARGV[5]))
return num(new)
"""
)

# AIMD increase: count successful sends are count / current seconds of success at the current rate;
# each such second adds step * cap. At the cap the AIMD hash is deleted (absent means "at the cap").
# KEYS[1]  AIMD hash (keys.rate_aimd)   KEYS[2]  bucket hash (keys.rate_bucket)
# ARGV[1]  cap (tokens/s)   ARGV[2]  count (successful sends)   ARGV[3]  step (fraction of cap)
# ARGV[4]  AIMD hash TTL (ms)   ARGV[5]  bucket grace (ms)
# Returns the rate in force afterwards, tokens/s (text).
RECOVER_SCRIPT = (
    _LUA_COMMON
    + """
local now = now_us()
local cap, count, step = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local current = tonumber(redis.call('HGET', KEYS[1], 'current'))
if not current then
    return num(cap)
end
local new = cap
if current < cap then
    new = math.min(cap, current + step * cap * count / current)
end
if new >= cap then
    redis.call('DEL', KEYS[1])
else
    redis.call('HSET', KEYS[1], 'cap', num(cap), 'current', num(new))
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
end
rescale(KEYS[2], now, new, tonumber(ARGV[5]))
return num(new)
"""
)


@dataclass(frozen=True, slots=True)
class Grant:
    """One decision of the bucket.

    Attributes:
        granted: Tokens granted now, 0 up to the number asked for.
        wait: Seconds until the next token can be granted (0.0 if one can be now).
        at: When the bucket decided, on the Redis clock (epoch seconds, µs resolution).
    """

    granted: int
    wait: float
    at: float


class TokenBucket:
    """The shared token bucket of one provider account, with AIMD on its rate.

    Create one per account and Redis client and reuse it: its scripts are registered with the
    client once, here. Every instance, in any process, that names the same account shares one
    bucket, so they should all be given the same ``rate`` and ``burst``.

    Args:
        client: An asyncio Redis client.
        account: The provider account, e.g. ``"sms:smpp:szalert"``.
        rate: The configured rate (the cap), tokens per second; never exceeded.
        burst: Tokens that can be taken at once after idleness; defaults to ``chunk``.
        chunk: Tokens a sender usually asks for at once (the default ``n`` of ``reserve``).
        floor: The lowest rate throttling can bring the account to; defaults to 1 % of ``rate``
            or 1/s, whichever is higher (and never above ``rate``).
        increase: Fraction of ``rate`` that each second's worth of successful sends adds back.
        holdoff: Seconds after a decrease during which further throttle signals are ignored.
        horizon: How far ahead ``take`` may book tokens, seconds: long enough to cover what a
            sender does between two asks, short enough that an alert of higher priority queued
            meanwhile is not kept waiting behind bookings.

    Raises:
        ValueError: A parameter is out of range.
    """

    def __init__(
        self,
        client: redis.asyncio.Redis,
        account: str,
        rate: float,
        *,
        burst: int | None = None,
        chunk: int = 100,
        floor: float | None = None,
        increase: float = 0.05,
        holdoff: float = 1.0,
        horizon: float = 0.25,
    ) -> None:
        if not account or "{" in account or "}" in account:
            raise ValueError(f"account must be a non-empty name without braces, not {account!r}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number of tokens per second, not {rate!r}")
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be an integer of at least 1, not {chunk!r}")
        burst = chunk if burst is None else burst
        if not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst must be an integer of at least 1, not {burst!r}")
        floor = min(rate, max(rate * 0.01, 1.0)) if floor is None else floor
        if not (math.isfinite(floor) and 0 < floor <= rate):
            raise ValueError(f"floor must be above 0 and at most the rate {rate}, not {floor!r}")
        if not (math.isfinite(increase) and increase > 0):
            raise ValueError(f"increase must be a positive fraction of the rate, not {increase!r}")
        if not (math.isfinite(holdoff) and holdoff >= 0):
            raise ValueError(f"holdoff must be a number of seconds >= 0, not {holdoff!r}")
        if not (math.isfinite(horizon) and horizon >= 0):
            raise ValueError(f"horizon must be a number of seconds >= 0, not {horizon!r}")
        self.account = account
        self.rate = float(rate)
        self.burst = burst
        self.chunk = chunk
        self.floor = float(floor)
        self.increase = float(increase)
        self.holdoff = float(holdoff)
        self.horizon = float(horizon)
        self._keys = [keys.rate_bucket(account), keys.rate_aimd(account)]
        self._gcra = client.register_script(GCRA_SCRIPT)
        self._reserve = client.register_script(RESERVE_SCRIPT)
        self._throttle = client.register_script(THROTTLE_SCRIPT)
        self._recover = client.register_script(RECOVER_SCRIPT)
        self._client = client

    def __repr__(self) -> str:
        return f"TokenBucket({self.account!r}, rate={self.rate}, burst={self.burst}, chunk={self.chunk})"

    def _wanted(self, n: int | None) -> int:
        n = self.chunk if n is None else n
        if n < 1:
            raise ValueError(f"n must be at least 1, not {n!r}")
        return n

    async def try_acquire(self, n: int | None = None) -> Grant:
        """Take up to ``n`` tokens now, without waiting.

        Args:
            n: Tokens wanted; defaults to one chunk. At most ``burst`` are granted at once.

        Returns:
            How many were granted (possibly 0) and how long until the next token.

        Raises:
            ValueError: ``n`` is below 1.
            redis.RedisError: Redis could not be asked.
        """
        granted, wait_ms, now_us = await self._gcra(
            keys=self._keys, args=[self.rate, self.burst, self._wanted(n), keys.RATE_BUCKET_GRACE_MS]
        )
        return Grant(granted=int(granted), wait=int(wait_ms) / 1000, at=int(now_us) / 1_000_000)

    async def reserve(self, n: int | None = None) -> Grant:
        """Book up to ``n`` tokens (at most ``burst``) for the earliest moment they may be used.

        Nothing is booked when that moment is further than ``horizon`` ahead.

        Args:
            n: Tokens wanted; defaults to one chunk.

        Returns:
            ``granted`` tokens booked (0, or ``min(n, burst)``) and ``wait``: when booked, seconds
            until they may be used (the caller must not use them earlier); when not, seconds
            until asking again can succeed.

        Raises:
            ValueError: ``n`` is below 1.
            redis.RedisError: Redis could not be asked.
        """
        args = [self.rate, self.burst, self._wanted(n), keys.RATE_BUCKET_GRACE_MS, round(self.horizon * 1_000_000)]
        booked, wait, now_us = await self._reserve(keys=self._keys, args=args)
        booked = int(booked)
        return Grant(granted=booked, wait=int(wait) / (1_000_000 if booked else 1000), at=int(now_us) / 1_000_000)

    async def take(self, n: int) -> None:
        """Wait until exactly ``n`` tokens have been granted, for senders that need all of them.

        Tokens are booked ahead (up to ``horizon``) and the call returns at the moment they may
        be used, so the bucket keeps granting while the caller was busy elsewhere.

        Args:
            n: Tokens wanted (0 returns at once); may exceed ``burst``.

        Raises:
            ValueError: ``n`` is negative.
            redis.RedisError: Redis could not be asked.
        """
        if n < 0:
            raise ValueError(f"n must be at least 0, not {n!r}")
        remaining = n
        while remaining:
            booking = await self.reserve(remaining)
            if booking.wait > 0:
                await asyncio.sleep(booking.wait)
            remaining -= booking.granted

    async def throttled(self) -> float:
        """Tell the bucket the provider said slow down: halve the account's rate, for every worker.

        Signals within ``holdoff`` seconds of the last decrease are ignored (the other workers are
        hearing the same slowdown). The rate never goes below ``floor``.

        Returns:
            The rate now in force, tokens per second.

        Raises:
            redis.RedisError: Redis could not be asked.
        """
        args = [
            self.rate,
            self.floor,
            round(self.holdoff * 1_000_000),
            keys.RATE_AIMD_TTL_SECONDS * 1000,
            keys.RATE_BUCKET_GRACE_MS,
        ]
        return float(await self._throttle(keys=self._keys[::-1], args=args))

    async def recovered(self, count: int) -> float:
        """Tell the bucket ``count`` sends succeeded: raise the account's rate back toward the cap.

        ``count`` sends at the current rate ``c`` are ``count / c`` seconds of success; each second
        adds ``increase * rate``. The rate never goes above ``rate``.

        Args:
            count: Successful sends since the last call (0 changes nothing).

        Returns:
            The rate now in force, tokens per second.

        Raises:
            ValueError: ``count`` is negative.
            redis.RedisError: Redis could not be asked.
        """
        if count < 0:
            raise ValueError(f"count must be at least 0, not {count!r}")
        if count == 0:
            return await self.current_rate()
        args = [self.rate, count, self.increase, keys.RATE_AIMD_TTL_SECONDS * 1000, keys.RATE_BUCKET_GRACE_MS]
        return float(await self._recover(keys=self._keys[::-1], args=args))

    async def current_rate(self) -> float:
        """The account's rate in force now, tokens per second (``rate`` unless throttled).

        Raises:
            redis.RedisError: Redis could not be asked.
        """
        current = await self._client.hget(self._keys[1], "current")
        return self.rate if current is None else min(self.rate, float(current))


# ---------------------------------------------------------------- the emission window
#
# The bucket decides when a chunk may go; the sender's process then has to wake up and write it,
# and on a busy machine it wakes late by anything up to tens of milliseconds. A chunk woken late
# goes out next to the chunks booked after it, so the busiest second *on the wire* can exceed the
# bucket's rate + burst although every booking was exact. The emission window bounds what is
# written, by counting each chunk from when it is admitted until one window after it was written:
#
# - ADMIT (at the moment of sending, after the bucket's booking): the chunks reported written
#   within the last window plus the chunks admitted and not yet reported, plus this one, must not
#   exceed the limit; else the sender is told how long until enough leaves the window.
# - WRITTEN (right after the chunk's last byte was handed to the socket): the chunk now counts
#   from that report's Redis time, which is never earlier than the write itself.
#
# Why this bounds the wire: take any window (t, t + w] and, of the chunks written in it, the one
# admitted last, at A. If A > t, every other chunk of the window was admitted before A and written
# after t >= A - w: at A it either had been reported (at a time in (A - w, A]) or was still
# unreported, and ADMIT counted it either way. If A <= t, all of them were admitted by A and
# written after it, so all were unreported at A and counted. Either way their sum is at most the
# limit. A sender that never reports (killed between the two) has its chunk counted as written at
# the moment it is found stale, then for one more window. What the window cannot see: a Redis that
# restarts empty forgets the last second (up to twice the limit can go out in the window around
# the restart), and a chunk still being written when it is found stale (the stale time is set
# above the longest write, see EmissionWindow).

# KEYS[1] sending (keys.rate_sending)  KEYS[2] sent (keys.rate_sent)  KEYS[3] tickets (keys.rate_tickets)
# ARGV[1] limit: tokens per window   ARGV[2] n: tokens of this chunk (1..limit)
# ARGV[3] window (µs)   ARGV[4] stale (µs): an unreported chunk older than this counts as written now
# ARGV[5] retry (µs): wait when only unreported chunks could make room
# ARGV[6] the sender's nonce: tickets stay unique when a Redis restarted empty counts from 1 again
# Returns {1, ticket} when admitted, {0, µs to wait before asking again} when not.
ADMIT_SCRIPT = (
    _LUA_COMMON
    + """
local now = now_us()
local limit, n, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local stale, retry = tonumber(ARGV[4]), tonumber(ARGV[5])
local function tokens(member)
    return tonumber(string.match(member, ':(%d+)$'))
end
local lost = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', num(now - stale))
for _, member in ipairs(lost) do
    redis.call('ZADD', KEYS[2], num(now), member)
end
if #lost > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', num(now - stale))
    redis.call('PEXPIRE', KEYS[2], math.ceil(window / 1000) + 1000)
end
-- Written at or before now - window: outside every window that ends now or later.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', num(now - window))
local used = 0
local sent = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #sent, 2 do
    used = used + tokens(sent[i])
end
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    used = used + tokens(member)
end
if used + n <= limit then
    local ticket = ARGV[6] .. '-' .. redis.call('INCR', KEYS[3]) .. ':' .. n
    redis.call('PEXPIRE', KEYS[3], 86400000)
    redis.call('ZADD', KEYS[1], num(now), ticket)
    redis.call('PEXPIRE', KEYS[1], math.ceil((stale + window) / 1000) + 1000)
    return {1, ticket}
end
local excess = used + n - limit
for i = 1, #sent, 2 do
    excess = excess - tokens(sent[i])
    if excess <= 0 then
        return {0, math.max(1, math.ceil(tonumber(sent[i + 1]) + window - now))}
    end
end
return {0, retry}
"""
)

# KEYS[1] sending  KEYS[2] sent   ARGV[1] ticket   ARGV[2] window (µs)
# Returns 1 when the ticket was unreported (now counted from this moment), 0 when it was not.
WRITTEN_SCRIPT = (
    _LUA_COMMON
    + """
local now = now_us()
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
    return 0
end
redis.call('ZADD', KEYS[2], num(now), ARGV[1])
redis.call('PEXPIRE', KEYS[2], math.ceil(tonumber(ARGV[2]) / 1000) + 1000)
return 1
"""
)


class EmissionWindow:
    """The sliding window that bounds what one provider account's senders put on the wire.

    ``limit`` tokens at most are written within any ``window`` seconds, by every sender together,
    however late their processes wake (see the proof above ADMIT_SCRIPT). Senders call
    :meth:`admit` at the moment of sending (after the :class:`TokenBucket` booking, which keeps the
    long-run rate) and :meth:`report` as soon as the chunk has left for the provider.

    Args:
        client: The event loop's pipelined Redis connection (a report goes out in the very callback
            that calls :meth:`report`, right behind the bytes it reports).
        account: The provider account, as for :class:`TokenBucket`.
        limit: Tokens per window; a chunk may not exceed it.
        window: Seconds.
        stale: Seconds after which an admitted chunk not reported written counts as written (its
            sender was killed or stopped); until then it holds its place in the window. Longer
            than a sender may take to write an admitted chunk (SMPP: the response timeout, when
            the provider's window is full).
        retry: Seconds to wait when only unreported chunks stand in the way.

    Raises:
        ValueError: A parameter is out of range.
    """

    def __init__(self, client: PipelinedRedis, account: str, limit: int, *, window: float = 1.0,
                 stale: float = 15.0, retry: float = 0.002) -> None:
        if not account or "{" in account or "}" in account:
            raise ValueError(f"account must be a non-empty name without braces, not {account!r}")
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an integer of at least 1, not {limit!r}")
        for name, value in (("window", window), ("stale", stale), ("retry", retry)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        self.account = account
        self.limit = limit
        self.window = float(window)
        self.stale = float(stale)
        self.retry = float(retry)
        self._keys = [keys.rate_sending(account), keys.rate_sent(account), keys.rate_tickets(account)]
        self._client = client
        self._nonce = secrets.token_hex(4)

    def __repr__(self) -> str:
        return f"EmissionWindow({self.account!r}, limit={self.limit}, window={self.window})"

    async def try_admit(self, n: int) -> tuple[str | None, float]:
        """Admit a chunk of ``n`` tokens now if the window has room.

        Returns:
            ``(ticket, 0.0)`` when admitted (report it with :meth:`report`), else ``(None, seconds
            to wait before asking again)``.

        Raises:
            ValueError: ``n`` is not within 1..limit.
            redis.RedisError: Redis could not be asked.
        """
        if not isinstance(n, int) or not 1 <= n <= self.limit:
            raise ValueError(f"n must be an integer within 1..{self.limit}, not {n!r}")
        args = [self.limit, n, round(self.window * 1e6), round(self.stale * 1e6), round(self.retry * 1e6),
                self._nonce]
        admitted, value = await self._client.evalsha(_ADMIT, self._keys, args)
        if int(admitted):
            return (value.decode() if isinstance(value, bytes) else str(value)), 0.0
        return None, int(value) / 1e6

    async def admit(self, n: int) -> str:
        """Wait until a chunk of ``n`` tokens may be written, and admit it.

        Returns:
            The chunk's ticket, for :meth:`report`.

        Raises:
            ValueError: ``n`` is not within 1..limit.
            redis.RedisError: Redis could not be asked.
        """
        while True:
            ticket, wait = await self.try_admit(n)
            if ticket is not None:
                return ticket
            await asyncio.sleep(wait)

    def report(self, ticket: str) -> Awaitable[bool]:
        """Report the chunk ``ticket`` written: it counts from now until one window later.

        The report is written to Redis at once, in the caller's callback: call it right after the
        chunk's last byte left, since until Redis has it the chunk holds its place (up to ``stale``).
        Reporting twice does nothing more.

        Returns:
            What to await for whether the ticket was still waiting for its report.

        Raises (when awaited):
            ConnectionError, RedisReplyError: Redis could not be told.
        """
        args = [ticket, round(self.window * 1e6)]
        sent = self._client.send_now("EVALSHA", _WRITTEN.sha, 2, *self._keys[:2], *args)
        return self._reported(sent, args)

    async def _reported(self, sent: asyncio.Future[Any] | None, args: list[Any]) -> bool:
        if sent is not None:
            try:
                return bool(int(await sent))
            except RedisReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
        return bool(int(await self._client.evalsha(_WRITTEN, self._keys[:2], args)))


_ADMIT = Script.of(ADMIT_SCRIPT)
_WRITTEN = Script.of(WRITTEN_SCRIPT)
