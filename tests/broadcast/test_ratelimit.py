"""The shared token bucket (broadcast.ratelimit) against a real Redis.

The cap holds across asyncio tasks and OS processes sharing one account, partial grants and waits
are exact at a known state, AIMD slows every taker down and brings the rate back, idle keys expire.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import multiprocessing
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor

import pytest
import redis
import redis.asyncio

from broadcast import keys
from broadcast.ratelimit import EmissionWindow, Grant, TokenBucket
from broadcast.redis_pipelined import PipelinedRedis

ACCOUNT = "sms:smpp:test"

# (grant time in µs on the Redis clock, tokens granted, local time before asking, local time after)
Record = tuple[int, int, float, float]


@pytest.fixture
async def aclient(redis_url: str, redis_client: redis.Redis) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client on the flushed test Redis (``redis_client`` does the flushing)."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def _drain(bucket: TokenBucket) -> Grant:
    """Take every token available now; returns the last (empty) grant."""
    while (grant := await bucket.try_acquire(bucket.burst)).granted:
        pass
    return grant


async def _take_for(bucket: TokenBucket, n: int, start_at: float, stop_at: float) -> list[Record]:
    """Ask for ``n`` tokens again and again from ``start_at`` to ``stop_at`` (local clock)."""
    await asyncio.sleep(max(0.0, start_at - time.time()))
    records: list[Record] = []
    while time.time() < stop_at:
        before = time.time()
        grant = await bucket.try_acquire(n)
        after = time.time()
        if grant.granted:
            records.append((round(grant.at * 1_000_000), grant.granted, before, after))
        else:
            await asyncio.sleep(grant.wait)
    return records


# ---------------------------------------------------------------- the cap, many takers

CAP_RATE = 500
CAP_CHUNK = 50
CAP_RUN_SECONDS = 3.0


async def _taker(redis_url: str, start_at: float, stop_at: float) -> list[Record]:
    client = redis.asyncio.Redis.from_url(redis_url)  # each taker has its own connection
    try:
        bucket = TokenBucket(client, ACCOUNT, CAP_RATE, chunk=CAP_CHUNK)
        return await _take_for(bucket, CAP_CHUNK, start_at, stop_at)
    finally:
        await client.aclose()


def _taker_process(redis_url: str, start_at: float, stop_at: float) -> list[Record]:
    """A taker in its own OS process, with its own event loop and connection."""
    return asyncio.run(_taker(redis_url, start_at, stop_at))


def _ready() -> bool:
    time.sleep(0.2)  # holds this worker so the other one starts too
    return True


def _max_in_window(records: list[Record], window_us: int = 1_000_000) -> int:
    """The most tokens granted within any closed window [t, t + window] (grant times in µs)."""
    events = sorted((at, n) for at, n, _, _ in records)
    best = inside = 0
    end = 0
    for at, n in events:
        while end < len(events) and events[end][0] <= at + window_us:
            inside += events[end][1]
            end += 1
        best = max(best, inside)
        inside -= n
    return best


async def test_cap_holds_across_tasks_and_processes(redis_url: str, redis_client: redis.Redis) -> None:
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        loop = asyncio.get_running_loop()
        # Spawn both worker processes (and import this module in them) before the clock starts.
        assert all(await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(2))))
        start_at = time.time() + 0.3
        stop_at = start_at + CAP_RUN_SECONDS
        processes = [loop.run_in_executor(pool, _taker_process, redis_url, start_at, stop_at) for _ in range(2)]
        tasks = [_taker(redis_url, start_at, stop_at) for _ in range(4)]
        per_taker = await asyncio.gather(*tasks, *processes)

    records = [record for taker in per_taker for record in taker]
    assert all(taker for taker in per_taker), "every task and process got tokens"
    # The grant times come from the script; check them against this machine's clock (same host).
    assert all(before - 0.005 <= at / 1e6 <= after + 0.005 for at, _, before, after in records)
    assert max(n for _, n, _, _ in records) <= CAP_CHUNK

    busiest_second = _max_in_window(records)
    total = sum(n for _, n, _, _ in records)
    first, last = min(r[0] for r in records), max(r[0] for r in records)
    span = (last - first) / 1e6
    reachable = CAP_RATE * span + CAP_CHUNK  # the initial burst, then the rate
    print(
        f"\n6 takers (4 tasks + 2 processes), {CAP_RATE}/s, chunk {CAP_CHUNK}: {total} tokens in {span:.3f} s "
        f"({len(records)} grants); busiest 1-s window {busiest_second} (bound {CAP_RATE + CAP_CHUNK}); "
        f"{total / reachable:.2%} of the {reachable:.0f} reachable;\n"
        f"per taker {[sum(r[1] for r in t) for t in per_taker]}"
    )
    assert busiest_second <= CAP_RATE + CAP_CHUNK
    assert span >= CAP_RUN_SECONDS - 0.1
    assert total <= reachable + 1
    assert total >= 0.97 * reachable, "the cap is reached, not only respected"


async def _book_for(redis_url: str, start_at: float, stop_at: float, work: float) -> list[Record]:
    """A sender that books a chunk, sleeps until its moment, then is busy for ``work`` seconds."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        bucket = TokenBucket(client, ACCOUNT, CAP_RATE, chunk=CAP_CHUNK)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        records: list[Record] = []
        while time.time() < stop_at:
            booking = await bucket.reserve()
            if not booking.granted:
                await asyncio.sleep(booking.wait)
                continue
            use_at = round((booking.at + booking.wait) * 1_000_000)
            await asyncio.sleep(booking.wait)
            records.append((use_at, booking.granted, use_at / 1e6, time.time()))
            await asyncio.sleep(work)
        return records
    finally:
        await client.aclose()


