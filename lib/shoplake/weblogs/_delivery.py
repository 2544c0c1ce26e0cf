"""Delivery of access logs: ship lines to Firehose ``weblogs``, and the follower that brings them into the index.

On aws Firehose runs the transformation Lambda (``lambdas/weblogs_transform.py``) and writes its documents to
OpenSearch itself (access documents and rejected-line documents carrying the parser's reason); records it cannot
deliver go to the S3 backup ``weblogs-failed/`` of the lake bucket. Locally the emulator's Firehose lands the raw
lines in the lake under ``raw/weblogs/`` (one object per put); :func:`deliver_new` reads the objects not indexed
yet, runs them through the *same* transformation function with Firehose's record contract and indexes the
documents (rejected lines into the index's rejected table, with the reason).

The index brings its own :class:`Follower` (``index.follower()``, chosen with the index by ``open_index``):
:class:`LakeFollower` locally (does the delivery above every ``interval_s``), :class:`IndexObserver` on aws (Firehose
delivers; it only watches the index fill up). Both have the same verbs — ``start``/``stop``/``run_once``,
``counts``, ``errors``, ``expected_delay_s`` — which is what the dashboard and the notebook run while logs stream.
:func:`stream_log` is a steady-rate producer that measures freshness: line written → visible in a dashboard query.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shoplake import config
from shoplake._stall import StallWatch
from shoplake.lambdas.weblogs_transform import decode_record, is_rejected, transform_texts
from shoplake.weblogs._lake_io import (
    FAILED_PREFIX,
    RAW_PREFIX,
    DeliveryError,
    _iter_keys,
    _list_keys,
    _object_lines,
    lake_bucket,
)

if TYPE_CHECKING:
    from shoplake.weblogs._index import LogIndex

log = logging.getLogger(__name__)

WEBLOGS_FIREHOSE = "weblogs"
TRANSFORM_FUNCTION = "weblogs-transform"


@dataclass
class IndexDeliveryCounts:
    """Totals of one or more delivery passes: objects read, lines in them, documents indexed, lines rejected."""

    objects: int = 0
    lines: int = 0
    indexed: int = 0
    rejected: int = 0
    skipped_objects: int = 0

    def add(self, other: IndexDeliveryCounts) -> None:
        for name in ("objects", "lines", "indexed", "rejected", "skipped_objects"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# --------------------------------------------------------------------------- names


# --------------------------------------------------------------------------- shipping


def ship_lines(lines: Iterable[str], stream: str = WEBLOGS_FIREHOSE) -> Any:
    """Put log lines to Firehose ``weblogs``, one line per record (``shoplake.streams.put_firehose``)."""
    from shoplake import streams

    result = streams.put_firehose(stream, (line.rstrip("\r\n") for line in lines), newline=True)
    if result.failed or result.rejected:
        raise DeliveryError(
            f"Firehose {stream} refused {result.failed + result.rejected} of {result.submitted} "
            f"lines, e.g. {(result.failed_records or result.rejected_records)[0]['reason']}"
        )
    return result


# --------------------------------------------------------------------------- local delivery (lake → index)


def transform_object(key: str, body: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One delivered object → (access documents with ``_id``, rejected lines) through the Firehose transformation.

    The transformation Lambda's own code (:func:`~shoplake.lambdas.weblogs_transform.transform_texts`) on each
    line as the function decodes its record; only the wire round trip (base64 and JSON each way) is left out.
    """
    lines = _object_lines(body)
    docs: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for n, (doc, reason) in enumerate(transform_texts([decode_record(line) for line in lines])):
        if not is_rejected(doc):
            doc["_id"] = f"{key}#{n}"
            docs.append(doc)
        else:
            rejected.append(
                {
                    "_id": f"{key}#{n}",
                    "line_no": n + 1,
                    "reason": doc.get("reason") or reason,
                    "line": lines[n].decode("utf-8", errors="backslashreplace").rstrip("\r"),
                }
            )
    return docs, rejected


