"""The built-in demo gazetteer, checked against the facts in ../shared/data/README.md.

The README is parsed here (not copied), so the expectations are the README's own figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import Point, box

from broadcast.errors import NotFound
from geotarget import Gazetteer, Level
from geotarget.demo import build_demo_gazetteer, generate_demo_gazetteer

REPO_ROOT = Path(__file__).resolve().parents[2]
DAPENG_SYNTHETIC_CODE = "440399"
FUTIAN_CIVIC_CENTRE = (114.0579, 22.5431)


@dataclass(frozen=True)
class ReadmeDistrict:
    name_zh: str  # as in the table, e.g. 福田区
    adcode: str | None
    streets: tuple[str, ...]
    census_millions: float
    centre: tuple[float, float]


@pytest.fixture(scope="module")
def readme(shared_data: Path) -> dict[str, ReadmeDistrict]:
    text = (shared_data / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\S+) [^|]+\| (\d{6}|\(none\)) \| ([^|]+) \|$", text, flags=re.MULTILINE)
    census = dict(re.findall(r"([\u4e00-\u9fff]{2})\s+(\d\.\d\d)\b", text))
    centres = {
        short: (float(lon), float(lat))
        for short, lon, lat in re.findall(r"([\u4e00-\u9fff]{2})(?:\s+\([^)]*\))?\s+(1\d\d\.\d+),(\d\d\.\d+)", text)
    }
    districts = {}
    for name, adcode, streets in rows:
        short = name[:2]
        districts[name] = ReadmeDistrict(
            name_zh=name,
            adcode=None if adcode == "(none)" else adcode,
            streets=tuple(s.strip() for s in streets.split(",")),
            census_millions=float(census[short]),
            centre=centres[short],
        )
    # If the README's layout changes, fail loudly rather than test nothing.
    assert len(census) == 10
    assert len(centres) == 10
    assert len(districts) == 10
    assert sum(len(d.streets) for d in districts.values()) == 74
    return districts


@pytest.fixture(scope="module")
def demo() -> Gazetteer:
    return build_demo_gazetteer()


def _district(demo: Gazetteer, name_zh: str):
    (unit,) = [u for u in demo.units_at(Level.DISTRICT) if u.name_zh == name_zh]
    return unit


def test_counts_per_level(demo: Gazetteer) -> None:
    assert len(demo.units_at(Level.CITY)) == 1
    assert len(demo.units_at(Level.DISTRICT)) == 10
    assert len(demo.units_at(Level.STREET)) == 74
    assert 780 <= len(demo.units_at(Level.COMMUNITY)) <= 800
    assert demo.city.code == "440300"
    assert demo.city.name_zh == "深圳市"


def test_districts_and_streets_follow_the_readme(demo: Gazetteer, readme: dict[str, ReadmeDistrict]) -> None:
    for name, fact in readme.items():
        district = _district(demo, name)
        assert district.code == (fact.adcode or DAPENG_SYNTHETIC_CODE)
        assert district.parent == "440300"
        streets = demo.children(district.code)
        assert sorted(s.name_zh.removesuffix("街道") for s in streets) == sorted(fact.streets)
        for street in streets:
            assert re.fullmatch(rf"{district.code}\d{{3}}", street.code)
            assert street.name_en and street.name_en.isascii()
    assert {u.code for u in demo.units_at(Level.DISTRICT)} == {
        d.adcode or DAPENG_SYNTHETIC_CODE for d in readme.values()
    }


def test_community_codes_and_names(demo: Gazetteer) -> None:
    for street in demo.units_at(Level.STREET):
        communities = demo.children(street.code)
        assert len(communities) >= 3
        short = street.name_zh.removesuffix("街道")
        for n, community in enumerate(communities, start=1):
            assert community.code == f"{street.code}{n:03d}"
            assert community.name_zh == f"{short}第{n}社区"
            assert community.name_en == f"{street.name_en} Community {n}"


def test_parents_are_one_level_up(demo: Gazetteer) -> None:
    for unit in demo:
        ancestors = demo.ancestors(unit.code)
        assert [a.level for a in ancestors] == [
            level for level in reversed(list(Level)) if level.depth < unit.level.depth
        ]


def test_every_level_tiles_its_parent(demo: Gazetteer) -> None:
    assert demo.check_tiling(1e-6) == []
    # the check can fail on the demo data too: drop one community and its street shows a gap
    victim = demo.units_at(Level.COMMUNITY)[100]
    broken = Gazetteer(u for u in demo if u.code != victim.code)
    problems = broken.check_tiling(1e-6)
    assert [(p.code, p.kind) for p in problems] == [(victim.parent, "gap")]


def test_geometries_are_valid_and_substantial(demo: Gazetteer) -> None:
    geoms = np.array([u.geometry for u in demo], dtype=object)
    assert shapely.is_valid(geoms).all()
    communities = np.array([u.geometry for u in demo.units_at(Level.COMMUNITY)], dtype=object)
    areas = shapely.area(communities)
    # no sliver communities: the smallest is at least 1% of the largest
    assert areas.min() > 0.01 * areas.max()


def test_whole_city_covered(demo: Gazetteer) -> None:
    city = demo.city.geometry
    minx, miny, maxx, maxy = city.bounds
    assert 113.75 <= minx < maxx <= 114.63
    assert 22.44 <= miny < maxy <= 22.87
    for level in (Level.DISTRICT, Level.STREET, Level.COMMUNITY):
        union = shapely.union_all([u.geometry for u in demo.units_at(level)])
        assert city.symmetric_difference(union).area / city.area < 1e-6, level
    # every point of a grid over the city falls in exactly one community (or on a border)
    xs, ys = np.meshgrid(np.linspace(minx, maxx, 60), np.linspace(miny, maxy, 40))
    inside = shapely.contains_xy(city, xs.ravel(), ys.ravel())
    hits = np.zeros(inside.sum(), dtype=int)
    for community in demo.units_at(Level.COMMUNITY):
        hits += shapely.intersects_xy(community.geometry, xs.ravel()[inside], ys.ravel()[inside])
    assert (hits >= 1).all()


def test_population(demo: Gazetteer, readme: dict[str, ReadmeDistrict]) -> None:
    total = demo.city.population
    assert abs(total - 17_800_000) <= 0.01 * 17_800_000
    for unit in demo:
        children = demo.children(unit.code)
        if children:
            assert sum(c.population for c in children) == unit.population, unit.code
        assert unit.population > 0
    readme_total = sum(d.census_millions for d in readme.values())
    for name, fact in readme.items():
        share = _district(demo, name).population / total
        expected = fact.census_millions / readme_total
        assert share == pytest.approx(expected, rel=0.01), name


def _digest(gazetteer: Gazetteer) -> str:
    h = hashlib.sha256()
    for unit in gazetteer:
        h.update(f"{unit.code}|{unit.level}|{unit.name_zh}|{unit.parent}|{unit.population}|".encode())
        h.update(shapely.to_wkb(unit.geometry))
    return h.hexdigest()


def test_deterministic_within_a_process() -> None:
    first, second = generate_demo_gazetteer(), generate_demo_gazetteer()
    assert [u.code for u in first] == [u.code for u in second]
    assert [shapely.to_wkb(u.geometry) for u in first] == [shapely.to_wkb(u.geometry) for u in second]
    assert _digest(first) == _digest(second)


def test_deterministic_across_runs(demo: Gazetteer) -> None:
    script = (
        "from geotarget.demo import generate_demo_gazetteer\n"
        "from tests.geotarget.test_demo import _digest\n"
        "print(_digest(generate_demo_gazetteer()))\n"
    )
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
        )
        assert result.stdout.strip() == _digest(demo)


def test_build_is_fast_and_cached() -> None:
    start = time.perf_counter()
    generate_demo_gazetteer()
    assert time.perf_counter() - start < 5.0
    assert build_demo_gazetteer() is build_demo_gazetteer()


def test_futian_civic_centre(demo: Gazetteer) -> None:
    lon, lat = FUTIAN_CIVIC_CENTRE
    point = Point(lon, lat)
    district = demo.locate(lon, lat, Level.DISTRICT)
    assert district is not None
    assert (district.code, district.name_zh) == ("440304", "福田区")
    streets = [u for u in demo.units_at(Level.STREET) if u.geometry.contains(point)]
    communities = [u for u in demo.units_at(Level.COMMUNITY) if u.geometry.contains(point)]
    assert len(streets) == 1
    assert len(communities) == 1
    assert streets[0].parent == "440304"
    assert communities[0].parent == streets[0].code
    assert demo.locate(lon, lat, Level.COMMUNITY) == communities[0]
    assert [u.code for u, _ in demo.units_hit(point, Level.STREET)] == [streets[0].code]


@pytest.mark.parametrize("offset", [(0, 0), (0.005, 0), (-0.005, 0), (0, 0.005), (0, -0.005)])
def test_points_near_district_centres(
    demo: Gazetteer, readme: dict[str, ReadmeDistrict], offset: tuple[float, float]
) -> None:
    for name, fact in readme.items():
        lon, lat = fact.centre[0] + offset[0], fact.centre[1] + offset[1]
        found = demo.locate(lon, lat, Level.DISTRICT)
        assert found is not None, name
        assert found.name_zh == name


def test_units_hit_over_futian(demo: Gazetteer) -> None:
    area = box(114.03, 22.53, 114.07, 22.555)
    districts = dict((u.code, f) for u, f in demo.units_hit(area, Level.DISTRICT))
    assert districts["440304"] > 0
    assert all(0.0 <= f <= 1.0 for f in districts.values())
    streets = demo.units_hit(area, Level.STREET)
    assert streets and all(0.0 <= f <= 1.0 for _, f in streets)
    assert any(u.parent == "440304" for u, _ in streets)
    # the fractions agree with a direct computation
    for unit, fraction in streets:
        assert fraction == pytest.approx(unit.geometry.intersection(area).area / unit.geometry.area, abs=1e-12)
    # a polygon covering the whole city covers every community entirely
    everything = demo.units_hit(demo.city.geometry.buffer(0.01), Level.COMMUNITY)
    assert len(everything) == len(demo.units_at(Level.COMMUNITY))
    assert all(f == pytest.approx(1.0) for _, f in everything)


def test_geojson_round_trip(demo: Gazetteer, tmp_path: Path) -> None:
    document = demo.to_geojson()
    assert document["type"] == "FeatureCollection"
    assert len(document["features"]) == len(demo)
    back = Gazetteer.from_geojson(json.loads(json.dumps(document, ensure_ascii=False)))
    assert list(back) == list(demo)
    assert _digest(back) == _digest(demo)
    path = tmp_path / "demo.geojson"
    demo.write_geojson(path)
    assert _digest(Gazetteer.read_geojson(path)) == _digest(demo)


def test_unknown_code(demo: Gazetteer) -> None:
    with pytest.raises(NotFound) as caught:
        demo.unit("440312")
    assert caught.value.field == "code"
    with pytest.raises(NotFound):
        demo.children("999999")
