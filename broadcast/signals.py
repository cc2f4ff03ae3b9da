"""The Chinese meteorological warning-signal catalogue (气象灾害预警信号).

A duty forecaster picks a hazard and a colour ("rainstorm", "red"); :class:`Signal` then
supplies every CAP field that follows from that choice: ``event``, ``severity``,
``urgency``, ``certainty``, ``categories``, ``responseType``, an ``eventCode``, a default
headline, the official criteria and default public instructions (防御指南), in every
catalogue language, plus a display colour for screens.

The data lives in ``broadcast/signals.toml`` and is validated when loaded; a broken entry
raises :class:`CatalogueError` naming the entry (``hazards.rainstorm.levels.red.severity``).

Rules (stated once, in the ``[levels]`` tables of ``signals.toml``):

* severity follows the colour: white and blue Minor, yellow Moderate, orange Severe,
  red Extreme;
* urgency follows the colour: white Future, blue and yellow Expected, orange and red
  Immediate;
* certainty is Likely, except where the official definition of a level rests on amounts
  already measured: rainstorm orange and red (rain in the past 3 hours) are Observed.

Languages: texts are looked up by exact tag (case-insensitive), else by primary subtag
(``en-US`` gets ``en``, ``zh``, ``zh-Hans`` and ``zh-SG`` get ``zh-CN``). Traditional-Chinese
tags (``zh-HK``, ``zh-TW``, ``zh-MO``, ``zh-Hant``) are refused rather than served simplified
text labelled as Traditional; anything else unknown raises ``InvalidInput(field="language")``.
"""

from __future__ import annotations

import functools
import os
import re
import string
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn, TypeVar

from broadcast.errors import BroadcastError, InvalidInput
from broadcast.model import SEVERITY_RANK, Category, Certainty, NamedValue, ResponseType, Severity, Urgency

#: CAP ``eventCode`` valueName under which the signal travels, value ``"<hazard>.<level>"``.
SIGNAL_VALUE_NAME = "CN-MET-SIGNAL"
#: The packaged catalogue file, next to this module.
CATALOGUE_RESOURCE = "signals.toml"
#: Placeholders a headline template may use.
HEADLINE_FIELDS = frozenset({"issuer", "area", "event"})
#: Where a hazard's definition comes from.
SOURCES = frozenset({"shenzhen", "guangdong", "national"})

E = TypeVar("E", bound=StrEnum)

_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")
_HAZARD_CODE = re.compile(r"^[a-z][a-z0-9_]*$")
_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")
_TRADITIONAL_CHINESE = frozenset({"hant", "hk", "tw", "mo"})
_URGENCY_RANK = MappingProxyType(
    {Urgency.UNKNOWN: 0, Urgency.PAST: 0, Urgency.FUTURE: 1, Urgency.EXPECTED: 2, Urgency.IMMEDIATE: 3}
)


class CatalogueError(BroadcastError):
    """The signal catalogue file is unreadable or breaks a rule; ``field`` names the entry.

    A server-side fault (the data shipped with the service), not a user's input error.
    """

    status = 500
    code = "catalogue"


class Level(StrEnum):
    """Warning-signal colours, weakest first."""

    WHITE = "white"
    BLUE = "blue"
    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"

    @property
    def rank(self) -> int:
        """Position in the colour scale: white 0 ... red 4."""
        return list(Level).index(self)


def match_language(requested: str, available: Iterable[str]) -> str:
    """Pick the catalogue language that serves a requested language tag.

    Args:
        requested: An RFC 3066 tag such as ``"zh-CN"``, ``"en-US"`` or ``"zh"``.
        available: The tags texts exist in.

    Returns:
        The matching tag from ``available``: the exact tag (case-insensitive), else one with
        the same primary subtag and, for Chinese, the same script.

    Raises:
        InvalidInput: ``field="language"`` when the tag is malformed or nothing matches.
    """
    tags = tuple(available)
    if not isinstance(requested, str) or not _LANGUAGE_TAG.match(requested):
        raise InvalidInput(f"{requested!r} is not a language tag", field="language")
    wanted = requested.lower()
    for tag in tags:
        if tag.lower() == wanted:
            return tag
    primary = wanted.split("-")[0]
    script = _chinese_script(wanted)
    for tag in tags:
        if tag.lower().split("-")[0] == primary and _chinese_script(tag.lower()) == script:
            return tag
    hint = ""
    if script == "hant":
        hint = " (the catalogue has simplified Chinese only; use zh-CN)"
    raise InvalidInput(f"no text in {requested!r}{hint}; available languages: {', '.join(tags)}", field="language")


