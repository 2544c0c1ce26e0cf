"""Benchmark of the rate alarm on real labelled series: NAB's five Twitter-volume files (../shared/nab), scored by
shoplake's NAB standard-profile scorer, beside NAB's published randomCutForest, numenta (HTM) and ARTime raw scores,
and the detector's throughput (rows/s) against reading the same rows."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench import _report
from shoplake.alarm import _nab, _series

NAB_DIR = Path(os.environ.get("SHOPLAKE_NAB_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "nab"))
PUBLISHED = ("randomCutForest", "numenta", "ARTime")


def _run(name: str) -> dict[str, Any]:
    began = time.perf_counter()
    series = _series.read_series(NAB_DIR / "data" / name)
    read_s = time.perf_counter() - began
    windows = _nab.load_windows(NAB_DIR / "windows.json", name)
    run = _series.run_series(series, windows)
    null = _nab.score(series.timestamps, [False] * len(series), windows)
    return {
        "file": name,
        "rows": len(series),
        "read_rows_per_s": len(series) / read_s,
        "rows_per_s": run.points_per_s,
        "forest": run.forest,
        "rule": run.rule,
        "null": null.raw,
        "judged": sum(score is not None for score in run.scores),
        "detector_windows": len(run.scores),
        "windows": len(windows),
    }


def main(scale: str = "full") -> dict[str, Any]:
    if not (NAB_DIR / "windows.json").exists():
        raise FileNotFoundError(f"NAB data not found at {NAB_DIR} (set SHOPLAKE_NAB_DIR)")
    published = _nab.published_scores(NAB_DIR / "published_standard_scores.json")
    names = sorted(published["null"])
    began = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        results = list(pool.map(_run, names))
    wall = time.perf_counter() - began
    header = f"{'file':24} {'shoplake':>9} {'rule':>7} " + " ".join(f"{d:>15}" for d in PUBLISHED)
    print(header + f" {'recall':>7} {'false':>6} {'shoplake−RCF':>13}")
    totals = {"shoplake": 0.0, "rule": 0.0, **{d: 0.0 for d in PUBLISHED}}
    for r in results:
        name, forest = r["file"], r["forest"]
        if r["null"] != published["null"][name]["raw_score"]:
            print(f"!! scorer disagrees with NAB's null detector on {name}: {r['null']} vs {published['null'][name]}")
        pub = {d: published[d][name]["raw_score"] for d in PUBLISHED}
        totals["shoplake"] += forest["nab_raw"]
        totals["rule"] += r["rule"]["nab_raw"]
        for d in PUBLISHED:
            totals[d] += pub[d]
        _report.figure(
            f"nab_raw {name}",
            forest["nab_raw"],
            baseline=pub["randomCutForest"],
            baseline_name="randomCutForest (NAB, published)",
            goal="> randomCutForest",
            numenta=pub["numenta"],
            ARTime=pub["ARTime"],
            rule=r["rule"]["nab_raw"],
            recall=forest["recall"],
            false_alarms=forest["false_alarms"],
        )
        print(
            f"{name:24} {forest['nab_raw']:9.3f} {r['rule']['nab_raw']:7.3f} "
            + " ".join(f"{pub[d]:15.3f}" for d in PUBLISHED)
            + f" {forest['recall']:7.2f} {forest['false_alarms']:6d} {forest['nab_raw'] - pub['randomCutForest']:+13.3f}"
        )
    n_windows = sum(r["windows"] for r in results)
    print(
        f"{'total':24} {totals['shoplake']:9.3f} {totals['rule']:7.3f} "
        + " ".join(f"{totals[d]:15.3f}" for d in PUBLISHED)
    )
    # NAB's normalisation over these files: 100 · (raw − null) / (perfect − null), null = −windows, perfect = +windows
    norm = {k: 100 * (v + n_windows) / (2 * n_windows) for k, v in totals.items()}
    print("normalised over these 5 files: " + ", ".join(f"{k} {v:.1f}" for k, v in norm.items()))
    print(
        f"shoplake / numenta (normalised) = {norm['shoplake'] / norm['numenta']:.2f} ×; "
        f"/ randomCutForest = {norm['shoplake'] / norm['randomCutForest']:.2f} ×; / ARTime = "
        f"{norm['shoplake'] / norm['ARTime']:.2f} ×"
    )
    _report.figure(
        "nab_normalised_5_files",
        norm["shoplake"],
        baseline=norm["numenta"],
        baseline_name="numenta (NAB, published)",
        goal="≥ numenta",
        raw_total=totals["shoplake"],
        ARTime=norm["ARTime"],
        randomCutForest=norm["randomCutForest"],
    )
    detected = sum(sum(w["detected"] for w in r["forest"]["windows"] if w["scored"]) for r in results)
    false = [r["forest"]["false_alarms"] for r in results]
    print(
        f"incidents: {detected}/{n_windows} windows detected (recall {detected / n_windows:.2f}); false alarms {false}"
    )
    _report.figure("incident_recall", detected / n_windows, goal="≥ 0.8")
    _report.figure("false_alarms_max_per_series", max(false), goal="≤ 2", higher_is_better=False, per_series=false)
    rate = float(np.mean([r["rows_per_s"] for r in results]))
    judged = sum(r["judged"] for r in results) / sum(r["detector_windows"] for r in results)
    read = float(np.mean([r["read_rows_per_s"] for r in results]))
    print(
        f"throughput: detector {rate:,.0f} rows/s per process (forest of {_series.SERIES_TREES} trees, krcf; "
        f"{judged:.1%} of windows judged by the forest: all but the first two days) = "
        f"{rate / read:.4f} × reading+validating the rows ({read:,.0f} rows/s); "
        f"{sum(r['rows'] for r in results):,} rows in {wall:.0f} s wall"
    )
    _report.figure(
        "detector_rows_per_s",
        rate,
        unit="rows/s",
        baseline=read,
        baseline_name="read + validate the rows",
        goal="≥ 0.5 × baseline",
        goal_ratio=0.5,
        forest_judged_share=judged,
    )
    return {"totals": totals, "normalised": norm, "files": {r["file"]: r["forest"]["nab_raw"] for r in results}}


if __name__ == "__main__":
    main()
