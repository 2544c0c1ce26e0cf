"""Kinesis and Firehose producers (size-aware batches, retry of only the failed records) and Kinesis readers.

Producers::

    result = streams.put_records("orders", events)            # dicts → JSON, partition key = customer (or guest-<invoice>)
    result = streams.put_firehose("orders-to-lake", events)   # dicts → newline-terminated JSON lines
    result = streams.replay(order_lines_df, "orders", speed=3600)  # one event-hour per wall second

Both producers batch within the service limits (Kinesis: ≤ 500 records / 5 MiB per call, 1 MiB per record incl.
partition key; Firehose: ≤ 500 records / 4 MiB per call, 1,000 KiB per record), reject oversized records to the
result without sending them, and retry only the records the service reports as failed (``FailedRecordCount`` /
``FailedPutCount`` with a per-record ``ErrorCode``, e.g. ``ProvisionedThroughputExceededException`` when a shard's
1 MB/s or 1,000 records/s is exceeded) with exponential backoff and full jitter, **for as long as the stream keeps
accepting records**: a record fails only when no record at all was accepted for ``stall_seconds`` (default 60 s), or
after ``max_attempts`` if one is given. Nothing is dropped silently: every input record is ``sent``, ``failed`` (after the last attempt) or
``rejected``, each failed/rejected record kept in the :class:`PutResult` with its reason.

Readers: :func:`shards`, :func:`read_shard`, :func:`read_all` (what tests and the alarm detector use), and
:func:`read_range` (one shard's records between two sequence numbers: what a Lambda on-failure message names).

Stream names may be short (``orders`` → ``shoplake-<prefix>-orders``), full names, or ARNs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shoplake import config, events
from shoplake._json import json_default
from shoplake.errors import ShoplakeError
from shoplake.events import from_frame

log = logging.getLogger(__name__)

KINESIS_MAX_RECORDS = 500
KINESIS_MAX_BATCH_BYTES = 5 * 1024 * 1024
KINESIS_MAX_RECORD_BYTES = 1024 * 1024  # data + partition key
KINESIS_MAX_KEY_CHARS = 256
FIREHOSE_MAX_RECORDS = 500
FIREHOSE_MAX_BATCH_BYTES = 4 * 1024 * 1024
FIREHOSE_MAX_RECORD_BYTES = 1000 * 1024

DEFAULT_MAX_ATTEMPTS: int | None = None  # no attempt limit: throttled records are retried while others get through
DEFAULT_STALL_SECONDS = 60.0  # ... and fail only when no record was accepted for this long
DEFAULT_BASE_DELAY_S = 0.05
DEFAULT_MAX_DELAY_S = 5.0
# Per-record error codes that another attempt cannot fix (everything else is retried).
PERMANENT_ERROR_PREFIXES = ("KMS", "AccessDenied", "InvalidArgument", "ValidationException")
# Whole-call errors that are worth another attempt (botocore already retried the call a few times).
TRANSIENT_CALL_ERRORS = {
    "ProvisionedThroughputExceededException",
    "ServiceUnavailableException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalFailureException",
    "ThrottlingException",
    "LimitExceededException",
}

Record = dict[str, Any] | bytes | str
PartitionKey = Callable[[Any], str] | str | None


class StreamError(ShoplakeError):
    """A stream or delivery stream cannot be written or read (missing, wrong name, bad input)."""


def check_number(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` if it is a finite number ≥ 0 (> 0 with ``positive``), else a one-line :class:`StreamError` naming
    the option: NaN or ±inf would make a producer or a poller loop forever or sleep for ever."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StreamError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise StreamError(f"{name} must be {'> 0' if positive else '≥ 0'}, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- results


@dataclass
class PutResult:
    """What happened to every record handed to a producer.

    ``sent + failed + rejected == submitted``. ``retried`` counts record re-sends (one record retried twice counts 2).
    ``failed_records`` / ``rejected_records`` hold ``{"record": <original>, "reason": str}``.
    """

    sent: int = 0
    failed: int = 0
    retried: int = 0
    rejected: int = 0
    calls: int = 0
    elapsed_s: float = 0.0
    failed_records: list[dict[str, Any]] = field(default_factory=list)
    rejected_records: list[dict[str, Any]] = field(default_factory=list)
    sequence_numbers: dict[str, str] = field(default_factory=dict, repr=False)  # shard id → last sequence number

    @property
    def submitted(self) -> int:
        return self.sent + self.failed + self.rejected

    @property
    def rate(self) -> float:
        """Records sent per second of wall time."""
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.rejected == 0

    def merge(self, other: PutResult) -> PutResult:
        """Add ``other``'s counts to this result (used by :func:`replay`, which puts in slices)."""
        self.sent += other.sent
        self.failed += other.failed
        self.retried += other.retried
        self.rejected += other.rejected
        self.calls += other.calls
        self.failed_records.extend(other.failed_records)
        self.rejected_records.extend(other.rejected_records)
        self.sequence_numbers.update(other.sequence_numbers)
        return self

    def counts(self) -> dict[str, Any]:
        """The counts as a plain dict (for notebooks' metrics and ``--json`` output)."""
        return {
            "submitted": self.submitted,
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
            "rejected": self.rejected,
            "calls": self.calls,
            "elapsed_s": round(self.elapsed_s, 3),
            "rate_per_s": round(self.rate, 1),
        }


