"""Benchmark the subscriber registry's polygon selection at city scale.

    .venv/bin/python perf/bench_subscribers.py                      # 17.8 million, 7 runs
    .venv/bin/python perf/bench_subscribers.py --count 1000000 --runs 5

Generates a snapshot over the demo gazetteer once (reused when already present under
--data-dir, default perf/data/subscribers-<count>; perf/data is git-ignored), then times,
as the median of --runs:

  (a) ``snapshot.select`` of a ~200-vertex polygon covering one district (Futian and
      Bao'an, the demo polygons densified with shapely.segmentize to ~200 vertices);
  (b) the baseline for the same polygons: a numpy bounding-box mask on lon/lat, then a
      bare ``shapely.contains_xy`` on the survivors;
  (c) ``snapshot.select`` of the whole city.

Each selection is first checked against ``shapely.intersects_xy`` over all points (not
timed). Peak RSS (VmHWM) is reset before the queries (``/proc/self/clear_refs``) so it
covers the queries only, not the generation. Results go to perf/results/subscribers-<count>.json
and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import shapely

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from geotarget import build_demo_gazetteer  # noqa: E402
from geotarget.subscribers import SubscriberSnapshot, generate_subscribers  # noqa: E402

DISTRICTS = {"Futian": "440304", "Bao'an": "440306"}
TARGET_VERTICES = 200


def vm_hwm_bytes() -> int:
    """Peak resident set size of this process (VmHWM), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def vm_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0). False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def densify(geometry: shapely.Geometry, vertices: int) -> shapely.Geometry:
    """``geometry`` with extra vertices along its edges, about ``vertices`` in all."""
    step = geometry.exterior.length / vertices
    result = shapely.segmentize(geometry, step)
    while len(result.exterior.coords) - 1 > vertices * 1.05:
        step *= 1.02
        result = shapely.segmentize(geometry, step)
    return result


def timed(fn, runs: int) -> tuple[float, list[float], object]:
    times = []
    result = None
    for _ in range(runs):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, result


