"""The ``sms`` channel: each recipient's phone gets the alert as a text message.

The adapter checks addresses, picks each recipient's language and hands (recipient, text)
pairs to an SMS provider chosen by the option ``sms.provider``:

- ``smpp`` (default): SMPP 3.4 to a carrier's SMS centre (:mod:`channels.smpp`), the path
  for mass city-wide sending;
- ``twilio``: Twilio's Messaging API (``channels.twilio.TwilioSmsProvider``).

Long texts are sent whole: the provider concatenates them (GSM-7 153 / UCS-2 67 per part,
see :mod:`channels.sms_text`), so ``max_length`` is None and ``segment_rule`` is "sms".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from broadcast.errors import InvalidInput
from broadcast.settings import Settings
from channels.base import (
    Capabilities,
    ChannelContext,
    DeliveryResult,
    Emission,
    Message,
    Recipient,
    channel_option,
    register,
)

PROVIDERS = ("smpp", "twilio")

_E164 = re.compile(r"\+?[1-9][0-9]{7,14}")
_CN_MOBILE = re.compile(r"861[3-9][0-9]{9}")


class SmsProvider(Protocol):
    """What every SMS provider implements (SMPP, Twilio...)."""

    async def send_texts(self, items: Sequence[tuple[Recipient, str]],
                         emission: Emission | None = None) -> list[DeliveryResult]:
        """One result per (recipient, text), in input order; addresses are already checked.

        With ``emission``, nothing is sent before ``emission.ready()`` returns, and
        ``emission.written()`` is called when everything has left, if the provider can tell.

        Raises:
            TransientDeliveryError: the provider is unreachable or refuses the account.
        """
        ...

    async def aclose(self) -> None: ...

    def endpoint(self) -> str: ...


def phone_problem(address: str) -> str | None:
    """Why ``address`` is not a phone number we can text, or None if it is.

    E.164 (a leading ``+`` is optional): 8 to 15 digits, no leading zero; numbers in
    China (+86) must be mainland mobiles, ``1[3-9]`` followed by 9 digits.
    """
    if not _E164.fullmatch(address):
        return f"not an E.164 phone number: {address!r}"
    digits = address.removeprefix("+")
    if digits.startswith("86") and not _CN_MOBILE.fullmatch(digits):
        return f"not a mainland China mobile number: {address!r}"
    return None


@dataclass(frozen=True, slots=True)
class SmsConfig:
    provider: str = "smpp"

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise InvalidInput(f"sms.provider is one of {', '.join(PROVIDERS)}", field="sms.provider")

    @classmethod
    def from_settings(cls, settings: Settings) -> SmsConfig:
        return cls(provider=channel_option(settings, "sms", "provider", "smpp"))


def make_provider(context: ChannelContext, config: SmsConfig) -> SmsProvider:
    if config.provider == "twilio":
        from channels.twilio import TwilioSmsProvider  # written separately; imported only when chosen

        provider: SmsProvider = TwilioSmsProvider(context)
        return provider
    from channels.smpp import SmppProvider

    return SmppProvider(context)


@register
class SmsAdapter:
    name = "sms"
    capabilities = Capabilities(max_batch=1000, max_length=None, segment_rule="sms", rate_per_second=5000,
                                supports_receipts=True, supports_ack=False, takes_emission=True)

    def __init__(self, context: ChannelContext, provider: SmsProvider | None = None) -> None:
        self.config = SmsConfig.from_settings(context.settings)
        self.provider = provider or make_provider(context, self.config)

    async def send(self, message: Message, batch: Sequence[Recipient],
                   emission: Emission | None = None) -> list[DeliveryResult]:
        """Text each recipient in their language (``emission``: see SmsProvider.send_texts).

        Returns:
            One result per recipient, in input order (a bad number is ``permanent``, not sent).

        Raises:
            TransientDeliveryError: the provider is unreachable or refuses the account.
        """
        results: list[DeliveryResult | None] = [None] * len(batch)
        to_send: list[tuple[Recipient, str]] = []
        positions: list[int] = []
        for index, recipient in enumerate(batch):
            problem = phone_problem(recipient.address)
            body = message.text_for(recipient.language).body
            if problem is None and not body.strip():
                problem = f"no SMS text for language {recipient.language!r}"
            if problem is not None:
                results[index] = DeliveryResult.permanent(recipient, problem)
                continue
            to_send.append((recipient, body))
            positions.append(index)
        if to_send:
            sent = await self.provider.send_texts(to_send, emission)
            if len(sent) != len(to_send):
                raise RuntimeError(f"SMS provider returned {len(sent)} results for {len(to_send)} texts")
            for index, result in zip(positions, sent, strict=True):
                results[index] = result
        return [r for r in results if r is not None]

    async def aclose(self) -> None:
        await self.provider.aclose()

    def endpoint(self) -> str:
        return self.provider.endpoint()
