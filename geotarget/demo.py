"""The built-in demo gazetteer: a generated, Shenzhen-shaped city at four levels.

It is *modelled on* Shenzhen, not surveyed: the real district names, adcodes, street
names and district populations (2020 census) on generated boundaries.

- The city is an approximate outline of Shenzhen (40 vertices drawn from the coastline:
  the Pearl River estuary on the west, Shenzhen Bay and the Shenzhen River along the
  Hong Kong border on the south, Mirs Bay and the Dapeng peninsula on the east).
- The 10 district-level units are the Voronoi cells of their real centres, clipped to
  the outline, so every real district centre lies in its own district.
- Each district is split into its real streets (街道), and each street into communities
  (社区, 790 in all), by Voronoi cells of deterministic seed points (an R2 low-discrepancy
  sequence, relaxed by a few Lloyd iterations) clipped to the parent. Children tile their
  parent exactly up to floating-point rounding.
- Populations total 17.8 million, shared among districts in proportion to the census
  figures, then among streets and communities with fixed weights; every split is an
  integer largest-remainder split, so children sum exactly to their parent.

Nothing here is random: the same shapely/GEOS build gives byte-identical geometry on
every run and machine.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import MultiPoint, Polygon

from geotarget.gazetteer import Gazetteer, Level, Unit, polygonal

__all__ = [
    "CITY_CODE",
    "DISTRICTS",
    "SHENZHEN_OUTLINE",
    "TOTAL_COMMUNITIES",
    "TOTAL_POPULATION",
    "DistrictSpec",
    "build_demo_gazetteer",
    "generate_demo_gazetteer",
]

CITY_CODE = "440300"
TOTAL_POPULATION = 17_800_000
TOTAL_COMMUNITIES = 790
MIN_COMMUNITIES_PER_STREET = 3
LLOYD_ITERATIONS = 4

# Approximate outline of Shenzhen, (lon, lat), counter-clockwise from Shekou (40 vertices).
SHENZHEN_OUTLINE: tuple[tuple[float, float], ...] = (
    (113.880, 22.450),  # Shekou, tip of the Nanshan peninsula
    (113.830, 22.585),  # Qianhai / Xixiang, Pearl River estuary
    (113.800, 22.620),  # Bao'an airport
    (113.770, 22.670),  # Fuhai
    (113.755, 22.700),  # Shajing
    (113.760, 22.735),
    (113.820, 22.790),  # Songgang, border with Dongguan
    (113.850, 22.835),
    (113.880, 22.852),  # Gongming, northernmost point
    (113.970, 22.813),
    (114.000, 22.767),  # Guanlan
    (114.060, 22.755),
    (114.120, 22.719),
    (114.150, 22.699),  # Pinghu
    (114.170, 22.660),  # Dongguan's notch between Pinghu and Henggang
    (114.195, 22.665),
    (114.210, 22.735),
    (114.240, 22.792),  # Henggang / Longgang, border with Huizhou
    (114.300, 22.802),
    (114.330, 22.808),
    (114.360, 22.764),  # Kengzi
    (114.420, 22.760),
    (114.450, 22.666),  # Kuichong
    (114.600, 22.655),  # Daya Bay shore
    (114.590, 22.600),
    (114.625, 22.530),  # east coast of the Dapeng peninsula
    (114.600, 22.480),
    (114.510, 22.440),  # Nan'ao, southern tip
    (114.480, 22.455),
    (114.450, 22.553),  # Mirs Bay shore
    (114.420, 22.594),
    (114.330, 22.589),  # Xiaomeisha
    (114.300, 22.567),  # Dameisha
    (114.270, 22.561),  # Yantian port
    (114.180, 22.557),  # Sha Tau Kok to the Shenzhen River, Hong Kong border
    (114.150, 22.539),
    (114.090, 22.529),  # Luohu port
    (114.060, 22.501),  # Huanggang, mouth of the Shenzhen River
    (114.000, 22.510),  # Shenzhen Bay
    (113.940, 22.472),
)


@dataclass(frozen=True, slots=True)
class DistrictSpec:
    code: str
    name_zh: str
    name_en: str
    census_millions: float  # 2020 census resident population, millions
    centre: tuple[float, float]  # (lon, lat)
    streets: tuple[tuple[str, str], ...]  # (name_zh without 街道, pinyin)


DISTRICTS: tuple[DistrictSpec, ...] = (
    DistrictSpec(
        "440303", "罗湖区", "Luohu District", 1.14, (114.15, 22.57),
        (("桂园", "Guiyuan"), ("黄贝", "Huangbei"), ("东门", "Dongmen"), ("翠竹", "Cuizhu"), ("南湖", "Nanhu"),
         ("笋岗", "Sungang"), ("东湖", "Donghu"), ("莲塘", "Liantang"), ("东晓", "Dongxiao"),
         ("清水河", "Qingshuihe")),
    ),
    DistrictSpec(
        "440304", "福田区", "Futian District", 1.55, (114.05, 22.54),
        (("园岭", "Yuanling"), ("南园", "Nanyuan"), ("福田", "Futian"), ("沙头", "Shatou"), ("梅林", "Meilin"),
         ("华富", "Huafu"), ("香蜜湖", "Xiangmihu"), ("莲花", "Lianhua"), ("华强北", "Huaqiangbei"),
         ("福保", "Fubao")),
    ),
    DistrictSpec(
        "440305", "南山区", "Nanshan District", 1.80, (113.94, 22.55),
        (("南头", "Nantou"), ("南山", "Nanshan"), ("沙河", "Shahe"), ("蛇口", "Shekou"), ("招商", "Zhaoshang"),
         ("粤海", "Yuehai"), ("桃源", "Taoyuan"), ("西丽", "Xili")),
    ),
    DistrictSpec(
        "440306", "宝安区", "Bao'an District", 4.48, (113.86, 22.68),
        (("新安", "Xin'an"), ("西乡", "Xixiang"), ("航城", "Hangcheng"), ("福永", "Fuyong"), ("福海", "Fuhai"),
         ("沙井", "Shajing"), ("新桥", "Xinqiao"), ("松岗", "Songgang"), ("燕罗", "Yanluo"), ("石岩", "Shiyan")),
    ),
    DistrictSpec(
        "440307", "龙岗区", "Longgang District", 3.98, (114.21, 22.69),
        (("平湖", "Pinghu"), ("坂田", "Bantian"), ("布吉", "Buji"), ("南湾", "Nanwan"), ("横岗", "Henggang"),
         ("龙城", "Longcheng"), ("龙岗", "Longgang"), ("坪地", "Pingdi"), ("吉华", "Jihua"), ("宝龙", "Baolong"),
         ("园山", "Yuanshan")),
    ),
    DistrictSpec(
        "440308", "盐田区", "Yantian District", 0.21, (114.27, 22.59),
        (("梅沙", "Meisha"), ("盐田", "Yantian"), ("沙头角", "Shatoujiao"), ("海山", "Haishan")),
    ),
    DistrictSpec(
        "440309", "龙华区", "Longhua District", 2.53, (114.04, 22.68),
        (("观湖", "Guanhu"), ("民治", "Minzhi"), ("龙华", "Longhua"), ("大浪", "Dalang"), ("福城", "Fucheng"),
         ("观澜", "Guanlan")),
    ),
    DistrictSpec(
        "440310", "坪山区", "Pingshan District", 0.55, (114.36, 22.69),
        (("坪山", "Pingshan"), ("马峦", "Maluan"), ("碧岭", "Biling"), ("石井", "Shijing"), ("坑梓", "Kengzi"),
         ("龙田", "Longtian")),
    ),
    DistrictSpec(
        "440311", "光明区", "Guangming District", 1.10, (113.93, 22.76),
        (("光明", "Guangming"), ("公明", "Gongming"), ("新湖", "Xinhu"), ("凤凰", "Fenghuang"), ("玉塘", "Yutang"),
         ("马田", "Matian")),
    ),
    # Dapeng New District is a functional area, not a county-level division, so it has no
    # national adcode. 440399 is a SYNTHETIC code of this demo (the 99 slot is unused in
    # Shenzhen); an import of official boundaries will not contain it.
    DistrictSpec(
        "440399", "大鹏新区", "Dapeng New District", 0.16, (114.48, 22.59),
        (("葵涌", "Kuichong"), ("大鹏", "Dapeng"), ("南澳", "Nan'ao")),
    ),
)  # fmt: skip


# ---------------------------------------------------------------------- building blocks


def _frac(x: float) -> float:
    return x - math.floor(x)


def _weight(i: int, salt: int) -> float:
    """A fixed weight in [0.6, 1.4) from a golden-ratio sequence: varied, never random."""
    return 0.6 + 0.8 * _frac(0.5 + (i + 7 * salt) * 0.6180339887498949)


def split_integer(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder, ties by position)."""
    weight_sum = math.fsum(weights)
    exact = [total * w / weight_sum for w in weights]
    shares = [math.floor(x) for x in exact]
    left = total - sum(shares)
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:left]:
        shares[i] += 1
    return shares


