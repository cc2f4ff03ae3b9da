"""The four-level gazetteer: city -> district -> street (街道) -> community (社区).

A :class:`Gazetteer` is an immutable set of administrative :class:`Unit` s, each with a
polygonal geometry in lon/lat (WGS84, shapely's x/y order) and a resident population.
Every unit but the city names its parent one level up; the children of a unit are meant
to tile it, which :meth:`Gazetteer.check_tiling` verifies.

Spatial lookups use one shapely 2 ``STRtree`` per level, built once when the gazetteer
is made; :meth:`Gazetteer.units_hit` answers "which units does this area touch, and how
much of each" with array operations rather than a Python loop over units.

Areas and fractions are computed in degrees squared. Over a city the size of Shenzhen
(0.4 degrees of latitude) the ratio of two areas is the same in degrees and in metres to
well under 1%, which is all the fractions are used for.

GeoJSON (RFC 7946 FeatureCollection) is the interchange format: one feature per unit,
properties ``code``, ``level``, ``name``, ``name_en``, ``parent``, ``population``.
Import errors raise :class:`~broadcast.errors.InvalidInput` naming the offending field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from broadcast.errors import InvalidInput, NotFound

__all__ = [
    "Gazetteer",
    "Level",
    "TilingProblem",
    "Unit",
    "polygonal",
]


class Level(StrEnum):
    """Administrative level, from the top down."""

    CITY = "city"
    DISTRICT = "district"
    STREET = "street"
    COMMUNITY = "community"

    @property
    def depth(self) -> int:
        """0 for the city, 3 for a community."""
        return _LEVELS.index(self)

    @property
    def parent(self) -> Level | None:
        """The level directly above, or None for the city."""
        return _LEVELS[self.depth - 1] if self.depth > 0 else None

    @property
    def child(self) -> Level | None:
        """The level directly below, or None for a community."""
        return _LEVELS[self.depth + 1] if self.depth + 1 < len(_LEVELS) else None


_LEVELS: tuple[Level, ...] = (Level.CITY, Level.DISTRICT, Level.STREET, Level.COMMUNITY)


@dataclass(frozen=True, slots=True)
class Unit:
    """One administrative unit. ``parent`` is the parent's code (None for the city)."""

    code: str
    level: Level
    name_zh: str
    name_en: str
    parent: str | None
    population: int
    geometry: Polygon | MultiPolygon

    def __repr__(self) -> str:  # the geometry would drown everything else
        return f"Unit({self.code!r}, {self.level.value}, {self.name_zh!r}, {self.name_en!r}, parent={self.parent!r})"


@dataclass(frozen=True, slots=True)
class TilingProblem:
    """Children of ``code`` fail to tile it. ``kind`` is one of:

    - ``gap``: part of the parent is covered by no child;
    - ``overflow``: children reach outside the parent;
    - ``overlap``: children overlap one another (sum of areas minus area of the union).

    ``amount`` is that area relative to the parent's area.
    """

    code: str
    kind: str
    amount: float


def polygonal(geometry: BaseGeometry) -> Polygon | MultiPolygon:
    """The polygonal part of ``geometry`` (drops points and lines an overlay may leave)."""
    if isinstance(geometry, Polygon | MultiPolygon):
        return geometry
    parts = [part for part in shapely.get_parts(geometry) if isinstance(part, Polygon | MultiPolygon)]
    polygons: list[Polygon] = []
    for part in parts:
        polygons.extend(part.geoms if isinstance(part, MultiPolygon) else [part])
    if len(polygons) == 1:
        return polygons[0]
    return MultiPolygon(polygons)


