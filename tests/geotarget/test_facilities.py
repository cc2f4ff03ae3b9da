"""Facility registries: demo generators, targeting queries against brute force, file formats."""

from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
from shapely.geometry import Point, Polygon, box

from broadcast.errors import InvalidInput, NotFound
from geotarget import Level, build_demo_gazetteer
from geotarget.facilities import (
    CellRegistry,
    CellSite,
    FacilityRegistry,
    Loudspeaker,
    LoudspeakerRegistry,
    Screen,
    ScreenRegistry,
    Sector,
    StationKind,
    StationRegistry,
    generate_facilities,
    sector_wedge,
)

FUTIAN = "440304"
DAPENG = "440399"
# straddles the Shenzhen River: half Futian/Luohu, half Hong Kong
BORDER_BOX = box(114.03, 22.47, 114.12, 22.56)
# the South China Sea, 100 km off Dapeng
OUTSIDE_BOX = box(115.3, 21.5, 115.6, 21.8)


@pytest.fixture(scope="module")
def gazetteer():
    return build_demo_gazetteer()


@pytest.fixture(scope="module")
def registry(gazetteer) -> FacilityRegistry:
    return generate_facilities(gazetteer)


# ---------------------------------------------------------------------- generators


def test_generator_counts(registry, gazetteer):
    communities = gazetteer.units_at(Level.COMMUNITY)
    assert registry.counts() == {
        "cells": 6000,
        "sectors": 18000,
        "screens": 3000,
        "stations": 14,
        "loudspeakers": 2 * len(communities),
    }
    assert all(len(site.sectors) == 3 for site in registry.cells)
    kinds = [s.kind for s in registry.stations]
    assert kinds.count(StationKind.TV) == 6 and kinds.count(StationKind.RADIO) == 8
    per_community = {}
    for speaker in registry.loudspeakers:
        per_community[speaker.community] = per_community.get(speaker.community, 0) + 1
    assert per_community == {u.code: 2 for u in communities}


def test_sectors_are_120_degree_wedges_of_300m_to_3km(registry):
    sectors = registry.cells.sectors
    radii = np.array([s.radius_m for s in sectors])
    assert radii.min() >= 300 and radii.max() <= 3000
    assert all(s.beamwidth == 120.0 and 0 <= s.azimuth < 360 for s in sectors)
    site = registry.cells.entries[0]
    azimuths = sorted(s.azimuth for s in site.sectors)
    assert np.allclose(np.diff(azimuths), 120.0, atol=0.11)
    # the wedge's apex is the mast and its far vertices lie radius_m away (flat-earth metres)
    s = site.sectors[0]
    coords = np.array(s.coverage.exterior.coords)
    assert tuple(coords[0]) == (site.lon, site.lat)
    dx = (coords[1:-1, 0] - site.lon) * 111.320 * np.cos(np.radians(site.lat))
    dy = (coords[1:-1, 1] - site.lat) * 110.574
    assert np.allclose(np.hypot(dx, dy) * 1000, s.radius_m, rtol=1e-3)


def test_cells_follow_population_and_are_smaller_in_the_core(registry, gazetteer):
    districts = gazetteer.units_at(Level.DISTRICT)
    sites = {d.code: 0 for d in districts}
    radii: dict[str, list[float]] = {d.code: [] for d in districts}
    for site in registry.cells:
        district = gazetteer.locate(site.lon, site.lat, Level.DISTRICT)
        sites[district.code] += 1
        radii[district.code].append(site.sectors[0].radius_m)
    for d in districts:  # within 15 % of a population share (plus the one-per-community floor)
        expected = 6000 * d.population / gazetteer.city.population
        assert abs(sites[d.code] - expected) <= 0.15 * expected + 40, d.code
    assert np.mean(radii[FUTIAN]) < 600 < 1500 < np.mean(radii[DAPENG])


def test_point_entries_lie_in_their_community(registry, gazetteer):
    for entry in [*registry.screens, *registry.loudspeakers]:
        unit = gazetteer.unit(entry.community)
        assert unit.geometry.contains(Point(entry.lon, entry.lat)), entry.id
    assert registry.unknown_communities(gazetteer) == []


def test_station_coverage_contains_its_area(registry, gazetteer):
    for station in registry.stations:
        area = gazetteer.unit(station.area).geometry
        assert station.coverage.buffer(1e-9).covers(area), station.id
        assert (station.frequency_mhz is None) == (station.kind is StationKind.TV)


def test_same_seed_same_output_other_seed_other_output(gazetteer, registry):
    again = generate_facilities(gazetteer)
    assert again == registry
    assert json.dumps(again.cells.to_geojson()) == json.dumps(registry.cells.to_geojson())
    other = generate_facilities(gazetteer, seed=7)
    assert other.cells != registry.cells
    assert other.screens != registry.screens
    assert other.loudspeakers != registry.loudspeakers