def _r2_points(polygon: Polygon, count: int, offset: int) -> np.ndarray:
    """The first ``count`` points of an R2 low-discrepancy sequence over the bounding box that fall inside."""
    minx, miny, maxx, maxy = polygon.bounds
    g = 1.32471795724474602596  # plastic number
    a1, a2 = 1.0 / g, 1.0 / (g * g)
    shapely.prepare(polygon)
    found: list[np.ndarray] = []
    n_found = 0
    start = offset
    batch = max(64, count * 8)
    while n_found < count:
        n = np.arange(start, start + batch, dtype=np.float64)
        u = np.mod(0.5 + a1 * n, 1.0)
        v = np.mod(0.5 + a2 * n, 1.0)
        x = minx + u * (maxx - minx)
        y = miny + v * (maxy - miny)
        inside = shapely.contains_xy(polygon, x, y)
        pts = np.column_stack([x[inside], y[inside]])
        found.append(pts)
        n_found += len(pts)
        start += batch
        if start - offset > 1_000_000:
            raise RuntimeError("could not place seed points inside a polygon")
    return np.concatenate(found)[:count]


def _voronoi_cells(seeds: np.ndarray, region: Polygon) -> list:
    """Voronoi cells of ``seeds`` clipped to ``region``, in seed order."""
    if len(seeds) == 1:
        return [region]
    minx, miny, maxx, maxy = region.bounds
    pad = max(maxx - minx, maxy - miny)
    frame = shapely.box(minx - pad, miny - pad, maxx + pad, maxy + pad)
    diagram = shapely.voronoi_polygons(MultiPoint(seeds), extend_to=frame, ordered=True)
    cells = np.array(shapely.get_parts(diagram), dtype=object)
    if len(cells) != len(seeds):
        raise RuntimeError("Voronoi diagram lost a seed")
    return [polygonal(cell) for cell in shapely.intersection(cells, region)]


