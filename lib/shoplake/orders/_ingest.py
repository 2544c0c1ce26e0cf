"""Order events into the order history: publish to the stream, run the handler's mapping, account for every event."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from shoplake import _gc, config, lambda_local, lambda_runtime, streams
from shoplake.errors import ShoplakeError
from shoplake.events import from_frame
from shoplake.lambdas import order_history

log = logging.getLogger(__name__)

STREAM = "orders"
MAPPING = "orders-to-order-history"
CONSUMER = "order-history"
CHECKPOINT_INTERVAL_SECONDS = 1.0  # the local mapping's checkpoint writes (Lambda's own mapping decides on aws)


class OrdersError(ShoplakeError):
    """The order-history pipeline cannot run or its accounting does not add up."""


def table_name() -> str:
    """The real name of the ``order_history`` table."""
    return config.resource_name("order_history")


def dlq_url() -> str:
    """The URL of the ``order-history-dlq`` queue (malformed records and exhausted batches)."""
    from botocore.exceptions import ClientError

    try:
        return config.client("sqs").get_queue_url(QueueName=config.resource_name("order-history-dlq"))["QueueUrl"]
    except ClientError as exc:
        raise OrdersError(
            f"queue {config.resource_name('order-history-dlq')} does not exist: run notebook "
            "00_provision (or `shoplake infra apply`) with the same SHOPLAKE_PREFIX"
        ) from exc


def handler() -> lambda_local.Handler:
    """The ``order_history`` handler bound to this stack's table, DLQ and clients (from ``shoplake.config``)."""
    table, queue = table_name(), dlq_url()
    dynamodb, sqs = config.client("dynamodb"), config.client("sqs")

    def bound(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        return order_history.process(event, table, queue, dynamodb, sqs)

    return bound


def mapping(
    consumer: str = CONSUMER, handler_fn: lambda_local.Handler | None = None, **overrides: Any
) -> lambda_local.EventSourceMapping:
    """The local event-source mapping ``orders → order_history`` with resources.yaml's settings (``overrides`` win).

    With the deployed handler (``handler_fn`` not given) each shard's poller runs in a process of its own, as each
    shard has its own Lambda container on aws: the handler keeps nothing in memory between batches. A ``handler_fn``
    (a test's wrapper) runs in poller threads of this process."""
    # the handler's writes are idempotent, so a crash may replay a little: checkpoint once a second, not per batch
    settings = lambda_local.mapping_settings(
        MAPPING, **{"checkpoint_interval_seconds": CHECKPOINT_INTERVAL_SECONDS, **overrides}
    )
    return lambda_local.EventSourceMapping(
        handler_fn,
        settings,
        consumer=consumer,
        function_name=config.resource_name("order-history"),
        handler_factory=None if handler_fn else handler,
    )


def progress() -> lambda_runtime.Progress:
    """What the consumer has accounted for so far: items in the table + distinct dead-lettered records."""
    dead = dead_letters()
    exhausted = int((dead.records["kind"] == "exhausted").sum()) if len(dead) else 0
    return lambda_runtime.Progress(
        handled=item_count(),
        dead_lettered=len(dead),
        detail={"dead_lettered": len(dead) - exhausted, "exhausted": exhausted},
    )


def runtime(
    consumer: str = CONSUMER,
    timeout: float | None = None,
    idle_seconds: float | None = None,
    **overrides: Any,
) -> lambda_runtime.Runtime:
    """The order-history consumer for the current target (``shoplake.lambda_runtime``): locally the handler run by
    the in-process event-source mapping; on aws the deployed ``order-history`` function, watched through
    :func:`progress`. Both wait while the consumer makes progress and fail after ``idle_seconds`` without any;
    ``timeout`` (local only, default none) adds a total bound."""
    return lambda_runtime.open_runtime(
        MAPPING,
        local=lambda: mapping(consumer, **overrides),
        probe=progress,
        timeout=timeout,
        idle_seconds=idle_seconds,
    )


def publish(events: Any, speed: float | None = None, progress: bool = True) -> streams.PutResult:
    """Replay order events (a DataFrame like ``Dataset.order_lines``, or dicts/bytes) to the ``orders`` stream."""
    if isinstance(events, list) and any(isinstance(e, bytes | str) for e in events):
        return streams.put_records(STREAM, events, progress=progress)
    return streams.replay(events, STREAM, speed=speed, progress=progress)


def expected_total(events: Any) -> int:
    """What the consumer must account for after ``events``: distinct table keys + records the handler rejects."""
    expected, invalid = expected_items(events, columns=())
    return len(expected) + invalid


def consume(
    timeout: float | None = None,
    consumer: str = CONSUMER,
    max_batches: int | None = None,
    *,
    expected: int | None = None,
    idle_seconds: float | None = None,
    **overrides: Any,
) -> lambda_local.MappingStats:
    """Let the consumer catch up with the ``orders`` stream; returns the mapping's stats (same type on both targets).

    Locally the handler runs in this process until every shard is read to its end (``max_batches`` stops early;
    it fails after ``idle_seconds`` without progress, or after ``timeout`` s in total if given). On aws the deployed
    function does the work and this waits until the table and the dead-letter queue account for ``expected``
    records — by default everything now in the stream (read back to count its distinct keys) — failing only after
    ``idle_seconds`` without progress.
    """
    rt = runtime(consumer, timeout=timeout, idle_seconds=idle_seconds, **overrides)
    target = expected if expected is not None else (lambda: expected_total([r.data for r in streams.read_all(STREAM)]))
    return rt.run_until_caught_up(expected=target, max_batches=max_batches)


@dataclass
class IngestReport:
    """Counts of one ingestion: what was put, what the mapping did."""

    put: streams.PutResult
    mapping: lambda_local.MappingStats | None
    seconds: float
    shipped: dict[str, Any] | None = None  # the agent's counts when it shipped the events

    def as_dict(self) -> dict[str, Any]:
        return {
            "put": self.put.counts(),
            "shipped": self.shipped,
            "mapping": self.mapping.as_dict() if self.mapping else None,
            "seconds": round(self.seconds, 3),
        }


def ingest(
    events: Any,
    speed: float | None = None,
    progress: bool = True,
    timeout: float | None = None,
    publisher: Callable[[], Any] | None = None,
    idle_seconds: float | None = None,
) -> IngestReport:
    """Publish ``events`` while the consumer runs (locally in the background, on aws the deployed function), then
    wait until it has accounted for them. ``publisher`` replaces the default publish (e.g. the agent shipping log
    files); ``events`` must still be what it publishes (to know what to wait for)."""
    began = time.perf_counter()
    with _gc.relaxed():  # the events (a million at full) are not walked by the collector while they stream
        rt = runtime(timeout=timeout, idle_seconds=idle_seconds).start()
        try:
            put = publisher() if publisher else publish(events, speed=speed, progress=progress)
        except BaseException:
            rt.stop()
            raise
        stats = rt.drain(expected=lambda: expected_total(events))
    shipped = None if isinstance(put, streams.PutResult) else put
    return IngestReport(
        put if isinstance(put, streams.PutResult) else streams.PutResult(),
        stats,
        time.perf_counter() - began,
        shipped,
    )


def ship(
    dataset: Any,
    source: str = "generator",
    malformed: int = 0,
    speed: float | None = None,
    progress: bool = True,
    timeout: float | None = None,
    idle_seconds: float | None = None,
) -> tuple[IngestReport, list[Any]]:
    """Ingest a ``datagen`` dataset's order lines plus ``malformed`` bad events, sent by ``source``:
    ``"generator"`` (``shoplake.streams`` replays them) or ``"agent"`` (the Kinesis Agent ships the shop's log
    files, the malformed events are put directly). Returns (the report, the events sent — for :func:`reconcile`)."""
    if source not in ("generator", "agent"):
        raise OrdersError(f"source must be 'generator' or 'agent', got {source!r}")
    if malformed < 0:
        raise OrdersError(f"malformed must be ≥ 0, got {malformed}")
    events = with_malformed(dataset.order_lines, malformed)
    publisher = None
    if source == "agent":

        def publisher() -> dict[str, Any]:
            from shoplake import agent

            shipped = agent.ship_dataset(dataset, flows=["orders"], speed=speed, progress=progress)
            if malformed:
                streams.put_records(STREAM, malformed_samples(malformed))
            return shipped

    report = ingest(
        events, speed=speed, progress=progress, timeout=timeout, publisher=publisher, idle_seconds=idle_seconds
    )
    return report, events


MALFORMED_KINDS = ("not JSON", "missing field", "InvoiceDate", "Quantity", "UnitPrice")


def malformed_samples(n: int) -> list[Any]:
    """``n`` malformed order events of the kinds the handler dead-letters (cycling through MALFORMED_KINDS)."""
    good = {
        "InvoiceNo": "900000",
        "StockCode": "BROKEN",
        "Description": "malformed sample",
        "Quantity": 1,
        "InvoiceDate": "2011-01-01T00:00:00Z",
        "UnitPrice": 1.0,
        "CustomerID": None,
        "Country": "Nowhere",
        "LineNo": 0,
    }
    out: list[Any] = []
    for i in range(n):
        kind = MALFORMED_KINDS[i % len(MALFORMED_KINDS)]
        line = {**good, "InvoiceNo": f"9{i:05d}"}
        if kind == "not JSON":
            out.append(f"{{truncated order line {i}".encode())
        elif kind == "missing field":
            line.pop("Quantity")
            out.append(line)
        elif kind == "InvoiceDate":
            out.append({**line, "InvoiceDate": "12/1/2010 8:26"})
        elif kind == "Quantity":
            out.append({**line, "Quantity": "six"})
        else:
            out.append({**line, "UnitPrice": -1.5})
    return out


def with_malformed(events: Any, n: int) -> list[Any]:
    """The rows of ``events`` with ``n`` malformed samples spread evenly among them (to show the dead-letter path)."""
    rows: list[Any] = from_frame(events)
    samples = malformed_samples(n)
    for i, sample in enumerate(samples):
        rows.insert(min(len(rows), (i + 1) * len(rows) // (n + 1) + i), sample)
    return rows


# --------------------------------------------------------------------------- what landed where


RECONCILE_COLUMNS = ("customer_id", "order_key", order_history.CONTENT_HASH, "cancelled_by")
# A parallel scan (DynamoDB's Segment/TotalSegments): while the table's server builds one segment's page, this
# process parses another's; on aws the segments are read from different partitions at once.
SCAN_SEGMENTS = 2


def table_items(columns: tuple[str, ...] | list[str] | None = None) -> Any:
    """Every item of the order history table as a DataFrame, rows in no particular order (a parallel scan of
    :data:`SCAN_SEGMENTS` segments, each paginated; for checks and reconciliations).

    ``columns`` reads only those attributes (a ProjectionExpression: the emulator serialises far less), e.g.
    :data:`RECONCILE_COLUMNS`, all a reconciliation needs."""
    import pandas as pd
    from boto3.dynamodb.types import TypeDeserializer

    deserialize = TypeDeserializer().deserialize
    kwargs: dict[str, Any] = {"TableName": table_name(), "ConsistentRead": True}
    if columns:
        names = {f"#a{i}": c for i, c in enumerate(columns)}  # placeholders: "status" is a reserved word
        kwargs.update(ProjectionExpression=", ".join(names), ExpressionAttributeNames=names)
    client = config.client("dynamodb")  # botocore clients are thread-safe

    def segment(k: int) -> list[dict[str, Any]]:
        pages = client.get_paginator("scan").paginate(**kwargs, Segment=k, TotalSegments=SCAN_SEGMENTS)
        return [{a: deserialize(v) for a, v in item.items()} for page in pages for item in page.get("Items", [])]

    with ThreadPoolExecutor(max_workers=SCAN_SEGMENTS) as pool:
        rows = [row for part in pool.map(segment, range(SCAN_SEGMENTS)) for row in part]
    if columns:
        frame = pd.DataFrame(rows)
        for column in columns:
            if column not in frame.columns:
                frame[column] = None
        return frame[list(columns)]
    columns = [
        "customer_id",
        "order_key",
        "event_id",
        "invoice_no",
        "line_no",
        "stock_code",
        "description",
        "quantity",
        "unit_price",
        "line_amount",
        "invoice_date",
        "country",
        "is_guest",
        "is_cancellation",
        "status",
        "cancelled_by",
        "cancelled_quantity",
        order_history.CONTENT_HASH,
    ]
    frame = pd.DataFrame(rows)
    for column in columns:
        if column not in frame.columns:
            frame[column] = None
    return frame[columns + [c for c in frame.columns if c not in columns]]


def item_count() -> int:
    """Number of items in the order history table (a paginated COUNT scan)."""
    total = 0
    for page in (
        config.client("dynamodb")
        .get_paginator("scan")
        .paginate(TableName=table_name(), Select="COUNT", ConsistentRead=True)
    ):
        total += page["Count"]
    return total


@dataclass
class DeadLetters:
    """The dead-letter queue's content, one row per distinct dead-lettered stream record."""

    records: Any  # DataFrame: shard_id, sequence_number, reason, kind (malformed|exhausted), data_text
    messages: int = 0

    @property
    def by_reason(self) -> dict[str, int]:
        if self.records.empty:
            return {}
        return dict(Counter(self.records["reason_kind"]))

    def __len__(self) -> int:
        return len(self.records)


def _reason_kind(reason: str) -> str:
    """A short class of a dead-letter reason, e.g. ``missing field(s) ['Quantity']`` → ``missing field``."""
    for kind in (
        "not JSON",
        "not a JSON object",
        "missing field",
        "InvoiceNo",
        "StockCode",
        "Quantity",
        "InvoiceDate",
        "UnitPrice",
        "LineNo",
        "CustomerID",
        "Country",
    ):
        if reason.startswith(kind):
            return kind
    return reason.split(":")[0][:40]


def dead_letters(wait_seconds: float = 0.0) -> DeadLetters:
    """Read (without deleting) every message of the DLQ; one row per distinct dead-lettered stream record.

    Two kinds of messages share the queue: the handler's malformed records (the record embedded, maybe truncated)
    and the mapping's on-failure messages (Lambda sends only ``KinesisBatchInfo``: shard and sequence range — the
    records are read back from the stream, :func:`streams.read_range`). Records are de-duplicated by shard and
    sequence number, so a replay that dead-letters the same record again does not count it twice; messages by
    their id (SQS may deliver one twice). Long polls; stops after two empty receives once the queue's approximate
    count is reached (``wait_seconds`` waits that long for a first message).
    """
    import pandas as pd

    sqs = config.client("sqs")
    url = dlq_url()
    seen: dict[str, dict[str, Any]] = {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    expected = int(attributes.get("ApproximateNumberOfMessages", 0))
    empty_polls = 0
    read_back: dict[tuple[str, str, str], list[streams.StreamRecord]] = {}
    while empty_polls < 2 and (len(seen) < expected or (wait_seconds and not seen and empty_polls == 0)):
        response = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=120,
            WaitTimeSeconds=min(20, max(1, int(wait_seconds))) if not seen else 1,
        )
        messages = [m for m in response.get("Messages", []) if m["MessageId"] not in seen]
        if not messages:
            empty_polls += 1
            continue
        empty_polls = 0
        for message in messages:
            seen[message["MessageId"]] = message
            body = json.loads(message["Body"])
            for row in _rows_of(body, read_back):
                rows.setdefault((row["shard_id"], row["sequence_number"]), row)
    if len(seen) < expected:
        log.warning("read %d of the %d messages of the dead-letter queue", len(seen), expected)
    # make them visible again for the next reader
    handles = [m["ReceiptHandle"] for m in seen.values()]
    for start in range(0, len(handles), 10):
        sqs.change_message_visibility_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(handles[start : start + 10])
            ],
        )
    frame = pd.DataFrame(
        list(rows.values()), columns=["shard_id", "sequence_number", "kind", "reason", "reason_kind", "data_text"]
    )
    return DeadLetters(frame, len(seen))


def _rows_of(
    body: dict[str, Any], read_back: dict[tuple[str, str, str], list[streams.StreamRecord]] | None = None
) -> list[dict[str, Any]]:
    if "KinesisBatchInfo" in body:  # a batch the mapping gave up on (on-failure destination): metadata only
        return _exhausted_rows(body, {} if read_back is None else read_back)
    source = body.get("source", {})
    return [
        {
            "shard_id": source.get("shard_id"),
            "sequence_number": source.get("sequence_number"),
            "kind": "malformed",
            "reason": body.get("reason", ""),
            "reason_kind": _reason_kind(body.get("reason", "")),
            "data_text": body.get("data_text"),
        }
    ]


def _exhausted_rows(
    body: dict[str, Any], read_back: dict[tuple[str, str, str], list[streams.StreamRecord]]
) -> list[dict[str, Any]]:
    """One row per record of an on-failure message's batch, read back from the stream by its sequence range;
    records the stream no longer holds (past retention) are still counted, as ``unreadable`` rows."""
    info = body["KinesisBatchInfo"]
    shard, first, last = info["shardId"], str(info["startSequenceNumber"]), str(info["endSequenceNumber"])
    size = int(info.get("batchSize") or 0)
    context = body.get("responseContext") or {}
    condition = (body.get("requestContext") or {}).get("condition", "RetryAttemptsExhausted")
    reason = f"retries exhausted ({condition}): {context.get('functionError', '')}".strip()
    if context.get("errorMessage"):  # the local runner keeps the function error's text
        reason += f": {context['errorMessage']}"
    key = (info.get("streamArn") or STREAM, shard, f"{first}-{last}")
    if key not in read_back:
        stream = info.get("streamArn") or STREAM
        read_back[key] = streams.read_range(stream, shard, first, last)
    records = read_back[key]
    out = [
        {
            "shard_id": shard,
            "sequence_number": r.sequence_number,
            "kind": "exhausted",
            "reason": reason,
            "reason_kind": "retries exhausted",
            "data_text": r.data.decode("utf-8", errors="replace"),
        }
        for r in records
    ]
    for i in range(max(0, size - len(records))):
        out.append(
            {
                "shard_id": shard,
                "sequence_number": f"{first}..{last}#{i}",
                "kind": "exhausted",
                "reason": f"{reason}; record no longer in the stream (retention)",
                "reason_kind": "retries exhausted",
                "data_text": None,
            }
        )
    return out


def purge_dead_letters() -> int:
    """Empty the dead-letter queue (a fresh notebook run starts from an empty one); returns the messages deleted.

    Deletes message by message (PurgeQueue may run only once a minute on AWS and is asynchronous)."""
    sqs = config.client("sqs")
    url = dlq_url()
    deleted = 0
    empty = 0
    while empty < 2:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not messages:
            empty += 1
            continue
        response = sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        )
        deleted += len(response.get("Successful", []))
    return deleted


