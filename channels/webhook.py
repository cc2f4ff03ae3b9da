"""Partner webhooks: signed JSON POSTs to partner departments (water, transport, power...).

A partner (:class:`Partner`) registers a URL, a shared secret and filters: the hazards it
wants (empty: all), the warning levels (a list, and/or a minimum colour; empty: all) and
the administrative units (adcodes; empty: all). Partners live in the Redis hash
``keys.WEBHOOK_PARTNERS`` (id -> JSON), managed with :func:`add_partner`,
:func:`remove_partner` and :func:`list_partners`; :func:`partner_recipient` makes the
``Recipient`` (id = partner id, address = URL) and :func:`partner_wants` is the filter the
targeting stage applies (send() applies it again, as a partner may have changed its filters).

The wire protocol, as partners are told it:

    POST <url>
    Content-Type: application/json
    X-Broadcast-Timestamp: <unix seconds>
    X-Broadcast-Delivery: <uuid, the same for every attempt of one alert to one partner>
    X-Broadcast-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<raw body>")>

    {"alert_id", "identifier", "sender", "msg_type", "status", "signal", "hazard", "level",
     "severity", "urgency", "certainty", "headline": {lang: ...}, "text": {lang: ...},
     "areas": [{"desc": {lang: ...}, "geocodes": [...]}], "references", "sent", "expires",
     "cap_url", "cap_xml"}

A receiver verifies the signature, refuses timestamps more than 5 minutes off (401) and
delivery ids it has already accepted (409). Answers: 2xx accepted; 409 means the partner
already has this delivery (an earlier attempt got through), so it counts as accepted; 429
throttled (``Retry-After`` honoured); 408 and 5xx, time-outs and refused connections are
retried here a few times with exponential backoff and jitter (tenacity), then reported
``transient``; any other 4xx, a redirect, or a bad URL is ``permanent``.

Each partner is an independent endpoint, so one partner being down is a ``transient``
result for that partner only; the batch is raised as a whole
(:class:`~broadcast.errors.TransientDeliveryError`) only when the partner registry in
Redis cannot be read. A partner whose filters do not match the alert gets ``suppressed``
(not sent on purpose, not a failure) with a reason starting ``"filtered:"``. Partners are
posted to concurrently.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import redis
import redis.asyncio
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random

from broadcast import keys
from broadcast.cap import format_datetime
from broadcast.errors import InvalidInput, TransientDeliveryError
from broadcast.settings import Settings
from broadcast.signals import SIGNAL_VALUE_NAME, Level
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

DEMO_PARTNER_ID = "demo-partner"
DEMO_SECRET = "demo-webhook-secret-change-me"  # what the webhook simulator accepts by default
TIMESTAMP_HEADER = "X-Broadcast-Timestamp"
SIGNATURE_HEADER = "X-Broadcast-Signature"
DELIVERY_HEADER = "X-Broadcast-Delivery"
FILTERED = "filtered"  # prefix of the error of a partner that did not subscribe to the alert

_PARTNER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_ADCODE = re.compile(r"^\d{2}(\d{2}){0,2}(\d{3}){0,2}$")  # 2, 4, 6, 9 or 12 digits
# Delivery ids are derived from (alert id, partner id), so every retry of the pipeline too
# carries the same id and the partner can drop duplicates.
_DELIVERY_NAMESPACE = uuid.UUID("0c1e7b4a-6a0f-5d61-8f0e-2b9d4c3a7e15")


# ---------------------------------------------------------------- partners


@dataclass(frozen=True, slots=True)
class Partner:
    """A partner department's webhook subscription."""

    id: str
    url: str
    secret: str
    name: str = ""
    hazards: tuple[str, ...] = ()  # hazard codes ("rainstorm", "typhoon"); empty: every hazard
    levels: tuple[str, ...] = ()  # colours wanted ("orange", "red"); empty: every level
    min_level: str | None = None  # the weakest colour wanted; None: no minimum
    adcodes: tuple[str, ...] = ()  # administrative units; empty: everywhere

    def __post_init__(self) -> None:
        if not _PARTNER_ID.match(self.id):
            raise InvalidInput("1-64 characters: lower-case letters, digits, '-' or '_'", field="id")
        problem = url_problem(self.url)
        if problem:
            raise InvalidInput(problem, field="url")
        if len(self.secret) < 16:
            raise InvalidInput("the shared secret must be at least 16 characters", field="secret")
        for level in (*self.levels, *((self.min_level,) if self.min_level else ())):
            if level not in {lv.value for lv in Level}:
                raise InvalidInput(f"{level!r} is not a level ({', '.join(lv.value for lv in Level)})",
                                   field="levels")
        for code in self.adcodes:
            if not _ADCODE.match(code):
                raise InvalidInput(f"{code!r} is not an adcode (2 to 12 digits)", field="adcodes")

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Partner:
        doc = json.loads(raw)
        for name in ("hazards", "levels", "adcodes"):
            doc[name] = tuple(doc.get(name) or ())
        return cls(**doc)

    def redacted(self) -> dict[str, Any]:
        """The partner without its secret, for listings."""
        doc = asdict(self)
        doc["secret"] = "***"
        return doc


