"""Lambda handler: Kinesis order events → DynamoDB order history (idempotent), malformed records → SQS dead letters.

Stdlib + boto3 + ``shoplake.events`` (the one set of order-event rules, stdlib only): ``infra`` zips these files as the
``order-history`` function's bundle; locally ``shoplake.lambda_local`` runs it with the same Kinesis event shape.

Configuration (environment): ``TABLE_NAME``, ``DEAD_LETTER_QUEUE_URL``; optionally ``AWS_ENDPOINT_URL`` (boto3
honours it) for the local emulator — only a loopback address is accepted there.

Table layout: partition key ``customer_id``; sort key ``order_key = <InvoiceDate>#<InvoiceNo>#<StockCode>#<LineNo>``
(orders by time, unique per order line, deterministic). Writes are BatchWriteItem puts of the items computed from
the events plus the cancellation marks they already carry, so replaying a record rewrites the same item: the table is
unchanged. Each item carries ``content_sha256``, the hash of the event's content (:func:`content_hash`), so a
reconciliation can compare keys and hashes instead of reading every attribute back.

Policies:
- **Guests** (no CustomerID) are stored under ``customer_id = guest-<InvoiceNo>`` (one partition per guest invoice,
  the same key the producer uses), flagged ``is_guest``; the response counts them (``guest_lines``).
- **Cancellations** (``C…`` invoices) are stored as their own lines (negative quantity, ``is_cancellation``). Then
  the original line is marked: among the same customer's earlier lines with the same StockCode that are not
  cancellations, the newest one not yet marked by another cancellation gets ``cancelled_by = <C-invoice>-<line>``,
  ``cancelled_quantity`` and ``status = cancelled``. A cancellation without such a line (a guest's, or one whose
  original came before the data) stays stored and is counted ``cancellations_unmatched``. The lines of one batch are
  visible to all its cancellations; a cancellation already marking a line (a replay) changes nothing.
- **Replays** of any subset of the stream, in any order, leave the table as the full run did: before writing, the
  handler reads the marks the batch's original lines already carry and re-puts them with those marks. A cancellation
  replayed before its original line is already stored marks nothing new (the line keeps the mark the full run
  gave it); on a fresh table, a cancellation that arrives before its original stays unmatched — the stream keeps one
  customer's events in order (partition key = customer, one shard), so the full run never does that.
- **Requests per batch** (not per event or per cancellation): one Query per customer with cancellations in the
  batch (the stored lines they may mark, whole, as a newly marked line is re-put with its mark); one BatchGetItem
  per 100 of the batch's original lines that the Queries do not cover (keys and marks only); BatchWriteItem puts
  (25 per call) of the batch's items and of the lines newly marked. Two waves, each with up to ``CONCURRENCY``
  requests in flight: the reads (Queries and BatchGetItem calls together: which lines a Query covers follows from
  the cancellations alone), then the writes. Reads and writes are not conditional: this
  relies on one writer per customer at a time — the event-source mapping invokes one batch per shard at a time, in
  order, and a customer's events share a shard (a ParallelizationFactor > 1 keeps that per partition key).
- **Malformed** records (not JSON, missing/ill-typed fields, bad date) go to the dead-letter queue as one
  message each: ``{"reason", "data_base64", "data_text", "data_length", "data_sha256", "truncated", "source":
  {shard_id, sequence_number, event_source_arn}}`` — the record is embedded up to 96 KiB (text up to 16 KiB), so a
  message stays under SQS's 256 KiB even for a 1 MiB Kinesis record. They count as handled (not retried).
- **Transient** failures (throttling, unprocessed items, the dead-letter queue unreachable) are reported in
  ``batchItemFailures`` so the event-source mapping retries from the first failed record: a put not written reports
  its record and the cancellation whose new mark it carried; reads that fail (or keys left unprocessed) report every
  valid record of the batch and nothing is written (a put without the mark its line carries would un-cancel it). Anything else raises (a
  function error: the mapping retries, bisects, then sends the batch's metadata to its on-failure queue).

AWS calls (for the role's least privilege): ``dynamodb:BatchWriteItem``, ``dynamodb:BatchGetItem`` and
``dynamodb:Query`` on the table, ``sqs:SendMessage`` on the dead-letter queue.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from shoplake import events
from shoplake.lambdas import _aws

log = logging.getLogger("order_history")

REQUIRED = events.REQUIRED
BATCH_WRITE_MAX = 25
BATCH_GET_MAX = 100  # BatchGetItem's limit per call
MAX_IN_CODES = 99  # DynamoDB's IN takes at most 100 operands
MARK = ("cancelled_by", "cancelled_quantity")  # what a cancellation adds to the line it cancels (and status)
WRITE_ATTEMPTS = 5
CONCURRENCY = 4  # a batch's DynamoDB requests in flight at once (BatchWriteItem chunks, Queries, BatchGetItem chunks)
MAX_MESSAGE_BYTES = 200 * 1024  # SQS accepts 256 KiB per message; keep a margin for attributes
EMBED_BYTES = 96 * 1024  # a malformed record's bytes embedded in its dead letter (base64: 128 KiB)
EMBED_TEXT_BYTES = 16 * 1024  # ... and as text, for reading (JSON escaping may grow it up to 6×)

_CLIENTS: dict[str, Any] = {}

Key = tuple[str, str]  # (customer_id, order_key)


# The record can never be written: it goes to the dead-letter queue with this reason (``.reason``).
Malformed = events.Rejected


# --------------------------------------------------------------------------- validation


def parse_event(data: bytes) -> dict[str, Any]:
    """Decode and judge one order event by :func:`shoplake.events.validate` — the rules the lake, the rate detector
    and every other consumer use, shipped in this function's zip; raises :class:`Malformed` with the reason."""
    return events.decode(data)


