"""Registries of fixed broadcast targets: cell sites, display screens, broadcast stations, loudspeakers.

Each kind is a small in-memory registry (thousands to tens of thousands of entries) of
frozen dataclasses, sorted by id, with one shapely 2 ``STRtree`` built once over the
geometries the kind is targeted by:

================  ====================  ================================  =========================
kind              entry                 indexed geometry                  query
================  ====================  ================================  =========================
``cells``         :class:`CellSite`     every :class:`Sector`'s coverage  ``sectors_intersecting``
``screens``       :class:`Screen`       its position (a point)            ``screens_inside``
``stations``      :class:`Station`      its coverage polygon              ``stations_intersecting``
``loudspeakers``  :class:`Loudspeaker`  its position (a point)            ``loudspeakers_inside``
================  ====================  ================================  =========================

The cell broadcast channel addresses *sectors* (cells), so the cell registry is queried
per sector. Every query is one ``STRtree.query(geometry, predicate="intersects")``: a
coverage polygon that merely touches the alert area counts, and a point on the area's
boundary counts as inside. Results come back ordered by id.

Coordinates are lon/lat (WGS84, shapely's x/y order). Distances (sector radius) are in
metres and are turned into degrees with a local flat-earth factor, which over a city the
size of Shenzhen is good to well under 1%.

Interchange formats (one file per kind)
---------------------------------------

GeoJSON (RFC 7946) FeatureCollection; each feature also carries its ``id`` at the top level.

- ``cells.geojson`` - one feature per **sector**, geometry a ``Polygon`` (the coverage);
  properties ``id`` (``<site>-<sector>``), ``site`` (site id), ``sector`` (integer >= 1),
  ``azimuth`` (degrees clockwise from north, [0, 360)), ``beamwidth`` (degrees, (0, 360]),
  ``radius_m`` (nominal reach in metres, > 0), ``site_lon``, ``site_lat`` (the mast; the
  same on every sector of a site).
- ``screens.geojson`` - geometry a ``Point``; properties ``id``, ``size_inches`` (> 0),
  ``lines`` (text lines shown at once, >= 1), ``chars_per_line`` (>= 1, full-width
  characters), ``community`` (the community code the screen stands in).
- ``stations.geojson`` - geometry a ``Polygon`` or ``MultiPolygon`` (the coverage);
  properties ``id``, ``kind`` (``tv`` or ``radio``), ``name``, ``frequency_mhz`` (radio:
  required, 87-108; tv: null), ``channel`` (tv: required UHF/VHF channel 1-69; radio:
  null), ``area`` (code of the unit the station serves, or null).
- ``loudspeakers.geojson`` - geometry a ``Point``; properties ``id``, ``community``.

CSV (UTF-8, header line first) for the point kinds, columns in this order (extra columns
are ignored):

- screens: ``id,lon,lat,size_inches,lines,chars_per_line,community``
- loudspeakers: ``id,lon,lat,community``

Every feature and row is checked; the first problem raises
:class:`~broadcast.errors.InvalidInput` whose ``field`` names it:
``features[3].properties.azimuth``, ``features[3].geometry.type``,
``features[3].geometry.coordinates`` (outside lon [-180, 180] / lat [-90, 90]),
``features[3].properties.id`` (a duplicate), or ``line 7: lon`` for CSV (physical line
number, the header being line 1). :meth:`FacilityRegistry.load` prefixes the kind:
``screens.features[3].properties.lines``.

Demo data
---------

:func:`generate_facilities` makes a deterministic (fixed-seed) set over a gazetteer:
about 6,000 cell sites x 3 sectors placed in communities in proportion to population, the
sector radius shrinking with site density (0.3 km in the urban core up to 3 km in the
countryside); about 3,000 screens, also by population; two loudspeakers per community;
6 TV and 8 radio stations serving the whole city or one district. Station names are
modelled on Shenzhen's broadcasters; their frequencies and channels are illustrative.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from broadcast.errors import InvalidInput, NotFound
from geotarget.gazetteer import Gazetteer, Level

__all__ = [
    "DEFAULT_SEED",
    "CellRegistry",
    "CellSite",
    "FacilityRegistry",
    "Loudspeaker",
    "LoudspeakerRegistry",
    "Screen",
    "ScreenRegistry",
    "Sector",
    "Station",
    "StationKind",
    "StationRegistry",
    "generate_cell_sites",
    "generate_facilities",
    "generate_loudspeakers",
    "generate_screens",
    "generate_stations",
    "sector_wedge",
]

DEFAULT_SEED = 20_240_611
KM_PER_DEGREE_LAT = 110.574
KM_PER_DEGREE_LON_EQUATOR = 111.320
ARC_POINTS = 9  # vertices along a sector's arc
COORD_DECIMALS = 6  # 0.1 m: generated coordinates are rounded so files stay small


# ---------------------------------------------------------------------- value checks


def _fail(message: str, name: str) -> InvalidInput:
    return InvalidInput(message, field=name)


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise _fail(f"{name} must be a non-empty string without surrounding spaces", name)
    return value


def _number(value: Any, name: str, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(f"{name} must be a finite number", name)
    low_ok = value > lo if lo_open else value >= lo
    high_ok = value < hi if hi_open else value <= hi
    if not (low_ok and high_ok):
        lb, hb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise _fail(f"{name} must lie in {lb}{lo}, {hi}{hb}, got {value}", name)
    return float(value)


def _integer(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(f"{name} must be an integer in [{lo}, {hi}], got {value!r}", name)
    return value


def _lonlat(lon: Any, lat: Any) -> tuple[float, float]:
    return _number(lon, "lon", -180.0, 180.0), _number(lat, "lat", -90.0, 90.0)


def _check_point_entry(entry: Any) -> None:
    """An entry placed at a point (a site, a screen, a loudspeaker): a text id and lon/lat in range."""
    _text(entry.id, "id")
    lon, lat = _lonlat(entry.lon, entry.lat)
    _set(entry, "lon", lon)
    _set(entry, "lat", lat)


def _check_area(geometry: Any, name: str, types: tuple[type, ...]) -> None:
    if not isinstance(geometry, types) or geometry.is_empty:
        raise _fail(f"{name} must be a non-empty {' or '.join(t.__name__ for t in types)}", name)
    minx, miny, maxx, maxy = geometry.bounds
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
        raise _fail(f"{name} has non-finite coordinates", name)
    if minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        raise _fail(f"{name} reaches outside lon [-180, 180] / lat [-90, 90]", name)


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass in __post_init__


# ---------------------------------------------------------------------- entries


@dataclass(frozen=True, slots=True)
class Sector:
    """One cell (sector) of a site: what the cell broadcast channel addresses.

    ``id`` is ``f"{site}-{number}"``; ``azimuth`` is in degrees clockwise from north;
    ``coverage`` is the polygon the cell serves.
    """

    id: str
    site: str
    number: int
    azimuth: float
    beamwidth: float
    radius_m: float
    coverage: Polygon

    def __post_init__(self) -> None:
        _text(self.site, "site")
        _integer(self.number, "sector", 1, 99)
        if self.id != f"{self.site}-{self.number}":
            raise _fail(f"sector id must be '{self.site}-{self.number}', got {self.id!r}", "id")
        _set(self, "azimuth", _number(self.azimuth, "azimuth", 0.0, 360.0, hi_open=True))
        _set(self, "beamwidth", _number(self.beamwidth, "beamwidth", 0.0, 360.0, lo_open=True))
        _set(self, "radius_m", _number(self.radius_m, "radius_m", 0.0, 1e6, lo_open=True))
        _check_area(self.coverage, "coverage", (Polygon,))

    def __repr__(self) -> str:
        return f"Sector({self.id!r}, azimuth={self.azimuth}, radius_m={self.radius_m})"


@dataclass(frozen=True, slots=True)
class CellSite:
    """A mast at (lon, lat) with its sectors, ordered by sector number."""

    id: str
    lon: float
    lat: float
    sectors: tuple[Sector, ...]

    def __post_init__(self) -> None:
        _check_point_entry(self)
        sectors = tuple(sorted(self.sectors, key=lambda s: s.number))
        if not sectors:
            raise _fail(f"site {self.id} has no sectors", "sectors")
        numbers = [s.number for s in sectors]
        if len(set(numbers)) != len(numbers):
            raise _fail(f"site {self.id} repeats a sector number", "sector")
        for sector in sectors:
            if sector.site != self.id:
                raise _fail(f"sector {sector.id} names site {sector.site}, not {self.id}", "site")
        _set(self, "sectors", sectors)

    def __repr__(self) -> str:
        return f"CellSite({self.id!r}, {self.lon}, {self.lat}, sectors={len(self.sectors)})"


@dataclass(frozen=True, slots=True)
class Screen:
    """A public display screen; ``lines`` x ``chars_per_line`` is the text it shows at once."""

    id: str
    lon: float
    lat: float
    size_inches: float
    lines: int
    chars_per_line: int
    community: str

    def __post_init__(self) -> None:
        _check_point_entry(self)
        _set(self, "size_inches", _number(self.size_inches, "size_inches", 0.0, 10_000.0, lo_open=True))
        _integer(self.lines, "lines", 1, 1000)
        _integer(self.chars_per_line, "chars_per_line", 1, 10_000)
        _text(self.community, "community")


class StationKind(StrEnum):
    TV = "tv"
    RADIO = "radio"


@dataclass(frozen=True, slots=True)
class Station:
    """A TV or radio broadcaster. Radio has ``frequency_mhz``, TV has ``channel``; ``area`` is
    the code of the unit it serves (the city or a district), if known."""

    id: str
    kind: StationKind
    name: str
    frequency_mhz: float | None
    channel: int | None
    area: str | None
    coverage: Polygon | MultiPolygon = field(repr=False)

    def __post_init__(self) -> None:
        _text(self.id, "id")
        try:
            _set(self, "kind", StationKind(self.kind))
        except ValueError:
            raise _fail(f"kind must be one of {', '.join(k.value for k in StationKind)}", "kind") from None
        _text(self.name, "name")
        if self.kind is StationKind.RADIO:
            _set(self, "frequency_mhz", _number(self.frequency_mhz, "frequency_mhz", 87.0, 108.0))
            if self.channel is not None:
                raise _fail("a radio station has no channel", "channel")
        else:
            _integer(self.channel, "channel", 1, 69)
            if self.frequency_mhz is not None:
                raise _fail("a TV station is given by channel, not frequency_mhz", "frequency_mhz")
        if self.area is not None:
            _text(self.area, "area")
        _check_area(self.coverage, "coverage", (Polygon, MultiPolygon))


@dataclass(frozen=True, slots=True)
class Loudspeaker:
    """A community public-address loudspeaker."""

    id: str
    lon: float
    lat: float
    community: str

    def __post_init__(self) -> None:
        _check_point_entry(self)
        _text(self.community, "community")


# ---------------------------------------------------------------------- registries

E = TypeVar("E")  # an entry
I = TypeVar("I")  # an indexed item (the entry itself, or a cell site's sectors)  # noqa: E741


class _Registry(Generic[E, I]):
    """Entries sorted by id, plus one STRtree over the geometries of the indexed items."""

    kind: ClassVar[str]
    geometry_types: ClassVar[tuple[str, ...]]

    def __init__(self, entries: Iterable[E] = ()) -> None:
        ordered = sorted(entries, key=lambda e: e.id)  # type: ignore[attr-defined]
        by_id: dict[str, E] = {}
        for entry in ordered:
            if entry.id in by_id:  # type: ignore[attr-defined]
                raise InvalidInput(f"duplicate {self.kind} id {entry.id}", field="id")  # type: ignore[attr-defined]
            by_id[entry.id] = entry  # type: ignore[attr-defined]
        self._entries: tuple[E, ...] = tuple(ordered)
        self._by_id = by_id
        self._items: tuple[I, ...] = self._indexed(self._entries)
        self._geoms: np.ndarray = self._geometries(self._items)
        shapely.prepare(self._geoms)
        self._tree = shapely.STRtree(self._geoms)

    # --- per kind
    def _indexed(self, entries: tuple[E, ...]) -> tuple[I, ...]:
        return entries  # type: ignore[return-value]

    def _geometries(self, items: tuple[I, ...]) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def _feature(cls, entry: E) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    @classmethod
    def _entries_from_features(cls, features: list[tuple[dict, BaseGeometry]]) -> list[E]:
        raise NotImplementedError

    # --- lookups
    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._by_id

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._entries == other._entries  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} entries)"

    @property
    def entries(self) -> tuple[E, ...]:
        return self._entries

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def get(self, entry_id: str) -> E:
        """The entry with this id; :class:`NotFound` (field ``id``) if there is none."""
        try:
            return self._by_id[entry_id]
        except (KeyError, TypeError):
            raise NotFound(f"no {self.kind} entry with id {entry_id!r}", field="id") from None

    def query(self, geometry: BaseGeometry | None) -> tuple[I, ...]:
        """Indexed items whose geometry intersects ``geometry`` (boundary included), by id."""
        if geometry is None or geometry.is_empty or not self._items:
            return ()
        index = self._tree.query(geometry, predicate="intersects")
        index.sort()
        items = self._items
        return tuple(items[i] for i in index.tolist())

    # --- GeoJSON
    def to_geojson(self) -> dict[str, Any]:
        """The registry as a GeoJSON FeatureCollection (a dict ready for ``json.dumps``)."""
        features = [feature for entry in self._entries for feature in self._feature(entry)]
        shaped = [f for f in features if isinstance(f["geometry"], BaseGeometry)]
        if shaped:  # one vectorised GEOS call (exact: coordinates round-trip bit for bit)
            texts = shapely.to_geojson(np.array([f["geometry"] for f in shaped], dtype=object))
            for feature, text in zip(shaped, texts.tolist(), strict=True):
                feature["geometry"] = json.loads(text)
        return {"type": "FeatureCollection", "features": features}

    @classmethod
    def from_geojson(cls, document: Any) -> _Registry[E, I]:
        """Read a FeatureCollection as written by :meth:`to_geojson`, checking every feature."""
        if not isinstance(document, Mapping) or document.get("type") != "FeatureCollection":
            raise InvalidInput("expected a GeoJSON FeatureCollection", field="type")
        features = document.get("features")
        if not isinstance(features, list):
            raise InvalidInput("features must be a list", field="features")
        return cls(cls._entries_from_features(_parse_features(features, cls.geometry_types)))

    def write_geojson(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_geojson(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def read_geojson(cls, path: str | Path) -> _Registry[E, I]:
        return cls.from_geojson(_read_json(path))


def _read_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{path} does not exist", field="file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path} is not JSON: {exc}", field="file") from None


def _feature(entry_id: str, properties: dict[str, Any], geometry: BaseGeometry) -> dict[str, Any]:
    """A feature whose geometry :meth:`_Registry.to_geojson` turns into GeoJSON in one batch."""
    return {"type": "Feature", "id": entry_id, "properties": properties, "geometry": geometry}


def _point_feature(entry_id: str, lon: float, lat: float, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": entry_id,
        "properties": properties,
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
    }


def _parse_features(features: list[Any], geometry_types: tuple[str, ...]) -> list[tuple[Mapping, BaseGeometry]]:
    """The properties and geometry of every feature, checked; errors name ``features[i]...``.

    Geometries are read and checked in vectorised GEOS calls; only when that fails is each
    one read alone, to name the culprit.
    """
    props_list: list[Mapping[str, Any]] = []
    raws: list[str] = []
    for i, feature in enumerate(features):
        where = f"features[{i}]"
        if not isinstance(feature, Mapping) or feature.get("type") != "Feature":
            raise InvalidInput("expected a GeoJSON Feature", field=f"{where}.type")
        props = feature.get("properties")
        if not isinstance(props, Mapping):
            raise InvalidInput("properties must be an object", field=f"{where}.properties")
        raw = feature.get("geometry")
        if not isinstance(raw, Mapping):
            raise InvalidInput("geometry must be a GeoJSON geometry object", field=f"{where}.geometry")
        if raw.get("type") not in geometry_types:
            raise InvalidInput(
                f"geometry must be a {' or '.join(geometry_types)}, got {raw.get('type')!r}",
                field=f"{where}.geometry.type",
            )
        try:
            raws.append(json.dumps({"type": raw["type"], "coordinates": raw.get("coordinates")}, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"coordinates are not numbers: {exc}", field=f"{where}.geometry.coordinates") from None
        props_list.append(props)
    if not raws:
        return []
    try:
        geoms = shapely.from_geojson(np.array(raws, dtype=object))
    except shapely.errors.GEOSException:
        for i, text in enumerate(raws):
            try:
                shapely.from_geojson(text)
            except shapely.errors.GEOSException as exc:
                raise InvalidInput(
                    f"geometry coordinates are not valid GeoJSON: {exc}", field=f"features[{i}].geometry.coordinates"
                ) from None
        raise  # pragma: no cover - the batch failed but no single geometry does
    bounds = shapely.bounds(geoms)
    with np.errstate(invalid="ignore"):
        bad = (
            shapely.is_empty(geoms)
            | ~np.isfinite(bounds).all(axis=1)
            | (bounds[:, 0] < -180)
            | (bounds[:, 2] > 180)
            | (bounds[:, 1] < -90)
            | (bounds[:, 3] > 90)
        )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInput(
            "geometry is empty or reaches outside lon [-180, 180] / lat [-90, 90]",
            field=f"features[{i}].geometry.coordinates",
        )
    areal = shapely.get_type_id(geoms) != shapely.GeometryType.POINT
    invalid = areal & ~shapely.is_valid(geoms)
    if invalid.any():
        i = int(np.flatnonzero(invalid)[0])
        reason = shapely.is_valid_reason(geoms[i])
        raise InvalidInput(f"geometry is not a valid polygon: {reason}", field=f"features[{i}].geometry.coordinates")
    return list(zip(props_list, geoms.tolist(), strict=True))


def _prop(props: Mapping[str, Any], name: str, *, optional: bool = False) -> Any:
    value = props.get(name)
    if value is None and not optional:
        raise InvalidInput(f"property {name} is missing", field=f"properties.{name}")
    return value


_GEOJSON_FIELDS = {
    "lon": "geometry.coordinates",
    "lat": "geometry.coordinates",
    "coverage": "geometry.coordinates",
}


def _build(make: Callable[[], E], where: str, *, csv_line: int | None = None) -> E:
    """Call ``make`` and re-home a field-level InvalidInput under ``where`` (GeoJSON) or a CSV line."""
    try:
        return make()
    except InvalidInput as exc:
        name = exc.field or ""
        if csv_line is not None:
            raise InvalidInput(exc.message, field=f"line {csv_line}: {name}") from None
        path = _GEOJSON_FIELDS.get(name, f"properties.{name}")
        raise InvalidInput(exc.message, field=f"{where}.{path}") from None


def _check_unique(ids: Iterable[str], where: Callable[[int], str]) -> None:
    seen: set[str] = set()
    for i, entry_id in enumerate(ids):
        if entry_id in seen:
            raise InvalidInput(f"duplicate id {entry_id}", field=where(i))
        seen.add(entry_id)


class CellRegistry(_Registry[CellSite, Sector]):
    """Cell sites; the tree indexes every sector's coverage polygon."""

    kind = "cells"
    geometry_types = ("Polygon",)

    def _indexed(self, entries: tuple[CellSite, ...]) -> tuple[Sector, ...]:
        sectors = tuple(sorted((s for site in entries for s in site.sectors), key=lambda s: s.id))
        _check_unique((s.id for s in sectors), lambda i: "sectors.id")
        return sectors

    def _geometries(self, items: tuple[Sector, ...]) -> np.ndarray:
        return np.array([s.coverage for s in items], dtype=object)

    @property
    def sectors(self) -> tuple[Sector, ...]:
        """Every sector, ordered by id."""
        return self._items

    def sector(self, sector_id: str) -> Sector:
        site_id, _, _ = str(sector_id).rpartition("-")
        site = self._by_id.get(site_id)
        for sector in site.sectors if site is not None else ():
            if sector.id == sector_id:
                return sector
        raise NotFound(f"no cell sector with id {sector_id!r}", field="id")

    @classmethod
    def _feature(cls, site: CellSite) -> Iterator[dict[str, Any]]:
        for s in site.sectors:
            props = {
                "id": s.id,
                "site": site.id,
                "sector": s.number,
                "azimuth": s.azimuth,
                "beamwidth": s.beamwidth,
                "radius_m": s.radius_m,
                "site_lon": site.lon,
                "site_lat": site.lat,
            }
            yield _feature(s.id, props, s.coverage)

    @classmethod
    def _entries_from_features(cls, features: list[tuple[Mapping, BaseGeometry]]) -> list[CellSite]:
        sites: dict[str, tuple[float, float, list[Sector]]] = {}
        seen: set[str] = set()
        for i, (props, geometry) in enumerate(features):
            where = f"features[{i}]"
            names = ("id", "site", "sector", "azimuth", "beamwidth", "radius_m", "site_lon", "site_lat")
            try:
                values = {name: _prop(props, name) for name in names}
            except InvalidInput as exc:
                raise exc.at(where) from None
            sector = _build(
                lambda v=values, g=geometry: Sector(
                    v["id"], v["site"], v["sector"], v["azimuth"], v["beamwidth"], v["radius_m"], g
                ),
                where,
            )
            if sector.id in seen:
                raise InvalidInput(f"duplicate sector id {sector.id}", field=f"{where}.properties.id")
            seen.add(sector.id)
            try:
                lon = _number(values["site_lon"], "site_lon", -180.0, 180.0)
                lat = _number(values["site_lat"], "site_lat", -90.0, 90.0)
            except InvalidInput as exc:
                raise exc.at(f"{where}.properties") from None
            if sector.site not in sites:
                sites[sector.site] = (lon, lat, [])
            first_lon, first_lat, sectors = sites[sector.site]
            if (lon, lat) != (first_lon, first_lat):
                name = "site_lon" if lon != first_lon else "site_lat"
                raise InvalidInput(
                    f"site {sector.site} is at ({first_lon}, {first_lat}) in an earlier feature",
                    field=f"{where}.properties.{name}",
                )
            sectors.append(sector)
        return [CellSite(site_id, lon, lat, tuple(sectors)) for site_id, (lon, lat, sectors) in sites.items()]


