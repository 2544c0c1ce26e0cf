"""The live demonstration of the alarm in one verb: a simulated slice replayed onto ``orders``, the detector consuming it.

:func:`run_live` is what notebook 04 (and anyone checking the deployed detector) calls: it starts the detector at the
current end of the stream (other parts' orders are not its business), empties the alarm inbox, replays the slice
time-compressed, adds one malformed and one late record (:func:`bad_records`: they must be counted and dead-lettered,
never fatal), runs the detector (:func:`shoplake.alarm.consume`), reads the alarm texts back from the inbox and
evaluates the alarms against the slice's ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoplake.alarm._evaluate import evaluate, rcf_detections
from shoplake.alarm._simulate import SimulatedDay
from shoplake.alarm._windows import parse_ts
from shoplake.alarm.detector import ConsumeResult, DetectorConfig, consume, reset, start_at_stream_end
from shoplake.errors import ConfigError


def bad_records(day: SimulatedDay) -> list[Any]:
    """One malformed record (not JSON) and one late order (an hour before the slice's first order) for ``day``."""
    if day.events.empty:
        raise ConfigError("the simulated slice has no order events: widen the hours or raise orders_per_day")
    first = day.records()[0]
    late_at = parse_ts(first["InvoiceDate"]) - 3600
    late_iso = f"{day.day}T{int(late_at % 86400) // 3600:02d}:{int(late_at % 3600) // 60:02d}:00Z"
    return [b"{not json", {**first, "InvoiceNo": "LATE1", "InvoiceDate": late_iso}]


@dataclass
class LiveRun:
    """What :func:`run_live` did: replay counts, the detector's run, the texts read back, the evaluation."""

    day: SimulatedDay
    consumer: str
    replayed: dict[str, Any]
    injected: int
    result: ConsumeResult
    texts: list[dict[str, Any]]  # the alarm texts of this detector, as read back from the inbox
    evaluation: dict[str, Any]

    @property
    def counts(self) -> dict[str, Any]:
        return self.result.counts

    @property
    def detector(self) -> Any:
        return self.result.detector

    def metrics(self) -> dict[str, Any]:
        """The checkable numbers notebook 04 records."""
        return {
            "events": len(self.day.events),
            "incidents": len(self.day.incidents),
            "counts": self.counts,
            "recall": self.evaluation["recall"],
            "precision": self.evaluation["precision"],
            "sns_messages": len(self.texts),
            "mapping": self.result.mapping,
        }


def run_live(
    day: SimulatedDay,
    config: DetectorConfig,
    *,
    consumer: str,
    speed: float | None = 3_600,
    inbox_max_seconds: float = 180.0,
) -> LiveRun:
    """Replay ``day`` onto ``orders`` (``speed`` event seconds per wall second), run the detector ``consumer`` over it
    from the stream's current end, and read its alarm texts back; see the module docstring for the steps."""
    from shoplake import streams
    from shoplake.alarm import messages

    if config.window_seconds != day.window_seconds:
        raise ConfigError(
            f"the detector's window ({config.window_seconds} s) differs from the slice's ({day.window_seconds} s): "
            "simulate the day with the same window_seconds"
        )
    reset(consumer)
    start_at_stream_end(consumer)
    messages.purge_inbox()
    replayed = streams.replay(day.events, "orders", speed=speed, progress=False)
    bad = bad_records(day)
    streams.put_records("orders", bad, progress=False)
    result = consume(consumer, config, warmup=day.warmup)
    texts = messages.sent_messages(expect=result.published, max_seconds=inbox_max_seconds)
    incident_ids = {a["incident_id"] for a in result.alarms if a["status"] == "published"}
    mine = [t for t in texts if any(f"Incident {i}" in (t["text"] or "") for i in incident_ids)]
    lo, hi = day.extra.get("slice", [None, None])
    span = (parse_ts(hi) - parse_ts(lo)) if lo and hi else 86_400
    evaluation = evaluate(
        rcf_detections(result.detector.alarms),
        day.incidents,
        days=span / 86_400,
        window_seconds=day.window_seconds,
    )
    return LiveRun(day, consumer, replayed.counts(), len(bad), result, mine, evaluation)
