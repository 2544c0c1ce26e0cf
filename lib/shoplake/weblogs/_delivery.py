"""Delivery of access logs: ship lines to Firehose ``weblogs``, turn what it delivers into index documents.

On aws Firehose runs the transformation Lambda (``functions/weblogs_transform.py``) and writes the documents to
OpenSearch itself, failed records to S3 ``weblogs-failed/``. Locally the emulator's Firehose lands the raw lines in
the lake under ``raw/weblogs/`` (one object per put); :func:`deliver_new` reads the objects not indexed yet, runs
them through the *same* transformation function with Firehose's record contract, indexes the ``Ok`` documents and
writes the ``ProcessingFailed`` ones to ``weblogs-failed/`` in Firehose's error-record format, with the reason.
:class:`Follower` does that every second in a thread (what the dashboard and the notebook run while logs stream),
and :func:`stream_log` is a steady-rate producer that measures freshness: line written → visible in a dashboard
query.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shoplake import config
from shoplake.errors import ShoplakeError
from shoplake.functions.weblogs_transform import transform_records
from shoplake.weblogs._index import LogIndex

log = logging.getLogger(__name__)

WEBLOGS_FIREHOSE = "weblogs"
RAW_PREFIX = "raw/weblogs/"
FAILED_PREFIX = "weblogs-failed/"
TRANSFORM_FUNCTION = "weblogs-transform"


class DeliveryError(ShoplakeError):
    """Log delivery cannot go on; the message says what to fix."""


@dataclass
class DeliveryCounts:
    """Totals of one or more delivery passes: objects read, lines in them, documents indexed, lines rejected."""

    objects: int = 0
    lines: int = 0
    indexed: int = 0
    rejected: int = 0
    skipped_objects: int = 0

    def add(self, other: DeliveryCounts) -> None:
        for name in ("objects", "lines", "indexed", "rejected", "skipped_objects"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


# --------------------------------------------------------------------------- names


def lake_bucket() -> str:
    from shoplake import lake

    return lake.bucket()


def _list_keys(bucket: str, prefix: str) -> list[str]:
    s3 = config.client("s3")
    keys: list[str] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
    except Exception as exc:
        if "NoSuchBucket" in str(exc):
            raise DeliveryError(
                f"the lake bucket {bucket} does not exist: run notebook 00_provision (or `shoplake infra apply`) first"
            ) from exc
        raise
    return sorted(keys)


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


def _object_lines(body: bytes) -> list[bytes]:
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def transform_object(key: str, body: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One delivered object → (documents with ``_id``, rejected lines) through the Firehose transformation."""
    lines = _object_lines(body)
    records = [{"recordId": str(n), "data": base64.b64encode(line).decode()} for n, line in enumerate(lines)]
    docs: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for n, (out, reason) in enumerate(transform_records(records)):
        if out["result"] == "Ok":
            doc = json.loads(base64.b64decode(out["data"]))
            doc["_id"] = f"{key}#{n}"
            docs.append(doc)
        else:
            rejected.append(
                {
                    "_id": f"{key}#{n}",
                    "line_no": n + 1,
                    "reason": reason or "ProcessingFailed",
                    "line": lines[n].decode("utf-8", errors="backslashreplace").rstrip("\r"),
                }
            )
    return docs, rejected


def _failed_key(key: str) -> str:
    return (
        FAILED_PREFIX + "processing-failed/" + key[len(RAW_PREFIX) :]
        if key.startswith(RAW_PREFIX)
        else FAILED_PREFIX + key
    )


def write_failed(bucket: str, key: str, rejected: Sequence[dict[str, Any]]) -> str | None:
    """Rejected lines of one object to ``weblogs-failed/processing-failed/...`` as Firehose error records."""
    if not rejected:
        return None
    from shoplake import infra

    now_ms = int(time.time() * 1000)
    lambda_arn = infra.arn("function", TRANSFORM_FUNCTION)
    body = "".join(
        json.dumps(
            {
                "attemptsMade": 1,
                "arrivalTimestamp": now_ms,
                "errorCode": "Lambda.ProcessingFailed",
                "errorMessage": r["reason"],
                "attemptEndingTimestamp": now_ms,
                "rawData": base64.b64encode(r["line"].encode()).decode(),
                "lambdaArn": lambda_arn,
                "sourceObject": key,
                "lineNo": r["line_no"],
            }
        )
        + "\n"
        for r in rejected
    )
    failed_key = _failed_key(key)
    config.client("s3").put_object(Bucket=bucket, Key=failed_key, Body=body.encode())
    return failed_key


