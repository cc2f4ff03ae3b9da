"""CAP 1.2 XML codec: :class:`~broadcast.model.Alert` to and from OASIS CAP 1.2 documents.

Export (:func:`to_xml`) writes what the official schema accepts: the CAP namespace as the
default namespace, elements in schema order, times as ``YYYY-MM-DDThh:mm:ss+hh:mm`` with UTC
written ``-00:00``, and geometry in CAP's ``lat,lon`` order (the model holds ``(lon, lat)``).
Building a tree with :mod:`xml.etree.ElementTree` is safe; only parsing is dangerous.

Import (:func:`from_xml`) reads untrusted bytes through :mod:`defusedxml` with DTDs, entity
declarations and external references forbidden, after refusing oversized input unparsed.
It is lenient where real-world feeds differ harmlessly from the letter of the standard:
values are stripped, ``<language>`` defaults to ``en-US``, any namespace prefix is accepted,
element order is not enforced, elements from other namespaces (an XML signature) are ignored,
``Z`` and fractional seconds are read (CAP forbids both; fractions are dropped), and spaces
around the commas of coordinate pairs are tolerated. It is strict about meaning: required
elements, enumerations, numbers, geometry and times must be right, and a CAP element given
twice where the schema allows it once is refused rather than guessed at.

Errors name the offending element with a CAP path such as ``info[1].area[0].polygon[0]``;
errors raised by the model's own checks are re-rooted onto the same paths.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

import defusedxml
import defusedxml.ElementTree as SafeET

from broadcast.errors import InvalidInput, MalformedInput, PayloadTooLarge, UnsafeXml
from broadcast.model import (
    CAP_NAMESPACE,
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

__all__ = [
    "DEFAULT_LANGUAGE",
    "DEFAULT_MAX_BYTES",
    "format_datetime",
    "format_references",
    "from_xml",
    "parse_datetime",
    "parse_references",
    "to_xml",
]

DEFAULT_LANGUAGE = "en-US"  # CAP 1.2: an <info> without <language> is in en-US.
DEFAULT_MAX_BYTES = 1_048_576

_NS = f"{{{CAP_NAMESPACE}}}"
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'

# XML 1.0 cannot carry these characters at all, not even as character references.
_XML_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# CAP dateTime, plus the "Z" and fractional seconds that some feeds send anyway.
_DATETIME = re.compile(
    r"(?P<stamp>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?P<fraction>\.\d+)?(?P<offset>Z|[+-]\d{2}:\d{2})"
)
# xs:decimal: no exponent, no NaN or infinity.
_DECIMAL = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_INTEGER = re.compile(r"[+-]?\d+")
_SPACED_COMMA = re.compile(r"\s*,\s*")
# A reference's sender and identifier cannot hold the separators of the references list.
_REFERENCE_PART = re.compile(r"[^\s,]+")

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _shown(value: str, limit: int = 60) -> str:
    """Quote a value for an error message, cut short: error bodies must not echo megabytes back."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def format_datetime(value: datetime) -> str:
    """Write a time the way CAP 1.2 requires.

    Args:
        value: An aware datetime. Fractional seconds are dropped (CAP has none); an offset
            with seconds, which CAP cannot express, is converted to UTC.

    Returns:
        ``YYYY-MM-DDThh:mm:ss+hh:mm``; UTC is written ``-00:00`` as the standard demands, never ``Z``.

    Raises:
        InvalidInput: ``value`` carries no UTC offset.
    """
    offset = value.utcoffset()
    if offset is None:
        raise InvalidInput("time must carry a UTC offset")
    if offset % timedelta(minutes=1):
        value = value.astimezone(UTC)
        offset = timedelta(0)
    stamp = value.replace(tzinfo=None, microsecond=0).isoformat(timespec="seconds")
    if not offset:
        return f"{stamp}-00:00"
    sign = "+" if offset > timedelta(0) else "-"
    hours, minutes = divmod(abs(offset) // timedelta(minutes=1), 60)
    return f"{stamp}{sign}{hours:02d}:{minutes:02d}"


def parse_datetime(text: str, field: str) -> datetime:
    """Read a CAP time, keeping its original UTC offset.

    Args:
        text: A CAP dateTime such as ``2003-06-17T14:57:00-07:00``. Surrounding whitespace is
            ignored; ``Z`` and fractional seconds are accepted (and the fraction dropped).
        field: The path reported if the text is not a valid time.

    Returns:
        An aware datetime with a fixed offset (``-00:00`` and ``Z`` become UTC), whole seconds.

    Raises:
        InvalidInput: The text is not a date and time with a UTC offset, or names an impossible
            date, time or offset.
    """
    match = _DATETIME.fullmatch(text.strip())
    if match is None:
        raise InvalidInput(
            f"{_shown(text.strip())} is not a CAP time like 2024-05-01T08:30:00+08:00 (a UTC offset is required)",
            field=field,
        )
    offset = match["offset"]
    try:
        return datetime.fromisoformat(match["stamp"] + ("+00:00" if offset == "Z" else offset))
    except ValueError as exc:
        raise InvalidInput(f"{_shown(text.strip())} is not a valid time: {exc}", field=field) from exc


def format_references(refs: Iterable[Reference]) -> str:
    """Write CAP's ``<references>`` value.

    Args:
        refs: The referenced messages.

    Returns:
        Space-separated ``sender,identifier,sent`` triples.

    Raises:
        InvalidInput: (field ``references``) a sender or identifier is empty or holds a space
            or comma, which the format could not carry.
    """
    entries = []
    for ref in refs:
        for part in (ref.sender, ref.identifier):
            if not _REFERENCE_PART.fullmatch(part or ""):
                raise InvalidInput(
                    f"{_shown(part)} cannot be referenced: it must be non-empty without spaces or commas",
                    field="references",
                )
        entries.append(f"{ref.sender},{ref.identifier},{format_datetime(ref.sent)}")
    return " ".join(entries)


def parse_references(text: str) -> tuple[Reference, ...]:
    """Read CAP's ``<references>`` value.

    Args:
        text: Whitespace-separated ``sender,identifier,sent`` triples (spaces around the
            commas are tolerated).

    Returns:
        The references in document order; empty for blank text.

    Raises:
        InvalidInput: (field ``references``) an entry is not a triple or its time is invalid.
    """
    refs = []
    for index, entry in enumerate(_SPACED_COMMA.sub(",", text.strip()).split()):
        parts = entry.split(",")
        if len(parts) != 3 or not all(parts):
            raise InvalidInput(f"entry {index + 1} {_shown(entry)} is not 'sender,identifier,sent'", field="references")
        sender, identifier, sent = parts
        refs.append(Reference(sender, identifier, parse_datetime(sent, "references")))
    return tuple(refs)


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def to_xml(alert: Alert) -> bytes:
    """Export an alert as a CAP 1.2 document.

    Args:
        alert: The alert; the model has already checked what CAP demands of it.

    Returns:
        UTF-8 bytes with an XML declaration, valid against the OASIS CAP 1.2 schema.

    Raises:
        InvalidInput: A text holds a character XML 1.0 cannot carry (such as U+0000), a
            number is not finite, or a reference cannot be written; the field names the
            element, e.g. ``info[0].description``.
    """
    # The default namespace is declared as a plain attribute on an unqualified root, so the
    # output is prefix-free without touching ElementTree's global namespace registry.
    root = ET.Element("alert", {"xmlns": CAP_NAMESPACE})
    _add(root, "identifier", alert.identifier, "identifier")
    _add(root, "sender", alert.sender, "sender")
    _add(root, "sent", format_datetime(alert.sent), "sent")
    _add(root, "status", alert.status.value, "status")
    _add(root, "msgType", alert.msg_type.value, "msgType")
    _add(root, "source", alert.source, "source")
    _add(root, "scope", alert.scope.value, "scope")
    _add(root, "restriction", alert.restriction, "restriction")
    _add(root, "addresses", alert.addresses, "addresses")
    for index, code in enumerate(alert.codes):
        _add(root, "code", code, f"code[{index}]")
    _add(root, "note", alert.note, "note")
    if alert.references:
        _add(root, "references", format_references(alert.references), "references")
    _add(root, "incidents", alert.incidents, "incidents")
    for index, info in enumerate(alert.infos):
        _write_info(root, info, f"info[{index}]")
    ET.indent(root)
    return _XML_DECLARATION + ET.tostring(root, encoding="unicode").encode("utf-8") + b"\n"


def _write_info(parent: ET.Element, info: Info, path: str) -> None:
    node = ET.SubElement(parent, "info")
    _add(node, "language", info.language, f"{path}.language")
    for index, category in enumerate(info.categories):
        _add(node, "category", category.value, f"{path}.category[{index}]")
    _add(node, "event", info.event, f"{path}.event")
    for index, response in enumerate(info.response_types):
        _add(node, "responseType", response.value, f"{path}.responseType[{index}]")
    _add(node, "urgency", info.urgency.value, f"{path}.urgency")
    _add(node, "severity", info.severity.value, f"{path}.severity")
    _add(node, "certainty", info.certainty.value, f"{path}.certainty")
    _add(node, "audience", info.audience, f"{path}.audience")
    _write_named_values(node, "eventCode", info.event_codes, path)
    for name in ("effective", "onset", "expires"):
        moment: datetime | None = getattr(info, name)
        if moment is not None:
            _add(node, name, format_datetime(moment), f"{path}.{name}")
    _add(node, "senderName", info.sender_name, f"{path}.senderName")
    for name in ("headline", "description", "instruction", "web", "contact"):
        _add(node, name, getattr(info, name), f"{path}.{name}")
    _write_named_values(node, "parameter", info.parameters, path)
    for index, resource in enumerate(info.resources):
        _write_resource(node, resource, f"{path}.resource[{index}]")
    for index, area in enumerate(info.areas):
        _write_area(node, area, f"{path}.area[{index}]")


def _write_resource(parent: ET.Element, resource: Resource, path: str) -> None:
    node = ET.SubElement(parent, "resource")
    _add(node, "resourceDesc", resource.desc, f"{path}.resourceDesc")
    _add(node, "mimeType", resource.mime_type, f"{path}.mimeType")
    if resource.size is not None:
        _add(node, "size", str(resource.size), f"{path}.size")
    _add(node, "uri", resource.uri, f"{path}.uri")
    _add(node, "derefUri", resource.deref_uri, f"{path}.derefUri")
    _add(node, "digest", resource.digest, f"{path}.digest")


def _write_area(parent: ET.Element, area: Area, path: str) -> None:
    node = ET.SubElement(parent, "area")
    _add(node, "areaDesc", area.desc, f"{path}.areaDesc")
    for index, polygon in enumerate(area.polygons):
        item = f"{path}.polygon[{index}]"
        pairs = " ".join(f"{_decimal(lat, item)},{_decimal(lon, item)}" for lon, lat in polygon.points)
        _add(node, "polygon", pairs, item)
    for index, circle in enumerate(area.circles):
        item = f"{path}.circle[{index}]"
        text = f"{_decimal(circle.lat, item)},{_decimal(circle.lon, item)} {_decimal(circle.radius_km, item)}"
        _add(node, "circle", text, item)
    _write_named_values(node, "geocode", area.geocodes, path)
    if area.altitude is not None:
        _add(node, "altitude", _decimal(area.altitude, f"{path}.altitude"), f"{path}.altitude")
    if area.ceiling is not None:
        _add(node, "ceiling", _decimal(area.ceiling, f"{path}.ceiling"), f"{path}.ceiling")


def _write_named_values(parent: ET.Element, tag: str, pairs: Iterable[NamedValue], path: str) -> None:
    for index, pair in enumerate(pairs):
        item = f"{path}.{tag}[{index}]"
        node = ET.SubElement(parent, tag)
        _add(node, "valueName", pair.value_name, f"{item}.valueName")
        _add(node, "value", pair.value, f"{item}.value", keep_empty=True)


def _add(parent: ET.Element, tag: str, text: str | None, path: str, *, keep_empty: bool = False) -> None:
    if text is None or (not text and not keep_empty):
        return
    bad = _XML_ILLEGAL.search(text)
    if bad is not None:
        raise InvalidInput(f"contains U+{ord(bad.group()):04X}, which XML 1.0 cannot carry", field=path)
    ET.SubElement(parent, tag).text = text


def _decimal(value: float, path: str) -> str:
    """Shortest round-tripping decimal, never in exponent form (xs:decimal has none)."""
    number = float(value)
    if not math.isfinite(number):
        raise InvalidInput(f"{number} is not a finite number", field=path)
    text = repr(number)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------

# Model field names (as the dataclasses report them) -> CAP element names, per class.
_ALERT_FIELDS = {"msg_type": "msgType"}
_INFO_FIELDS = {"categories": "category", "sender_name": "senderName", "response_types": "responseType"}
_AREA_FIELDS = {"desc": "areaDesc"}
_RESOURCE_FIELDS = {"desc": "resourceDesc", "mime_type": "mimeType", "deref_uri": "derefUri"}
_NAMED_VALUE_FIELDS = {"value_name": "valueName"}


def from_xml(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Alert:
    """Import a CAP 1.2 document from untrusted bytes.

    Args:
        data: The raw document, in any encoding its XML declaration names (UTF-8 by default).
        max_bytes: Larger documents are refused before any parsing.

    Returns:
        The alert, with every time keeping its original UTC offset.

    Raises:
        PayloadTooLarge: ``data`` is longer than ``max_bytes``.
        UnsafeXml: The document has a DTD, entity declarations or external references.
        MalformedInput: The bytes are not well-formed XML, or the root is not a CAP 1.2
            ``<alert>`` (field ``alert``).
        InvalidInput: An element is missing, repeated or invalid; ``field`` is its CAP path,
            e.g. ``msgType`` for Ack and Error messages, ``info[0].urgency``,
            ``info[1].area[0].polygon[0]``.
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"CAP document of {len(data)} bytes exceeds the limit of {max_bytes} bytes")
    root = _parse(data)
    if root.tag != f"{_NS}alert":
        namespace, _, local = root.tag[1:].partition("}") if root.tag.startswith("{") else ("", "", root.tag)
        if local == "alert":
            raise MalformedInput(
                f"<alert> is in namespace {_shown(namespace or 'none')}, not CAP 1.2 ({CAP_NAMESPACE})",
                field="alert",
            )
        raise MalformedInput(f"the root element is <{local}>, not a CAP 1.2 <alert>", field="alert")
    return _read_alert(root)


def _parse(data: bytes) -> ET.Element:
    try:
        return SafeET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DTDForbidden as exc:
        raise UnsafeXml("document type declarations (DTDs) are refused") from exc
    except defusedxml.EntitiesForbidden as exc:
        raise UnsafeXml("entity declarations are refused") from exc
    except defusedxml.DefusedXmlException as exc:
        raise UnsafeXml("external references are refused") from exc
    except ET.ParseError as exc:
        raise MalformedInput(f"not well-formed XML: {exc}") from exc
    except (ValueError, LookupError) as exc:  # unknown or unsupported encodings
        raise MalformedInput(f"unreadable XML: {exc}") from exc


def _read_alert(root: ET.Element) -> Alert:
    references = _text(root, "references", "references")
    return _build(
        Alert,
        "",
        _ALERT_FIELDS,
        identifier=_required_text(root, "identifier", "identifier"),
        sender=_required_text(root, "sender", "sender"),
        sent=parse_datetime(_required_text(root, "sent", "sent"), "sent"),
        status=parse_enum(Status, _required_text(root, "status", "status"), "status"),
        msg_type=_read_msg_type(root),
        source=_text(root, "source", "source"),
        scope=parse_enum(Scope, _required_text(root, "scope", "scope"), "scope"),
        restriction=_text(root, "restriction", "restriction"),
        addresses=_text(root, "addresses", "addresses"),
        codes=tuple(_texts(root, "code", "code")),
        note=_text(root, "note", "note"),
        references=parse_references(references) if references else (),
        incidents=_text(root, "incidents", "incidents"),
        infos=tuple(_read_info(node, f"info[{i}]") for i, node in enumerate(_children(root, "info"))),
    )


def _read_msg_type(root: ET.Element) -> MsgType:
    text = _required_text(root, "msgType", "msgType")
    if text in ("Ack", "Error"):
        raise InvalidInput(f"{text} messages answer other messages; only alerts are imported", field="msgType")
    return parse_enum(MsgType, text, "msgType")


def _read_info(node: ET.Element, path: str) -> Info:
    categories = _children(node, "category")
    if not categories:
        raise InvalidInput("at least one <category> is required", field=f"{path}.category")
    return _build(
        Info,
        path,
        _INFO_FIELDS,
        language=_text(node, "language", f"{path}.language") or DEFAULT_LANGUAGE,
        categories=_enums(Category, node, "category", path),
        event=_required_text(node, "event", f"{path}.event"),
        response_types=_enums(ResponseType, node, "responseType", path),
        urgency=parse_enum(Urgency, _required_text(node, "urgency", f"{path}.urgency"), f"{path}.urgency"),
        severity=parse_enum(Severity, _required_text(node, "severity", f"{path}.severity"), f"{path}.severity"),
        certainty=parse_enum(Certainty, _required_text(node, "certainty", f"{path}.certainty"), f"{path}.certainty"),
        audience=_text(node, "audience", f"{path}.audience"),
        event_codes=_named_values(node, "eventCode", path),
        effective=_datetime(node, "effective", path),
        onset=_datetime(node, "onset", path),
        expires=_datetime(node, "expires", path),
        sender_name=_text(node, "senderName", f"{path}.senderName"),
        headline=_text(node, "headline", f"{path}.headline"),
        description=_text(node, "description", f"{path}.description"),
        instruction=_text(node, "instruction", f"{path}.instruction"),
        web=_text(node, "web", f"{path}.web"),
        contact=_text(node, "contact", f"{path}.contact"),
        parameters=_named_values(node, "parameter", path),
        resources=tuple(
            _read_resource(item, f"{path}.resource[{i}]") for i, item in enumerate(_children(node, "resource"))
        ),
        areas=tuple(_read_area(item, f"{path}.area[{i}]") for i, item in enumerate(_children(node, "area"))),
    )


def _read_resource(node: ET.Element, path: str) -> Resource:
    size = _text(node, "size", f"{path}.size")
    if size is not None and not _INTEGER.fullmatch(size):
        raise InvalidInput(f"{_shown(size)} is not a whole number of bytes", field=f"{path}.size")
    return _build(
        Resource,
        path,
        _RESOURCE_FIELDS,
        desc=_required_text(node, "resourceDesc", f"{path}.resourceDesc"),
        mime_type=_required_text(node, "mimeType", f"{path}.mimeType"),
        size=int(size) if size is not None else None,
        uri=_text(node, "uri", f"{path}.uri"),
        deref_uri=_text(node, "derefUri", f"{path}.derefUri"),
        digest=_text(node, "digest", f"{path}.digest"),
    )


def _read_area(node: ET.Element, path: str) -> Area:
    altitude = _text(node, "altitude", f"{path}.altitude")
    ceiling = _text(node, "ceiling", f"{path}.ceiling")
    return _build(
        Area,
        path,
        _AREA_FIELDS,
        desc=_required_text(node, "areaDesc", f"{path}.areaDesc"),
        polygons=tuple(
            _read_polygon(_element_text(item, f"{path}.polygon[{i}]"), f"{path}.polygon[{i}]")
            for i, item in enumerate(_children(node, "polygon"))
        ),
        circles=tuple(
            _read_circle(_element_text(item, f"{path}.circle[{i}]"), f"{path}.circle[{i}]")
            for i, item in enumerate(_children(node, "circle"))
        ),
        geocodes=_named_values(node, "geocode", path),
        altitude=_parse_decimal(altitude, f"{path}.altitude") if altitude is not None else None,
        ceiling=_parse_decimal(ceiling, f"{path}.ceiling") if ceiling is not None else None,
    )


def _read_polygon(text: str, path: str) -> Polygon:
    points = []
    for index, pair in enumerate(_SPACED_COMMA.sub(",", text).split()):
        parts = pair.split(",")
        if len(parts) != 2:
            raise InvalidInput(f"pair {index + 1} {_shown(pair)} is not 'lat,lon'", field=path)
        lat, lon = (_parse_decimal(part, path) for part in parts)
        points.append((lon, lat))
    try:
        return Polygon(tuple(points))
    except InvalidInput as err:
        # The model reports "points[i]"; in CAP the polygon is one string, so name the pair instead.
        index = re.fullmatch(r"points\[(\d+)\]", err.field or "")
        message = f"{err.message} (pair {int(index[1]) + 1})" if index else err.message
        raise type(err)(message).at(path) from err


def _read_circle(text: str, path: str) -> Circle:
    parts = _SPACED_COMMA.sub(",", text).split()
    centre = parts[0].split(",") if parts else []
    if len(parts) != 2 or len(centre) != 2:
        raise InvalidInput(f"{_shown(text)} is not 'lat,lon radius'", field=path)
    lat, lon = (_parse_decimal(part, path) for part in centre)
    try:
        return Circle(lon=lon, lat=lat, radius_km=_parse_decimal(parts[1], path))
    except InvalidInput as err:
        raise type(err)(err.message).at(path) from err


def _named_values(node: ET.Element, tag: str, path: str) -> tuple[NamedValue, ...]:
    pairs = []
    for index, item in enumerate(_children(node, tag)):
        item_path = f"{path}.{tag}[{index}]"
        value = _one(item, "value", f"{item_path}.value")
        if value is None:
            raise InvalidInput("<value> is required", field=f"{item_path}.value")
        pairs.append(
            _build(
                NamedValue,
                item_path,
                _NAMED_VALUE_FIELDS,
                value_name=_required_text(item, "valueName", f"{item_path}.valueName"),
                value=_element_text(value, f"{item_path}.value"),
            )
        )
    return tuple(pairs)


def _enums(enum: type[_E], node: ET.Element, tag: str, path: str) -> tuple[_E, ...]:
    return tuple(
        parse_enum(enum, text, f"{path}.{tag}[{index}]")
        for index, text in enumerate(_texts(node, tag, f"{path}.{tag}"))
    )


def _datetime(node: ET.Element, tag: str, path: str) -> datetime | None:
    text = _text(node, tag, f"{path}.{tag}")
    return parse_datetime(text, f"{path}.{tag}") if text is not None else None


def _parse_decimal(text: str, path: str) -> float:
    if not _DECIMAL.fullmatch(text):
        raise InvalidInput(f"{_shown(text)} is not a decimal number", field=path)
    return float(text)


def _children(node: ET.Element, tag: str) -> list[ET.Element]:
    return node.findall(f"{_NS}{tag}")


def _one(node: ET.Element, tag: str, path: str) -> ET.Element | None:
    found = _children(node, tag)
    if len(found) > 1:
        raise InvalidInput(f"<{tag}> appears {len(found)} times; CAP allows it once", field=path)
    return found[0] if found else None


def _element_text(node: ET.Element, path: str) -> str:
    if len(node):
        raise InvalidInput("must hold text, not elements", field=path)
    return (node.text or "").strip()


def _text(node: ET.Element, tag: str, path: str) -> str | None:
    """The stripped text of an optional element; None when absent or empty."""
    found = _one(node, tag, path)
    return (_element_text(found, path) or None) if found is not None else None


def _required_text(node: ET.Element, tag: str, path: str) -> str:
    found = _one(node, tag, path)
    if found is None:
        raise InvalidInput(f"<{tag}> is required", field=path)
    text = _element_text(found, path)
    if not text:
        raise InvalidInput("must not be empty", field=path)
    return text


def _texts(node: ET.Element, tag: str, path: str) -> list[str]:
    texts = []
    for index, item in enumerate(_children(node, tag)):
        text = _element_text(item, f"{path}[{index}]")
        if not text:
            raise InvalidInput("must not be empty", field=f"{path}[{index}]")
        texts.append(text)
    return texts


def _build(cls: Callable[..., _T], path: str, renames: Mapping[str, str], **values: Any) -> _T:
    """Construct a model object, re-rooting its InvalidInput onto the CAP path of the element."""
    try:
        return cls(**values)
    except InvalidInput as err:
        field = err.field
        if field is not None:
            head = re.match(r"[A-Za-z_]+", field)
            if head is not None and head.group() in renames:
                field = renames[head.group()] + field[head.end() :]
        rerooted = type(err)(err.message, field=field)
        raise (rerooted.at(path) if path else rerooted) from err