def _book_process(redis_url: str, start_at: float, stop_at: float, work: float) -> list[Record]:
    return asyncio.run(_book_for(redis_url, start_at, stop_at, work))


async def test_booked_tokens_keep_the_cap_full_for_busy_senders(redis_url: str, redis_client: redis.Redis) -> None:
    # Each sender is busy 150 ms after every chunk (a chunk is 100 ms of the rate): asking only
    # when free, the bucket would overflow while they work; booking ahead keeps every token used.
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        loop = asyncio.get_running_loop()
        assert all(await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(2))))
        start_at = time.time() + 0.3
        stop_at = start_at + CAP_RUN_SECONDS
        processes = [loop.run_in_executor(pool, _book_process, redis_url, start_at, stop_at, 0.15) for _ in range(2)]
        tasks = [_book_for(redis_url, start_at, stop_at, 0.15) for _ in range(2)]
        per_sender = await asyncio.gather(*tasks, *processes)

    records = [record for sender in per_sender for record in sender]
    assert all(per_sender), "every sender got tokens"
    # Nobody used a booking before its moment (same host, same clock).
    assert all(used >= at / 1e6 - 0.001 for at, _, _, used in records)
    busiest_second = _max_in_window(records)
    total = sum(n for _, n, _, _ in records)
    first, last = min(r[0] for r in records), max(r[0] for r in records)
    reachable = CAP_RATE * (last - first) / 1e6 + CAP_CHUNK
    print(f"\nbooked: {total} tokens, {total / reachable:.2%} of {reachable:.0f} reachable; "
          f"busiest second {busiest_second}")
    assert busiest_second <= CAP_RATE + CAP_CHUNK
    assert reachable - CAP_CHUNK <= total <= reachable + 1, "booking ahead loses no token and exceeds nothing"


async def test_a_booking_beyond_the_horizon_is_refused(aclient: redis.asyncio.Redis) -> None:
    bucket = TokenBucket(aclient, ACCOUNT, 10, burst=5, horizon=0.6)  # 5 tokens = 500 ms
    first = await bucket.reserve(5)
    assert (first.granted, first.wait) == (5, 0.0)  # a full bucket: now
    second = await bucket.reserve(9)  # cut to the burst, due when 5 more have been paid for
    assert second.granted == 5
    assert second.wait == pytest.approx(0.5, abs=0.01)
    third = await bucket.reserve(5)  # would be due in 1 s, beyond the 0.6 s horizon
    assert third.granted == 0
    assert third.wait == pytest.approx(0.4, abs=0.01), "ask again when it is within the horizon"
    await asyncio.sleep(third.wait)
    fourth = await bucket.reserve(5)
    assert fourth.granted == 5 and fourth.wait == pytest.approx(0.6, abs=0.02)


