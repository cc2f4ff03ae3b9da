"""Twilio: the SMS provider behind the ``sms`` channel, and the client the ``voice`` channel shares.

Requests go through the official ``twilio`` package (``twilio.rest.Client`` and its
``*_async`` methods) with an HTTP client that rewrites ``https://api.twilio.com`` to the
configured ``twilio_url`` (the local simulator by default) and uses the channel's shared
aiohttp session. Configuration, per channel (``sms`` or ``voice``), from ``channel_options``:

    <channel>.twilio_url           API base URL (default: the twilio simulator)
    <channel>.twilio_account_sid   account SID ("AC..."), also the Basic-auth user
    <channel>.twilio_auth_token    auth token: Basic-auth password, and the key of callback signatures
    <channel>.twilio_from          the sending number (E.164) or, for SMS, an alphanumeric sender ID
    <channel>.twilio_concurrency   requests in flight per worker process (default 300, shared by the
                                   `sender_lanes` chunks it sends at once): size it to rate x latency
    <channel>.twilio_timeout       seconds per request (default 10)

Status callbacks go to ``settings.callback_base_url + STATUS_CALLBACK_PATH``
(channels/twilio_callbacks.py turns them into receipts).

How Twilio's answers become results:

    connection refused, DNS failure           -> TransientDeliveryError (the batch: channel down)
    401 / 20003 (account SID or token wrong)  -> TransientDeliveryError (the batch: account refused)
    429 / 20429 (too many requests)           -> throttled, retry_after from Retry-After (default 1 s)
    5xx, timeout, connection dropped          -> transient
    21211 invalid number, 21614 not a mobile, any other 4xx about the request -> permanent
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from broadcast.errors import InvalidInput, TransientDeliveryError
from broadcast.settings import Settings
from channels.base import ChannelContext, DeliveryResult, Emission, Recipient, channel_option, simulator_url

# Demo credentials: the simulator (ops/simulators/twilio.py) accepts exactly these.
DEMO_ACCOUNT_SID = "AC5a3d0f1e2b4c6a8d9e7f1a2b3c4d5e6f"
DEMO_AUTH_TOKEN = "d3m0a11e7750c0de5e1ec7ed0b5e7a7e"
DEMO_FROM = "+15005550006"  # Twilio's own "valid sender" test number

STATUS_CALLBACK_PATH = "/api/callbacks/twilio/status"
VOICE_CALLBACK_PATH = "/api/callbacks/twilio/voice"
INBOUND_SMS_PATH = "/api/callbacks/twilio/sms"  # the number's webhook for "a message comes in"

# E.164: "+", a country code not starting with 0, at most 15 digits in all.
E164 = re.compile(r"\+[1-9]\d{6,14}")

# Twilio error codes that mean "this recipient will never work" (https://www.twilio.com/docs/errors).
RECIPIENT_ERRORS = {
    21211: "invalid 'To' number",
    21214: "'To' number cannot be reached",
    21217: "invalid phone number",
    21408: "permission to send to this region is not enabled",
    21610: "the recipient replied STOP (unsubscribed)",
    21612: "the 'To' number cannot receive from this sender",
    21614: "'To' number is not a mobile number",
    13224: "invalid 'To' number for a call",
}
AUTH_ERROR = 20003
THROTTLE_ERROR = 20429

# The Retry-After of the last 429 seen by the current task (each send runs in its own task, so
# concurrent sends do not see each other's value); the library's exception does not carry headers.
_RETRY_AFTER: contextvars.ContextVar[float | None] = contextvars.ContextVar("twilio_retry_after", default=None)
DEFAULT_RETRY_AFTER = 1.0


def check_phone(address: str) -> str | None:
    """Why ``address`` is not a number Twilio can send to, or None if it is E.164."""
    if not E164.fullmatch(address):
        return f"{address!r} is not an E.164 phone number (+ country code and number)"
    return None


@dataclass(frozen=True, slots=True)
class TwilioConfig:
    """One Twilio account as a channel uses it."""

    url: str
    account_sid: str
    auth_token: str
    from_number: str
    status_callback: str
    concurrency: int = 20
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise InvalidInput("twilio_url must be an http(s) URL", field="twilio_url")
        if not self.account_sid.startswith("AC"):
            raise InvalidInput("an account SID starts with AC", field="twilio_account_sid")
        if not self.auth_token:
            raise InvalidInput("twilio_auth_token is empty", field="twilio_auth_token")
        if not self.from_number:
            raise InvalidInput("twilio_from is empty", field="twilio_from")
        if self.concurrency < 1:
            raise InvalidInput("must be at least 1", field="twilio_concurrency")
        if not self.timeout > 0:
            raise InvalidInput("must be positive", field="twilio_timeout")

    @classmethod
    def from_settings(cls, settings: Settings, channel: str) -> TwilioConfig:
        """The Twilio account configured for ``channel`` ("sms" or "voice").

        Raises:
            InvalidInput: a value is malformed (names the option).
        """
        def option(key: str, default: str) -> str:
            return channel_option(settings, channel, key, default)

        try:
            concurrency = int(option("twilio_concurrency", "300"))
            timeout = float(option("twilio_timeout", "10"))
        except ValueError as exc:
            raise InvalidInput(f"{channel}.twilio_concurrency / twilio_timeout must be numbers: {exc}",
                               field="channel_options") from None
        return cls(
            url=option("twilio_url", simulator_url(settings, "twilio")).rstrip("/"),
            account_sid=option("twilio_account_sid", DEMO_ACCOUNT_SID),
            auth_token=option("twilio_auth_token", DEMO_AUTH_TOKEN),
            from_number=option("twilio_from", DEMO_FROM),
            status_callback=settings.callback_base_url + STATUS_CALLBACK_PATH,
            concurrency=concurrency,
            timeout=timeout,
        )


def callback_auth_token(settings: Settings) -> str:
    """The token that signs Twilio's callbacks to this service (the SMS account's auth token)."""
    return TwilioConfig.from_settings(settings, "sms").auth_token


class RebasedHttpClient(AsyncTwilioHttpClient):
    """The library's async HTTP client, sending to ``base_url`` over a session it does not own.

    The library builds absolute URLs on ``https://<product>.twilio.com``; this keeps their path
    and query and swaps scheme and host (and prefixes any path of ``base_url``).
    """

    def __init__(self, base_url: str, session: aiohttp.ClientSession, timeout: float) -> None:
        super().__init__(pool_connections=False, timeout=timeout)
        self.base_url = base_url.rstrip("/")
        self._session = session

    def rebase(self, url: str) -> str:
        parts = urlsplit(url)
        return self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")

    async def request(self, method: str, url: str, params: dict[str, object] | None = None,
                      data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None, timeout: float | None = None,
                      allow_redirects: bool = False) -> Response:
        """Send one request; a 429's Retry-After is left in a context variable for the caller."""
        _RETRY_AFTER.set(None)
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
        async with self._session.request(
            method.upper(), self.rebase(url), params=params, data=data, headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            allow_redirects=allow_redirects,
        ) as response:
            text = await response.text()
            if response.status == 429:
                _RETRY_AFTER.set(_seconds(response.headers.get("Retry-After")))
            return Response(response.status, text, response.headers)

    async def close(self) -> None:
        """Nothing to close: the session belongs to the ChannelContext."""


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from Twilio, and the default is as good