def partner_recipient(partner: Partner) -> Recipient:
    """The partner as a webhook recipient."""
    return Recipient(id=partner.id, address=partner.url)


def demo_partner(settings: Settings) -> Partner:
    """A partner pointing at the local webhook simulator with its demo secret."""
    return Partner(id=DEMO_PARTNER_ID, url=simulator_url(settings, "webhook", "/webhook"), secret=DEMO_SECRET,
                   name="Demo partner (simulator)")


async def add_partner(client: redis.asyncio.Redis, partner: Partner) -> None:
    """Register ``partner``, replacing any partner with the same id."""
    await client.hset(keys.WEBHOOK_PARTNERS, partner.id, partner.to_json())


async def remove_partner(client: redis.asyncio.Redis, partner_id: str) -> bool:
    """Forget a partner. Returns whether it existed."""
    return bool(await client.hdel(keys.WEBHOOK_PARTNERS, partner_id))


async def list_partners(client: redis.asyncio.Redis) -> list[Partner]:
    """Every registered partner, by id."""
    raw = await client.hgetall(keys.WEBHOOK_PARTNERS)
    return sorted((Partner.from_json(value) for value in raw.values()), key=lambda p: p.id)


async def get_partners(client: redis.asyncio.Redis, ids: Sequence[str]) -> dict[str, Partner]:
    """The registered partners among ``ids`` (unknown ids are left out)."""
    if not ids:
        return {}
    raws = await client.hmget(keys.WEBHOOK_PARTNERS, list(ids))
    return {pid: Partner.from_json(raw) for pid, raw in zip(ids, raws, strict=True) if raw is not None}


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook URL, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"{url!r} is not an http(s) URL"
    if not parts.hostname:
        return f"{url!r} has no host"
    if parts.username or parts.password:
        return "credentials in the URL are refused; the signature authenticates us"
    return None


# ---------------------------------------------------------------- filters


def signal_of(message: Message) -> tuple[str | None, str | None]:
    """(hazard, level) of the alert: from ``message.signal``, else the CN-MET-SIGNAL eventCode."""
    code = message.signal
    if code is None:
        code = next((ev.value for info in message.alert.infos for ev in info.event_codes
                     if ev.value_name == SIGNAL_VALUE_NAME), None)
    if not code or "." not in code:
        return None, None
    hazard, _, level = code.partition(".")
    return hazard, level


def _unit_chain(code: str) -> str:
    """An adcode reduced to its significant prefix: 440300 -> 4403, 440304001000 -> 440304001."""
    if len(code) == 12 and code.endswith("000"):
        code = code[:9]
    if len(code) == 9 and code.endswith("000"):
        code = code[:6]
    if len(code) == 6 and code.endswith("00"):
        code = code[:4]
    if len(code) == 4 and code.endswith("00"):
        code = code[:2]
    return code


def units_intersect(wanted: Iterable[str], alerted: Iterable[str]) -> bool:
    """Whether two sets of adcodes overlap, counting containment (4403 Shenzhen holds 440304 Futian)."""
    alerted = [_unit_chain(code) for code in alerted]
    for code in wanted:
        mine = _unit_chain(code)
        if any(other.startswith(mine) or mine.startswith(other) for other in alerted):
            return True
    return False


def alert_units(message: Message) -> list[str]:
    """The adcodes the alert's areas name (geocodes made of digits)."""
    return sorted({gc.value for info in message.alert.infos for area in info.areas for gc in area.geocodes
                   if gc.value.isdigit()})


