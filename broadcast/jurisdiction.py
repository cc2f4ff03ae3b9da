"""Whether an alert's areas lie inside the service's jurisdiction: the gazetteer's city.

An area is inside when its polygons, circles or administrative units overlap the city.
An imported alert with an area outside may be stored as a draft (with a finding) but
cannot be submitted; a composed alert with such an area is refused outright by the
geometry rules (:func:`geotarget.areas.check_area`).
"""

from __future__ import annotations

from dataclasses import dataclass

from broadcast.model import Alert, Area
from broadcast.records import Finding
from geotarget.areas import area_shape
from geotarget.gazetteer import Gazetteer


@dataclass(frozen=True, slots=True)
class Jurisdiction:
    gazetteer: Gazetteer

    def covers(self, area: Area) -> bool:
        shape = area_shape(area, self.gazetteer)
        if shape is None:
            return False
        city = self.gazetteer.city.geometry
        if shape.area == 0:  # a point (CAP circle of radius 0)
            return bool(shape.intersects(city))
        return shape.intersection(city).area > 0

    def findings(self, alert: Alert) -> list[Finding]:
        found = []
        for i, info in enumerate(alert.infos):
            for j, area in enumerate(info.areas):
                if not self.covers(area):
                    found.append(Finding(
                        "outside_jurisdiction",
                        f"info[{i}].areas[{j}]",
                        f"area {area.desc!r} lies outside this service's jurisdiction "
                        f"({self.gazetteer.city.name_zh}): no overlap and no administrative unit of ours",
                    ))
        return found