# --------------------------------------------------------------------------- names and encoding


def stream_name(name: str) -> str:
    """Full Kinesis/Firehose name of ``name`` (short name, full name or ARN)."""
    if not name:
        raise StreamError("a stream name is needed, e.g. 'orders'")
    if name.startswith("arn:"):
        return name.rsplit("/", 1)[-1]
    if name.startswith("shoplake-"):
        return name
    return config.resource_name(name)


def encode(record: Record, newline: bool = False) -> bytes:
    """The bytes sent for ``record``: dicts as compact JSON (optionally newline-terminated), str as UTF-8."""
    if isinstance(record, bytes):
        data = record
    elif isinstance(record, str):
        data = record.encode("utf-8")
    elif isinstance(record, dict):
        data = json.dumps(record, separators=(",", ":"), default=json_default, ensure_ascii=False).encode("utf-8")
    else:
        raise StreamError(f"records must be dicts, bytes or str, got {type(record).__name__}")
    if newline and not data.endswith(b"\n"):
        data += b"\n"
    return data


order_partition_key = events.partition_key  # the customer, or guest-<InvoiceNo> (one definition: shoplake.events)


def _partition_key(record: Record, data: bytes, partition_key: PartitionKey) -> str:
    if callable(partition_key):
        key = partition_key(record)
    elif isinstance(partition_key, str):
        if isinstance(record, dict):
            value = record.get(partition_key)
            key = str(value) if value is not None and value == value else _default_key(record, data)
        else:
            key = partition_key  # bytes/str records: the string is the key itself
    else:
        key = _default_key(record, data)
    key = str(key)
    if not key:
        key = hashlib.sha1(data).hexdigest()
    return key[:KINESIS_MAX_KEY_CHARS]


def _default_key(record: Record, data: bytes) -> str:
    if isinstance(record, dict) and "InvoiceNo" in record:
        return order_partition_key(record)
    return hashlib.sha1(data).hexdigest()


# --------------------------------------------------------------------------- batching and retries


@dataclass
class _Entry:
    record: Record
    data: bytes
    key: str | None
    size: int


