"""Import real administrative boundaries into a :class:`~geotarget.gazetteer.Gazetteer`, one level at a time.

:func:`import_level` reads a GeoJSON FeatureCollection holding the units of ONE level
(all districts, all streets or all communities; or the city) and returns an
:class:`ImportResult`: a new, still tiling gazetteer and a ``report`` of typed
:class:`ImportNote` s saying what was repaired, created, removed, moved, clipped or
could not be placed. Nothing is dropped silently.

Property names
--------------

A :class:`PropertyMapping` says which feature property holds what. The defaults read the
gazetteer's own format (``code``, ``name``, ``name_en``, ``level``, ``parent``,
``population``) and, because ``code`` falls back to ``adcode`` and a ``parent`` object is
searched for ``code``/``adcode``, also the DataV/Aliyun style of
``shenzhen-districts.geojson``, whose features look like::

    {"type": "Feature",
     "properties": {"adcode": 440304, "name": "福田区", "level": "district",
                    "parent": {"adcode": 440300}, "center": [...], "centroid": [...],
                    "childrenNum": 0, "subFeatureIndex": 1, "acroutes": [100000, 440000, 440300]},
     "geometry": {"type": "MultiPolygon", "coordinates": [...]}}

Spelled out, the mapping for that file is::

    PropertyMapping(code="adcode", name="name", name_en=None, level="level",
                    parent="parent.adcode", population=None)

    result = import_level(build_demo_gazetteer(), document, "district", datav)

Any property name may be a dotted path into nested objects (``"parent.adcode"``); a
property name that literally contains a dot is tried first. Numeric codes are turned into
strings. ``name_en``, ``level``, ``parent`` and ``population`` may be None to ignore them.
Level values are the gazetteer's (``city``, ``district``, ``street``, ``community``) or a
synonym in :data:`LEVEL_SYNONYMS` (``county``, ``town``, ``街道``, ``社区`` ...).

What an import does
-------------------

- Only Polygon and MultiPolygon geometries are used; anything else is ``unplaced``. An
  invalid geometry is repaired with ``shapely.make_valid`` (keeping its polygonal parts)
  and reported as ``repaired``.
- Importing a level REPLACES that level: units whose code is in the file get the new
  geometry (and name, English name, population where the file gives them); codes new to
  the gazetteer are ``created``, under the parent the file names or else the unit one
  level up that they overlap most; units of the level that are absent from the file are
  ``removed`` and their children ``reparented`` to the imported unit holding most of each.
  Overlaps between imported units are cut away from the unit with the larger code
  (``clipped``).
- The level above: importing districts makes the city the union of the districts.
  Imported streets and communities are clipped to their parent (``clipped`` when more
  than ``tolerance`` of the area is lost) and the part of the parent they leave uncovered
  is handed out as below (``gap_filled``).
- Every level below is re-fitted: each unit's children are clipped to it and the gap
  left (parent minus the clipped children) is cut into connected pieces, each given to
  the child it shares the longest border with, or to the nearest child when it touches
  none (islands). A child left empty is ``removed``; its own children move to the unit of
  its level that holds most of each, and a childless one's population moves the same way.
- Populations: a unit with children gets the sum of its children, unless the file gave
  its population, in which case the levels below are rescaled to it (largest remainder);
  so with no populations in the file the city total is unchanged.

The result passes :meth:`Gazetteer.check_tiling` at ``tolerance`` (1e-6 relative area by
default). Known limit: a unit created by an import has no children, so the levels below
do not cover it until they are imported too.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape
from shapely.geometry.base import BaseGeometry

from broadcast.errors import InvalidInput
from geotarget.gazetteer import Gazetteer, Level, Unit, polygonal

__all__ = [
    "DEFAULT_TOLERANCE",
    "LEVEL_SYNONYMS",
    "NOTE_KINDS",
    "ImportNote",
    "ImportResult",
    "NoteKind",
    "PropertyMapping",
    "import_file",
    "import_level",
]

DEFAULT_TOLERANCE = 1e-6

NoteKind = Literal["repaired", "unplaced", "removed", "reparented", "clipped", "gap_filled", "created"]
NOTE_KINDS: frozenset[str] = frozenset(get_args(NoteKind))

# Level names other files use, mapped to the gazetteer's levels.
LEVEL_SYNONYMS: Mapping[str, Level] = {
    "county": Level.DISTRICT,
    "区": Level.DISTRICT,
    "县": Level.DISTRICT,
    "town": Level.STREET,
    "township": Level.STREET,
    "subdistrict": Level.STREET,
    "街道": Level.STREET,
    "镇": Level.STREET,
    "乡": Level.STREET,
    "village": Level.COMMUNITY,
    "社区": Level.COMMUNITY,
    "村": Level.COMMUNITY,
    "市": Level.CITY,
}

# Gap pieces smaller than this fraction of their parent are floating-point dust, not gaps.
_DUST = 1e-12


# ---------------------------------------------------------------------- public types


@dataclass(frozen=True, slots=True)
class PropertyMapping:
    """Which feature property holds what (see the module docstring for the DataV example).

    ``code`` is one property name or several tried in order. ``parent`` may hold a code or
    an object holding one under a ``code`` name (DataV's ``{"adcode": 440300}``).
    """

    code: str | tuple[str, ...] = ("code", "adcode")
    name: str = "name"
    name_en: str | None = "name_en"
    level: str | None = "level"
    parent: str | None = "parent"
    population: str | None = "population"

    def code_keys(self) -> tuple[str, ...]:
        return (self.code,) if isinstance(self.code, str) else tuple(self.code)


@dataclass(frozen=True, slots=True)
class ImportNote:
    """One thing the import did or could not do.

    ``code`` is the unit concerned (None for a feature without a usable code), ``feature``
    the index of the feature in the file when the note is about one, ``number`` a measure
    where useful: the fraction of area lost (``clipped``), gained (``gap_filled``) or
    inside the new parent (``reparented``).
    """

    kind: NoteKind
    code: str | None
    message: str
    number: float | None = None
    feature: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in NOTE_KINDS:
            raise ValueError(f"unknown import note kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class ImportResult:
    """The new gazetteer and what the import did to get there, in order."""

    gazetteer: Gazetteer
    report: list[ImportNote] = field(default_factory=list)

    def notes(self, kind: NoteKind | None = None, code: str | None = None) -> list[ImportNote]:
        """The notes of one kind and/or about one unit code."""
        return [n for n in self.report if (kind is None or n.kind == kind) and (code is None or n.code == code)]


# ---------------------------------------------------------------------- internal types


@dataclass(slots=True)
class _Draft:
    """A unit being rebuilt. ``changed``: geometry or set of children differs from before."""

    code: str
    level: Level
    name_zh: str
    name_en: str
    parent: str | None
    population: int
    geometry: Polygon | MultiPolygon
    changed: bool = False

    @classmethod
    def of(cls, unit: Unit) -> _Draft:
        return cls(unit.code, unit.level, unit.name_zh, unit.name_en, unit.parent, unit.population, unit.geometry)

    def unit(self) -> Unit:
        return Unit(self.code, self.level, self.name_zh, self.name_en, self.parent, self.population, self.geometry)


@dataclass(slots=True)
class _Feature:
    index: int
    code: str
    geometry: Polygon | MultiPolygon
    name: str | None
    name_en: str | None
    parent: str | None
    population: int | None


class _Unplaceable(Exception):
    """A feature that cannot be used; the message is the reason."""


# ---------------------------------------------------------------------- entry points


def import_file(
    gazetteer: Gazetteer,
    path: str | Path,
    level: Level | str,
    mapping: PropertyMapping | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ImportResult:
    """:func:`import_level` on a GeoJSON file."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path} is not JSON: {exc}", field="file") from exc
    return import_level(gazetteer, document, level, mapping, tolerance)


