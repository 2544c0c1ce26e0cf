"""The order-rate model of the synthetic shop: hour-of-day × weekday rhythm × injected incidents."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

# Relative intensity at each full hour (UTC), interpolated linearly in between: night low, midday peak.
HOUR_KNOTS = np.array(
    [
        0.08,
        0.05,
        0.04,
        0.04,
        0.05,
        0.08,
        0.20,
        0.50,
        0.90,
        1.30,
        1.70,
        1.90,
        2.00,
        1.90,
        1.70,
        1.60,
        1.40,
        1.10,
        0.90,
        0.80,
        0.75,
        0.60,
        0.35,
        0.15,
    ]
)
# Monday … Sunday: weekdays busy, Saturday quiet (as in the real Online Retail file), Sunday in between.
WEEKDAY_FACTORS = np.array([1.00, 1.05, 1.05, 1.10, 0.90, 0.45, 0.70])

_NS_PER_HOUR = 3_600 * 10**9
_NS_PER_DAY = 24 * _NS_PER_HOUR


def _hour_curve(hours: np.ndarray) -> np.ndarray:
    knots_x = np.arange(25, dtype=float)
    knots_y = np.append(HOUR_KNOTS, HOUR_KNOTS[0])
    return np.interp(hours % 24.0, knots_x, knots_y)


# Normalise so that the mean intensity over a whole week is exactly 1.0.
_WEEK_MEAN = float(np.mean(_hour_curve(np.arange(0, 24, 1 / 60)))) * float(np.mean(WEEKDAY_FACTORS))


def _as_utc_ns(values: Any) -> np.ndarray:
    index = pd.DatetimeIndex(values)
    if index.tz is None:
        index = index.tz_localize("UTC")
    else:
        index = index.tz_convert("UTC")
    return index.as_unit("ns").asi8


def incident_windows(incidents: Any) -> list[tuple[int, int, float]]:
    """(start_ns, end_ns, multiplier) of incidents given as a DataFrame, a list of dicts or None."""
    if incidents is None:
        return []
    if isinstance(incidents, pd.DataFrame):
        rows: Iterable[Mapping[str, Any]] = incidents.to_dict("records")
    else:
        rows = incidents
    windows = []
    for row in rows:
        start, end = _as_utc_ns([row["start"], row["end"]])
        windows.append((int(start), int(end), float(row["multiplier"])))
    return windows


def rate_profile(timestamps: pd.DatetimeIndex | Any, incidents: Any = None) -> np.ndarray:
    """Relative order intensity at each timestamp (mean 1.0 over a normal week).

    The product of an hour-of-day curve (interpolated, so it is smooth), a weekday factor and, inside each
    incident window ``[start, end)``, the incident's multiplier (surge ×3–6, outage ×0.05). Naive timestamps
    are taken as UTC. ``incidents`` is ``Dataset.incidents``, the parsed ``incidents.json`` or None.
    Multiply by the expected orders per unit of time to get an absolute rate, e.g. a dense simulated day::

        minutes = pd.date_range("2011-01-05", periods=1440, freq="min", tz="UTC")
        per_minute = dataset.manifest["counts"]["orders"] / (dataset.manifest["spec"]["days"] * 1440)
        expected = per_minute * rate_profile(minutes, dataset.incidents)  # then rng.poisson(expected)
    """
    ns = _as_utc_ns(timestamps)
    day_ns = ns % _NS_PER_DAY
    hours = day_ns / _NS_PER_HOUR
    # 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
    weekday = ((ns // _NS_PER_DAY) + 3) % 7
    intensity = _hour_curve(hours) * WEEKDAY_FACTORS[weekday] / _WEEK_MEAN
    for start, end, multiplier in incident_windows(incidents):
        inside = (ns >= start) & (ns < end)
        intensity = np.where(inside, intensity * multiplier, intensity)
    return intensity