# Firehose names its S3 objects <prefix>YYYY/MM/DD/HH/<stream>-<version>-YYYY-MM-DD-HH-MM-SS-<random> (UTC), so key order
# is arrival order to the second: a follower need not list what it has seen long ago.
_KEY_TIME_RE = re.compile(r"^(?P<dir>.*/)?(?P<name>.+?)-(?P<time>\d{4}-\d\d-\d\d-\d\d-\d\d-\d\d)-[^/]+$")
LISTING_MARGIN_S = 10.0  # how far before the newest object a sweep listing starts again (late or out-of-order writes)
RECENT_MARGIN_S = 1.0  # how far before it the other listings start (keys name their second, not the instant)
SWEEP_EVERY_S = 2.0  # how often a listing is a sweep
INGEST_LINES = 20_000  # a pass ingests the objects it found in transactions of about this many lines
PASS_OBJECTS = 64  # a follower's pass takes at most this many objects (the rest: next pass, interval_s later)
LISTING_PAGE_MAX = 1000  # S3's largest ListObjectsV2 page


class LakeCursor:
    """Which objects under ``raw/weblogs/`` are new, without listing the whole prefix every time.

    Listings start shortly before the newest object seen (``StartAfter``, from Firehose's key names), so a
    follower's pass costs what arrived recently, not everything the lake ever held. Most start ``RECENT_MARGIN_S``
    before it: a key names the second it was written in, and a later write of the same second may sort before it.
    Every ``SWEEP_EVERY_S`` one sweeps from ``LISTING_MARGIN_S`` before it, for a write that lands late (a follower
    polling ten times a second then lists a second's objects each time, not ten seconds' worth). ``seen`` keeps the
    keys handled in the sweep's window. Keys that do not follow Firehose's naming make it list everything, as before.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = RAW_PREFIX,
        seen: set[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.seen: set[str] = set(seen or ())
        self.start_after: str | None = None  # where a sweep starts
        self.recent_after: str | None = None  # where the other listings start
        self._clock = clock
        self._swept_at = clock()

    def listing_start(self) -> str | None:
        """Where the next listing starts: the recent start, or the sweep's when one is due (None: the prefix)."""
        now = self._clock()
        if self.recent_after is None or now - self._swept_at >= SWEEP_EVERY_S:
            self._swept_at = now
            return self.start_after
        return self.recent_after

    def new_keys(self, limit: int | None = None) -> list[str]:
        """Keys not seen yet, in key order (they are not marked seen until :meth:`mark`); with ``limit``, the
        oldest ``limit`` of them, and the listing stops there: a follower behind a backlog lists what it takes
        in this pass (and the window's seen keys), not the whole backlog at every pass."""
        start = self.listing_start()
        if limit is None:
            keys = _list_keys(self.bucket, self.prefix, start_after=start)
            return [k for k in keys if k not in self.seen]
        page = min(LISTING_PAGE_MAX, len(self.seen) + limit)
        new: list[str] = []
        for key in _iter_keys(self.bucket, self.prefix, start_after=start, page_size=page):
            if key not in self.seen:
                new.append(key)
                if len(new) == limit:
                    break
        return sorted(new)

    def mark(self, keys: Iterable[str]) -> None:
        """Handled: never returned again; the next listings start a margin before the newest key.

        Call it only for keys whose older neighbours are all handled too (a follower marks in key order, after
        a complete listing), since listings will not look further back than the margin.
        """
        self.seen.update(keys)
        newest = max((k for k in self.seen if k.startswith(self.prefix)), default=None)
        if newest is None:
            return
        start = _listing_start(newest, self.prefix)
        if start is not None and (self.start_after is None or start > self.start_after):
            self.start_after = start
            self.seen = {k for k in self.seen if k > start}
        recent = _listing_start(newest, self.prefix, RECENT_MARGIN_S)
        if recent is not None and (self.recent_after is None or recent > self.recent_after):
            self.recent_after = recent


def _listing_start(key: str, prefix: str, margin_s: float = LISTING_MARGIN_S) -> str | None:
    """A ``StartAfter`` ``margin_s`` before ``key``'s arrival time, in Firehose's key naming (or None)."""
    m = _KEY_TIME_RE.match(key[len(prefix) :]) if key.startswith(prefix) else None
    if m is None:
        return None
    try:
        arrived = datetime.strptime(m["time"], "%Y-%m-%d-%H-%M-%S")
    except ValueError:
        return None
    start = arrived - timedelta(seconds=margin_s)
    return f"{prefix}{start:%Y/%m/%d/%H}/{m['name']}-{start:%Y-%m-%d-%H-%M-%S}"


def deliver_new(
    index: LogIndex,
    bucket: str | None = None,
    ignore: set[str] | None = None,
    progress: bool = False,
    cursor: LakeCursor | None = None,
    max_objects: int | None = None,
) -> IndexDeliveryCounts:
    """Index every object under ``raw/weblogs/`` the index has not ingested yet (idempotent: replay-safe).

    ``cursor`` (a :class:`LakeCursor`, kept by a follower between passes) lists only what arrived recently;
    without one the whole prefix is listed and compared with the index's sources. ``max_objects``: index at most
    that many (the oldest) and leave the rest to the next call, so a follower catching up reports progress often.
    """
    from tqdm.auto import tqdm

    bucket = bucket or lake_bucket()
    if cursor is None:
        cursor = LakeCursor(bucket, seen=index.sources() | (ignore or set()))
    keys = cursor.new_keys(limit=max_objects)  # key order is arrival order: the oldest first
    counts = IndexDeliveryCounts()
    if not keys:
        cursor.mark(())
        return counts
    s3 = config.client("s3")

    def fetch(key: str) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], int]:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        docs, rejected = transform_object(key, body)
        return key, docs, rejected, len(docs) + len(rejected)

    pending: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = []

    def flush() -> None:
        results = index.ingest_many([(docs, key, rejected) for key, docs, rejected in pending])
        for (_, docs, rejected), result in zip(pending, results, strict=True):
            if result.skipped_source:
                counts.skipped_objects += 1
                continue
            counts.objects += 1
            counts.lines += len(docs) + len(rejected)
            counts.indexed += result.indexed
            counts.rejected += result.rejected
        cursor.mark(key for key, _, _ in pending)
        pending.clear()

    with ThreadPoolExecutor(max_workers=4) as pool:
        waiting = 0
        for key, docs, rejected, n_lines in tqdm(
            pool.map(fetch, keys), total=len(keys), desc="deliver weblogs", disable=not progress
        ):
            pending.append((key, docs, rejected))
            waiting += n_lines
            if waiting >= INGEST_LINES:  # one transaction per INGEST_LINES lines, not one per object
                flush()
                waiting = 0
        if pending:
            flush()
    cursor.mark(())  # every key up to the newest delivered is handled (delivered, or seen before)
    return counts


def existing_objects(bucket: str | None = None) -> set[str]:
    """Keys already under ``raw/weblogs/`` (a follower started with ``only_new`` leaves them out)."""
    return set(_list_keys(bucket or lake_bucket(), RAW_PREFIX))