def order_key(event: dict[str, Any]) -> str:
    """The sort key: ``<InvoiceDate>#<InvoiceNo>#<StockCode>#<LineNo>`` (LineNo zero-padded to sort)."""
    return f"{event['InvoiceDate']}#{event['InvoiceNo']}#{event['StockCode']}#{event['LineNo']:04d}"


def customer_key(event: dict[str, Any]) -> str:
    """The partition key: the customer id, or ``guest-<InvoiceNo>`` for a guest line."""
    return event["CustomerID"] or f"guest-{event['InvoiceNo']}"


def to_item(event: dict[str, Any]) -> dict[str, Any]:
    """The DynamoDB item (low-level attribute values) of a valid event; money as exact decimals."""
    try:
        price = Decimal(str(event["UnitPrice"])).quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # pragma: no cover - validated before
        raise Malformed(f"UnitPrice {event['UnitPrice']!r} is not a number") from None
    amount = str((price * event["Quantity"]).quantize(CENT, rounding=ROUND_HALF_UP))
    invoice_no, line_no, stock_code = event["InvoiceNo"], str(event["LineNo"]), event["StockCode"]
    customer, key = customer_key(event), order_key(event)
    event_id, description, quantity = f"{invoice_no}-{line_no}", event["Description"], str(event["Quantity"])
    invoice_date, country, guest = event["InvoiceDate"], event["Country"], event["CustomerID"] is None
    cancellation = invoice_no.startswith("C")
    status = "cancellation" if cancellation else "ordered"
    unit_price = str(price)
    # content_hash(item), written out: the canonical JSON of these attributes in key order (tests hold it equal)
    text = _ascii_json
    canonical = (
        f'{{"country":{{"S":{text(country)}}},"customer_id":{{"S":{text(customer)}}},'
        f'"description":{{"S":{text(description)}}},"event_id":{{"S":{text(event_id)}}},'
        f'"invoice_date":{{"S":{text(invoice_date)}}},"invoice_no":{{"S":{text(invoice_no)}}},'
        f'"is_cancellation":{{"BOOL":{"true" if cancellation else "false"}}},'
        f'"is_guest":{{"BOOL":{"true" if guest else "false"}}},"line_amount":{{"N":{text(amount)}}},'
        f'"line_no":{{"N":{text(line_no)}}},"order_key":{{"S":{text(key)}}},"quantity":{{"N":{text(quantity)}}},'
        f'"status":{{"S":{text(status)}}},"stock_code":{{"S":{text(stock_code)}}},'
        f'"unit_price":{{"N":{text(unit_price)}}}}}'
    )
    return {
        "customer_id": {"S": customer},
        "order_key": {"S": key},
        "event_id": {"S": event_id},
        "invoice_no": {"S": invoice_no},
        "line_no": {"N": line_no},
        "stock_code": {"S": stock_code},
        "description": {"S": description},
        "quantity": {"N": quantity},
        "unit_price": {"N": unit_price},
        "line_amount": {"N": amount},
        "invoice_date": {"S": invoice_date},
        "country": {"S": country},
        "is_guest": {"BOOL": guest},
        "is_cancellation": {"BOOL": cancellation},
        "status": {"S": status},
        CONTENT_HASH: {"S": hashlib.sha256(canonical.encode()).hexdigest()},
    }


