"""Whether an alert's areas lie inside the service's jurisdiction.

An area is inside when its polygons or circles intersect the jurisdiction's extent, or,
when it has no geometry, when one of its geocodes is an administrative code of ours
(``adcode`` 4403xx for Shenzhen). An alert with any area outside may be stored as a
draft (an import from another agency, say) but cannot be submitted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import shapely
import shapely.affinity
from shapely.geometry.base import BaseGeometry

from broadcast.model import Alert, Area, Circle
from broadcast.records import Finding
from broadcast.settings import Settings

# Geocode value names that carry a Chinese administrative division code (GB/T 2260).
ADMIN_CODE_NAMES = frozenset({"adcode", "gb2260", "gb/t 2260", "admin_code"})
KM_PER_DEGREE = 111.32


def circle_shape(circle: Circle) -> BaseGeometry:
    """The circle as a lon/lat polygon (an ellipse in degrees; exact enough at city scale)."""
    if circle.radius_km == 0:
        return shapely.Point(circle.lon, circle.lat)
    dlat = circle.radius_km / KM_PER_DEGREE
    disc = shapely.Point(0.0, 0.0).buffer(dlat, quad_segs=16)
    stretch = 1.0 / max(math.cos(math.radians(circle.lat)), 1e-6)
    ellipse = shapely.affinity.scale(disc, xfact=stretch, yfact=1.0, origin=(0.0, 0.0))
    return shapely.affinity.translate(ellipse, circle.lon, circle.lat)


def area_shape(area: Area) -> BaseGeometry | None:
    """Union of an area's polygons and circles, or None when it has no geometry."""
    parts: list[BaseGeometry] = [shapely.Polygon(p.points) for p in area.polygons]
    parts += [circle_shape(c) for c in area.circles]
    if not parts:
        return None
    return shapely.union_all([shapely.make_valid(p) for p in parts])


def is_admin_code(value_name: str) -> bool:
    return value_name.strip().lower() in ADMIN_CODE_NAMES


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    extent: BaseGeometry
    code_prefix: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Jurisdiction:
        return cls(shapely.box(*settings.jurisdiction_bbox), settings.jurisdiction_code_prefix)

    def covers(self, area: Area) -> bool:
        shape = area_shape(area)
        if shape is not None:
            return bool(shape.intersects(self.extent))
        return any(is_admin_code(g.value_name) and g.value.startswith(self.code_prefix) for g in area.geocodes)

    def findings(self, alert: Alert) -> list[Finding]:
        found = []
        for i, info in enumerate(alert.infos):
            for j, area in enumerate(info.areas):
                if not self.covers(area):
                    found.append(Finding(
                        "outside_jurisdiction",
                        f"info[{i}].areas[{j}]",
                        f"area {area.desc!r} lies outside this service's jurisdiction "
                        "(no overlap with its extent and no administrative code of ours)",
                    ))
        return found
