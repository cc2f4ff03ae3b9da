"""What each channel will show: the rendered text per language, its length, and whether it fits.

The fit rule follows the channel's declared :class:`~channels.base.Capabilities`:
``sms`` texts may take at most ``max_sms_segments`` concatenated parts (GSM-7 160/153,
UCS-2 70/67), ``cbs`` texts at most 15 cell-broadcast pages (93 GSM-7 or 41 UCS-2
characters each), others at most ``max_length`` characters. An alert whose text does not
fit a channel it selects cannot be submitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import channels  # noqa: F401 - registers every adapter
from broadcast.cap import to_xml
from broadcast.model import Alert
from broadcast.render import build_message
from broadcast.settings import Settings
from broadcast.signals import Signal
from channels import sms_text
from channels.base import registered
from channels.cell_broadcast import cbs_length


@dataclass(frozen=True, slots=True)
class Fit:
    channel: str
    language: str
    body: str
    subject: str | None
    length: int  # characters
    unit: str  # what count counts: "segments", "pages" or "characters"
    count: int
    limit: int | None
    fits: bool
    encoding: str | None = None

    def as_dict(self) -> dict[str, Any]:
        doc = {"body": self.body, "length": self.length, self.unit: self.count, "limit": self.limit,
               "fits": self.fits}
        if self.subject is not None:
            doc["subject"] = self.subject
        if self.encoding is not None:
            doc["encoding"] = self.encoding
        return doc


def measure(channel: str, language: str, body: str, subject: str | None, settings: Settings) -> Fit:
    capabilities = registered()[channel].capabilities
    if capabilities.segment_rule == "sms":
        summary = sms_text.summary(body)
        return Fit(channel, language, body, subject, len(body), "segments", summary.segments,
                   settings.max_sms_segments, summary.segments <= settings.max_sms_segments, summary.encoding)
    if capabilities.segment_rule == "cbs":
        length = cbs_length(body)
        return Fit(channel, language, body, subject, len(body), "pages", length.pages, length.max_pages,
                   length.fits, length.encoding)
    limit = capabilities.max_length
    return Fit(channel, language, body, subject, len(body), "characters", len(body), limit,
               limit is None or len(body) <= limit)


def preview(alert: Alert, alert_id: str, selected: list[str] | None, *, signal: Signal | None,
            settings: Settings) -> dict[str, list[Fit]]:
    """Every channel's rendering of ``alert`` in each of its languages (all channels when ``selected`` is None)."""
    names = list(registered()) if selected is None else selected
    cap_xml = to_xml(alert)
    result = {}
    for name in names:
        message = build_message(name, alert_id, alert, signal=signal, timezone=settings.timezone, cap_xml=cap_xml)
        result[name] = [measure(name, language, text.body, text.subject, settings)
                        for language, text in message.texts.items()]
    return result
