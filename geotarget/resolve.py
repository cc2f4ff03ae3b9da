"""Resolution: from an alert's areas to who and what they reach.

Given the areas' shapes (already checked and clipped by :mod:`geotarget.areas`), it
returns the administrative units hit at each of the four levels with the fraction of each
unit covered (a unit covered less than ``edge_fraction`` is kept but marked ``edge``), the
subscribers inside (exact point-in-polygon; a point on the boundary is inside), the
cell-broadcast sectors whose coverage intersects, the screens and loudspeakers inside,
the TV and radio stations whose coverage intersects, counts per channel, and how long
full coverage takes per channel at the configured rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from broadcast.codec import area_from_json, items, reject_unknown, require_object
from broadcast.errors import InvalidInput
from broadcast.model import Alert
from broadcast.settings import Settings
from geotarget.areas import Notice, area_shape, check_area
from geotarget.gazetteer import Level
from geotarget.registry import Targets

# Channels reached once per alert whatever the area: one public post, one feed entry.
PER_ALERT_CHANNELS = {"weibo": 1, "cap_feed": 1}
# Below this covered fraction a unit is only touched (a shared edge), not reached.
TOUCH_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class UnitCoverage:
    level: Level
    code: str
    name: str
    name_en: str
    parent: str | None
    coverage: float
    edge: bool
    population: int

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level.value, "code": self.code, "name": self.name, "name_en": self.name_en,
                "parent": self.parent, "coverage": round(self.coverage, 6), "edge": self.edge,
                "population": self.population}


@dataclass(frozen=True, slots=True)
class Resolution:
    units: tuple[UnitCoverage, ...]
    counts: dict[str, int]
    seconds: dict[str, float]
    rates: dict[str, float]
    notices: tuple[Notice, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)

    def units_at(self, level: Level) -> list[UnitCoverage]:
        return [u for u in self.units if u.level is level]

    def tree(self) -> dict[str, Any] | None:
        """The units as a tree city -> districts -> streets -> communities (None when nothing is hit)."""
        nodes = {u.code: {**u.as_dict(), "children": []} for u in self.units}
        root = None
        for unit in self.units:
            node = nodes[unit.code]
            if unit.parent in nodes:
                nodes[unit.parent]["children"].append(node)
            elif unit.level is Level.CITY:
                root = node
        return root

    def summary(self) -> dict[str, Any]:
        """What an alert keeps of its targeting: counts per level and channel, and the units hit."""
        return {
            "levels": {level.value: len(self.units_at(level)) for level in Level},
            "codes": {level.value: [u.code for u in self.units_at(level) if not u.edge] for level in Level},
            "edge": [u.code for u in self.units if u.edge],
            "counts": dict(self.counts),
            "seconds": dict(self.seconds),
            "versions": dict(self.versions),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "units": [u.as_dict() for u in self.units],
            "tree": self.tree(),
            "levels": {level.value: len(self.units_at(level)) for level in Level},
            "counts": dict(self.counts),
            "estimates": {channel: {"count": self.counts[channel], "rate_per_second": self.rates.get(channel),
                                    "seconds": self.seconds.get(channel)} for channel in self.counts},
            "notices": [n.as_dict() for n in self.notices],
            "registries": dict(self.versions),
        }


def resolve_request(request: Any, targets: Targets, settings: Settings) -> Resolution:
    """Resolve a targeting request ``{"areas": [...]}`` (area objects as alerts take them).

    Raises:
        InvalidInput: naming the area (``areas[2]``) or its part that breaks a rule.
    """
    doc = require_object(request, "body")
    reject_unknown(doc, {"areas"}, "")
    areas = items(doc, "areas", "")
    if not areas:
        raise InvalidInput("give at least one area", field="areas")
    shapes, notices = [], []
    for index, raw in enumerate(areas):
        path = f"areas[{index}]"
        entry = require_object(raw, path)
        if entry.get("desc") is None:
            entry = {**entry, "desc": path}
        area = area_from_json(entry, path)
        checked = check_area(area, path, targets.gazetteer, max_vertices=settings.max_area_vertices)
        shapes.append(checked.shape)
        notices.extend(checked.notices)
    return resolve(shapes, targets, rates=settings.rates, edge_fraction=settings.edge_coverage_fraction,
                   notices=tuple(notices))


def resolve_alert(alert: Alert, targets: Targets, settings: Settings) -> Resolution:
    """Resolve every area of every info block of an alert, clipped to the city (as stored, never refused)."""
    city = targets.gazetteer.city.geometry
    shapes = []
    for info in alert.infos:
        for area in info.areas:
            shape = area_shape(area, targets.gazetteer)
            if shape is not None:
                shapes.append(shape.intersection(city))
    return resolve(shapes, targets, rates=settings.rates, edge_fraction=settings.edge_coverage_fraction)


def resolve(shapes: list[BaseGeometry], targets: Targets, *, rates: dict[str, float], edge_fraction: float,
            notices: tuple[Notice, ...] = ()) -> Resolution:
    """Resolve the union of ``shapes`` against the gazetteer and the registries in ``targets``."""
    area = shapely.union_all(shapes) if shapes else shapely.Polygon()
    units = []
    for level in Level:
        for unit, fraction in targets.gazetteer.units_hit(area, level):
            if fraction > TOUCH_EPSILON:
                units.append(UnitCoverage(level, unit.code, unit.name_zh, unit.name_en, unit.parent, fraction,
                                          fraction < edge_fraction, unit.population))

    counts: dict[str, int] = {}
    if targets.subscribers is not None:
        indices = targets.subscribers.select(area)
        counts.update(targets.subscribers.count_by_channel(indices))
        counts["subscribers"] = len(indices)
    if targets.facilities is not None:
        facilities = targets.facilities
        counts["cell_broadcast"] = len(facilities.sectors_intersecting(area))
        counts["display_screen"] = len(facilities.screens_inside(area))
        counts["loudspeaker"] = len(facilities.loudspeakers_inside(area))
        stations = facilities.stations_intersecting(area)
        counts["tv"] = sum(1 for s in stations if s.kind.value == "tv")
        counts["radio"] = sum(1 for s in stations if s.kind.value == "radio")
    counts.update(PER_ALERT_CHANNELS)
    seconds = {channel: count / rates[channel] for channel, count in counts.items() if channel in rates}
    return Resolution(tuple(units), counts, seconds, rates, notices, dict(targets.versions))