def test_generation_is_fast(gazetteer):
    start = time.perf_counter()
    generate_facilities(gazetteer)
    assert time.perf_counter() - start < 3.0


# ---------------------------------------------------------------------- queries


def _areas(gazetteer) -> dict[str, Polygon]:
    return {"district": gazetteer.unit(FUTIAN).geometry, "border": BORDER_BOX, "outside": OUTSIDE_BOX}


@pytest.mark.parametrize("area", ["district", "border", "outside"])
def test_queries_equal_brute_force(registry, gazetteer, area):
    geometry = _areas(gazetteer)[area]
    brute = {
        "sectors": sorted(s.id for s in registry.cells.sectors if s.coverage.intersects(geometry)),
        "screens": sorted(e.id for e in registry.screens if geometry.intersects(Point(e.lon, e.lat))),
        "loudspeakers": sorted(e.id for e in registry.loudspeakers if geometry.intersects(Point(e.lon, e.lat))),
        "stations": sorted(s.id for s in registry.stations if s.coverage.intersects(geometry)),
    }
    got = {
        "sectors": [s.id for s in registry.sectors_intersecting(geometry)],
        "screens": [e.id for e in registry.screens_inside(geometry)],
        "loudspeakers": [e.id for e in registry.loudspeakers_inside(geometry)],
        "stations": [s.id for s in registry.stations_intersecting(geometry)],
    }
    assert got == brute
    if area == "outside":
        assert all(not ids for ids in got.values())
    else:
        assert all(len(ids) > 0 for ids in got.values()), {k: len(v) for k, v in got.items()}


def test_border_area_reaches_sectors_whose_mast_is_outside_it(registry):
    sites = {s.site for s in registry.sectors_intersecting(BORDER_BOX)}
    masts_inside = {s.id for s in registry.cells if BORDER_BOX.covers(Point(s.lon, s.lat))}
    assert masts_inside and sites > masts_inside  # coverage, not the mast's position, decides


def test_point_on_the_boundary_counts_as_inside(registry):
    screen = registry.screens.entries[10]
    speaker = registry.loudspeakers.entries[10]
    for entry, query in ((screen, registry.screens_inside), (speaker, registry.loudspeakers_inside)):
        x, y = entry.lon, entry.lat
        on_edge = box(x, y - 0.001, x + 0.001, y + 0.001)  # the point lies on the west edge
        on_vertex = Polygon([(x, y), (x + 0.001, y), (x, y + 0.001)])
        for polygon in (on_edge, on_vertex):
            assert not polygon.contains(Point(x, y))  # "contains" alone would miss it
            assert entry in query(polygon)
        assert entry not in query(box(x + 1e-6, y - 0.001, x + 0.001, y + 0.001))


def test_empty_area_hits_nothing(registry):
    assert registry.sectors_intersecting(Polygon()) == ()
    assert registry.screens_inside(None) == ()


def test_lookups(registry):
    site = registry.cells.entries[5]
    assert registry.cells.get(site.id) is site
    assert registry.cells.sector(site.sectors[1].id) is site.sectors[1]
    with pytest.raises(NotFound):
        registry.cells.sector("CS99999-1")
    with pytest.raises(NotFound) as err:
        registry.screens.get("nope")
    assert err.value.field == "id"
    with pytest.raises(InvalidInput) as err:
        ScreenRegistry([registry.screens.entries[0], registry.screens.entries[0]])
    assert err.value.field == "id"


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", ["cells", "screens", "stations", "loudspeakers"])
def test_geojson_round_trip(registry, kind):
    original = getattr(registry, kind)
    text = json.dumps(original.to_geojson(), ensure_ascii=False)
    back = type(original).from_geojson(json.loads(text))
    assert back == original
    assert back.entries == original.entries
    assert [s.id for s in getattr(back, "sectors", ())] == [s.id for s in getattr(original, "sectors", ())]


@pytest.mark.parametrize("kind", ["screens", "loudspeakers"])
def test_csv_round_trip(registry, kind, tmp_path):
    original = getattr(registry, kind)
    path = tmp_path / f"{kind}.csv"
    original.write_csv(path)
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(original.csv_columns)
    assert type(original).read_csv(path).entries == original.entries


def test_save_load_round_trip(registry, tmp_path):
    paths = registry.save(tmp_path / "facilities")
    assert sorted(p.name for p in paths.values()) == sorted(FacilityRegistry.FILES.values())
    loaded = FacilityRegistry.load(tmp_path / "facilities")
    assert loaded == registry
    probe = BORDER_BOX
    assert loaded.sectors_intersecting(probe) == registry.sectors_intersecting(probe)