# ---------------------------------------------------------------- partial grants and waits


def _us(at: float) -> int:
    return round(at * 1_000_000)


async def test_partial_grants_and_wait_at_a_known_state(aclient: redis.asyncio.Redis) -> None:
    bucket = TokenBucket(aclient, ACCOUNT, 10, burst=5)  # one token per 100 ms

    first = await bucket.try_acquire(3)
    assert (first.granted, first.wait) == (3, 0.0)  # two more are available now
    second = await bucket.try_acquire(5)
    assert second.granted == 2  # partial: all that was left of the burst
    assert second.wait == pytest.approx(0.1, abs=0.001)
    third = await bucket.try_acquire(5)
    assert third.granted == 0
    # The 5 tokens were all owed from the first grant on: the 6th comes 100 ms after it (Redis clock).
    elapsed_us = _us(third.at) - _us(first.at)
    assert third.wait == math.ceil((100_000 - elapsed_us) / 1000) / 1000
    assert 0.08 <= third.wait <= 0.1

    await asyncio.sleep(third.wait)
    fourth = await bucket.try_acquire(5)
    assert fourth.granted >= 1
    assert fourth.granted == (_us(fourth.at) - _us(first.at)) // 100_000


async def test_take_waits_without_blocking_the_loop(aclient: redis.asyncio.Redis) -> None:
    bucket = TokenBucket(aclient, ACCOUNT, 10, burst=5)
    await bucket.take(5)  # a full bucket: at once
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    await bucket.take(2)  # booked for when 2 more tokens have been paid for: 200 ms
    waited = time.perf_counter() - started
    ticking.cancel()
    assert 0.19 <= waited <= 0.3
    assert ticks >= 10, "the loop kept running while take waited"


async def test_take_gets_exactly_n_beyond_the_burst(aclient: redis.asyncio.Redis) -> None:
    bucket = TokenBucket(aclient, ACCOUNT, 10, burst=5)
    started = time.perf_counter()
    await bucket.take(8)  # 5 at once, then 3 at 100 ms each
    elapsed = time.perf_counter() - started
    assert 0.29 <= elapsed <= 0.45
    left = await bucket.try_acquire(5)
    assert left.granted == 0, "take took exactly 8, no more"


