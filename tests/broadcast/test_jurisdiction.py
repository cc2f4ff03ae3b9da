"""Jurisdiction: which areas overlap the gazetteer's city (by geometry or by our administrative units)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from broadcast.compose import compose
from broadcast.jurisdiction import Jurisdiction
from broadcast.model import Alert, Area, Circle, NamedValue, Polygon
from broadcast.settings import Settings
from broadcast.signals import load_catalogue
from geotarget import build_demo_gazetteer
from geotarget.areas import area_shape, circle_shape, is_admin_code

SETTINGS = Settings()
JURISDICTION = Jurisdiction(build_demo_gazetteer())


def square(lon: float, lat: float, half: float = 0.02) -> Polygon:
    return Polygon(((lon - half, lat - half), (lon + half, lat - half), (lon + half, lat + half),
                    (lon - half, lat + half), (lon - half, lat - half)))


FUTIAN = Polygon(((114.02, 22.52), (114.09, 22.52), (114.09, 22.58), (114.02, 22.58), (114.02, 22.52)))
HONG_KONG = square(114.17, 22.30)  # Kowloon / Victoria Harbour


def polygon_area(polygon: Polygon, desc: str = "area") -> Area:
    return Area(desc, polygons=(polygon,))


def geocode_area(value: str, value_name: str = "adcode") -> Area:
    return Area(f"{value_name} {value}", geocodes=(NamedValue(value_name, value),))


# ---------------------------------------------------------------- polygons and circles


def test_futian_polygon_is_inside() -> None:
    assert JURISDICTION.covers(polygon_area(FUTIAN)) is True


def test_hong_kong_polygon_is_outside() -> None:
    assert JURISDICTION.covers(polygon_area(HONG_KONG)) is False


def test_polygon_crossing_the_boundary_is_inside() -> None:
    assert JURISDICTION.covers(polygon_area(square(113.75, 22.60, half=0.05))) is True


def test_a_multi_polygon_area_is_inside_when_one_part_is() -> None:
    assert JURISDICTION.covers(Area("both", polygons=(HONG_KONG, FUTIAN))) is True


def test_circle_crossing_the_boundary_is_inside() -> None:
    # Centre west of the city (over the Pearl River estuary), radius 20 km: it reaches the coast.
    crossing = Circle(113.70, 22.60, 20.0)
    assert not JURISDICTION.covers(Area("centre", circles=(Circle(113.70, 22.60, 0.0),)))
    assert JURISDICTION.covers(Area("crossing", circles=(crossing,))) is True


def test_circle_near_but_outside_is_outside() -> None:
    assert JURISDICTION.covers(Area("near", circles=(Circle(113.70, 22.60, 3.0),))) is False


def test_circle_of_zero_radius_inside_is_a_point() -> None:
    shape = circle_shape(Circle(114.05, 22.55, 0.0))
    assert shape.geom_type == "Point"
    assert JURISDICTION.covers(Area("point", circles=(Circle(114.05, 22.55, 0.0),))) is True


def test_circle_shape_has_the_radius_in_kilometres() -> None:
    shape = circle_shape(Circle(114.0, 22.5, 11.132))
    min_lon, min_lat, max_lon, max_lat = shape.bounds
    assert (max_lat - min_lat) / 2 == pytest.approx(0.1, rel=1e-3)
    assert (max_lon - min_lon) / 2 > (max_lat - min_lat) / 2  # longitude degrees are shorter away from the equator


def test_area_shape_is_none_without_geometry_or_known_units() -> None:
    assert area_shape(geocode_area("440304")) is None
    assert area_shape(geocode_area("440304"), build_demo_gazetteer()).equals(
        build_demo_gazetteer().unit("440304").geometry)
    assert area_shape(polygon_area(FUTIAN)) is not None


def test_an_area_is_the_union_of_its_polygons_and_units() -> None:
    area = Area("HK and Futian", polygons=(HONG_KONG,), geocodes=(NamedValue("adcode", "440304"),))
    assert JURISDICTION.covers(area) is True
    assert JURISDICTION.covers(Area("HK", polygons=(HONG_KONG,), geocodes=(NamedValue("adcode", "810000"),))) is False


# ---------------------------------------------------------------- administrative codes


def test_geocode_adcode_440304_is_inside() -> None:
    assert JURISDICTION.covers(geocode_area("440304")) is True


def test_geocode_adcode_110101_is_outside() -> None:
    assert JURISDICTION.covers(geocode_area("110101")) is False


def test_unknown_geocode_scheme_is_outside_even_with_our_digits() -> None:
    assert JURISDICTION.covers(geocode_area("440304", value_name="SAME")) is False


@pytest.mark.parametrize("name", ["adcode", "ADCODE", " gb2260 ", "GB/T 2260", "admin_code"])
def test_admin_code_names(name: str) -> None:
    assert is_admin_code(name) is True
    assert JURISDICTION.covers(geocode_area("440305", value_name=name)) is True


def test_any_of_several_geocodes_counts() -> None:
    area = Area("two", geocodes=(NamedValue("SAME", "006037"), NamedValue("adcode", "440306")))
    assert JURISDICTION.covers(area) is True


def test_an_area_with_neither_geometry_nor_geocode_is_outside() -> None:
    assert JURISDICTION.covers(Area("somewhere")) is False


# ---------------------------------------------------------------- findings


def alert_with_areas(*areas: Area) -> Alert:
    composed = compose({"signal": {"hazard": "rainstorm", "level": "red"},
                        "areas": [{"desc": "seed", "geocodes": [{"value_name": "adcode", "value": "440304"}]}]},
                       settings=SETTINGS, catalogue=load_catalogue(), identifier="SZMB-J",
                       sent=datetime(2026, 7, 1, 8, tzinfo=ZoneInfo("Asia/Shanghai")))
    return dataclasses.replace(composed.alert,
                               infos=tuple(dataclasses.replace(i, areas=areas) for i in composed.alert.infos))


def test_findings_name_each_outside_area() -> None:
    alert = alert_with_areas(polygon_area(FUTIAN, "福田区"), polygon_area(HONG_KONG, "Kowloon"),
                             geocode_area("110101"))
    findings = JURISDICTION.findings(alert)
    assert [(f.code, f.field) for f in findings] == [
        ("outside_jurisdiction", "info[0].areas[1]"),
        ("outside_jurisdiction", "info[0].areas[2]"),
        ("outside_jurisdiction", "info[1].areas[1]"),
        ("outside_jurisdiction", "info[1].areas[2]"),
    ]
    assert "Kowloon" in findings[0].message


def test_no_findings_when_every_area_is_inside() -> None:
    alert = alert_with_areas(polygon_area(FUTIAN), geocode_area("440304"),
                             Area("crossing", circles=(Circle(113.70, 22.60, 20.0),)))
    assert JURISDICTION.findings(alert) == []