def _chinese_script(tag: str) -> str:
    """``"hans"``/``"hant"`` for a lower-case Chinese tag, ``""`` for any other language."""
    primary, *rest = tag.split("-")
    if primary != "zh":
        return ""
    if "hans" in rest:
        return "hans"
    return "hant" if _TRADITIONAL_CHINESE.intersection(rest) else "hans"


@dataclass(frozen=True, slots=True)
class Localized:
    """One text in several languages, as ``(tag, text)`` pairs in catalogue order."""

    texts: tuple[tuple[str, str], ...]

    @property
    def languages(self) -> tuple[str, ...]:
        """The tags this text exists in."""
        return tuple(tag for tag, _ in self.texts)

    def get(self, language: str) -> str:
        """Return the text for ``language``, resolved by :func:`match_language`.

        Raises:
            InvalidInput: ``field="language"`` for a language the text does not cover.
        """
        tag = match_language(language, self.languages)
        return next(text for key, text in self.texts if key == tag)


@dataclass(frozen=True, slots=True)
class Hazard:
    """One kind of warning signal (台风, 暴雨 ...) and the colours it is issued in."""

    code: str
    names: Localized
    categories: tuple[Category, ...]
    levels: tuple[Level, ...]
    source: str

    def name(self, language: str) -> str:
        """The hazard's name, e.g. ``"暴雨"`` / ``"Rainstorm"``."""
        return self.names.get(language)


@dataclass(frozen=True, slots=True)
class Signal:
    """One hazard at one colour, with every CAP field that follows from it."""

    hazard: Hazard
    level: Level
    severity: Severity
    urgency: Urgency
    certainty: Certainty
    response_types: tuple[ResponseType, ...]
    colour: str
    level_names: Localized
    events: Localized
    headlines: Localized
    criteria_texts: Localized
    instructions: Localized
    issuer_names: Localized
    area_names: Localized

    @property
    def code(self) -> str:
        """``"<hazard>.<level>"``, e.g. ``"rainstorm.red"``."""
        return f"{self.hazard.code}.{self.level.value}"

    @property
    def event_code(self) -> NamedValue:
        """The CAP ``eventCode`` identifying this signal."""
        return NamedValue(value_name=SIGNAL_VALUE_NAME, value=self.code)

    @property
    def categories(self) -> tuple[Category, ...]:
        """CAP categories, those of the hazard."""
        return self.hazard.categories

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages every text of this signal exists in."""
        return self.events.languages

    def event(self, language: str) -> str:
        """CAP ``event`` text, e.g. ``"暴雨红色预警信号"`` / ``"Red Rainstorm Warning"``."""
        return self.events.get(language)

    def level_name(self, language: str) -> str:
        """The colour's name, e.g. ``"红色"`` / ``"Red"``."""
        return self.level_names.get(language)

    def criteria(self, language: str) -> str:
        """The official meaning of the signal (what conditions it stands for)."""
        return self.criteria_texts.get(language)

    def instruction(self, language: str) -> str:
        """Default public instructions (防御指南) for CAP ``instruction``."""
        return self.instructions.get(language)

    def headline(self, language: str, *, area: str | None = None, issuer: str | None = None) -> str:
        """Default CAP ``headline``, filled from the catalogue's template.

        Args:
            language: Language tag of the wanted text.
            area: Area named in the headline (e.g. ``"福田区、南山区"``); defaults to the
                catalogue's whole-city wording.
            issuer: Issuing office; defaults to the catalogue's issuer name.

        Returns:
            The headline, e.g. ``"深圳市气象台发布全市暴雨红色预警信号，请立即到安全场所避险"``.

        Raises:
            InvalidInput: ``field="language"`` for an unsupported language.
        """
        template = self.headlines.get(language)
        return template.format_map(
            {
                "event": self.events.get(language),
                "area": area if area is not None else self.area_names.get(language),
                "issuer": issuer if issuer is not None else self.issuer_names.get(language),
            }
        )