def _batches(entries: Iterable[_Entry], max_records: int, max_bytes: int) -> Iterator[list[_Entry]]:
    batch: list[_Entry] = []
    size = 0
    for entry in entries:
        if batch and (len(batch) >= max_records or size + entry.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry.size
    if batch:
        yield batch


def _backoff(attempt: int, base: float, cap: float) -> float:
    """Full-jitter exponential backoff: uniform(0, min(cap, base * 2**attempt))."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


@dataclass
class _Budget:
    """How long a producer keeps retrying: while any record is accepted within ``stall_seconds`` (and, if set, up to
    ``max_attempts`` per record)."""

    max_attempts: int | None
    stall_seconds: float
    last_accepted: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1
        ):
            raise StreamError(f"max_attempts must be an integer ≥ 1 (or None: no limit), got {self.max_attempts!r}")
        check_number("stall_seconds", self.stall_seconds, positive=True)

    def exhausted(self, attempt: int) -> str | None:
        """Why a still-failing record must now be given up on, or None to retry it."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return f"after {attempt} attempts"
        stalled = time.monotonic() - self.last_accepted
        if stalled >= self.stall_seconds:
            return f"no record accepted for {stalled:.1f} s (stall_seconds={self.stall_seconds:g})"
        return None


def _is_permanent(code: str | None) -> bool:
    return bool(code) and any(str(code).startswith(p) for p in PERMANENT_ERROR_PREFIXES)


def _send_with_retries(
    batch: list[_Entry],
    call: Callable[[list[_Entry]], list[dict[str, Any]]],
    result: PutResult,
    budget: _Budget,
    base_delay: float,
    max_delay: float,
    what: str,
) -> None:
    """Send ``batch``; after each call re-send only the entries whose response carries an ``ErrorCode``."""
    from botocore.exceptions import ClientError

    pending = batch
    attempt = 0
    while pending:
        attempt += 1
        try:
            responses = call(pending)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                raise StreamError(
                    f"{what} does not exist: run notebook 00_provision (or `shoplake infra apply`) "
                    f"with the same SHOPLAKE_PREFIX ({config.settings().prefix})"
                ) from exc
            if code not in TRANSIENT_CALL_ERRORS:
                raise
            responses = [{"ErrorCode": code, "ErrorMessage": str(exc)} for _ in pending]
        result.calls += 1
        retry: list[_Entry] = []
        if any(not response.get("ErrorCode") for response in responses):
            budget.last_accepted = time.monotonic()
        give_up = budget.exhausted(attempt)
        for entry, response in zip(pending, responses, strict=True):
            code = response.get("ErrorCode")
            if not code:
                result.sent += 1
                shard = response.get("ShardId")
                if shard:
                    result.sequence_numbers[shard] = response.get("SequenceNumber", "")
                continue
            reason = f"{code}: {response.get('ErrorMessage', '')}".strip()
            if _is_permanent(code) or give_up:
                result.failed += 1
                result.failed_records.append(
                    {
                        "record": entry.record,
                        "reason": reason if _is_permanent(code) else f"{reason} ({give_up})",
                        "attempts": attempt,
                    }
                )
            else:
                retry.append(entry)
        if retry:
            result.retried += len(retry)
            delay = _backoff(attempt, base_delay, max_delay)
            log.info("%s: %d of %d records failed, retrying in %.2f s", what, len(retry), len(pending), delay)
            time.sleep(delay)
        pending = retry


def _progress_bar(progress: bool, desc: str, total: int | None) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="rec", disable=not progress, leave=False)


def _len_or_none(records: Any) -> int | None:
    try:
        return len(records)
    except TypeError:
        return None


def put_records(
    stream: str,
    records: Iterable[Record],
    partition_key: PartitionKey = None,
    progress: bool = False,
    *,
    max_attempts: int | None = DEFAULT_MAX_ATTEMPTS,
    stall_seconds: float = DEFAULT_STALL_SECONDS,
    base_delay: float = DEFAULT_BASE_DELAY_S,
    max_delay: float = DEFAULT_MAX_DELAY_S,
    client: Any = None,
) -> PutResult:
    """Put ``records`` to Kinesis stream ``stream`` with PutRecords; returns the :class:`PutResult`.

    ``partition_key``: a callable ``record -> str``; or a field name of dict records (bytes/str records: the key
    itself); or None: order events (dicts with ``InvoiceNo``) by customer (``guest-<InvoiceNo>`` for guests), other
    records by the SHA-1 of their bytes. ``client`` overrides the Kinesis client (default ``config.client``).
    """
    name = stream_name(stream)
    kinesis = client or config.client("kinesis")

    def entry(record: Record) -> _Entry | str:
        data = encode(record)
        key = _partition_key(record, data, partition_key)
        size = len(data) + len(key.encode("utf-8"))
        if size > KINESIS_MAX_RECORD_BYTES:
            return f"record is {size} bytes with its partition key; Kinesis accepts at most {KINESIS_MAX_RECORD_BYTES}"
        return _Entry(record, data, key, size)

    def call(batch: list[_Entry]) -> list[dict[str, Any]]:
        response = kinesis.put_records(
            StreamName=name, Records=[{"Data": e.data, "PartitionKey": e.key} for e in batch]
        )
        return response["Records"]

    return _put_all(
        records,
        entry,
        call,
        (KINESIS_MAX_RECORDS, KINESIS_MAX_BATCH_BYTES),
        ("Kinesis stream", name),
        progress,
        _Budget(max_attempts, stall_seconds),
        base_delay,
        max_delay,
    )