def make_client(config: TwilioConfig, session: aiohttp.ClientSession) -> Client:
    """A ``twilio.rest.Client`` for ``config`` whose requests go through ``session``."""
    return Client(config.account_sid, config.auth_token, account_sid=config.account_sid,
                  http_client=RebasedHttpClient(config.url, session, config.timeout))


def _result_for_error(recipient: Recipient, exc: TwilioRestException | TwilioServiceException,
                      endpoint: str) -> DeliveryResult:
    status = int(exc.status)
    code = int(exc.code) if isinstance(exc.code, int) or str(exc.code).isdigit() else status
    message = exc.msg if isinstance(exc, TwilioRestException) else (exc.detail or exc.title)
    error = f"twilio {code}: {message}"
    if code == AUTH_ERROR or status == 401:
        raise TransientDeliveryError(f"Twilio at {endpoint} refused account credentials ({error})") from exc
    if code == THROTTLE_ERROR or status == 429:
        return DeliveryResult.throttled(recipient, error, retry_after=_RETRY_AFTER.get() or DEFAULT_RETRY_AFTER)
    if status >= 500:
        return DeliveryResult.transient(recipient, error)
    if code in RECIPIENT_ERRORS:
        return DeliveryResult.permanent(recipient, f"{error} ({RECIPIENT_ERRORS[code]})")
    return DeliveryResult.permanent(recipient, error)


