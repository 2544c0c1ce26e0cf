"""A dense simulated shop day for the alarm: order events drawn from the datagen rate model, incidents known.

The day uses :func:`shoplake.datagen.rate_profile` (hour-of-day × weekday rhythm × incident multipliers:
surge ×3–6, outage ×0.05), scaled so that a normal day has ``orders_per_day`` orders — far denser than the
datagen shop, so that per-window counts mean something at 3 a.m. too. Order times are Poisson per second,
each order has 1–3 lines (1.2 on average; the order-event schema of docs/internals.md) and ~1 % of the invoices are
cancellations. The incidents are ground truth: a surge in the night, an outage at noon, a surge in the
afternoon and an outage in the evening by default, placed by the seed. The ``warmup_days`` before the day
are drawn the same way without incidents: the forest's warm-up (deployed, the detector's state from
yesterday). An outage in the small hours is not simulated: at 0.05 × a handful of orders no detector can
tell it from chance within minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from shoplake.alarm._windows import EventTimeWindows, WindowCount, iso, parse_ts
from shoplake.datagen import rate_profile
from shoplake.errors import ConfigError

DEFAULT_DAY = "2011-11-09"  # a Wednesday (after a Monday and a Tuesday of nearly the same volume)
# (earliest hour, latest hour, kind, multiplier range, duration minutes range) of the default incidents
INCIDENT_SLOTS: list[tuple[float, float, str, tuple[float, float], tuple[int, int]]] = [
    (2.0, 4.0, "surge", (3.0, 6.0), (25, 45)),
    (11.0, 13.0, "outage", (0.05, 0.05), (20, 40)),
    (15.0, 17.0, "surge", (3.0, 6.0), (20, 40)),
    (19.0, 21.0, "outage", (0.05, 0.05), (20, 40)),
]
CANCELLED_SHARE = 0.01
COUNTRIES = ["United Kingdom", "Germany", "France", "EIRE", "Spain", "Netherlands"]


@dataclass
class SimulatedDay:
    """One simulated day: its order events, the ground-truth incidents and the warm-up window counts."""

    day: str
    events: pd.DataFrame
    incidents: list[dict[str, Any]]
    warmup: list[WindowCount]
    window_seconds: int
    orders_per_day: int
    seed: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def start(self) -> float:
        return parse_ts(f"{self.day}T00:00:00Z")

    def records(self) -> list[dict[str, Any]]:
        """The order events as JSON-ready dicts (stream order: by InvoiceDate)."""
        return self.events.to_dict("records")


def default_incidents(day: str, seed: int) -> list[dict[str, Any]]:
    """The ground-truth incidents of ``day`` (incidents.json format), placed by ``seed``."""
    rng = np.random.default_rng(seed + 1)
    midnight = datetime.fromisoformat(f"{day}T00:00:00+00:00")
    incidents = []
    for number, (lo, hi, kind, (m_lo, m_hi), (d_lo, d_hi)) in enumerate(INCIDENT_SLOTS, start=1):
        start = midnight + timedelta(seconds=int(rng.uniform(lo, hi - 1) * 3600))
        duration = timedelta(minutes=int(rng.integers(d_lo, d_hi + 1)))
        incidents.append(
            {
                "incident_id": f"sim-{number}",
                "kind": kind,
                "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "end": (start + duration).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "multiplier": round(float(rng.uniform(m_lo, m_hi)), 2),
            }
        )
    return incidents


def order_times(
    start: float, seconds: int, orders_per_day: int, incidents: list[dict[str, Any]] | None, rng: np.random.Generator
) -> np.ndarray:
    """Order times (epoch seconds, sorted) over ``[start, start + seconds)`` from the datagen rate model."""
    grid = pd.to_datetime(start + np.arange(seconds) + 0.5, unit="s", utc=True)
    intensity = rate_profile(grid, incidents)
    normal_day = rate_profile(pd.to_datetime(start + np.arange(86_400) + 0.5, unit="s", utc=True))
    per_second = intensity * orders_per_day / float(normal_day.sum())
    counts = rng.poisson(per_second)
    times = np.repeat(start + np.arange(seconds, dtype=float), counts)
    return times + rng.random(len(times))


def order_events(times: np.ndarray, rng: np.random.Generator, first_invoice: int = 600_000) -> pd.DataFrame:
    """Order-line events (docs/internals.md schema) for orders at ``times``: 1–3 lines, ~1 % cancellations."""
    n = len(times)
    lines = 1 + np.minimum(rng.poisson(0.25, n), 2)
    cancelled = rng.random(n) < CANCELLED_SHARE
    order = np.repeat(np.arange(n), lines)
    line_no = np.concatenate([np.arange(k) for k in lines]) if n else np.array([], dtype=int)
    numbers = np.array([("C" if c else "") + str(first_invoice + i) for i, c in enumerate(cancelled)], dtype=object)
    stamp = pd.to_datetime(np.floor(times), unit="s").strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy(dtype=object)
    quantity = rng.choice([1, 2, 3, 6, 12], size=len(order))
    quantity = np.where(cancelled[order], -quantity, quantity)
    stock = rng.integers(20_000, 23_000, size=len(order))
    customer = rng.integers(12_000, 18_000, size=n)
    return pd.DataFrame(
        {
            "InvoiceNo": numbers[order],
            "StockCode": stock.astype(str),
            "Description": ["SIMULATED ITEM " + s for s in stock.astype(str)],
            "Quantity": quantity.astype(int),
            "InvoiceDate": stamp[order],
            "UnitPrice": np.round(rng.uniform(0.5, 15.0, size=len(order)), 2),
            "CustomerID": customer.astype(str)[order],
            "Country": np.asarray(COUNTRIES, dtype=object)[rng.integers(0, len(COUNTRIES), size=n)][order],
            "LineNo": line_no.astype(int),
        }
    )


def window_counts(events: pd.DataFrame, window_seconds: int) -> list[WindowCount]:
    """Aggregate order events into closed windows with the detector's own window code."""
    windows = EventTimeWindows(window_seconds, 0)
    for ts, invoice, line in zip(
        events["InvoiceDate"].map(parse_ts), events["InvoiceNo"], events["LineNo"], strict=True
    ):
        windows.add(ts, invoice, int(line))
    return windows.close_ready() + windows.flush()