def test_bad_parameters_are_refused(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    for kwargs in ({"rate": 0}, {"rate": math.inf}, {"rate": 10, "burst": 0}, {"rate": 10, "chunk": 0},
                   {"rate": 10, "floor": 11}, {"rate": 10, "increase": 0}, {"rate": 10, "holdoff": -1},
                   {"rate": 10, "horizon": -0.1}):
        with pytest.raises(ValueError):
            TokenBucket(client, ACCOUNT, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TokenBucket(client, "", 10)
    with pytest.raises(ValueError):
        TokenBucket(client, "sms:{x}", 10)


# ---------------------------------------------------------------- AIMD


async def _measured_rate(bucket: TokenBucket, seconds: float) -> float:
    """Tokens per second granted to one greedy taker, measured on the Redis clock."""
    await _drain(bucket)
    records = await _take_for(bucket, bucket.burst, time.time(), time.time() + seconds)
    first, last = records[0][0], records[-1][0]
    return sum(n for _, n, _, _ in records[1:]) / ((last - first) / 1e6)


async def test_throttled_halves_the_rate_for_every_taker(aclient: redis.asyncio.Redis, redis_url: str) -> None:
    bucket = TokenBucket(aclient, ACCOUNT, 200, burst=10)
    other_client = redis.asyncio.Redis.from_url(redis_url)
    try:
        other = TokenBucket(other_client, ACCOUNT, 200, burst=10)  # another worker on the same account
        before = await _measured_rate(bucket, 0.6)
        assert await other.throttled() == 100.0
        assert await bucket.current_rate() == 100.0
        after = await _measured_rate(bucket, 0.8)
    finally:
        await other_client.aclose()
    print(f"\nmeasured rate: {before:.1f}/s at the cap of 200/s, {after:.1f}/s after one throttle signal")
    assert before == pytest.approx(200, rel=0.05)
    assert after == pytest.approx(100, rel=0.05)


async def test_throttle_keeps_the_backlog_of_granted_tokens(aclient: redis.asyncio.Redis) -> None:
    bucket = TokenBucket(aclient, ACCOUNT, 10, burst=5)
    assert (await bucket.try_acquire(5)).granted == 5  # 5 tokens owed: 500 ms at 10/s
    assert await bucket.throttled() == 5.0
    # Now 5 tokens owed at 5/s are 1 s, and the burst is 500 ms: the next token is 700 ms away.
    # (Forgetting the backlog on a rate change would grant 2 tokens right away here.)
    grant = await bucket.try_acquire(5)
    assert grant.granted == 0
    assert 0.65 <= grant.wait <= 0.7


async def test_throttle_signals_within_the_holdoff_count_once(aclient: redis.asyncio.Redis) -> None:
    bucket = TokenBucket(aclient, ACCOUNT, 200, holdoff=0.3)
    assert await bucket.throttled() == 100.0
    assert await bucket.throttled() == 100.0  # the same slowdown, heard by another worker
    await asyncio.sleep(0.3)
    assert await bucket.throttled() == 50.0


async def test_the_floor_holds(aclient: redis.asyncio.Redis) -> None:
    bucket = TokenBucket(aclient, ACCOUNT, 200, burst=10, holdoff=0)
    rates = [await bucket.throttled() for _ in range(10)]
    assert rates[:6] == [100.0, 50.0, 25.0, 12.5, 6.25, 3.125]
    assert rates[6:] == [2.0] * 4  # default floor: 1 % of 200/s, at least 1/s
    # At 2/s the burst (10 tokens at 200/s = 50 ms) is less than one token: one at a time.
    assert (await bucket.try_acquire(10)).granted == 1

    floored = TokenBucket(aclient, "sms:smpp:other", 200, floor=30, holdoff=0)
    assert [await floored.throttled() for _ in range(4)] == [100.0, 50.0, 30.0, 30.0]


async def test_recovered_adds_back_linearly_up_to_the_cap(aclient: redis.asyncio.Redis) -> None:
    bucket = TokenBucket(aclient, ACCOUNT, 200, increase=0.05)
    assert await bucket.recovered(1000) == 200.0  # at the cap already: nothing to add
    assert await bucket.throttled() == 100.0
    assert await bucket.recovered(100) == pytest.approx(110.0)  # 1 s of success at 100/s: +5 % of 200
    assert await bucket.recovered(0) == pytest.approx(110.0)
    assert await bucket.recovered(110) == pytest.approx(120.0)
    assert await bucket.recovered(1_000_000) == 200.0  # never above the cap
    assert await bucket.current_rate() == 200.0
    assert not await aclient.exists(keys.rate_aimd(ACCOUNT)), "at the cap the AIMD hash is gone"


async def test_a_sender_recovers_to_the_cap_over_time(aclient: redis.asyncio.Redis) -> None:
    bucket = TokenBucket(aclient, ACCOUNT, 200, burst=10, increase=0.5)  # +100/s per second of success
    await bucket.throttled()
    await _drain(bucket)
    rates = [await bucket.current_rate()]
    granted = 0
    started = time.perf_counter()
    while rates[-1] < 200 and time.perf_counter() - started < 3:
        n = 10
        await bucket.take(n)
        granted += n
        rates.append(await bucket.recovered(n))
    elapsed = time.perf_counter() - started
    print(f"\nrecovery 100/s -> 200/s in {elapsed:.2f} s of sending, {granted} tokens granted meanwhile")
    assert rates[-1] == 200.0
    assert all(a <= b <= 200.0 for a, b in itertools.pairwise(rates))
    assert 0.8 <= elapsed <= 1.4  # linear: 100/s gained at 100/s per second
    assert 100 * elapsed - 10 <= granted <= 200 * elapsed + 10  # sent at the climbing rate, never past the cap


# ---------------------------------------------------------------- keys expire


async def test_idle_keys_expire(aclient: redis.asyncio.Redis) -> None:
    bucket = TokenBucket(aclient, ACCOUNT, 100, burst=5)
    assert (await bucket.try_acquire(5)).granted == 5  # backlog: 50 ms
    ttl = await aclient.pttl(keys.rate_bucket(ACCOUNT))
    assert keys.RATE_BUCKET_GRACE_MS < ttl <= keys.RATE_BUCKET_GRACE_MS + 50

    assert await bucket.throttled() == 50.0
    aimd_ttl = await aclient.pttl(keys.rate_aimd(ACCOUNT))
    assert keys.RATE_AIMD_TTL_SECONDS * 1000 - 1000 < aimd_ttl <= keys.RATE_AIMD_TTL_SECONDS * 1000

    await asyncio.sleep(keys.RATE_BUCKET_GRACE_MS / 1000 + 0.25)
    assert not await aclient.exists(keys.rate_bucket(ACCOUNT))
    assert (await bucket.try_acquire(5)).granted == 2  # a full bucket again: 5 tokens at 200/s = 2.5 at 50/s


# ---------------------------------------------------------------- the emission window

WINDOW_RATE = 500
WINDOW_CHUNK = 50
WINDOW_RUN_SECONDS = 2.5
LATE = 0.4  # how late a late sender writes, seconds


def _late(slot: int) -> bool:
    """Three bookings in a row out of every twenty (100 ms each) are written LATE seconds after their
    moment: senders descheduled on a busy machine, or Redis answers that reached them late."""
    return slot % 20 < 3


async def _send_late_for(redis_url: str, start_at: float, stop_at: float, windowed: bool) -> list[tuple[float, int]]:
    """A sender that books a chunk, and at its moment (late for some, see _late) writes it:
    through the emission window when ``windowed``. Returns (write time, tokens) per chunk."""
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        pipelined = PipelinedRedis(redis_url)
        bucket = TokenBucket(client, ACCOUNT, WINDOW_RATE, chunk=WINDOW_CHUNK)
        window = EmissionWindow(pipelined, ACCOUNT, WINDOW_RATE + WINDOW_CHUNK)
        await asyncio.sleep(max(0.0, start_at - time.time()))
        writes: list[tuple[float, int]] = []
        while time.time() < stop_at:
            booking = await bucket.reserve()
            if not booking.granted:
                await asyncio.sleep(booking.wait)
                continue
            moment = booking.at + booking.wait
            late = _late(round(moment * WINDOW_RATE / WINDOW_CHUNK))
            await asyncio.sleep(booking.wait)
            if not windowed:
                await asyncio.sleep(LATE if late else 0)
                writes.append((time.time(), booking.granted))
                continue
            ticket = await window.admit(booking.granted)
            await asyncio.sleep(LATE if late else 0)  # late between the admission and the write
            writes.append((time.time(), booking.granted))
            assert await window.report(ticket)
        return writes
    finally:
        await client.aclose()
        await pipelined.close()


def _send_late_process(redis_url: str, start_at: float, stop_at: float, windowed: bool) -> list[tuple[float, int]]:
    return asyncio.run(_send_late_for(redis_url, start_at, stop_at, windowed))


def _busiest(writes: list[tuple[float, int]], span: float = 1.0) -> int:
    """The most tokens written within any window (t - span, t]."""
    events = sorted(writes)
    best = inside = start = 0
    for at, n in events:
        inside += n
        while events[start][0] <= at - span:
            inside -= events[start][1]
            start += 1
        best = max(best, inside)
    return best


@pytest.mark.parametrize("windowed", [False, True], ids=["bucket-alone", "with-the-window"])
async def test_the_window_bounds_what_late_senders_write(redis_url: str, redis_client: redis.Redis,
                                                         windowed: bool) -> None:
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        loop = asyncio.get_running_loop()
        assert all(await asyncio.gather(*(loop.run_in_executor(pool, _ready) for _ in range(2))))
        start_at = time.time() + 0.3
        stop_at = start_at + WINDOW_RUN_SECONDS
        processes = [loop.run_in_executor(pool, _send_late_process, redis_url, start_at, stop_at, windowed)
                     for _ in range(2)]
        tasks = [_send_late_for(redis_url, start_at, stop_at, windowed) for _ in range(4)]
        per_sender = await asyncio.gather(*tasks, *processes)

    writes = [write for sender in per_sender for write in sender]
    busiest = _busiest(writes)
    total = sum(n for _, n in writes)
    span = max(at for at, _ in writes) - min(at for at, _ in writes)
    print(f"\n{'with' if windowed else 'without'} the window: {total} tokens written in {span:.2f} s, "
          f"busiest second {busiest} (bound {WINDOW_RATE + WINDOW_CHUNK})")
    if not windowed:
        # Every booking was exact, yet late writes bunch with punctual ones: what the window is for.
        assert busiest >= WINDOW_RATE + 2 * WINDOW_CHUNK
        return
    assert busiest <= WINDOW_RATE + WINDOW_CHUNK
    # Each chunk holds its place from admission to one window after its report: late writers cost a
    # little of the rate, not most of it.
    assert total >= 0.85 * WINDOW_RATE * span


async def test_admission_at_a_known_state(pipe: PipelinedRedis, aclient: redis.asyncio.Redis) -> None:
    window = EmissionWindow(pipe, ACCOUNT, 100, window=0.5, retry=0.003)
    first, wait = await window.try_admit(60)
    assert first is not None and wait == 0.0
    assert await window.try_admit(50) == (None, 0.003), "the unreported 60 hold their place"
    assert await window.report(first)
    reported = time.time()
    await aclient.script_flush()  # as after a restart: the next report loads its script again
    assert not await window.report(first), "a second report changes nothing"
    ticket, wait = await window.try_admit(50)
    assert ticket is None
    # Room comes when the 60 leave the window, half a second after their report.
    assert 0.3 <= wait <= 0.5
    second, _ = await window.try_admit(40)
    assert second is not None, "what fits is admitted meanwhile"
    await asyncio.sleep(max(0.0, reported + 0.5 - time.time()) + 0.01)
    third, _ = await window.try_admit(50)
    assert third is not None
    assert await aclient.zcard(keys.rate_sending(ACCOUNT)) == 2
    assert await aclient.zcard(keys.rate_sent(ACCOUNT)) == 0, "the report left the window"


async def test_a_chunk_never_reported_counts_as_written_when_found_stale(pipe: PipelinedRedis) -> None:
    window = EmissionWindow(pipe, ACCOUNT, 100, window=0.4, stale=0.3)
    lost, _ = await window.try_admit(100)  # its sender was killed before reporting
    assert lost is not None
    ticket, wait = await window.try_admit(10)
    assert ticket is None and wait == window.retry
    await asyncio.sleep(0.32)
    ticket, wait = await window.try_admit(10)
    assert ticket is None, "counted as written when found stale, for one more window"
    assert 0.35 <= wait <= 0.4
    await asyncio.sleep(wait + 0.01)
    ticket, _ = await window.try_admit(100)
    assert ticket is not None
    assert not await window.report(lost), "a report after the chunk was found stale changes nothing"


def test_bad_window_parameters_are_refused(redis_url: str) -> None:
    pipelined = PipelinedRedis(redis_url)
    for kwargs in ({"limit": 0}, {"limit": 1.5}, {"limit": 10, "window": 0}, {"limit": 10, "stale": -1},
                   {"limit": 10, "retry": float("nan")}):
        with pytest.raises(ValueError):
            EmissionWindow(pipelined, ACCOUNT, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EmissionWindow(pipelined, "a{b}", 10)


async def test_a_chunk_must_fit_the_window(pipe: PipelinedRedis) -> None:
    window = EmissionWindow(pipe, ACCOUNT, 10)
    for n in (0, 11, 2.0):
        with pytest.raises(ValueError):
            await window.try_admit(n)  # type: ignore[arg-type]
