"""Notebook 05's steps: stream the dataset's access log (generator or agent path) and investigate 5xx bursts."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoplake.weblogs._dashboard import find_spikes
from shoplake.weblogs._delivery import DeliveryError, Follower, StreamReport, stream_log
from shoplake.weblogs._index import LocalIndex, LogIndex
from shoplake.weblogs._parser import iter_lines

log = logging.getLogger(__name__)


def _log_span_s(path: Path) -> float:
    from shoplake.functions.weblogs_transform import parse_line

    lines = list(iter_lines(path))
    stamps = [d["@timestamp"] for d in (parse_line(x)[0] for x in (lines[0], lines[-1])) if d]
    if len(stamps) < 2:
        return 0.0
    return (pd.Timestamp(stamps[1]) - pd.Timestamp(stamps[0])).total_seconds()


def stream_dataset(
    dataset: Any,
    index: LogIndex,
    source: str = "agent",
    seconds: float = 15.0,
    lines_per_batch: int = 200,
    timeout_s: float = 180.0,
    progress: bool = True,
) -> StreamReport:
    """Stream ``dataset.access_log_path`` into ``index`` in about ``seconds`` of wall time, measuring freshness.

    ``source="generator"``: shoplake ships the lines itself at a steady rate (:func:`stream_log`): a line's freshness
    is its put time → the first dashboard count covering it. ``source="agent"``: simulated web servers write the log
    with the shop's rhythm compressed into ``seconds`` and the shipping agent tails and ships it
    (``shoplake.agent.ship_dataset``); a line's write time is its place on that compressed clock, and it is visible
    when the batch holding it is committed to the index (conservative: the clock starts before the servers do).
    """
    path = Path(dataset.access_log_path)
    n_lines = sum(1 for _ in iter_lines(path))
    if source == "generator":
        return stream_log(
            path,
            index,
            lines_per_batch=lines_per_batch,
            lines_per_second=n_lines / max(seconds, 0.1),
            timeout_s=timeout_s,
            progress=progress,
        )
    if source != "agent":
        raise DeliveryError(f"source must be 'generator' or 'agent', got {source!r}")
    if not isinstance(index, LocalIndex):
        raise DeliveryError("freshness of the agent path is measured on the local index (target local)")
    from shoplake import agent

    span = _log_span_s(path)
    speed = max(span / max(seconds, 0.1), 1.0)
    report = StreamReport()
    follower = Follower(index, interval_s=0.1, only_new=True)
    began_wall = time.time()
    began = time.perf_counter()
    follower.start()
    outcome: dict[str, Any] = {}

    def ship() -> None:
        try:
            outcome["counts"] = agent.ship_dataset(dataset, flows=["weblogs"], speed=speed, progress=progress)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            outcome["error"] = exc

    shipper = threading.Thread(target=ship, name="agent-ship", daemon=True)
    shipper.start()
    try:
        shipper.join(timeout=timeout_s)
        if "error" in outcome:
            raise outcome["error"]
        if "counts" not in outcome:
            raise DeliveryError(f"the agent did not finish shipping within {timeout_s:.0f} s")
        counts = outcome["counts"]["weblogs"]
        report.shipped = int(counts["records_sent"])
        deadline = time.perf_counter() + timeout_s
        while follower.counts.lines < report.shipped:
            if follower.errors:
                raise DeliveryError(f"the delivery failed: {follower.errors[-1]}")
            if time.perf_counter() > deadline:
                raise DeliveryError(
                    f"{follower.counts.lines} of {report.shipped} shipped lines were indexed within {timeout_s:.0f} s"
                )
            time.sleep(0.05)
    finally:
        follower.stop()
    report.seconds = time.perf_counter() - began
    report.indexed, report.rejected = follower.counts.indexed, follower.counts.rejected
    report.delivery = {**follower.counts.as_dict(), "agent": outcome["counts"]["weblogs"], "speed": round(speed, 1)}
    # freshness: commit time of the batch holding the line minus the line's time on the servers' compressed clock
    rows = (
        index._cur()
        .execute(  # noqa: SLF001 - the local index's own commit times
            "SELECT epoch(d.ts), epoch(s.ingested_at) FROM docs d JOIN sources s USING (source)"
        )
        .fetchall()
    )
    if rows:
        ts = np.array([r[0] for r in rows], dtype=float)
        visible = np.array([r[1] for r in rows], dtype=float)
        written = began_wall + (ts - ts.min()) / speed
        report.freshness_s = np.clip(visible - written, 0.0, None).tolist()
    return report


def load_incidents(dataset: Any) -> list[dict[str, Any]]:
    """``weblog_incidents.json`` of the dataset (5xx bursts: start, end, path, status, requests)."""
    path = Path(dataset.dir) / "weblog_incidents.json"
    return json.loads(path.read_text()) if path.exists() else []


def investigate(index: LogIndex, incidents: list[dict[str, Any]], interval: str = "1m") -> pd.DataFrame:
    """Find 5xx spikes by search and match them to the known incidents.

    Per incident: the 5xx requests the index finds on its path in its window (``status:5* AND path:<path>``),
    the spike episode overlapping it, and the path the search ranks first inside that episode.
    """
    errors = index.date_histogram("status_class:5xx", interval, None)
    spikes = find_spikes(errors, interval)
    rows = []
    for inc in incidents:
        start, end = pd.Timestamp(inc["start"]), pd.Timestamp(inc["end"])
        query = f'status_class:5xx AND path:"{inc["path"]}"'
        found = index.count(query, start, end)
        overlapping = spikes[(spikes["start"] < end) & (spikes["end"] > start)]
        top_path = None
        if not overlapping.empty:
            s = overlapping.iloc[0]
            top = index.terms("path", "status_class:5xx", 1, s["start"], s["end"])
            top_path = top["key"].iloc[0] if not top.empty else None
        rows.append(
            {
                "start": start,
                "end": end,
                "path": inc["path"],
                "status": inc.get("status"),
                "expected_requests": inc.get("requests"),
                "found_requests": found,
                "spike_found": not overlapping.empty,
                "spike_top_path": top_path,
                "path_matches": top_path == inc["path"],
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["spikes"] = spikes
    matched = sum(
        1
        for _, s in spikes.iterrows()
        if any(pd.Timestamp(i["start"]) < s["end"] and pd.Timestamp(i["end"]) > s["start"] for i in incidents)
    )
    table.attrs["false_spikes"] = len(spikes) - matched
    return table