def _empty_table() -> int:
    """Delete every item of the order history table (the table itself stays: the deployed function writes to it)."""
    dynamodb = config.client("dynamodb")
    table = table_name()
    deleted = 0
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table, ProjectionExpression="customer_id, order_key", ConsistentRead=True
    )
    for page in pages:
        keys = [{"DeleteRequest": {"Key": item}} for item in page.get("Items", [])]
        for start in range(0, len(keys), 25):
            requests = keys[start : start + 25]
            for attempt in range(50):
                response = dynamodb.batch_write_item(RequestItems={table: requests})
                requests = response.get("UnprocessedItems", {}).get(table, [])
                if not requests:
                    break
                time.sleep(min(2.0, 0.05 * 2**attempt))
            if requests:
                raise OrdersError(f"could not empty {table}: {len(requests)} deletes stayed unprocessed (throttled)")
            deleted += len(keys[start : start + 25])
    return deleted


def reset() -> dict[str, Any]:
    """Start the order history afresh, on either target, touching only what this stack's prefix owns: deletes every
    item of ``shoplake-<prefix>-order_history`` (the table stays), empties ``shoplake-<prefix>-order-history-dlq``,
    and moves the consumer past what is already in the stream (locally its checkpoints go to the stream's end; the
    deployed mapping on aws keeps its own position). The next ingestion then counts only its own events.
    Returns what it did: ``{"items_deleted", "dead_letters_deleted", "skipped_to": {shard: sequence}}``."""
    return {
        "items_deleted": _empty_table(),
        "dead_letters_deleted": purge_dead_letters(),
        "skipped_to": runtime().skip_to_end(),
    }


