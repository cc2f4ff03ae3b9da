"""Composing an alert from a forecaster's request, and the service's rules for what may be sent.

A composition request is what the API's ``POST /api/alerts`` takes as JSON::

    {"signal": {"hazard": "rainstorm", "level": "red"},
     "areas": [{"desc": "福田区", "geometry": {"type": "Polygon", "coordinates": [...]}}],
     "expires": "2026-06-01T18:00:00+08:00",
     "info": [{"language": "zh-CN", "description": "..."}, {"language": "en", "description": "..."}]}

``channels`` (optional) names the channels the alert goes out on; all of them when absent.
The warning signal fills every CAP field that follows from it (category, event,
urgency, severity, certainty, response types, event code, default headline and
instructions in each language); anything given in ``info`` overrides it. Top-level
``areas`` and times apply to every language. The request is kept with the alert so an
edit or an Update can change one thing and keep the rest.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broadcast.codec import (
    area_from_json,
    info_from_json,
    items,
    join,
    parse_time,
    reject_unknown,
    require_object,
    text,
)
from broadcast.errors import InvalidInput
from broadcast.model import Alert, MsgType, Reference, Scope, Status, parse_enum
from broadcast.records import Finding
from broadcast.settings import Settings
from broadcast.signals import Signal, SignalCatalogue

COMPOSITION_FIELDS = frozenset(
    {"signal", "status", "scope", "source", "restriction", "addresses", "codes", "note", "incidents",
     "effective", "onset", "expires", "areas", "info", "languages", "channels"}
)


@dataclass(frozen=True, slots=True)
class Composed:
    alert: Alert
    signal: Signal | None
    request: dict[str, Any]


def new_alert_id(now: datetime) -> str:
    """Our id for an alert record: sortable by time, unguessable enough to not collide."""
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def merge_requests(base: Mapping[str, Any], change: Mapping[str, Any]) -> dict[str, Any]:
    """A composition request with the top-level keys of ``change`` replacing those of ``base``.

    ``info`` entries are merged per language, so a PATCH can change one language's text.
    """
    merged = dict(base)
    for key, value in change.items():
        if key == "info" and isinstance(value, list) and isinstance(base.get("info"), list):
            by_language = {e.get("language"): dict(e) for e in base["info"] if isinstance(e, Mapping)}
            for entry in value:
                if isinstance(entry, Mapping):
                    language = entry.get("language")
                    combined = {**by_language.get(language, {}), **entry}
                    by_language[language] = {k: v for k, v in combined.items() if v is not None}
            merged["info"] = list(by_language.values())
        elif value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


# The headline's words for areas too many (or too long) to name: never the whole city's wording,
# which would send people outside the areas into action.
PART_OF_CITY = {"zh": "部分地区", "en": "parts of the city"}


def _part_of_city(language: str) -> str:
    return PART_OF_CITY.get(language.split("-")[0].lower(), PART_OF_CITY["en"])


def _area_words(doc: Mapping[str, Any], language: str, name_units: UnitNamer | None) -> str | None:
    """The areas as the headline names them: their names, or "parts of the city" when they take
    more than 40 characters; None (the catalogue's whole-city wording) when there are none.

    Areas given by administrative units only are named together, so that every district, in
    one area or in ten, is the city.
    """
    areas = [a for a in items(doc, "areas", "") if isinstance(a, Mapping)]
    if name_units is not None and areas and all(a.get("desc") is None and _unit_codes(a) for a in areas):
        together = name_units([code for a in areas for code in _unit_codes(a)], language)
        if together is not None and len(together) <= 40:
            return together
    names = [a["desc"] for a in _localized_areas(doc, language, name_units)
             if isinstance(a, Mapping) and isinstance(a.get("desc"), str)]
    if not names:
        return None
    words = ("、" if language.startswith("zh") else ", ").join(names)
    return words if len(words) <= 40 else _part_of_city(language)


def _headline(signal: Signal, language: str, area: str | None, settings: Settings) -> str:
    """The signal's headline for ``area``; one that would be too long says "parts of the city"."""
    headline = signal.headline(language, area=area)
    if len(headline) > settings.max_headline_length and area is not None:
        headline = signal.headline(language, area=_part_of_city(language))
    return headline


def _signal(doc: Mapping[str, Any], catalogue: SignalCatalogue) -> Signal | None:
    raw = doc.get("signal")
    if raw is None:
        return None
    spec = require_object(raw, "signal")
    reject_unknown(spec, {"hazard", "level"}, "signal")
    hazard = text(spec, "hazard", "signal", required=True)
    level = text(spec, "level", "signal", required=True)
    return catalogue.get(hazard or "", level or "")


def _languages(doc: Mapping[str, Any], settings: Settings) -> list[str]:
    overrides = [require_object(e, f"info[{i}]") for i, e in enumerate(items(doc, "info", ""))]
    if doc.get("languages") is not None:
        languages = list(items(doc, "languages", ""))
        where = "languages"
    elif overrides:
        languages = [e.get("language") for e in overrides]
        where = "info"
    else:
        languages = list(settings.required_languages)
        where = "languages"
    for index, language in enumerate(languages):
        field = f"{where}[{index}]" + (".language" if where == "info" else "")
        if language not in settings.languages:
            raise InvalidInput(f"unknown language {language!r}; this service sends in: "
                               f"{', '.join(settings.languages)}", field=field)
        if languages.index(language) != index:
            raise InvalidInput(f"language {language!r} is given twice", field=field)
    for index, entry in enumerate(overrides):
        if entry.get("language") not in languages:
            raise InvalidInput(f"language {entry.get('language')!r} is not among the alert's languages "
                               f"({', '.join(languages)})", field=f"info[{index}].language")
    return languages


# Names an area by its administrative codes in a language (None if it cannot).
UnitNamer = Callable[[list[str], str], str | None]
DEFAULT_AREA_NAME = {"zh": "指定区域", "en": "Designated area"}


def _unit_codes(area: Mapping[str, Any]) -> list[str]:
    """The administrative unit codes (adcodes) an area lists among its geocodes."""
    codes = [g if isinstance(g, str) else g.get("value") for g in area.get("geocodes") or ()
             if isinstance(g, str) or (isinstance(g, Mapping) and str(g.get("value_name", "")).lower() == "adcode")]
    return [c for c in codes if isinstance(c, str)]


def _default_desc(area: Mapping[str, Any], language: str, name_units: UnitNamer | None) -> str:
    codes = _unit_codes(area)
    named = name_units(codes, language) if codes and name_units else None
    return named or DEFAULT_AREA_NAME.get(language.split("-")[0], DEFAULT_AREA_NAME["en"])


def _localized_areas(doc: Mapping[str, Any], language: str, name_units: UnitNamer | None = None) -> list[Any]:
    """Top-level areas as one language's info carries them.

    A ``desc`` given per language is resolved; a missing one is named after the area's
    administrative units, or generically.
    """
    areas = []
    for area in items(doc, "areas", ""):
        if isinstance(area, Mapping) and area.get("desc") is None:
            area = {**area, "desc": _default_desc(area, language, name_units)}
        if isinstance(area, Mapping) and isinstance(area.get("desc"), Mapping):
            texts = area["desc"]
            primary = language.split("-")[0]
            chosen = texts.get(language) or next(
                (v for k, v in texts.items() if isinstance(k, str) and k.split("-")[0] == primary), None)
            area = {**area, "desc": chosen if chosen is not None else next(iter(texts.values()), None)}
        areas.append(area)
    return areas


def compose(
    request: Mapping[str, Any],
    *,
    settings: Settings,
    catalogue: SignalCatalogue,
    identifier: str,
    sent: datetime,
    msg_type: MsgType = MsgType.ALERT,
    references: tuple[Reference, ...] = (),
    name_units: UnitNamer | None = None,
    known_channels: Collection[str] | None = None,
) -> Composed:
    """Build and check a CAP alert from a composition request.

    Raises:
        InvalidInput: naming the first field at fault (a request field, or ``info[i].x``).
    """
    doc = require_object(request, "")
    reject_unknown(doc, COMPOSITION_FIELDS, "")
    signal = _signal(doc, catalogue)
    languages = _languages(doc, settings)

    effective = parse_time(doc.get("effective"), "effective") or sent
    onset = parse_time(doc.get("onset"), "onset")
    expires = parse_time(doc.get("expires"), "expires")
    if expires is None:
        expires = (onset or effective) + timedelta(hours=settings.default_validity_hours)
    if expires <= (onset or effective):
        raise InvalidInput(f"expires must be later than {'onset' if onset else 'effective'}", field="expires")
    if expires <= sent:
        raise InvalidInput("expires is already in the past", field="expires")
    if not items(doc, "areas", "") and not any(
        isinstance(e, Mapping) and e.get("areas") for e in items(doc, "info", "")
    ):
        raise InvalidInput("an alert needs at least one area (polygon, circle or administrative code)",
                           field="areas")

    # Checked here so that errors name the request's own field (areas[0]...), not each language's copy.
    for index, area in enumerate(_localized_areas(doc, languages[0], name_units)):
        area_from_json(area, f"areas[{index}]")
    overrides = {e.get("language"): e for e in items(doc, "info", "") if isinstance(e, Mapping)}
    infos = []
    for index, language in enumerate(languages):
        entry: dict[str, Any] = {
            "language": language,
            "sender_name": settings.sender_name,
            "contact": settings.contact,
            "web": settings.web,
            "effective": effective.isoformat(),
            "expires": expires.isoformat(),
            "areas": _localized_areas(doc, language, name_units),
        }
        if onset is not None:
            entry["onset"] = onset.isoformat()
        if signal is not None:
            try:
                signal.event(language)
            except InvalidInput:
                raise InvalidInput(f"the warning-signal catalogue has no {language!r} text",
                                   field=f"languages[{index}]") from None
            entry.update({
                "categories": [c.value for c in signal.categories],
                "event": signal.event(language),
                "urgency": signal.urgency.value,
                "severity": signal.severity.value,
                "certainty": signal.certainty.value,
                "response_types": [r.value for r in signal.response_types],
                "event_codes": [{"value_name": signal.event_code.value_name, "value": signal.event_code.value}],
                "headline": _headline(signal, language, _area_words(doc, language, name_units), settings),
                "description": signal.criteria(language),
                "instruction": signal.instruction(language),
            })
        entry.update(overrides.get(language, {}))
        infos.append(info_from_json(entry, f"info[{index}]"))

    codes = items(doc, "codes", "")
    if not all(isinstance(c, str) for c in codes):
        raise InvalidInput("must be a list of strings", field="codes")
    selected = items(doc, "channels", "")
    for index, name in enumerate(selected):
        if not isinstance(name, str) or (known_channels is not None and name not in known_channels):
            known = ", ".join(sorted(known_channels or ()))
            raise InvalidInput(f"unknown channel {name!r}; channels are: {known}", field=f"channels[{index}]")
        if selected.index(name) != index:
            raise InvalidInput(f"channel {name!r} is given twice", field=f"channels[{index}]")
    alert_fields: dict[str, Any] = {k: text(doc, k, "") for k in ("source", "restriction", "addresses", "note",
                                                                   "incidents")}
    try:
        alert = Alert(
            identifier=identifier,
            sender=settings.sender,
            sent=sent,
            status=parse_enum(Status, doc.get("status", "Actual"), "status"),
            msg_type=msg_type,
            scope=parse_enum(Scope, doc.get("scope", "Public"), "scope"),
            codes=tuple(codes),
            references=references,
            infos=tuple(infos),
            **alert_fields,
        )
    except InvalidInput as err:
        raise err.at("") from None
    for finding in policy_findings(alert, settings):
        raise InvalidInput(finding.message, field=finding.field)
    return Composed(alert, signal, dict(doc))


def policy_findings(alert: Alert, settings: Settings) -> list[Finding]:
    """What keeps an alert from being sent under this service's rules (empty when it may go)."""
    found: list[Finding] = []
    languages = [info.language for info in alert.infos]
    for missing in [lang for lang in settings.required_languages if lang not in languages]:
        found.append(Finding("missing_language", "info", f"an alert must be written in {missing!r} too"))
    for i, info in enumerate(alert.infos):
        path = f"info[{i}]"
        if info.language not in settings.languages:
            found.append(Finding("unsupported_language", join(path, "language"),
                                 f"this service does not send in {info.language!r}"))
        if not info.headline or not info.headline.strip():
            found.append(Finding("missing_headline", join(path, "headline"), "a headline is required"))
        elif len(info.headline) > settings.max_headline_length:
            found.append(Finding("too_long", join(path, "headline"),
                                 f"headline is {len(info.headline)} characters; "
                                 f"the maximum is {settings.max_headline_length}"))
        for key in ("description", "instruction"):
            value = getattr(info, key) or ""
            if len(value) > settings.max_text_length:
                found.append(Finding("too_long", join(path, key),
                                     f"{key} is {len(value)} characters; the maximum is {settings.max_text_length}"))
        if not info.areas:
            found.append(Finding("missing_area", join(path, "areas"), "at least one area is required"))
    return found
