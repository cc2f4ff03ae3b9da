"""The one small interface every channel adapter implements, and the registry of adapters.

A channel adapter sends one rendered alert (a :class:`Message`) to one batch of
recipients and returns one :class:`DeliveryResult` per recipient, in input order. It
never raises for a single bad recipient (that is a ``permanent`` result with a reason);
it raises :class:`~broadcast.errors.TransientDeliveryError` only when the whole channel
is down (connection refused, authentication failure of the account) so that the caller
retries the batch later. Splitting into batches of ``max_batch``, rate limiting and
retries live in ``broadcast/`` (the sender), not here.

Each adapter module defines a frozen config dataclass built from the service settings
(endpoint, credentials; see :func:`channel_option`), and registers its class with
:func:`register`. ``channels/__init__.py`` imports every adapter module explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Protocol, TypeVar

import aiohttp
import redis.asyncio

from broadcast.errors import InvalidInput
from broadcast.model import Alert
from broadcast.settings import Settings


class DeliveryStatus(StrEnum):
    ACCEPTED = "accepted"  # the provider took it (provider_ref set); a receipt may follow
    TRANSIENT = "transient"  # failed this time; retry with backoff
    PERMANENT = "permanent"  # will never work (bad address, rejected content): record and move on
    THROTTLED = "throttled"  # the provider asked us to slow down; retry, and not counted as failed
    SUPPRESSED = "suppressed"  # not sent on purpose (a partner's filters exclude the alert); not a failure


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a channel can take, declared by its adapter."""

    max_batch: int  # recipients per send() call
    max_length: int | None  # characters of text per message (None: no limit); see segment_rule
    segment_rule: str  # "none", "sms" (GSM-7 160/153, UCS-2 70/67), "cbs" (93-character pages, 15 at most)
    rate_per_second: float  # default sending rate (settings.channel_rates overrides)
    supports_receipts: bool  # the provider reports delivery later (DLR, status callback)
    supports_ack: bool  # a recipient can acknowledge through this channel (voice keypress, link)
    kind: str = "push"  # "push" (we send), "broadcast" (one message reaches an area), "pull" (published)
    # One request must carry every recipient of the alert (a CBC message names all its cells and
    # cannot be repeated under the same id): never split into batches or chunks; costs one token.
    single_request: bool = False
    # send() takes ``emission`` (an :class:`Emission`): the adapter prepares the batch, waits for
    # its moment, writes it and says when it has left, so that the moment is not spent preparing
    # and the batch counts against the rate from its write rather than from send()'s return.
    takes_emission: bool = False

    def __post_init__(self) -> None:
        if self.max_batch <= 0:
            raise InvalidInput("max_batch must be positive", field="max_batch")
        if self.segment_rule not in ("none", "sms", "cbs"):
            raise InvalidInput("segment_rule is none, sms or cbs", field="segment_rule")


@dataclass(frozen=True, slots=True)
class Recipient:
    """One addressee: a person, a cell sector, a screen, a station, a partner endpoint..."""

    id: str  # stable id, unique within the alert and channel (the dedupe key)
    address: str  # phone, email, openid, device token, sector id, screen id, URL...
    language: str = "zh-CN"
    attributes: Mapping[str, str] = field(default_factory=dict)  # e.g. community code, acknowledgement link


@dataclass(frozen=True, slots=True)
class RenderedText:
    """An alert rendered for one channel in one language (from ``templates/<channel>/<language>.j2``)."""

    language: str
    body: str
    subject: str | None = None  # email subject, push title, screen heading...
    html: str | None = None  # email HTML part
    parts: Mapping[str, str] = field(default_factory=dict)  # any other named block of the template


@dataclass(frozen=True, slots=True)
class Message:
    """What the pipeline hands an adapter: one alert, rendered for this channel in each language."""

    alert_id: str
    alert: Alert
    texts: Mapping[str, RenderedText]  # language tag -> text
    cap_xml: bytes
    signal: str | None = None  # "rainstorm.red"
    colour: str | None = None  # the warning level's colour, "#D9001B"

    def text_for(self, language: str) -> RenderedText:
        """The text in ``language``, else in its primary language, else the first one rendered."""
        if language in self.texts:
            return self.texts[language]
        primary = language.split("-")[0].lower()
        for tag, text in self.texts.items():
            if tag.split("-")[0].lower() == primary:
                return text
        return next(iter(self.texts.values()))


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    recipient_id: str
    status: DeliveryStatus
    provider_ref: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds, for throttled or transient results

    @classmethod
    def accepted(cls, recipient: Recipient, provider_ref: str | None = None) -> DeliveryResult:
        return cls(recipient.id, DeliveryStatus.ACCEPTED, provider_ref=provider_ref)

    @classmethod
    def permanent(cls, recipient: Recipient, error: str) -> DeliveryResult:
        return cls(recipient.id, DeliveryStatus.PERMANENT, error=error)

    @classmethod
    def suppressed(cls, recipient: Recipient, reason: str) -> DeliveryResult:
        return cls(recipient.id, DeliveryStatus.SUPPRESSED, error=reason)

    @classmethod
    def transient(cls, recipient: Recipient, error: str, retry_after: float | None = None) -> DeliveryResult:
        return cls(recipient.id, DeliveryStatus.TRANSIENT, error=error, retry_after=retry_after)

    @classmethod
    def throttled(cls, recipient: Recipient, error: str, retry_after: float | None = None) -> DeliveryResult:
        return cls(recipient.id, DeliveryStatus.THROTTLED, error=error, retry_after=retry_after)