def _put_all(
    records: Iterable[Record],
    entry: Callable[[Record], _Entry | str],
    call: Callable[[list[_Entry]], list[dict[str, Any]]],
    limits: tuple[int, int],
    destination: tuple[str, str],
    progress: bool,
    budget: _Budget,
    base_delay: float,
    max_delay: float,
) -> PutResult:
    """Batch ``records`` within ``limits`` (records, bytes per call) and send each batch to ``destination`` (kind,
    name) with retries; a record ``entry`` refuses (returns a reason) is counted as rejected and kept with its reason."""
    check_number("base_delay", base_delay)
    check_number("max_delay", max_delay)
    result = PutResult()
    began = time.perf_counter()

    def entries() -> Iterator[_Entry]:
        for record in records:
            made = entry(record)
            if isinstance(made, str):
                result.rejected += 1
                result.rejected_records.append({"record": record, "reason": made})
                continue
            yield made

    target = " ".join(destination)  # e.g. "Kinesis stream shoplake-dev-orders"
    with _progress_bar(progress, f"put {destination[1]}", _len_or_none(records)) as bar:
        for batch in _batches(entries(), *limits):
            _send_with_retries(batch, call, result, budget, base_delay, max_delay, target)
            bar.update(len(batch))
    result.elapsed_s = time.perf_counter() - began
    if result.failed or result.rejected:
        log.warning("put to %s: %d sent, %d failed, %d rejected", target, result.sent, result.failed, result.rejected)
    return result


def put_firehose(
    delivery_stream: str,
    records: Iterable[Record],
    progress: bool = False,
    *,
    newline: bool = True,
    max_attempts: int | None = DEFAULT_MAX_ATTEMPTS,
    stall_seconds: float = DEFAULT_STALL_SECONDS,
    base_delay: float = DEFAULT_BASE_DELAY_S,
    max_delay: float = DEFAULT_MAX_DELAY_S,
    client: Any = None,
) -> PutResult:
    """Put ``records`` to Firehose ``delivery_stream`` with PutRecordBatch; returns the :class:`PutResult`.

    Dicts become JSON lines, str/bytes are sent as given; ``newline`` terminates each record with ``\\n`` (so the
    objects Firehose writes are JSON-lines / log files). Only records with an ``ErrorCode`` are retried.
    """
    name = stream_name(delivery_stream)
    firehose = client or config.client("firehose")

    def entry(record: Record) -> _Entry | str:
        data = encode(record, newline=newline)
        if len(data) > FIREHOSE_MAX_RECORD_BYTES:
            return f"record is {len(data)} bytes; Firehose accepts at most {FIREHOSE_MAX_RECORD_BYTES}"
        return _Entry(record, data, None, len(data))

    def call(batch: list[_Entry]) -> list[dict[str, Any]]:
        response = firehose.put_record_batch(DeliveryStreamName=name, Records=[{"Data": e.data} for e in batch])
        return response["RequestResponses"]

    return _put_all(
        records,
        entry,
        call,
        (FIREHOSE_MAX_RECORDS, FIREHOSE_MAX_BATCH_BYTES),
        ("Firehose stream", name),
        progress,
        _Budget(max_attempts, stall_seconds),
        base_delay,
        max_delay,
    )


