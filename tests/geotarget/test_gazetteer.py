"""The Gazetteer class on a small hand-made city whose answers are known exactly.

The city is the square [0, 4] x [0, 2]; two districts are its halves; each district has
two streets (quarters of the city); each street has one community equal to itself.
"""

from __future__ import annotations

import json

import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, box

from broadcast.errors import InvalidInput, NotFound
from geotarget import Gazetteer, Level, TilingProblem, Unit


def _unit(code: str, level: Level, parent: str | None, geometry, population: int = 100) -> Unit:
    return Unit(code, level, f"单元{code}", f"Unit {code}", parent, population, geometry)


def small_units(*, street_b2=None) -> list[Unit]:
    b2 = street_b2 if street_b2 is not None else box(3, 0, 4, 2)
    streets = {
        "A1": ("A", box(0, 0, 1, 2)),
        "A2": ("A", box(1, 0, 2, 2)),
        "B1": ("B", box(2, 0, 3, 2)),
        "B2": ("B", b2),
    }
    units = [
        _unit("C", Level.CITY, None, box(0, 0, 4, 2), 400),
        _unit("A", Level.DISTRICT, "C", box(0, 0, 2, 2), 200),
        _unit("B", Level.DISTRICT, "C", box(2, 0, 4, 2), 200),
    ]
    for code, (parent, geom) in streets.items():
        units.append(_unit(code, Level.STREET, parent, geom))
        units.append(_unit(code + "x", Level.COMMUNITY, code, geom))
    return units


@pytest.fixture
def small() -> Gazetteer:
    return Gazetteer(small_units())


def test_lookups(small: Gazetteer) -> None:
    assert len(small) == 11
    assert small.city.code == "C"
    assert small.unit("A2").name_en == "Unit A2"
    assert [u.code for u in small.children("C")] == ["A", "B"]
    assert [u.code for u in small.children("B")] == ["B1", "B2"]
    assert small.children("B2x") == ()
    assert [u.code for u in small.ancestors("A2x")] == ["A2", "A", "C"]
    assert small.ancestors("C") == ()
    assert [u.code for u in small.units_at(Level.STREET)] == ["A1", "A2", "B1", "B2"]
    assert [u.code for u in small.units_at("district")] == ["A", "B"]
    assert [u.code for u in small.descendants("A")] == ["A1", "A1x", "A2", "A2x"]
    assert [u.code for u in small.descendants("C", Level.COMMUNITY)] == ["A1x", "A2x", "B1x", "B2x"]
    assert "B1" in small
    assert "Z" not in small


def test_fewest_units_for_the_same_ground(small: Gazetteer) -> None:
    def fewest(*codes: str) -> list[str]:
        return [u.code for u in small.fewest(codes)]

    assert fewest("A", "B") == ["C"], "every district is the city"
    assert fewest("A1", "A2", "B1") == ["A", "B1"]
    assert fewest("A1x", "A2x", "B1", "B2") == ["C"], "complete sets collapse level by level"
    assert fewest("A", "A1", "A2x") == ["A"], "units inside another listed one go"
    assert fewest("B1x", "Z", "B1x") == ["B1"], "a street's only community is the street; unknown codes ignored"
    assert fewest() == []


def test_level_order() -> None:
    assert [level.depth for level in Level] == [0, 1, 2, 3]
    assert Level.CITY.parent is None
    assert Level.STREET.parent is Level.DISTRICT
    assert Level.STREET.child is Level.COMMUNITY
    assert Level.COMMUNITY.child is None
    assert Level("street") is Level.STREET


@pytest.mark.parametrize("call", ["unit", "children", "ancestors"])
def test_unknown_code_is_not_found(small: Gazetteer, call: str) -> None:
    with pytest.raises(NotFound) as caught:
        getattr(small, call)("nope")
    assert caught.value.field == "code"
    assert caught.value.status == 404


def test_small_city_tiles(small: Gazetteer) -> None:
    assert small.check_tiling(1e-9) == []


def test_check_tiling_reports_a_gap() -> None:
    shrunk = Gazetteer(small_units(street_b2=box(3, 0, 4, 1.5)))
    problems = shrunk.check_tiling(1e-6)
    # B loses 0.5 of its area 4; B2's community equals B2, so only B is short.
    assert problems == [TilingProblem("B", "gap", pytest.approx(0.125))]


def test_check_tiling_reports_overlap_and_overflow() -> None:
    wide = Gazetteer(small_units(street_b2=box(2.5, 0, 4.5, 2)))
    kinds = {(p.code, p.kind): p.amount for p in wide.check_tiling(1e-6)}
    assert kinds[("B", "overlap")] == pytest.approx(1.0 / 4)  # 0.5 x 2 shared with B1
    assert kinds[("B", "overflow")] == pytest.approx(1.0 / 4)  # 0.5 x 2 outside B
    # Only direct children are compared with their parent: the districts still tile the city.
    assert {code for code, _ in kinds} == {"B"}
    # A tolerance larger than every problem hides them all.
    assert wide.check_tiling(0.5) == []


