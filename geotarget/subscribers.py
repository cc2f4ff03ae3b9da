"""The subscriber registry: a columnar, memory-mapped snapshot with exact polygon selection.

A snapshot is one directory of numpy ``.npy`` columns, opened with ``mmap_mode="r"`` so
that a city of 17.8 million subscribers costs almost nothing to open and only the pages a
query touches are read::

    id.npy            uint64   subscriber id (unique)
    phone.npy         uint64   E.164 digits, e.g. 8613800138000
    lon.npy, lat.npy  float64  exact WGS84 coordinates (shapely's x/y order)
    language.npy      uint8    index into the manifest's language table (0 = zh-CN, 1 = en)
    channels.npy      uint8    :class:`Channel` bit mask of the channels the subscriber opted in to
    email.npy         S48      address of each non-phone channel, b"" when not opted in
    wechat_openid.npy S28
    app_token.npy     S32
    cell_start.npy    int64    grid offsets: the rows of cell ``c`` are ``cell_start[c]:cell_start[c+1]``
    manifest.json              format version, count, dtypes, language table, grid, sha256 of each file

That is 142 bytes per subscriber plus the grid offsets (8 bytes per cell, at most 2**20 cells).

Rows are sorted by a uniform grid cell over the data's extent (``cell = iy * nx + ix``,
roughly square cells, about 8 subscribers per cell on average, at most 2**20 cells), so a
query reads only the cells under the area's bounding box.

**Selection rule: the boundary is inside.** :meth:`SubscriberSnapshot.select` returns
the subscribers in the *closed* polygon -- exactly the points for which
``shapely.intersects_xy(geometry, lon, lat)`` is true, so a subscriber standing exactly on
an edge or a vertex is warned. It is exact, not approximate: grid blocks wholly inside
the area (``shapely.contains`` on a slightly enlarged block box, so floating-point rounding
of the cell arithmetic can never put a point outside its box) take all their rows without
testing; blocks the boundary may cross are split down to single cells and their points
tested one by one with ``intersects_xy``; blocks outside are skipped. Blocks form a
pyramid (each level 4 x 4 of the one below), so the number of shapely calls follows the
length of the boundary, not the area. The result is sorted ascending.

:func:`write_snapshot` builds a snapshot from in-memory columns, :func:`import_csv` from a
CSV file (validating every row), :func:`generate_subscribers` a synthetic city over a
gazetteer. All three write into a temporary directory beside the target and rename it
into place at the end, so a failure leaves nothing behind. :meth:`SubscriberSnapshot.open`
checks every file's sha256 against the manifest (``verify=False`` skips the hashing, not
the shape and dtype checks).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntFlag
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from broadcast.errors import InvalidInput, NotFound
from geotarget.gazetteer import Gazetteer, Level

__all__ = [
    "COLUMNS",
    "FORMAT_VERSION",
    "LANGUAGES",
    "Channel",
    "Grid",
    "IntegrityError",
    "Subscriber",
    "SubscriberSnapshot",
    "export_csv",
    "generate_subscribers",
    "import_csv",
    "write_snapshot",
]

FORMAT_VERSION = 1
LANGUAGES: tuple[str, ...] = ("zh-CN", "en")
MANIFEST = "manifest.json"
CSV_HEADER = ("id", "phone", "language", "lon", "lat", "channels", "email", "wechat_openid", "app_token")

#: Column name -> numpy dtype string, in file order.
COLUMNS: dict[str, str] = {
    "id": "<u8",
    "phone": "<u8",
    "lon": "<f8",
    "lat": "<f8",
    "language": "|u1",
    "channels": "|u1",
    "email": "|S48",
    "wechat_openid": "|S28",
    "app_token": "|S32",
}
ADDRESS_COLUMNS: dict[str, str] = {"email": "EMAIL", "wechat_openid": "WECHAT", "app_token": "APP_PUSH"}

MAX_CELLS = 1 << 20  # 8 MiB of offsets at most
TARGET_PER_CELL = 8
PYRAMID_FACTOR = 4
# Cell boxes are enlarged by this much (degrees, ~0.1 mm) before they are classified, so a
# point that floor() rounding put into a cell always lies inside that cell's box.
BOX_PAD = 1e-9
CHUNK = 1 << 20  # rows per chunk when writing or generating


class Channel(IntFlag):
    """Bit of each channel in the ``channels`` column."""

    SMS = 1
    VOICE = 2
    EMAIL = 4
    WECHAT = 8
    APP_PUSH = 16

    @property
    def key(self) -> str:
        """The lower-case name used in CSV files and count dictionaries (``app_push``)."""
        return (self.name or "").lower()


CHANNELS: tuple[Channel, ...] = tuple(Channel)


class IntegrityError(InvalidInput):
    """A snapshot file is missing, has the wrong shape, or fails its sha256 check."""


# --------------------------------------------------------------------------------------------
# grid


@dataclass(frozen=True, slots=True)
class Grid:
    """A uniform ``nx`` x ``ny`` grid of cells of ``dx`` x ``dy`` degrees from (``x0``, ``y0``)."""

    x0: float
    y0: float
    dx: float
    dy: float
    nx: int
    ny: int

    @property
    def cells(self) -> int:
        return self.nx * self.ny

    @classmethod
    def fit(cls, lon: np.ndarray, lat: np.ndarray, *, max_cells: int = MAX_CELLS) -> Grid:
        """Roughly square cells over the points' extent, ~``TARGET_PER_CELL`` points per cell."""
        n = len(lon)
        if n == 0:
            return cls(0.0, 0.0, 1.0, 1.0, 1, 1)
        x0, x1 = float(lon.min()), float(lon.max())
        y0, y1 = float(lat.min()), float(lat.max())
        width, height = x1 - x0, y1 - y0
        cells = max(1, min(max_cells, n // TARGET_PER_CELL))
        if width <= 0 and height <= 0:
            nx = ny = 1
        elif height <= 0:
            nx, ny = cells, 1
        elif width <= 0:
            nx, ny = 1, cells
        else:
            side = math.sqrt(width * height / cells)
            nx = max(1, min(cells, round(width / side)))
            ny = max(1, min(cells // nx, round(height / side)))
        # A cell a hair wider than extent/n keeps the maximum coordinate inside the last cell.
        dx = width / nx * (1 + 1e-12) if width > 0 else 1.0
        dy = height / ny * (1 + 1e-12) if height > 0 else 1.0
        return cls(x0, y0, dx, dy, nx, ny)

    def cell_of(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Cell index (int64) of each point, clipped into the grid."""
        ix = np.floor((lon - self.x0) / self.dx)
        iy = np.floor((lat - self.y0) / self.dy)
        np.clip(ix, 0, self.nx - 1, out=ix)
        np.clip(iy, 0, self.ny - 1, out=iy)
        return iy.astype(np.int64) * self.nx + ix.astype(np.int64)

    def as_dict(self) -> dict[str, Any]:
        return {"x0": self.x0, "y0": self.y0, "dx": self.dx, "dy": self.dy, "nx": self.nx, "ny": self.ny}


# --------------------------------------------------------------------------------------------
# the snapshot


@dataclass(frozen=True, slots=True)
class Subscriber:
    """One row of a snapshot, decoded."""

    id: int
    phone: int
    language: str
    lon: float
    lat: float
    channels: Channel
    email: str
    wechat_openid: str
    app_token: str


class SubscriberSnapshot:
    """A read-only, memory-mapped subscriber snapshot. Make one with :meth:`open`."""

    def __init__(self, directory: Path, manifest: dict[str, Any], columns: dict[str, np.ndarray]) -> None:
        self.directory = directory
        self.manifest = manifest
        self.count: int = manifest["count"]
        self.languages: tuple[str, ...] = tuple(manifest["languages"])
        self.grid = Grid(**manifest["grid"])
        self.columns = columns
        self.ids: np.ndarray = columns["id"]
        self.phones: np.ndarray = columns["phone"]
        self.lon: np.ndarray = columns["lon"]
        self.lat: np.ndarray = columns["lat"]
        self.language: np.ndarray = columns["language"]
        self.channels: np.ndarray = columns["channels"]
        self.email: np.ndarray = columns["email"]
        self.wechat_openid: np.ndarray = columns["wechat_openid"]
        self.app_token: np.ndarray = columns["app_token"]
        self.cell_start: np.ndarray = columns["cell_start"]
        self._pyramid: list[np.ndarray] | None = None

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: str | Path, *, verify: bool = True) -> SubscriberSnapshot:
        """Open a snapshot read-only. Raises :class:`IntegrityError` if any file does not match
        the manifest (missing, wrong dtype or length, or -- when ``verify`` -- wrong sha256)."""
        directory = Path(directory)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            raise NotFound(f"no subscriber snapshot at {directory} (missing {MANIFEST})", field="directory")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"{manifest_path}: unreadable manifest: {exc}", field=MANIFEST) from exc
        if manifest.get("format") != "subscriber-snapshot" or manifest.get("version") != FORMAT_VERSION:
            raise IntegrityError(f"{manifest_path}: not a version {FORMAT_VERSION} subscriber snapshot", field=MANIFEST)
        count = manifest["count"]
        grid = Grid(**manifest["grid"])
        expected = {**COLUMNS, "cell_start": "<i8"}
        columns: dict[str, np.ndarray] = {}
        for name, dtype in expected.items():
            entry = manifest["files"].get(name)
            path = directory / f"{name}.npy"
            if entry is None or not path.is_file():
                raise IntegrityError(f"snapshot {directory}: column file {path.name} is missing", field=path.name)
            if verify:
                digest = _sha256(path)
                if digest != entry["sha256"]:
                    raise IntegrityError(
                        f"snapshot {directory}: {path.name} fails its sha256 check "
                        f"(manifest {entry['sha256']}, file {digest}); the file was modified or corrupted",
                        field=path.name,
                    )
            try:
                array = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                raise IntegrityError(
                    f"snapshot {directory}: {path.name} is not a valid .npy file", field=path.name
                ) from exc
            length = grid.cells + 1 if name == "cell_start" else count
            if array.dtype != np.dtype(dtype) or array.shape != (length,):
                raise IntegrityError(
                    f"snapshot {directory}: {path.name} is {array.dtype}{array.shape}, expected {dtype}({length},)",
                    field=path.name,
                )
            columns[name] = array
        return cls(directory, manifest, columns)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return f"SubscriberSnapshot({str(self.directory)!r}, count={self.count})"

    @property
    def bytes_on_disk(self) -> int:
        """Total size of the snapshot's files."""
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    @property
    def bytes_per_subscriber(self) -> float:
        return self.bytes_on_disk / max(1, self.count)

    def subscriber(self, row: int) -> Subscriber:
        """Decode one row (a row index, as :meth:`select` returns, not a subscriber id)."""
        return Subscriber(
            id=int(self.ids[row]),
            phone=int(self.phones[row]),
            language=self.languages[int(self.language[row])],
            lon=float(self.lon[row]),
            lat=float(self.lat[row]),
            channels=Channel(int(self.channels[row])),
            email=bytes(self.email[row]).decode("utf-8"),
            wechat_openid=bytes(self.wechat_openid[row]).decode("ascii"),
            app_token=bytes(self.app_token[row]).decode("ascii"),
        )

    # -- selection -----------------------------------------------------------------------------

    def select(self, geometry: BaseGeometry) -> np.ndarray:
        """Row indices (sorted, int64) of the subscribers inside the closed (Multi)Polygon.

        Exactly ``np.flatnonzero(shapely.intersects_xy(geometry, lon, lat))``: a point on
        the boundary is inside.
        """
        if not isinstance(geometry, Polygon | MultiPolygon):
            raise InvalidInput(f"select needs a Polygon or MultiPolygon, not {geometry.geom_type}", field="geometry")
        empty = np.empty(0, dtype=np.int64)
        if geometry.is_empty or self.count == 0:
            return empty
        g = self.grid
        minx, miny, maxx, maxy = geometry.bounds
        ix0 = max(0, math.floor((minx - g.x0) / g.dx) - 1)
        ix1 = min(g.nx - 1, math.floor((maxx - g.x0) / g.dx) + 1)
        iy0 = max(0, math.floor((miny - g.y0) / g.dy) - 1)
        iy1 = min(g.ny - 1, math.floor((maxy - g.y0) / g.dy) + 1)
        if ix0 > ix1 or iy0 > iy1:
            return empty
        shapely.prepare(geometry)
        pyramid = self._block_counts()
        # Blocks at the coarsest level covering the bounding box.
        level = len(pyramid) - 1
        size = PYRAMID_FACTOR**level
        bx = np.arange(ix0 // size, ix1 // size + 1)
        by = np.arange(iy0 // size, iy1 // size + 1)
        bxs, bys = (a.ravel() for a in np.meshgrid(bx, by))
        inside_parts: list[tuple[np.ndarray, np.ndarray, int]] = []
        edge_cells = np.empty(0, dtype=np.int64)
        while True:
            counts = pyramid[level]
            keep = counts[bys, bxs] > 0  # empty blocks cost nothing
            bxs, bys = bxs[keep], bys[keep]
            if len(bxs) == 0:
                break
            size = PYRAMID_FACTOR**level
            boxes = shapely.box(
                g.x0 + bxs * size * g.dx - BOX_PAD,
                g.y0 + bys * size * g.dy - BOX_PAD,
                g.x0 + (bxs + 1) * size * g.dx + BOX_PAD,
                g.y0 + (bys + 1) * size * g.dy + BOX_PAD,
            )
            touching = shapely.intersects(geometry, boxes)
            bxs, bys, boxes = bxs[touching], bys[touching], boxes[touching]
            inside = shapely.contains(geometry, boxes)
            if inside.any():
                inside_parts.append((bxs[inside], bys[inside], size))
            crossing = ~inside
            bxs, bys = bxs[crossing], bys[crossing]
            if level == 0:
                edge_cells = bys.astype(np.int64) * g.nx + bxs
                break
            # Split each crossing block into its PYRAMID_FACTOR x PYRAMID_FACTOR children.
            level -= 1
            f = PYRAMID_FACTOR
            sub = np.arange(f)
            bxs = (bxs[:, None, None] * f + sub[None, None, :]).repeat(f, axis=1).ravel()
            bys = (bys[:, None, None] * f + sub[None, :, None]).repeat(f, axis=2).ravel()
            nxl, nyl = pyramid[level].shape[1], pyramid[level].shape[0]
            ok = (bxs < nxl) & (bys < nyl)
            bxs, bys = bxs[ok], bys[ok]

        starts, ends = self._inside_row_ranges(inside_parts)
        edge_rows = _ranges_to_indices(self.cell_start[edge_cells], self.cell_start[edge_cells + 1])
        if len(starts) == 0 and len(edge_rows) == 0:
            return empty
        lo = min(
            int(starts.min()) if len(starts) else self.count, int(edge_rows.min()) if len(edge_rows) else self.count
        )
        hi = max(int(ends.max()) if len(ends) else 0, int(edge_rows.max()) + 1 if len(edge_rows) else 0)
        # One int8 mark per row of the span: +1 where an inside range starts, -1 where it ends;
        # the running sum is the membership mask. Then the exact test sets the edge points.
        marks = np.zeros(hi - lo + 1, dtype=np.int8)
        marks[starts - lo] += 1  # starts are distinct, and so are ends
        marks[ends - lo] -= 1
        mask = np.cumsum(marks[:-1], dtype=np.int8).view(np.bool_)
        if len(edge_rows):
            hit = shapely.intersects_xy(geometry, self.lon[edge_rows], self.lat[edge_rows])
            mask[edge_rows[hit] - lo] = True
        result = np.flatnonzero(mask)
        result += lo
        return result

    def _inside_row_ranges(self, parts: list[tuple[np.ndarray, np.ndarray, int]]) -> tuple[np.ndarray, np.ndarray]:
        """Row ranges [start, end) covered by fully-inside blocks: one per block per cell row."""
        g = self.grid
        starts: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        for bxs, bys, size in parts:
            xa = bxs * size
            xb = np.minimum((bxs + 1) * size, g.nx)  # exclusive
            rows = np.arange(size)
            iy = (bys[:, None] * size + rows[None, :]).ravel()
            xa = np.repeat(xa, size)
            xb = np.repeat(xb, size)
            ok = iy < g.ny
            iy, xa, xb = iy[ok], xa[ok], xb[ok]
            s = self.cell_start[iy * g.nx + xa]
            e = self.cell_start[iy * g.nx + xb]
            nonempty = e > s
            starts.append(s[nonempty])
            ends.append(e[nonempty])
        if not starts:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.concatenate(starts).astype(np.int64), np.concatenate(ends).astype(np.int64)

    def _block_counts(self) -> list[np.ndarray]:
        """Subscriber counts per block at each pyramid level (level 0 = single cells)."""
        if self._pyramid is None:
            g = self.grid
            counts = np.diff(np.asarray(self.cell_start)).reshape(g.ny, g.nx)
            levels = [counts]
            f = PYRAMID_FACTOR
            while max(levels[-1].shape) > 1:
                c = levels[-1]
                ny, nx = -(-c.shape[0] // f), -(-c.shape[1] // f)
                padded = np.zeros((ny * f, nx * f), dtype=np.int64)
                padded[: c.shape[0], : c.shape[1]] = c
                levels.append(padded.reshape(ny, f, nx, f).sum(axis=(1, 3)))
            self._pyramid = levels
        return self._pyramid

    # -- counting ------------------------------------------------------------------------------

    def count_by_channel(self, indices: np.ndarray | None = None) -> dict[str, int]:
        """How many of the given rows (all rows if None) opted in to each channel."""
        histogram = _histogram(self.channels, indices, 256)
        byte_values = np.arange(256)
        return {c.key: int(histogram[(byte_values & int(c)) != 0].sum()) for c in CHANNELS}

    def count_by_language(self, indices: np.ndarray | None = None) -> dict[str, int]:
        """How many of the given rows (all rows if None) speak each language of the table."""
        histogram = _histogram(self.language, indices, max(256, len(self.languages)))
        return {tag: int(histogram[i]) for i, tag in enumerate(self.languages)}


# --------------------------------------------------------------------------------------------
# writing


def write_snapshot(
    directory: str | Path,
    *,
    ids: np.ndarray,
    phones: np.ndarray,
    lon: np.ndarray,
    lat: np.ndarray,
    language: np.ndarray,
    channels: np.ndarray,
    email: np.ndarray | None = None,
    wechat_openid: np.ndarray | None = None,
    app_token: np.ndarray | None = None,
    languages: Sequence[str] = LANGUAGES,
    overwrite: bool = False,
) -> SubscriberSnapshot:
    """Write in-memory columns as a snapshot (sorted by grid cell) and open it.

    Columns are cast to the snapshot dtypes; the address columns default to empty. Ids
    must be unique. The snapshot appears at ``directory`` only once complete.
    """
    n = len(ids)
    given = {
        "id": ids,
        "phone": phones,
        "lon": lon,
        "lat": lat,
        "language": language,
        "channels": channels,
        "email": email,
        "wechat_openid": wechat_openid,
        "app_token": app_token,
    }
    arrays: dict[str, np.ndarray] = {}
    for name, dtype in COLUMNS.items():
        value = given[name]
        arrays[name] = np.zeros(n, dtype=dtype) if value is None else np.asarray(value).astype(dtype, copy=False)
        if len(arrays[name]) != n:
            raise InvalidInput(f"column {name} has {len(arrays[name])} rows, expected {n}", field=name)
    if len(np.unique(arrays["id"])) != n:
        raise InvalidInput("subscriber ids are not unique", field="id")
    if n and int(arrays["language"].max()) >= len(languages):
        raise InvalidInput("a language index is outside the language table", field="language")
    if not (np.isfinite(arrays["lon"]).all() and np.isfinite(arrays["lat"]).all()):
        raise InvalidInput("coordinates must be finite", field="lon")

    def fill(name: str, order: np.ndarray, a: int, b: int) -> np.ndarray:
        return arrays[name][order[a:b]]

    return _write(Path(directory), arrays["lon"], arrays["lat"], fill, languages, overwrite=overwrite)


def _write(
    directory: Path,
    lon: np.ndarray,
    lat: np.ndarray,
    fill: Callable[[str, np.ndarray, int, int], np.ndarray],
    languages: Sequence[str],
    *,
    overwrite: bool,
    extra: Mapping[str, Any] | None = None,
) -> SubscriberSnapshot:
    """Sort rows by grid cell and write every column, chunk by chunk, into a temp directory
    that is renamed to ``directory`` at the end. ``fill(name, order, a, b)`` returns the
    values of column ``name`` for sorted rows ``a:b`` (``order`` maps sorted -> input row)."""
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} already exists")
    directory.parent.mkdir(parents=True, exist_ok=True)
    n = len(lon)
    grid = Grid.fit(lon, lat)
    cells = np.empty(n, dtype=np.int32)  # < 2**20 cells; chunked to keep the temporaries small
    for a in range(0, n, CHUNK):
        cells[a : a + CHUNK] = grid.cell_of(lon[a : a + CHUNK], lat[a : a + CHUNK])
    order = np.argsort(cells, kind="stable")
    cell_start = np.zeros(grid.cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(cells, minlength=grid.cells), out=cell_start[1:])
    del cells
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        # Plain buffered writes (not a writable memmap, whose dirty pages would all count in
        # this process's RSS), hashing as we go so nothing is read back.
        writers = {name: _NpyWriter(tmp / f"{name}.npy", dtype, n) for name, dtype in COLUMNS.items()}
        try:
            for a in range(0, n, CHUNK):  # chunk-major, so a generator can draw one chunk at a time
                b = min(n, a + CHUNK)
                for name, writer in writers.items():
                    writer.write(fill(name, order, a, b))
        finally:
            for writer in writers.values():
                writer.close()
        cell_writer = _NpyWriter(tmp / "cell_start.npy", "<i8", len(cell_start))
        cell_writer.write(cell_start)
        cell_writer.close()
        writers["cell_start"] = cell_writer
        files = {name: {"dtype": w.dtype.str, "sha256": w.sha256} for name, w in writers.items()}
        manifest = {
            "format": "subscriber-snapshot",
            "version": FORMAT_VERSION,
            "count": n,
            "languages": list(languages),
            "channels": {c.key: int(c) for c in CHANNELS},
            "grid": grid.as_dict(),
            "files": files,
            **(dict(extra) if extra else {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        _swap_into_place(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SubscriberSnapshot.open(directory, verify=False)


class _NpyWriter:
    """Write a 1-D ``.npy`` file sequentially, computing its sha256 on the way."""

    def __init__(self, path: Path, dtype: str, length: int) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.length = length
        self.written = 0
        self._hash = hashlib.sha256()
        self._handle = open(path, "wb")  # noqa: SIM115 -- closed by close()
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (length,)}
        )
        self._put(header.getvalue())

    def _put(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._handle.write(data)

    def write(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        self._put(memoryview(values.view(np.uint8)))
        self.written += len(values)

    def close(self) -> None:
        self._handle.close()
        if self.written != self.length:
            raise RuntimeError(f"{self.path}: wrote {self.written} rows, expected {self.length}")

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def _swap_into_place(tmp: Path, directory: Path) -> None:
    if directory.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".old", dir=directory.parent))
        os.rename(directory, trash / "old")
        os.rename(tmp, directory)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, directory)


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _histogram(column: np.ndarray, indices: np.ndarray | None, size: int) -> np.ndarray:
    """``np.bincount`` of a uint8 column (at ``indices``, or all of it), a chunk at a time so the
    int64 temporaries bincount makes stay small."""
    histogram = np.zeros(size, dtype=np.int64)
    n = len(column) if indices is None else len(indices)
    for a in range(0, n, CHUNK):
        part = column[a : a + CHUNK] if indices is None else column[indices[a : a + CHUNK]]
        histogram += np.bincount(np.asarray(part), minlength=size)[:size]
    return histogram


def _ranges_to_indices(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, e)`` for each pair, vectorised."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(ends, dtype=np.int64) - starts
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# CSV import

_PHONE = re.compile(r"\+?([1-9][0-9]{7,14})")
_CN_MOBILE = re.compile(r"861[3-9][0-9]{9}")
_ID = re.compile(r"[0-9]{1,20}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")


def import_csv(
    path: str | Path, directory: str | Path, *, languages: Sequence[str] = LANGUAGES, overwrite: bool = False
) -> SubscriberSnapshot:
    """Import a CSV file (UTF-8, header ``id,phone,language,lon,lat,channels,email,wechat_openid,app_token``).

    ``channels`` is a ``|``-separated list of channel keys (``sms|app_push``), possibly
    empty. An address column must be filled exactly when its channel is listed. Phones
    are E.164 (8 to 15 digits, optional ``+``); a +86 number must be a mainland mobile
    (``1[3-9]`` and 11 digits). Every row is checked; the first bad one raises
    :class:`InvalidInput` with ``field="line N: column"`` (the header is line 1) and
    nothing is written.
    """
    path = Path(path)
    language_index = {tag: i for i, tag in enumerate(languages)}
    channel_index = {c.key: c for c in CHANNELS}
    widths = {name: np.dtype(COLUMNS[name]).itemsize for name in ADDRESS_COLUMNS}
    parts: dict[str, list[np.ndarray]] = {name: [] for name in COLUMNS}
    buffer: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    lines: list[int] = []
    line_parts: list[np.ndarray] = []

    def flush() -> None:
        for name, values in buffer.items():
            parts[name].append(np.array(values, dtype=COLUMNS[name]) if values else np.empty(0, COLUMNS[name]))
            values.clear()
        line_parts.append(np.array(lines, dtype=np.int64))
        lines.clear()

    if not path.is_file():
        raise InvalidInput(f"cannot read {path}: no such file", field="path")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        line = 0
        try:
            header = next(reader, None)
            if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
                raise InvalidInput(f"the header must be {','.join(CSV_HEADER)}", field="line 1: header")
            for row in reader:
                line = reader.line_num
                if not row:
                    continue
                if len(row) != len(CSV_HEADER):
                    raise InvalidInput(
                        f"expected {len(CSV_HEADER)} columns, found {len(row)}", field=f"line {line}: columns"
                    )
                record = dict(zip(CSV_HEADER, (cell.strip() for cell in row), strict=True))
                values = _parse_row(record, line, language_index, channel_index, widths)
                for name, value in values.items():
                    buffer[name].append(value)
                lines.append(line)
                if len(lines) >= CHUNK:
                    flush()
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"not UTF-8: {exc.reason}", field=f"line {line + 1}: encoding") from exc
        except csv.Error as exc:
            raise InvalidInput(f"malformed CSV: {exc}", field=f"line {reader.line_num}: csv") from exc
    flush()
    arrays = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    line_of = np.concatenate(line_parts)
    ids = arrays["id"]
    if len(ids):
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
        if len(dup):
            # Report the later line of the earliest-occurring duplicate pair.
            later = np.maximum(line_of[order[dup]], line_of[order[dup + 1]])
            first = int(later.min())
            dup_id = int(ids[np.flatnonzero(line_of == first)[0]])
            raise InvalidInput(f"duplicate id {dup_id}", field=f"line {first}: id")
    return write_snapshot(
        directory,
        ids=arrays["id"],
        phones=arrays["phone"],
        lon=arrays["lon"],
        lat=arrays["lat"],
        language=arrays["language"],
        channels=arrays["channels"],
        email=arrays["email"],
        wechat_openid=arrays["wechat_openid"],
        app_token=arrays["app_token"],
        languages=languages,
        overwrite=overwrite,
    )


def _parse_row(
    record: dict[str, str],
    line: int,
    language_index: Mapping[str, int],
    channel_index: Mapping[str, Channel],
    widths: Mapping[str, int],
) -> dict[str, Any]:
    def bad(column: str, message: str) -> InvalidInput:
        return InvalidInput(message, field=f"line {line}: {column}")

    if not _ID.fullmatch(record["id"]) or int(record["id"]) >= 1 << 64:
        raise bad("id", f"id must be an unsigned 64-bit integer, not {record['id']!r}")
    m = _PHONE.fullmatch(record["phone"])
    if m is None:
        raise bad("phone", f"phone must be E.164 digits (8 to 15, optional +), not {record['phone']!r}")
    digits = m.group(1)
    if digits.startswith("86") and not _CN_MOBILE.fullmatch(digits):
        raise bad("phone", f"a +86 phone must be a mainland mobile number (861[3-9] + 9 digits), not {digits}")
    if record["language"] not in language_index:
        raise bad("language", f"unknown language {record['language']!r}; known: {', '.join(language_index)}")
    coords: dict[str, float] = {}
    for column, limit in (("lon", 180.0), ("lat", 90.0)):
        try:
            value = float(record[column])
        except ValueError:
            raise bad(column, f"{column} must be a number, not {record[column]!r}") from None
        if not (math.isfinite(value) and -limit <= value <= limit):
            raise bad(column, f"{column} must be between {-limit:g} and {limit:g}, not {record[column]!r}")
        coords[column] = value
    mask = Channel(0)
    for key in filter(None, (part.strip().lower() for part in record["channels"].split("|"))):
        if key not in channel_index:
            raise bad("channels", f"unknown channel {key!r}; known: {', '.join(channel_index)}")
        mask |= channel_index[key]
    addresses: dict[str, bytes] = {}
    for column, flag_name in ADDRESS_COLUMNS.items():
        text = record[column]
        opted = bool(mask & Channel[flag_name])
        if opted and not text:
            raise bad(column, f"channel {Channel[flag_name].key} is listed but {column} is empty")
        if text and not opted:
            raise bad(column, f"{column} is given but channel {Channel[flag_name].key} is not listed")
        pattern = _EMAIL if column == "email" else _TOKEN
        if text and not pattern.fullmatch(text):
            raise bad(column, f"{column} {text!r} is not well formed")
        encoded = text.encode("utf-8")
        if len(encoded) > widths[column]:
            raise bad(column, f"{column} is longer than {widths[column]} bytes")
        addresses[column] = encoded
    return {
        "id": int(record["id"]),
        "phone": int(digits),
        "lon": coords["lon"],
        "lat": coords["lat"],
        "language": language_index[record["language"]],
        "channels": int(mask),
        **addresses,
    }


def export_csv(snapshot: SubscriberSnapshot, path: str | Path, rows: np.ndarray | None = None) -> None:
    """Write ``snapshot`` (all rows, or the given row indices) as a CSV file :func:`import_csv`
    reads back identically (coordinates written with ``repr``, so exactly)."""
    indices = range(snapshot.count) if rows is None else rows
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for i in indices:
            s = snapshot.subscriber(int(i))
            keys = "|".join(c.key for c in CHANNELS if s.channels & c)
            writer.writerow(
                [s.id, s.phone, s.language, repr(s.lon), repr(s.lat), keys, s.email, s.wechat_openid, s.app_token]
            )


# --------------------------------------------------------------------------------------------
# synthetic generation

# Mainland mobile number segments (the first three digits after +86).
MOBILE_PREFIXES: tuple[int, ...] = (
    *range(130, 140),
    145,
    147,
    149,
    *range(150, 154),
    *range(155, 160),
    162,
    165,
    166,
    167,
    *range(170, 179),
    *range(180, 190),
    191,
    193,
    195,
    196,
    197,
    198,
    199,
)
OPT_IN: dict[Channel, float] = {
    Channel.SMS: 1.0,
    Channel.APP_PUSH: 0.70,
    Channel.WECHAT: 0.50,
    Channel.EMAIL: 0.10,
    Channel.VOICE: 0.05,
}
ENGLISH_SHARE = 0.10
EMAIL_DOMAINS: tuple[bytes, ...] = (b"qq.com", b"163.com", b"126.com", b"gmail.com", b"outlook.com", b"sina.com")
_BASE64URL = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", dtype=np.uint8)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_LOWER = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)


def generate_subscribers(
    gazetteer: Gazetteer, count: int, directory: str | Path, *, seed: int = 0, overwrite: bool = False
) -> SubscriberSnapshot:
    """Generate ``count`` synthetic subscribers over ``gazetteer`` and write them as a snapshot.

    Each community (the deepest level present) gets a share of ``count`` proportional to
    its population (largest-remainder rounding, so shares sum exactly), placed uniformly
    inside it by vectorised rejection sampling with ``shapely.contains_xy``. Everyone has
    SMS; ~70% app push, ~50% WeChat, ~10% email, ~5% voice, independently; ~90% zh-CN and
    ~10% en. Ids run 1..count in generation order; phones are distinct mainland mobiles.
    Deterministic for a given seed; peak memory is about 40 bytes per subscriber plus one
    chunk (under 1 GB for 17.8 million).
    """
    if count < 0:
        raise InvalidInput("count must be >= 0", field="count")
    units = next((u for level in reversed(tuple(Level)) if (u := gazetteer.units_at(level))), ())
    populations = np.array([u.population for u in units], dtype=np.float64)
    if populations.sum() <= 0:
        raise InvalidInput("the gazetteer has no population to place subscribers in", field="population")
    shares = _largest_remainder(populations, count)
    lon = np.empty(count, dtype=np.float64)
    lat = np.empty(count, dtype=np.float64)
    position = 0
    for index, (unit, need) in enumerate(zip(units, shares, strict=True)):
        if need == 0:
            continue
        rng = np.random.default_rng([seed, 1, index])
        geometry = unit.geometry
        shapely.prepare(geometry)
        minx, miny, maxx, maxy = geometry.bounds
        acceptance = max(0.01, geometry.area / max((maxx - minx) * (maxy - miny), 1e-300))
        got = 0
        while got < need:
            batch = min(CHUNK, int((need - got) / acceptance * 1.1) + 64)
            xs = rng.uniform(minx, maxx, batch)
            ys = rng.uniform(miny, maxy, batch)
            ok = shapely.contains_xy(geometry, xs, ys)
            take = min(need - got, int(ok.sum()))
            lon[position + got : position + got + take] = xs[ok][:take]
            lat[position + got : position + got + take] = ys[ok][:take]
            got += take
        position += need

    prefixes = np.array(MOBILE_PREFIXES, dtype=np.uint64)
    modulus = len(MOBILE_PREFIXES) * 100_000_000
    multiplier = _coprime_multiplier(modulus, seed)
    offset = np.random.default_rng([seed, 2]).integers(0, modulus)
    cache: dict[int, dict[str, np.ndarray]] = {}

    def fill(name: str, order: np.ndarray, a: int, b: int) -> np.ndarray:
        if name in ("lon", "lat"):
            return (lon if name == "lon" else lat)[order[a:b]]
        if name in ("id", "phone"):
            ids = order[a:b].astype(np.uint64) + np.uint64(1)
            if name == "id":
                return ids
            k = (ids * np.uint64(multiplier) + np.uint64(offset)) % np.uint64(modulus)
            return (
                np.uint64(8_600_000_000_000)
                + prefixes[k // np.uint64(100_000_000)] * np.uint64(100_000_000)
                + k % np.uint64(100_000_000)
            )
        chunk = cache.get(a)
        if chunk is None:
            cache.clear()
            chunk = cache[a] = _attributes(np.random.default_rng([seed, 3, a // CHUNK]), b - a)
        return chunk[name]

    # Attributes are drawn per chunk of sorted rows (``_write`` goes chunk by chunk), so only
    # one chunk's draws are held at a time.
    extra = {"generated": {"seed": seed, "units": len(units), "level": str(units[0].level)}}
    return _write(Path(directory), lon, lat, fill, LANGUAGES, overwrite=overwrite, extra=extra)


def _attributes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Language, channels and addresses for ``n`` subscribers."""
    language = (rng.random(n) < ENGLISH_SHARE).astype(np.uint8)
    channels = np.zeros(n, dtype=np.uint8)
    for channel, rate in OPT_IN.items():
        channels |= np.where(rng.random(n) < rate, np.uint8(channel), np.uint8(0))
    email = np.zeros((n, 48), dtype=np.uint8)
    rows = np.flatnonzero(channels & Channel.EMAIL)
    email[rows, :10] = _LOWER[rng.integers(0, len(_LOWER), (len(rows), 10))]
    email[rows, 10] = ord("@")
    domain = rng.integers(0, len(EMAIL_DOMAINS), len(rows))
    for d, name in enumerate(EMAIL_DOMAINS):
        email[rows[domain == d], 11 : 11 + len(name)] = np.frombuffer(name, dtype=np.uint8)
    wechat = np.zeros((n, 28), dtype=np.uint8)
    rows = np.flatnonzero(channels & Channel.WECHAT)
    wechat[rows, 0] = ord("o")
    wechat[rows, 1:] = _BASE64URL[rng.integers(0, 64, (len(rows), 27))]
    token = np.zeros((n, 32), dtype=np.uint8)
    rows = np.flatnonzero(channels & Channel.APP_PUSH)
    token[rows] = _HEX[rng.integers(0, 16, (len(rows), 32))]
    return {
        "language": language,
        "channels": channels,
        "email": email.view("S48").ravel(),
        "wechat_openid": wechat.view("S28").ravel(),
        "app_token": token.view("S32").ravel(),
    }


def _largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    exact = weights / weights.sum() * total
    base = np.floor(exact).astype(np.int64)
    short = total - int(base.sum())
    if short:
        order = np.argsort(-(exact - base), kind="stable")
        base[order[:short]] += 1
    return base


def _coprime_multiplier(modulus: int, seed: int) -> int:
    multiplier = 2_654_435_761 + 2 * (seed % 1_000_003)
    while math.gcd(multiplier, modulus) != 1:
        multiplier += 1
    return multiplier