def filter_reason(partner: Partner, message: Message, targeted: Iterable[str] = ()) -> str | None:
    """Why ``partner`` does not want ``message``, or None when it does.

    Args:
        partner: The partner.
        message: The rendered alert.
        targeted: Adcodes the targeting stage resolved the alert to, beyond its geocodes.
    """
    hazard, level = signal_of(message)
    if partner.hazards and hazard not in partner.hazards:
        return f"{FILTERED}: not subscribed to hazard {hazard or 'unknown'}"
    if partner.levels and level not in partner.levels:
        return f"{FILTERED}: not subscribed to level {level or 'unknown'}"
    if partner.min_level:
        rank = Level(level).rank if level in {lv.value for lv in Level} else -1
        if rank < Level(partner.min_level).rank:
            return f"{FILTERED}: level {level or 'unknown'} is below {partner.min_level}"
    if partner.adcodes and not units_intersect(partner.adcodes, [*alert_units(message), *targeted]):
        return f"{FILTERED}: the alert's areas are outside the partner's units"
    return None


def partner_wants(partner: Partner, message: Message, targeted: Iterable[str] = ()) -> bool:
    """Whether the partner's filters (hazards, levels, units) take this alert."""
    return filter_reason(partner, message, targeted) is None


# ---------------------------------------------------------------- payload and signature


def delivery_id(alert_id: str, partner_id: str) -> str:
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{alert_id}/{partner_id}"))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Broadcast-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    digest = hmac.new(secret.encode("utf-8"), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def payload(message: Message, cap_base_url: str) -> dict[str, Any]:
    """The JSON document posted to partners (see the module docstring)."""
    alert = message.alert
    hazard, level = signal_of(message)
    first = alert.infos[0] if alert.infos else None
    areas = []
    for index, area in enumerate(first.areas if first else ()):
        names = {info.language: info.areas[index].desc for info in alert.infos if index < len(info.areas)}
        areas.append({"desc": names, "geocodes": [gc.value for gc in area.geocodes]})
    expires = alert.expires
    return {
        "alert_id": message.alert_id,
        "identifier": alert.identifier,
        "sender": alert.sender,
        "msg_type": alert.msg_type.value,
        "status": alert.status.value,
        "signal": message.signal or (f"{hazard}.{level}" if hazard else None),
        "hazard": hazard,
        "level": level,
        "severity": alert.severity.value,
        "urgency": first.urgency.value if first else None,
        "certainty": first.certainty.value if first else None,
        "headline": {lang: text.subject or "" for lang, text in message.texts.items()},
        "text": {lang: text.body for lang, text in message.texts.items()},
        "areas": areas,
        "references": [f"{r.sender},{r.identifier},{format_datetime(r.sent)}" for r in alert.references],
        "sent": format_datetime(alert.sent),
        "expires": format_datetime(expires) if expires else None,
        "cap_url": f"{cap_base_url.rstrip('/')}/feed/cap/{message.alert_id}.xml",
        "cap_xml": message.cap_xml.decode("utf-8"),
    }


# ---------------------------------------------------------------- the adapter


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    timeout: float  # seconds per attempt
    attempts: int  # tries per partner within one send() (1 = no retry)
    backoff_initial: float  # seconds before the first retry; doubles each time, plus jitter
    backoff_max: float
    cap_base_url: str  # where the public CAP feed is served, for "cap_url"

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 10:
            raise InvalidInput("webhook.attempts must be 1..10", field="channel_options")
        if self.timeout <= 0 or self.backoff_initial < 0 or self.backoff_max < self.backoff_initial:
            raise InvalidInput("webhook timeout > 0 and 0 <= backoff_initial <= backoff_max",
                               field="channel_options")

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig:
        def number(key: str, default: str) -> float:
            raw = channel_option(settings, "webhook", key, default)
            try:
                return float(raw)
            except ValueError:
                raise InvalidInput(f"webhook.{key}={raw!r} is not a number", field="channel_options") from None

        return cls(timeout=number("timeout", "10"), attempts=int(number("attempts", "3")),
                   backoff_initial=number("backoff_initial", "0.5"), backoff_max=number("backoff_max", "4"),
                   cap_base_url=channel_option(settings, "webhook", "cap_base_url", settings.callback_base_url))


