"""Rendering an alert for one channel in one language, from ``templates/<channel>/<language>.j2``.

A template defines named blocks: ``body`` (required), and as the channel needs
``subject``, ``html`` or any other part (a TV crawl's ``duration``, a screen's
``heading``). Each block is rendered on its own, stripped of surrounding white space.
The context holds the CAP alert (``alert``), the info block of the language (``info``),
the warning signal (``signal``, or None), the areas' names (``areas``), local times
(``effective``, ``expires`` as "2026-07-01 18:00"), the sender's name and anything the
caller adds (an officer's acknowledgement link, say).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from broadcast.errors import InvalidInput
from broadcast.model import Alert
from broadcast.signals import Signal
from channels.base import Message, RenderedText

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"


@functools.cache
def environment(templates_dir: Path = TEMPLATES_DIR) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )


def template_languages(channel: str, templates_dir: Path = TEMPLATES_DIR) -> list[str]:
    folder = templates_dir / channel
    return sorted(p.name.removesuffix(".j2") for p in folder.glob("*.j2")) if folder.is_dir() else []


def _template_for(channel: str, language: str, templates_dir: Path) -> jinja2.Template:
    available = template_languages(channel, templates_dir)
    if not available:
        raise InvalidInput(f"no templates for channel {channel!r}", field="channel")
    choice = language if language in available else next(
        (tag for tag in available if tag.split("-")[0].lower() == language.split("-")[0].lower()), None)
    if choice is None:
        raise InvalidInput(f"channel {channel} has no {language!r} template ({', '.join(available)})",
                           field="language")
    return environment(templates_dir).get_template(f"{channel}/{choice}.j2")


def _local(value: datetime | None, zone: ZoneInfo) -> str:
    return value.astimezone(zone).strftime("%Y-%m-%d %H:%M") if value else ""


def render(channel: str, alert: Alert, language: str, *, signal: Signal | None = None, timezone: str =
           "Asia/Shanghai", extra: Mapping[str, Any] | None = None,
           templates_dir: Path = TEMPLATES_DIR) -> RenderedText:
    """Render ``alert`` for ``channel`` in ``language``.

    Raises:
        InvalidInput: the channel has no template, or none for the language.
    """
    template = _template_for(channel, language, templates_dir)
    info = alert.info_for(language) or (alert.infos[0] if alert.infos else None)
    zone = ZoneInfo(timezone)
    context: dict[str, Any] = {
        "alert": alert,
        "info": info,
        "language": language,
        "signal": signal,
        "areas": ("、" if language.lower().startswith("zh") else ", ").join(a.desc for a in info.areas)
        if info else "",
        "effective": _local((info.effective if info else None) or alert.sent, zone),
        "expires": _local(info.expires if info else None, zone),
        "sent": _local(alert.sent, zone),
        "cancelled": alert.msg_type.value == "Cancel",
        "updated": alert.msg_type.value == "Update",
        **(extra or {}),
    }
    blocks = {}
    for name, block in template.blocks.items():
        blocks[name] = "".join(block(template.new_context(context))).strip()
    if "body" not in blocks:
        raise InvalidInput(f"template {template.name} has no body block", field="channel")
    body = blocks.pop("body")
    return RenderedText(language=language, body=body, subject=blocks.pop("subject", None),
                        html=blocks.pop("html", None), parts=blocks)


def build_message(channel: str, alert_id: str, alert: Alert, *, signal: Signal | None, timezone: str,
                  cap_xml: bytes, extra: Mapping[str, Any] | None = None,
                  templates_dir: Path = TEMPLATES_DIR) -> Message:
    """The alert rendered for ``channel`` in every language it is written in."""
    texts = {info.language: render(channel, alert, info.language, signal=signal, timezone=timezone, extra=extra,
                                   templates_dir=templates_dir) for info in alert.infos}
    return Message(alert_id=alert_id, alert=alert, texts=texts, cap_xml=cap_xml,
                   signal=signal.code if signal else None, colour=signal.colour if signal else None)
