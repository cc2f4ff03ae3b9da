"""Benchmark the whole targeting resolution (what POST /api/targeting/resolve runs) at city scale.

    .venv/bin/python perf/bench_targeting.py                       # 17.8 million subscribers, 7 runs
    .venv/bin/python perf/bench_targeting.py --count 1000000 --runs 5

Uses the subscriber snapshot of bench_subscribers.py (perf/data/subscribers-<count>, generated
if absent), the demo gazetteer and generated facilities, and times as medians of --runs:

  - units only: the units hit at all four levels with coverage fractions (Gazetteer.units_hit x4);
  - full resolution: units + subscribers (exact point-in-polygon) + channel counts + cells,
    screens, loudspeakers and stations (geotarget.resolve.resolve);
  - the baseline in the same run: a numpy bounding-box mask then a bare shapely.contains_xy.

for a ~200-vertex polygon covering one district (Futian, Bao'an) and for the whole city.
Results: perf/results/targeting-<count>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import shapely

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from broadcast.settings import Settings  # noqa: E402
from geotarget import build_demo_gazetteer  # noqa: E402
from geotarget.facilities import generate_facilities  # noqa: E402
from geotarget.gazetteer import Level  # noqa: E402
from geotarget.registry import Targets  # noqa: E402
from geotarget.resolve import resolve  # noqa: E402
from geotarget.subscribers import SubscriberSnapshot, generate_subscribers  # noqa: E402

DISTRICTS = {"Futian": "440304", "Bao'an": "440306"}


def densify(geometry: shapely.Geometry, vertices: int) -> shapely.Geometry:
    """The same shape with about ``vertices`` vertices (points added along its edges)."""
    length = geometry.exterior.length if geometry.geom_type == "Polygon" else geometry.length
    return shapely.segmentize(geometry, length / vertices)


def median_ms(fn, runs: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    result = fn()  # warm-up, and the value to report
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, result


def baseline(snapshot: SubscriberSnapshot, geometry: shapely.Geometry) -> int:
    min_lon, min_lat, max_lon, max_lat = geometry.bounds
    lon, lat = np.asarray(snapshot.lon), np.asarray(snapshot.lat)
    mask = (lon >= min_lon) & (lon <= max_lon) & (lat >= min_lat) & (lat <= max_lat)
    return int(np.count_nonzero(shapely.contains_xy(geometry, lon[mask], lat[mask])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=17_800_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--results-dir", type=Path, default=REPO / "perf" / "results")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or REPO / "perf" / "data" / f"subscribers-{args.count}"

    gazetteer = build_demo_gazetteer()
    if not (data_dir / "manifest.json").is_file():
        print(f"generating {args.count:,} subscribers into {data_dir} ...", flush=True)
        generate_subscribers(gazetteer, args.count, data_dir, seed=0)
    subscribers = SubscriberSnapshot.open(data_dir, verify=False)
    facilities = generate_facilities(gazetteer)
    targets = Targets(gazetteer, subscribers, facilities, {})
    settings = Settings()

    areas = {name: densify(gazetteer.unit(code).geometry, 200) for name, code in DISTRICTS.items()}
    areas["whole city"] = gazetteer.city.geometry
    rows = []
    for name, area in areas.items():
        def units_only(area: shapely.Geometry = area) -> int:
            return sum(len(gazetteer.units_hit(area, level)) for level in Level)

        def full(area: shapely.Geometry = area):  # type: ignore[no-untyped-def]
            return resolve([area], targets, rates=settings.rates, edge_fraction=settings.edge_coverage_fraction)

        units_ms, unit_count = median_ms(units_only, args.runs)
        full_ms, resolution = median_ms(full, args.runs)
        base_ms, base_count = median_ms(lambda area=area: baseline(subscribers, area), args.runs)
        counts = resolution.counts  # type: ignore[attr-defined]
        rows.append({
            "area": name, "vertices": int(shapely.get_num_coordinates(area)), "units": unit_count,
            "subscribers": counts["subscribers"], "baseline_subscribers": base_count,
            "units_ms": round(units_ms, 2), "resolve_ms": round(full_ms, 1), "baseline_ms": round(base_ms, 1),
            "baseline_over_resolve": round(base_ms / full_ms, 2),
            "sectors": counts["cell_broadcast"], "screens": counts["display_screen"],
            "sms_seconds_at_5000": round(counts["sms"] / settings.rates["sms"], 1),
        })
        print(json.dumps(rows[-1], ensure_ascii=False), flush=True)

    command = "python perf/bench_targeting.py" + (f" {shlex.join(argv)}" if argv else
                                                   f" {shlex.join(sys.argv[1:])}" if sys.argv[1:] else "")
    result = {"command": command, "count": len(subscribers), "runs": args.runs, "areas": rows}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"targeting-{args.count}"
    stem.with_suffix(".json").write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    lines = [
        f"# Targeting resolution benchmark, {len(subscribers):,} subscribers", "",
        f"Command: `{command}` (from the repository root, with `.venv/bin/python`)", "",
        f"Medians of {args.runs} runs on this machine. *units* = units hit at all four levels with coverage;",
        "*resolve* = the whole resolution (units, subscribers exactly, channel counts, cells, screens,",
        "loudspeakers, stations); *baseline* = numpy bounding-box mask + bare `shapely.contains_xy`",
        "(subscribers only), timed in the same run.", "",
        "| area | vertices | units hit | subscribers | units (ms) | resolve (ms) | baseline (ms) "
        "| baseline / resolve | SMS at 5,000/s (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['area']} | {r['vertices']} | {r['units']} | {r['subscribers']:,} | {r['units_ms']} "
                     f"| {r['resolve_ms']} | {r['baseline_ms']} | {r['baseline_over_resolve']} "
                     f"| {r['sms_seconds_at_5000']} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
