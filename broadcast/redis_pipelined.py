"""One Redis connection shared by every coroutine of an event loop, pipelined automatically.

For the API's hot paths (an acknowledgement is two short script calls). With redis-py's asyncio
client each command takes a connection from the pool, arms a timeout, goes through the retry
wrapper and makes its own system calls: about a fifth of the API's CPU under a flood of
acknowledgements, more than Redis spends answering. Here, commands issued during one turn of the
loop leave in one write; Redis answers in order, so replies are matched to their callers by
position, parsed by hiredis as they arrive.

Only for commands that answer at once: a blocking command (BLPOP, XREAD BLOCK, ...) would hold
up every caller queued behind it. No MULTI/EXEC across calls (other callers' commands interleave);
use a script.

A lost connection fails the calls in flight with ``ConnectionError`` (the caller decides whether
to retry: a write may or may not have been applied) and the next call connects again. A reply
slower than ``reply_timeout`` drops the connection, failing everything in flight with it: replies
are matched by position, so one lost reply would misplace all that follow.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from redis.connection import parse_url

DEFAULT_REPLY_TIMEOUT = 10.0


class RedisReplyError(Exception):
    """Redis answered with an error (``-ERR ...``, ``-NOSCRIPT ...``, a script's error)."""


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script, called by its SHA1 and loaded on first use (or after SCRIPT FLUSH, restart)."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: PipelinedRedis) -> None:
        self.owner = owner
        self.reader = hiredis.Reader(replyError=RedisReplyError)
        self.transport: asyncio.Transport | None = None
        # (future, loop time sent) per command in flight, in the order they were written
        self.pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.outbox: list[bytes] = []
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        while (reply := self.reader.gets()) is not False:
            if not pending:  # a reply nobody asked for: the stream is out of step, start over
                self._abort("a reply came that no command was waiting for")
                return
            future = pending.popleft()[0]
            if future.done():  # the caller was cancelled
                continue
            if isinstance(reply, RedisReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.lost or exc or ConnectionError("connection closed")  # _abort's reason first
        self.transport = None
        error = ConnectionError(f"connection to Redis lost: {self.lost}")
        while self.pending:
            future = self.pending.popleft()[0]
            if not future.done():
                future.set_exception(error)
        self.owner._forget(self)

    def send(self, command: bytes, future: asyncio.Future[Any], now: float) -> None:
        if not self.outbox:
            asyncio.get_running_loop().call_soon(self.flush)
        self.outbox.append(command)
        self.pending.append((future, now))

    def flush(self) -> None:
        if self.outbox and self.transport is not None:
            self.transport.write(b"".join(self.outbox))
        self.outbox.clear()

    def oldest_sent(self) -> float | None:
        return self.pending[0][1] if self.pending else None

    def _abort(self, why: str) -> None:
        self.lost = ConnectionError(why)
        if self.transport is not None:
            self.transport.abort()


class PipelinedRedis:
    """An auto-pipelined connection to the Redis at ``url`` (``redis://[:password@]host:port/db``).

    Use from one event loop only. ``await close()`` when done.
    """

    def __init__(self, url: str, *, reply_timeout: float = DEFAULT_REPLY_TIMEOUT,
                 connect_timeout: float = 5.0) -> None:
        self._address = parse_url(url)
        self.reply_timeout = reply_timeout
        self.connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    async def execute(self, *args: str | bytes | int | float) -> Any:
        """Send one command; its reply (bytes, int, list, None).

        Raises:
            RedisReplyError: Redis answered with an error.
            ConnectionError: Redis cannot be reached, or the connection was lost before the reply.
        """
        protocol = self._protocol if self._protocol is not None else await self._connect()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        protocol.send(hiredis.pack_command(args), future, loop.time())
        return await future

    def send_now(self, *args: str | bytes | int | float) -> asyncio.Future[Any] | None:
        """Write one command at once, within the caller's callback (``execute`` writes at the end of
        the loop's turn); the future of its reply. None when not connected: use ``execute``."""
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            return None
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        protocol.send(hiredis.pack_command(args), future, loop.time())
        protocol.flush()
        return future

    async def evalsha(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` with ``keys`` and ``args``; loads it when Redis does not know it yet."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.flush()
            protocol.transport.close()

    async def _connect(self) -> _Protocol:
        if self._closed:
            raise ConnectionError("closed")
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._protocol is not None:
                return self._protocol
            if self._closed:
                raise ConnectionError("closed")
            loop = asyncio.get_running_loop()
            address = self._address
            host, port = address.get("host", "localhost"), address.get("port", 6379)
            setup: list[tuple[Any, ...]] = []
            if address.get("password"):
                setup.append(("AUTH", *([address["username"]] if address.get("username") else []),
                              address["password"]))
            if address.get("db"):
                setup.append(("SELECT", address["db"]))
            protocol: _Protocol | None = None
            try:
                # The connection and its AUTH / SELECT within one time limit: a Redis that accepts and
                # then says nothing must not hold every caller at the lock.
                async with asyncio.timeout(self.connect_timeout):
                    _, protocol = await loop.create_connection(lambda: _Protocol(self), host, port)
                    replies = []
                    for command in setup:
                        future = loop.create_future()
                        protocol.send(hiredis.pack_command(command), future, loop.time())
                        replies.append(future)
                    await asyncio.gather(*replies)
            except BaseException as exc:
                if protocol is not None and protocol.transport is not None:
                    protocol.transport.close()
                if isinstance(exc, (OSError, TimeoutError)):
                    raise ConnectionError(f"cannot connect to Redis at {host}:{port}: {exc}") from exc
                raise
            if self._closed:  # closed while connecting
                assert protocol.transport is not None
                protocol.transport.close()
                raise ConnectionError("closed")
            self._protocol = protocol
            self._arm_watchdog()
            return protocol

    def _forget(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None

    def _arm_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        loop = asyncio.get_running_loop()
        self._watchdog = loop.call_later(max(0.05, self.reply_timeout / 4), self._check_replies)

    def _check_replies(self) -> None:
        protocol = self._protocol
        if protocol is None or self._closed:
            self._watchdog = None
            return
        oldest = protocol.oldest_sent()
        if oldest is not None and asyncio.get_running_loop().time() - oldest > self.reply_timeout:
            protocol._abort(f"no reply from Redis within {self.reply_timeout}s")
        self._arm_watchdog()


__all__ = ["PipelinedRedis", "RedisReplyError", "Script"]