def test_load_names_the_kind_and_feature(registry, tmp_path):
    small = FacilityRegistry(screens=registry.screens.entries[:5], loudspeakers=registry.loudspeakers.entries[:5])
    small.save(tmp_path)
    doc = json.loads((tmp_path / "screens.geojson").read_text(encoding="utf-8"))
    doc["features"][3]["properties"]["lines"] = 0
    (tmp_path / "screens.geojson").write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        FacilityRegistry.load(tmp_path)
    assert err.value.field == "screens.features[3].properties.lines"
    (tmp_path / "stations.geojson").unlink()
    with pytest.raises(InvalidInput) as err:
        FacilityRegistry.load(tmp_path)
    assert err.value.field == "screens.features[3].properties.lines"  # the first kind with a problem
    (tmp_path / "screens.geojson").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInput) as err:
        FacilityRegistry.load(tmp_path)
    assert err.value.field == "screens.file"


def test_load_of_missing_file_names_it(tmp_path):
    FacilityRegistry().save(tmp_path)
    assert FacilityRegistry.load(tmp_path).counts() == dict.fromkeys(
        ("cells", "sectors", "screens", "stations", "loudspeakers"), 0
    )
    (tmp_path / "stations.geojson").unlink()
    with pytest.raises(InvalidInput) as err:
        FacilityRegistry.load(tmp_path)
    assert err.value.field == "stations.file"


# ---------------------------------------------------------------------- bad input


def _small_docs(registry) -> dict[str, dict]:
    return {
        "cells": CellRegistry(registry.cells.entries[:3]).to_geojson(),
        "screens": ScreenRegistry(registry.screens.entries[:5]).to_geojson(),
        "stations": StationRegistry(registry.stations.entries[:5]).to_geojson(),
        "loudspeakers": LoudspeakerRegistry(registry.loudspeakers.entries[:5]).to_geojson(),
    }


def _set_prop(name, value):
    def change(feature):
        feature["properties"][name] = value

    return change


def _drop_prop(name):
    def change(feature):
        del feature["properties"][name]

    return change


def _set_geometry(geometry):
    def change(feature):
        feature["geometry"] = geometry

    return change


def _shift_lon(delta):
    def change(feature):
        geometry = feature["geometry"]
        if geometry["type"] == "Point":
            geometry["coordinates"][0] += delta
        else:
            geometry["coordinates"][0][1][0] += delta

    return change


BOWTIE = {"type": "Polygon", "coordinates": [[[114, 22.5], [114.1, 22.6], [114.1, 22.5], [114, 22.6], [114, 22.5]]]}
POINT = {"type": "Point", "coordinates": [114.0, 22.5]}

BAD_FEATURES = [
    # (kind, change to feature 3, field)
    ("cells", _set_prop("azimuth", 400), "features[3].properties.azimuth"),
    ("cells", _set_prop("azimuth", "north"), "features[3].properties.azimuth"),
    ("cells", _drop_prop("azimuth"), "features[3].properties.azimuth"),
    ("cells", _set_prop("radius_m", -5), "features[3].properties.radius_m"),
    ("cells", _set_prop("sector", 0), "features[3].properties.sector"),
    ("cells", _set_prop("id", "CS99999-1"), "features[3].properties.id"),
    # feature 3 is the first sector of site 2, so the disagreement shows at its second sector
    ("cells", _set_prop("site_lat", 22.0), "features[4].properties.site_lat"),
    ("cells", _set_prop("site_lon", 200.0), "features[3].properties.site_lon"),
    ("cells", _set_geometry(POINT), "features[3].geometry.type"),
    ("cells", _set_geometry(BOWTIE), "features[3].geometry.coordinates"),
    ("cells", _shift_lon(100), "features[3].geometry.coordinates"),
    ("screens", _set_geometry(BOWTIE), "features[3].geometry.type"),
    ("screens", _set_geometry(None), "features[3].geometry"),
    ("screens", _shift_lon(-300), "features[3].geometry.coordinates"),
    ("screens", _set_geometry({"type": "Point", "coordinates": [114.0, 95.0]}), "features[3].geometry.coordinates"),
    ("screens", _set_geometry({"type": "Point", "coordinates": ["x", 22.0]}), "features[3].geometry.coordinates"),
    ("screens", _set_prop("lines", 2.5), "features[3].properties.lines"),
    ("screens", _set_prop("size_inches", True), "features[3].properties.size_inches"),
    ("screens", _drop_prop("community"), "features[3].properties.community"),
    ("screens", _set_prop("id", "SC00001"), "features[3].properties.id"),
    ("stations", _set_prop("kind", "satellite"), "features[3].properties.kind"),
    ("stations", _set_prop("channel", None), "features[3].properties.channel"),  # features 0-4 are FM01..FM05
    ("stations", _set_prop("frequency_mhz", None), "features[3].properties.frequency_mhz"),
    ("stations", _set_prop("frequency_mhz", 2000), "features[3].properties.frequency_mhz"),
    ("stations", _drop_prop("name"), "features[3].properties.name"),
    ("stations", _set_geometry(POINT), "features[3].geometry.type"),
    ("loudspeakers", _set_prop("id", ""), "features[3].properties.id"),
    ("loudspeakers", _set_prop("community", None), "features[3].properties.community"),
    ("loudspeakers", lambda f: f.update(type="Thing"), "features[3].type"),
    ("loudspeakers", lambda f: f.update(properties=[]), "features[3].properties"),
]


