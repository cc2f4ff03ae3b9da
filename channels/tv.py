"""TV: a crawl (scrolling caption) through the broadcasters' CAP intake.

Each recipient is one TV station (``Recipient.id`` and ``address`` are the station id of
the facility registry, e.g. ``TV01``). Per station we POST one CAP 1.2 document:

    POST {tv.url}/intake/cap
    Content-Type: application/cap+xml; charset=utf-8
    X-Broadcaster-Key: <tv.key>
    X-Station-Id: <station id>

    202 {"id": "<intake reference>", "station": "TV01", "status": "queued"}

The CAP is ``message.alert`` reduced to the ``<info>`` in the station's language (it airs
one language) with two ``<parameter>`` added: ``crawl`` (the text of
``templates/tv/<language>.j2``, on one line) and ``crawlSeconds`` (how long to run it).
The duration is the reading time of the crawl at ``tv.cjk_chars_per_second`` (Chinese,
Japanese, Korean characters) and ``tv.chars_per_second`` (anything else), times
``tv.repeats`` passes, at least ``tv.min_seconds``, and never beyond the info's expiry; an
expired alert is a ``permanent`` result.

Errors: 401/403 (the broadcaster key) and connection failures raise
:class:`~broadcast.errors.TransientDeliveryError`; 429 is ``throttled``; 5xx and timeouts
``transient``; 404 (unknown station) and other 4xx ``permanent`` with the intake's message.
:func:`post_cap` and :func:`intake_result` are shared with the radio channel, whose intake
speaks the same protocol.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from broadcast.cap import to_xml
from broadcast.errors import TransientDeliveryError
from broadcast.model import Alert, Info, NamedValue
from broadcast.settings import Settings
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

CAP_CONTENT_TYPE = "application/cap+xml; charset=utf-8"
STATION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class TvConfig:
    url: str
    key: str
    timeout_seconds: float = 15.0
    cjk_chars_per_second: float = 4.0
    chars_per_second: float = 12.0
    repeats: int = 3
    min_seconds: int = 30

    def __post_init__(self) -> None:
        if self.cjk_chars_per_second <= 0 or self.chars_per_second <= 0:
            raise ValueError("reading speeds must be positive")
        if self.repeats < 1 or self.min_seconds < 1:
            raise ValueError("repeats and min_seconds must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> TvConfig:
        def option(key: str, default: str) -> str:
            return channel_option(settings, "tv", key, default)

        return cls(
            url=option("url", simulator_url(settings, "tv")).rstrip("/"),
            key=option("key", "demo-tv-key"),
            timeout_seconds=float(option("timeout", "15")),
            cjk_chars_per_second=float(option("cjk_chars_per_second", "4")),
            chars_per_second=float(option("chars_per_second", "12")),
            repeats=int(option("repeats", "3")),
            min_seconds=int(option("min_seconds", "30")),
        )


def is_cjk(char: str) -> bool:
    """A wide (East Asian Wide or Fullwidth) character: a Chinese character or full-width punctuation."""
    return unicodedata.east_asian_width(char) in ("W", "F")


def crawl_text(body: str) -> str:
    """The crawl on one line: runs of white space (line breaks included) become one space."""
    return " ".join(body.split())


def crawl_seconds(text: str, config: TvConfig, expires: datetime | None, now: datetime) -> int:
    """How long to run the crawl: reading time x repeats, at least ``min_seconds``, capped by ``expires``.

    Returns:
        Whole seconds; 0 or less when the alert has already expired.
    """
    cjk = sum(1 for char in text if is_cjk(char))
    reading = cjk / config.cjk_chars_per_second + (len(text) - cjk) / config.chars_per_second
    seconds = max(config.min_seconds, math.ceil(reading * config.repeats))
    if expires is not None:
        seconds = min(seconds, math.floor((expires - now).total_seconds()))
    return seconds


def info_in(alert: Alert, language: str) -> Info:
    """The alert's info in ``language`` (exact tag, else same primary language, else the first)."""
    exact = alert.info_for(language)
    if exact is not None:
        return exact
    primary = language.split("-")[0].lower()
    return next((i for i in alert.infos if i.language.split("-")[0].lower() == primary), alert.infos[0])


def single_info_cap(alert: Alert, info: Info) -> bytes:
    """``alert`` as CAP XML carrying only ``info`` (already extended with parameters or resources)."""
    return to_xml(dataclasses.replace(alert, infos=(info,)))