class Emission(Protocol):
    """The moment a batch may be written, handed to adapters that declare ``takes_emission``.

    The sender's rate control stands behind it (the account's token bucket and emission window,
    broadcast.ratelimit): call :meth:`ready` once the batch is prepared, write nothing before it
    returns, and call :meth:`written` as soon as everything has left for the provider.
    """

    async def ready(self) -> None:
        """Wait until the batch may be written (at most once per batch)."""
        ...

    def written(self) -> None:
        """Everything of the batch has left this host for the provider (before its answers)."""
        ...


@dataclass(frozen=True, slots=True)
class ChannelContext:
    """Shared resources an adapter may use; created inside the running event loop, closed by the caller."""

    settings: Settings
    http: aiohttp.ClientSession
    redis: redis.asyncio.Redis | None = None


class ChannelAdapter(Protocol):
    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """One result per recipient, in input order.

        Raises:
            TransientDeliveryError: the whole channel is unreachable or refuses the account.
        """
        ...

    async def aclose(self) -> None: ...

    # Optional: an adapter class may define ``text_length(text) -> int`` when the provider counts
    # length its own way (Weibo counts two ASCII characters as one); the preview uses it.

    def endpoint(self) -> str:
        """Where this adapter is configured to send (for ``broadcast channels``)."""
        ...


AdapterFactory = Callable[[ChannelContext], ChannelAdapter]
A = TypeVar("A")
_REGISTRY: dict[str, Any] = {}


class HttpIntakeAdapter:
    """Base of the adapters that post to one HTTP intake (TV, radio, display screens, loudspeakers):
    the channel's config (``config_type.from_settings``, with a ``url``) and the context's shared
    HTTP session, which it does not own."""

    config_type: ClassVar[Any]
    intake_path: ClassVar[str]  # shown by ``broadcast channels`` after the configured URL

    def __init__(self, context: ChannelContext) -> None:
        self.config = self.config_type.from_settings(context.settings)
        self._http = context.http

    def endpoint(self) -> str:
        return f"{self.config.url}{self.intake_path}"

    async def aclose(self) -> None:
        """Nothing to close: the HTTP session belongs to the context."""


def register(cls: A) -> A:
    """Class decorator: make an adapter class available under its ``name``."""
    name = cls.name  # type: ignore[attr-defined]
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise RuntimeError(f"two adapters claim the channel name {name!r}")
    _REGISTRY[name] = cls
    return cls


def adapter_class(name: str) -> Any:
    """The adapter class registered for ``name``.

    Raises:
        InvalidInput: no such channel (field ``channel``).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise InvalidInput(f"unknown channel {name!r}; channels are: {known}", field="channel") from None


def registered() -> dict[str, Any]:
    return dict(sorted(_REGISTRY.items()))


def channel_option(settings: Settings, channel: str, key: str, default: str) -> str:
    """One configuration value of a channel: ``channel_options`` entry ``<channel>.<key>=<value>``.

    Defaults point at the local simulators (``sim_host``, ``sim_base_port``), so the
    service works out of the box; production sets real endpoints and credentials.
    """
    prefix = f"{channel}.{key}="
    for entry in settings.channel_options:
        if entry.startswith(prefix):
            return entry[len(prefix):]
    return default


def simulator_url(settings: Settings, name: str, path: str = "") -> str:
    """The base URL of the local simulator ``name`` (see SIMULATOR_OFFSETS)."""
    return f"http://{settings.sim_host}:{simulator_port(settings, name)}{path}"


# Port of each local simulator, as an offset from settings.sim_base_port (default 9100).
# HTTP simulators answer their protocol and their inspection API (/_sim/...) on one port;
# the SMPP and SMTP simulators speak their protocol on one port and inspection on another.
SIMULATOR_OFFSETS: dict[str, int] = {
    "twilio": 1,  # SMS and voice (Twilio REST API)
    "smpp": 2,  # SMPP 3.4 SMS centre (TCP); inspection on 12
    "cbc": 3,  # cell broadcast centre (osmo-cbc ECBE REST)
    "smtp": 4,  # SMTP server; inspection on 14
    "wechat": 5,  # WeChat Official Account API
    "weibo": 6,  # Weibo API
    "fcm": 7,  # FCM HTTP v1
    "tv": 8,  # TV broadcaster intake
    "radio": 9,  # radio broadcaster intake
    "screens": 10,  # display-screen management API
    "loudspeakers": 11,  # community emergency-broadcast terminals
    "smpp_inspect": 12,
    "webhook": 13,  # a partner department's webhook receiver
    "smtp_inspect": 14,
    "feed_reader": 15,  # polls the service's public CAP Atom feed
}


def simulator_port(settings: Settings, name: str) -> int:
    return settings.sim_base_port + SIMULATOR_OFFSETS[name]