class _Retryable(Exception):
    """An attempt failed in a way a later attempt may not (5xx, 408, time-out, connection)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@register
class WebhookAdapter:
    """Posts signed alert documents to partner departments."""

    name = "webhook"
    capabilities = Capabilities(max_batch=50, max_length=None, segment_rule="none", rate_per_second=50,
                                supports_receipts=False, supports_ack=False)

    def __init__(self, context: ChannelContext) -> None:
        self.config = WebhookConfig.from_settings(context.settings)
        self.http = context.http
        self.redis = context.redis

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """Post ``message`` to each partner in ``batch`` (concurrently), retrying 5xx and time-outs.

        Returns:
            One result per recipient, in input order.

        Raises:
            TransientDeliveryError: the partner registry (Redis) cannot be read.
        """
        if self.redis is None:
            raise TransientDeliveryError("the webhook channel needs Redis (ChannelContext.redis) for partners")
        try:
            partners = await get_partners(self.redis, [r.id for r in batch])
        except redis.RedisError as exc:
            raise TransientDeliveryError(f"cannot read webhook partners: {exc}") from exc
        body = json.dumps(payload(message, self.config.cap_base_url), ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")
        return list(await asyncio.gather(*(self._deliver(message, r, partners.get(r.id), body) for r in batch)))

    async def _deliver(self, message: Message, recipient: Recipient, partner: Partner | None,
                       body: bytes) -> DeliveryResult:
        problem = url_problem(recipient.address)
        if problem:
            return DeliveryResult.permanent(recipient, problem)
        if partner is None:
            return DeliveryResult.permanent(recipient, f"no webhook partner {recipient.id!r} is registered")
        reason = filter_reason(partner, message)
        if reason:
            return DeliveryResult.suppressed(recipient, reason)
        delivery = delivery_id(message.alert_id, partner.id)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.attempts),
            # initial * 2**n, capped, plus up to `initial` of jitter so partners are not hit in step
            # (wait_exponential_jitter renamed its arguments between tenacity 8 and 9).
            wait=wait_exponential(multiplier=self.config.backoff_initial, max=self.config.backoff_max)
            + wait_random(0, self.config.backoff_initial),
            retry=retry_if_exception_type(_Retryable), reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._post(recipient, partner, delivery, body)
        except _Retryable as exc:
            return DeliveryResult.transient(recipient, exc.reason, retry_after=exc.retry_after)
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _post(self, recipient: Recipient, partner: Partner, delivery: str, body: bytes) -> DeliveryResult:
        """One attempt. Raises _Retryable for what another attempt may cure."""
        timestamp = int(time.time())  # signed afresh each attempt, so a late retry is not refused as stale
        headers = {"Content-Type": "application/json; charset=utf-8", TIMESTAMP_HEADER: str(timestamp),
                   SIGNATURE_HEADER: sign(partner.secret, timestamp, body), DELIVERY_HEADER: delivery,
                   "User-Agent": "szmb-broadcast-webhook/1"}
        try:
            async with self.http.post(partner.url, data=body, headers=headers, allow_redirects=False,
                                      timeout=aiohttp.ClientTimeout(total=self.config.timeout)) as response:
                status = response.status
                text = (await response.text(errors="replace"))[:300]
                retry_after = _retry_after(response.headers.get("Retry-After"))
                location = response.headers.get("Location", "")
        except (aiohttp.InvalidURL, aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            return DeliveryResult.permanent(recipient, f"{type(exc).__name__}: {exc}")
        except TimeoutError as exc:
            raise _Retryable(f"no answer within {self.config.timeout:g} s") from exc
        except aiohttp.ClientError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
        if 200 <= status < 300 or status == 409:
            return DeliveryResult.accepted(recipient, provider_ref=delivery)
        if status == 429:
            return DeliveryResult.throttled(recipient, f"HTTP 429: {text}", retry_after=retry_after)
        if status == 408 or status >= 500:
            raise _Retryable(f"HTTP {status}: {text}", retry_after)
        if 300 <= status < 400:
            return DeliveryResult.permanent(recipient, f"HTTP {status} redirect to {location!r}; "
                                                       "register the partner's new URL")
        return DeliveryResult.permanent(recipient, f"HTTP {status}: {text}")

    async def aclose(self) -> None:
        """Nothing to close: the HTTP session and Redis belong to the context."""

    def endpoint(self) -> str:
        return f"partner URLs in Redis hash {keys.WEBHOOK_PARTNERS}"