def error_text(body: bytes, limit: int = 300) -> str:
    """The error message of an intake's JSON error body ({"error": {"message": ...}} or {"error": "..."})."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body.decode("utf-8", "replace").strip()[:limit] or "(empty body)"
    error = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return f"{code}: {message}" if code else str(message)
    if error is not None:
        return str(error)[:limit]
    return json.dumps(doc, ensure_ascii=False)[:limit]


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The Retry-After header in seconds (the delta-seconds form), if any."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


async def post_cap(http: aiohttp.ClientSession, url: str, key: str, station: str, cap: bytes,
                   timeout: float, channel: str) -> tuple[int, bytes, dict[str, str]]:
    """POST one CAP document to a broadcaster intake.

    Returns:
        The HTTP status, body and headers. A timeout is reported as status 504 with no body.

    Raises:
        TransientDeliveryError: the intake cannot be reached at all (connection refused, DNS).
    """
    headers = {"Content-Type": CAP_CONTENT_TYPE, "X-Broadcaster-Key": key, "X-Station-Id": station}
    try:
        async with http.post(f"{url}/intake/cap", data=cap, headers=headers,
                             timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            return response.status, await response.read(), dict(response.headers)
    except aiohttp.ClientConnectorError as exc:
        raise TransientDeliveryError(f"{channel} intake {url} is unreachable: {exc}") from exc
    except TimeoutError:
        return 504, b'{"error": "timed out waiting for the intake"}', {}
    except aiohttp.ClientError as exc:
        return 502, json.dumps({"error": f"connection failed: {exc}"}).encode(), {}


def intake_result(recipient: Recipient, status: int, body: bytes, headers: dict[str, str],
                  channel: str) -> DeliveryResult:
    """Map an intake's answer for one station to a result.

    Raises:
        TransientDeliveryError: 401/403, the account's key is refused (the whole channel is down).
    """
    if 200 <= status < 300:
        try:
            reference = json.loads(body).get("id")
        except (ValueError, AttributeError):
            reference = None
        return DeliveryResult.accepted(recipient, str(reference) if reference else None)
    reason = f"HTTP {status}: {error_text(body)}"
    if status in (401, 403):
        raise TransientDeliveryError(f"{channel} intake refused our broadcaster key ({reason})")
    if status == 429:
        return DeliveryResult.throttled(recipient, reason, retry_after(headers))
    if status >= 500:
        return DeliveryResult.transient(recipient, reason, retry_after(headers))
    return DeliveryResult.permanent(recipient, reason)


@register
class TvAdapter(HttpIntakeAdapter):
    """Crawls on TV stations through the broadcasters' CAP intake."""

    name = "tv"
    capabilities = Capabilities(max_batch=20, max_length=None, segment_rule="none", rate_per_second=1.0,
                                supports_receipts=False, supports_ack=False, kind="broadcast")

    config_type = TvConfig
    intake_path = "/intake/cap"

    def cap_for(self, message: Message, language: str, now: datetime) -> tuple[bytes | None, str | None]:
        """The CAP for a station airing ``language``, or None and the reason it cannot be sent."""
        text = message.text_for(language)
        info = info_in(message.alert, text.language)
        crawl = crawl_text(text.body)
        seconds = crawl_seconds(crawl, self.config, info.expires or message.alert.expires, now)
        if seconds <= 0:
            return None, f"the alert expired at {info.expires}; nothing to air"
        parameters = (*info.parameters, NamedValue("crawl", crawl), NamedValue("crawlSeconds", str(seconds)))
        return single_info_cap(message.alert, dataclasses.replace(info, parameters=parameters)), None

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """One crawl request per station, in input order.

        Raises:
            TransientDeliveryError: the intake is unreachable or refuses the broadcaster key.
        """
        now = datetime.now(UTC)
        caps: dict[str, tuple[bytes | None, str | None]] = {}
        results = []
        for recipient in batch:
            if not STATION_ID.match(recipient.address or ""):
                results.append(DeliveryResult.permanent(recipient, f"not a station id: {recipient.address!r}"))
                continue
            language = message.text_for(recipient.language).language
            if language not in caps:
                caps[language] = self.cap_for(message, language, now)
            cap, problem = caps[language]
            if cap is None:
                results.append(DeliveryResult.permanent(recipient, problem or "nothing to air"))
                continue
            status, body, headers = await post_cap(self._http, self.config.url, self.config.key, recipient.address,
                                                   cap, self.config.timeout_seconds, self.name)
            results.append(intake_result(recipient, status, body, headers, self.name))
        return results