# --------------------------------------------------------------------------- replay


def replay(
    events: Any,
    stream: str = "orders",
    speed: float | None = None,
    *,
    time_column: str = "InvoiceDate",
    partition_key: PartitionKey = None,
    progress: bool = True,
    firehose: bool = False,
    client: Any = None,
) -> PutResult:
    """Replay a DataFrame of events (one row per record, e.g. ``Dataset.order_lines``) to ``stream``.

    ``speed=None``: as fast as possible (batches of 500). ``speed=s``: real rhythm compressed, ``s`` event seconds
    per wall second (3600 → an hour of orders per second); events are sent when their (scaled) time comes.
    ``firehose=True`` sends to a Firehose delivery stream instead of Kinesis.
    """
    import pandas as pd

    if speed is not None and (
        isinstance(speed, bool) or not isinstance(speed, int | float) or not math.isfinite(speed) or speed <= 0
    ):
        raise StreamError(
            f"speed must be a positive, finite number of event seconds per wall second (or None), got {speed!r}"
        )
    rows = from_frame(events)
    result = PutResult()
    began = time.perf_counter()

    def send(chunk: list[dict[str, Any]]) -> None:
        if firehose:
            part = put_firehose(stream, chunk, client=client)
        else:
            part = put_records(stream, chunk, partition_key=partition_key, client=client)
        result.merge(part)

    from tqdm.auto import tqdm

    with tqdm(total=len(rows), desc=f"replay → {stream}", unit="event", disable=not progress) as bar:
        if speed is None or not rows:
            for start in range(0, len(rows), KINESIS_MAX_RECORDS):
                chunk = rows[start : start + KINESIS_MAX_RECORDS]
                send(chunk)
                bar.update(len(chunk))
        else:
            if time_column not in events.columns:
                raise StreamError(
                    f"replay with a speed needs the event time column {time_column!r}; "
                    f"columns are {list(events.columns)}"
                )
            times = pd.to_datetime(events[time_column], utc=True)
            offsets = ((times - times.min()).dt.total_seconds() / speed).to_numpy()
            wall0 = time.perf_counter()
            i = 0
            while i < len(rows):
                now = time.perf_counter() - wall0
                if offsets[i] > now:
                    time.sleep(min(offsets[i] - now, 0.5))
                    continue
                j = i
                while j < len(rows) and offsets[j] <= now and j - i < KINESIS_MAX_RECORDS:
                    j += 1
                send(rows[i:j])
                bar.update(j - i)
                i = j
    result.elapsed_s = time.perf_counter() - began
    return result


# --------------------------------------------------------------------------- readers


@dataclass
class StreamRecord:
    """One Kinesis record as read back: bytes, partition key, sequence number, shard and arrival time (epoch s)."""

    data: bytes
    partition_key: str
    sequence_number: str
    shard_id: str
    arrival: float

    def json(self) -> Any:
        """The record's data parsed as JSON."""
        return json.loads(self.data)

    @classmethod
    def from_kinesis(cls, raw: dict[str, Any], shard_id: str) -> StreamRecord:
        arrived = raw.get("ApproximateArrivalTimestamp")
        arrival = arrived.timestamp() if isinstance(arrived, datetime) else float(arrived or 0.0)
        return cls(raw["Data"], raw["PartitionKey"], raw["SequenceNumber"], shard_id, arrival)


def shards(stream: str, client: Any = None) -> list[str]:
    """The shard ids of Kinesis stream ``stream`` (all pages of ListShards)."""
    from botocore.exceptions import ClientError

    name = stream_name(stream)
    kinesis = client or config.client("kinesis")
    found: list[str] = []
    kwargs: dict[str, Any] = {"StreamName": name}
    try:
        while True:
            response = kinesis.list_shards(**kwargs)
            found.extend(s["ShardId"] for s in response["Shards"])
            token = response.get("NextToken")
            if not token:
                return found
            kwargs = {"NextToken": token}
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            raise StreamError(
                f"Kinesis stream {name} does not exist: run notebook 00_provision "
                f"(or `shoplake infra apply`) with SHOPLAKE_PREFIX={config.settings().prefix}"
            ) from exc
        raise


