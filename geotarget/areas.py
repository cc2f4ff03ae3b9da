"""Alert areas as geometry, and the rules an area must pass before anything is targeted.

An area (CAP ``<area>``, or its JSON form) is the union of its polygons, its circles and
the polygons of the administrative units its geocodes name (``adcode`` 440304 = 福田区).

:func:`check_area` applies the geometry rules to an area a forecaster drew:

- an empty area (no polygon, circle or known code, or zero area) is refused;
- an area with more than ``max_vertices`` vertices is refused;
- a self-intersecting polygon is refused, with the place where it crosses itself: we never
  send an area that differs from what the forecaster drew without saying so, and a repaired
  bow-tie is rarely what was meant;
- an unknown administrative code is refused;
- an area wholly outside the jurisdiction is refused;
- an area partly outside is clipped to the jurisdiction for targeting, and a notice says
  how much was left out (the CAP message keeps the area as drawn).

Positions given as ``[lat, lon]`` instead of GeoJSON's ``[lon, lat]`` are detected where
that is unambiguous (a "latitude" beyond 90) by the JSON codec, which parses them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import shapely
import shapely.affinity
from shapely.geometry.base import BaseGeometry

from broadcast.errors import InvalidInput
from broadcast.model import Area, Circle
from broadcast.records import Finding
from geotarget.gazetteer import Gazetteer

# Geocode value names that carry a Chinese administrative division code (GB/T 2260).
ADMIN_CODE_NAMES = frozenset({"adcode", "gb2260", "gb/t 2260", "admin_code"})
KM_PER_DEGREE = 111.32
DEFAULT_MAX_VERTICES = 10_000


# Something the service did to an area that the forecaster should know (not an error): the
# same (code, field, message) shape as a record's findings.
Notice = Finding


@dataclass(frozen=True, slots=True)
class CheckedArea:
    shape: BaseGeometry  # clipped to the jurisdiction
    notices: tuple[Notice, ...] = ()


def is_admin_code(value_name: str) -> bool:
    return value_name.strip().lower() in ADMIN_CODE_NAMES


def circle_shape(circle: Circle) -> BaseGeometry:
    """The circle as a lon/lat polygon (an ellipse in degrees; exact enough at city scale)."""
    if circle.radius_km == 0:
        return shapely.Point(circle.lon, circle.lat)
    dlat = circle.radius_km / KM_PER_DEGREE
    disc = shapely.Point(0.0, 0.0).buffer(dlat, quad_segs=16)
    stretch = 1.0 / max(math.cos(math.radians(circle.lat)), 1e-6)
    ellipse = shapely.affinity.scale(disc, xfact=stretch, yfact=1.0, origin=(0.0, 0.0))
    return shapely.affinity.translate(ellipse, circle.lon, circle.lat)


def admin_codes(area: Area) -> list[str]:
    return [g.value.strip() for g in area.geocodes if is_admin_code(g.value_name)]


def area_shape(area: Area, gazetteer: Gazetteer | None = None) -> BaseGeometry | None:
    """Union of an area's polygons, circles and known administrative units; None when it has none.

    Invalid polygons are made valid here (for imported alerts, which are stored as sent);
    :func:`check_area` refuses them for alerts we compose.
    """
    parts: list[BaseGeometry] = [shapely.make_valid(shapely.Polygon(p.points)) for p in area.polygons]
    parts += [circle_shape(c) for c in area.circles]
    if gazetteer is not None:
        parts += [gazetteer.unit(code).geometry for code in admin_codes(area) if code in gazetteer]
    if not parts:
        return None
    return shapely.union_all(parts)


def check_area(area: Area, field: str, gazetteer: Gazetteer, *,
               max_vertices: int = DEFAULT_MAX_VERTICES) -> CheckedArea:
    """Apply the geometry rules to one drawn area; return its shape clipped to the jurisdiction.

    Raises:
        InvalidInput: naming ``field`` (or the polygon, circle or geocode within it) and the rule broken.
    """
    vertices = sum(len(p.points) for p in area.polygons)
    if vertices > max_vertices:
        raise InvalidInput(f"the area has {vertices} vertices; at most {max_vertices} are accepted "
                           "(simplify it)", field=join(field, "geometry"))
    for index, polygon in enumerate(area.polygons):
        shape = shapely.Polygon(polygon.points)
        if not shape.is_valid:
            reason = shapely.is_valid_reason(shape)
            raise InvalidInput(f"polygon {index} is not a simple ring ({reason}); redraw it without crossing edges",
                               field=join(field, "geometry"))
        if shape.area == 0:
            raise InvalidInput(f"polygon {index} encloses no area", field=join(field, "geometry"))
    for index, circle in enumerate(area.circles):
        if circle.radius_km == 0:
            raise InvalidInput("a circle of radius 0 encloses no area", field=f"{join(field, 'circles')}[{index}]")
    for index, geocode in enumerate(area.geocodes):
        if is_admin_code(geocode.value_name) and geocode.value.strip() not in gazetteer:
            raise InvalidInput(f"unknown administrative code {geocode.value!r}",
                               field=f"{join(field, 'geocodes')}[{index}]")
    shape = area_shape(area, gazetteer)
    if shape is None or shape.is_empty or shape.area == 0:
        raise InvalidInput("the area is empty: give a polygon, a circle or an administrative code", field=field)
    jurisdiction = gazetteer.city.geometry
    inside = shape.intersection(jurisdiction)
    if inside.is_empty or inside.area == 0:
        raise InvalidInput(f"the area lies outside the jurisdiction ({gazetteer.city.name_zh})", field=field)
    outside = 1.0 - inside.area / shape.area
    notices: tuple[Notice, ...] = ()
    if outside > 1e-6:
        notices = (Notice("clipped", field, f"{outside:.1%} of the area lies outside the jurisdiction "
                                            f"({gazetteer.city.name_zh}) and is not targeted"),)
    return CheckedArea(inside, notices)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