def import_level(
    gazetteer: Gazetteer,
    document: Any,
    level: Level | str,
    mapping: PropertyMapping | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ImportResult:
    """Replace the units at ``level`` with the features of ``document`` and re-fit the levels below.

    Raises :class:`~broadcast.errors.InvalidInput` when ``document`` is not a
    FeatureCollection (field ``type``), its ``features`` is not a list or holds no usable
    feature (field ``features``), or ``level`` is not a level (field ``level``).
    """
    mapping = mapping if mapping is not None else PropertyMapping()
    level = _coerce_level(level)
    if not (isinstance(tolerance, int | float) and 0 <= tolerance < 1):
        raise InvalidInput("tolerance must be a number in [0, 1)", field="tolerance")
    if not isinstance(document, Mapping) or document.get("type") != "FeatureCollection":
        raise InvalidInput("expected a GeoJSON FeatureCollection", field="type")
    raw_features = document.get("features")
    if not isinstance(raw_features, list):
        raise InvalidInput("features must be a list", field="features")

    report: list[ImportNote] = []
    drafts = {unit.code: _Draft.of(unit) for unit in gazetteer}
    features = _read_features(raw_features, level, mapping, report)
    placed = _place(features, drafts, level, tolerance, report)
    if not placed:
        raise InvalidInput(
            f"no usable {level.value} feature among {len(raw_features)} "
            f"(see the reasons: {'; '.join(n.message for n in report if n.kind == 'unplaced')[:500]})",
            field="features",
        )

    fixed_population: set[str] = set()
    for feature in placed:
        draft = drafts.get(feature.code)
        if draft is None:
            draft = drafts[feature.code] = _Draft(
                feature.code, level, feature.name or feature.code, "", feature.parent, 0, feature.geometry
            )
        draft.geometry = feature.geometry
        draft.parent = feature.parent
        draft.changed = True
        if feature.name is not None:
            draft.name_zh = feature.name
        if feature.name_en is not None:
            draft.name_en = feature.name_en
        if feature.population is not None:
            draft.population = feature.population
            fixed_population.add(feature.code)

    _remove_absent(drafts, level, {f.code for f in placed}, report)

    if level is Level.DISTRICT:
        city = next(d for d in drafts.values() if d.level is Level.CITY)
        districts = [d.geometry for d in drafts.values() if d.level is Level.DISTRICT]
        city.geometry = polygonal(shapely.union_all(np.array(districts, dtype=object)))
        city.changed = True
    elif level is not Level.CITY:
        # the imported units are already inside their parents: fill what they leave uncovered
        _refit_level(drafts, level, tolerance, report, report_clipping=False, only_changed=False)

    below = level.child
    while below is not None:
        _refit_level(drafts, below, tolerance, report, report_clipping=True, only_changed=True)
        below = below.child

    _settle_populations(drafts, fixed_population)
    return ImportResult(Gazetteer(d.unit() for d in drafts.values()), report)


# ---------------------------------------------------------------------- reading features


def _coerce_level(level: Any) -> Level:
    if isinstance(level, Level):
        return level
    text = str(level).strip().lower() if isinstance(level, str) else None
    if text is not None:
        if text in Level._value2member_map_:
            return Level(text)
        if text in LEVEL_SYNONYMS:
            return LEVEL_SYNONYMS[text]
    raise InvalidInput(f"level must be one of {', '.join(lv.value for lv in Level)}", field="level")


def _lookup(props: Mapping[str, Any], key: str) -> Any:
    """``props[key]``, or the value at dotted path ``key``; None when absent."""
    if key in props:
        return props[key]
    value: Any = props
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _as_code(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Unplaceable(f"{what} {value!r} is not a code")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise _Unplaceable(f"{what} {value!r} is not a code")


def _read_features(raw: list[Any], level: Level, mapping: PropertyMapping, report: list[ImportNote]) -> list[_Feature]:
    features: list[_Feature] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(raw):
        code: str | None = None
        try:
            if not isinstance(item, Mapping) or item.get("type") != "Feature":
                raise _Unplaceable("not a GeoJSON Feature")
            props = item.get("properties")
            if not isinstance(props, Mapping):
                raise _Unplaceable("properties is not an object")
            for key in mapping.code_keys():
                code = _as_code(_lookup(props, key), f"property {key}")
                if code is not None:
                    break
            if code is None:
                raise _Unplaceable(f"no code (property {' or '.join(mapping.code_keys())})")
            if code in seen:
                raise _Unplaceable(f"code {code} already given by feature {seen[code]}")
            if mapping.level is not None:
                value = _lookup(props, mapping.level)
                if value is not None:
                    try:
                        feature_level = _coerce_level(value)
                    except InvalidInput:
                        raise _Unplaceable(f"unknown level {value!r}") from None
                    if feature_level is not level:
                        raise _Unplaceable(f"wrong level: the feature is a {feature_level.value}, importing {level}")
            feature = _Feature(
                index=index,
                code=code,
                geometry=_read_geometry(item.get("geometry"), index, code, report),
                name=_text(props, mapping.name),
                name_en=_text(props, mapping.name_en),
                parent=_read_parent(props, mapping),
                population=_read_population(props, mapping.population),
            )
        except _Unplaceable as exc:
            report.append(ImportNote("unplaced", code, f"feature {index}: {exc}", feature=index))
            continue
        seen[code] = index
        features.append(feature)
    return features


def _text(props: Mapping[str, Any], key: str | None) -> str | None:
    if key is None:
        return None
    value = _lookup(props, key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Unplaceable(f"property {key} must be a non-empty string")
    return value.strip()


def _read_parent(props: Mapping[str, Any], mapping: PropertyMapping) -> str | None:
    if mapping.parent is None:
        return None
    value = _lookup(props, mapping.parent)
    if isinstance(value, Mapping):  # DataV: "parent": {"adcode": 440300}
        for key in (*mapping.code_keys(), "code", "adcode"):
            if value.get(key) is not None:
                return _as_code(value[key], f"property {mapping.parent}.{key}")
        raise _Unplaceable(f"property {mapping.parent} holds no code")
    return _as_code(value, f"property {mapping.parent}")


def _read_population(props: Mapping[str, Any], key: str | None) -> int | None:
    if key is None:
        return None
    value = _lookup(props, key)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Unplaceable(f"property {key} must be a non-negative integer, not {value!r}")
    return value


def _read_geometry(raw: Any, index: int, code: str, report: list[ImportNote]) -> Polygon | MultiPolygon:
    if raw is None:
        raise _Unplaceable("no geometry")
    if not isinstance(raw, Mapping):
        raise _Unplaceable("geometry is not an object")
    kind = raw.get("type")
    if kind not in ("Polygon", "MultiPolygon"):
        raise _Unplaceable(f"geometry is a {kind}, not a Polygon or MultiPolygon")
    try:
        geometry = shapely.force_2d(shape(raw))
    except (AttributeError, KeyError, TypeError, ValueError, IndexError, shapely.errors.GEOSException) as exc:
        raise _Unplaceable(f"geometry is not valid GeoJSON: {exc}") from None
    if geometry.is_empty:
        raise _Unplaceable("geometry is empty")
    if not geometry.is_valid:
        reason = shapely.is_valid_reason(geometry)
        repaired = polygonal(shapely.make_valid(geometry))
        if repaired.is_empty or repaired.area <= 0:
            raise _Unplaceable(f"geometry is invalid ({reason}) and has no area once repaired")
        report.append(
            ImportNote(
                "repaired",
                code,
                f"feature {index} ({code}): invalid geometry ({reason}) repaired into "
                f"{_count_parts(repaired)} polygon(s)",
                number=float(repaired.area),
                feature=index,
            )
        )
        geometry = repaired
    return geometry


def _count_parts(geometry: BaseGeometry) -> int:
    return len(geometry.geoms) if isinstance(geometry, MultiPolygon) else 1


# ---------------------------------------------------------------------- placing features


def _place(
    features: list[_Feature], drafts: dict[str, _Draft], level: Level, tolerance: float, report: list[ImportNote]
) -> list[_Feature]:
    """Features with a parent and a geometry inside it; the rest reported ``unplaced``."""
    parent_level = level.parent
    parents = [d for d in drafts.values() if d.level is parent_level] if parent_level else []
    parent_geoms = np.array([d.geometry for d in parents], dtype=object)
    parent_tree = shapely.STRtree(parent_geoms)
    placed: list[_Feature] = []

    def unplaced(feature: _Feature, reason: str) -> None:
        report.append(
            ImportNote("unplaced", feature.code, f"feature {feature.index} ({feature.code}): {reason}",
                       feature=feature.index)
        )  # fmt: skip

    for feature in features:
        existing = drafts.get(feature.code)
        if existing is not None and existing.level is not level:
            unplaced(feature, f"code {feature.code} is already a {existing.level.value} in the gazetteer")
            continue
        if level is Level.CITY:
            if placed:
                unplaced(feature, f"a gazetteer has one city and feature {placed[0].index} is it")
                continue
            feature.parent = None
        elif feature.parent is not None:
            parent = drafts.get(feature.parent)
            if parent is None:
                unplaced(feature, f"unknown parent {feature.parent}")
                continue
            if parent.level is not parent_level:
                unplaced(feature, f"parent {feature.parent} is a {parent.level.value}, not a {parent_level}")
                continue
        elif existing is not None:
            feature.parent = existing.parent
        else:
            best = _most_overlap(feature.geometry, parent_geoms, parent_tree)
            if best is None:
                unplaced(feature, f"names no parent and overlaps no {parent_level}")
                continue
            feature.parent = parents[best].code
        if feature.name is None and existing is None:
            unplaced(feature, "a new unit needs a name (property missing)")
            continue
        if parent_level is not None and parent_level is not Level.CITY:
            parent_geom = drafts[feature.parent].geometry
            if not parent_geom.contains(feature.geometry):
                clipped = polygonal(shapely.intersection(feature.geometry, parent_geom))
                lost = 1.0 - clipped.area / feature.geometry.area
                if clipped.is_empty or clipped.area <= 0:
                    unplaced(feature, f"lies entirely outside its parent {feature.parent}")
                    continue
                if lost > tolerance:
                    report.append(
                        ImportNote("clipped", feature.code,
                                   f"{feature.code}: {lost:.3%} of its area lies outside its parent {feature.parent}",
                                   number=lost, feature=feature.index)
                    )  # fmt: skip
                feature.geometry = clipped
        placed.append(feature)

    placed = _cut_overlaps(placed, tolerance, report)
    for feature in placed:
        if feature.code not in drafts:
            report.append(
                ImportNote("created", feature.code, f"created {level} {feature.code} ({feature.name}) "
                           f"under {feature.parent}", feature=feature.index)
            )  # fmt: skip
    return placed


def _cut_overlaps(placed: list[_Feature], tolerance: float, report: list[ImportNote]) -> list[_Feature]:
    """Cut each overlap away from the imported unit with the larger code."""
    if len(placed) < 2:
        return placed
    placed = sorted(placed, key=lambda f: f.code)
    geoms = np.array([f.geometry for f in placed], dtype=object)
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    if len(left):
        interior = shapely.relate_pattern(geoms[left], geoms[right], "T********")
        left, right = left[interior], right[interior]
    cut_by: dict[int, list[int]] = defaultdict(list)
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        cut_by[j].append(i)
    survivors: list[_Feature] = []
    for j, feature in enumerate(placed):
        before = feature.geometry.area
        for i in sorted(cut_by.get(j, [])):
            other = placed[i].geometry
            if shapely.intersection(feature.geometry, other).area > before * _DUST:
                feature.geometry = polygonal(shapely.difference(feature.geometry, other))
        lost = 1.0 - feature.geometry.area / before
        if feature.geometry.is_empty or feature.geometry.area <= 0:
            report.append(
                ImportNote("unplaced", feature.code, f"feature {feature.index} ({feature.code}): lies entirely "
                           "under other imported units", feature=feature.index)
            )  # fmt: skip
            continue
        if lost > tolerance:
            report.append(
                ImportNote("clipped", feature.code, f"{feature.code}: {lost:.3%} of its area overlapped imported "
                           f"units with smaller codes and was cut away", number=lost, feature=feature.index)
            )  # fmt: skip
        survivors.append(feature)
    return survivors


def _most_overlap(geometry: BaseGeometry, candidates: np.ndarray, tree: shapely.STRtree) -> int | None:
    """Index of the candidate sharing the most area with ``geometry``; None when none shares any."""
    index = np.sort(tree.query(geometry, predicate="intersects"))
    if len(index) == 0:
        return None
    areas = shapely.area(shapely.intersection(candidates[index], geometry))
    best = int(np.argmax(areas))
    return int(index[best]) if areas[best] > 0 else None


def _home(geometry: BaseGeometry, candidates: np.ndarray, tree: shapely.STRtree) -> tuple[int, float]:
    """The candidate holding most of ``geometry`` (or the nearest), and the fraction it holds."""
    best = _most_overlap(geometry, candidates, tree)
    if best is not None:
        area = geometry.area
        share = shapely.intersection(candidates[best], geometry).area / area if area > 0 else 0.0
        return best, float(share)
    return int(np.min(tree.query_nearest(geometry))), 0.0


# ---------------------------------------------------------------------- removing and re-fitting


def _children_index(drafts: dict[str, _Draft]) -> dict[str, list[_Draft]]:
    children: dict[str, list[_Draft]] = defaultdict(list)
    for draft in drafts.values():
        if draft.parent is not None:
            children[draft.parent].append(draft)
    for kids in children.values():
        kids.sort(key=lambda d: d.code)
    return children


def _rehome(
    drafts: dict[str, _Draft],
    gone: list[_Draft],
    survivors: list[_Draft],
    report: list[ImportNote],
    why: str,
) -> None:
    """Delete ``gone`` (units of one level), moving their children and population to ``survivors``.

    Each child moves to the survivor holding most of it (the nearest when none does); a
    childless unit's population goes to the survivor holding most of its old area.
    """
    if not gone:
        return
    children = _children_index(drafts)
    geoms = np.array([s.geometry for s in survivors], dtype=object)
    tree = shapely.STRtree(geoms)
    for unit in gone:
        kids = children.get(unit.code, [])
        del drafts[unit.code]
        if not survivors:
            report.append(ImportNote("removed", unit.code, f"{unit.code} ({unit.name_zh}) removed: {why}; nothing "
                                     f"of its level is left to take its {len(kids)} children"))  # fmt: skip
            _drop_subtree(drafts, kids, report)
            continue
        if kids:
            moved = f"its {len(kids)} children move to the units that hold them"
        else:
            target, _ = _home(unit.geometry, geoms, tree)
            survivors[target].population += unit.population
            survivors[target].changed = True
            moved = f"its population {unit.population} goes to {survivors[target].code}"
        report.append(ImportNote("removed", unit.code, f"{unit.code} ({unit.name_zh}) removed: {why}; {moved}"))
        for kid in kids:
            target, share = _home(kid.geometry, geoms, tree)
            new_parent = survivors[target]
            kid.parent = new_parent.code
            kid.changed = True
            new_parent.changed = True
            report.append(
                ImportNote("reparented", kid.code, f"{kid.code} ({kid.name_zh}) moves from {unit.code} to "
                           f"{new_parent.code} ({new_parent.name_zh}), which holds {share:.1%} of it", number=share)
            )  # fmt: skip


def _drop_subtree(drafts: dict[str, _Draft], kids: list[_Draft], report: list[ImportNote]) -> None:
    children = _children_index(drafts)
    stack = list(kids)
    while stack:
        unit = stack.pop()
        drafts.pop(unit.code, None)
        report.append(ImportNote("removed", unit.code, f"{unit.code} ({unit.name_zh}) removed with its parent"))
        stack.extend(children.get(unit.code, []))


def _remove_absent(drafts: dict[str, _Draft], level: Level, kept: set[str], report: list[ImportNote]) -> None:
    gone = sorted((d for d in drafts.values() if d.level is level and d.code not in kept), key=lambda d: d.code)
    survivors = sorted((d for d in drafts.values() if d.level is level and d.code in kept), key=lambda d: d.code)
    _rehome(drafts, gone, survivors, report, f"the imported {level} file does not contain it")


def _refit_level(
    drafts: dict[str, _Draft],
    level: Level,
    tolerance: float,
    report: list[ImportNote],
    *,
    report_clipping: bool,
    only_changed: bool,
) -> None:
    """Make the units at ``level`` tile their parents again (clip, then fill the gaps)."""
    children = _children_index(drafts)
    parents = sorted((d for d in drafts.values() if d.level is level.parent), key=lambda d: d.code)
    emptied: list[_Draft] = []
    for parent in parents:
        kids = children.get(parent.code, [])
        if not kids or (only_changed and not parent.changed):
            continue
        new = _fit(parent, kids, tolerance, report, report_clipping=report_clipping)
        for kid, geometry in zip(kids, new, strict=True):
            if geometry is None:
                emptied.append(kid)
            elif geometry is not kid.geometry:
                kid.geometry = geometry
                kid.changed = True
    emptied_codes = {d.code for d in emptied}
    survivors = sorted(
        (d for d in drafts.values() if d.level is level and d.code not in emptied_codes), key=lambda d: d.code
    )
    _rehome(drafts, emptied, survivors, report, "nothing of it lies inside its parent any more")


def _fit(
    parent: _Draft, kids: list[_Draft], tolerance: float, report: list[ImportNote], *, report_clipping: bool
) -> list[Polygon | MultiPolygon | None]:
    """New geometries for ``kids`` tiling ``parent`` (None for a kid left empty)."""
    region = parent.geometry
    region_area = region.area
    dust = region_area * _DUST
    old = np.array([k.geometry for k in kids], dtype=object)
    shapely.prepare(region)
    inside = shapely.contains(region, old)
    clipped = old.copy()
    outside = np.flatnonzero(~inside)
    if len(outside):
        cut = shapely.intersection(old[outside], region)
        for i, geometry in zip(outside.tolist(), cut, strict=True):
            clipped[i] = polygonal(geometry)

    # siblings gathered from several old parents may overlap: the smaller code keeps the overlap
    tree = shapely.STRtree(clipped)
    left, right = tree.query(clipped, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    if len(left):
        interior = shapely.relate_pattern(clipped[left], clipped[right], "T********")
        for i, j in zip(left[interior].tolist(), right[interior].tolist(), strict=True):
            if shapely.intersection(clipped[i], clipped[j]).area > dust:
                clipped[j] = polygonal(shapely.difference(clipped[j], clipped[i]))

    areas = shapely.area(clipped)
    old_areas = shapely.area(old)
    result: list[Polygon | MultiPolygon | None] = []
    for kid, geometry, area, old_area in zip(kids, clipped, areas.tolist(), old_areas.tolist(), strict=True):
        if geometry.is_empty or area <= dust:
            result.append(None)
            continue
        lost = 1.0 - area / old_area if old_area > 0 else 0.0
        if report_clipping and lost > tolerance:
            report.append(
                ImportNote("clipped", kid.code, f"{kid.code}: {lost:.3%} of its area lies outside its parent "
                           f"{parent.code} and was cut away", number=lost)
            )  # fmt: skip
        result.append(geometry)

    alive = [i for i, g in enumerate(result) if g is not None]
    if not alive:
        return result
    alive_geoms = np.array([result[i] for i in alive], dtype=object)
    gap = shapely.difference(region, shapely.union_all(alive_geoms))
    pieces = [p for p in shapely.get_parts(polygonal(gap)) if p.area > dust]
    if not pieces:
        return result
    alive_tree = shapely.STRtree(alive_geoms)
    extras: dict[int, list[Polygon]] = defaultdict(list)
    for piece in pieces:
        extras[_gap_owner(piece, alive_geoms, alive_tree)].append(piece)
    for k, extra in sorted(extras.items()):
        i = alive[k]
        grown = polygonal(shapely.union_all(np.array([result[i], *extra], dtype=object)))
        gained = float(sum(p.area for p in extra)) / grown.area
        result[i] = grown
        if gained > tolerance:
            report.append(
                ImportNote("gap_filled", kids[i].code, f"{kids[i].code} takes {len(extra)} uncovered piece(s) of "
                           f"{parent.code}: {gained:.3%} of its new area", number=gained)
            )  # fmt: skip
    return result


def _gap_owner(piece: Polygon, geoms: np.ndarray, tree: shapely.STRtree) -> int:
    """The unit sharing the longest border with ``piece``, or the nearest when it touches none."""
    index = np.sort(tree.query(piece, predicate="intersects"))
    if len(index):
        shared = shapely.length(shapely.intersection(piece.boundary, geoms[index]))
        best = int(np.argmax(shared))
        if shared[best] > 0:
            return int(index[best])
    return int(np.min(tree.query_nearest(piece)))


# ---------------------------------------------------------------------- populations


def _settle_populations(drafts: dict[str, _Draft], fixed: set[str]) -> None:
    """Parents sum their children, except those the file gave; below those, rescale to match."""
    children = _children_index(drafts)
    for level in reversed(Level):
        for draft in drafts.values():
            kids = children.get(draft.code)
            if draft.level is level and kids and draft.code not in fixed:
                draft.population = sum(k.population for k in kids)
    for level in Level:
        for draft in drafts.values():
            kids = children.get(draft.code)
            if draft.level is not level or not kids:
                continue
            if sum(k.population for k in kids) != draft.population:
                weights = [float(k.population) for k in kids]
                if not any(weights):
                    weights = [k.geometry.area for k in kids]
                for kid, share in zip(kids, _split_integer(draft.population, weights), strict=True):
                    kid.population = share


def _split_integer(total: int, weights: Sequence[float]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder, ties by position)."""
    weight_sum = math.fsum(weights)
    if weight_sum <= 0:
        weights, weight_sum = [1.0] * len(weights), float(len(weights))
    exact = [total * w / weight_sum for w in weights]
    shares = [math.floor(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares
