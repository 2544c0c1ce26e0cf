"""Notebook 05's steps: stream the dataset's access log (generator or agent path) and investigate 5xx bursts."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from shoplake._process import ThreadWorker, Worker
from shoplake._stall import StallWatch
from shoplake.weblogs._dashboard import find_spikes
from shoplake.weblogs._delivery import StreamReport, stream_log
from shoplake.weblogs._index import LogIndex
from shoplake.weblogs._lake_io import DeliveryError
from shoplake.weblogs._parser import iter_lines

log = logging.getLogger(__name__)


def _log_extent(path: Path) -> tuple[int, float]:
    """``(lines, seconds from the first line's time to the last's)`` in one pass, without holding the lines; the
    span is 0 when the first or the last line has no time. Times as the simulated servers read them
    (``shoplake.agent._servers``), so the span is the one their clock plays."""
    from shoplake.agent._servers import _access_time

    n, first, last = 0, None, None
    for line in iter_lines(path):
        n += 1
        first = line if first is None else first
        last = line
    if first is None or last is None:
        return n, 0.0
    began, ended = _access_time(first), _access_time(last)
    if began is None or ended is None:
        return n, 0.0
    return n, ended - began


def _written_offsets(path: Path) -> np.ndarray:
    """Each line's place on the servers' clock (seconds after the log's first time), in the order they write them:
    the time the simulated servers write it at (:func:`shoplake.agent._servers.access_lines_of`: a line without a
    time of its own goes with the line before it). Empty lines are not written, so they have no place."""
    from shoplake.agent._servers import access_lines_of

    values = np.fromiter((ts for ts, _, _ in access_lines_of(iter_lines(path))), dtype=float)
    return values - values.min() if values.size else values


def freshness_by_count(written_at: np.ndarray, seen: list[tuple[int, float]]) -> list[float]:
    """Per line: the first observation whose count covers it (in write order) minus its write time (seconds, ≥ 0).

    ``written_at``: wall-clock write times of the lines, ``seen``: ``(lines visible, wall time)`` observations.
    Lines are taken to become visible in the order they were written (Firehose delivers in arrival order).
    """
    if not seen or written_at.size == 0:
        return []
    order = np.sort(written_at)
    counts = np.maximum.accumulate(np.array([c for c, _ in seen]))
    times = np.array([t for _, t in seen])
    first = np.searchsorted(counts, np.arange(1, order.size + 1), side="left")  # first observation covering line k
    first = np.minimum(first, len(seen) - 1)
    return np.clip(times[first] - order, 0.0, None).tolist()


def stream_dataset(
    dataset: Any,
    index: LogIndex,
    source: str = "agent",
    seconds: float = 15.0,
    lines_per_batch: int = 200,
    stall_s: float = 180.0,
    progress: bool = True,
) -> StreamReport:
    """Stream ``dataset.access_log_path`` into ``index`` in about ``seconds`` of wall time, measuring freshness.

    ``source="generator"``: shoplake ships the lines itself at a steady rate (:func:`stream_log`): a line's freshness
    is its put time → the first dashboard count covering it. ``source="agent"``: simulated web servers write the log
    with the shop's rhythm compressed into ``seconds`` and the shipping agent tails and ships it
    (``shoplake.agent.ship_dataset``) to Firehose ``weblogs``; a line's write time is its place on that compressed
    clock, and it is visible at the first count of the index (documents + rejected lines) that covers it. The
    index's own follower (``index.follower()``) brings the deliveries in — locally from the lake, on aws Firehose
    writes to OpenSearch and the follower watches — so both targets measure freshness from the index the same way.
    The waits (for the agent, then for the last lines) fail only when the index gains nothing for ``stall_s`` or the
    backend's expected delivery delay (Firehose buffering on aws), the longer: a larger log never outgrows them.
    """
    path = Path(dataset.access_log_path)
    n_lines, span = _log_extent(path)
    if source == "generator":
        return stream_log(
            path,
            index,
            lines_per_batch=lines_per_batch,
            lines_per_second=n_lines / max(seconds, 0.1),
            stall_s=stall_s,
            progress=progress,
        )
    if source != "agent":
        raise DeliveryError(f"source must be 'generator' or 'agent', got {source!r}")
    speed = max(span / max(seconds, 0.1), 1.0)
    report = StreamReport()
    seen: list[tuple[int, float]] = []  # (lines of this run visible in the index, wall time)
    follower = index.follower(
        interval_s=0.1, only_new=True, on_pass=lambda _: seen.append((follower.counts.lines, time.time()))
    )
    began = time.perf_counter()
    follower.start()
    # Locally the servers and the agent run in a process of their own, as on real web servers: this one indexes
    # what Firehose delivers (the follower) while that one writes and ships, so the two use both cores. On aws the
    # follower only watches the domain's counts (Firehose indexes), so a thread here is enough.
    runner = Worker if follower.indexes_here else ThreadWorker
    try:
        with runner(_ship_access_log, _AccessLogOnly(path), speed, name="shoplake-agent") as shipper:
            watch = StallWatch(max(stall_s, follower.expected_delay_s))
            with tqdm(total=n_lines, desc="weblogs searchable", unit="line", disable=not progress) as bar:
                while not shipper.done(0.5):  # the agent ships for as long as the index keeps growing
                    bar.update(follower.counts.lines - bar.n)
                    if watch.stalled(follower.counts.lines):
                        raise DeliveryError(
                            f"the agent is still shipping but the index gained nothing for {watch.stall_s:.0f} s "
                            f"({follower.counts.lines} lines so far); {follower.hint}"
                        )
                began_wall, counts = shipper.result()
                sent_s = time.perf_counter() - began  # the agent has put every line to Firehose
                counts = counts["weblogs"]
                report.shipped = int(counts["records_sent"])
                follower.wait_until_seen(
                    seen, report.shipped, watch, 0.05, lambda: bar.update(follower.counts.lines - bar.n)
                )
                bar.update(follower.counts.lines - bar.n)
    finally:
        follower.stop()
    report.seconds = time.perf_counter() - began
    report.indexed, report.rejected = follower.counts.indexed, follower.counts.rejected
    report.delivery = {
        **follower.counts.as_dict(),
        "agent": counts,
        "speed": round(speed, 1),
        "sent_s": round(sent_s, 3),
    }
    # freshness: first index count covering the line minus the line's time on the servers' compressed clock
    offsets = _written_offsets(path)
    written_at = began_wall + offsets / speed
    report.write_seconds = float(offsets.max()) / speed if offsets.size else 0.0
    report.freshness_s = freshness_by_count(written_at[: report.shipped], seen)
    return report


@dataclass(frozen=True)
class _AccessLogOnly:
    """A dataset that is only an access log (what the agent's ``weblogs`` flow reads of a dataset)."""

    access_log_path: Path


def _ship_access_log(dataset: _AccessLogOnly, speed: float) -> tuple[float, dict[str, dict[str, int]]]:
    """The agent's work (in its own process locally, in a thread on aws): ``(wall time the servers' clock started,
    the agent's counts)``."""
    from shoplake import agent

    began_wall = time.time()  # after this process's start-up: the servers' compressed clock starts here
    return began_wall, agent.ship_dataset(dataset, flows=["weblogs"], speed=speed, progress=False)


@dataclass
class FreshnessReport:
    """Notebook 05's measurement in two phases, reported apart.

    ``paced``: the first lines of the log written at a steady, stated rate (``lines_per_s``) while the index's
    follower brings them in; its per-line freshness (written → searchable) is *the* freshness figure.
    ``catch_up``: the rest of the log as fast as ``source`` plays it (the agent: the shop's rhythm compressed into a
    few seconds), far above the paced rate; the time its lines wait is backlog (queueing), not freshness.
    Together the phases ship every line of the log once.
    """

    lines_per_s: float
    source: str
    paced: StreamReport
    catch_up: StreamReport | None = None

    @property
    def shipped(self) -> int:
        return self.paced.shipped + (self.catch_up.shipped if self.catch_up else 0)

    @property
    def indexed(self) -> int:
        return self.paced.indexed + (self.catch_up.indexed if self.catch_up else 0)

    @property
    def rejected(self) -> int:
        return self.paced.rejected + (self.catch_up.rejected if self.catch_up else 0)

    @property
    def freshness_s(self) -> list[float]:
        """Per line of the paced phase: seconds from written to searchable."""
        return self.paced.freshness_s

    def backlog(self) -> dict[str, Any]:
        """The catch-up phase: how many lines, how fast they were written, how long the index took to drain them."""
        c = self.catch_up
        if c is None or not c.shipped:
            return {"source": self.source, "lines": 0}
        return {
            "source": self.source,
            "lines": c.shipped,
            "write_s": round(c.write_seconds, 3),
            "written_lines_per_s": round(c.shipped / c.write_seconds, 1) if c.write_seconds else None,
            "all_visible_s": round(c.seconds, 3),
            "drain_s": round(max(c.seconds - c.write_seconds, 0.0), 3),  # last line written → all of them visible
            # the agent's last put to Firehose (the generator puts as it writes), and from there to all visible
            "sent_s": c.delivery.get("sent_s", round(c.write_seconds, 3)),
            "after_last_put_s": round(max(c.seconds - c.delivery.get("sent_s", c.write_seconds), 0.0), 3),
            "indexed_lines_per_s": round(c.shipped / c.seconds, 1) if c.seconds else None,
            "lag_p50_s": c.percentile(50),
            "lag_p95_s": c.percentile(95),
            "lag_max_s": max(c.freshness_s) if c.freshness_s else None,
        }

    def as_dict(self) -> dict[str, Any]:
        p = self.paced
        return {
            "shipped": self.shipped,
            "indexed": self.indexed,
            "rejected": self.rejected,
            "paced_lines_per_s": self.lines_per_s,  # stated
            "paced_written_lines_per_s": round(p.shipped / p.write_seconds, 1) if p.write_seconds else None,
            "paced_lines": p.shipped,
            "paced_seconds": round(p.seconds, 3),
            "freshness_p50_s": p.percentile(50),
            "freshness_p95_s": p.percentile(95),
            "freshness_max_s": max(p.freshness_s) if p.freshness_s else None,
            "backlog": self.backlog(),
        }


def measure_freshness(
    dataset: Any,
    index: LogIndex,
    lines_per_s: float = 2000.0,
    paced_seconds: float = 10.0,
    source: str = "agent",
    catch_up_seconds: float = 15.0,
    lines_per_batch: int = 200,
    stall_s: float = 180.0,
    progress: bool = True,
) -> FreshnessReport:
    """Stream the dataset's access log in two phases (:class:`FreshnessReport`): freshness at a paced rate, then
    the backlog of the rest.

    Paced: the first ``lines_per_s × paced_seconds`` lines (at most half the log) are put to Firehose ``weblogs``
    at ``lines_per_s`` (:func:`stream_log`, batches of ``lines_per_batch``). Catch-up: the remaining lines through
    ``source`` in about ``catch_up_seconds`` (:func:`stream_dataset`: ``"agent"`` plays them as web servers writing
    log files the shipping agent tails, ``"generator"`` puts them itself).
    """
    import tempfile

    if lines_per_s <= 0 or paced_seconds <= 0:
        raise DeliveryError(
            f"the paced phase needs a rate and a duration > 0, got {lines_per_s} lines/s, {paced_seconds} s"
        )
    with open(dataset.access_log_path, "rb") as handle:  # bytes: the catch-up file is the log's own tail
        raw = handle.readlines()
    n_paced = min(int(lines_per_s * paced_seconds), (len(raw) + 1) // 2)  # at most half: both phases always run
    lines = [r.decode("utf-8", errors="backslashreplace").rstrip("\r\n") for r in raw[:n_paced]]  # as iter_lines
    paced = stream_log(
        lines,
        index,
        lines_per_batch=lines_per_batch,
        lines_per_second=lines_per_s,
        stall_s=stall_s,
        progress=progress,
    )
    report = FreshnessReport(lines_per_s=float(lines_per_s), source=source, paced=paced)
    rest = raw[n_paced:]
    if not rest:
        return report
    with tempfile.TemporaryDirectory(prefix="shoplake-weblogs-") as tmp:
        rest_path = Path(tmp) / "access.log"
        rest_path.write_bytes(b"".join(rest))
        report.catch_up = stream_dataset(
            _AccessLogOnly(rest_path),
            index,
            source=source,
            seconds=catch_up_seconds,
            lines_per_batch=lines_per_batch,
            stall_s=stall_s,
            progress=progress,
        )
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
