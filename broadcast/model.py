"""The alert model: CAP 1.2 messages as frozen value objects that check themselves.

Names follow CAP 1.2 (OASIS, 2010) in snake case: ``msgType`` is ``msg_type``,
``areaDesc`` is ``Area.desc``. Coordinates are held as ``(lon, lat)`` pairs, the order
of GeoJSON and shapely (x, y); only the CAP XML codec writes CAP's ``lat,lon``.

What is checked here is what CAP itself demands (required fields, value domains,
closed polygons, coordinates in range, times with an offset). Service policy that
depends on configuration (supported languages, text limits, jurisdiction) is checked
where alerts are composed (:mod:`broadcast.compose`).

Invalid values raise :class:`~broadcast.errors.InvalidInput` naming the field relative
to the object; callers that build nested objects prefix the path with ``err.at(...)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from broadcast.errors import InvalidInput

CAP_NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"

# CAP 1.2 forbids spaces, commas and the XML-restricted characters in identifier and sender.
_CAP_TOKEN = re.compile(r"^[^\s,<&]+$")
# RFC 3066 language tag, as CAP's <language> uses.
E = TypeVar("E", bound=StrEnum)

_LANGUAGE_TAG = re.compile(r"^[A-Za-z]{1,8}(-[A-Za-z0-9]{1,8})*$")


class Status(StrEnum):
    ACTUAL = "Actual"
    EXERCISE = "Exercise"
    SYSTEM = "System"
    TEST = "Test"
    DRAFT = "Draft"


class MsgType(StrEnum):
    """The message types this service stores. CAP's Ack and Error are refused on import."""

    ALERT = "Alert"
    UPDATE = "Update"
    CANCEL = "Cancel"


class Scope(StrEnum):
    PUBLIC = "Public"
    RESTRICTED = "Restricted"
    PRIVATE = "Private"


class Category(StrEnum):
    GEO = "Geo"
    MET = "Met"
    SAFETY = "Safety"
    SECURITY = "Security"
    RESCUE = "Rescue"
    FIRE = "Fire"
    HEALTH = "Health"
    ENV = "Env"
    TRANSPORT = "Transport"
    INFRA = "Infra"
    CBRNE = "CBRNE"
    OTHER = "Other"


class ResponseType(StrEnum):
    SHELTER = "Shelter"
    EVACUATE = "Evacuate"
    PREPARE = "Prepare"
    EXECUTE = "Execute"
    AVOID = "Avoid"
    MONITOR = "Monitor"
    ASSESS = "Assess"
    ALL_CLEAR = "AllClear"
    NONE = "None"


class Urgency(StrEnum):
    IMMEDIATE = "Immediate"
    EXPECTED = "Expected"
    FUTURE = "Future"
    PAST = "Past"
    UNKNOWN = "Unknown"


class Severity(StrEnum):
    EXTREME = "Extreme"
    SEVERE = "Severe"
    MODERATE = "Moderate"
    MINOR = "Minor"
    UNKNOWN = "Unknown"


class Certainty(StrEnum):
    OBSERVED = "Observed"
    LIKELY = "Likely"
    POSSIBLE = "Possible"
    UNLIKELY = "Unlikely"
    UNKNOWN = "Unknown"


def parse_enum(enum: type[E], value: object, field_name: str) -> E:
    """Return ``enum(value)`` or raise InvalidInput listing the allowed values."""
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise InvalidInput(f"{value!r} is not one of: {allowed}", field=field_name) from None


def _require_aware(value: datetime | None, field_name: str) -> None:
    if value is not None and (value.tzinfo is None or value.utcoffset() is None):
        raise InvalidInput("time must carry a UTC offset", field=field_name)


