"""The subscriber registry: exact selection, counts, generation, CSV import, integrity."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from broadcast.errors import InvalidInput
from geotarget import Level, build_demo_gazetteer
from geotarget.subscribers import (
    CSV_HEADER,
    Channel,
    IntegrityError,
    SubscriberSnapshot,
    export_csv,
    generate_subscribers,
    import_csv,
    write_snapshot,
)

COUNT = 50_000
FUTIAN = "440304"


@pytest.fixture(scope="module")
def gazetteer():
    return build_demo_gazetteer()


@pytest.fixture(scope="module")
def snapshot(gazetteer, tmp_path_factory) -> SubscriberSnapshot:
    return generate_subscribers(gazetteer, COUNT, tmp_path_factory.mktemp("subs") / "snap", seed=7)


def brute_force(snapshot: SubscriberSnapshot, geometry) -> np.ndarray:
    return np.flatnonzero(shapely.intersects_xy(geometry, np.asarray(snapshot.lon), np.asarray(snapshot.lat)))


def areas(gazetteer, snapshot) -> dict[str, Polygon | MultiPolygon]:
    futian = gazetteer.unit(FUTIAN).geometry
    luohu = gazetteer.unit("440303").geometry
    # A ~40 m x 30 m box with one subscriber near Futian's centroid just inside its corner.
    near = int(
        np.argmin(np.hypot(np.asarray(snapshot.lon) - futian.centroid.x, np.asarray(snapshot.lat) - futian.centroid.y))
    )
    cx, cy = float(snapshot.lon[near]) - 1e-5, float(snapshot.lat[near]) - 1e-5
    border = shapely.intersection(futian, luohu.buffer(1e-9)).centroid  # a point on their shared border
    communities = gazetteer.units_at(Level.COMMUNITY)
    return {
        "district": futian,
        "straddling": box(border.x - 0.02, border.y - 0.01, border.x + 0.02, border.y + 0.01),
        "tiny": box(cx, cy, cx + 0.0004, cy + 0.0003),
        "multipolygon": MultiPolygon(
            [communities[3].geometry, communities[400].geometry, box(114.3, 22.6, 114.32, 22.65)]
        ),
        "outside": box(120.0, 30.0, 120.5, 30.5),
        "city": gazetteer.city.geometry,
        "with hole": box(113.9, 22.5, 114.2, 22.75).difference(box(114.0, 22.55, 114.1, 22.65)),
        "circle": shapely.Point(114.06, 22.56).buffer(0.05, quad_segs=64),
    }


@pytest.mark.parametrize(
    "name", ["district", "straddling", "tiny", "multipolygon", "outside", "city", "with hole", "circle"]
)
def test_select_equals_brute_force(snapshot, gazetteer, name):
    geometry = areas(gazetteer, snapshot)[name]
    expected = brute_force(snapshot, geometry)
    got = snapshot.select(geometry)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    if name == "outside":
        assert len(got) == 0
    elif name == "city":
        assert len(got) == COUNT
    else:
        assert 0 < len(got) < COUNT


def test_select_random_boxes_match_brute_force(snapshot):
    rng = np.random.default_rng(3)
    g = snapshot.grid
    for _ in range(40):
        x = rng.uniform(g.x0 - 0.05, g.x0 + g.nx * g.dx)
        y = rng.uniform(g.y0 - 0.05, g.y0 + g.ny * g.dy)
        w, h = rng.uniform(1e-4, 0.3, 2)
        geometry = shapely.affinity.rotate(box(x, y, x + w, y + h), rng.uniform(0, 90))
        np.testing.assert_array_equal(snapshot.select(geometry), brute_force(snapshot, geometry))


def small_snapshot(directory: Path, points: list[tuple[float, float]]) -> SubscriberSnapshot:
    n = len(points)
    lon, lat = np.array(points, dtype=np.float64).T
    return write_snapshot(
        directory,
        ids=np.arange(100, 100 + n, dtype=np.uint64),
        phones=np.full(n, 8613800138000, dtype=np.uint64),
        lon=lon,
        lat=lat,
        language=np.zeros(n, dtype=np.uint8),
        channels=np.full(n, int(Channel.SMS), dtype=np.uint8),
    )


def test_boundary_is_inside(tmp_path):
    # A triangle with a horizontal, a vertical and a diagonal edge, in real Shenzhen coordinates.
    triangle = Polygon([(114.0, 22.5), (114.25, 22.5), (114.25, 22.75)])
    on_edges = [(114.125, 22.5), (114.25, 22.625), (114.125, 22.625), (114.0, 22.5), (114.25, 22.75)]
    outside = [(114.125, 22.5 - 1e-9), (114.25 + 1e-9, 22.625), (114.125 - 1e-9, 22.625 + 1e-9), (114.0 - 1e-9, 22.5)]
    inside = [(114.2, 22.55)]
    filler = [(114.0 + 0.3 * i / 97, 22.45 + 0.35 * ((i * 37) % 97) / 97) for i in range(97)]
    points = on_edges + outside + inside + filler
    snap = small_snapshot(tmp_path / "snap", points)
    selected = {snap.subscriber(int(i)).id - 100 for i in snap.select(triangle)}
    for k in range(len(on_edges)):
        assert k in selected, f"on-boundary point {on_edges[k]} not selected"
    for k in range(len(outside)):
        assert len(on_edges) + k not in selected, f"point {outside[k]} 1e-9 outside was selected"
    assert len(on_edges) + len(outside) in selected
    np.testing.assert_array_equal(snap.select(triangle), brute_force(snap, triangle))


def test_count_by_channel_and_language_equal_brute_force(snapshot, gazetteer):
    rows = snapshot.select(gazetteer.unit(FUTIAN).geometry)
    channels = np.asarray(snapshot.channels)[rows]
    counts = snapshot.count_by_channel(rows)
    assert counts == {c.key: int(((channels & int(c)) != 0).sum()) for c in Channel}
    languages = np.asarray(snapshot.language)[rows]
    assert snapshot.count_by_language(rows) == {"zh-CN": int((languages == 0).sum()), "en": int((languages == 1).sum())}
    assert counts["sms"] == len(rows)


def test_generated_rates_and_addresses(snapshot):
    counts = snapshot.count_by_channel()
    for key, rate in {"sms": 1.0, "app_push": 0.70, "wechat": 0.50, "email": 0.10, "voice": 0.05}.items():
        assert abs(counts[key] / COUNT - rate) < 0.01, key
    assert abs(snapshot.count_by_language()["en"] / COUNT - 0.10) < 0.01
    channels = np.asarray(snapshot.channels)
    for column, flag in (("email", Channel.EMAIL), ("wechat_openid", Channel.WECHAT), ("app_token", Channel.APP_PUSH)):
        filled = np.char.str_len(np.asarray(snapshot.columns[column])) > 0
        np.testing.assert_array_equal(filled, (channels & int(flag)) != 0)
    phones = np.asarray(snapshot.phones)
    assert len(np.unique(phones)) == COUNT
    assert all(len(str(p)) == 13 and str(p).startswith("861") and str(p)[3] in "3456789" for p in phones[:1000])
    assert sorted(np.asarray(snapshot.ids).tolist()) == list(range(1, COUNT + 1))
    assert snapshot.bytes_per_subscriber <= 150


def test_rows_sorted_by_cell(snapshot):
    cells = snapshot.grid.cell_of(np.asarray(snapshot.lon), np.asarray(snapshot.lat))
    assert np.all(np.diff(cells) >= 0)
    np.testing.assert_array_equal(np.asarray(snapshot.cell_start)[cells], np.searchsorted(cells, cells, side="left"))


def test_generator_is_deterministic(gazetteer, tmp_path):
    a = generate_subscribers(gazetteer, 5_000, tmp_path / "a", seed=11)
    b = generate_subscribers(gazetteer, 5_000, tmp_path / "b", seed=11)
    c = generate_subscribers(gazetteer, 5_000, tmp_path / "c", seed=12)
    for name in a.manifest["files"]:
        assert (tmp_path / "a" / f"{name}.npy").read_bytes() == (tmp_path / "b" / f"{name}.npy").read_bytes(), name
    assert a.manifest["files"] == b.manifest["files"]
    assert a.manifest["files"]["lon"]["sha256"] != c.manifest["files"]["lon"]["sha256"]


def test_distribution_follows_population(snapshot, gazetteer):
    total = sum(u.population for u in gazetteer.units_at(Level.DISTRICT))
    for district in gazetteer.units_at(Level.DISTRICT):
        share = len(snapshot.select(district.geometry)) / COUNT
        assert abs(share - district.population / total) < 0.02, district.name_en


# -- CSV import -------------------------------------------------------------------------------

GOOD_ROWS = [
    ["1", "8613800138000", "zh-CN", "114.05", "22.54", "sms|app_push", "", "", "0123456789abcdef0123456789abcdef"],
    ["2", "+8615912345678", "en", "113.9", "22.5", "sms|email|wechat|voice", "a.b@example.com", "oAbc_def-123", ""],
    ["3", "85291234567", "en", "114.0", "22.6", "", "", "", ""],
    ["4", "8618612345678", "zh-CN", "114.1234567890123", "22.7654321098765", "SMS", "", "", ""],
]


def write_csv(path: Path, rows: list[list[str]], header: list[str] | tuple[str, ...] = CSV_HEADER) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_csv_round_trip(tmp_path):
    snap = import_csv(write_csv(tmp_path / "in.csv", GOOD_ROWS), tmp_path / "snap")
    assert len(snap) == 4
    by_id = {snap.subscriber(i).id: snap.subscriber(i) for i in range(4)}
    two = by_id[2]
    assert two.phone == 8615912345678 and two.language == "en" and two.email == "a.b@example.com"
    assert two.channels == Channel.SMS | Channel.EMAIL | Channel.WECHAT | Channel.VOICE
    assert by_id[3].channels == Channel(0)
    assert by_id[4].lon == 114.1234567890123 and by_id[4].lat == 22.7654321098765
    assert by_id[1].app_token == "0123456789abcdef0123456789abcdef"
    export_csv(snap, tmp_path / "out.csv")
    again = import_csv(tmp_path / "out.csv", tmp_path / "again")
    for name in snap.columns:
        np.testing.assert_array_equal(np.asarray(again.columns[name]), np.asarray(snap.columns[name]), err_msg=name)


def test_csv_round_trip_of_generated(snapshot, tmp_path):
    rows = np.arange(0, COUNT, 97)
    export_csv(snapshot, tmp_path / "part.csv", rows)
    part = import_csv(tmp_path / "part.csv", tmp_path / "part")
    order = np.argsort(np.asarray(part.ids))
    original = np.argsort(np.asarray(snapshot.ids)[rows])
    for name in snapshot.columns:
        if name == "cell_start":
            continue
        np.testing.assert_array_equal(
            np.asarray(part.columns[name])[order], np.asarray(snapshot.columns[name])[rows][original], err_msg=name
        )


def replace(row: list[str], column: str, value: str) -> list[str]:
    row = list(row)
    row[CSV_HEADER.index(column)] = value
    return row


BAD_CASES = {
    "letters in phone": (2, "phone", replace(GOOD_ROWS[1], "phone", "86159abc45678")),
    "short +86 phone": (3, "phone", replace(GOOD_ROWS[2], "phone", "86159123456")),
    "landline +86": (2, "phone", replace(GOOD_ROWS[1], "phone", "8675512345678")),
    "unknown language": (4, "language", replace(GOOD_ROWS[3], "language", "fr")),
    "unknown channel": (2, "channels", replace(GOOD_ROWS[1], "channels", "sms|fax")),
    "lon out of range": (3, "lon", replace(GOOD_ROWS[2], "lon", "181")),
    "lat out of range": (4, "lat", replace(GOOD_ROWS[3], "lat", "-90.5")),
    "lat not a number": (2, "lat", replace(GOOD_ROWS[1], "lat", "nan")),
    "duplicate id": (5, "id", replace(GOOD_ROWS[3], "id", "2")),
    "bad id": (2, "id", replace(GOOD_ROWS[1], "id", "-2")),
    "email channel without address": (2, "email", replace(GOOD_ROWS[1], "email", "")),
    "address without channel": (3, "wechat_openid", replace(GOOD_ROWS[2], "wechat_openid", "oXyz")),
    "email too long": (2, "email", replace(GOOD_ROWS[1], "email", "x" * 40 + "@example.com")),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_csv_bad_row_names_line_and_column_and_writes_nothing(tmp_path, case):
    line, column, bad_row = BAD_CASES[case]
    rows = [list(r) for r in GOOD_ROWS]
    if case == "duplicate id":
        rows.append(bad_row)  # line 6 would be the 5th data row; keep all 4 good rows first
        line = 6
    else:
        rows[line - 2] = bad_row
    source = write_csv(tmp_path / "in.csv", rows)
    with pytest.raises(InvalidInput) as info:
        import_csv(source, tmp_path / "out" / "snap")
    assert info.value.field == f"line {line}: {column}", info.value.message
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"] + (["out"] if (tmp_path / "out").exists() else [])


def test_csv_bad_header(tmp_path):
    source = write_csv(tmp_path / "in.csv", GOOD_ROWS, header=["id", "phone", "lang", *CSV_HEADER[3:]])
    with pytest.raises(InvalidInput) as info:
        import_csv(source, tmp_path / "snap")
    assert info.value.field == "line 1: header"
    assert not (tmp_path / "snap").exists()


def test_failed_write_leaves_no_temp_directory(tmp_path):
    # A duplicate id is only found after parsing; the existing snapshot must survive untouched.
    import_csv(write_csv(tmp_path / "good.csv", GOOD_ROWS), tmp_path / "snap")
    before = {p.name: p.read_bytes() for p in (tmp_path / "snap").iterdir()}
    bad = write_csv(tmp_path / "bad.csv", [*GOOD_ROWS, GOOD_ROWS[0]])
    with pytest.raises(InvalidInput):
        import_csv(bad, tmp_path / "snap", overwrite=True)
    assert {p.name: p.read_bytes() for p in (tmp_path / "snap").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "good.csv", "snap"]


# -- integrity --------------------------------------------------------------------------------


def test_manifest_describes_the_files(snapshot):
    manifest = json.loads((snapshot.directory / "manifest.json").read_text())
    assert manifest["count"] == COUNT and manifest["languages"] == ["zh-CN", "en"]
    assert manifest["channels"] == {"sms": 1, "voice": 2, "email": 4, "wechat": 8, "app_push": 16}
    for name, entry in manifest["files"].items():
        data = (snapshot.directory / f"{name}.npy").read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert np.load(snapshot.directory / "lon.npy", mmap_mode="r").dtype == np.float64


def test_modified_file_fails_sha256_on_open(gazetteer, tmp_path):
    generate_subscribers(gazetteer, 2_000, tmp_path / "snap", seed=1)
    SubscriberSnapshot.open(tmp_path / "snap")
    path = tmp_path / "snap" / "lat.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # flip one bit of the last coordinate
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"lat\.npy fails its sha256 check") as info:
        SubscriberSnapshot.open(tmp_path / "snap")
    assert info.value.field == "lat.npy"
    SubscriberSnapshot.open(tmp_path / "snap", verify=False)  # hashing can be skipped, shapes still checked


def test_truncated_file_fails_on_open_even_without_hashing(gazetteer, tmp_path):
    generate_subscribers(gazetteer, 2_000, tmp_path / "snap", seed=1)
    path = tmp_path / "snap" / "channels.npy"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IntegrityError) as info:
        SubscriberSnapshot.open(tmp_path / "snap", verify=False)
    assert info.value.field == "channels.npy"


def test_select_rejects_non_polygons(snapshot):
    with pytest.raises(InvalidInput) as info:
        snapshot.select(shapely.Point(114.0, 22.5))
    assert info.value.field == "geometry"
    assert len(snapshot.select(Polygon())) == 0