class Gazetteer:
    """An immutable, validated set of units with lookups and spatial indexes."""

    def __init__(self, units: Iterable[Unit]) -> None:
        by_code: dict[str, Unit] = {}
        for unit in units:
            if unit.code in by_code:
                raise InvalidInput(f"duplicate unit code {unit.code}", field="code")
            by_code[unit.code] = unit
        cities = [unit for unit in by_code.values() if unit.level is Level.CITY]
        if len(cities) != 1:
            raise InvalidInput(f"a gazetteer needs exactly one city, found {len(cities)}", field="level")
        children: dict[str, list[Unit]] = {code: [] for code in by_code}
        for unit in by_code.values():
            _check_unit(unit)
            if unit.level is Level.CITY:
                if unit.parent is not None:
                    raise InvalidInput(f"city {unit.code} cannot have a parent", field="parent")
                continue
            parent = by_code.get(unit.parent) if unit.parent is not None else None
            if parent is None:
                raise InvalidInput(f"unit {unit.code} names unknown parent {unit.parent}", field="parent")
            if parent.level is not unit.level.parent:
                raise InvalidInput(
                    f"unit {unit.code} ({unit.level}) has parent {parent.code} at level {parent.level}",
                    field="parent",
                )
            children[parent.code].append(unit)
        self._units = dict(sorted(by_code.items()))
        self._children = {code: tuple(sorted(kids, key=lambda u: u.code)) for code, kids in children.items()}
        self._city = cities[0]
        self._by_level: dict[Level, tuple[Unit, ...]] = {
            level: tuple(u for u in self._units.values() if u.level is level) for level in Level
        }
        self._geoms: dict[Level, np.ndarray] = {}
        self._areas: dict[Level, np.ndarray] = {}
        self._trees: dict[Level, shapely.STRtree] = {}
        for level, level_units in self._by_level.items():
            geoms = np.array([u.geometry for u in level_units], dtype=object)
            shapely.prepare(geoms)
            self._geoms[level] = geoms
            self._areas[level] = shapely.area(geoms) if len(geoms) else np.zeros(0)
            self._trees[level] = shapely.STRtree(geoms)

    # ------------------------------------------------------------------ lookups

    def __len__(self) -> int:
        return len(self._units)

    def __iter__(self) -> Iterator[Unit]:
        return iter(self._units.values())

    def __contains__(self, code: object) -> bool:
        return code in self._units

    @property
    def city(self) -> Unit:
        return self._city

    def unit(self, code: str) -> Unit:
        """The unit with this code; :class:`NotFound` (field ``code``) if there is none."""
        try:
            return self._units[code]
        except (KeyError, TypeError):
            raise NotFound(f"no administrative unit with code {code!r}", field="code") from None

    def children(self, code: str) -> tuple[Unit, ...]:
        """The units directly below ``code``, ordered by code."""
        self.unit(code)
        return self._children[code]

    def ancestors(self, code: str) -> tuple[Unit, ...]:
        """The units above ``code``, nearest first: parent, grandparent, ..., city."""
        unit = self.unit(code)
        chain: list[Unit] = []
        while unit.parent is not None:
            unit = self._units[unit.parent]
            chain.append(unit)
        return tuple(chain)

    def descendants(self, code: str, level: Level | None = None) -> tuple[Unit, ...]:
        """All units below ``code`` (only those at ``level`` if given), in depth-first code order."""
        found: list[Unit] = []
        stack = list(reversed(self.children(code)))
        while stack:
            unit = stack.pop()
            if level is None or unit.level is level:
                found.append(unit)
            stack.extend(reversed(self._children[unit.code]))
        return tuple(found)

    def fewest(self, codes: Iterable[str]) -> tuple[Unit, ...]:
        """The same ground as the units ``codes`` in the fewest units: units already inside another
        one listed are dropped, and a unit whose children are all there replaces them (all the
        districts are the city). Unknown codes are ignored; order by code.
        """
        chosen = {code for code in codes if code in self._units}
        chosen = {code for code in chosen if not any(a.code in chosen for a in self.ancestors(code))}
        # Level by level from the communities up: a unit made of its children is then itself a
        # child, complete or not, at the next level.
        for level in reversed(_LEVELS[1:]):
            parents = {self._units[code].parent for code in chosen if self._units[code].level is level}
            for parent in parents:
                assert parent is not None
                kids = {unit.code for unit in self._children[parent]}
                if kids <= chosen:
                    chosen = (chosen - kids) | {parent}
        return tuple(self._units[code] for code in sorted(chosen))

    def units_at(self, level: Level | str) -> tuple[Unit, ...]:
        """Every unit at ``level``, ordered by code."""
        return self._by_level[Level(level)]

    # ------------------------------------------------------------------ spatial

    def units_hit(self, geometry: BaseGeometry, level: Level | str) -> list[tuple[Unit, float]]:
        """Units at ``level`` that intersect ``geometry``, with the fraction of each unit's area covered.

        Units merely touched (a shared edge, a point inside) are included with fraction 0.
        Ordered by fraction, largest first, then by code. Fractions lie in [0, 1].
        """
        level = Level(level)
        if geometry is None or geometry.is_empty:
            return []
        index = self._trees[level].query(geometry, predicate="intersects")
        if len(index) == 0:
            return []
        geoms = self._geoms[level][index]
        covered = shapely.area(shapely.intersection(geoms, geometry))
        fractions = np.clip(covered / self._areas[level][index], 0.0, 1.0)
        units = self._by_level[level]
        hits = [(units[i], float(f)) for i, f in zip(index.tolist(), fractions.tolist(), strict=True)]
        hits.sort(key=lambda hit: (-hit[1], hit[0].code))
        return hits

    def locate(self, lon: float, lat: float, level: Level | str) -> Unit | None:
        """The unit at ``level`` containing the point, or None outside every unit.

        A point exactly on a shared border belongs to the unit with the smaller code.
        """
        level = Level(level)
        index = self._trees[level].query(shapely.Point(lon, lat), predicate="intersects")
        if len(index) == 0:
            return None
        return self._by_level[level][int(index.min())]

    # ------------------------------------------------------------------ checks

    def check_tiling(self, tolerance: float = 1e-6) -> list[TilingProblem]:
        """Units whose children do not tile them, beyond ``tolerance`` relative area.

        Checks every unit that has children: the gap left uncovered, children reaching
        outside, and children overlapping each other.
        """
        problems: list[TilingProblem] = []
        for code, kids in self._children.items():
            if not kids:
                continue
            parent = self._units[code].geometry
            parent_area = parent.area
            if parent_area <= 0:
                problems.append(TilingProblem(code, "gap", math.inf))
                continue
            geoms = np.array([k.geometry for k in kids], dtype=object)
            union = shapely.union_all(geoms)
            measures = {
                "gap": parent.difference(union).area,
                "overflow": union.difference(parent).area,
                "overlap": float(shapely.area(geoms).sum()) - union.area,
            }
            for kind, area in measures.items():
                amount = area / parent_area
                if amount > tolerance:
                    problems.append(TilingProblem(code, kind, amount))
        return problems

    # ------------------------------------------------------------------ GeoJSON

    def to_geojson(self) -> dict[str, Any]:
        """The gazetteer as a GeoJSON FeatureCollection (a dict ready for ``json.dumps``)."""
        return {
            "type": "FeatureCollection",
            "features": [
                {
                    "type": "Feature",
                    "id": unit.code,
                    "properties": {
                        "code": unit.code,
                        "level": unit.level.value,
                        "name": unit.name_zh,
                        "name_en": unit.name_en,
                        "parent": unit.parent,
                        "population": unit.population,
                    },
                    "geometry": _to_plain(mapping(unit.geometry)),
                }
                for unit in self._units.values()
            ],
        }

    @classmethod
    def from_geojson(cls, document: Mapping[str, Any]) -> Gazetteer:
        """Build a gazetteer from a FeatureCollection written by :meth:`to_geojson` (or alike)."""
        if not isinstance(document, Mapping) or document.get("type") != "FeatureCollection":
            raise InvalidInput("expected a GeoJSON FeatureCollection", field="type")
        features = document.get("features")
        if not isinstance(features, list):
            raise InvalidInput("features must be a list", field="features")
        units = []
        for i, feature in enumerate(features):
            try:
                units.append(_unit_from_feature(feature))
            except InvalidInput as exc:
                raise exc.at(f"features[{i}]") from None
        return cls(units)

    def write_geojson(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_geojson(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def read_geojson(cls, path: str | Path) -> Gazetteer:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path} is not JSON: {exc}", field="file") from exc
        return cls.from_geojson(document)


# ---------------------------------------------------------------------- helpers


def _check_unit(unit: Unit) -> None:
    if not isinstance(unit.code, str) or not unit.code:
        raise InvalidInput("code must be a non-empty string", field="code")
    if not isinstance(unit.level, Level):
        raise InvalidInput(f"unit {unit.code}: level must be a Level", field="level")
    if not isinstance(unit.population, int) or isinstance(unit.population, bool) or unit.population < 0:
        raise InvalidInput(f"unit {unit.code}: population must be a non-negative integer", field="population")
    if not isinstance(unit.geometry, Polygon | MultiPolygon) or unit.geometry.is_empty:
        raise InvalidInput(f"unit {unit.code}: geometry must be a non-empty (Multi)Polygon", field="geometry")


def _to_plain(value: Any) -> Any:
    """Turn the tuples shapely's ``mapping`` returns into lists, so JSON round trips compare equal."""
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_plain(v) for v in value]
    return value


