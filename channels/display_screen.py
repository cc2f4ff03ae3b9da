"""Display screens: public LED/LCD screens in the area, through the screen-management API.

Each recipient is one screen: ``address`` its id (``SC00001``), ``attributes`` ``lines``
and ``chars_per_line`` from the facility registry. Screens of one language and one size
get one request:

    POST {display_screen.url}/api/v1/screens/display      Authorization: Bearer <token>
    {"alert": "<alert id>", "screens": ["SC00001", ...],
     "content": {"lines": ["暴雨红色预警信号", "..."], "colour": "#E60012", "blink": true},
     "until": "2026-07-01T20:00:00+08:00"}
    200 {"id": "D-000001", "results": [{"screen": "SC00001", "status": "displayed"},
                                       {"screen": "SC09999", "status": "rejected",
                                        "code": "unknown_screen", "message": "..."}]}

A Cancel clears the screens instead: ``DELETE /api/v1/screens/display`` with
``{"alert": ..., "screens": [...]}``, answered with the same per-screen results
(status ``cleared``).

Layout (:func:`layout`): the template's ``subject`` (the warning's name) is the first line
when the screen has two lines or more; ``body`` is wrapped into the remaining lines.
Widths follow the registry, where ``chars_per_line`` counts full-width cells: a CJK
character (East Asian Wide/Fullwidth, and Ambiguous, which Chinese fonts draw wide)
takes one cell, a Latin letter, digit or space half a cell. Chinese breaks between any
two characters (closing punctuation stays with the character before it), other text at
spaces, a word too long for a line is cut. Text that does not fit is cut with "…" and
the result reports the truncation (``error`` on an ``accepted`` result says how much was
shown). ``colour`` is the warning level's colour (white when the alert has no signal);
red and orange warnings blink.

Errors: 401/403 and connection failures raise TransientDeliveryError; 429 ``throttled``;
5xx and timeouts ``transient``; a screen the API rejects (unknown, content too large) and
any other 4xx ``permanent``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from broadcast.errors import TransientDeliveryError
from broadcast.settings import Settings
from channels.base import (
    Capabilities,
    DeliveryResult,
    DeliveryStatus,
    HttpIntakeAdapter,
    Message,
    Recipient,
    channel_option,
    register,
    simulator_url,
)
from channels.tv import error_text, retry_after

SCREEN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ELLIPSIS = "…"
DEFAULT_COLOUR = "#FFFFFF"
BLINKING_LEVELS = ("red", "orange")
# Closing punctuation must not begin a line (a simple form of the Chinese line-breaking rule).
NO_LINE_START = set("，。、；：！？）》」』】〕,.;:!?)]}…%")


@dataclass(frozen=True, slots=True)
class DisplayScreenConfig:
    url: str
    token: str
    timeout_seconds: float = 15.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DisplayScreenConfig:
        def option(key: str, default: str) -> str:
            return channel_option(settings, "display_screen", key, default)

        return cls(url=option("url", simulator_url(settings, "screens")).rstrip("/"),
                   token=option("token", "demo-screens-token"),
                   timeout_seconds=float(option("timeout", "15")))


def cells(text: str) -> int:
    """Width of ``text`` in half cells: 2 for a wide (CJK) character, 1 for anything else."""
    return sum(2 if unicodedata.east_asian_width(c) in ("W", "F", "A") else 1 for c in text)


def _tokens(text: str) -> list[str]:
    """Unbreakable pieces: each CJK character, each run of other non-space characters, each space.

    Closing punctuation is glued to the piece before it.
    """
    pieces: list[str] = []
    for char in " ".join(text.split()):
        wide = unicodedata.east_asian_width(char) in ("W", "F", "A")
        if char in NO_LINE_START and pieces and pieces[-1] != " ":
            pieces[-1] += char
        elif char == " " or wide or not pieces or pieces[-1] == " " or cells(pieces[-1][-1]) == 2:
            pieces.append(char)
        else:
            pieces[-1] += char
    return pieces


def wrap(text: str, columns: int) -> list[str]:
    """``text`` in lines of at most ``columns`` full-width cells (see the module docstring)."""
    width = 2 * columns
    lines: list[str] = []
    current = ""
    for piece in _tokens(text):
        if piece == " ":
            if current:
                current += " "
            continue
        if cells(current + piece) <= width:
            current += piece
            continue
        if current.strip():
            lines.append(current.rstrip())
        current = ""
        while cells(piece) > width:  # a word longer than a line is cut
            cut = _fit(piece, width)
            lines.append(cut)
            piece = piece[len(cut):]
        current = piece
    if current.strip():
        lines.append(current.rstrip())
    return lines


def _fit(text: str, width: int) -> str:
    """The longest prefix of ``text`` within ``width`` half cells (at least one character)."""
    end = 0
    while end < len(text) and cells(text[:end + 1]) <= width:
        end += 1
    return text[:max(end, 1)]


def _ellipsize(line: str, columns: int) -> str:
    return _fit(line, 2 * columns - cells(ELLIPSIS)).rstrip() + ELLIPSIS


@dataclass(frozen=True, slots=True)
class Layout:
    lines: tuple[str, ...]
    truncated: bool
    shown_chars: int
    total_chars: int


def layout(heading: str | None, body: str, lines: int, columns: int) -> Layout:
    """Lay out a heading and a body on a screen of ``lines`` x ``columns`` full-width cells."""
    out: list[str] = []
    truncated = False
    total = len(" ".join(body.split()))
    if heading and lines >= 2:
        first = wrap(heading, columns)
        out.append(first[0] if len(first) == 1 else _ellipsize(first[0], columns))
        truncated = len(first) > 1
    wrapped = wrap(body, columns)
    room = lines - len(out)
    if len(wrapped) > room:
        wrapped = wrapped[:room]
        wrapped[-1] = _ellipsize(wrapped[-1], columns)
        truncated = True
    out.extend(wrapped)
    shown = sum(len(line.rstrip(ELLIPSIS)) for line in wrapped)
    return Layout(tuple(out), truncated, min(shown, total), total)


def _screen_size(recipient: Recipient) -> tuple[int, int] | None:
    try:
        lines, columns = int(recipient.attributes["lines"]), int(recipient.attributes["chars_per_line"])
    except (KeyError, ValueError, TypeError):
        return None
    return (lines, columns) if lines >= 1 and columns >= 2 else None


@register
class DisplayScreenAdapter(HttpIntakeAdapter):
    """Public display screens through the screen-management API."""

    name = "display_screen"
    capabilities = Capabilities(max_batch=500, max_length=None, segment_rule="none", rate_per_second=200.0,
                                supports_receipts=False, supports_ack=False, kind="broadcast")

    config_type = DisplayScreenConfig
    intake_path = "/api/v1/screens/display"

    async def send(self, message: Message, batch: Sequence[Recipient]) -> list[DeliveryResult]:
        """Show the alert on (or, for a Cancel, clear) the batch's screens; one result per screen.

        Raises:
            TransientDeliveryError: the API is unreachable or refuses the token.
        """
        results: dict[int, DeliveryResult] = {}
        groups: dict[tuple[str, int, int], list[int]] = {}
        for index, recipient in enumerate(batch):
            size = _screen_size(recipient)
            if not SCREEN_ID.match(recipient.address or ""):
                results[index] = DeliveryResult.permanent(recipient, f"not a screen id: {recipient.address!r}")
            elif size is None:
                results[index] = DeliveryResult.permanent(
                    recipient, "screen size unknown: attributes lines (>= 1) and chars_per_line (>= 2) are required")
            else:
                language = message.text_for(recipient.language).language
                groups.setdefault((language, *size), []).append(index)
        cancel = message.alert.msg_type.value == "Cancel"
        for (language, lines, columns), members in groups.items():
            recipients = [batch[i] for i in members]
            if cancel:
                group_results = await self._request("DELETE", {"alert": message.alert_id,
                                                               "screens": [r.address for r in recipients]},
                                                    recipients, None)
            else:
                text = message.text_for(language)
                shown = layout(text.subject, text.body, lines, columns)
                note = (f"text truncated to fit {lines}x{columns}: {shown.shown_chars} of {shown.total_chars} "
                        "characters of the body shown") if shown.truncated else None
                group_results = await self._request("POST", self._display_body(message, recipients, shown),
                                                    recipients, note)
            results.update(zip(members, group_results, strict=True))
        return [results[i] for i in range(len(batch))]

    @staticmethod
    def _display_body(message: Message, recipients: list[Recipient], shown: Layout) -> dict[str, Any]:
        expires = message.alert.expires
        level = (message.signal or "").rsplit(".", 1)[-1]
        return {"alert": message.alert_id, "screens": [r.address for r in recipients],
                "content": {"lines": list(shown.lines), "colour": message.colour or DEFAULT_COLOUR,
                            "blink": level in BLINKING_LEVELS},
                "until": expires.isoformat() if expires else None}

    async def _request(self, method: str, body: dict[str, Any], recipients: list[Recipient],
                       note: str | None) -> list[DeliveryResult]:
        url = self.endpoint()
        headers = {"Authorization": f"Bearer {self.config.token}"}
        try:
            async with self._http.request(method, url, json=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds)) as resp:
                status, raw, response_headers = resp.status, await resp.read(), dict(resp.headers)
        except aiohttp.ClientConnectorError as exc:
            raise TransientDeliveryError(f"screen API {url} is unreachable: {exc}") from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            return [DeliveryResult.transient(r, f"screen API request failed: {exc or 'timed out'}") for r in recipients]
        reason = f"HTTP {status}: {error_text(raw)}"
        if status in (401, 403):
            raise TransientDeliveryError(f"screen API refused our token ({reason})")
        if status == 429:
            return [DeliveryResult.throttled(r, reason, retry_after(response_headers)) for r in recipients]
        if status >= 500:
            return [DeliveryResult.transient(r, reason, retry_after(response_headers)) for r in recipients]
        if status >= 400:
            return [DeliveryResult.permanent(r, reason) for r in recipients]
        try:
            doc = json.loads(raw)
            reference = str(doc.get("id") or "") or None
            by_screen = {item["screen"]: item for item in doc.get("results", [])}
        except (ValueError, AttributeError, KeyError, TypeError):
            return [DeliveryResult.transient(r, f"unreadable screen API answer: {raw[:200]!r}") for r in recipients]
        out = []
        for recipient in recipients:
            item = by_screen.get(recipient.address)
            if item is None:
                out.append(DeliveryResult.transient(recipient, "the screen API did not report this screen"))
            elif item.get("status") in ("displayed", "cleared"):
                out.append(DeliveryResult(recipient.id, DeliveryStatus.ACCEPTED, provider_ref=reference, error=note))
            else:
                out.append(DeliveryResult.permanent(recipient, f"{item.get('code')}: {item.get('message')}"))
        return out