class _PointRegistry(_Registry[E, E]):
    """Registries of point entries (attributes ``lon``, ``lat``), with CSV as well as GeoJSON."""

    geometry_types = ("Point",)
    csv_columns: ClassVar[tuple[str, ...]]

    def _geometries(self, items: tuple[E, ...]) -> np.ndarray:
        lon = np.array([e.lon for e in items], dtype=np.float64)  # type: ignore[attr-defined]
        lat = np.array([e.lat for e in items], dtype=np.float64)  # type: ignore[attr-defined]
        return shapely.points(lon, lat) if len(items) else np.empty(0, dtype=object)

    @property
    def coordinates(self) -> np.ndarray:
        """An (n, 2) array of (lon, lat), in id order."""
        return shapely.get_coordinates(self._geoms)

    @classmethod
    def _from_values(cls, values: Mapping[str, Any]) -> E:
        raise NotImplementedError

    @classmethod
    def _feature(cls, entry: E) -> Iterator[dict[str, Any]]:
        props = {name: getattr(entry, name) for name in cls.csv_columns if name not in ("lon", "lat")}
        yield _point_feature(entry.id, entry.lon, entry.lat, props)  # type: ignore[attr-defined]

    @classmethod
    def _entries_from_features(cls, features: list[tuple[Mapping, BaseGeometry]]) -> list[E]:
        entries: list[E] = []
        for i, (props, point) in enumerate(features):
            where = f"features[{i}]"
            try:
                values = {name: _prop(props, name) for name in cls.csv_columns if name not in ("lon", "lat")}
            except InvalidInput as exc:
                raise exc.at(where) from None
            values["lon"], values["lat"] = point.x, point.y
            entries.append(_build(lambda v=values: cls._from_values(v), where))
        _check_unique((e.id for e in entries), lambda i: f"features[{i}].properties.id")  # type: ignore[attr-defined]
        return entries

    # --- CSV
    def to_csv(self) -> str:
        """The registry as CSV text, header first (columns :attr:`csv_columns`)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.csv_columns)
        for entry in self._entries:
            writer.writerow([_csv_text(getattr(entry, name)) for name in self.csv_columns])
        return out.getvalue()

    @classmethod
    def from_csv(cls, text: str) -> _PointRegistry[E]:
        """Read CSV as written by :meth:`to_csv`; errors name ``line N: column``."""
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        for name in cls.csv_columns:
            if name not in header:
                raise InvalidInput(f"the header has no column {name}", field=f"line 1: {name}")
        entries: list[E] = []
        seen: set[str] = set()
        for row in reader:
            line = reader.line_num
            values: dict[str, Any] = {}
            for name in cls.csv_columns:
                raw = row.get(name)
                if raw is None or not raw.strip():
                    raise InvalidInput(f"{name} is empty", field=f"line {line}: {name}")
                try:
                    values[name] = cls._csv_value(name, raw.strip())
                except ValueError:
                    raise InvalidInput(f"{name} cannot be read from {raw!r}", field=f"line {line}: {name}") from None
            entry = _build(lambda v=values: cls._from_values(v), "", csv_line=line)
            if entry.id in seen:  # type: ignore[attr-defined]
                raise InvalidInput(f"duplicate id {entry.id}", field=f"line {line}: id")  # type: ignore[attr-defined]
            seen.add(entry.id)  # type: ignore[attr-defined]
            entries.append(entry)
        return cls(entries)

    @classmethod
    def _csv_value(cls, name: str, raw: str) -> Any:
        kind = cls._csv_types.get(name, str)  # type: ignore[attr-defined]
        return kind(raw)

    def write_csv(self, path: str | Path) -> None:
        Path(path).write_text(self.to_csv(), encoding="utf-8")

    @classmethod
    def read_csv(cls, path: str | Path) -> _PointRegistry[E]:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InvalidInput(f"{path} does not exist", field="file") from None
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{path} is not UTF-8: {exc}", field="file") from None
        return cls.from_csv(text.removeprefix("\ufeff"))


def _csv_text(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _csv_float(raw: str) -> float:
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


class ScreenRegistry(_PointRegistry[Screen]):
    kind = "screens"
    csv_columns = ("id", "lon", "lat", "size_inches", "lines", "chars_per_line", "community")
    _csv_types: ClassVar[dict[str, Callable[[str], Any]]] = {
        "lon": _csv_float,
        "lat": _csv_float,
        "size_inches": _csv_float,
        "lines": int,
        "chars_per_line": int,
    }

    @classmethod
    def _from_values(cls, v: Mapping[str, Any]) -> Screen:
        return Screen(v["id"], v["lon"], v["lat"], v["size_inches"], v["lines"], v["chars_per_line"], v["community"])


class LoudspeakerRegistry(_PointRegistry[Loudspeaker]):
    kind = "loudspeakers"
    csv_columns = ("id", "lon", "lat", "community")
    _csv_types: ClassVar[dict[str, Callable[[str], Any]]] = {"lon": _csv_float, "lat": _csv_float}

    @classmethod
    def _from_values(cls, v: Mapping[str, Any]) -> Loudspeaker:
        return Loudspeaker(v["id"], v["lon"], v["lat"], v["community"])


class StationRegistry(_Registry[Station, Station]):
    kind = "stations"
    geometry_types = ("Polygon", "MultiPolygon")

    def _geometries(self, items: tuple[Station, ...]) -> np.ndarray:
        return np.array([s.coverage for s in items], dtype=object)

    @classmethod
    def _feature(cls, s: Station) -> Iterator[dict[str, Any]]:
        props = {
            "id": s.id,
            "kind": s.kind.value,
            "name": s.name,
            "frequency_mhz": s.frequency_mhz,
            "channel": s.channel,
            "area": s.area,
        }
        yield _feature(s.id, props, s.coverage)

    @classmethod
    def _entries_from_features(cls, features: list[tuple[Mapping, BaseGeometry]]) -> list[Station]:
        entries: list[Station] = []
        for i, (props, geometry) in enumerate(features):
            where = f"features[{i}]"
            try:
                values = {name: _prop(props, name) for name in ("id", "kind", "name")}
            except InvalidInput as exc:
                raise exc.at(where) from None
            values.update({name: props.get(name) for name in ("frequency_mhz", "channel", "area")})
            station = _build(
                lambda v=values, g=geometry: Station(
                    v["id"], v["kind"], v["name"], v["frequency_mhz"], v["channel"], v["area"], g
                ),
                where,
            )
            entries.append(station)
        _check_unique((e.id for e in entries), lambda i: f"features[{i}].properties.id")
        return entries


# ---------------------------------------------------------------------- all four kinds


class FacilityRegistry:
    """The four registries together, with the targeting queries and directory save/load."""

    FILES: ClassVar[dict[str, str]] = {
        "cells": "cells.geojson",
        "screens": "screens.geojson",
        "stations": "stations.geojson",
        "loudspeakers": "loudspeakers.geojson",
    }
    _KINDS: ClassVar[dict[str, type[_Registry]]] = {
        "cells": CellRegistry,
        "screens": ScreenRegistry,
        "stations": StationRegistry,
        "loudspeakers": LoudspeakerRegistry,
    }

    def __init__(
        self,
        cells: CellRegistry | Iterable[CellSite] = (),
        screens: ScreenRegistry | Iterable[Screen] = (),
        stations: StationRegistry | Iterable[Station] = (),
        loudspeakers: LoudspeakerRegistry | Iterable[Loudspeaker] = (),
    ) -> None:
        self.cells = cells if isinstance(cells, CellRegistry) else CellRegistry(cells)
        self.screens = screens if isinstance(screens, ScreenRegistry) else ScreenRegistry(screens)
        self.stations = stations if isinstance(stations, StationRegistry) else StationRegistry(stations)
        self.loudspeakers = (
            loudspeakers if isinstance(loudspeakers, LoudspeakerRegistry) else LoudspeakerRegistry(loudspeakers)
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FacilityRegistry):
            return NotImplemented
        return all(getattr(self, kind) == getattr(other, kind) for kind in self.FILES)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "FacilityRegistry(" + ", ".join(f"{k}={n}" for k, n in self.counts().items()) + ")"

    def counts(self) -> dict[str, int]:
        """Entries per kind, plus ``sectors``."""
        return {
            "cells": len(self.cells),
            "sectors": len(self.cells.sectors),
            "screens": len(self.screens),
            "stations": len(self.stations),
            "loudspeakers": len(self.loudspeakers),
        }

    # --- targeting
    def sectors_intersecting(self, geometry: BaseGeometry | None) -> tuple[Sector, ...]:
        """Cell sectors whose coverage intersects (or touches) ``geometry``, by id."""
        return self.cells.query(geometry)

    def screens_inside(self, geometry: BaseGeometry | None) -> tuple[Screen, ...]:
        """Screens inside ``geometry`` or on its boundary, by id."""
        return self.screens.query(geometry)

    def loudspeakers_inside(self, geometry: BaseGeometry | None) -> tuple[Loudspeaker, ...]:
        """Loudspeakers inside ``geometry`` or on its boundary, by id."""
        return self.loudspeakers.query(geometry)

    def stations_intersecting(self, geometry: BaseGeometry | None) -> tuple[Station, ...]:
        """Stations whose coverage intersects (or touches) ``geometry``, by id."""
        return self.stations.query(geometry)

    def unknown_communities(self, gazetteer: Gazetteer) -> list[str]:
        """Ids of screens and loudspeakers whose community code is not a community of ``gazetteer``."""
        known = {u.code for u in gazetteer.units_at(Level.COMMUNITY)}
        return [e.id for kind in (self.screens, self.loudspeakers) for e in kind if e.community not in known]

    # --- files
    def save(self, directory: str | Path) -> dict[str, Path]:
        """Write one GeoJSON file per kind into ``directory`` (created if need be); returns the paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {}
        for kind, name in self.FILES.items():
            path = directory / name
            getattr(self, kind).write_geojson(path)
            paths[kind] = path
        return paths

    @classmethod
    def load(cls, directory: str | Path) -> FacilityRegistry:
        """Read the four files :meth:`save` writes; a bad feature's field is prefixed with its kind."""
        directory = Path(directory)
        loaded = {}
        for kind, name in cls.FILES.items():
            try:
                loaded[kind] = cls._KINDS[kind].read_geojson(directory / name)
            except InvalidInput as exc:
                raise exc.at(kind) from None
        return cls(**loaded)


