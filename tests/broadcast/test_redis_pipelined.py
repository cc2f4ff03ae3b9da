"""The auto-pipelined Redis connection (broadcast.redis_pipelined) against a real Redis.

Replies reach their own callers however many are in flight, errors and cancelled callers leave the
stream in step, scripts load themselves, a lost or silent connection fails what is in flight and the
next call connects again.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from broadcast.redis_pipelined import PipelinedRedis, RedisReplyError, Script


async def test_concurrent_commands_share_one_connection_and_get_their_own_replies(pipe: PipelinedRedis) -> None:
    replies = await asyncio.gather(*(pipe.execute("ECHO", f"caller {i}") for i in range(500)))
    assert replies == [f"caller {i}".encode() for i in range(500)]
    ids = await asyncio.gather(*(pipe.execute("CLIENT", "ID") for _ in range(50)))
    assert len(set(ids)) == 1


async def test_an_error_reply_goes_to_its_caller_and_the_rest_stay_in_step(pipe: PipelinedRedis,
                                                                           redis_client: redis.Redis) -> None:
    redis_client.set("text", "not a number")
    results = await asyncio.gather(pipe.execute("ECHO", "before"), pipe.execute("INCR", "text"),
                                   pipe.execute("ECHO", "after"), return_exceptions=True)
    assert results[0] == b"before" and results[2] == b"after"
    assert isinstance(results[1], RedisReplyError) and "not an integer" in str(results[1])


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others(pipe: PipelinedRedis) -> None:
    await pipe.execute("PING")  # connected: the commands below are sent, then the first caller gives up
    busy = ("local function us() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end "
            "local start = us() repeat until us() - start > 200000 return 'first'")  # Redis busy 0.2 s
    first = asyncio.ensure_future(pipe.execute("EVAL", busy, 0))
    second = asyncio.ensure_future(pipe.execute("ECHO", "second"))
    await asyncio.sleep(0.05)  # both written; Redis still busy with the first
    assert not first.done()
    first.cancel()
    assert await second == b"second"
    assert await pipe.execute("ECHO", "third") == b"third"


async def test_a_dropped_connection_says_why(redis_url: str, redis_client: redis.Redis) -> None:
    pipe = PipelinedRedis(redis_url, reply_timeout=0.2)
    try:
        with pytest.raises(ConnectionError, match=r"no reply from Redis within 0\.2s"):
            await pipe.execute("BLPOP", "nothing-comes", 5)
    finally:
        await pipe.close()


async def test_a_script_loads_itself_again_after_a_flush(pipe: PipelinedRedis, redis_client: redis.Redis) -> None:
    script = Script.of("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await pipe.evalsha(script, ["counter"], [2]) == 2
    redis_client.script_flush()
    assert await pipe.evalsha(script, ["counter"], [3]) == 5
    assert redis_client.script_exists(script.sha) == [True]
    with pytest.raises(RedisReplyError, match="boom"):
        await pipe.evalsha(Script.of("return redis.error_reply('boom')"), [], [])


async def test_a_lost_connection_fails_what_is_in_flight_and_the_next_call_reconnects(
        pipe: PipelinedRedis, redis_client: redis.Redis) -> None:
    first_id = await pipe.execute("CLIENT", "ID")
    waiting = asyncio.ensure_future(pipe.execute("BLPOP", "nothing-comes", 5))
    await asyncio.sleep(0.1)
    assert redis_client.client_kill_filter(_id=first_id) == 1
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(waiting, 2)
    assert await pipe.execute("ECHO", "again") == b"again"
    assert await pipe.execute("CLIENT", "ID") != first_id


async def test_a_reply_that_does_not_come_in_time_drops_the_connection(redis_url: str,
                                                                      redis_client: redis.Redis) -> None:
    pipe = PipelinedRedis(redis_url, reply_timeout=0.2)
    try:
        first_id = await pipe.execute("CLIENT", "ID")
        started = asyncio.get_running_loop().time()
        with pytest.raises(ConnectionError):
            await pipe.execute("BLPOP", "nothing-comes", 5)
        assert asyncio.get_running_loop().time() - started < 1.0
        assert await pipe.execute("CLIENT", "ID") != first_id
    finally:
        await pipe.close()


async def test_the_database_of_the_url_is_selected(redis_url: str, redis_client: redis.Redis) -> None:
    other = PipelinedRedis(redis_url.rsplit("/", 1)[0] + "/3")
    try:
        await other.execute("SET", "where", "db3")
    finally:
        await other.close()
    db3 = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3")
    try:
        assert db3.get("where") == b"db3" and redis_client.get("where") is None
    finally:
        db3.flushdb()
        db3.close()


async def test_calls_after_close_and_to_no_server_are_connection_errors(redis_url: str) -> None:
    pipe = PipelinedRedis(redis_url)
    await pipe.execute("PING")
    await pipe.close()
    with pytest.raises(ConnectionError):
        await pipe.execute("PING")
    nowhere = PipelinedRedis("redis://127.0.0.1:1/0", connect_timeout=1)
    with pytest.raises(ConnectionError, match="cannot connect"):
        await nowhere.execute("PING")
