"""Provider access tokens (WeChat, Weibo, FCM) shared by every sender through Redis.

A provider hands out an access token that lives for a while (WeChat 7200 s, FCM 3600 s)
and limits how often one may be fetched (WeChat: 2000 fetches a day, and each fetch
invalidates the previous token after five minutes). So every worker process reads the
same cached token from Redis under ``keys.provider_token(channel)``; the key's TTL is
shorter than the token's own lifetime so that a cached token is never one the provider
already considers expired. Fetching happens under a lock (an in-process asyncio lock, and
a Redis lock across processes) with a second look at the cache once the lock is held, so
concurrent senders that all find the cache empty fetch once. When the provider answers a
send with its token-error code, the adapter calls :meth:`ProviderTokenCache.evict` with
the token it used; only that token is deleted, never a fresher one another sender has
already fetched.

Without Redis (``ChannelContext.redis`` is None, as in a one-off CLI send) the token is
cached in the adapter's memory instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import redis.asyncio
import redis.exceptions

from broadcast import keys
from broadcast.errors import TransientDeliveryError


@dataclass(frozen=True, slots=True)
class ProviderToken:
    """An access token and its lifetime in seconds, as the provider's token endpoint returned them."""

    value: str
    expires_in: float

    def __post_init__(self) -> None:
        if not self.value:
            raise TransientDeliveryError("the provider returned an empty access token")


TokenFetcher = Callable[[], Awaitable[ProviderToken]]

# KEYS[1] the token key; ARGV[1] the token the caller used. Deletes the key only while it
# still holds that token, so a sender with a stale token cannot evict a fresh one.
_EVICT_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

LOCK_TIMEOUT_SECONDS = 30.0  # longest a token fetch may hold the Redis lock


def cache_ttl(expires_in: float) -> int:
    """Seconds to cache a token that the provider says lives ``expires_in`` seconds.

    A tenth of the lifetime (at least a minute, at most five) is kept in hand, so a token
    is refreshed before the provider expires it, even with clock skew and slow requests.
    """
    margin = min(max(expires_in / 10, 60.0), 300.0)
    return max(1, int(expires_in - margin))


def lock_key(channel: str) -> str:
    """The Redis lock held while one sender fetches ``channel``'s token."""
    return keys.provider_token_lock(channel)


class ProviderTokenCache:
    """One channel's access token: cached in Redis, fetched once under a lock, evicted on token errors.

    Args:
        channel: the channel name (the Redis key is ``keys.provider_token(channel)``).
        fetch: coroutine that asks the provider for a new token; it raises
            TransientDeliveryError when the provider is unreachable or refuses the credentials.
        redis_client: the shared Redis, or None to cache in this object only.
    """

    def __init__(self, channel: str, fetch: TokenFetcher, redis_client: redis.asyncio.Redis | None) -> None:
        self.channel = channel
        self.key = keys.provider_token(channel)
        self._fetch = fetch
        self._redis = redis_client
        self._lock = asyncio.Lock()
        self._local: tuple[str, float] | None = None  # (token, monotonic deadline) when there is no Redis

    async def get(self) -> str:
        """The current token, fetching one if none is cached.

        Raises:
            TransientDeliveryError: no token could be fetched (provider down, bad credentials).
        """
        cached = await self._cached()
        if cached is not None:
            return cached
        async with self._lock:
            cached = await self._cached()
            if cached is not None:
                return cached
            if self._redis is None:
                return await self._fetch_and_store()
            try:
                async with self._redis.lock(lock_key(self.channel), timeout=LOCK_TIMEOUT_SECONDS,
                                            blocking_timeout=LOCK_TIMEOUT_SECONDS):
                    cached = await self._cached()
                    if cached is not None:
                        return cached
                    return await self._fetch_and_store()
            except redis.exceptions.LockError as exc:
                raise TransientDeliveryError(f"{self.channel}: could not take the token lock: {exc}") from exc

    async def evict(self, token: str) -> None:
        """Forget ``token`` after the provider rejected it (a fresher cached token is kept)."""
        if self._redis is None:
            if self._local is not None and self._local[0] == token:
                self._local = None
            return
        await self._redis.eval(_EVICT_IF_EQUAL, 1, self.key, token)  # type: ignore[no-untyped-call]

    async def _cached(self) -> str | None:
        if self._redis is None:
            if self._local is not None and self._local[1] > time.monotonic():
                return self._local[0]
            return None
        value = await self._redis.get(self.key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def _fetch_and_store(self) -> str:
        token = await self._fetch()
        ttl = cache_ttl(token.expires_in)
        if self._redis is None:
            self._local = (token.value, time.monotonic() + ttl)
        else:
            await self._redis.set(self.key, token.value, ex=ttl)
        return token.value