class SignalCatalogue:
    """Every warning signal, looked up by hazard and colour or by CAP event code."""

    __slots__ = ("_hazards", "_languages", "_signals")

    def __init__(self, signals: Iterable[Signal], *, languages: Iterable[str]) -> None:
        """Index ``signals``; hazards are listed in the order their first signal appears.

        Args:
            signals: The signals, at most one per hazard and colour.
            languages: The languages every text exists in.

        Raises:
            ValueError: When a hazard and colour occurs twice.
        """
        by_hazard: dict[str, dict[Level, Signal]] = {}
        hazards: dict[str, Hazard] = {}
        for signal in signals:
            levels = by_hazard.setdefault(signal.hazard.code, {})
            if signal.level in levels:
                raise ValueError(f"duplicate signal {signal.code}")
            levels[signal.level] = signal
            hazards.setdefault(signal.hazard.code, signal.hazard)
        self._signals = by_hazard
        self._hazards = tuple(hazards.values())
        self._languages = tuple(languages)

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages every text in the catalogue exists in."""
        return self._languages

    def __iter__(self) -> Iterator[Signal]:
        return iter(self.signals())

    def __len__(self) -> int:
        return sum(len(levels) for levels in self._signals.values())

    def hazards(self) -> tuple[Hazard, ...]:
        """Every hazard, in catalogue order."""
        return self._hazards

    def as_dict(self) -> list[dict[str, Any]]:
        """The catalogue as JSON-ready data: hazards, their colours and the CAP fields each one sets."""
        return [
            {
                "hazard": hazard.code,
                "names": dict(hazard.names.texts),
                "categories": [c.value for c in hazard.categories],
                "levels": [
                    {
                        "level": signal.level.value,
                        "code": signal.code,
                        "names": dict(signal.level_names.texts),
                        "colour": signal.colour,
                        "severity": signal.severity.value,
                        "urgency": signal.urgency.value,
                        "certainty": signal.certainty.value,
                        "response_types": [r.value for r in signal.response_types],
                        "event": dict(signal.events.texts),
                        "criteria": dict(signal.criteria_texts.texts),
                        "instruction": dict(signal.instructions.texts),
                    }
                    for signal in self.signals()
                    if signal.hazard.code == hazard.code
                ],
            }
            for hazard in self._hazards
        ]

    def signals(self) -> tuple[Signal, ...]:
        """Every signal, hazards in catalogue order, colours weakest first."""
        return tuple(levels[level] for levels in self._signals.values() for level in sorted(levels, key=_rank))

    def hazard(self, code: str) -> Hazard:
        """The hazard with this code (case-insensitive).

        Raises:
            InvalidInput: ``field="signal.hazard"`` for an unknown hazard, listing the known ones.
        """
        key = str(code).strip().lower()
        for hazard in self._hazards:
            if hazard.code == key:
                return hazard
        known = ", ".join(hazard.code for hazard in self._hazards)
        raise InvalidInput(f"unknown hazard {code!r}; known hazards: {known}", field="signal.hazard")

    def get(self, hazard: str, level: Level | str) -> Signal:
        """The signal for a hazard at a colour, e.g. ``get("rainstorm", "red")``.

        Args:
            hazard: Hazard code such as ``"typhoon"`` (case-insensitive).
            level: A :class:`Level` or its value such as ``"red"`` (case-insensitive).

        Returns:
            The signal.

        Raises:
            InvalidInput: ``field="signal.hazard"`` for an unknown hazard (the message lists the
                known hazards); ``field="signal.level"`` for a colour the hazard is not issued
                in (the message lists its colours).
        """
        found = self.hazard(hazard)
        key = str(level).strip().lower()
        for candidate, signal in self._signals[found.code].items():
            if candidate.value == key:
                return signal
        allowed = ", ".join(lvl.value for lvl in found.levels)
        raise InvalidInput(
            f"hazard {found.code!r} has no {level!r} signal; its levels: {allowed}", field="signal.level"
        )

    def from_event_codes(self, codes: Iterable[NamedValue]) -> Signal | None:
        """Recognise the signal an imported CAP ``<info>`` carries in its event codes.

        Args:
            codes: The info block's ``eventCode`` pairs; only those named
                :data:`SIGNAL_VALUE_NAME` (case-insensitive) are considered.

        Returns:
            The signal, or None when no code carries a signal.

        Raises:
            InvalidInput: ``field="event_codes[i]"`` when a signal code is malformed, names an
                unknown hazard or colour, or contradicts an earlier signal code.
        """
        found: Signal | None = None
        for index, named in enumerate(codes):
            if named.value_name.strip().upper() != SIGNAL_VALUE_NAME:
                continue
            where = f"event_codes[{index}]"
            hazard, dot, level = named.value.strip().partition(".")
            if not dot or not hazard or not level:
                raise InvalidInput(f"{SIGNAL_VALUE_NAME} value {named.value!r} is not '<hazard>.<level>'", field=where)
            try:
                signal = self.get(hazard, level)
            except InvalidInput as exc:
                raise InvalidInput(exc.message, field=where) from None
            if found is not None and found != signal:
                raise InvalidInput(f"{SIGNAL_VALUE_NAME} {signal.code} contradicts {found.code}", field=where)
            found = signal
        return found


def _rank(level: Level) -> int:
    return level.rank


def read_catalogue(path: str | os.PathLike[str] | Traversable) -> SignalCatalogue:
    """Read and validate a signal catalogue file (uncached; see :func:`load_catalogue`).

    Args:
        path: A file path, or a :mod:`importlib.resources` traversable.

    Returns:
        The catalogue.

    Raises:
        CatalogueError: The file cannot be read, is not TOML, or an entry breaks a rule; the
            message and ``field`` name the entry.
    """
    source: Path | Traversable = Path(path) if isinstance(path, str | os.PathLike) else path
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise CatalogueError(f"signal catalogue {source}: cannot be read: {exc}") from exc
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"signal catalogue {source}: not valid UTF-8 TOML: {exc}") from exc
    return _Builder(str(source)).catalogue(document)


@functools.cache
def load_catalogue() -> SignalCatalogue:
    """The packaged catalogue (``broadcast/signals.toml``), read and validated once.

    Raises:
        CatalogueError: The packaged file is broken.
    """
    return read_catalogue(_packaged_file())


def _packaged_file() -> Traversable:
    return resources.files("broadcast").joinpath(CATALOGUE_RESOURCE)


class _Builder:
    """Turns the parsed TOML document into a catalogue, naming the entry on every error."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.languages: tuple[str, ...] = ()

    def fail(self, entry: str, problem: str) -> NoReturn:
        raise CatalogueError(f"signal catalogue {self.source}: {entry}: {problem}", field=entry)

    def table(self, value: Any, entry: str) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            self.fail(entry, "must be a table")
        return value

    def keys(self, table: Mapping[str, Any], entry: str, required: set[str], optional: set[str]) -> None:
        missing = sorted(required - table.keys())
        if missing:
            self.fail(entry, f"missing {', '.join(missing)}")
        unknown = sorted(table.keys() - required - optional)
        if unknown:
            self.fail(entry, f"unknown key(s) {', '.join(unknown)}")

    def text(self, value: Any, entry: str) -> str:
        if not isinstance(value, str) or not value.strip():
            self.fail(entry, "must be a non-empty string")
        return value.strip()

    def enum(self, enum: type[E], value: Any, entry: str) -> E:
        try:
            return enum(value)
        except (ValueError, TypeError):
            allowed = ", ".join(member.value for member in enum)
            self.fail(entry, f"{value!r} is not one of: {allowed}")

    def enums(self, enum: type[E], value: Any, entry: str) -> tuple[E, ...]:
        if not isinstance(value, list) or not value:
            self.fail(entry, "must be a non-empty list")
        items = tuple(self.enum(enum, item, f"{entry}[{index}]") for index, item in enumerate(value))
        if len(set(items)) != len(items):
            self.fail(entry, "lists a value twice")
        return items

    def localized(self, value: Any, entry: str) -> Localized:
        table = self.table(value, entry)
        missing = [tag for tag in self.languages if tag not in table]
        if missing:
            self.fail(entry, f"has no {', '.join(missing)} text")
        extra = sorted(set(table) - set(self.languages))
        if extra:
            self.fail(entry, f"has text in {', '.join(extra)}, not a catalogue language")
        return Localized(tuple((tag, self.text(table[tag], f"{entry}.{tag}")) for tag in self.languages))

    def headline(self, value: Any, entry: str) -> Localized:
        templates = self.localized(value, entry)
        for tag, template in templates.texts:
            try:
                parts = list(string.Formatter().parse(template))
            except ValueError as exc:
                self.fail(f"{entry}.{tag}", f"bad template: {exc}")
            for _, name, spec, conversion in parts:
                if name is None:
                    continue
                if name not in HEADLINE_FIELDS or spec or conversion:
                    allowed = ", ".join("{" + field + "}" for field in sorted(HEADLINE_FIELDS))
                    self.fail(f"{entry}.{tag}", f"placeholder {{{name}}} not allowed; use {allowed}")
        return templates

    def catalogue(self, document: Mapping[str, Any]) -> SignalCatalogue:
        self.keys(document, "(top level)", {"schema", "catalogue", "levels", "hazards"}, set())
        if document["schema"] != 1:
            self.fail("schema", f"unsupported schema {document['schema']!r}; expected 1")
        header = self.table(document["catalogue"], "catalogue")
        self.keys(header, "catalogue", {"languages", "issuer", "default_area"}, set())
        languages = header["languages"]
        if not isinstance(languages, list) or not languages:
            self.fail("catalogue.languages", "must be a non-empty list of language tags")
        for index, tag in enumerate(languages):
            if not isinstance(tag, str) or not _LANGUAGE_TAG.match(tag):
                self.fail(f"catalogue.languages[{index}]", f"{tag!r} is not a language tag")
        self.languages = tuple(languages)
        issuer = self.localized(header["issuer"], "catalogue.issuer")
        area = self.localized(header["default_area"], "catalogue.default_area")
        colours = self.levels(self.table(document["levels"], "levels"))
        hazards = self.table(document["hazards"], "hazards")
        if not hazards:
            self.fail("hazards", "no hazards defined")
        signals: list[Signal] = []
        for code, body in hazards.items():
            signals.extend(self.hazard(code, body, colours, issuer, area))
        return SignalCatalogue(signals, languages=self.languages)

    def levels(self, table: Mapping[str, Any]) -> dict[Level, dict[str, Any]]:
        colours: dict[Level, dict[str, Any]] = {}
        for key, value in table.items():
            entry = f"levels.{key}"
            level = self.enum(Level, key, entry)
            body = self.table(value, entry)
            self.keys(body, entry, {"name", "colour", "severity", "urgency", "certainty"}, set())
            colour = body["colour"]
            if not isinstance(colour, str) or not _COLOUR.match(colour):
                self.fail(f"{entry}.colour", f"{colour!r} is not a #RRGGBB colour")
            colours[level] = {
                "name": self.localized(body["name"], f"{entry}.name"),
                "colour": colour.upper(),
                "severity": self.enum(Severity, body["severity"], f"{entry}.severity"),
                "urgency": self.enum(Urgency, body["urgency"], f"{entry}.urgency"),
                "certainty": self.enum(Certainty, body["certainty"], f"{entry}.certainty"),
            }
        previous: tuple[Level, int, int] | None = None
        for level in sorted(colours, key=_rank):
            severity = SEVERITY_RANK[colours[level]["severity"]]
            urgency = _URGENCY_RANK[colours[level]["urgency"]]
            if previous is not None and (severity < previous[1] or urgency < previous[2]):
                self.fail(f"levels.{level.value}", f"is less severe or less urgent than {previous[0].value}")
            previous = (level, severity, urgency)
        return colours

    def hazard(
        self,
        code: str,
        value: Any,
        colours: Mapping[Level, Mapping[str, Any]],
        issuer: Localized,
        area: Localized,
    ) -> list[Signal]:
        entry = f"hazards.{code}"
        if not _HAZARD_CODE.match(code):
            self.fail(entry, "hazard codes are lower-case letters, digits and underscores")
        body = self.table(value, entry)
        self.keys(body, entry, {"name", "categories", "source", "levels"}, set())
        source = body["source"]
        if not isinstance(source, str) or source not in SOURCES:
            self.fail(f"{entry}.source", f"{source!r} is not one of: {', '.join(sorted(SOURCES))}")
        levels = self.table(body["levels"], f"{entry}.levels")
        if not levels:
            self.fail(f"{entry}.levels", "no levels defined")
        parsed = {self.enum(Level, key, f"{entry}.levels.{key}"): key for key in levels}
        order = tuple(sorted(parsed, key=_rank))
        hazard = Hazard(
            code=code,
            names=self.localized(body["name"], f"{entry}.name"),
            categories=self.enums(Category, body["categories"], f"{entry}.categories"),
            levels=order,
            source=source,
        )
        signals = []
        for level in order:
            where = f"{entry}.levels.{level.value}"
            if level not in colours:
                self.fail(where, f"colour {level.value} has no [levels.{level.value}] table")
            colour = colours[level]
            spec = self.table(levels[parsed[level]], where)
            self.keys(spec, where, {"event", "headline", "criteria", "instruction", "response_types"}, {"certainty"})
            certainty = colour["certainty"]
            if "certainty" in spec:
                certainty = self.enum(Certainty, spec["certainty"], f"{where}.certainty")
            signals.append(
                Signal(
                    hazard=hazard,
                    level=level,
                    severity=colour["severity"],
                    urgency=colour["urgency"],
                    certainty=certainty,
                    response_types=self.enums(ResponseType, spec["response_types"], f"{where}.response_types"),
                    colour=colour["colour"],
                    level_names=colour["name"],
                    events=self.localized(spec["event"], f"{where}.event"),
                    headlines=self.headline(spec["headline"], f"{where}.headline"),
                    criteria_texts=self.localized(spec["criteria"], f"{where}.criteria"),
                    instructions=self.localized(spec["instruction"], f"{where}.instruction"),
                    issuer_names=issuer,
                    area_names=area,
                )
            )
        return signals
