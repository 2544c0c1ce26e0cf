"""Event-time tumbling windows over order events: watermark, late-record counting, serialisable state.

A window is keyed by its start (epoch seconds, a multiple of ``window_seconds``). The watermark is the
largest order time seen minus ``allowed_lateness_seconds``; a window closes once the watermark passes its
end, and every window between the first and the watermark is emitted, empty ones included (an outage is
a run of near-empty windows). A record whose window has already closed is *late*: counted, not added.
Orders are counted once per invoice (``InvoiceNo``) per window, so a re-delivered record does not count
twice; cancellations (``C…``) are counted on their own and are not orders.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shoplake.errors import ConfigError


def parse_ts(value: str) -> float:
    """Epoch seconds of an ISO 8601 UTC timestamp (``YYYY-MM-DDTHH:MM:SSZ``); ValueError when malformed."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"InvoiceDate must be an ISO 8601 string, got {value!r}")
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def iso(ts: float) -> str:
    """ISO 8601 UTC with a ``Z`` (seconds precision)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WindowCount:
    """One closed window: its bounds (epoch seconds) and what it counted."""

    start: float
    end: float
    orders: int
    lines: int
    cancellations: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "orders": self.orders,
            "lines": self.lines,
            "cancellations": self.cancellations,
        }


@dataclass
class _Open:
    invoices: set[str] = field(default_factory=set)
    cancellations: set[str] = field(default_factory=set)
    lines: int = 0


class EventTimeWindows:
    """Tumbling event-time windows with a watermark; ``add`` records, ``close_ready`` emits closed windows."""

    def __init__(self, window_seconds: int = 300, allowed_lateness_seconds: int = 30) -> None:
        if window_seconds <= 0:
            raise ConfigError(f"window_seconds must be > 0, got {window_seconds}")
        if not 0 <= allowed_lateness_seconds < window_seconds:
            raise ConfigError(
                f"allowed_lateness_seconds must be in [0, window_seconds={window_seconds}), got {allowed_lateness_seconds}"
            )
        self.window_seconds = int(window_seconds)
        self.allowed_lateness_seconds = int(allowed_lateness_seconds)
        self.open: dict[int, _Open] = {}
        self.next_start: int | None = None  # start of the oldest window not yet emitted
        self.max_event_ts: float | None = None
        self.counts = {"accepted": 0, "late": 0, "duplicate": 0}

    # ------------------------------------------------------------------ feeding
    def window_start(self, ts: float) -> int:
        return int(math.floor(ts / self.window_seconds) * self.window_seconds)

    @property
    def watermark(self) -> float | None:
        """Event time up to which the windows are complete (max order time − allowed lateness)."""
        return None if self.max_event_ts is None else self.max_event_ts - self.allowed_lateness_seconds

    def add(self, ts: float, invoice_no: str, line_no: int = 0) -> str:
        """Count one order line at event time ``ts``; returns ``accepted``, ``late`` or ``duplicate``."""
        start = self.window_start(ts)
        if self.next_start is None:
            self.next_start = start
        if start < self.next_start:
            self.counts["late"] += 1
            return "late"
        window = self.open.setdefault(start, _Open())
        key = f"{invoice_no}#{line_no}"
        if key in window.invoices or key in window.cancellations:
            self.counts["duplicate"] += 1
            return "duplicate"
        (window.cancellations if invoice_no.startswith("C") else window.invoices).add(key)
        window.lines += 1
        self.max_event_ts = ts if self.max_event_ts is None else max(self.max_event_ts, ts)
        self.counts["accepted"] += 1
        return "accepted"

    def close_ready(self, watermark: float | None = None) -> list[WindowCount]:
        """Emit (in order) every window whose end is at or before the watermark, empty ones included."""
        mark = self.watermark if watermark is None else watermark
        closed: list[WindowCount] = []
        if mark is None or self.next_start is None:
            return closed
        while self.next_start + self.window_seconds <= mark:
            closed.append(self._emit(self.next_start))
        return closed

    def flush(self) -> list[WindowCount]:
        """Close every open window (end of a replay)."""
        closed: list[WindowCount] = []
        if self.next_start is None:
            return closed
        last = max(self.open) if self.open else self.next_start - self.window_seconds
        while self.next_start <= last:
            closed.append(self._emit(self.next_start))
        return closed

    def _emit(self, start: int) -> WindowCount:
        window = self.open.pop(start, _Open())
        orders = len({k.split("#", 1)[0] for k in window.invoices})
        cancels = len({k.split("#", 1)[0] for k in window.cancellations})
        self.next_start = start + self.window_seconds
        return WindowCount(float(start), float(start + self.window_seconds), orders, window.lines, cancels)

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (open windows, watermark, counters)."""
        return {
            "window_seconds": self.window_seconds,
            "allowed_lateness_seconds": self.allowed_lateness_seconds,
            "next_start": self.next_start,
            "max_event_ts": self.max_event_ts,
            "counts": dict(self.counts),
            "open": {
                str(k): {"invoices": sorted(w.invoices), "cancellations": sorted(w.cancellations), "lines": w.lines}
                for k, w in self.open.items()
            },
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EventTimeWindows:
        windows = cls(state["window_seconds"], state["allowed_lateness_seconds"])
        windows.next_start = state["next_start"]
        windows.max_event_ts = state["max_event_ts"]
        windows.counts.update(state["counts"])
        windows.open = {
            int(k): _Open(set(v["invoices"]), set(v["cancellations"]), int(v["lines"]))
            for k, v in state["open"].items()
        }
        return windows