def wait_for(expected: int, idle_seconds: float | None = None) -> lambda_local.MappingStats:
    """Wait until the table and the DLQ account for ``expected`` records (the consumer's progress); locally the
    in-process consumer runs until caught up. Fails only after ``idle_seconds`` without progress."""
    return runtime(idle_seconds=idle_seconds).run_until_caught_up(expected=expected)


# --------------------------------------------------------------------------- reconciliation


@dataclass
class Reconciliation:
    """Every published event accounted for: written once, or dead-lettered with a reason."""

    events_in: int
    valid: int
    invalid: int
    items: int
    dead_lettered: int
    missing: list[str] = field(default_factory=list)  # event ids of valid lines not in the table
    unexpected: list[str] = field(default_factory=list)  # items not from a published valid line
    duplicates: int = 0  # published valid lines sharing a table key with another
    content_mismatches: list[str] = field(default_factory=list)
    cancellations: int = 0
    cancelled_lines: int = 0
    guest_lines: int = 0

    @property
    def exactly_once(self) -> bool:
        return (
            not self.missing
            and not self.unexpected
            and not self.content_mismatches
            and self.duplicates == 0
            and self.items == self.valid
        )

    @property
    def balanced(self) -> bool:
        """in = written + dead-lettered, exactly."""
        return self.events_in == self.items + self.dead_lettered

    def as_dict(self) -> dict[str, Any]:
        return {
            "events_in": self.events_in,
            "valid": self.valid,
            "invalid": self.invalid,
            "items": self.items,
            "dead_lettered": self.dead_lettered,
            "missing": len(self.missing),
            "unexpected": len(self.unexpected),
            "duplicates": self.duplicates,
            "content_mismatches": len(self.content_mismatches),
            "cancellations": self.cancellations,
            "cancelled_lines": self.cancelled_lines,
            "guest_lines": self.guest_lines,
            "exactly_once": self.exactly_once,
            "balanced": self.balanced,
        }