def shard_iterator(
    stream: str,
    shard_id: str,
    after_sequence: str | None = None,
    position: str = "TRIM_HORIZON",
    at_timestamp: datetime | None = None,
    client: Any = None,
) -> str:
    """A shard iterator: after ``after_sequence`` if given, else at ``position`` (TRIM_HORIZON|LATEST|AT_TIMESTAMP)."""
    kinesis = client or config.client("kinesis")
    kwargs: dict[str, Any] = {"StreamName": stream_name(stream), "ShardId": shard_id}
    if after_sequence:
        kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=str(after_sequence))
    elif position == "AT_TIMESTAMP":
        if at_timestamp is None:
            raise StreamError("position AT_TIMESTAMP needs at_timestamp")
        kwargs.update(ShardIteratorType="AT_TIMESTAMP", Timestamp=at_timestamp)
    elif position in ("TRIM_HORIZON", "LATEST"):
        kwargs["ShardIteratorType"] = position
    else:
        raise StreamError(f"position must be TRIM_HORIZON, LATEST or AT_TIMESTAMP, got {position!r}")
    return kinesis.get_shard_iterator(**kwargs)["ShardIterator"]


def read_batches(
    stream: str,
    shard_id: str,
    after_sequence: str | None = None,
    *,
    position: str = "TRIM_HORIZON",
    at_timestamp: datetime | None = None,
    limit: int = 10_000,
    follow: bool = False,
    poll_interval: float = 0.2,
    stop: Any = None,
    client: Any = None,
) -> Iterator[tuple[list[StreamRecord], int]]:
    """Yield ``(records, millis_behind_latest)`` per GetRecords call on one shard.

    Stops at the first empty answer that is caught up (``follow=False``), or runs until ``stop`` (a
    ``threading.Event``) is set (``follow=True``, yielding empty lists while idle). Expired iterators are renewed
    from the last sequence number seen.
    """
    from botocore.exceptions import ClientError

    check_number("poll_interval", poll_interval)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise StreamError(f"limit must be an integer 1..10000 (GetRecords' range), got {limit!r}")
    kinesis = client or config.client("kinesis")
    last = after_sequence
    iterator: str | None = shard_iterator(stream, shard_id, last, position, at_timestamp, client=kinesis)
    while iterator:
        if stop is not None and stop.is_set():
            return
        try:
            response = kinesis.get_records(ShardIterator=iterator, Limit=limit)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "ExpiredIteratorException":
                iterator = shard_iterator(stream, shard_id, last, position, at_timestamp, client=kinesis)
                continue
            if code in TRANSIENT_CALL_ERRORS:
                time.sleep(poll_interval)
                continue
            raise
        records = [StreamRecord.from_kinesis(r, shard_id) for r in response.get("Records", [])]
        behind = int(response.get("MillisBehindLatest", 0) or 0)
        if records:
            last = records[-1].sequence_number
        iterator = response.get("NextShardIterator")
        if records or follow:
            yield records, behind
        if not records:
            if not follow and behind == 0:
                return
            time.sleep(poll_interval)