CENT = Decimal("0.01")
# a string as the canonical JSON writes it (json's own C escaper: ASCII, \uXXXX for the rest, quotes included)
_ascii_json = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


CONTENT_HASH = "content_sha256"
# the canonical JSON the hash is taken of: json.dumps(content, sort_keys=True, separators=(",", ":")), by one encoder
# made once and without the check for reference cycles (an item is built from JSON: it has none): ~25 % less per item
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False)


def content_hash(item: dict[str, Any]) -> str:
    """SHA-256 of an item's content as written (every attribute but the hash itself, canonical JSON): a
    reconciliation reads keys + this hash instead of every attribute (a later cancellation mark is not part of it)."""
    content = {k: v for k, v in item.items() if k != CONTENT_HASH}
    return hashlib.sha256(_CANONICAL.encode(content).encode()).hexdigest()


# --------------------------------------------------------------------------- clients and config


_check_endpoint = _aws.check_endpoint


def _client(service: str) -> Any:
    return _aws.client(service, _CLIENTS)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point (Kinesis event source with ReportBatchItemFailures); config from the environment."""
    _check_endpoint()
    table = os.environ.get("TABLE_NAME")
    queue = os.environ.get("DEAD_LETTER_QUEUE_URL")
    if not table or not queue:
        raise RuntimeError("set TABLE_NAME and DEAD_LETTER_QUEUE_URL (the stack's order_history table and DLQ)")
    return process(event, table, queue, _client("dynamodb"), _client("sqs"))


# --------------------------------------------------------------------------- processing


def process(event: dict[str, Any], table: str, dlq_url: str, dynamodb: Any, sqs: Any) -> dict[str, Any]:
    """Handle one Kinesis batch with explicit clients; returns ``{"batchItemFailures": [...], "counts": {...}}``."""
    counts = {
        "records": 0,
        "written": 0,
        "dead_lettered": 0,
        "guest_lines": 0,
        "cancellations": 0,
        "cancellations_matched": 0,
        "cancellations_unmatched": 0,
        "transient_failures": 0,
    }
    failed: set[str] = set()
    valid: list[tuple[str, dict[str, Any], dict[str, Any]]] = []  # (sequence number, event, item)
    for record in event.get("Records", []):
        counts["records"] += 1
        kinesis = record.get("kinesis", {})
        sequence = kinesis.get("sequenceNumber", "")
        raw = base64.b64decode(kinesis.get("data", ""))
        try:
            order = parse_event(raw)
            valid.append((sequence, order, to_item(order)))
        except Malformed as exc:
            if _dead_letter(sqs, dlq_url, record, raw, str(exc)):
                counts["dead_lettered"] += 1
            else:
                failed.add(sequence)
    # one item per table key (a record repeated within the batch is the same item), and who answers for each key
    items: dict[Key, dict[str, Any]] = {}
    owners: dict[Key, set[str]] = {}
    for sequence, _order, item in valid:
        key = _key_of(item)
        items[key] = item
        owners.setdefault(key, set()).add(sequence)
    cancels = [(sequence, order) for sequence, order, _item in valid if order["InvoiceNo"].startswith("C")]
    matched: dict[str, bool] = {}
    try:
        lines = _read_lines(dynamodb, table, items, cancels)
    except Exception as exc:  # noqa: BLE001 - transient: nothing written, the mapping retries the batch
        if not _is_transient(exc):
            raise
        log.warning("order_history: reading the batch's lines failed, the batch will be retried: %s", exc)
        failed.update(sequence for sequence, _order, _item in valid)
    else:
        matched, marked_by = _decide_marks(cancels, lines)
        puts = {key: _with_mark(item, lines[key]["mark"]) if key in lines else item for key, item in items.items()}
        for key, sequence in marked_by.items():  # a line of an earlier batch, marked now: re-put with its mark
            puts.setdefault(key, _with_mark(lines[key]["item"], lines[key]["mark"]))
            owners.setdefault(key, set()).add(sequence)  # not written → the cancellation is retried as well
        keys = list(puts)
        chunks = [keys[start : start + BATCH_WRITE_MAX] for start in range(0, len(keys), BATCH_WRITE_MAX)]
        for unprocessed in _each(lambda chunk: _batch_write(dynamodb, table, [puts[k] for k in chunk]), chunks):
            for key in unprocessed:
                failed.update(owners[key])
    for sequence, order, _item in valid:
        if sequence in failed:
            continue
        counts["written"] += 1
        if order["CustomerID"] is None:
            counts["guest_lines"] += 1
        if order["InvoiceNo"].startswith("C"):
            counts["cancellations"] += 1
            counts["cancellations_matched" if matched[sequence] else "cancellations_unmatched"] += 1
    counts["transient_failures"] = len(failed)
    log.info("order_history batch: %s", counts)
    return {"batchItemFailures": [{"itemIdentifier": s} for s in sorted(failed, key=_seq_int)], "counts": counts}


# one thread pool per invoking thread: on Lambda the one thread of a container (a warm container reuses it); locally
# each shard's poller plays a container, so two pollers do not share (and halve) one pool
_POOLS = threading.local()


def _each(call: Any, args: list[Any]) -> list[Any]:
    """``[call(a) for a in args]``, up to :data:`CONCURRENCY` at a time (the answers in the order of ``args``).

    A batch's requests touch distinct keys (or only read), so their order does not matter: a few in flight keep the
    table busy instead of waiting for each answer in turn (on DynamoDB a round trip each; locally the emulator's core
    works while this one prepares the next request). The first exception raised is raised here, after the others end."""
    if len(args) <= 1:
        return [call(a) for a in args]
    from concurrent.futures import ThreadPoolExecutor, wait

    pool = getattr(_POOLS, "pool", None)
    if pool is None:
        pool = _POOLS.pool = ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="order-history")
    futures = [pool.submit(call, a) for a in args]
    wait(futures)
    return [f.result() for f in futures]


def _seq_int(sequence: str) -> int:
    try:
        return int(sequence)
    except ValueError:
        return 0


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, Unprocessed):
        return True
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
    } or type(exc).__name__ in {
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
    }


class Unprocessed(Exception):
    """DynamoDB left keys unprocessed after every attempt (throttling): the batch is retried."""


def _key_of(item: dict[str, Any]) -> Key:
    return item["customer_id"]["S"], item["order_key"]["S"]


def _mark_of(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """The cancellation mark an item carries (``cancelled_by`` and ``cancelled_quantity``), or None."""
    if not item or "cancelled_by" not in item:
        return None
    return {name: item[name] for name in MARK if name in item}


def _with_mark(item: dict[str, Any], mark: dict[str, Any] | None) -> dict[str, Any]:
    """``item`` as it must be stored: with its mark and ``status = cancelled`` when it has one (its content hash stays
    the hash of the event's content)."""
    return {**item, **mark, "status": {"S": "cancelled"}} if mark else item


def _batch_write(dynamodb: Any, table: str, items: list[dict[str, Any]]) -> set[Key]:
    """Write ``items``; returns the keys still unprocessed after a few backed-off attempts (transient)."""
    requests = [{"PutRequest": {"Item": item}} for item in items]
    for attempt in range(WRITE_ATTEMPTS):
        try:
            response = dynamodb.batch_write_item(RequestItems={table: requests})
        except Exception as exc:  # noqa: BLE001
            if not _is_transient(exc):
                raise
            response = {"UnprocessedItems": {table: requests}}
        requests = response.get("UnprocessedItems", {}).get(table, [])
        if not requests:
            return set()
        time.sleep(min(1.0, 0.05 * 2**attempt))
    return {_key_of(r["PutRequest"]["Item"]) for r in requests}


def _read_lines(
    dynamodb: Any, table: str, items: dict[Key, dict[str, Any]], cancels: list[tuple[str, dict[str, Any]]]
) -> dict[Key, dict[str, Any]]:
    """What the batch's marks are decided on, before anything is written: ``{key: {"item", "stock_code", "mark"}}``
    for the original lines (not cancellations) that the batch writes or that its cancellations may mark.

    - per customer with cancellations in the batch, one Query: the customer's lines that any of them may mark
      (stored items, as they are re-put with the mark);
    - the batch's own original lines (the item from the event) with the mark they already carry in the table — from
      that Query when it covered them, else from one BatchGetItem per 100 keys (keys and marks only): a replayed line
      is re-put with its mark, never without it."""
    lines: dict[Key, dict[str, Any]] = {}
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for _sequence, cancel in cancels:
        if cancel["CustomerID"] is not None:  # a guest's cancellation has no earlier lines to mark
            by_customer.setdefault(cancel["CustomerID"], []).append(cancel)
    bounds = {
        customer: (max(c["InvoiceDate"] for c in group) + "#", sorted({c["StockCode"] for c in group}))
        for customer, group in by_customer.items()
    }
    # customer → (order_key bound, stock codes | None: all codes): which of the batch's lines its Query returns
    covered = {c: (before, set(codes) if len(codes) <= MAX_IN_CODES else None) for c, (before, codes) in bounds.items()}
    originals = [key for key, item in items.items() if not item["is_cancellation"]["BOOL"]]

    def queried(key: Key) -> bool:
        bound, codes = covered.get(key[0], ("", set()))
        return key[1] < bound and (codes is None or items[key]["stock_code"]["S"] in codes)

    # the Queries and the BatchGetItem calls in one wave: which keys a Query covers follows from the bounds alone
    unqueried = [k for k in originals if not queried(k)]
    reads: list[tuple[str, Any]] = [("query", customer) for customer in bounds]
    reads += [("get", unqueried[start : start + BATCH_GET_MAX]) for start in range(0, len(unqueried), BATCH_GET_MAX)]

    def read(task: tuple[str, Any]) -> Any:
        kind, arg = task
        if kind == "query":
            return _candidate_lines(dynamodb, table, arg, *bounds[arg])
        return _get_marks(dynamodb, table, arg)

    answers = _each(read, reads)
    stored_marks: dict[Key, dict[str, Any]] = {}
    for (kind, _arg), answer in zip(reads, answers, strict=True):
        if kind == "get":
            stored_marks.update(answer)
            continue
        for stored in answer:
            lines[_key_of(stored)] = {"item": stored, "stock_code": stored["stock_code"]["S"], "mark": _mark_of(stored)}
    for key in originals:
        mark = lines[key]["mark"] if key in lines else _mark_of(stored_marks.get(key))
        lines[key] = {"item": items[key], "stock_code": items[key]["stock_code"]["S"], "mark": mark}
    return lines


def _get_marks(dynamodb: Any, table: str, keys: list[Key]) -> dict[Key, dict[str, Any]]:
    """One BatchGetItem of ≤ 100 ``keys`` (keys and marks only), its unprocessed keys retried with backoff."""
    found: dict[Key, dict[str, Any]] = {}
    request: dict[str, Any] | None = {
        "Keys": [{"customer_id": {"S": c}, "order_key": {"S": k}} for c, k in keys],
        "ProjectionExpression": "customer_id, order_key, cancelled_by, cancelled_quantity",
        "ConsistentRead": True,
    }
    for attempt in range(WRITE_ATTEMPTS):
        try:
            response = dynamodb.batch_get_item(RequestItems={table: request})
        except Exception as exc:  # noqa: BLE001
            if not _is_transient(exc):
                raise
            response = {"UnprocessedKeys": {table: request}}
        for item in response.get("Responses", {}).get(table, []):
            found[_key_of(item)] = item
        request = response.get("UnprocessedKeys", {}).get(table)
        if not request or not request.get("Keys"):
            break
        time.sleep(min(1.0, 0.05 * 2**attempt))
    else:
        raise Unprocessed(f"BatchGetItem left {len(request['Keys'])} keys unprocessed after {WRITE_ATTEMPTS} tries")
    return found


def _candidate_lines(
    dynamodb: Any, table: str, customer: str, before: str, stock_codes: list[str]
) -> list[dict[str, Any]]:
    """The customer's stored lines (not cancellations) with one of ``stock_codes`` and ``order_key < before``,
    whole items (a ConsistentRead Query, all pages)."""
    # DynamoDB's IN takes at most 100 operands: with more stock codes, the choice filters them instead
    codes = {f":s{i}": {"S": code} for i, code in enumerate(stock_codes)} if len(stock_codes) <= MAX_IN_CODES else {}
    in_codes = f" AND stock_code IN ({', '.join(codes)})" if codes else ""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "customer_id = :c AND order_key < :k",
        "FilterExpression": f"is_cancellation = :f{in_codes}",
        "ExpressionAttributeValues": {":c": {"S": customer}, ":k": {"S": before}, ":f": {"BOOL": False}, **codes},
        "ConsistentRead": True,
    }
    lines: list[dict[str, Any]] = []
    while True:
        page = dynamodb.query(**kwargs)
        lines.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return lines
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _decide_marks(
    cancels: list[tuple[str, dict[str, Any]]], lines: dict[Key, dict[str, Any]]
) -> tuple[dict[str, bool], dict[Key, str]]:
    """Each cancellation, in stream order, marks the newest unmarked earlier line of its customer and product
    (``lines`` is updated). Returns ({sequence: matched}, {key of a newly marked line: the cancellation's sequence}).

    A cancellation whose mark a line already carries (a replay) is matched and changes nothing."""
    newest_first: dict[tuple[str, str], list[Key]] = {}
    for key in sorted(lines, key=lambda k: k[1], reverse=True):
        newest_first.setdefault((key[0], lines[key]["stock_code"]), []).append(key)
    matched: dict[str, bool] = {}
    marked_by: dict[Key, str] = {}
    for sequence, cancel in cancels:
        matched[sequence] = False
        if cancel["CustomerID"] is None:
            continue
        me = f"{cancel['InvoiceNo']}-{cancel['LineNo']}"
        before = cancel["InvoiceDate"] + "#"
        candidates = [k for k in newest_first.get((cancel["CustomerID"], cancel["StockCode"]), []) if k[1] < before]
        if any((lines[k]["mark"] or {}).get("cancelled_by", {}).get("S") == me for k in candidates):
            matched[sequence] = True  # a replay: already marked by this cancellation
            continue
        for key in candidates:
            if lines[key]["mark"] is None:
                lines[key]["mark"] = {
                    "cancelled_by": {"S": me},
                    "cancelled_quantity": {"N": str(abs(cancel["Quantity"]))},
                }
                marked_by[key] = sequence
                matched[sequence] = True
                break
    return matched, marked_by


