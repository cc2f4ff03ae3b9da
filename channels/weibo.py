"""Weibo: one public post on the bureau's account per alert, per update and per cancellation.

Wire format (Weibo open API, form-encoded; errors ``{"error", "error_code", "request"}``):

    POST {url}/oauth2/access_token  client_id, client_secret, grant_type=password, username, password
         -> {"access_token", "expires_in", "uid"}  (only when no token is configured)
    POST {url}/2/statuses/share.json  access_token, status -> {"id", "idstr", "text", "created_at"}

The only recipient is the bureau's own account (``weibo.account``, its uid, or the alias
``bureau`` that broadcast/recipients.py yields): one recipient per alert, whose language
chooses the template (``templates/weibo/``). The post's text is the template's body
followed by a link to the alert on the bureau's site (``weibo.link`` + ``?id=<identifier>``),
which must lie on the app's safe domain, as share.json requires. Updates and cancellations
are new posts whose text says what they are (the template's 【更新】/【解除】).

Length: share.json takes at most 140 characters, Weibo counting a CJK or full-width
character as one and an ASCII character as half (:func:`weibo_length`). The 2000-character
long post needs ``is_longtext`` on the commercial upload API, which a government account
does not have by default, so this adapter keeps to 140: the link is always kept whole and
the body is cut with "…" when the two do not fit.

Token: ``weibo.access_token`` when configured (from the authorization-code flow; it
cannot be renewed here), else fetched with the password grant of a trusted app and
shared through Redis (channels/provider_tokens.py).

Error mapping:

    21327, 21332, 21314-21317  token expired/invalid: a fetched token is evicted and fetched once
                               more; a configured one, or a second failure -> TransientDeliveryError
    20019, 20017               repeated content -> permanent (this text is already posted)
    10022, 10023, 10024, 20016, HTTP 429  rate limits -> throttled
    10001, 10002, 10009-10011, 21331, HTTP 5xx, timeout -> transient
    21301, 21324, 21325, 10013, 10014  the app or account is refused -> TransientDeliveryError
    other error codes          -> permanent with Weibo's error
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

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

CHANNEL = "weibo"
MAX_LENGTH = 140
TOKEN_ERRORS = frozenset({21314, 21315, 21316, 21317, 21327, 21332})
REPEAT_ERRORS = frozenset({20017, 20019})
THROTTLE_ERRORS = frozenset({10022, 10023, 10024, 20016})
BUSY_ERRORS = frozenset({10001, 10002, 10009, 10010, 10011, 21331})
ACCOUNT_ERRORS = frozenset({21301, 21324, 21325, 10013, 10014})
THROTTLE_RETRY_SECONDS = 600.0  # Weibo's limits are counted per hour
BUREAU_ALIAS = "bureau"  # the address broadcast.recipients gives the bureau account


def weibo_length(text: str) -> int:
    """Weibo's count: a CJK or full-width character is 1, an ASCII character is 1/2, rounded up."""
    return math.ceil(sum(0.5 if ord(ch) < 128 else 1 for ch in text))


def compose_status(body: str, link: str, limit: int = MAX_LENGTH) -> str:
    """``body`` and ``link`` as one post of at most ``limit`` (Weibo-counted) characters.

    The link is never cut; the body loses characters from its end, marked with "…".

    Raises:
        InvalidInput: the link alone does not fit.
    """
    separator = " " if body and ord(body[-1]) < 128 else ""
    status = f"{body}{separator}{link}"
    if weibo_length(status) <= limit:
        return status
    if weibo_length(f"… {link}") > limit:
        raise InvalidInput("the Weibo link is too long for a post", field="channel_options")
    cut = body
    while cut and weibo_length(f"{cut}… {link}") > limit:
        cut = cut[:-1]
    return f"{cut.rstrip()}… {link}"


@dataclass(frozen=True, slots=True)
class WeiboConfig:
    url: str
    account: str  # the bureau account's uid: the only valid recipient address
    client_id: str
    client_secret: str
    username: str
    password: str
    access_token: str  # configured token; empty: fetch one with the password grant
    link: str  # safe-domain page of an alert; "?id=<identifier>" is added
    timeout: float

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise InvalidInput("weibo.url must be an http(s) URL", field="channel_options")
        if not self.link.startswith(("http://", "https://")):
            raise InvalidInput("weibo.link must be an http(s) URL", field="channel_options")
        if self.timeout <= 0:
            raise InvalidInput("weibo.timeout must be positive", field="channel_options")

    @classmethod
    def from_settings(cls, settings: Settings) -> WeiboConfig:
        def option(key: str, default: str) -> str:
            return channel_option(settings, CHANNEL, key, default)

        try:
            return cls(
                url=option("url", simulator_url(settings, "weibo")).rstrip("/"),
                account=option("account", "6012345678"),
                client_id=option("client_id", "2975311024"),
                client_secret=option("client_secret", "c6b1d9e04f7a2358be0d41a9f6c3e872"),
                username=option("username", "szmb_weather@szmb.example"),
                password=option("password", "demo-weibo-password"),
                access_token=option("access_token", ""),
                link=option("link", settings.web),
                timeout=float(option("timeout", "15")),
            )
        except ValueError as exc:
            raise InvalidInput(f"weibo option: {exc}", field="channel_options") from exc