# ---------------------------------------------------------------------- demo generators


def _split(total: int, weights: Sequence[float]) -> np.ndarray:
    """``total`` split into integers proportional to ``weights`` (largest remainder, ties by position)."""
    w = np.asarray(weights, dtype=np.float64)
    if total <= 0 or len(w) == 0 or w.sum() <= 0:
        return np.zeros(len(w), dtype=np.int64)
    exact = total * w / w.sum()
    shares = np.floor(exact).astype(np.int64)
    order = np.lexsort((np.arange(len(w)), -(exact - shares)))
    shares[order[: total - int(shares.sum())]] += 1
    return shares


def _points_in(geometry: BaseGeometry, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` uniformly random points strictly inside ``geometry``, rounded, as an (n, 2) array."""
    if count == 0:
        return np.empty((0, 2))
    minx, miny, maxx, maxy = geometry.bounds
    shapely.prepare(geometry)
    found: list[np.ndarray] = []
    n_found = 0
    while n_found < count:
        n = max(16, 3 * (count - n_found))
        x = np.round(rng.uniform(minx, maxx, n), COORD_DECIMALS)
        y = np.round(rng.uniform(miny, maxy, n), COORD_DECIMALS)
        inside = shapely.contains_xy(geometry, x, y)
        found.append(np.column_stack([x[inside], y[inside]]))
        n_found += int(inside.sum())
    return np.concatenate(found)[:count]


def _km_to_degrees(lat: np.ndarray | float) -> tuple[Any, Any]:
    """Degrees of (lon, lat) per km at latitude ``lat``."""
    return 1.0 / (KM_PER_DEGREE_LON_EQUATOR * np.cos(np.radians(lat))), 1.0 / KM_PER_DEGREE_LAT


def sector_wedge(
    lon: np.ndarray | float,
    lat: np.ndarray | float,
    azimuth: np.ndarray | float,
    radius_m: np.ndarray | float,
    beamwidth: float = 120.0,
) -> np.ndarray:
    """Wedge polygons (apex at the mast, arc of ``ARC_POINTS`` vertices), vectorised over its arguments."""
    lon, lat, azimuth, radius_m = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (lon, lat, azimuth, radius_m))
    )
    steps = np.linspace(-beamwidth / 2.0, beamwidth / 2.0, ARC_POINTS)
    theta = np.radians(azimuth[:, None] + steps[None, :])
    dlon, dlat = _km_to_degrees(lat)
    r_km = radius_m[:, None] / 1000.0
    arc_x = lon[:, None] + r_km * np.sin(theta) * np.asarray(dlon)[:, None]
    arc_y = lat[:, None] + r_km * np.cos(theta) * dlat
    apex_x, apex_y = lon[:, None], lat[:, None]
    xs = np.round(np.hstack([apex_x, arc_x, apex_x]), COORD_DECIMALS)
    ys = np.round(np.hstack([apex_y, arc_y, apex_y]), COORD_DECIMALS)
    return shapely.polygons(np.stack([xs, ys], axis=-1))


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent streams per kind, so changing one kind's count leaves the others alone."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _community_points(
    gazetteer: Gazetteer, counts: Sequence[int], rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    communities = gazetteer.units_at(Level.COMMUNITY)
    points, codes = [], []
    for unit, n in zip(communities, counts, strict=True):
        if n:
            points.append(_points_in(unit.geometry, int(n), rng))
            codes.extend([unit.code] * int(n))
    return (np.concatenate(points) if points else np.empty((0, 2))), codes


def generate_cell_sites(
    gazetteer: Gazetteer, *, seed: int = DEFAULT_SEED, count: int = 6000, sectors: int = 3, beamwidth: float = 120.0
) -> list[CellSite]:
    """``count`` sites, at least one per community, the rest by population; ``sectors`` wedges each.

    A sector's radius is 0.9 x the typical spacing of sites in its community (1 / sqrt of
    sites per km2), jittered by +-15% and clipped to [300 m, 3 km].
    """
    rng = _rng(seed, 1)
    communities = gazetteer.units_at(Level.COMMUNITY)
    pops = np.array([u.population for u in communities], dtype=np.float64)
    per = 1 + _split(max(count - len(communities), 0), pops) if count >= len(communities) else _split(count, pops)
    points, _ = _community_points(gazetteer, per, rng)
    # site density per community, km2 from degrees2 at the community's latitude
    areas = np.array([u.geometry.area for u in communities])
    lats = np.array([u.geometry.centroid.y for u in communities])
    km2 = areas * KM_PER_DEGREE_LAT * KM_PER_DEGREE_LON_EQUATOR * np.cos(np.radians(lats))
    spacing_km = 1.0 / np.sqrt(per / km2)
    site_spacing = np.repeat(spacing_km, per)
    n_sites = len(points)
    jitter = rng.uniform(0.85, 1.15, n_sites)
    radius_m = np.round(np.clip(900.0 * site_spacing * jitter, 300.0, 3000.0), 0)
    base = rng.uniform(0.0, 360.0 / sectors, n_sites)
    azimuths = np.round(base[:, None] + np.arange(sectors)[None, :] * 360.0 / sectors, 1) % 360.0
    wedges = sector_wedge(
        np.repeat(points[:, 0], sectors),
        np.repeat(points[:, 1], sectors),
        azimuths.ravel(),
        np.repeat(radius_m, sectors),
        beamwidth,
    ).reshape(n_sites, sectors)
    sites = []
    for i in range(n_sites):
        site_id = f"CS{i + 1:05d}"
        r = float(radius_m[i])
        sector_list = tuple(
            Sector(f"{site_id}-{k + 1}", site_id, k + 1, float(azimuths[i, k]), beamwidth, r, wedges[i, k])
            for k in range(sectors)
        )
        sites.append(CellSite(site_id, float(points[i, 0]), float(points[i, 1]), sector_list))
    return sites


# (size in inches, lines, full-width characters per line, relative frequency): indoor LCDs
# in lobbies, metro and bus shelters; outdoor LED walls show fewer, larger characters.
SCREEN_MODELS: tuple[tuple[float, int, int, float], ...] = (
    (32.0, 3, 14, 0.20),
    (43.0, 4, 16, 0.25),
    (55.0, 4, 20, 0.20),
    (65.0, 5, 22, 0.12),
    (86.0, 6, 26, 0.08),
    (150.0, 2, 12, 0.07),
    (200.0, 2, 16, 0.05),
    (300.0, 3, 20, 0.03),
)


def generate_screens(gazetteer: Gazetteer, *, seed: int = DEFAULT_SEED, count: int = 3000) -> list[Screen]:
    """``count`` screens shared among communities by population, models drawn from :data:`SCREEN_MODELS`."""
    rng = _rng(seed, 2)
    communities = gazetteer.units_at(Level.COMMUNITY)
    per = _split(count, [u.population for u in communities])
    points, codes = _community_points(gazetteer, per, rng)
    weights = np.array([m[3] for m in SCREEN_MODELS])
    models = rng.choice(len(SCREEN_MODELS), size=len(points), p=weights / weights.sum())
    screens = []
    for i, (model, code) in enumerate(zip(models.tolist(), codes, strict=True)):
        size, lines, chars, _ = SCREEN_MODELS[model]
        screens.append(Screen(f"SC{i + 1:05d}", float(points[i, 0]), float(points[i, 1]), size, lines, chars, code))
    return screens


def generate_loudspeakers(
    gazetteer: Gazetteer, *, seed: int = DEFAULT_SEED, per_community: int = 2
) -> list[Loudspeaker]:
    """``per_community`` loudspeakers at random points of every community."""
    rng = _rng(seed, 3)
    communities = gazetteer.units_at(Level.COMMUNITY)
    points, codes = _community_points(gazetteer, [per_community] * len(communities), rng)
    return [
        Loudspeaker(f"LS{i + 1:05d}", float(points[i, 0]), float(points[i, 1]), code) for i, code in enumerate(codes)
    ]


WUTONG_MOUNTAIN = (114.205, 22.582)  # transmitter of the city-wide radio circles
CITY_RADIO_RADIUS_KM = 60.0

# (id, kind, name, frequency MHz or channel, area: "city" | district code, circle?)
_STATIONS: tuple[tuple[str, str, str, float | int, str, bool], ...] = (
    ("TV01", "tv", "深圳卫视 Shenzhen Satellite TV", 21, "city", False),
    ("TV02", "tv", "深圳都市频道 Shenzhen Urban", 24, "city", False),
    ("TV03", "tv", "深圳电视剧频道 Shenzhen Drama", 27, "city", False),
    ("TV04", "tv", "深圳财经生活频道 Shenzhen Finance & Life", 31, "city", False),
    ("TV05", "tv", "宝安电视台 Bao'an TV", 35, "440306", True),
    ("TV06", "tv", "龙岗电视台 Longgang TV", 38, "440307", True),
    ("FM01", "radio", "深圳新闻频率 Shenzhen News Radio", 89.8, "city", True),
    ("FM02", "radio", "深圳交通频率 Shenzhen Traffic Radio", 106.2, "city", True),
    ("FM03", "radio", "深圳音乐频率 Shenzhen Music Radio", 97.1, "city", True),
    ("FM04", "radio", "深圳生活频率 Shenzhen Life Radio", 94.2, "city", True),
    ("FM05", "radio", "深圳先锋898 Shenzhen Pioneer", 98.0, "city", False),
    ("FM06", "radio", "宝安广播 Bao'an Radio", 102.6, "440306", True),
    ("FM07", "radio", "龙岗广播 Longgang Radio", 100.1, "440307", True),
    ("FM08", "radio", "龙华广播 Longhua Radio", 103.7, "440309", True),
)


def _circle(lon: float, lat: float, radius_km: float, vertices: int = 64) -> Polygon:
    theta = np.linspace(0.0, 2.0 * np.pi, vertices, endpoint=False)
    dlon, dlat = _km_to_degrees(lat)
    xs = np.round(lon + radius_km * np.sin(theta) * dlon, COORD_DECIMALS)
    ys = np.round(lat + radius_km * np.cos(theta) * dlat, COORD_DECIMALS)
    return Polygon(np.column_stack([xs, ys]))


def generate_stations(gazetteer: Gazetteer) -> list[Station]:
    """6 TV and 8 radio stations: city-wide ones cover the city outline or a 60 km circle
    about Wutong Mountain; district ones a circle about the district that covers it."""
    stations = []
    for station_id, kind, name, tuning, area, circle in _STATIONS:
        unit = gazetteer.city if area == "city" else gazetteer.unit(area)
        if not circle:
            coverage = unit.geometry
        elif area == "city":
            coverage = _circle(*WUTONG_MOUNTAIN, CITY_RADIO_RADIUS_KM)
        else:
            bounding = shapely.minimum_bounding_circle(unit.geometry)
            centre = bounding.centroid
            reach = shapely.hausdorff_distance(centre, unit.geometry)  # farthest point of the district
            dlon, dlat = _km_to_degrees(centre.y)
            radius_km = 1.05 * reach / min(dlon, dlat)  # degrees to km, erring on the large side
            coverage = _circle(centre.x, centre.y, radius_km)
        stations.append(
            Station(
                station_id,
                StationKind(kind),
                name,
                float(tuning) if kind == "radio" else None,
                int(tuning) if kind == "tv" else None,
                unit.code,
                coverage,
            )
        )
    return stations


def generate_facilities(
    gazetteer: Gazetteer,
    *,
    seed: int = DEFAULT_SEED,
    sites: int = 6000,
    screens: int = 3000,
    loudspeakers_per_community: int = 2,
) -> FacilityRegistry:
    """The demo registries over ``gazetteer`` (the same ``seed`` always gives the same registries)."""
    return FacilityRegistry(
        cells=generate_cell_sites(gazetteer, seed=seed, count=sites),
        screens=generate_screens(gazetteer, seed=seed, count=screens),
        stations=generate_stations(gazetteer),
        loudspeakers=generate_loudspeakers(gazetteer, seed=seed, per_community=loudspeakers_per_community),
    )