def baseline(snapshot: SubscriberSnapshot, geometry: shapely.Geometry) -> np.ndarray:
    minx, miny, maxx, maxy = geometry.bounds
    lon, lat = snapshot.lon, snapshot.lat
    candidates = np.flatnonzero((lon >= minx) & (lon <= maxx) & (lat >= miny) & (lat <= maxy))
    hit = shapely.contains_xy(geometry, lon[candidates], lat[candidates])
    return candidates[hit]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=17_800_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--results-dir", type=Path, default=REPO / "perf" / "results")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or REPO / "perf" / "data" / f"subscribers-{args.count}"
    command = " ".join(["python", *(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *sys.argv[1:]])])

    gazetteer = build_demo_gazetteer()
    report: dict[str, object] = {"command": command, "count": args.count, "runs": args.runs, "seed": args.seed}
    if (data_dir / "manifest.json").is_file():
        print(f"reusing snapshot {data_dir}")
        report["generate_seconds"] = None
    else:
        print(f"generating {args.count:,} subscribers into {data_dir} ...", flush=True)
        t = time.perf_counter()
        generate_subscribers(gazetteer, args.count, data_dir, seed=args.seed)
        report["generate_seconds"] = round(time.perf_counter() - t, 2)
        report["generate_peak_rss_bytes"] = vm_hwm_bytes()
        print(f"  generated in {report['generate_seconds']} s, peak RSS {vm_hwm_bytes() / 2**20:.0f} MiB")

    t = time.perf_counter()
    snapshot = SubscriberSnapshot.open(data_dir, verify=True)
    report["open_verify_seconds"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    snapshot = SubscriberSnapshot.open(data_dir, verify=False)
    report["open_seconds"] = round(time.perf_counter() - t, 4)
    if snapshot.count != args.count:
        raise SystemExit(
            f"{data_dir} holds {snapshot.count} subscribers, not {args.count}; remove it or pass --data-dir"
        )
    report["bytes_on_disk"] = snapshot.bytes_on_disk
    report["bytes_per_subscriber"] = round(snapshot.bytes_per_subscriber, 2)
    report["grid"] = snapshot.grid.as_dict()

    # Measure the queries' peak RSS from here, not the generation's.
    rss_reset = reset_peak_rss()
    report["rss_before_queries_bytes"] = vm_rss_bytes()

    cases: dict[str, dict[str, object]] = {}
    for label, code in DISTRICTS.items():
        geometry = densify(gazetteer.unit(code).geometry, TARGET_VERTICES)
        cases[label] = {"geometry": geometry, "vertices": len(geometry.exterior.coords) - 1}
    city = gazetteer.city.geometry
    cases["whole city"] = {"geometry": city, "vertices": len(city.exterior.coords) - 1}

    # Selects first (each with its own peak-RSS window), so the baseline's full scan of the
    # lon/lat columns is not yet resident when select's memory is measured.
    timings: dict[str, dict[str, object]] = {}
    for label, case in cases.items():
        geometry = case["geometry"]
        shapely.prepare(geometry)
        reset_peak_rss()
        rss_before = vm_rss_bytes()
        median, runs, selected = timed(lambda g=geometry: snapshot.select(g), args.runs)
        timings[label] = {"select": (median, runs, len(selected)), "select_rss": (rss_before, vm_hwm_bytes())}
        del selected
    for label, case in cases.items():
        reset_peak_rss()
        median, runs, based = timed(lambda g=case["geometry"]: baseline(snapshot, g), args.runs)
        timings[label]["baseline"] = (median, runs, len(based))
        timings[label]["baseline_rss"] = vm_hwm_bytes()
        del based

    results = []
    for label, case in cases.items():
        geometry = case["geometry"]
        selected = snapshot.select(geometry)
        truth = np.flatnonzero(shapely.intersects_xy(geometry, snapshot.lon, snapshot.lat))
        exact = bool(np.array_equal(selected, truth))
        median_select, times_select, n_selected = timings[label]["select"]
        median_base, times_base, n_based = timings[label]["baseline"]
        rss_before, rss_peak = timings[label]["select_rss"]
        row = {
            "area": label,
            "vertices": case["vertices"],
            "selected": n_selected,
            "select_median_s": round(median_select, 4),
            "select_runs_s": [round(x, 4) for x in times_select],
            "baseline_median_s": round(median_base, 4),
            "baseline_runs_s": [round(x, 4) for x in times_base],
            "baseline_over_select": round(median_base / median_select, 1),
            "baseline_selected": n_based,
            "equals_intersects_xy": exact,
            "rss_before_select_bytes": rss_before,
            "peak_rss_during_select_bytes": rss_peak,
            "peak_rss_during_baseline_bytes": timings[label]["baseline_rss"],
        }
        results.append(row)
        print(
            f"{label:>11}: {n_selected:>10,} selected  select {median_select * 1000:8.1f} ms  "
            f"baseline {median_base * 1000:8.1f} ms  ratio {row['baseline_over_select']:6.1f}x  "
            f"peak RSS {rss_peak / 2**20:6.0f} MiB  exact={exact}",
            flush=True,
        )
        if not exact:
            raise SystemExit(f"select disagrees with intersects_xy for {label}")
        del selected, truth

    report["results"] = results
    report["peak_rss_select_bytes"] = max(r["peak_rss_during_select_bytes"] for r in results)
    report["peak_rss_bytes"] = vm_hwm_bytes()
    report["peak_rss_reset_before_queries"] = rss_reset
    counts = snapshot.count_by_channel()
    report["channels"] = counts
    report["languages"] = snapshot.count_by_language()
    report["machine"] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "shapely": shapely.__version__,
        "geos": shapely.geos_version_string,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"subscribers-{args.count}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    stem.with_suffix(".md").write_text(markdown(report))
    print(f"bytes per subscriber on disk: {report['bytes_per_subscriber']}")
    print(f"peak RSS during select: {report['peak_rss_select_bytes'] / 2**20:.0f} MiB (reset ok: {rss_reset})")
    print(f"wrote {stem}.json and .md")
    return 0


def markdown(report: dict) -> str:
    mib = 2**20
    lines = [
        f"# Subscriber selection benchmark, {report['count']:,} subscribers",
        "",
        f"Command: `{report['command']}` (from the repository root, with `.venv/bin/python`)",
        "",
        f"Medians of {report['runs']} runs. `select` = `SubscriberSnapshot.select` (grid pyramid, exact,",
        "boundary inside); baseline = numpy bounding-box mask on lon/lat, then `shapely.contains_xy`",
        "on the survivors. Every `select` result was checked equal to `shapely.intersects_xy` over all points.",
        "",
        "| area | vertices | selected | select (ms) | baseline (ms) | baseline / select | peak RSS in select (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['area']} | {r['vertices']} | {r['selected']:,} | {r['select_median_s'] * 1000:.1f} | "
            f"{r['baseline_median_s'] * 1000:.1f} | {r['baseline_over_select']} | "
            f"{r['peak_rss_during_select_bytes'] / mib:,.0f} |"
        )
    lines += [
        "",
        f"- bytes per subscriber on disk: {report['bytes_per_subscriber']} "
        f"({report['bytes_on_disk'] / mib:,.0f} MiB in all)",
        f"- peak RSS during select (VmHWM, reset before each area: {report['peak_rss_reset_before_queries']}): "
        f"{report['peak_rss_select_bytes'] / mib:,.0f} MiB; RSS before the queries "
        f"{report['rss_before_queries_bytes'] / mib:,.0f} MiB; process peak after all checks "
        f"{report['peak_rss_bytes'] / mib:,.0f} MiB (includes the baseline and the intersects_xy check)",
        f"- open with sha256 verification: {report['open_verify_seconds']} s; open without: {report['open_seconds']} s",
    ]
    if report.get("generate_seconds") is not None:
        lines.append(
            f"- generation: {report['generate_seconds']} s, peak RSS {report['generate_peak_rss_bytes'] / mib:,.0f} MiB"
        )
    lines += [
        f"- grid: {report['grid']['nx']} x {report['grid']['ny']} cells",
        f"- channel opt-ins: {report['channels']}",
        f"- languages: {report['languages']}",
        f"- machine: {report['machine']}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
