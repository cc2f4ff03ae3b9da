"""Importing administrative boundaries level by level (geotarget.importer).

Two kinds of check: the real Shenzhen district file from ../shared/data over the demo
gazetteer (Dapeng folded into Longgang, islands, many vertices), and a small hand-made
city whose answers are known exactly: the square [0, 4] x [0, 2], districts A and B its
halves, streets A1, A2, B1, B2 its quarters, and one community per street equal to it.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import shapely
from shapely.geometry import MultiPolygon, Point, box, mapping, shape

from broadcast.errors import InvalidInput
from geotarget import Gazetteer, Level, Unit
from geotarget.demo import build_demo_gazetteer
from geotarget.importer import NOTE_KINDS, ImportNote, ImportResult, PropertyMapping, import_file, import_level

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DISTRICTS_FILE = SHARED_DATA / "shenzhen-districts.geojson"
FUTIAN_CIVIC_CENTRE = (114.0579, 22.5431)
LONGGANG, DAPENG, FUTIAN, NANSHAN = "440307", "440399", "440304", "440305"
TOLERANCE = 1e-6


# ---------------------------------------------------------------------- the real district file


@pytest.fixture(scope="module")
def real_document() -> dict[str, Any]:
    if not DISTRICTS_FILE.is_file():
        pytest.fail(f"reference file {DISTRICTS_FILE} is absent (../shared/data lies beside the repository)")
    return json.loads(DISTRICTS_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def imported(real_document: dict[str, Any]) -> ImportResult:
    return import_level(build_demo_gazetteer(), real_document, Level.DISTRICT)


def _real_geometries(document: dict[str, Any]) -> dict[str, Any]:
    return {str(f["properties"]["adcode"]): shape(f["geometry"]) for f in document["features"]}


def test_real_file_replaces_the_districts(imported: ImportResult, real_document: dict[str, Any]) -> None:
    gazetteer = imported.gazetteer
    real = _real_geometries(real_document)
    assert len(real) == 9
    assert {u.code for u in gazetteer.units_at(Level.DISTRICT)} == set(real)
    for code, geometry in real.items():
        unit = gazetteer.unit(code)
        assert unit.parent == "440300"
        assert unit.geometry.equals(geometry), code
    assert gazetteer.unit(FUTIAN).name_zh == "福田区"
    assert gazetteer.unit(FUTIAN).name_en == "Futian District"  # the file has no English names: kept
    assert not imported.notes("unplaced")
    assert {n.kind for n in imported.report} <= NOTE_KINDS


def test_city_becomes_the_union_of_the_districts(imported: ImportResult, real_document: dict[str, Any]) -> None:
    union = shapely.union_all(list(_real_geometries(real_document).values()))
    city = imported.gazetteer.city.geometry
    assert city.symmetric_difference(union).area < 1e-9 * union.area
    assert city.area != pytest.approx(build_demo_gazetteer().city.geometry.area, rel=1e-3)


def test_dapeng_is_removed_and_its_streets_move_to_longgang(imported: ImportResult) -> None:
    gazetteer = imported.gazetteer
    demo = build_demo_gazetteer()
    assert DAPENG not in gazetteer
    assert DAPENG in demo  # the cached demo itself is untouched
    dapeng_streets = [u.code for u in demo.children(DAPENG)]
    assert len(dapeng_streets) == 3
    removed = imported.notes("removed", DAPENG)
    assert len(removed) == 1 and "大鹏新区" in removed[0].message
    for code in dapeng_streets:
        assert gazetteer.unit(code).parent == LONGGANG
        (note,) = imported.notes("reparented", code)
        assert LONGGANG in note.message
        assert note.number is not None and note.number > 0.5
    assert set(dapeng_streets) <= {u.code for u in gazetteer.children(LONGGANG)}


def test_islands_are_kept_down_to_communities(imported: ImportResult, real_document: dict[str, Any]) -> None:
    gazetteer = imported.gazetteer
    nanshan = gazetteer.unit(NANSHAN).geometry
    real_parts = len(_real_geometries(real_document)[NANSHAN].geoms)
    assert real_parts > 1
    assert isinstance(nanshan, MultiPolygon) and len(nanshan.geoms) == real_parts
    for part in nanshan.geoms:
        point = part.representative_point()
        street = gazetteer.locate(point.x, point.y, Level.STREET)
        community = gazetteer.locate(point.x, point.y, Level.COMMUNITY)
        assert street is not None and street.parent == NANSHAN
        assert community is not None and community.parent == street.code


def test_every_level_tiles_after_the_import(imported: ImportResult) -> None:
    assert imported.gazetteer.check_tiling(TOLERANCE) == []
    assert all(unit.geometry.is_valid for unit in imported.gazetteer)


def test_futian_civic_centre_resolves_to_futian(imported: ImportResult) -> None:
    gazetteer = imported.gazetteer
    district = gazetteer.locate(*FUTIAN_CIVIC_CENTRE, Level.DISTRICT)
    assert district is not None and district.code == FUTIAN and district.name_zh == "福田区"
    street = gazetteer.locate(*FUTIAN_CIVIC_CENTRE, Level.STREET)
    assert street is not None and street.parent == FUTIAN
    community = gazetteer.locate(*FUTIAN_CIVIC_CENTRE, Level.COMMUNITY)
    assert community is not None and community.parent == street.code


def test_population_totals_are_preserved(imported: ImportResult) -> None:
    gazetteer = imported.gazetteer
    total = build_demo_gazetteer().city.population
    assert total == 17_800_000
    for level in Level:
        assert sum(u.population for u in gazetteer.units_at(level)) == total, level
    for unit in gazetteer:
        kids = gazetteer.children(unit.code)
        if kids:
            assert unit.population == sum(k.population for k in kids), unit.code


def test_report_explains_the_refit(imported: ImportResult) -> None:
    kinds = Counter(note.kind for note in imported.report)
    assert kinds["clipped"] > 0 and kinds["gap_filled"] > 0
    for note in imported.notes("clipped") + imported.notes("gap_filled"):
        assert note.number is not None and TOLERANCE < note.number <= 1.0
    # every unit removed by the refit is really gone, every reparented one really moved
    for note in imported.notes("removed"):
        assert note.code not in imported.gazetteer
    for note in imported.notes("reparented"):
        assert note.code in imported.gazetteer


def test_import_is_fast(real_document: dict[str, Any]) -> None:
    demo = build_demo_gazetteer()
    start = time.perf_counter()
    result = import_level(demo, real_document, "district")
    elapsed = time.perf_counter() - start
    assert len(result.gazetteer.units_at(Level.DISTRICT)) == 9
    assert elapsed < 3.0, f"importing 9 districts over the demo took {elapsed:.2f} s"


def test_importing_the_same_file_again_changes_nothing(imported: ImportResult, real_document: dict[str, Any]) -> None:
    again = import_level(imported.gazetteer, real_document, Level.DISTRICT)
    assert [n.kind for n in again.report if n.kind in ("removed", "reparented", "created", "unplaced")] == []
    assert len(again.gazetteer) == len(imported.gazetteer)
    assert again.gazetteer.check_tiling(TOLERANCE) == []


def test_import_file_reads_the_file() -> None:
    result = import_file(build_demo_gazetteer(), DISTRICTS_FILE, "district")
    assert DAPENG not in result.gazetteer and LONGGANG in result.gazetteer


# ---------------------------------------------------------------------- a small city


def _unit(code: str, level: Level, parent: str | None, geometry, population: int = 100) -> Unit:
    return Unit(code, level, f"单元{code}", f"Unit {code}", parent, population, geometry)


def small_city() -> Gazetteer:
    units = [
        _unit("C", Level.CITY, None, box(0, 0, 4, 2), 400),
        _unit("A", Level.DISTRICT, "C", box(0, 0, 2, 2), 200),
        _unit("B", Level.DISTRICT, "C", box(2, 0, 4, 2), 200),
    ]
    for code, parent, x in (("A1", "A", 0), ("A2", "A", 1), ("B1", "B", 2), ("B2", "B", 3)):
        units.append(_unit(code, Level.STREET, parent, box(x, 0, x + 1, 2)))
        units.append(_unit(code + "x", Level.COMMUNITY, code, box(x, 0, x + 1, 2)))
    return Gazetteer(units)


def feature(properties: dict[str, Any], geometry) -> dict[str, Any]:
    raw = geometry if isinstance(geometry, dict) else mapping(geometry)
    return {"type": "Feature", "properties": properties, "geometry": json.loads(json.dumps(raw))}


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def street(code: str, geometry, parent: str | None = None, **extra: Any) -> dict[str, Any]:
    props = {"code": code, "name": f"街{code}", "level": "street", **extra}
    if parent is not None:
        props["parent"] = parent
    return feature(props, geometry)


def district(code: str, geometry, **extra: Any) -> dict[str, Any]:
    return feature({"code": code, "name": f"区{code}", "level": "district", "parent": "C", **extra}, geometry)


BOW_TIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 2], [1, 0], [0, 2], [0, 0]]]}


def test_bow_tie_is_repaired_and_reported() -> None:
    document = collection(
        street("A1", BOW_TIE, "A"),
        street("A2", box(1, 0, 2, 2), "A"),
        street("B1", box(2, 0, 3, 2), "B"),
        street("B2", box(3, 0, 4, 2), "B"),
    )
    assert not shape(BOW_TIE).is_valid
    result = import_level(small_city(), document, Level.STREET)
    (repaired,) = result.notes("repaired")
    assert repaired.code == "A1" and repaired.feature == 0
    assert "Self-intersection" in repaired.message
    gazetteer = result.gazetteer
    a1 = gazetteer.unit("A1")
    assert a1.geometry.is_valid
    # the two triangles the repair leaves, plus the gap between them, which only A1 borders
    assert a1.geometry.area == pytest.approx(2.0)
    assert a1.geometry.symmetric_difference(box(0, 0, 1, 2)).area < 1e-12
    assert [n.code for n in result.notes("gap_filled")] == ["A1"]
    assert gazetteer.check_tiling(TOLERANCE) == []
    assert gazetteer.unit("A1x").geometry.area == pytest.approx(2.0)


def test_unknown_parent_is_reported_unplaced() -> None:
    document = collection(district("A", box(0, 0, 2, 2)), district("B", box(2, 0, 4, 2)))
    document["features"].append(feature({"code": "Z", "name": "无主", "parent": "NOWHERE"}, box(1, 1, 2, 2)))
    result = import_level(small_city(), document, Level.DISTRICT)
    (note,) = result.notes("unplaced")
    assert note.code == "Z" and note.feature == 2
    assert "unknown parent NOWHERE" in note.message
    assert "Z" not in result.gazetteer
    assert result.gazetteer.check_tiling(TOLERANCE) == []


def test_line_string_is_reported_unplaced() -> None:
    line = {"type": "LineString", "coordinates": [[0, 0], [2, 2]]}
    document = collection(district("A", box(0, 0, 2, 2)), district("L", line), district("B", box(2, 0, 4, 2)))
    result = import_level(small_city(), document, Level.DISTRICT)
    (note,) = result.notes("unplaced")
    assert (note.code, note.feature) == ("L", 1)
    assert "LineString" in note.message
    assert {u.code for u in result.gazetteer.units_at(Level.DISTRICT)} == {"A", "B"}


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"type": "Feature", "properties": {}, "geometry": None}, "type"),
        ([], "type"),
        ("FeatureCollection", "type"),
        ({"type": "FeatureCollection", "features": {}}, "features"),
        ({"type": "FeatureCollection", "features": []}, "features"),
        (collection(feature({"name": "no code"}, box(0, 0, 1, 1))), "features"),
    ],
)
def test_unusable_documents_raise_invalid_input(document: Any, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        import_level(small_city(), document, Level.DISTRICT)
    assert caught.value.field == field


def test_unknown_level_raises_invalid_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        import_level(small_city(), collection(district("A", box(0, 0, 2, 2))), "province")
    assert caught.value.field == "level"


def test_custom_property_mapping_moves_a_border() -> None:
    gb = PropertyMapping(code="gb_code", name="mc", name_en=None, level=None, parent="sj", population=None)
    document = collection(
        feature({"gb_code": "A", "mc": "新甲区", "sj": "C", "code": "IGNORED"}, box(0, 0, 2.5, 2)),
        feature({"gb_code": "B", "mc": "新乙区", "sj": "C"}, box(2.5, 0, 4, 2)),
    )
    result = import_level(small_city(), document, Level.DISTRICT, gb)
    gazetteer = result.gazetteer
    assert gazetteer.unit("A").name_zh == "新甲区" and gazetteer.unit("B").name_zh == "新乙区"
    assert gazetteer.unit("A").name_en == "Unit A"  # no English name in the mapping: kept
    assert "IGNORED" not in gazetteer
    # B1 loses its western half to A, where A2 (the street sharing that border) takes it
    assert gazetteer.unit("B1").geometry.equals(box(2.5, 0, 3, 2))
    assert gazetteer.unit("A2").geometry.equals(box(1, 0, 2.5, 2))
    assert gazetteer.unit("A2x").geometry.equals(box(1, 0, 2.5, 2))
    (clipped,) = [n for n in result.notes("clipped") if n.code == "B1"]
    assert clipped.number == pytest.approx(0.5)
    assert {n.code for n in result.notes("gap_filled")} == {"A2", "A2x"}
    assert gazetteer.check_tiling(TOLERANCE) == []
    assert gazetteer.city.population == 400


def test_datav_style_properties() -> None:
    document = collection(
        feature({"adcode": 7, "name": "七区", "level": "district", "parent": {"adcode": "C"}}, box(0, 0, 2, 2)),
        feature({"adcode": 8, "name": "八区", "level": "district", "parent": {"adcode": "C"}}, box(2, 0, 4, 2)),
    )
    result = import_level(small_city(), document, "district")
    gazetteer = result.gazetteer
    assert {u.code for u in gazetteer.units_at(Level.DISTRICT)} == {"7", "8"}
    assert [n.code for n in result.notes("created")] == ["7", "8"]
    assert {n.code for n in result.notes("removed")} == {"A", "B"}
    assert {u.code: u.parent for u in gazetteer.units_at(Level.STREET)} == {"A1": "7", "A2": "7", "B1": "8", "B2": "8"}
    assert gazetteer.unit("7").population == 200
    assert gazetteer.check_tiling(TOLERANCE) == []


def test_absent_district_is_removed_and_children_reparented() -> None:
    result = import_level(small_city(), collection(district("A", box(0, 0, 4, 2))), Level.DISTRICT)
    gazetteer = result.gazetteer
    assert "B" not in gazetteer
    assert [u.code for u in gazetteer.children("A")] == ["A1", "A2", "B1", "B2"]
    assert [n.number for n in result.notes("reparented")] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert gazetteer.unit("A").population == 400
    assert gazetteer.check_tiling(TOLERANCE) == []


def test_island_gap_goes_to_the_nearest_child() -> None:
    island = box(0, 3, 0.5, 3.5)
    document = collection(district("A", MultiPolygon([box(0, 0, 2, 2), island])), district("B", box(2, 0, 4, 2)))
    result = import_level(small_city(), document, Level.DISTRICT)
    gazetteer = result.gazetteer
    assert gazetteer.locate(0.25, 3.25, Level.STREET).code == "A1"
    assert gazetteer.locate(0.25, 3.25, Level.COMMUNITY).code == "A1x"
    assert isinstance(gazetteer.unit("A1").geometry, MultiPolygon)
    assert gazetteer.city.geometry.area == pytest.approx(8.25)
    assert gazetteer.check_tiling(TOLERANCE) == []


def test_created_unit_and_overlap_cut_from_the_larger_code() -> None:
    document = collection(
        district("A", box(0, 0, 2.5, 2)),
        district("B", box(2, 0, 4, 2)),
        district("D", box(4, 0, 5, 2)),
    )
    result = import_level(small_city(), document, Level.DISTRICT)
    gazetteer = result.gazetteer
    assert gazetteer.unit("B").geometry.equals(box(2.5, 0, 4, 2))
    (cut,) = [n for n in result.notes("clipped") if n.code == "B"]
    assert cut.number == pytest.approx(0.25) and cut.feature == 1
    (created,) = result.notes("created")
    assert created.code == "D" and gazetteer.unit("D").parent == "C"
    assert gazetteer.city.geometry.equals(box(0, 0, 5, 2))
    assert gazetteer.check_tiling(TOLERANCE) == []


def test_new_street_without_parent_goes_where_it_overlaps_most() -> None:
    document = collection(
        street("A1", box(0, 0, 1, 2)),
        street("A2", box(1, 0, 2, 2)),
        street("B1", box(2, 0, 3, 2)),
        street("N", box(2.9, 0, 4, 2)),  # new, mostly in B; B2 is absent and goes
    )
    result = import_level(small_city(), document, Level.STREET)
    gazetteer = result.gazetteer
    assert gazetteer.unit("N").parent == "B"
    assert "B2" not in gazetteer
    assert gazetteer.unit("B2x").parent == "N"
    assert gazetteer.unit("N").geometry.equals(box(3, 0, 4, 2))  # the overlap with B1 cut away
    assert gazetteer.check_tiling(TOLERANCE) == []
    assert sum(u.population for u in gazetteer.units_at(Level.COMMUNITY)) == 400


def test_street_outside_its_parent_is_clipped() -> None:
    document = collection(
        street("A1", box(0, 0, 1, 2), "A"),
        street("A2", box(1, 0, 3, 2), "A"),  # half of it in B
        street("B1", box(2, 0, 3, 2), "B"),
        street("B2", box(3, 0, 4, 2), "B"),
    )
    result = import_level(small_city(), document, Level.STREET)
    (clipped,) = result.notes("clipped")
    assert clipped.code == "A2" and clipped.number == pytest.approx(0.5)
    assert result.gazetteer.unit("A2").geometry.equals(box(1, 0, 2, 2))
    assert result.gazetteer.check_tiling(TOLERANCE) == []


def test_populations_from_the_file_rescale_the_levels_below() -> None:
    document = collection(district("A", box(0, 0, 2, 2), population=1001), district("B", box(2, 0, 4, 2)))
    gazetteer = import_level(small_city(), document, Level.DISTRICT).gazetteer
    assert gazetteer.unit("A").population == 1001
    assert gazetteer.unit("A1").population + gazetteer.unit("A2").population == 1001
    assert gazetteer.unit("A1x").population == gazetteer.unit("A1").population
    assert gazetteer.unit("B").population == 200
    assert gazetteer.city.population == 1201


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (feature({"name": "无码", "parent": "C"}, box(0, 0, 1, 1)), "no code"),
        (feature({"code": "S", "name": "街", "level": "street", "parent": "C"}, box(0, 0, 1, 1)), "wrong level"),
        (district("A", box(0, 0, 1, 1)), "already given by feature 0"),
        (district("Q", box(0, 0, 1, 1), population=-3), "non-negative integer"),
        (feature({"code": "P", "name": "点", "parent": "C"}, Point(1, 1)), "Point"),
        (district("A1", box(0, 0, 1, 1)), "already a street"),
        (feature({"code": "X", "parent": "C"}, box(0, 0, 1, 1)), "needs a name"),
        ({"type": "Feature", "properties": {"code": "G", "name": "无形"}, "geometry": None}, "no geometry"),
        ("not a feature", "not a GeoJSON Feature"),
    ],
)
def test_unplaceable_features_are_reported_with_their_index(bad: Any, reason: str) -> None:
    document = collection(district("A", box(0, 0, 2, 2)), district("B", box(2, 0, 4, 2)), bad)
    result = import_level(small_city(), document, Level.DISTRICT)
    (note,) = result.notes("unplaced")
    assert note.feature == 2
    assert reason in note.message
    assert {u.code for u in result.gazetteer.units_at(Level.DISTRICT)} == {"A", "B"}


def test_city_import_refits_the_districts() -> None:
    document = collection(feature({"code": "C", "name": "新城", "level": "city"}, box(0, 0, 3, 2)))
    result = import_level(small_city(), document, Level.CITY)
    gazetteer = result.gazetteer
    assert gazetteer.city.name_zh == "新城"
    assert gazetteer.unit("B").geometry.equals(box(2, 0, 3, 2))
    assert "B2" not in gazetteer and "B2x" not in gazetteer
    assert gazetteer.check_tiling(TOLERANCE) == []
    assert gazetteer.city.population == 400  # B2's people move to the street that now covers their place


def test_import_note_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown import note kind"):
        ImportNote("vanished", "A", "gone")  # type: ignore[arg-type]


def test_gap_goes_to_the_child_with_the_longest_shared_border() -> None:
    # a strip on top of A touching A1 along 0.2 and A2 along 1.0: A2 takes it although both touch it
    grown = shapely.union(box(0, 0, 2, 2), box(0.8, 2, 2, 2.5))
    result = import_level(small_city(), collection(district("A", grown), district("B", box(2, 0, 4, 2))), "district")
    gazetteer = result.gazetteer
    assert gazetteer.unit("A1").geometry.equals(box(0, 0, 1, 2))
    assert gazetteer.unit("A2").geometry.area == pytest.approx(2.0 + 0.6)
    assert gazetteer.locate(0.9, 2.25, Level.STREET).code == "A2"
    (filled,) = [n for n in result.notes("gap_filled") if n.code == "A2"]
    assert filled.number == pytest.approx(0.6 / 2.6)
    assert gazetteer.check_tiling(TOLERANCE) == []
