"""Loudspeakers: community emergency-broadcast terminals, played by community group.

Each recipient is one terminal: ``address`` its id (``LS00001``), ``attributes["community"]``
the community code it belongs to (facility registry). The terminal system plays to a
community group, so the batch is grouped by community and each group gets one request
holding the announcement in every language, in order (``loudspeaker.languages``, default
``zh-CN,en``; languages the alert lacks are skipped):

    POST {loudspeaker.url}/api/v1/groups/{community}/play     Authorization: Bearer <token>
    multipart/form-data:
      playlist  application/json  {"alert": "...", "priority": "emergency", "repeat": 2,
                                   "segments": [{"language": "zh-CN", "text": "...", "audio": "audio-0"},
                                                {"language": "en", "text": "...", "audio": "audio-1"}]}
      audio-0   audio/wav         the zh-CN text spoken (channels.speech)
      audio-1   audio/wav         the en text spoken
    202 {"id": "P-000001", "community": "...", "terminals": ["LS00001", ...]}

Multipart rather than JSON with base64 audio: the WAVs (hundreds of kilobytes each) travel
as they are. A terminal of the batch missing from the answer's ``terminals`` is
``permanent`` (not in that group); an unknown community (404) and other 4xx are
``permanent`` for the group; 401/403 and connection failures raise TransientDeliveryError;
429 ``throttled``; 5xx and timeouts ``transient``. A Cancel plays the template's
all-clear announcement the same way. Speech is synthesised once per language per batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from broadcast.errors import InvalidInput, TransientDeliveryError
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
from channels.tv import error_text, retry_after

TERMINAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
COMMUNITY = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


@dataclass(frozen=True, slots=True)
class LoudspeakerConfig:
    url: str
    token: str
    languages: tuple[str, ...] = ("zh-CN", "en")
    repeat: int = 2
    timeout_seconds: float = 30.0
    espeak: str = speech.ESPEAK_BINARY
    speech_timeout_seconds: float = speech.DEFAULT_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        if not self.languages:
            raise ValueError("loudspeaker.languages must name at least one language")
        if not 1 <= self.repeat <= 10:
            raise ValueError("loudspeaker.repeat must be 1..10")

    @classmethod
    def from_settings(cls, settings: Settings) -> LoudspeakerConfig:
        def option(key: str, default: str) -> str:
            return channel_option(settings, "loudspeaker", key, default)

        return cls(
            url=option("url", simulator_url(settings, "loudspeakers")).rstrip("/"),
            token=option("token", "demo-loudspeaker-token"),
            languages=tuple(x.strip() for x in option("languages", "zh-CN,en").split(",") if x.strip()),
            repeat=int(option("repeat", "2")),
            timeout_seconds=float(option("timeout", "30")),
            espeak=option("espeak", speech.ESPEAK_BINARY),
            speech_timeout_seconds=float(option("speech_timeout", str(speech.DEFAULT_TIMEOUT_SECONDS))),
        )


@dataclass(frozen=True, slots=True)
class Segment:
    language: str
    text: str
    wav: bytes


@register
class LoudspeakerAdapter(HttpIntakeAdapter):
    """Community loudspeaker groups through the emergency-broadcast terminal system."""

    name = "loudspeaker"
    capabilities = Capabilities(max_batch=1000, max_length=None, segment_rule="none", rate_per_second=100.0,
                                supports_receipts=False, supports_ack=False, kind="broadcast")

    config_type = LoudspeakerConfig
    intake_path = "/api/v1/groups/{community}/play"

    def sequence(self, message: Message) -> list[str]:
        """The languages to play, in order: the configured ones the message was rendered in."""
        chosen: list[str] = []
        for wanted in self.config.languages:
            primary = wanted.split("-")[0].lower()
            match = next((tag for tag in message.texts if tag == wanted), None) or next(
                (tag for tag in message.texts if tag.split("-")[0].lower() == primary), None)
            if match is not None and match not in chosen:
                chosen.append(match)
        return chosen

    async def segments(self, message: Message) -> list[Segment]:
        """The announcement in each language, spoken.

        Raises:
            InvalidInput: none of the configured languages was rendered, or one has no voice.
            TransientDeliveryError: speech synthesis is unavailable or failed.
        """
        languages = self.sequence(message)
        if not languages:
            raise InvalidInput(f"the alert has none of the loudspeaker languages {', '.join(self.config.languages)}",
                               field="language")
        out = []
        for language in languages:
            text = " ".join(message.texts[language].body.split())
            wav = await speech.synthesize(text, language, binary=self.config.espeak,
                                          timeout=self.config.speech_timeout_seconds)
            out.append(Segment(language, text, wav))
        return out

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """One play request per community group; one result per terminal, in input order.

        Raises:
            TransientDeliveryError: the terminal system is unreachable or refuses the token, or
                speech cannot be synthesised.
        """
        results: dict[int, DeliveryResult] = {}
        groups: dict[str, list[int]] = {}
        for index, recipient in enumerate(batch):
            community = recipient.attributes.get("community", "")
            if not TERMINAL_ID.match(recipient.address or ""):
                results[index] = DeliveryResult.permanent(recipient, f"not a terminal id: {recipient.address!r}")
            elif not COMMUNITY.match(community):
                results[index] = DeliveryResult.permanent(recipient, f"no valid community attribute: {community!r}")
            else:
                groups.setdefault(community, []).append(index)
        if groups:
            try:
                segments = await self.segments(message)
            except InvalidInput as exc:
                segments = []
                for members in groups.values():
                    results.update((i, DeliveryResult.permanent(batch[i], exc.message)) for i in members)
            if segments:
                for community, members in groups.items():
                    played = await self._play(message, community, [batch[i] for i in members], segments)
                    results.update(zip(members, played, strict=True))
        return [results[i] for i in range(len(batch))]

    def _form(self, message: Message, segments: list[Segment]) -> aiohttp.FormData:
        playlist: dict[str, Any] = {
            "alert": message.alert_id, "priority": "emergency", "repeat": self.config.repeat,
            "segments": [{"language": s.language, "text": s.text, "audio": f"audio-{i}"}
                         for i, s in enumerate(segments)],
        }
        form = aiohttp.FormData()
        form.add_field("playlist", json.dumps(playlist, ensure_ascii=False), content_type="application/json")
        for i, segment in enumerate(segments):
            form.add_field(f"audio-{i}", segment.wav, filename=f"{message.alert_id}-{segment.language}.wav",
                           content_type="audio/wav")
        return form

    async def _play(self, message: Message, community: str, recipients: list[Recipient],
                    segments: list[Segment]) -> list[DeliveryResult]:
        url = f"{self.config.url}/api/v1/groups/{quote(community, safe='')}/play"
        headers = {"Authorization": f"Bearer {self.config.token}"}
        try:
            async with self._http.post(url, data=self._form(message, segments), headers=headers,
                                       timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds)) as resp:
                status, raw, response_headers = resp.status, await resp.read(), dict(resp.headers)
        except aiohttp.ClientConnectorError as exc:
            raise TransientDeliveryError(f"loudspeaker system {self.config.url} is unreachable: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            return [DeliveryResult.transient(r, f"play request failed: {exc or 'timed out'}") for r in recipients]
        reason = f"HTTP {status}: {error_text(raw)}"
        if status in (401, 403):
            raise TransientDeliveryError(f"loudspeaker system refused our token ({reason})")
        if status == 429:
            return [DeliveryResult.throttled(r, reason, retry_after(response_headers)) for r in recipients]
        if status >= 500:
            return [DeliveryResult.transient(r, reason, retry_after(response_headers)) for r in recipients]
        if status >= 400:
            return [DeliveryResult.permanent(r, reason) for r in recipients]
        try:
            doc = json.loads(raw)
            reference, terminals = doc.get("id"), set(doc.get("terminals", []))
        except (ValueError, AttributeError, TypeError):
            return [DeliveryResult.transient(r, f"unreadable answer: {raw[:200]!r}") for r in recipients]
        return [DeliveryResult.accepted(r, str(reference) if reference else None) if r.address in terminals
                else DeliveryResult.permanent(r, f"terminal {r.address} is not in community group {community}")
                for r in recipients]