def read_failed(bucket: str | None = None) -> list[dict[str, Any]]:
    """Every failed record under ``weblogs-failed/``: ``source``, ``line_no``, ``reason``, ``line``."""
    bucket = bucket or lake_bucket()
    s3 = config.client("s3")
    out: list[dict[str, Any]] = []
    for key in _list_keys(bucket, FAILED_PREFIX):
        for raw in _object_lines(s3.get_object(Bucket=bucket, Key=key)["Body"].read()):
            rec = json.loads(raw)
            out.append(
                {
                    "source": rec.get("sourceObject", key),
                    "line_no": rec.get("lineNo"),
                    "reason": rec.get("errorMessage"),
                    "line": base64.b64decode(rec.get("rawData", "")).decode("utf-8", errors="backslashreplace"),
                }
            )
    return out


def deliver_new(
    index: LogIndex, bucket: str | None = None, ignore: set[str] | None = None, progress: bool = False
) -> DeliveryCounts:
    """Index every object under ``raw/weblogs/`` the index has not ingested yet (idempotent: replay-safe)."""
    from tqdm.auto import tqdm

    bucket = bucket or lake_bucket()
    done = index.sources() | (ignore or set())
    keys = [k for k in _list_keys(bucket, RAW_PREFIX) if k not in done]
    counts = DeliveryCounts()
    if not keys:
        return counts
    s3 = config.client("s3")

    def fetch(key: str) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]], int]:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        docs, rejected = transform_object(key, body)
        write_failed(bucket, key, rejected)
        return key, docs, rejected, len(docs) + len(rejected)

    with ThreadPoolExecutor(max_workers=4) as pool:
        for key, docs, rejected, n_lines in tqdm(
            pool.map(fetch, keys), total=len(keys), desc="deliver weblogs", disable=not progress
        ):
            result = index.ingest(docs, source=key, rejected=rejected)
            if result.skipped_source:
                counts.skipped_objects += 1
                continue
            counts.objects += 1
            counts.lines += n_lines
            counts.indexed += result.indexed
            counts.rejected += result.rejected
    return counts


def existing_objects(bucket: str | None = None) -> set[str]:
    """Keys already under ``raw/weblogs/`` (a follower started with ``only_new`` leaves them out)."""
    return set(_list_keys(bucket or lake_bucket(), RAW_PREFIX))


class Follower:
    """Indexes new Firehose objects every ``interval_s`` in a background thread (the local Firehose→index leg)."""

    def __init__(
        self,
        index: LogIndex,
        interval_s: float = 1.0,
        only_new: bool = False,
        on_pass: Callable[[DeliveryCounts], None] | None = None,
    ) -> None:
        self.index = index
        self.interval_s = interval_s
        self.bucket = lake_bucket()
        self.ignore = existing_objects(self.bucket) if only_new else set()
        self.on_pass = on_pass
        self.counts = DeliveryCounts()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> DeliveryCounts:
        counts = deliver_new(self.index, self.bucket, self.ignore)
        self.counts.add(counts)
        if self.on_pass is not None:
            self.on_pass(counts)
        return counts

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

    def stop(self) -> DeliveryCounts:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return self.counts

    def __enter__(self) -> Follower:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()


# --------------------------------------------------------------------------- streaming with freshness


@dataclass
class StreamReport:
    """A streaming run: lines shipped, indexed, rejected, and freshness (seconds, line written → visible)."""

    shipped: int = 0
    indexed: int = 0
    rejected: int = 0
    batches: int = 0
    seconds: float = 0.0
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
    timeout_s: float = 120.0,
    max_lines: int | None = None,
    progress: bool = True,
) -> StreamReport:
    """Ship log lines to Firehose at a steady rate while a follower indexes them; measure freshness.

    A line's freshness is the time from its put to Firehose until the dashboard's count query (documents +
    rejected lines) first covers it. Objects already in ``raw/weblogs/`` before the run are left out, so the
    counts are those of this run.
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
    base = index.total_processed()
    written: list[tuple[int, float]] = []  # (cumulative lines after the batch, time the batch was put)
    seen: list[tuple[int, float]] = []  # (lines visible to the dashboard query, when)

    def observe(_: DeliveryCounts) -> None:
        seen.append((index.total_processed() - base, time.perf_counter()))

    follower = Follower(index, interval_s=poll_s, only_new=True, on_pass=observe)
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
        deadline = time.perf_counter() + timeout_s
        while not seen or seen[-1][0] < report.shipped:
            if follower.errors:
                raise DeliveryError(f"the delivery failed: {follower.errors[-1]}")
            if time.perf_counter() > deadline:
                raise DeliveryError(
                    f"only {seen[-1][0] if seen else 0} of {report.shipped} shipped lines reached the "
                    f"index within {timeout_s:.0f} s; is the emulator up (shoplake stack status)?"
                )
            time.sleep(poll_s / 2)
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
