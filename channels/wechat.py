"""WeChat Official Account template messages, one per follower (openid).

Wire format (WeChat Official Account API; every error is an HTTP 200 with ``errcode``):

    GET  {url}/cgi-bin/token?grant_type=client_credential&appid=..&secret=..
         -> {"access_token", "expires_in": 7200}; 40013 bad appid, 40125 bad secret
    POST {url}/cgi-bin/message/template/send?access_token=..
         {"touser", "template_id", "url", "client_msg_id", "data": {"first": {"value", "color"},
          "keyword1": ..., "remark": ...}} -> {"errcode": 0, "errmsg": "ok", "msgid"}

The template fields come from the blocks of ``templates/wechat/<language>.j2``: ``first``,
``keyword1``..``keywordN`` and ``remark`` (``body`` is the same text, plain, for logs).
The access token is shared by every sender through Redis (channels/provider_tokens.py).

Error mapping, per openid:

    40001, 40014, 42001  token invalid/expired: evict it, fetch a new one, send once more;
                         a second token error means the account is broken -> TransientDeliveryError
    40003, 43004, 43019  bad openid, unfollowed, blocked -> permanent
    45009, 45047         API quota / too many messages to this user -> throttled
    -1, HTTP 5xx, timeout  system busy -> transient
    40013, 40125, 40037, 48001  appid/secret/template/permission (the account, not the openid)
                         -> TransientDeliveryError for the whole batch
    other errcodes       -> permanent with WeChat's errmsg

Raising for the batch after some openids were already accepted is safe: every message
carries ``client_msg_id`` = alert id + recipient id, which WeChat uses to drop a repeat
to the same openid within ten minutes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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

CHANNEL = "wechat"
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
RECIPIENT_ERRORS = frozenset({40003, 43004, 43019})
THROTTLE_ERRORS = frozenset({45009, 45047})
ACCOUNT_ERRORS = frozenset({40013, 40125, 40164, 40037, 48001})
# An openid is 28 characters for accounts today; accept what an openid can be, reject what cannot.
OPENID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
THROTTLE_RETRY_SECONDS = 60.0
_KEYWORD = re.compile(r"^keyword(\d+)$")


@dataclass(frozen=True, slots=True)
class WeChatConfig:
    url: str
    appid: str
    secret: str
    template_id: str
    link: str  # the page a tap on the message opens
    concurrency: int  # template messages in flight at once
    timeout: float

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise InvalidInput("wechat.url must be an http(s) URL", field="channel_options")
        if self.concurrency <= 0 or self.timeout <= 0:
            raise InvalidInput("wechat.concurrency and wechat.timeout must be positive", field="channel_options")

    @classmethod
    def from_settings(cls, settings: Settings) -> WeChatConfig:
        def option(key: str, default: str) -> str:
            return channel_option(settings, CHANNEL, key, default)

        try:
            return cls(
                url=option("url", simulator_url(settings, "wechat")).rstrip("/"),
                appid=option("appid", "wx8a3f9c2e5d7b1a46"),
                secret=option("secret", "5f0c8e2b9a7d4c1e3b6a9f0d2c5e8b1a"),
                template_id=option("template_id", "SZMB-WARNING-TPL-0001"),
                link=option("link", settings.web),
                concurrency=int(option("concurrency", "32")),
                timeout=float(option("timeout", "10")),
            )
        except ValueError as exc:
            raise InvalidInput(f"wechat option: {exc}", field="channel_options") from exc


def template_data(message: Message, language: str) -> dict[str, dict[str, str]]:
    """The ``data`` of a template message: first, keyword1..N in order, remark."""
    text = message.text_for(language)
    keywords = sorted((int(m.group(1)), name) for name in text.parts if (m := _KEYWORD.match(name)))
    colour = message.colour or "#173177"
    data: dict[str, dict[str, str]] = {"first": {"value": text.parts.get("first") or text.body, "color": colour}}
    for _, name in keywords:
        data[name] = {"value": text.parts[name], "color": "#173177"}
    if text.parts.get("remark"):
        data["remark"] = {"value": text.parts["remark"], "color": "#333333"}
    return data


@register
class WeChatAdapter:
    """Template messages through a WeChat Official Account."""

    name = CHANNEL
    capabilities = Capabilities(max_batch=500, max_length=None, segment_rule="none", rate_per_second=2000,
                                supports_receipts=False, supports_ack=False)

    def __init__(self, context: ChannelContext) -> None:
        self.config = WeChatConfig.from_settings(context.settings)
        self._http = context.http
        self._tokens = ProviderTokenCache(CHANNEL, self._fetch_token, context.redis)
        self._timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        # Shared by every send of this adapter (several chunks go at once; see sender_lanes).
        self._in_flight = asyncio.Semaphore(self.config.concurrency)

    def endpoint(self) -> str:
        return f"{self.config.url}/cgi-bin/message/template/send"

    async def aclose(self) -> None:
        """Nothing to close: the HTTP session and Redis belong to the context."""

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """One template message per openid, at most ``concurrency`` in flight (for the adapter).

        Raises:
            TransientDeliveryError: WeChat is unreachable or refuses the account (appid, secret,
                template), or keeps rejecting freshly fetched tokens.
        """
        valid = [r for r in batch if OPENID.match(r.address)]
        if valid:
            await self._tokens.get()  # one fetch for the batch; refused credentials stop it here
        limit = self._in_flight

        async def one(recipient: Recipient) -> DeliveryResult:
            if not OPENID.match(recipient.address):
                return DeliveryResult.permanent(recipient, f"not a WeChat openid: {recipient.address!r}")
            async with limit:
                return await self._send_one(message, recipient)

        outcomes = await asyncio.gather(*(one(r) for r in batch), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return list(outcomes)  # type: ignore[arg-type]

    async def _send_one(self, message: Message, recipient: Recipient) -> DeliveryResult:
        payload = {
            "touser": recipient.address,
            "template_id": self.config.template_id,
            "url": recipient.attributes.get("link") or self.config.link,
            "client_msg_id": f"{message.alert_id}:{recipient.id}"[:64],
            "data": template_data(message, recipient.language),
        }
        for attempt in (1, 2):
            token = await self._tokens.get()
            try:
                body = await self._post(token, payload)
            except TimeoutError:
                return DeliveryResult.transient(recipient, "WeChat did not answer in time")
            except _HttpStatus as exc:
                if exc.status == 429:
                    return DeliveryResult.throttled(recipient, f"HTTP 429: {exc.text}", THROTTLE_RETRY_SECONDS)
                return DeliveryResult.transient(recipient, f"HTTP {exc.status}: {exc.text}")
            code = body.get("errcode", 0)
            errmsg = str(body.get("errmsg", ""))
            if code == 0:
                return DeliveryResult.accepted(recipient, str(body.get("msgid", "")))
            if code in TOKEN_ERRORS:
                await self._tokens.evict(token)
                if attempt == 1:
                    continue
                raise TransientDeliveryError(f"WeChat rejects a freshly fetched access token ({code} {errmsg})")
            if code in RECIPIENT_ERRORS:
                return DeliveryResult.permanent(recipient, f"WeChat {code}: {errmsg}")
            if code in THROTTLE_ERRORS:
                return DeliveryResult.throttled(recipient, f"WeChat {code}: {errmsg}", THROTTLE_RETRY_SECONDS)
            if code == -1:
                return DeliveryResult.transient(recipient, f"WeChat system busy: {errmsg}")
            if code in ACCOUNT_ERRORS:
                raise TransientDeliveryError(f"WeChat refuses the account's request ({code} {errmsg})")
            return DeliveryResult.permanent(recipient, f"WeChat {code}: {errmsg}")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(self, token: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._http.post(f"{self.config.url}/cgi-bin/message/template/send",
                                       params={"access_token": token}, json=payload,
                                       timeout=self._timeout) as response:
                if response.status != 200:
                    raise _HttpStatus(response.status, (await response.text())[:200])
                body = await response.json(content_type=None)
        except aiohttp.ClientConnectionError as exc:
            raise TransientDeliveryError(f"WeChat unreachable at {self.config.url}: {exc}") from exc
        except (aiohttp.ContentTypeError, ValueError) as exc:
            raise _HttpStatus(502, f"unreadable answer: {exc}") from exc
        if not isinstance(body, dict):
            raise _HttpStatus(502, "answer is not a JSON object")
        return body

    async def _fetch_token(self) -> ProviderToken:
        params = {"grant_type": "client_credential", "appid": self.config.appid, "secret": self.config.secret}
        try:
            async with self._http.get(f"{self.config.url}/cgi-bin/token", params=params,
                                      timeout=self._timeout) as response:
                if response.status != 200:
                    raise TransientDeliveryError(f"WeChat token endpoint answered HTTP {response.status}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TransientDeliveryError(f"WeChat token endpoint unreachable at {self.config.url}: {exc}") from exc
        if not isinstance(body, dict) or not body.get("access_token"):
            code = body.get("errcode") if isinstance(body, dict) else None
            errmsg = body.get("errmsg") if isinstance(body, dict) else body
            raise TransientDeliveryError(f"WeChat refuses the account credentials ({code} {errmsg})")
        return ProviderToken(str(body["access_token"]), float(body.get("expires_in", 7200)))


class _HttpStatus(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.text = text