def dead_letter_body(record: dict[str, Any], raw: bytes, reason: str) -> str:
    """The DLQ message of a malformed record, always under SQS's 256 KiB: the record embedded as base64 (and as text
    when it is UTF-8) up to ``EMBED_BYTES``, with its full length and SHA-256 so a truncated copy stays checkable."""
    kinesis = record.get("kinesis", {})
    embedded = raw[:EMBED_BYTES]
    try:
        text: str | None = raw[:EMBED_TEXT_BYTES].decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the limit is still text; anything else is binary
        cut = len(raw) > EMBED_TEXT_BYTES and exc.reason == "unexpected end of data"
        text = raw[: exc.start].decode("utf-8") if cut else None
    body = {
        "reason": reason[:2000],
        "data_base64": base64.b64encode(embedded).decode("ascii"),
        "data_text": text,
        "data_length": len(raw),
        "data_sha256": hashlib.sha256(raw).hexdigest(),
        "truncated": len(embedded) < len(raw) or (text is not None and len(text.encode("utf-8")) < len(raw)),
        "source": {
            "shard_id": record.get("eventID", "").split(":")[0],
            "sequence_number": kinesis.get("sequenceNumber"),
            "partition_key": kinesis.get("partitionKey"),
            "event_source_arn": record.get("eventSourceARN"),
        },
        "function": "order_history",
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    message = json.dumps(body)  # ASCII only (ensure_ascii): SQS-safe characters, 1 byte each
    if len(message) > MAX_MESSAGE_BYTES:  # text of control characters escapes 6×: keep the base64 copy only
        body["data_text"], body["truncated"] = None, True
        message = json.dumps(body)
    return message


def _dead_letter(sqs: Any, dlq_url: str, record: dict[str, Any], raw: bytes, reason: str) -> bool:
    """Send one malformed record to the dead-letter queue; False if the queue cannot be reached (retry later).

    Errors that another attempt cannot fix (a message SQS refuses, access denied) are not transient: they raise, so
    the mapping retries the batch and finally sends it to the on-failure destination — the record is never lost."""
    try:
        sqs.send_message(QueueUrl=dlq_url, MessageBody=dead_letter_body(record, raw, reason))
        return True
    except Exception as exc:  # noqa: BLE001
        if _is_transient(exc):
            log.warning("dead-letter queue unreachable, record will be retried: %s", exc)
            return False
        raise