@register
class WeiboAdapter:
    """Posts on the bureau's Weibo account."""

    name = CHANNEL
    capabilities = Capabilities(max_batch=1, max_length=MAX_LENGTH, segment_rule="none", rate_per_second=1,
                                supports_receipts=False, supports_ack=False, kind="broadcast")
    # How the preview counts this channel's length (Weibo's rule, not code points).
    text_length = staticmethod(weibo_length)

    def __init__(self, context: ChannelContext) -> None:
        self.config = WeiboConfig.from_settings(context.settings)
        self._http = context.http
        self._timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        self._tokens = ProviderTokenCache(CHANNEL, self._fetch_token, context.redis)

    def endpoint(self) -> str:
        return f"{self.config.url}/2/statuses/share.json"

    async def aclose(self) -> None:
        """Nothing to close: the HTTP session and Redis belong to the context."""

    def status_for(self, message: Message, language: str) -> str:
        """The text of the post for ``message`` (body, then the link to the alert)."""
        link = f"{self.config.link}?id={quote(message.alert.identifier, safe='')}"
        return compose_status(message.text_for(language).body, link)

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """One post per recipient; the recipient must be the configured bureau account.

        Raises:
            TransientDeliveryError: Weibo is unreachable, or refuses the app, account or token.
        """
        results = []
        for recipient in batch:
            if recipient.address not in (self.config.account, BUREAU_ALIAS):
                results.append(DeliveryResult.permanent(
                    recipient, f"Weibo posts only on the bureau account {self.config.account}, "
                               f"not {recipient.address!r}"))
                continue
            results.append(await self._post(recipient, self.status_for(message, recipient.language)))
        return results

    async def _post(self, recipient: Recipient, status: str) -> DeliveryResult:
        for attempt in (1, 2):
            token = self.config.access_token or await self._tokens.get()
            try:
                http_status, body = await self._call("/2/statuses/share.json",
                                                     {"access_token": token, "status": status})
            except TimeoutError:
                return DeliveryResult.transient(recipient, "Weibo did not answer in time")
            code = body.get("error_code")
            error = f"Weibo {code}: {body.get('error', '')}" if code is not None else f"HTTP {http_status}"
            if http_status == 200 and code is None and body.get("idstr"):
                return DeliveryResult.accepted(recipient, str(body["idstr"]))
            code = int(code) if isinstance(code, int | str) and str(code).isdigit() else None
            if code in TOKEN_ERRORS:
                if self.config.access_token:
                    raise TransientDeliveryError(f"the configured Weibo access token is refused ({error})")
                await self._tokens.evict(token)
                if attempt == 1:
                    continue
                raise TransientDeliveryError(f"Weibo refuses a freshly fetched access token ({error})")
            if code in REPEAT_ERRORS:
                return DeliveryResult.permanent(recipient, f"already posted: {error}")
            if code in THROTTLE_ERRORS or http_status == 429:
                return DeliveryResult.throttled(recipient, error, THROTTLE_RETRY_SECONDS)
            if code in ACCOUNT_ERRORS:
                raise TransientDeliveryError(f"Weibo refuses the app or account ({error})")
            if code in BUSY_ERRORS or http_status >= 500 or code is None:
                return DeliveryResult.transient(recipient, error)
            return DeliveryResult.permanent(recipient, error)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call(self, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            async with self._http.post(f"{self.config.url}{path}", data=form, timeout=self._timeout) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                return response.status, body if isinstance(body, dict) else {}
        except aiohttp.ClientConnectionError as exc:
            raise TransientDeliveryError(f"Weibo unreachable at {self.config.url}: {exc}") from exc

    async def _fetch_token(self) -> ProviderToken:
        form = {"client_id": self.config.client_id, "client_secret": self.config.client_secret,
                "grant_type": "password", "username": self.config.username, "password": self.config.password}
        try:
            status, body = await self._call("/oauth2/access_token", form)
        except TimeoutError as exc:
            raise TransientDeliveryError("Weibo token endpoint did not answer in time") from exc
        if status != 200 or not body.get("access_token"):
            raise TransientDeliveryError(
                f"Weibo refuses the app credentials (HTTP {status}, {body.get('error_code')} {body.get('error')})")
        return ProviderToken(str(body["access_token"]), float(body.get("expires_in", 86400)))