class Follower(ABC):
    """The delivery leg of a log index, run every ``interval_s`` in a background thread (``index.follower()``).

    ``counts`` add up what reached the index since the follower was made (``only_new``: lines already delivered
    before are left out), ``errors`` keeps what went wrong in the thread, ``expected_delay_s`` is how long a shipped
    line may take to become visible on this backend, ``hint`` what to check when lines do not arrive,
    ``indexes_here`` whether its passes do the indexing in this process (CPU a producer here would compete for).
    """

    hint = ""
    indexes_here = False

    def __init__(
        self,
        index: LogIndex,
        interval_s: float = 1.0,
        only_new: bool = False,
        on_pass: Callable[[IndexDeliveryCounts], None] | None = None,
    ) -> None:
        self.index = index
        self.interval_s = interval_s
        self.only_new = only_new
        self.on_pass = on_pass
        self.counts = IndexDeliveryCounts()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def expected_delay_s(self) -> float:
        """Seconds a line may take from its put to Firehose until the index shows it."""
        return self.interval_s

    @abstractmethod
    def _pass(self, progress: bool) -> IndexDeliveryCounts:
        """One delivery pass: what newly reached the index."""

    def run_once(self, progress: bool = False) -> IndexDeliveryCounts:
        """One pass now (in the caller's thread); returns what it brought and adds it to ``counts``."""
        counts = self._pass(progress)
        self.counts.add(counts)
        if self.on_pass is not None:
            self.on_pass(counts)
        return counts

    def wait_until_seen(
        self,
        seen: list[tuple[int, float]],
        shipped: int,
        watch: StallWatch,
        poll_s: float,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        """Wait until the newest of ``seen`` — the ``(lines visible, time)`` observations this follower's ``on_pass``
        records — covers ``shipped`` lines. Raises :class:`DeliveryError` on a failed pass, or when the index gains
        nothing for ``watch.stall_s``; ``on_poll`` runs between checks (a progress bar)."""
        while not seen or seen[-1][0] < shipped:
            if self.errors:
                raise DeliveryError(f"the delivery failed: {self.errors[-1]}")
            if watch.stalled(self.counts.lines):
                raise DeliveryError(
                    f"only {self.counts.lines} of {shipped} shipped lines reached the index, and none more for "
                    f"{watch.stall_s:.0f} s; {self.hint}"
                )
            if on_poll is not None:
                on_poll()
            time.sleep(poll_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # keep following; the error is kept and logged, not swallowed silently
                log.exception("weblogs delivery pass failed")
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval_s)

    def start(self) -> Follower:
        self._thread = threading.Thread(target=self._loop, name="weblogs-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> IndexDeliveryCounts:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self.counts

    def __enter__(self) -> Follower:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


class LakeFollower(Follower):
    """Local: indexes the objects the emulator's Firehose delivers to ``raw/weblogs/`` (:func:`deliver_new`)."""

    hint = "is the emulator up (shoplake local status)?"
    indexes_here = True  # fetch, transform and index every delivered object in this process

    def __init__(
        self,
        index: LogIndex,
        interval_s: float = 1.0,
        only_new: bool = False,
        on_pass: Callable[[IndexDeliveryCounts], None] | None = None,
    ) -> None:
        super().__init__(index, interval_s, only_new, on_pass)
        self.bucket = lake_bucket()
        self.ignore = existing_objects(self.bucket) if only_new else set()
        self.cursor = LakeCursor(self.bucket, seen=index.sources() | self.ignore)
        if only_new:
            self.cursor.mark(())  # everything there is left out: list from near the newest object already there

    def _pass(self, progress: bool) -> IndexDeliveryCounts:
        return deliver_new(self.index, self.bucket, progress=progress, cursor=self.cursor, max_objects=PASS_OBJECTS)


# Firehose's defaults when a stream sets no buffering of its own (CreateDeliveryStream API reference)
DEFAULT_DESTINATION_BUFFER_S = 300
DEFAULT_PROCESSOR_BUFFER_S = 60
VISIBILITY_SLACK_S = 30.0  # Lambda run, bulk request, index refresh (1 s in the template) and polling


class IndexObserver(Follower):
    """aws: Firehose delivers into OpenSearch itself; this follower only watches the index's counts grow.

    A pass reads ``count()`` and ``rejected_count()`` (rejected-line documents + the S3 backup) and reports what is
    new since the previous pass; it polls at most once a second.
    """

    def __init__(
        self,
        index: LogIndex,
        interval_s: float = 1.0,
        only_new: bool = False,
        on_pass: Callable[[IndexDeliveryCounts], None] | None = None,
    ) -> None:
        super().__init__(index, max(interval_s, 1.0), only_new, on_pass)
        self._seen = (index.count(), index.rejected_count()) if only_new else (0, 0)
        self._delay: float | None = None

    @property
    def hint(self) -> str:  # type: ignore[override]
        return (
            f"Firehose {streams_name(WEBLOGS_FIREHOSE)} buffers up to {self.expected_delay_s:.0f} s before it "
            "writes to OpenSearch; see its DeliveryToAmazonOpenSearchService.* metrics, the transform function's "
            f"logs and the S3 backup {FAILED_PREFIX} in the lake bucket"
        )

    @property
    def expected_delay_s(self) -> float:
        """Firehose's buffering of the stream (transform + OpenSearch destination) plus slack, from its description."""
        if self._delay is None:
            self._delay = buffering_seconds(WEBLOGS_FIREHOSE) + VISIBILITY_SLACK_S
        return self._delay

    def _pass(self, progress: bool) -> IndexDeliveryCounts:
        indexed, rejected = self.index.count(), self.index.rejected_count()
        new_indexed, new_rejected = max(0, indexed - self._seen[0]), max(0, rejected - self._seen[1])
        self._seen = (max(indexed, self._seen[0]), max(rejected, self._seen[1]))
        return IndexDeliveryCounts(lines=new_indexed + new_rejected, indexed=new_indexed, rejected=new_rejected)


def streams_name(short: str) -> str:
    from shoplake import streams

    return streams.stream_name(short)


def buffering_seconds(delivery_stream: str = WEBLOGS_FIREHOSE) -> int:
    """Longest time Firehose may hold a record of ``delivery_stream`` before its destination sees it (seconds).

    The transform's buffer (``ProcessingConfiguration`` ``BufferIntervalInSeconds``, default 60 s) plus the
    destination's (``BufferingHints.IntervalInSeconds``, default 300 s), as the stream's description states them.
    """
    name = streams_name(delivery_stream)
    try:
        description = config.client("firehose").describe_delivery_stream(DeliveryStreamName=name)
    except Exception as exc:
        if "ResourceNotFoundException" in f"{type(exc).__name__} {exc}":
            raise DeliveryError(
                f"Firehose delivery stream {name} does not exist: run notebook 00_provision (or `shoplake infra apply`)"
            ) from exc
        raise
    return buffering_of(description["DeliveryStreamDescription"])


def buffering_of(description: dict[str, Any]) -> int:
    """:func:`buffering_seconds` of a ``DeliveryStreamDescription`` (S3 backup configurations left out)."""
    longest = 0
    for dest in description.get("Destinations", []):
        for key, value in dest.items():
            if not key.endswith("DestinationDescription") or key.startswith("S3"):
                continue
            hints = value.get("BufferingHints") or {}
            total = int(hints.get("IntervalInSeconds", DEFAULT_DESTINATION_BUFFER_S))
            processing = value.get("ProcessingConfiguration") or {}
            if processing.get("Enabled"):
                params = {
                    p["ParameterName"]: p["ParameterValue"]
                    for proc in processing.get("Processors", [])
                    for p in proc.get("Parameters", [])
                }
                total += int(params.get("BufferIntervalInSeconds", DEFAULT_PROCESSOR_BUFFER_S))
            longest = max(longest, total)
    return longest


# --------------------------------------------------------------------------- streaming with freshness


@dataclass
class StreamReport:
    """A streaming run: lines shipped, indexed, rejected, and freshness (seconds, line written → visible)."""

    shipped: int = 0
    indexed: int = 0
    rejected: int = 0
    batches: int = 0
    seconds: float = 0.0  # start → every line of the run visible
    write_seconds: float = 0.0  # start → the last line written
    freshness_s: list[float] = field(default_factory=list, repr=False)  # one value per line
    delivery: dict[str, int] = field(default_factory=dict)

    def percentile(self, q: float) -> float | None:
        return float(np.percentile(self.freshness_s, q)) if self.freshness_s else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "shipped": self.shipped,
            "indexed": self.indexed,
            "rejected": self.rejected,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
            "lines_per_s": round(self.shipped / self.seconds, 1) if self.seconds else None,
            "write_seconds": round(self.write_seconds, 3),
            "written_lines_per_s": round(self.shipped / self.write_seconds, 1) if self.write_seconds else None,
            "freshness_p50_s": self.percentile(50),
            "freshness_p95_s": self.percentile(95),
            "freshness_max_s": max(self.freshness_s) if self.freshness_s else None,
            "delivery": self.delivery,
        }


def _batches(lines: Iterable[str], size: int) -> Iterable[list[str]]:
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def stream_log(
    lines: Iterable[str] | str | Path,
    index: LogIndex,
    lines_per_batch: int = 200,
    lines_per_second: float | None = 2000.0,
    poll_s: float = 0.1,
    stall_s: float = 120.0,
    max_lines: int | None = None,
    progress: bool = True,
) -> StreamReport:
    """Ship log lines to Firehose at a steady rate while a follower indexes them; measure freshness.

    A line's freshness is the time from its put to Firehose until the dashboard's count query (documents +
    rejected lines) first covers it. What the index held before the run is left out, so the counts are those of
    this run. The wait for the last lines fails only when the index gains nothing for ``stall_s`` (or the backend's
    ``expected_delay_s``, the longer).
    """
    from tqdm.auto import tqdm

    from shoplake.weblogs._parser import iter_lines

    if lines_per_batch < 1:
        raise DeliveryError(f"lines_per_batch must be ≥ 1, got {lines_per_batch}")
    if isinstance(lines, (str, Path)):
        lines = iter_lines(lines)
    if max_lines is not None:
        lines = (line for n, line in enumerate(lines) if n < max_lines)
    report = StreamReport()
    written: list[tuple[int, float]] = []  # (cumulative lines after the batch, time the batch was put)
    seen: list[tuple[int, float]] = []  # (lines of this run visible to the dashboard's count queries, when)

    def observe(_: IndexDeliveryCounts) -> None:
        seen.append((follower.counts.lines, time.perf_counter()))

    follower = index.follower(interval_s=poll_s, only_new=True, on_pass=observe)
    began = time.perf_counter()
    follower.start()
    try:
        bar = tqdm(desc="stream weblogs", unit="line", disable=not progress)
        for batch in _batches(lines, lines_per_batch):
            if lines_per_second:
                due = began + report.shipped / lines_per_second
                if due > time.perf_counter():
                    time.sleep(due - time.perf_counter())
            put_at = time.perf_counter()
            ship_lines(batch)
            report.shipped += len(batch)
            report.batches += 1
            written.append((report.shipped, put_at))
            bar.update(len(batch))
        bar.close()
        if written:  # paced: the last batch is due at (shipped - batch) / rate; it is written once put
            report.write_seconds = time.perf_counter() - began
        watch = StallWatch(max(stall_s, follower.expected_delay_s))
        follower.wait_until_seen(seen, report.shipped, watch, poll_s / 2)
    finally:
        follower.stop()
    report.seconds = time.perf_counter() - began
    report.delivery = follower.counts.as_dict()
    report.indexed = follower.counts.indexed
    report.rejected = follower.counts.rejected
    # freshness per batch (every line of a batch shares it): first observation covering the batch, minus its put time
    previous = 0
    j = 0
    for cumulative, put_at in written:
        while j < len(seen) and (seen[j][0] < cumulative or seen[j][1] < put_at):
            j += 1
        visible_at = seen[j][1] if j < len(seen) else seen[-1][1]
        report.freshness_s.extend([visible_at - put_at] * (cumulative - previous))
        previous = cumulative
    return report
