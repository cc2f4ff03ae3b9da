"""Radio: a spoken bulletin, as script and synthesised speech, through the broadcasters' CAP intake.

Each recipient is one radio station (``Recipient.id`` and ``address`` are the station id
of the facility registry, e.g. ``FM01``). The intake protocol is the TV one
(:mod:`channels.tv`): ``POST {radio.url}/intake/cap`` with ``X-Broadcaster-Key`` and
``X-Station-Id``. The CAP is ``message.alert`` reduced to the ``<info>`` in the
station's language, with

- ``<parameter>`` ``script``: the text of ``templates/radio/<language>.j2``, for a
  presenter to read, and ``audioSeconds``: the length of the recording;
- a ``<resource>``: that script spoken by eSpeak NG (:mod:`channels.speech`), a WAV
  (audio/x-wav) with ``size`` and SHA-1 ``digest``, *embedded* as ``derefUri``
  (base64). CAP 1.2 provides ``derefUri`` for one-way links; the station can air the
  recording without fetching anything from us. A bulletin of ~45 s makes a CAP of about
  3 MB, which the intake accepts.

Speech is synthesised once per language per batch. Error mapping is the TV channel's
(:func:`channels.tv.intake_result`); if espeak-ng is missing or fails, the whole batch
raises :class:`~broadcast.errors.TransientDeliveryError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from broadcast.errors import InvalidInput
from broadcast.model import NamedValue
from broadcast.settings import Settings
from channels import speech
from channels.base import (
    Capabilities,
    DeliveryResult,
    HttpIntakeAdapter,
    Message,
    Recipient,
    channel_option,
    register,
    simulator_url,
)
from channels.tv import STATION_ID, info_in, intake_result, post_cap, single_info_cap


@dataclass(frozen=True, slots=True)
class RadioConfig:
    url: str
    key: str
    timeout_seconds: float = 30.0
    espeak: str = speech.ESPEAK_BINARY
    speech_timeout_seconds: float = speech.DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> RadioConfig:
        def option(key: str, default: str) -> str:
            return channel_option(settings, "radio", key, default)

        return cls(
            url=option("url", simulator_url(settings, "radio")).rstrip("/"),
            key=option("key", "demo-radio-key"),
            timeout_seconds=float(option("timeout", "30")),
            espeak=option("espeak", speech.ESPEAK_BINARY),
            speech_timeout_seconds=float(option("speech_timeout", str(speech.DEFAULT_TIMEOUT_SECONDS))),
        )


@register
class RadioAdapter(HttpIntakeAdapter):
    """Spoken bulletins on radio stations through the broadcasters' CAP intake."""

    name = "radio"
    capabilities = Capabilities(max_batch=20, max_length=None, segment_rule="none", rate_per_second=1.0,
                                supports_receipts=False, supports_ack=False, kind="broadcast")

    config_type = RadioConfig
    intake_path = "/intake/cap"

    async def cap_for(self, message: Message, language: str) -> bytes:
        """The CAP for a station airing ``language``: script parameter and embedded WAV resource.

        Raises:
            InvalidInput: no speech voice for the language.
            TransientDeliveryError: speech synthesis is unavailable or failed.
        """
        text = message.text_for(language)
        info = info_in(message.alert, text.language)
        script = " ".join(text.body.split())
        wav = await speech.synthesize(script, text.language, binary=self.config.espeak,
                                      timeout=self.config.speech_timeout_seconds)
        seconds = speech.wav_info(wav).duration_seconds
        desc = f"{text.subject or 'Alert bulletin'} ({text.language})"
        parameters = (*info.parameters, NamedValue("script", script), NamedValue("audioSeconds", f"{seconds:.1f}"))
        resources = (*info.resources, speech.cap_resource(wav, desc))
        return single_info_cap(message.alert, dataclasses.replace(info, parameters=parameters, resources=resources))

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """One bulletin per station, in input order.

        Raises:
            TransientDeliveryError: the intake is unreachable, refuses the broadcaster key, or
                speech cannot be synthesised.
        """
        caps: dict[str, bytes | str] = {}  # language -> CAP, or why it cannot be made
        results = []
        for recipient in batch:
            if not STATION_ID.match(recipient.address or ""):
                results.append(DeliveryResult.permanent(recipient, f"not a station id: {recipient.address!r}"))
                continue
            language = message.text_for(recipient.language).language
            if language not in caps:
                try:
                    caps[language] = await self.cap_for(message, language)
                except InvalidInput as exc:
                    caps[language] = exc.message
            cap = caps[language]
            if isinstance(cap, str):
                results.append(DeliveryResult.permanent(recipient, cap))
                continue
            status, body, headers = await post_cap(self._http, self.config.url, self.config.key, recipient.address,
                                                   cap, self.config.timeout_seconds, self.name)
            results.append(intake_result(recipient, status, body, headers, self.name))
        return results