async def create_one(recipient: Recipient, create: Callable[[], Awaitable[Any]], endpoint: str) -> DeliveryResult:
    """Run one Twilio ``create_async`` call and map its outcome to a result.

    Raises:
        TransientDeliveryError: Twilio is unreachable or refuses the account.
    """
    try:
        instance = await create()
    except (TwilioRestException, TwilioServiceException) as exc:
        return _result_for_error(recipient, exc, endpoint)
    except aiohttp.ClientConnectorError as exc:
        raise TransientDeliveryError(f"Twilio at {endpoint} is unreachable: {exc}") from exc
    except TimeoutError:
        return DeliveryResult.transient(recipient, f"Twilio at {endpoint} did not answer in time")
    except aiohttp.ClientError as exc:
        return DeliveryResult.transient(recipient, f"Twilio at {endpoint}: {exc.__class__.__name__}: {exc}")
    return DeliveryResult.accepted(recipient, instance.sid)


async def create_all(jobs: Sequence[tuple[Recipient, Callable[[], Awaitable[Any]] | str]],
                     limit: asyncio.Semaphore, endpoint: str) -> list[DeliveryResult]:
    """Run ``create`` calls concurrently, as many at once as ``limit`` (the adapter's, shared by all its
    sends) lets through; results in input order.

    A job is a recipient and either its ``create`` call or the reason it is refused beforehand.

    Raises:
        TransientDeliveryError: the channel is down; the remaining calls are cancelled.
    """
    results: list[DeliveryResult | None] = [None] * len(jobs)

    async def run(index: int, recipient: Recipient, create: Callable[[], Awaitable[Any]]) -> None:
        async with limit:
            results[index] = await create_one(recipient, create, endpoint)

    try:
        async with asyncio.TaskGroup() as group:
            for index, (recipient, job) in enumerate(jobs):
                if isinstance(job, str):
                    results[index] = DeliveryResult.permanent(recipient, job)
                else:
                    group.create_task(run(index, recipient, job))
    except ExceptionGroup as group_error:
        down = [e for e in group_error.exceptions if isinstance(e, TransientDeliveryError)]
        if down:
            raise down[0] from group_error
        raise
    return [r for r in results if r is not None]


class TwilioSmsProvider:
    """Sends SMS through Twilio's Messages API (``channels/sms.py`` picks the provider).

    Args:
        context: the shared session (requests) and settings (``sms.twilio_*`` options).
    """

    def __init__(self, context: ChannelContext) -> None:
        self.config = TwilioConfig.from_settings(context.settings, "sms")
        self._client = make_client(self.config, context.http)
        self._in_flight = asyncio.Semaphore(self.config.concurrency)  # for every send of this provider

    async def send_texts(self, items: Sequence[tuple[Recipient, str]],
                         emission: Emission | None = None) -> list[DeliveryResult]:
        """Send each recipient its text; one result per item, in input order.

        Args:
            items: (recipient, the full text for that recipient); Twilio concatenates long texts.
            emission: The moment to start the requests. Not told when they have left (a request per
                text leaves when the client's pool lets it): the caller counts them from the return.

        Returns:
            ``accepted`` with the Message SID as provider_ref, or why not.

        Raises:
            TransientDeliveryError: Twilio is unreachable or refuses the account.
        """
        jobs: list[tuple[Recipient, Callable[[], Awaitable[Any]] | str]] = []
        for recipient, text in items:
            problem = check_phone(recipient.address) or (None if text.strip() else "empty text")
            jobs.append((recipient, problem or self._create(recipient.address, text)))
        if emission is not None:
            await emission.ready()
        return await create_all(jobs, self._in_flight, self.endpoint())

    def _create(self, to: str, body: str) -> Callable[[], Awaitable[Any]]:
        return lambda: self._client.messages.create_async(
            to=to, from_=self.config.from_number, body=body, status_callback=self.config.status_callback)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session belongs to the ChannelContext."""

    def endpoint(self) -> str:
        return f"twilio {self.config.url} (account {self.config.account_sid}, from {self.config.from_number})"