def last_sequence_number(stream: str, shard_id: str, client: Any = None) -> str | None:
    """The sequence number of the newest record of a shard now (None when it holds none), without reading the
    shard whole: a search on arrival times — AT_TIMESTAMP iterators, one record each, about log2(seconds since the
    oldest record) of them — then a read of the records of the last second or two found.

    A consumer that starts "at the end" of a stream holding a million records (notebook 04 after notebook 02) read
    them all to learn that number (~40 s against the emulator). Exact whatever the clocks say: the last read follows
    the shard until it is caught up, so records that arrived after the search (or stamped ahead of this clock) are
    read too."""
    kinesis = client or config.client("kinesis")

    def first_from(at: float | None) -> StreamRecord | None:
        """The first record that arrived at or after ``at`` (epoch seconds; None: the oldest record)."""
        position, stamp = ("TRIM_HORIZON", None) if at is None else ("AT_TIMESTAMP", datetime.fromtimestamp(at, UTC))
        for records, _behind in read_batches(
            stream, shard_id, position=position, at_timestamp=stamp, limit=1, poll_interval=0.05, client=kinesis
        ):
            if records:
                return records[0]
        return None

    oldest = first_from(None)
    if oldest is None:
        return None
    # a record arrived at or after ``low``, none at or after ``high`` (the request's timestamp has whole seconds)
    low, high = math.floor(oldest.arrival), math.floor(time.time()) + 1
    while high - low > 2:
        middle = (low + high) // 2
        found = first_from(middle)
        if found is None:
            high = middle
        else:
            low = max(middle, math.floor(found.arrival))
    last = oldest.sequence_number
    for records, _behind in read_batches(
        stream, shard_id, position="AT_TIMESTAMP", at_timestamp=datetime.fromtimestamp(low, UTC), client=kinesis
    ):
        if records:
            last = records[-1].sequence_number
    return last


def read_shard(
    stream: str,
    shard_id: str,
    after_sequence: str | None = None,
    *,
    position: str = "TRIM_HORIZON",
    at_timestamp: datetime | None = None,
    limit: int = 10_000,
    follow: bool = False,
    poll_interval: float = 0.2,
    stop: Any = None,
    client: Any = None,
) -> Iterator[StreamRecord]:
    """Iterate the records of one shard in order, from ``after_sequence`` (exclusive) or ``position`` (with
    ``at_timestamp`` for ``AT_TIMESTAMP``).

    Ends when caught up, unless ``follow=True`` (then runs until the ``stop`` event is set).
    """
    for records, _behind in read_batches(
        stream,
        shard_id,
        after_sequence,
        position=position,
        at_timestamp=at_timestamp,
        limit=limit,
        follow=follow,
        poll_interval=poll_interval,
        stop=stop,
        client=client,
    ):
        yield from records


def read_all(stream: str, *, position: str = "TRIM_HORIZON", client: Any = None) -> list[StreamRecord]:
    """Every record currently in ``stream`` (all shards, each in order), read until caught up."""
    out: list[StreamRecord] = []
    for shard_id in shards(stream, client=client):
        out.extend(read_shard(stream, shard_id, position=position, client=client))
    return out


def read_range(
    stream: str, shard_id: str, start_sequence: str, end_sequence: str, *, limit: int = 10_000, client: Any = None
) -> list[StreamRecord]:
    """The records of one shard from ``start_sequence`` to ``end_sequence`` (both inclusive), e.g. the batch a Lambda
    on-failure message names by its ``KinesisBatchInfo``. Records trimmed by the retention period are simply absent."""
    from botocore.exceptions import ClientError

    kinesis = client or config.client("kinesis")
    end = int(end_sequence)
    if int(start_sequence) > end:
        raise StreamError(f"sequence range {start_sequence}..{end_sequence} is empty (start after end)")
    try:
        iterator: str | None = kinesis.get_shard_iterator(
            StreamName=stream_name(stream),
            ShardId=shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=str(start_sequence),
        )["ShardIterator"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("InvalidArgumentException", "ResourceNotFoundException"):
            log.warning("cannot read %s %s from %s: %s", stream, shard_id, start_sequence, exc)
            return []  # expired beyond the retention period, or the shard is gone
        raise
    out: list[StreamRecord] = []
    while iterator:
        response = kinesis.get_records(ShardIterator=iterator, Limit=limit)
        records = response.get("Records", [])
        for raw in records:
            if int(raw["SequenceNumber"]) > end:
                return out
            out.append(StreamRecord.from_kinesis(raw, shard_id))
        if not records and int(response.get("MillisBehindLatest", 0) or 0) == 0:
            return out
        iterator = response.get("NextShardIterator")
    return out


def utc_now_iso() -> str:
    """Now as ISO 8601 UTC (``YYYY-MM-DDTHH:MM:SSZ``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
