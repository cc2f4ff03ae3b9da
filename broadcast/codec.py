"""JSON form of the alert model, used by the HTTP API and by the store.

Field names are CAP's in snake case; the list of info blocks is ``info`` as in CAP.
Areas carry their polygons as one GeoJSON geometry (``Polygon`` or ``MultiPolygon``,
``[lon, lat]`` positions) because that is what map tools produce; CAP cannot carry
holes, so a polygon with inner rings is refused. Times are ISO 8601 with an offset.

Parsing is strict: unknown keys, wrong types and bad values raise InvalidInput naming
the field by its path (``info[1].areas[0].geometry.coordinates[0]``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from broadcast.errors import BroadcastError, InvalidInput
from broadcast.model import (
    Alert,
    Area,
    Category,
    Certainty,
    Circle,
    Info,
    MsgType,
    NamedValue,
    Polygon,
    Reference,
    Resource,
    ResponseType,
    Scope,
    Severity,
    Status,
    Urgency,
    parse_enum,
)

T = TypeVar("T")
JsonDict = dict[str, Any]


# ---------------------------------------------------------------- reading helpers


def require_object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInput("must be a JSON object", field=path or "body")
    return value


def reject_unknown(doc: Mapping[str, Any], allowed: set[str] | frozenset[str], path: str) -> None:
    for key in doc:
        if key not in allowed:
            raise InvalidInput("unknown field", field=join(path, key))


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def text(doc: Mapping[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise InvalidInput("is required", field=join(path, key))
        return None
    if not isinstance(value, str):
        raise InvalidInput("must be a string", field=join(path, key))
    return value


def number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput("must be a finite number", field=path)
    return float(value)


def optional_number(doc: Mapping[str, Any], key: str, path: str) -> float | None:
    value = doc.get(key)
    return None if value is None else number(value, join(path, key))


def items(doc: Mapping[str, Any], key: str, path: str) -> Sequence[Any]:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidInput("must be a list", field=join(path, key))
    return value


def parse_time(value: Any, path: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput("must be an ISO 8601 time string", field=path)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not an ISO 8601 time", field=path) from None
    if parsed.tzinfo is None:
        raise InvalidInput("time must carry a UTC offset, e.g. 2026-07-01T08:00:00+08:00", field=path)
    return parsed.replace(microsecond=0)


def build(path: str, factory: Callable[[], T]) -> T:
    """Run a model constructor, re-rooting the field of any InvalidInput it raises under ``path``."""
    try:
        return factory()
    except BroadcastError as err:
        raise err.at(path) from None


def enum_list(doc: Mapping[str, Any], key: str, enum: Any, path: str) -> tuple[Any, ...]:
    return tuple(parse_enum(enum, v, f"{join(path, key)}[{i}]") for i, v in enumerate(items(doc, key, path)))


# ---------------------------------------------------------------- parts


def named_values_from_json(doc: Mapping[str, Any], key: str, path: str) -> tuple[NamedValue, ...]:
    result = []
    for index, raw in enumerate(items(doc, key, path)):
        here = f"{join(path, key)}[{index}]"
        if key == "geocodes" and isinstance(raw, str):
            raw = {"value_name": ADMIN_CODE_NAME, "value": raw}
        entry = require_object(raw, here)
        reject_unknown(entry, {"value_name", "value"}, here)
        name = text(entry, "value_name", here, required=True)
        value = text(entry, "value", here, required=True)
        result.append(build(here, lambda n=name, v=value: NamedValue(n, v)))
    return tuple(result)


def _ring(raw: Any, path: str) -> Polygon:
    if not isinstance(raw, list):
        raise InvalidInput("a ring must be a list of [lon, lat] positions", field=path)
    points = []
    for index, position in enumerate(raw):
        if not isinstance(position, list) or len(position) != 2:
            raise InvalidInput("a position must be [lon, lat]", field=f"{path}[{index}]")
        points.append((number(position[0], f"{path}[{index}][0]"), number(position[1], f"{path}[{index}][1]")))
    if points and all(abs(lat) > 90 >= abs(lon) for lon, lat in points):
        raise InvalidInput("positions look like [lat, lon]; GeoJSON positions are [lon, lat]", field=path)
    try:
        return Polygon(tuple(points))
    except InvalidInput as err:
        # Polygon names its own fields "points" / "points[i]"; in GeoJSON the ring is the path.
        suffix = (err.field or "").removeprefix("points")
        raise InvalidInput(err.message, field=f"{path}{suffix}") from None


def _polygon_rings(raw: Any, path: str) -> Polygon:
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("a polygon must be a list of rings", field=path)
    if len(raw) > 1:
        raise InvalidInput("polygons with holes cannot be expressed in CAP; send the outer ring only",
                           field=f"{path}[1]")
    return _ring(raw[0], f"{path}[0]")


def polygons_from_geojson(raw: Any, path: str) -> tuple[Polygon, ...]:
    geometry = require_object(raw, path)
    reject_unknown(geometry, {"type", "coordinates"}, path)
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates")
    here = join(path, "coordinates")
    if kind == "Polygon":
        return (_polygon_rings(coordinates, here),)
    if kind == "MultiPolygon":
        if not isinstance(coordinates, list) or not coordinates:
            raise InvalidInput("a MultiPolygon needs at least one polygon", field=here)
        return tuple(_polygon_rings(part, f"{here}[{i}]") for i, part in enumerate(coordinates))
    raise InvalidInput("geometry type must be Polygon or MultiPolygon", field=join(path, "type"))


def polygons_to_geojson(polygons: Sequence[Polygon]) -> JsonDict | None:
    rings = [[[list(p) for p in polygon.points]] for polygon in polygons]
    if not rings:
        return None
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": rings[0]}
    return {"type": "MultiPolygon", "coordinates": rings}


AREA_FIELDS = frozenset({"desc", "geometry", "circle", "circles", "geocodes", "altitude", "ceiling"})
# A geocode given as a bare string is an administrative division code (GB/T 2260 adcode).
ADMIN_CODE_NAME = "adcode"


def area_from_json(raw: Any, path: str) -> Area:
    doc = require_object(raw, path)
    reject_unknown(doc, AREA_FIELDS, path)
    geometry = doc.get("geometry")
    polygons = polygons_from_geojson(geometry, join(path, "geometry")) if geometry is not None else ()
    circles = []
    given = [(f"{join(path, 'circles')}[{i}]", c) for i, c in enumerate(items(doc, "circles", path))]
    if doc.get("circle") is not None:
        given.append((join(path, "circle"), doc["circle"]))
    for here, entry in given:
        circle = require_object(entry, here)
        reject_unknown(circle, {"lon", "lat", "radius_km"}, here)
        values = {k: number(circle.get(k), join(here, k)) for k in ("lon", "lat", "radius_km")}
        circles.append(build(here, lambda v=values: Circle(**v)))
    geocodes = named_values_from_json(doc, "geocodes", path)
    desc = text(doc, "desc", path, required=True)
    altitude = optional_number(doc, "altitude", path)
    ceiling = optional_number(doc, "ceiling", path)
    return build(path, lambda: Area(desc or "", polygons, tuple(circles), geocodes, altitude, ceiling))


def area_to_json(area: Area) -> JsonDict:
    doc: JsonDict = {"desc": area.desc}
    geometry = polygons_to_geojson(area.polygons)
    if geometry:
        doc["geometry"] = geometry
    if area.circles:
        doc["circles"] = [{"lon": c.lon, "lat": c.lat, "radius_km": c.radius_km} for c in area.circles]
    if area.geocodes:
        doc["geocodes"] = [_named_value_json(g) for g in area.geocodes]
    if area.altitude is not None:
        doc["altitude"] = area.altitude
    if area.ceiling is not None:
        doc["ceiling"] = area.ceiling
    return doc


def _named_value_json(value: NamedValue) -> JsonDict:
    return {"value_name": value.value_name, "value": value.value}


RESOURCE_FIELDS = frozenset({"desc", "mime_type", "size", "uri", "deref_uri", "digest"})


def resource_from_json(raw: Any, path: str) -> Resource:
    doc = require_object(raw, path)
    reject_unknown(doc, RESOURCE_FIELDS, path)
    size = doc.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise InvalidInput("must be a whole number of bytes", field=join(path, "size"))
    values = {k: text(doc, k, path) for k in ("desc", "mime_type", "uri", "deref_uri", "digest")}
    return build(path, lambda: Resource(size=size, **values))  # type: ignore[arg-type]


def resource_to_json(resource: Resource) -> JsonDict:
    doc: JsonDict = {"desc": resource.desc, "mime_type": resource.mime_type}
    for key in ("size", "uri", "deref_uri", "digest"):
        if getattr(resource, key) is not None:
            doc[key] = getattr(resource, key)
    return doc


# ---------------------------------------------------------------- info

INFO_TEXT_FIELDS = ("audience", "sender_name", "headline", "description", "instruction", "web", "contact")
INFO_TIME_FIELDS = ("effective", "onset", "expires")
INFO_FIELDS = frozenset(
    {"language", "categories", "event", "response_types", "urgency", "severity", "certainty", "event_codes",
     "parameters", "resources", "areas", *INFO_TEXT_FIELDS, *INFO_TIME_FIELDS}
)


def info_from_json(raw: Any, path: str) -> Info:
    doc = require_object(raw, path)
    reject_unknown(doc, INFO_FIELDS, path)
    for key in ("urgency", "severity", "certainty", "event"):
        if doc.get(key) is None:
            raise InvalidInput("is required", field=join(path, key))
    fields: dict[str, Any] = {
        "language": text(doc, "language", path, required=True),
        "categories": enum_list(doc, "categories", Category, path),
        "event": text(doc, "event", path, required=True),
        "urgency": parse_enum(Urgency, doc["urgency"], join(path, "urgency")),
        "severity": parse_enum(Severity, doc["severity"], join(path, "severity")),
        "certainty": parse_enum(Certainty, doc["certainty"], join(path, "certainty")),
        "response_types": enum_list(doc, "response_types", ResponseType, path),
        "event_codes": named_values_from_json(doc, "event_codes", path),
        "parameters": named_values_from_json(doc, "parameters", path),
        "resources": tuple(resource_from_json(r, f"{join(path, 'resources')}[{i}]")
                           for i, r in enumerate(items(doc, "resources", path))),
        "areas": tuple(area_from_json(a, f"{join(path, 'areas')}[{i}]")
                       for i, a in enumerate(items(doc, "areas", path))),
    }
    for key in INFO_TEXT_FIELDS:
        fields[key] = text(doc, key, path)
    for key in INFO_TIME_FIELDS:
        fields[key] = parse_time(doc.get(key), join(path, key))
    return build(path, lambda: Info(**fields))


def info_to_json(info: Info) -> JsonDict:
    doc: JsonDict = {
        "language": info.language,
        "categories": [c.value for c in info.categories],
        "event": info.event,
        "urgency": info.urgency.value,
        "severity": info.severity.value,
        "certainty": info.certainty.value,
    }
    if info.response_types:
        doc["response_types"] = [r.value for r in info.response_types]
    if info.event_codes:
        doc["event_codes"] = [_named_value_json(v) for v in info.event_codes]
    for key in INFO_TIME_FIELDS:
        value = getattr(info, key)
        if value is not None:
            doc[key] = value.isoformat()
    for key in INFO_TEXT_FIELDS:
        value = getattr(info, key)
        if value is not None:
            doc[key] = value
    if info.parameters:
        doc["parameters"] = [_named_value_json(v) for v in info.parameters]
    if info.resources:
        doc["resources"] = [resource_to_json(r) for r in info.resources]
    if info.areas:
        doc["areas"] = [area_to_json(a) for a in info.areas]
    return doc


# ---------------------------------------------------------------- alert

ALERT_TEXT_FIELDS = ("source", "restriction", "addresses", "note", "incidents")
ALERT_FIELDS = frozenset(
    {"identifier", "sender", "sent", "status", "msg_type", "scope", "codes", "references", "info",
     *ALERT_TEXT_FIELDS}
)


def reference_from_json(raw: Any, path: str) -> Reference:
    doc = require_object(raw, path)
    reject_unknown(doc, {"sender", "identifier", "sent"}, path)
    sent = parse_time(doc.get("sent"), join(path, "sent"))
    if sent is None:
        raise InvalidInput("is required", field=join(path, "sent"))
    sender = text(doc, "sender", path, required=True)
    identifier = text(doc, "identifier", path, required=True)
    return build(path, lambda: Reference(sender or "", identifier or "", sent))


def reference_to_json(reference: Reference) -> JsonDict:
    return {"sender": reference.sender, "identifier": reference.identifier, "sent": reference.sent.isoformat()}


def alert_from_json(raw: Any, path: str = "") -> Alert:
    """Parse the full JSON form of a CAP alert (as :func:`alert_to_json` writes it)."""
    doc = require_object(raw, path)
    reject_unknown(doc, ALERT_FIELDS, path)
    sent = parse_time(doc.get("sent"), join(path, "sent"))
    if sent is None:
        raise InvalidInput("is required", field=join(path, "sent"))
    codes = items(doc, "codes", path)
    if not all(isinstance(c, str) for c in codes):
        raise InvalidInput("must be a list of strings", field=join(path, "codes"))
    fields: dict[str, Any] = {
        "identifier": text(doc, "identifier", path, required=True),
        "sender": text(doc, "sender", path, required=True),
        "sent": sent,
        "status": parse_enum(Status, doc.get("status"), join(path, "status")),
        "msg_type": parse_enum(MsgType, doc.get("msg_type"), join(path, "msg_type")),
        "scope": parse_enum(Scope, doc.get("scope"), join(path, "scope")),
        "codes": tuple(codes),
        "references": tuple(reference_from_json(r, f"{join(path, 'references')}[{i}]")
                            for i, r in enumerate(items(doc, "references", path))),
        "infos": tuple(info_from_json(x, f"{join(path, 'info')}[{i}]")
                       for i, x in enumerate(items(doc, "info", path))),
    }
    for key in ALERT_TEXT_FIELDS:
        fields[key] = text(doc, key, path)
    return build(path, lambda: Alert(**fields))


def alert_to_json(alert: Alert) -> JsonDict:
    doc: JsonDict = {
        "identifier": alert.identifier,
        "sender": alert.sender,
        "sent": alert.sent.isoformat(),
        "status": alert.status.value,
        "msg_type": alert.msg_type.value,
        "scope": alert.scope.value,
    }
    for key in ALERT_TEXT_FIELDS:
        value = getattr(alert, key)
        if value is not None:
            doc[key] = value
    if alert.codes:
        doc["codes"] = list(alert.codes)
    if alert.references:
        doc["references"] = [reference_to_json(r) for r in alert.references]
    doc["info"] = [info_to_json(i) for i in alert.infos]
    return doc