@pytest.mark.parametrize(("kind", "change", "field"), BAD_FEATURES, ids=[f"{k}-{f}" for k, _, f in BAD_FEATURES])
def test_bad_geojson_names_the_field(registry, kind, change, field):
    docs = _small_docs(registry)
    registry_type = type(getattr(registry, kind))
    registry_type.from_geojson(docs[kind])  # untouched, it loads
    doc = copy.deepcopy(docs[kind])
    if kind == "stations" and field.endswith("channel"):
        doc["features"][3]["properties"].update(kind="tv", frequency_mhz=None)
    change(doc["features"][3])
    with pytest.raises(InvalidInput) as err:
        registry_type.from_geojson(doc)
    assert err.value.field == field, err.value.message


@pytest.mark.parametrize(
    ("document", "field"),
    [([], "type"), ({"type": "Feature"}, "type"), ({"type": "FeatureCollection", "features": {}}, "features")],
)
def test_bad_collection_names_the_field(document, field):
    with pytest.raises(InvalidInput) as err:
        ScreenRegistry.from_geojson(document)
    assert err.value.field == field


SCREEN_HEADER = "id,lon,lat,size_inches,lines,chars_per_line,community"
GOOD_ROW = "SC{n},114.05,22.54,55.0,4,20,440304001001"

BAD_ROWS = [
    ("SC9,abc,22.54,55.0,4,20,440304001001", "line 7: lon"),
    ("SC9,114.05,95,55.0,4,20,440304001001", "line 7: lat"),
    ("SC9,114.05,nan,55.0,4,20,440304001001", "line 7: lat"),
    ("SC9,214.05,22.54,55.0,4,20,440304001001", "line 7: lon"),
    ("SC9,114.05,22.54,55.0,four,20,440304001001", "line 7: lines"),
    ("SC9,114.05,22.54,-1,4,20,440304001001", "line 7: size_inches"),
    ("SC9,114.05,22.54,55.0,4,0,440304001001", "line 7: chars_per_line"),
    ("SC9,114.05,22.54,55.0,4,20,", "line 7: community"),
    ("SC9,114.05,22.54", "line 7: size_inches"),
    ("SC1,114.05,22.54,55.0,4,20,440304001001", "line 7: id"),
]


@pytest.mark.parametrize(("row", "field"), BAD_ROWS)
def test_bad_csv_row_names_line_and_column(row, field):
    good = [GOOD_ROW.format(n=n) for n in range(1, 6)]
    ScreenRegistry.from_csv("\n".join([SCREEN_HEADER, *good]) + "\n")  # untouched, it loads
    with pytest.raises(InvalidInput) as err:
        ScreenRegistry.from_csv("\n".join([SCREEN_HEADER, *good, row]) + "\n")
    assert err.value.field == field, err.value.message


def test_bad_csv_header_names_the_column():
    with pytest.raises(InvalidInput) as err:
        LoudspeakerRegistry.from_csv("id,lon,lat\nLS1,114,22.5\n")
    assert err.value.field == "line 1: community"
    ok = LoudspeakerRegistry.from_csv("id,lat,lon,community,note\nLS1,22.5,114,440304001001,by the gate\n")
    assert ok.entries == (Loudspeaker("LS1", 114.0, 22.5, "440304001001"),)


def test_entries_check_themselves():
    wedge = sector_wedge(114.0, 22.5, 0.0, 500.0)[0]
    with pytest.raises(InvalidInput) as err:
        Sector("A-2", "A", 1, 0.0, 120.0, 500.0, wedge)
    assert err.value.field == "id"
    with pytest.raises(InvalidInput) as err:
        CellSite("B", 114.0, 22.5, (Sector("A-1", "A", 1, 0.0, 120.0, 500.0, wedge),))
    assert err.value.field == "site"
    with pytest.raises(InvalidInput) as err:
        Screen("S", 114.0, -91.0, 55.0, 4, 20, "c")
    assert err.value.field == "lat"
