"""The JSON form of the alert model: faithful round trips and strict, path-naming refusals."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from broadcast.codec import alert_from_json, alert_to_json, area_from_json, polygons_from_geojson
from broadcast.errors import InvalidInput
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
)

CST = timezone(timedelta(hours=8))
SENT = datetime(2026, 7, 1, 8, 0, 0, tzinfo=CST)

RING_A = ((114.02, 22.52), (114.09, 22.52), (114.09, 22.58), (114.02, 22.58), (114.02, 22.52))
RING_B = ((113.90, 22.48), (113.95, 22.48), (113.95, 22.53), (113.90, 22.48))


def rich_alert() -> Alert:
    areas = (
        Area("福田区 Futian", polygons=(Polygon(RING_A), Polygon(RING_B)),
             geocodes=(NamedValue("adcode", "440304"),), altitude=0.0, ceiling=1500.0),
        Area("Shekou port", circles=(Circle(113.91, 22.48, 3.0), Circle(113.92, 22.49, 0.0))),
        Area("南山区", polygons=(Polygon(RING_A),), altitude=120.5),
    )
    zh = Info(
        language="zh-CN", categories=(Category.MET, Category.SAFETY), event="暴雨红色预警信号",
        urgency=Urgency.IMMEDIATE, severity=Severity.EXTREME, certainty=Certainty.OBSERVED,
        response_types=(ResponseType.SHELTER, ResponseType.EVACUATE), audience="公众",
        event_codes=(NamedValue("CN-MET-SIGNAL", "rainstorm.red"), NamedValue("SAME", "FFW")),
        effective=SENT, onset=SENT + timedelta(minutes=30), expires=SENT + timedelta(hours=6),
        sender_name="深圳市气象台", headline="暴雨红色预警", description="过去3小时降雨量已达100毫米以上。",
        instruction="立即到安全场所避险。", web="https://weather.sz.example/w/1", contact="12121",
        parameters=(NamedValue("layer:SZ:colour", "#E60012"), NamedValue("empty", "")),
        resources=(Resource("雷达图", "image/png", size=20480, uri="https://weather.sz.example/r.png",
                            digest="0" * 40),
                   Resource("bulletin", "text/plain", deref_uri="aGVsbG8=")),
        areas=areas,
    )
    en = Info(
        language="en", categories=(Category.MET,), event="Red Rainstorm Warning",
        urgency=Urgency.IMMEDIATE, severity=Severity.EXTREME, certainty=Certainty.OBSERVED,
        expires=datetime(2026, 7, 1, 6, 0, tzinfo=UTC), headline="Red rainstorm", areas=areas[:1],
    )
    return Alert(
        identifier="SZMB-20260701-080000-abcdef", sender="alerts@szmb.example", sent=SENT,
        status=Status.EXERCISE, msg_type=MsgType.UPDATE, scope=Scope.RESTRICTED,
        source="duty desk", restriction="duty officers only", addresses=None,
        codes=("IPAWSv1.0", "drill"), note="exercise \"Typhoon 2026\" & co <ok>",
        references=(Reference("alerts@szmb.example", "SZMB-1", SENT - timedelta(hours=2)),
                    Reference("other@agency.example", "X-2", datetime(2026, 6, 30, 23, 0, tzinfo=UTC))),
        incidents="incident-7", infos=(zh, en),
    )


def rich_json() -> dict[str, Any]:
    return alert_to_json(rich_alert())


def refused(doc: Any) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        alert_from_json(doc)
    return caught.value


# ---------------------------------------------------------------- round trips


def test_rich_alert_round_trips() -> None:
    alert = rich_alert()
    doc = alert_to_json(alert)
    assert alert_from_json(doc) == alert
    # Through real JSON text as well, which is how the store and the API carry it.
    assert alert_from_json(json.loads(json.dumps(doc, ensure_ascii=False))) == alert
    assert alert_to_json(alert_from_json(doc)) == doc


def test_json_form_field_names_and_values() -> None:
    doc = rich_json()
    assert doc["msg_type"] == "Update" and doc["status"] == "Exercise" and doc["scope"] == "Restricted"
    assert doc["sent"] == "2026-07-01T08:00:00+08:00"
    assert doc["references"][1] == {"sender": "other@agency.example", "identifier": "X-2",
                                    "sent": "2026-06-30T23:00:00+00:00"}
    assert "addresses" not in doc
    zh = doc["info"][0]
    assert zh["categories"] == ["Met", "Safety"]
    assert zh["response_types"] == ["Shelter", "Evacuate"]
    assert zh["event_codes"][0] == {"value_name": "CN-MET-SIGNAL", "value": "rainstorm.red"}
    assert zh["resources"][0] == {"desc": "雷达图", "mime_type": "image/png", "size": 20480,
                                  "uri": "https://weather.sz.example/r.png", "digest": "0" * 40}
    assert zh["areas"][1]["circles"] == [{"lon": 113.91, "lat": 22.48, "radius_km": 3.0},
                                         {"lon": 113.92, "lat": 22.49, "radius_km": 0.0}]
    assert zh["areas"][0]["geocodes"] == [{"value_name": "adcode", "value": "440304"}]
    assert (zh["areas"][0]["altitude"], zh["areas"][0]["ceiling"]) == (0.0, 1500.0)
    en = doc["info"][1]
    assert "response_types" not in en and "onset" not in en and "areas" in en


def test_one_polygon_is_a_geojson_polygon() -> None:
    geometry = rich_json()["info"][0]["areas"][2]["geometry"]
    assert geometry == {"type": "Polygon", "coordinates": [[list(p) for p in RING_A]]}


def test_several_polygons_are_a_geojson_multipolygon() -> None:
    geometry = rich_json()["info"][0]["areas"][0]["geometry"]
    assert geometry == {"type": "MultiPolygon",
                        "coordinates": [[[list(p) for p in RING_A]], [[list(p) for p in RING_B]]]}
    assert polygons_from_geojson(geometry, "g") == (Polygon(RING_A), Polygon(RING_B))


def test_an_area_without_polygons_has_no_geometry() -> None:
    assert "geometry" not in rich_json()["info"][0]["areas"][1]


def test_integer_coordinates_are_read_as_numbers() -> None:
    area = area_from_json({"desc": "d", "geometry": {"type": "Polygon", "coordinates": [
        [[114, 22], [115, 22], [115, 23], [114, 22]]]}}, "areas[0]")
    assert area.polygons[0].points[1] == (115.0, 22.0)


def test_times_lose_fractions_of_a_second() -> None:
    doc = rich_json()
    doc["sent"] = "2026-07-01T08:00:00.123456+08:00"
    assert alert_from_json(doc).sent == SENT


# ---------------------------------------------------------------- refusals


def at(doc: dict[str, Any], path: list[Any]) -> Any:
    for step in path:
        doc = doc[step]
    return doc


def with_change(path: list[Any], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(rich_json())
    at(doc, path[:-1])[path[-1]] = value
    return doc


def test_polygon_with_a_hole_is_refused() -> None:
    ring = [list(p) for p in RING_A]
    hole = [[114.04, 22.54], [114.05, 22.54], [114.05, 22.55], [114.04, 22.54]]
    doc = with_change(["info", 0, "areas", 2, "geometry"], {"type": "Polygon", "coordinates": [ring, hole]})
    err = refused(doc)
    assert err.field == "info[0].areas[2].geometry.coordinates[1]"
    assert "hole" in err.message


def test_multipolygon_part_with_a_hole_is_refused() -> None:
    ring = [list(p) for p in RING_A]
    hole = [[114.04, 22.54], [114.05, 22.54], [114.05, 22.55], [114.04, 22.54]]
    doc = with_change(["info", 0, "areas", 0, "geometry"],
                      {"type": "MultiPolygon", "coordinates": [[ring], [ring, hole]]})
    assert refused(doc).field == "info[0].areas[0].geometry.coordinates[1][1]"


@pytest.mark.parametrize(("path", "key"), [
    ([], "colour"),
    (["info", 1], "langauge"),
    (["info", 0, "areas", 0], "radius"),
    (["info", 0, "areas", 0, "geometry"], "crs"),
    (["info", 0, "areas", 1, "circles", 1], "radius_m"),
    (["info", 0, "areas", 0, "geocodes", 0], "scheme"),
    (["info", 0, "event_codes", 1], "code"),
    (["info", 0, "resources", 0], "mimeType"),
    (["references", 1], "note"),
])
def test_unknown_keys_are_refused_naming_the_key_path(path: list[Any], key: str) -> None:
    doc = copy.deepcopy(rich_json())
    at(doc, path)[key] = "x"
    expected = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in [*path, key]).lstrip(".")
    err = refused(doc)
    assert err.field == expected
    assert "unknown" in err.message


@pytest.mark.parametrize(("path", "field"), [
    (["info", 0, "areas", 1, "circles", 0, "lon"], "info[0].areas[1].circles[0].lon"),
    (["info", 0, "areas", 1, "circles", 0, "radius_km"], "info[0].areas[1].circles[0].radius_km"),
    (["info", 0, "areas", 0, "altitude"], "info[0].areas[0].altitude"),
    (["info", 0, "areas", 0, "geometry", "coordinates", 0, 0, 2, 1],
     "info[0].areas[0].geometry.coordinates[0][0][2][1]"),
    (["info", 0, "resources", 0, "size"], "info[0].resources[0].size"),
])
def test_booleans_are_refused_as_numbers(path: list[Any], field: str) -> None:
    err = refused(with_change(path, True))
    assert err.field == field


@pytest.mark.parametrize(("path", "field"), [
    (["sent"], "sent"),
    (["info", 0, "expires"], "info[0].expires"),
    (["info", 1, "expires"], "info[1].expires"),
    (["references", 0, "sent"], "references[0].sent"),
])
def test_a_time_without_offset_is_refused(path: list[Any], field: str) -> None:
    err = refused(with_change(path, "2026-07-01T08:00:00"))
    assert err.field == field
    assert "offset" in err.message


@pytest.mark.parametrize(("path", "value", "field"), [
    (["sent"], "yesterday", "sent"),
    (["sent"], 1751328000, "sent"),
    (["status"], "Rumour", "status"),
    (["info", 0, "urgency"], "Now", "info[0].urgency"),
    (["info", 0, "categories", 1], "Weather", "info[0].categories[1]"),
    (["info", 0, "headline"], 42, "info[0].headline"),
    (["info", 0, "areas", 1, "circles", 0, "lat"], 95.0, "info[0].areas[1].circles[0].center"),
    (["info", 0, "areas", 1, "circles", 0, "radius_km"], -1, "info[0].areas[1].circles[0].radius_km"),
    (["info", 0, "areas", 2, "geometry", "type"], "Point", "info[0].areas[2].geometry.type"),
    (["info", 0, "areas", 2, "geometry", "coordinates", 0, 4], [114.03, 22.52],
     "info[0].areas[2].geometry.coordinates[0]"),
    (["info", 0, "areas", 2, "geometry", "coordinates", 0, 1], [200.0, 22.52],
     "info[0].areas[2].geometry.coordinates[0][1]"),
    (["info", 0, "areas", 2, "geometry", "coordinates", 0, 1], [114.0], "info[0].areas[2].geometry.coordinates[0][1]"),
    (["info", 0, "areas", 0, "desc"], "  ", "info[0].areas[0].desc"),
    (["info", 0, "language"], "zh CN", "info[0].language"),
    (["info", 0, "resources", 0, "size"], 1.5, "info[0].resources[0].size"),
    (["codes"], ["ok", 1], "codes"),
    (["info"], {"language": "en"}, "info"),
    (["identifier"], "has space", "identifier"),
    (["scope"], "Private", "addresses"),
])
def test_bad_values_are_refused_naming_the_field(path: list[Any], value: Any, field: str) -> None:
    assert refused(with_change(path, value)).field == field


def test_a_missing_required_field_is_named() -> None:
    doc = rich_json()
    del doc["info"][1]["event"]
    assert refused(doc).field == "info[1].event"
    doc = rich_json()
    del doc["sent"]
    assert refused(doc).field == "sent"


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert refused([]).field == "body"
    assert refused("alert").field == "body"


@pytest.mark.parametrize("geometry", [0, False, [], ""])
def test_a_falsy_geometry_of_the_wrong_type_is_refused(geometry: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        area_from_json({"desc": "d", "geometry": geometry}, "areas[0]")
    assert caught.value.field == "areas[0].geometry"


def test_an_empty_geometry_object_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        area_from_json({"desc": "d", "geometry": {}}, "areas[0]")
    assert caught.value.field == "areas[0].geometry.type"


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_coordinates_are_refused(value: float) -> None:
    err = refused(with_change(["info", 0, "areas", 1, "circles", 0, "lon"], value))
    assert err.field == "info[0].areas[1].circles[0].lon"


def test_an_infinite_radius_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        alert_from_json(json.loads(json.dumps(with_change(["info", 0, "areas", 1, "circles", 0, "radius_km"],
                                                          float("inf")))))
    assert caught.value.field == "info[0].areas[1].circles[0].radius_km"
