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
from broadcast.errors import InvalidInput
from broadcast.model import Alert
from broadcast.render import render
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
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"body": self.body, "length": self.length, self.unit: self.count, "limit": self.limit,
                               "fits": self.fits}
        if self.note is not None:
            doc["note"] = self.note
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
    length = getattr(registered()[channel], "text_length", len)(body)
    return Fit(channel, language, body, subject, len(body), "characters", length, limit,
               limit is None or length <= limit)


def preview(alert: Alert, selected: list[str] | None, *, signal: Signal | None,
            settings: Settings) -> dict[str, list[Fit]]:
    """Every channel's rendering of ``alert`` in each of its languages (all channels when ``selected`` is None)."""
    names = list(registered()) if selected is None else selected
    result = {}
    for name in names:
        fits = []
        for info in alert.infos:
            try:
                text = render(name, alert, info.language, signal=signal, timezone=settings.timezone)
            except InvalidInput as err:  # no template in this language: it cannot go out on this channel
                fits.append(Fit(name, info.language, "", None, 0, "characters", 0, 0, False, note=err.message))
                continue
            fits.append(measure(name, info.language, text.body, text.subject, settings))
        result[name] = fits
    return result