# what a reconciliation needs of each expected item besides the columns it compares
_ALWAYS = ("customer_id", "order_key", "event_id", "is_cancellation", "is_guest")


def expected_items(
    events: Any, columns: tuple[str, ...] | list[str] | None = None
) -> tuple[dict[tuple[str, str], dict[str, Any]], int]:
    """What the table must hold for ``events`` (validated exactly as the handler does): ({key: item}, invalid).

    ``columns`` keeps only those attributes of each item (plus keys, event id and the cancellation/guest flags):
    a reconciliation by content hash deserialises a third of what a full comparison does (a million lines: ~40 s)."""
    from boto3.dynamodb.types import TypeDeserializer

    deserialize = TypeDeserializer().deserialize
    keep = None if columns is None else tuple(dict.fromkeys((*_ALWAYS, *columns)))
    expected: dict[tuple[str, str], dict[str, Any]] = {}
    invalid = 0
    for record in _as_records(events):
        data = record if isinstance(record, bytes) else streams.encode(record)
        try:
            event = order_history.parse_event(data)
        except order_history.Malformed:
            invalid += 1
            continue
        low = order_history.to_item(event)
        if keep is None:
            item = {k: deserialize(v) for k, v in low.items()}
        else:
            item = {k: deserialize(low[k]) for k in keep if k in low}
        expected[(item["customer_id"], item["order_key"])] = item
    return expected, invalid


