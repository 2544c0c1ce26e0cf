"""NAB scoring: shoplake's own implementation of the Numenta Anomaly Benchmark's published rules (standard profile).

The rules (Lavin & Ahmad 2015; NAB's ``sweeper``, the scorer of its current scoreboard), per data file of ``n`` rows:

- the first ``min(floor(0.15·n), 0.15·5000)`` rows are probationary (NAB caps the probation at 750 rows): neither their
  detections nor their window rows are scored; a window wholly inside the probation is not scored at all;
- a row inside a labelled window ``[left, right]`` (``width`` rows) sits at the relative position
  ``−(right − i + 1)/width`` (−1 at the window's first row, just below 0 at its last); a detection there is worth
  ``A_TP · σ(position)/σ(−1)``, with the scaled sigmoid ``σ(y) = 2/(1 + e^{5y}) − 1`` (−1 once y ≥ 3);
  only the best (= the first) detection of a window counts; a window without one costs ``A_FN``;
- a detection outside every window costs ``A_FP · σ(|i − right_prev| / (width_prev − 1))`` after a window
  (little right after it, the full ``A_FP`` far from it) and the full ``A_FP`` before the first window;
- standard profile: ``A_TP = 1.0``, ``A_FP = 0.11``, ``A_FN = 1.0``. The raw score is the sum over the file.

The TP/FP/FN/TN counts are NAB's too: they count *rows* (timestamps) after the probation, not incidents.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from shoplake.errors import DataError

PROBATION_PERCENT = 0.15
PROBATION_CAP_ROWS = 5000  # NAB: probation = min(floor(percent·n), percent·5000)


@dataclass(frozen=True)
class Profile:
    """A NAB cost profile."""

    tp: float = 1.0
    fp: float = 0.11
    fn: float = 1.0


STANDARD = Profile()


def scaled_sigmoid(position: float) -> float:
    """NAB's scaled sigmoid: ≈ +0.987 at −1 (a window's left edge), 0 at 0 (its right edge), −1 from 3 on."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def probation_length(rows: int, percent: float = PROBATION_PERCENT) -> int:
    """Rows at the start of a file that NAB does not score."""
    return int(min(math.floor(percent * rows), percent * PROBATION_CAP_ROWS))


@dataclass
class WindowResult:
    """One labelled window of a file: where it is, whether it is scored, its first detection and what it earned."""

    start: str
    end: str
    left: int  # row indices, inclusive
    right: int
    scored: bool  # False when it lies wholly inside the probation
    first_detection: int | None = None  # row of the first scored detection inside the window
    score: float = 0.0  # + A_TP·σ for the first detection, − A_FN without one, 0 when not scored

    @property
    def width(self) -> int:
        return self.right - self.left + 1

    @property
    def detected(self) -> bool:
        return self.first_detection is not None

    @property
    def position(self) -> float | None:
        """NAB's relative position of the first detection (−1 = first row of the window)."""
        return None if self.first_detection is None else -(self.right - self.first_detection + 1) / self.width


@dataclass
class NabScore:
    """A file's NAB raw score and its parts."""

    raw: float
    tp: int
    fp: int
    fn: int
    tn: int
    probation: int
    windows: list[WindowResult]
    false_positives: list[tuple[int, float]] = field(default_factory=list)  # (row, weighted penalty < 0)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for w, d in zip(self.windows, data["windows"], strict=True):
            d.update(width=w.width, detected=w.detected, position=w.position)
        return data


def window_rows(timestamps: Sequence[datetime], windows: Sequence[tuple[datetime, datetime]]) -> list[tuple[int, int]]:
    """(left, right) row indices of each window (rows with start ≤ t ≤ end); DataError when a window is outside the
    series, empty, reversed, or overlaps the one before."""
    if not timestamps:
        raise DataError("the series has no rows: nothing to score")
    first, last = timestamps[0], timestamps[-1]
    rows = []
    for start, end in windows:
        if end < start:
            raise DataError(f"window [{start}, {end}] ends before it starts: fix the windows file")
        if start < first or end > last:
            raise DataError(
                f"window [{start}, {end}] lies outside the series ({first} … {last}): "
                "windows must be within the file's timestamps"
            )
        left = bisect.bisect_left(timestamps, start)
        right = bisect.bisect_right(timestamps, end) - 1
        if right < left:
            raise DataError(f"window [{start}, {end}] holds no row of the series")
        if rows and left <= rows[-1][1]:
            raise DataError(f"window [{start}, {end}] overlaps the window before it: windows must be sorted, disjoint")
        rows.append((left, right))
    return rows