def test_units_hit_fractions(small: Gazetteer) -> None:
    area = box(0.5, 0, 2.5, 2)  # half of A1, all of A2, half of B1
    hits = {u.code: f for u, f in small.units_hit(area, Level.STREET)}
    assert hits == {"A2": pytest.approx(1.0), "A1": pytest.approx(0.5), "B1": pytest.approx(0.5)}
    ordered = [u.code for u, _ in small.units_hit(area, "street")]
    assert ordered == ["A2", "A1", "B1"]
    districts = dict((u.code, f) for u, f in small.units_hit(area, Level.DISTRICT))
    assert districts == {"A": pytest.approx(0.75), "B": pytest.approx(0.25)}


def test_units_hit_touching_and_outside(small: Gazetteer) -> None:
    touching = {u.code: f for u, f in small.units_hit(box(1, 0.5, 1, 1.5).buffer(0), Level.STREET)}
    assert touching == {}  # an empty (zero-area) polygon hits nothing
    edge = {u.code: f for u, f in small.units_hit(shapely.LineString([(1, 0), (1, 2)]), Level.STREET)}
    assert edge == {"A1": 0.0, "A2": 0.0}
    assert small.units_hit(box(10, 10, 11, 11), Level.STREET) == []
    inside_point = small.units_hit(Point(3.5, 1), Level.COMMUNITY)
    assert [(u.code, f) for u, f in inside_point] == [("B2x", 0.0)]


def test_units_hit_whole_city_covers_everything(small: Gazetteer) -> None:
    hits = small.units_hit(box(-1, -1, 5, 3), Level.COMMUNITY)
    assert sorted(u.code for u, _ in hits) == ["A1x", "A2x", "B1x", "B2x"]
    assert all(f == pytest.approx(1.0) and f <= 1.0 for _, f in hits)


def test_locate(small: Gazetteer) -> None:
    assert small.locate(0.5, 1, Level.STREET).code == "A1"
    assert small.locate(3.9, 0.1, "district").code == "B"
    assert small.locate(2, 1, Level.DISTRICT).code == "A"  # on the shared border: smaller code
    assert small.locate(9, 9, Level.CITY) is None


def test_geojson_round_trip(small: Gazetteer, tmp_path) -> None:
    text = json.dumps(small.to_geojson(), ensure_ascii=False)
    back = Gazetteer.from_geojson(json.loads(text))
    assert list(back) == list(small)
    path = tmp_path / "small.geojson"
    small.write_geojson(path)
    assert list(Gazetteer.read_geojson(path)) == list(small)
    feature = small.to_geojson()["features"][0]
    assert feature["properties"] == {
        "code": "A",
        "level": "district",
        "name": "单元A",
        "name_en": "Unit A",
        "parent": "C",
        "population": 200,
    }
    assert feature["geometry"]["type"] == "Polygon"


def test_geojson_keeps_multipolygons() -> None:
    units = small_units()
    island = MultiPolygon([box(3, 0, 4, 1.5), box(3, 1.6, 4, 2)])
    units = [u if u.code != "B2x" else _unit("B2x", Level.COMMUNITY, "B2", island) for u in units]
    back = Gazetteer.from_geojson(json.loads(json.dumps(Gazetteer(units).to_geojson())))
    assert back.unit("B2x").geometry.geom_type == "MultiPolygon"
    assert back.unit("B2x").geometry.equals(island)


def test_construction_rejects_inconsistent_units() -> None:
    units = small_units()
    with pytest.raises(InvalidInput, match="duplicate"):
        Gazetteer([*units, units[1]])
    with pytest.raises(InvalidInput, match="unknown parent") as caught:
        Gazetteer([*units, _unit("Q", Level.STREET, "nowhere", box(0, 0, 1, 1))])
    assert caught.value.field == "parent"
    with pytest.raises(InvalidInput, match="at level"):
        Gazetteer([*units, _unit("Q", Level.COMMUNITY, "A", box(0, 0, 1, 1))])
    with pytest.raises(InvalidInput, match="exactly one city"):
        Gazetteer(units[1:])
    with pytest.raises(InvalidInput, match="population"):
        Gazetteer([*units, _unit("Q", Level.STREET, "A", box(0, 0, 1, 1), population=-1)])


def test_from_geojson_names_the_bad_field(small: Gazetteer) -> None:
    document = small.to_geojson()
    document["features"][2]["properties"]["level"] = "province"
    with pytest.raises(InvalidInput) as caught:
        Gazetteer.from_geojson(document)
    assert caught.value.field == "features[2].properties.level"

    document = small.to_geojson()
    document["features"][1]["geometry"] = {"type": "Point", "coordinates": [1, 1]}
    with pytest.raises(InvalidInput) as caught:
        Gazetteer.from_geojson(document)
    assert caught.value.field == "features[1].geometry"

    with pytest.raises(InvalidInput) as caught:
        Gazetteer.from_geojson({"type": "Feature"})
    assert caught.value.field == "type"
