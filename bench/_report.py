"""Shared by the benchmarks: collect figures (each with its same-run baseline and ratio) and write build/bench.json.

A benchmark calls :func:`figure` for each figure it measures; ``python -m bench`` (``make bench``) tells this module
which benchmark and scale are running (:func:`begin`), keeps what each ``main()`` returns as well, and writes
everything with the date and the machine (core count, Python, platform) to ``build/bench.json`` so that runs can be
compared; each run is also appended to ``build/bench-history.jsonl``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATH = ROOT / "build" / "bench.json"

_FIGURES: list[dict[str, Any]] = []
_RETURNED: dict[str, Any] = {}
_CURRENT = {"bench": None, "scale": None}


def begin(bench: str, scale: str | None) -> None:
    """Called by ``python -m bench`` before each benchmark: the name and scale stamped on its figures."""
    _CURRENT.update(bench=bench, scale=scale)


def _clean(value: Any) -> Any:
    """JSON-safe numbers (NaN/inf → None), rounded to 4 significant decimals for floats."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 4)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _clean(value.item())
    return value if isinstance(value, str | int | bool | type(None)) else str(value)


def figure(
    name: str,
    value: float,
    *,
    unit: str = "",
    baseline: float | None = None,
    baseline_name: str | None = None,
    goal: str | None = None,
    higher_is_better: bool = True,
    scale: str | None = None,
    goal_ratio: float | None = None,
    ceiling: float | None = None,
    ceiling_name: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Record one figure: ``value`` and, when measured in the same run, ``baseline`` (ratio = value / baseline).

    ``goal`` is the target as text (e.g. ``"ratio ≥ 0.8"``); ``goal_ratio`` the ratio it asks for (0.8), when it is
    one. ``ceiling``: the highest ratio reachable here, measured in the same run (``ceiling_name`` says how: a floor
    no implementation can beat, or what the measured work allows on this machine's cores); with ``goal_ratio`` the
    figure gets a :func:`verdict`. ``extra`` keeps anything else worth comparing."""
    ratio = value / baseline if baseline not in (None, 0) and value is not None else None
    row = {
        "bench": _CURRENT["bench"] or Path(sys.argv[0]).stem.removeprefix("bench_"),
        "figure": name,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "baseline_name": baseline_name,
        "ratio": ratio,
        "goal": goal,
        "higher_is_better": higher_is_better,
        "scale": scale or _CURRENT["scale"],
        **extra,
    }
    if goal_ratio is not None:
        row.update(
            goal_ratio=goal_ratio,
            ceiling_ratio=ceiling,
            ceiling_name=ceiling_name,
            verdict=verdict(ratio, goal_ratio, ceiling, higher_is_better),
        )
    row = _clean(row)
    _FIGURES.append(row)
    return row


def verdict(ratio: float | None, goal: float, ceiling: float | None = None, higher_is_better: bool = True) -> str:
    """Whether a ratio meets its goal, and if not whether the same run's ceiling leaves room for it:
    ``"met"``, ``"not met (ceiling 0.72: room)"`` or ``"unreachable here (ceiling 0.48 < 0.5)"``."""
    if ratio is None or not math.isfinite(ratio):
        return "not measured"

    def meets(r: float) -> bool:
        return r >= goal if higher_is_better else r <= goal

    if meets(ratio):
        return "met"
    if ceiling is None or not math.isfinite(ceiling):
        return "not met"
    if not meets(ceiling):
        return f"unreachable here (ceiling {ceiling:.3g} {'<' if higher_is_better else '>'} {goal:g})"
    return f"not met (ceiling {ceiling:.3g}: room)"


# Figures derived from what other benchmarks' ``main()`` return (their files stay as their owners wrote them):
# bench → [(figure, value key, baseline key or None, baseline name, goal, higher is better, unit)]
DERIVED: dict[str, list[tuple[str, str, str | None, str | None, str, bool, str]]] = {
    "weblogs": [
        (
            "log parser (lines/s)",
            "parse_lines_per_s",
            "re_lines_per_s",
            "plain re loop",
            "ratio ≥ 0.5",
            True,
            "lines/s",
        ),
        ("log freshness p95 (s)", "freshness_p95_s", None, None, "< 2 s at a paced rate", False, "s"),
    ],
    "warehouse": [
        ("star-schema load into PostgreSQL (rows/s)", "load_rows_per_s", None, None, "≥ 10× 21,035", True, "rows/s"),
    ],
    "recommend": [
        ("Spark ALS MAP / implicit MAP", "map_spark_over_implicit", None, None, "≥ 0.95", True, "ratio"),
        ("Spark ALS time / implicit time", "time_spark_over_implicit", None, None, "report", False, "ratio"),
    ],
}


def returned(bench: str, value: Any) -> None:
    """Keep what a benchmark's ``main()`` returned (its own figures), and label the ones :data:`DERIVED` knows."""
    if value is None:
        return
    _RETURNED[bench] = _clean(value)
    if not isinstance(value, dict):
        return
    have = {r["figure"] for r in _FIGURES if r["bench"] == bench}
    for name, key, base_key, base_name, goal, higher, unit in DERIVED.get(bench, []):
        if name in have or value.get(key) is None:
            continue
        baseline = value.get(base_key) if base_key else None
        figure(
            name, value[key], unit=unit, baseline=baseline, baseline_name=base_name, goal=goal, higher_is_better=higher
        )


def document(started: datetime, failed: list[str] | None = None) -> dict[str, Any]:
    """The bench.json document of this run."""
    return {
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
        "figures": list(_FIGURES),
        "returned": dict(_RETURNED),
        "failed": failed or [],
    }


def write(started: datetime, failed: list[str] | None = None, path: Path = DEFAULT_PATH) -> Path:
    """Write ``build/bench.json`` (this run) and append it to ``build/bench-history.jsonl``."""
    doc = document(started, failed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    with (path.parent / "bench-history.jsonl").open("a") as history:
        history.write(json.dumps(doc) + "\n")
    return path


def table(rows: list[dict[str, Any]] | None = None) -> str:
    """The figures as a plain text table (printed at the end of ``make bench``)."""
    rows = _FIGURES if rows is None else rows
    lines = [f"{'bench':<10} {'figure':<44} {'value':>12} {'baseline':>12} {'ratio':>7}  goal"]

    def num(v: float | None) -> str:
        return "" if v is None else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"

    for r in rows:
        value, base = num(r["value"]), num(r["baseline"])
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.3f}"
        said = f"  [{r['verdict']}]" if r.get("verdict") else ""
        lines.append(
            f"{r['bench']:<10} {r['figure'][:44]:<44} {value:>12} {base:>12} {ratio:>7}  {r['goal'] or ''}{said}"
        )
    return "\n".join(lines)
