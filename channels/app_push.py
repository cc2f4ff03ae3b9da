"""App push notifications through Firebase Cloud Messaging (HTTP v1): device tokens and district topics.

Wire format:

    POST {token_url}  grant_type=client_credentials, client_id, client_secret
         -> {"access_token", "expires_in", "token_type": "Bearer"}   (cached in Redis)
    POST {url}/v1/projects/{project}/messages:send   Authorization: Bearer <access token>
         {"message": {"token": ... | "topic": ..., "notification": {"title", "body"},
                      "data": {"alert_id", "identifier", "msg_type", "severity", "signal", ...},
                      "android": {"priority": "high", "ttl": "<seconds>s", "notification": {...}},
                      "apns": {"headers": {...}, "payload": {"aps": {...}}}}}
         -> {"name": "projects/<project>/messages/<id>"}

A recipient whose address starts with ``/topics/``, or whose attribute ``kind`` is
``topic``, is a topic (``district-440304``: every app subscribed to that district);
any other address is a device registration token. Title and text come from the
``subject`` and ``body`` blocks of ``templates/app_push/<language>.j2``; ``data`` (strings
only, as FCM requires) lets the app open the full alert. Messages live on the device
until the alert expires (android ``ttl``, ``apns-expiration``).

Error mapping, per recipient:

    404 UNREGISTERED, 400 INVALID_ARGUMENT on ``message.token``, 403 SENDER_ID_MISMATCH
        -> permanent; the device token is added to the Redis set INVALID_PUSH_TOKENS so
           that the subscriber registry drops it
    other 400 -> permanent (FCM refuses the message itself)
    429 QUOTA_EXCEEDED -> throttled with FCM's Retry-After
    500, 503 UNAVAILABLE, timeout -> transient
    401 -> the access token is evicted and fetched again, the send retried once; a second
           401 -> TransientDeliveryError for the batch
    403 PERMISSION_DENIED (the service account may not send for the project), token endpoint
        refusing the credentials, connection refused -> TransientDeliveryError for the batch
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from broadcast import keys
from broadcast.errors import InvalidInput, TransientDeliveryError
from broadcast.settings import Settings
from channels.base import (
    Capabilities,
    ChannelContext,
    DeliveryResult,
    Message,
    Recipient,
    channel_option,
    register,
    simulator_url,
)
from channels.provider_tokens import ProviderToken, ProviderTokenCache

CHANNEL = "app_push"
# Set of device registration tokens FCM reported as invalid; the subscriber registry owns it
# (removes the tokens from its records and the members from the set).
# TODO(keys): move to broadcast/keys.py.
INVALID_PUSH_TOKENS = keys.INVALID_PUSH_TOKENS
TOPIC_PREFIX = "/topics/"
_TOPIC = re.compile(r"^[a-zA-Z0-9\-_.~%]{1,900}$")
_DEVICE_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$")
_TOKEN_INVALID_CODES = frozenset({"UNREGISTERED", "SENDER_ID_MISMATCH"})
DEFAULT_TTL_SECONDS = 6 * 3600  # when the alert has no expiry
MAX_TTL_SECONDS = 28 * 86400  # FCM's maximum
THROTTLE_RETRY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class AppPushConfig:
    url: str
    token_url: str
    project: str
    client_id: str
    client_secret: str
    android_channel: str  # the app's notification channel for warnings
    concurrency: int
    timeout: float

    def __post_init__(self) -> None:
        for name in ("url", "token_url"):
            if not getattr(self, name).startswith(("http://", "https://")):
                raise InvalidInput(f"app_push.{name} must be an http(s) URL", field="channel_options")
        if self.concurrency <= 0 or self.timeout <= 0:
            raise InvalidInput("app_push.concurrency and app_push.timeout must be positive", field="channel_options")

    @classmethod
    def from_settings(cls, settings: Settings) -> AppPushConfig:
        def option(key: str, default: str) -> str:
            return channel_option(settings, CHANNEL, key, default)

        url = option("url", simulator_url(settings, "fcm")).rstrip("/")
        try:
            return cls(
                url=url,
                token_url=option("token_url", f"{url}/token"),
                project=option("project", "szmb-alerts"),
                client_id=option("client_id", "broadcast-push@szmb-alerts.iam.gserviceaccount.com"),
                client_secret=option("client_secret", "9d1e4b7a0c3f6e2d8b5a1c4f7e0d3b6a"),
                android_channel=option("android_channel", "weather_warnings"),
                concurrency=int(option("concurrency", "64")),
                timeout=float(option("timeout", "10")),
            )
        except ValueError as exc:
            raise InvalidInput(f"app_push option: {exc}", field="channel_options") from exc


def topic_of(recipient: Recipient) -> str | None:
    """The FCM topic a recipient stands for, or None for a device token."""
    if recipient.address.startswith(TOPIC_PREFIX):
        return recipient.address[len(TOPIC_PREFIX):]
    if recipient.attributes.get("kind") == "topic":
        return recipient.address
    return None


def ttl_seconds(message: Message, now: datetime | None = None) -> int:
    """How long FCM keeps the notification for an offline device: until the alert expires."""
    expires = message.alert.expires
    if expires is None:
        return DEFAULT_TTL_SECONDS
    remaining = (expires - (now or datetime.now(UTC))).total_seconds()
    return max(0, min(MAX_TTL_SECONDS, int(remaining)))


def build_payload(message: Message, recipient: Recipient, android_channel: str) -> dict[str, Any]:
    """The ``message`` object of an FCM v1 send for one recipient."""
    text = message.text_for(recipient.language)
    alert = message.alert
    ttl = ttl_seconds(message)
    data = {
        "alert_id": message.alert_id,
        "identifier": alert.identifier,
        "msg_type": alert.msg_type.value,
        "severity": alert.severity.value,
        "signal": message.signal or "",
        "colour": message.colour or "",
        "language": text.language,
        "sent": alert.sent.isoformat(),
        "expires": alert.expires.isoformat() if alert.expires else "",
    }
    payload: dict[str, Any] = {
        "notification": {"title": text.subject or text.body[:60], "body": text.body},
        "data": data,
        "android": {"priority": "high", "ttl": f"{ttl}s",
                    "notification": {"channel_id": android_channel, "color": message.colour or "#E60012",
                                     "tag": alert.identifier}},
        "apns": {"headers": {"apns-priority": "10", "apns-push-type": "alert",
                             "apns-expiration": str(int(datetime.now(UTC).timestamp()) + ttl)},
                 "payload": {"aps": {"sound": "default", "interruption-level": "time-sensitive",
                                     "thread-id": alert.identifier}}},
    }
    topic = topic_of(recipient)
    if topic is not None:
        payload["topic"] = topic
    else:
        payload["token"] = recipient.address
    return payload


@register
class AppPushAdapter:
    """Push notifications to the bureau's app through FCM."""

    name = CHANNEL
    capabilities = Capabilities(max_batch=500, max_length=None, segment_rule="none", rate_per_second=10000,
                                supports_receipts=False, supports_ack=False)

    def __init__(self, context: ChannelContext) -> None:
        self.config = AppPushConfig.from_settings(context.settings)
        self._http = context.http
        self._redis = context.redis
        self._timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        self._tokens = ProviderTokenCache(CHANNEL, self._fetch_token, context.redis)
        # Shared by every send of this adapter: a worker sends several chunks at once (sender_lanes),
        # and ``concurrency`` bounds what the provider gets from the process, not from each chunk.
        self._in_flight = asyncio.Semaphore(self.config.concurrency)

    def endpoint(self) -> str:
        return f"{self.config.url}/v1/projects/{self.config.project}/messages:send"

    async def aclose(self) -> None:
        """Nothing to close: the HTTP session and Redis belong to the context."""

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """One FCM message per device token or topic, at most ``concurrency`` in flight (for the adapter).

        Raises:
            TransientDeliveryError: FCM is unreachable, refuses the service account, or keeps
                refusing freshly fetched access tokens.
        """
        problems = [self._address_problem(r) for r in batch]
        if any(p is None for p in problems):
            await self._tokens.get()  # one fetch for the batch; refused credentials stop it here
        limit = self._in_flight

        async def one(recipient: Recipient, problem: str | None) -> DeliveryResult:
            if problem is not None:
                return DeliveryResult.permanent(recipient, problem)
            async with limit:
                return await self._send_one(message, recipient)

        outcomes = await asyncio.gather(*(one(r, p) for r, p in zip(batch, problems, strict=True)),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return list(outcomes)  # type: ignore[arg-type]

    @staticmethod
    def _address_problem(recipient: Recipient) -> str | None:
        topic = topic_of(recipient)
        if topic is not None:
            return None if _TOPIC.match(topic) else f"not an FCM topic name: {topic!r}"
        return None if _DEVICE_TOKEN.match(recipient.address) else "not an FCM registration token"

    async def _send_one(self, message: Message, recipient: Recipient) -> DeliveryResult:
        body = {"message": build_payload(message, recipient, self.config.android_channel)}
        for attempt in (1, 2):
            token = await self._tokens.get()
            try:
                status, headers, answer = await self._post(token, body)
            except TimeoutError:
                return DeliveryResult.transient(recipient, "FCM did not answer in time")
            if status == 200 and answer.get("name"):
                return DeliveryResult.accepted(recipient, str(answer["name"]))
            error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
            fcm_code = _fcm_code(error)
            described = f"FCM {status} {fcm_code or error.get('status', '')}: {error.get('message', '')}".rstrip()
            retry_after = _retry_after(headers)
            if status == 401:
                await self._tokens.evict(token)
                if attempt == 1:
                    continue
                raise TransientDeliveryError(f"FCM refuses a freshly fetched access token ({described})")
            if status == 429:
                return DeliveryResult.throttled(recipient, described, retry_after or THROTTLE_RETRY_SECONDS)
            if status >= 500:
                return DeliveryResult.transient(recipient, described, retry_after)
            if status == 403 and fcm_code != "SENDER_ID_MISMATCH":
                raise TransientDeliveryError(f"FCM refuses the service account ({described})")
            if topic_of(recipient) is None and (fcm_code in _TOKEN_INVALID_CODES or _about_token(error)):
                await self._forget_device(recipient.address)
            return DeliveryResult.permanent(recipient, described)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _forget_device(self, device_token: str) -> None:
        if self._redis is not None:
            await self._redis.sadd(INVALID_PUSH_TOKENS, device_token)  # type: ignore[misc]

    async def _post(self, token: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        try:
            async with self._http.post(self.endpoint(), json=body, timeout=self._timeout,
                                       headers={"Authorization": f"Bearer {token}"}) as response:
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                headers = {k.lower(): v for k, v in response.headers.items()}
                return response.status, headers, answer if isinstance(answer, dict) else {}
        except aiohttp.ClientConnectionError as exc:
            raise TransientDeliveryError(f"FCM unreachable at {self.config.url}: {exc}") from exc

    async def _fetch_token(self) -> ProviderToken:
        form = {"grant_type": "client_credentials", "client_id": self.config.client_id,
                "client_secret": self.config.client_secret}
        try:
            async with self._http.post(self.config.token_url, data=form, timeout=self._timeout) as response:
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TransientDeliveryError(f"FCM token endpoint unreachable at {self.config.token_url}: {exc}") from exc
        if status != 200 or not isinstance(answer, dict) or not answer.get("access_token"):
            detail = answer.get("error") if isinstance(answer, dict) else None
            raise TransientDeliveryError(f"FCM token endpoint refuses the service account (HTTP {status}, {detail})")
        return ProviderToken(str(answer["access_token"]), float(answer.get("expires_in", 3600)))


def _fcm_code(error: dict[str, Any]) -> str | None:
    for detail in error.get("details") or ():
        if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("FcmError"):
            return str(detail.get("errorCode"))
    return None


def _about_token(error: dict[str, Any]) -> bool:
    """True when a 400 names ``message.token`` as the bad field (not the payload)."""
    for detail in error.get("details") or ():
        for violation in (detail.get("fieldViolations") or ()) if isinstance(detail, dict) else ():
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return False


def _retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