def simulate_day(
    seed: int = 42,
    day: str = DEFAULT_DAY,
    orders_per_day: int = 60_000,
    window_seconds: int = 600,
    incidents: list[dict[str, Any]] | None = None,
    warmup_days: int = 2,
) -> SimulatedDay:
    """Draw a simulated day (events + ground truth) and the warm-up days before it."""
    if orders_per_day < 1_000:
        raise ConfigError(f"orders_per_day={orders_per_day} is too sparse for per-window detection; use ≥ 1000")
    if 86_400 % window_seconds:
        raise ConfigError(f"window_seconds must divide a day (86400 s), got {window_seconds}")
    if warmup_days < 1:
        raise ConfigError("warmup_days must be ≥ 1: the forest learns the daily rhythm from them")
    incidents = default_incidents(day, seed) if incidents is None else incidents
    start = parse_ts(f"{day}T00:00:00Z")
    rng = np.random.default_rng(seed)
    warm_start = start - warmup_days * 86_400
    warm_times = order_times(warm_start, warmup_days * 86_400, orders_per_day, None, rng)
    warm_orders = warm_times[rng.random(len(warm_times)) >= CANCELLED_SHARE]  # cancellations are not orders
    edges = warm_start + np.arange(warmup_days * 86_400 // window_seconds + 1) * window_seconds
    counts, _ = np.histogram(warm_orders, bins=edges)
    warmup = [
        WindowCount(float(a), float(a + window_seconds), int(n), int(n), 0)
        for a, n in zip(edges[:-1], counts, strict=True)
    ]
    times = order_times(start, 86_400, orders_per_day, incidents, rng)
    events = order_events(times, rng)
    return SimulatedDay(
        day=day,
        events=events,
        incidents=incidents,
        warmup=warmup,
        window_seconds=window_seconds,
        orders_per_day=orders_per_day,
        seed=seed,
        extra={"warmup_start": iso(warm_start)},
    )


def day_slice(sim: SimulatedDay, start_hour: float, end_hour: float) -> SimulatedDay:
    """The part of a simulated day between two hours (for a stream replay the emulator can take quickly)."""
    if not 0 <= start_hour < end_hour <= 24:
        raise ConfigError(f"need 0 ≤ start_hour < end_hour ≤ 24, got {start_hour}, {end_hour}")
    lo, hi = sim.start + start_hour * 3600, sim.start + end_hour * 3600
    seconds = sim.events["InvoiceDate"].map(parse_ts)
    events = sim.events[(seconds >= lo) & (seconds < hi)].reset_index(drop=True)
    incidents = [i for i in sim.incidents if parse_ts(i["start"]) < hi and parse_ts(i["end"]) > lo]
    return SimulatedDay(
        sim.day,
        events,
        incidents,
        sim.warmup,
        sim.window_seconds,
        sim.orders_per_day,
        sim.seed,
        {**sim.extra, "slice": [iso(lo), iso(hi)]},
    )
