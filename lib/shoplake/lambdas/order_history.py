"""Lambda handler: Kinesis order events → DynamoDB order history (idempotent), malformed records → SQS dead letters.

Stdlib + boto3 + ``shoplake.events`` (the one set of order-event rules, stdlib only): ``infra`` zips these files as the
``order-history`` function's bundle; locally ``shoplake.lambda_local`` runs it with the same Kinesis event shape.

Configuration (environment): ``TABLE_NAME``, ``DEAD_LETTER_QUEUE_URL``; optionally ``AWS_ENDPOINT_URL`` (boto3
honours it) for the local emulator — only a loopback address is accepted there.

Table layout: partition key ``customer_id``; sort key ``order_key = <InvoiceDate>#<InvoiceNo>#<StockCode>#<LineNo>``
(orders by time, unique per order line, deterministic). Writes are BatchWriteItem puts of items computed only
from the event, so replaying a record rewrites the same item: the table is unchanged. Each item carries
``content_sha256``, the hash of its content as written (:func:`content_hash`), so a reconciliation can compare keys
and hashes instead of reading every attribute back.

Policies:
- **Guests** (no CustomerID) are stored under ``customer_id = guest-<InvoiceNo>`` (one partition per guest invoice,
  the same key the producer uses), flagged ``is_guest``; the response counts them (``guest_lines``).
- **Cancellations** (``C…`` invoices) are stored as their own lines (negative quantity, ``is_cancellation``). Then
  the original line is marked: among the same customer's earlier lines with the same StockCode that are not
  cancellations, the newest one not yet marked by another cancellation gets ``cancelled_by = <C-invoice>-<line>``,
  ``cancelled_quantity`` and ``status = cancelled`` (a conditional update, so replays re-mark the same line and
  two cancellations never claim one line). A cancellation without such a line (a guest's, or one whose original
  came before the data) stays stored and is counted ``cancellations_unmatched``. The look-up is one Query per
  customer per batch (not per cancellation), reading only the three attributes the choice needs. A replay of an original line
  rewrites it without its mark; the cancellation that follows it in the shard (same customer → same shard, later)
  is replayed too and marks it again.
- **Malformed** records (not JSON, missing/ill-typed fields, bad date) go to the dead-letter queue as one
  message each: ``{"reason", "data_base64", "data_text", "data_length", "data_sha256", "truncated", "source":
  {shard_id, sequence_number, event_source_arn}}`` — the record is embedded up to 96 KiB (text up to 16 KiB), so a
  message stays under SQS's 256 KiB even for a 1 MiB Kinesis record. They count as handled (not retried).
- **Transient** failures (throttling, unprocessed items, the dead-letter queue unreachable) are reported in
  ``batchItemFailures`` so the event-source mapping retries from the first failed record. Anything else raises (a
  function error: the mapping retries, bisects, then sends the batch's metadata to its on-failure queue).

AWS calls (for the role's least privilege): ``dynamodb:BatchWriteItem``, ``dynamodb:Query`` and
``dynamodb:UpdateItem`` on the table, ``sqs:SendMessage`` on the dead-letter queue.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from shoplake import events
from shoplake.lambdas import _aws

log = logging.getLogger("order_history")

REQUIRED = events.REQUIRED
BATCH_WRITE_MAX = 25
WRITE_ATTEMPTS = 5
MAX_MESSAGE_BYTES = 200 * 1024  # SQS accepts 256 KiB per message; keep a margin for attributes
EMBED_BYTES = 96 * 1024  # a malformed record's bytes embedded in its dead letter (base64: 128 KiB)
EMBED_TEXT_BYTES = 16 * 1024  # ... and as text, for reading (JSON escaping may grow it up to 6×)

_CLIENTS: dict[str, Any] = {}


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
        price = Decimal(str(event["UnitPrice"])).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    except InvalidOperation:  # pragma: no cover - validated before
        raise Malformed(f"UnitPrice {event['UnitPrice']!r} is not a number") from None
    amount = (price * event["Quantity"]).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    cancellation = event["InvoiceNo"].startswith("C")
    item = {
        "customer_id": {"S": customer_key(event)},
        "order_key": {"S": order_key(event)},
        "event_id": {"S": f"{event['InvoiceNo']}-{event['LineNo']}"},
        "invoice_no": {"S": event["InvoiceNo"]},
        "line_no": {"N": str(event["LineNo"])},
        "stock_code": {"S": event["StockCode"]},
        "description": {"S": event["Description"]},
        "quantity": {"N": str(event["Quantity"])},
        "unit_price": {"N": str(price)},
        "line_amount": {"N": str(amount)},
        "invoice_date": {"S": event["InvoiceDate"]},
        "country": {"S": event["Country"]},
        "is_guest": {"BOOL": event["CustomerID"] is None},
        "is_cancellation": {"BOOL": cancellation},
        "status": {"S": "cancellation" if cancellation else "ordered"},
    }
    item[CONTENT_HASH] = {"S": content_hash(item)}
    return item


CONTENT_HASH = "content_sha256"


def content_hash(item: dict[str, Any]) -> str:
    """SHA-256 of an item's content as written (every attribute but the hash itself, canonical JSON): a
    reconciliation reads keys + this hash instead of every attribute (a later cancellation mark is not part of it)."""
    content = {k: v for k, v in item.items() if k != CONTENT_HASH}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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
    # writes: one BatchWriteItem per 25 distinct keys; unprocessed items retried, then reported as failures
    by_key: dict[tuple[str, str], str] = {}
    pending: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for sequence, _order, item in valid:
        key = (item["customer_id"]["S"], item["order_key"]["S"])
        pending[key] = (sequence, item)
        by_key.setdefault(key, sequence)
    keys = list(pending)
    for start in range(0, len(keys), BATCH_WRITE_MAX):
        chunk = keys[start : start + BATCH_WRITE_MAX]
        not_written = _batch_write(dynamodb, table, [pending[k][1] for k in chunk])
        for key in chunk:
            if key in not_written:
                failed.add(pending[key][0])
                failed.add(by_key[key])
    cancels: list[tuple[str, dict[str, Any]]] = []
    for sequence, order, _item in valid:
        if sequence in failed:
            continue
        counts["written"] += 1
        if order["CustomerID"] is None:
            counts["guest_lines"] += 1
        if order["InvoiceNo"].startswith("C"):
            counts["cancellations"] += 1
            cancels.append((sequence, order))
    matched, not_marked = _mark_cancellations(dynamodb, table, cancels)
    failed.update(not_marked)
    for sequence, _order in cancels:
        if sequence in matched:
            counts["cancellations_matched" if matched[sequence] else "cancellations_unmatched"] += 1
    counts["transient_failures"] = len(failed)
    log.info("order_history batch: %s", counts)
    return {"batchItemFailures": [{"itemIdentifier": s} for s in sorted(failed, key=_seq_int)], "counts": counts}


def _seq_int(sequence: str) -> int:
    try:
        return int(sequence)
    except ValueError:
        return 0


def _is_transient(exc: Exception) -> bool:
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


def _batch_write(dynamodb: Any, table: str, items: list[dict[str, Any]]) -> set[tuple[str, str]]:
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
    return {(r["PutRequest"]["Item"]["customer_id"]["S"], r["PutRequest"]["Item"]["order_key"]["S"]) for r in requests}


def _mark_cancellations(
    dynamodb: Any, table: str, cancels: list[tuple[str, dict[str, Any]]]
) -> tuple[dict[str, bool], set[str]]:
    """Mark the original lines of a batch's cancellations (see the module docstring), in stream order.

    One Query per customer of the batch (not one per cancellation): the customer's non-cancellation lines before
    the newest cancellation, only the attributes the choice needs (``order_key``, ``stock_code``, ``cancelled_by``).
    Marks made earlier in the batch are kept in that view, so the result is the same as querying before each one.
    Returns ({sequence: matched}, sequences that failed transiently — the mapping retries them)."""
    matched: dict[str, bool] = {}
    failed: set[str] = set()
    by_customer: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for sequence, cancel in cancels:
        if cancel["CustomerID"] is None:
            matched[sequence] = False  # a guest's cancellation has no earlier lines to mark
        else:
            by_customer.setdefault(cancel["CustomerID"], []).append((sequence, cancel))
    for customer, group in by_customer.items():
        try:
            lines = _candidate_lines(
                dynamodb,
                table,
                customer,
                max(c["InvoiceDate"] for _, c in group) + "#",
                sorted({c["StockCode"] for _, c in group}),
            )
            for sequence, cancel in group:
                matched[sequence] = _mark_one(dynamodb, table, cancel, lines)
        except Exception as exc:  # noqa: BLE001 - transient: report, the mapping retries (marks are idempotent)
            if not _is_transient(exc):
                raise
            failed.update(sequence for sequence, _ in group)
            for sequence, _ in group:
                matched.pop(sequence, None)
    return matched, failed


def _candidate_lines(
    dynamodb: Any, table: str, customer: str, before: str, stock_codes: list[str]
) -> list[dict[str, Any]]:
    """The customer's lines (not cancellations) with one of ``stock_codes`` and ``order_key < before``, newest
    first: only ``order_key``, ``stock_code`` and ``cancelled_by`` (a ConsistentRead Query, all pages)."""
    # DynamoDB's IN takes at most 100 operands: with more stock codes, filter them here instead
    codes = {f":s{i}": {"S": code} for i, code in enumerate(stock_codes)} if len(stock_codes) <= 99 else {}
    in_codes = f" AND stock_code IN ({', '.join(codes)})" if codes else ""
    kwargs: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "customer_id = :c AND order_key < :k",
        "FilterExpression": f"is_cancellation = :f{in_codes}",
        "ProjectionExpression": "order_key, stock_code, cancelled_by",
        "ExpressionAttributeValues": {":c": {"S": customer}, ":k": {"S": before}, ":f": {"BOOL": False}, **codes},
        "ScanIndexForward": False,
        "ConsistentRead": True,
    }
    lines: list[dict[str, Any]] = []
    while True:
        page = dynamodb.query(**kwargs)
        lines.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return lines
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _mark_one(dynamodb: Any, table: str, cancel: dict[str, Any], lines: list[dict[str, Any]]) -> bool:
    """Mark the newest unmarked line of ``lines`` (newest first) that ``cancel`` cancels; True when one is marked.
    ``lines`` is updated with the mark, so a later cancellation of the same batch does not claim the line again."""
    me = f"{cancel['InvoiceNo']}-{cancel['LineNo']}"
    before = cancel["InvoiceDate"] + "#"
    candidates = [c for c in lines if c["stock_code"]["S"] == cancel["StockCode"] and c["order_key"]["S"] < before]
    if any(c.get("cancelled_by", {}).get("S") == me for c in candidates):
        return True  # a replay: already marked by this cancellation
    for candidate in candidates:  # newest first
        if "cancelled_by" in candidate:
            continue
        try:
            dynamodb.update_item(
                TableName=table,
                Key={"customer_id": {"S": cancel["CustomerID"]}, "order_key": candidate["order_key"]},
                UpdateExpression="SET cancelled_by = :me, cancelled_quantity = :q, #st = :cancelled",
                ConditionExpression="attribute_exists(order_key) AND (attribute_not_exists(cancelled_by) "
                "OR cancelled_by = :me)",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={
                    ":me": {"S": me},
                    ":q": {"N": str(abs(cancel["Quantity"]))},
                    ":cancelled": {"S": "cancelled"},
                },
            )
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "response", {}).get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            candidate["cancelled_by"] = {"S": "?"}  # taken meanwhile (or gone): never try it again in this batch
            continue
        candidate["cancelled_by"] = {"S": me}
        return True
    return False


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