def score(
    timestamps: Sequence[datetime],
    detections: Sequence[bool],
    windows: Sequence[tuple[datetime, datetime]],
    profile: Profile = STANDARD,
    probation_percent: float = PROBATION_PERCENT,
) -> NabScore:
    """NAB raw score of one file's 0/1 detections (one per row) against its labelled windows."""
    n = len(timestamps)
    if len(detections) != n:
        raise DataError(f"{len(detections)} detections for {n} rows: one per row expected")
    probation = probation_length(n, probation_percent)
    bounds = window_rows(timestamps, windows)
    results = [
        WindowResult(str(start), str(end), left, right, scored=right >= probation)
        for (start, end), (left, right) in zip(windows, bounds, strict=True)
    ]
    tp = fp = fn = tn = 0
    fp_points: list[tuple[int, float]] = []
    k = 0  # the next window (or the current one)
    prev: WindowResult | None = None
    for i in range(probation, n):
        while k < len(results) and results[k].right < i:
            prev = results[k]
            k += 1
        inside = k < len(results) and results[k].left <= i
        hit = bool(detections[i])
        if inside:
            window = results[k]
            if hit:
                tp += 1
                if window.first_detection is None:
                    window.first_detection = i
            else:
                fn += 1
        elif hit:
            fp += 1
            if prev is None or prev.width <= 1:
                position = 3.0
            else:
                position = abs(i - prev.right) / (prev.width - 1)
            fp_points.append((i, profile.fp * scaled_sigmoid(position)))
        else:
            tn += 1
    for window in results:
        if not window.scored:
            continue
        if window.first_detection is None:
            window.score = -profile.fn
        else:
            window.score = profile.tp * scaled_sigmoid(window.position or 0.0) / MAX_TP
    raw = sum(w.score for w in results) + sum(p for _, p in fp_points)
    return NabScore(raw, tp, fp, fn, tn, probation, results, fp_points)


# ---------------------------------------------------------------------- NAB-format files


def parse_time(value: str) -> datetime:
    """A NAB timestamp (``YYYY-MM-DD HH:MM:SS[.ffffff]``, ISO 8601 too) as a naive datetime; ValueError otherwise."""
    dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return dt.replace(tzinfo=None) if dt.tzinfo is None else dt.astimezone(tz=None).replace(tzinfo=None)


def load_windows(path: str | Path, file_name: str | None = None) -> list[tuple[datetime, datetime]]:
    """Windows of one file from a JSON file: ``[[start, end], …]`` or NAB's ``{file name: [[start, end], …]}``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"windows file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"windows file {path} is not JSON: {exc}") from None
    if isinstance(data, dict):
        key = None
        if file_name is not None:
            key = next((k for k in data if k == file_name or Path(k).name == Path(file_name).name), None)
        if key is None:
            raise DataError(f"windows file {path} has no entry for {file_name!r} (it has {sorted(data)[:5]})")
        data = data[key]
    if not isinstance(data, list):
        raise DataError(f"windows file {path}: expected a list of [start, end] pairs")
    windows = []
    for item in data:
        if not (isinstance(item, list | tuple) and len(item) == 2 and all(isinstance(v, str) for v in item)):
            raise DataError(f"windows file {path}: {item!r} is not a [start, end] pair of timestamps")
        try:
            windows.append((parse_time(item[0]), parse_time(item[1])))
        except ValueError:
            raise DataError(f"windows file {path}: {item!r} holds a timestamp that is not ISO 8601") from None
    return sorted(windows)


def published_scores(path: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """NAB's published per-file results: ``{detector: {file name: {raw_score, tp, fp, fn}}}``."""
    rows = json.loads(Path(path).read_text())
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["detector"], {})[row["file"]] = {k: row[k] for k in ("raw_score", "tp", "fp", "fn")}
    return out
