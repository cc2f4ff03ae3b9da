"""The ``voice`` channel: Twilio phone calls reading the alert aloud; pressing 1 acknowledges it.

Each call carries its TwiML inline (``Twiml``), built with the official library:

    <Response>
      <Gather numDigits="1" timeout="10" method="POST"
              action="{callback_base_url}/api/callbacks/twilio/voice?alert=..&recipient=..&lang=..">
        <Say language="cmn-CN" voice="Polly.Zhiyu" loop="2">{templates/voice/zh-CN.j2 body}</Say>
      </Gather>
      <Say language="cmn-CN" voice="Polly.Zhiyu">{the template's "goodbye" block}</Say>
    </Response>

The keypress reaches channels/twilio_callbacks.py (signed by Twilio, so the alert and
recipient in the action URL cannot be forged), call progress reaches the status callback.
Configuration: ``voice.twilio_*`` options, as for SMS (see channels/twilio.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlencode

from twilio.twiml.voice_response import VoiceResponse

from channels.base import (
    Capabilities,
    ChannelContext,
    DeliveryResult,
    Message,
    Recipient,
    RenderedText,
    register,
)
from channels.twilio import VOICE_CALLBACK_PATH, TwilioConfig, check_phone, create_all, make_client

# Primary language subtag -> (Twilio <Say> language, Amazon Polly voice that speaks it).
SPEECH: dict[str, tuple[str, str]] = {
    "zh": ("cmn-CN", "Polly.Zhiyu"),
    "en": ("en-US", "Polly.Joanna"),
}
DEFAULT_SPEECH = SPEECH["zh"]
# The call's progress events we want status callbacks for ("completed" brings every final status).
CALL_EVENTS = ["initiated", "ringing", "answered", "completed"]
GATHER_TIMEOUT_SECONDS = 10
RING_TIMEOUT_SECONDS = 30
ACK_DIGIT = "1"


def speech_for(language: str) -> tuple[str, str]:
    """The (Say language, voice) for a language tag such as "zh-CN" or "en"."""
    return SPEECH.get(language.split("-")[0].lower(), DEFAULT_SPEECH)


def build_twiml(text: RenderedText, action_url: str) -> str:
    """The TwiML of one alert call: the text (twice) inside a one-digit Gather, then a goodbye.

    Args:
        text: the voice template rendered in the recipient's language (``body``; ``goodbye`` part).
        action_url: where Twilio posts the pressed digit.
    """
    language, voice = speech_for(text.language)
    response = VoiceResponse()
    gather = response.gather(num_digits=1, action=action_url, method="POST", timeout=GATHER_TIMEOUT_SECONDS)
    gather.say(text.body, language=language, voice=voice, loop=2)
    goodbye = text.parts.get("goodbye")
    if goodbye:
        response.say(goodbye, language=language, voice=voice)
    return str(response)


@register
class VoiceAdapter:
    """Phone calls through Twilio's Calls API, acknowledged by pressing 1."""

    name = "voice"
    capabilities = Capabilities(max_batch=100, max_length=None, segment_rule="none", rate_per_second=100,
                                supports_receipts=True, supports_ack=True)

    def __init__(self, context: ChannelContext) -> None:
        self.settings = context.settings
        self.config = TwilioConfig.from_settings(context.settings, "voice")
        self._client = make_client(self.config, context.http)
        self._in_flight = asyncio.Semaphore(self.config.concurrency)  # for every send of this adapter

    def action_url(self, message: Message, recipient: Recipient, language: str) -> str:
        query = urlencode({"alert": message.alert_id, "recipient": recipient.id, "lang": language})
        return f"{self.settings.callback_base_url}{VOICE_CALLBACK_PATH}?{query}"

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """Place one call per recipient; one result per recipient, in input order.

        Returns:
            ``accepted`` with the Call SID as provider_ref, or why not.

        Raises:
            TransientDeliveryError: Twilio is unreachable or refuses the account.
        """
        jobs: list[tuple[Recipient, Callable[[], Awaitable[Any]] | str]] = []
        for recipient in batch:
            problem = check_phone(recipient.address)
            if problem:
                jobs.append((recipient, problem))
                continue
            text = message.text_for(recipient.language)
            twiml = build_twiml(text, self.action_url(message, recipient, text.language))
            jobs.append((recipient, self._create(recipient.address, twiml)))
        return await create_all(jobs, self._in_flight, self.endpoint())

    def _create(self, to: str, twiml: str) -> Callable[[], Awaitable[Any]]:
        return lambda: self._client.calls.create_async(
            to=to, from_=self.config.from_number, twiml=twiml, status_callback=self.config.status_callback,
            status_callback_event=CALL_EVENTS, status_callback_method="POST", timeout=RING_TIMEOUT_SECONDS)

    async def aclose(self) -> None:
        """Nothing to release: the HTTP session belongs to the ChannelContext."""

    def endpoint(self) -> str:
        return f"twilio {self.config.url} (account {self.config.account_sid}, from {self.config.from_number})"