def _require_text(value: str | None, field_name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if value is None or not value.strip():
        raise InvalidInput("must not be empty", field=field_name)


def _check_point(lon: float, lat: float, field_name: str) -> None:
    if not (-180.0 <= lon <= 180.0):
        raise InvalidInput(f"longitude {lon} is outside -180..180", field=field_name)
    if not (-90.0 <= lat <= 90.0):
        raise InvalidInput(f"latitude {lat} is outside -90..90", field=field_name)


@dataclass(frozen=True, slots=True)
class NamedValue:
    """CAP's valueName/value pair, used by eventCode, parameter and geocode."""

    value_name: str
    value: str

    def __post_init__(self) -> None:
        _require_text(self.value_name, "value_name")
        if self.value is None:
            raise InvalidInput("must be given", field="value")


@dataclass(frozen=True, slots=True)
class Polygon:
    """One closed ring of ``(lon, lat)`` points: at least four, the first repeated last."""

    points: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        if len(self.points) < 4:
            raise InvalidInput(
                f"a polygon needs at least 4 points (first repeated last), got {len(self.points)}",
                field="points",
            )
        for index, (lon, lat) in enumerate(self.points):
            _check_point(lon, lat, f"points[{index}]")
        if self.points[0] != self.points[-1]:
            raise InvalidInput("polygon is not closed: the last point must repeat the first", field="points")


@dataclass(frozen=True, slots=True)
class Circle:
    lon: float
    lat: float
    radius_km: float

    def __post_init__(self) -> None:
        _check_point(self.lon, self.lat, "center")
        if not (self.radius_km >= 0.0):
            raise InvalidInput("radius must be zero or positive (kilometres)", field="radius_km")


@dataclass(frozen=True, slots=True)
class Area:
    desc: str
    polygons: tuple[Polygon, ...] = ()
    circles: tuple[Circle, ...] = ()
    geocodes: tuple[NamedValue, ...] = ()
    altitude: float | None = None
    ceiling: float | None = None

    def __post_init__(self) -> None:
        _require_text(self.desc, "desc")
        if self.ceiling is not None and self.altitude is None:
            raise InvalidInput("ceiling needs an altitude", field="ceiling")

    @property
    def has_geometry(self) -> bool:
        return bool(self.polygons or self.circles)


@dataclass(frozen=True, slots=True)
class Resource:
    desc: str
    mime_type: str
    size: int | None = None
    uri: str | None = None
    deref_uri: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        _require_text(self.desc, "desc")
        _require_text(self.mime_type, "mime_type")
        if self.size is not None and self.size < 0:
            raise InvalidInput("size must not be negative", field="size")


@dataclass(frozen=True, slots=True)
class Info:
    """One ``<info>`` block: the alert in one language."""

    language: str
    categories: tuple[Category, ...]
    event: str
    urgency: Urgency
    severity: Severity
    certainty: Certainty
    response_types: tuple[ResponseType, ...] = ()
    audience: str | None = None
    event_codes: tuple[NamedValue, ...] = ()
    effective: datetime | None = None
    onset: datetime | None = None
    expires: datetime | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    web: str | None = None
    contact: str | None = None
    parameters: tuple[NamedValue, ...] = ()
    resources: tuple[Resource, ...] = ()
    areas: tuple[Area, ...] = ()

    def __post_init__(self) -> None:
        if not _LANGUAGE_TAG.match(self.language or ""):
            raise InvalidInput(f"{self.language!r} is not a language tag (RFC 3066)", field="language")
        if not self.categories:
            raise InvalidInput("at least one category is required", field="categories")
        _require_text(self.event, "event")
        for name in ("headline", "description", "instruction", "sender_name"):
            _require_text(getattr(self, name), name, optional=True)
        for name in ("effective", "onset", "expires"):
            _require_aware(getattr(self, name), name)
        start = self.onset or self.effective
        if self.expires is not None and start is not None and self.expires <= start:
            which = "onset" if self.onset is not None else "effective"
            raise InvalidInput(f"expires must be later than {which}", field="expires")


@dataclass(frozen=True, slots=True)
class Reference:
    """A message this one refers to, as CAP writes it: ``sender,identifier,sent``."""

    sender: str
    identifier: str
    sent: datetime

    def __post_init__(self) -> None:
        _require_aware(self.sent, "sent")


@dataclass(frozen=True, slots=True)
class Alert:
    """One CAP 1.2 ``<alert>`` message."""

    identifier: str
    sender: str
    sent: datetime
    status: Status
    msg_type: MsgType
    scope: Scope
    source: str | None = None
    restriction: str | None = None
    addresses: str | None = None
    codes: tuple[str, ...] = ()
    note: str | None = None
    references: tuple[Reference, ...] = ()
    incidents: str | None = None
    infos: tuple[Info, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for name in ("identifier", "sender"):
            value = getattr(self, name)
            if not value or not _CAP_TOKEN.match(value):
                raise InvalidInput("must be non-empty, without spaces, commas, '<' or '&'", field=name)
        _require_aware(self.sent, "sent")
        if self.scope is Scope.RESTRICTED and not self.restriction:
            raise InvalidInput("a Restricted alert needs a restriction", field="restriction")
        if self.scope is Scope.PRIVATE and not self.addresses:
            raise InvalidInput("a Private alert needs addresses", field="addresses")
        if self.msg_type in (MsgType.UPDATE, MsgType.CANCEL) and not self.references:
            raise InvalidInput(f"an {self.msg_type.value} must reference earlier messages", field="references")

    @property
    def reference(self) -> Reference:
        """How other messages refer to this one."""
        return Reference(self.sender, self.identifier, self.sent)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(info.language for info in self.infos)

    @property
    def severity(self) -> Severity:
        """The most severe of the info blocks (Unknown when there are none)."""
        return most_severe(info.severity for info in self.infos)

    @property
    def expires(self) -> datetime | None:
        """The latest expiry of the info blocks; None when any block never expires."""
        ends = [info.expires for info in self.infos]
        if not ends or any(end is None for end in ends):
            return None
        return max(end for end in ends if end is not None)

    def info_for(self, language: str) -> Info | None:
        for info in self.infos:
            if info.language.lower() == language.lower():
                return info
        return None


SEVERITY_RANK = {
    Severity.EXTREME: 4,
    Severity.SEVERE: 3,
    Severity.MODERATE: 2,
    Severity.MINOR: 1,
    Severity.UNKNOWN: 0,
}


def most_severe(severities: Iterable[Severity]) -> Severity:
    return max(severities, key=SEVERITY_RANK.__getitem__, default=Severity.UNKNOWN)