def _unit_from_feature(feature: Any) -> Unit:
    if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
        raise InvalidInput("expected a GeoJSON Feature", field="type")
    props = feature.get("properties")
    if not isinstance(props, Mapping):
        raise InvalidInput("properties must be an object", field="properties")

    def text(name: str, *, optional: bool = False) -> str | None:
        value = props.get(name)
        if value is None and optional:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # adcodes are often written as numbers
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"{name} must be a non-empty string", field=f"properties.{name}")
        return value

    code = text("code")
    try:
        level = Level(props.get("level"))
    except ValueError:
        raise InvalidInput(
            f"level must be one of {', '.join(level.value for level in Level)}", field="properties.level"
        ) from None
    population = props.get("population", 0)
    if not isinstance(population, int) or isinstance(population, bool) or population < 0:
        raise InvalidInput("population must be a non-negative integer", field="properties.population")
    try:
        geometry = shape(feature.get("geometry"))
    except (AttributeError, KeyError, TypeError, ValueError, shapely.errors.GEOSException) as exc:
        raise InvalidInput(f"geometry is not valid GeoJSON: {exc}", field="geometry") from None
    if not isinstance(geometry, Polygon | MultiPolygon) or geometry.is_empty:
        raise InvalidInput("geometry must be a non-empty Polygon or MultiPolygon", field="geometry")
    return Unit(
        code=code,
        level=level,
        name_zh=text("name"),
        name_en=text("name_en", optional=True) or "",
        parent=text("parent", optional=True),
        population=population,
        geometry=geometry,
    )