def _relaxed_cells(region: Polygon, count: int, offset: int) -> tuple[np.ndarray, list]:
    """``count`` cells tiling ``region``, evened out by Lloyd relaxation."""
    seeds = _r2_points(region, count, offset)
    cells = _voronoi_cells(seeds, region)
    for _ in range(LLOYD_ITERATIONS):
        cell_array = np.array(cells, dtype=object)
        centroids = shapely.centroid(cell_array)
        inside = shapely.contains(cell_array, centroids)
        # a centroid outside its (non-convex) cell is replaced by a point surely inside
        points = np.where(inside, centroids, shapely.point_on_surface(cell_array))
        seeds = shapely.get_coordinates(points)
        cells = _voronoi_cells(seeds, region)
    return seeds, cells


def _order_north_west(seeds: np.ndarray) -> list[int]:
    """Cell indexes ordered north to south, then west to east (how names are handed out)."""
    return sorted(range(len(seeds)), key=lambda i: (-round(float(seeds[i][1]), 9), round(float(seeds[i][0]), 9)))


# ---------------------------------------------------------------------- the gazetteer


def generate_demo_gazetteer() -> Gazetteer:
    """Generate the demo gazetteer afresh (use :func:`build_demo_gazetteer` for the cached one)."""
    outline = Polygon(SHENZHEN_OUTLINE)
    if not outline.is_valid:  # pragma: no cover - guards edits to the vertex list
        raise RuntimeError("the Shenzhen outline polygon is invalid")

    units: list[Unit] = [
        Unit(CITY_CODE, Level.CITY, "深圳市", "Shenzhen", None, TOTAL_POPULATION, outline),
    ]
    district_pops = split_integer(TOTAL_POPULATION, [d.census_millions for d in DISTRICTS])
    centres = np.array([d.centre for d in DISTRICTS], dtype=np.float64)
    district_cells = _voronoi_cells(centres, outline)

    all_streets: list[tuple[Unit, int]] = []  # (street, district index) in code order
    street_weights: list[float] = []
    for d_index, (spec, cell, pop) in enumerate(zip(DISTRICTS, district_cells, district_pops, strict=True)):
        units.append(Unit(spec.code, Level.DISTRICT, spec.name_zh, spec.name_en, CITY_CODE, pop, cell))
        weights = [_weight(i, d_index) for i in range(len(spec.streets))]
        street_pops = split_integer(pop, weights)
        seeds, cells = _relaxed_cells(_largest_part(cell), len(spec.streets), offset=101 * d_index)
        cells = _absorb_leftover(cell, cells)
        for s_index, cell_index in enumerate(_order_north_west(seeds)):
            name_zh, name_en = spec.streets[s_index]
            street = Unit(
                code=f"{spec.code}{s_index + 1:03d}",
                level=Level.STREET,
                name_zh=f"{name_zh}街道",
                name_en=name_en,
                parent=spec.code,
                population=street_pops[s_index],
                geometry=cells[cell_index],
            )
            units.append(street)
            all_streets.append((street, d_index))
            street_weights.append(float(street.population))

    # Communities: at least three per street, the rest shared by population.
    extra = split_integer(TOTAL_COMMUNITIES - MIN_COMMUNITIES_PER_STREET * len(all_streets), street_weights)
    for s_global, ((street, _), n_extra) in enumerate(zip(all_streets, extra, strict=True)):
        count = MIN_COMMUNITIES_PER_STREET + n_extra
        pops = split_integer(street.population, [_weight(i, s_global + 11) for i in range(count)])
        seeds, cells = _relaxed_cells(_largest_part(street.geometry), count, offset=37 * s_global)
        cells = _absorb_leftover(street.geometry, cells)
        short = street.name_zh.removesuffix("街道")
        for c_index, cell_index in enumerate(_order_north_west(seeds)):
            units.append(
                Unit(
                    code=f"{street.code}{c_index + 1:03d}",
                    level=Level.COMMUNITY,
                    name_zh=f"{short}第{c_index + 1}社区",
                    name_en=f"{street.name_en} Community {c_index + 1}",
                    parent=street.code,
                    population=pops[c_index],
                    geometry=cells[cell_index],
                )
            )
    return Gazetteer(units)


@functools.cache
def build_demo_gazetteer() -> Gazetteer:
    """The demo gazetteer, generated once per process."""
    return generate_demo_gazetteer()


def _largest_part(geometry) -> Polygon:
    """Seeds are placed in the largest part of a multi-part unit; the other parts are attached after."""
    if isinstance(geometry, Polygon):
        return geometry
    return max(geometry.geoms, key=lambda part: part.area)


def _absorb_leftover(region, cells: list) -> list:
    """Give any part of ``region`` outside the seeded part (islands of a multi-part unit) to the nearest cell."""
    if isinstance(region, Polygon):
        return cells
    main = _largest_part(region)
    cells = list(cells)
    for part in region.geoms:
        if part is main or part.equals(main):
            continue
        nearest = min(range(len(cells)), key=lambda i: (cells[i].distance(part), i))
        cells[nearest] = polygonal(shapely.union(cells[nearest], part))
    return cells