def _as_records(events: Any) -> list[Any]:
    import pandas as pd

    if isinstance(events, pd.DataFrame):
        return from_frame(events)
    return [e.encode("utf-8") if isinstance(e, str) else e for e in events]


# from this many events on, a reconciliation computes the expected items in a second process while this one reads
# the table (each takes about half the time): below it, starting that process costs more than it saves
RECONCILE_IN_WORKER_FROM = 50_000


def _expected_while_reading(records: list[Any]) -> tuple[Any, tuple[dict[tuple[str, str], dict[str, Any]], int]]:
    """(:func:`table_items` of :data:`RECONCILE_COLUMNS`, :func:`expected_items` of ``records``), the second computed
    in a spawned worker process meanwhile: the table read waits on the emulator (or DynamoDB) and parses pages, the
    expected items are pure CPU (validating, building and hashing every event again), so the two use both cores.
    Spawned, not forked: this process has threads (botocore's pools, progress bars) that a fork would copy mid-way."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        expected = pool.submit(expected_items, records, list(RECONCILE_COLUMNS))
        items = table_items(RECONCILE_COLUMNS)
        return items, expected.result()


def reconcile(events: Any, items: Any = None, dead: DeadLetters | None = None) -> Reconciliation:
    """Compare the table and the DLQ with the published ``events``: every valid line exactly once, same content.

    Without ``items`` it reads only :data:`RECONCILE_COLUMNS` (keys, the content hash each item was written with,
    the cancellation mark) and compares hashes — for :data:`RECONCILE_IN_WORKER_FROM` events or more, while a second
    process computes what the table must hold; given full ``items`` (:func:`table_items`), it compares every
    column the items have."""
    with _gc.relaxed():
        records = _as_records(events)
        if items is None and len(records) >= RECONCILE_IN_WORKER_FROM:
            items, (expected, invalid) = _expected_while_reading(records)
        else:
            items = table_items(RECONCILE_COLUMNS) if items is None else items
            expected, invalid = expected_items(records, columns=list(items.columns))
    dead = dead_letters() if dead is None else dead
    have = {(row["customer_id"], row["order_key"]): row for row in items.to_dict(orient="records")}
    compared = set(items.columns)
    mismatches = []
    for key, want in expected.items():
        got = have.get(key)
        if got is None:
            continue
        for column, value in want.items():
            if column not in compared:
                continue
            if column == "status" and got.get("cancelled_by") and not _is_missing(got.get("cancelled_by")):
                continue  # marked cancelled by a later cancellation
            if got.get(column) != value:
                mismatches.append(f"{want['event_id']}.{column}: {got.get(column)!r} != {value!r}")
                break
    cancelled = items["cancelled_by"].map(lambda v: not _is_missing(v)).sum() if len(items) else 0
    return Reconciliation(
        events_in=len(records),
        valid=len(records) - invalid,
        invalid=invalid,
        items=len(have),
        dead_lettered=len(dead),
        missing=sorted(expected[k]["event_id"] for k in expected.keys() - have.keys()),
        unexpected=sorted(str(k) for k in have.keys() - expected.keys()),
        duplicates=len(records) - invalid - len(expected),
        content_mismatches=mismatches,
        cancellations=sum(1 for v in expected.values() if v["is_cancellation"]),
        cancelled_lines=int(cancelled),
        guest_lines=sum(1 for v in expected.values() if v["is_guest"]),
    )


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
