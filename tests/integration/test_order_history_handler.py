"""The order_history Lambda handler: validation, idempotent writes, cancellations, guests, dead letters — against
the emulator's DynamoDB and SQS; and the handler file running standalone (as its Lambda zip) in a subprocess."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from io import BytesIO
from typing import Any

import pytest

from shoplake import config, local_services
from shoplake.lambdas import order_history
from shoplake.resources import find, table_keys


@pytest.fixture(scope="module")
def resources(local_stack):
    """A table and a dead-letter queue of this module's own (shaped like the stack's)."""
    dynamodb, sqs = config.client("dynamodb"), config.client("sqs")
    suffix = uuid.uuid4().hex[:8]
    table = config.resource_name(f"oh-{suffix}")
    dynamodb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST", **table_keys(find("dynamodb_table", "order_history").props)
    )
    queue = sqs.create_queue(QueueName=config.resource_name(f"ohdlq-{suffix}"))["QueueUrl"]
    yield table, queue
    dynamodb.delete_table(TableName=table)
    sqs.delete_queue(QueueUrl=queue)


def line(
    invoice: str, stock: str, qty: int, date: str, customer: str | None, line_no: int = 0, price: float = 2.55
) -> dict[str, Any]:
    return {
        "InvoiceNo": invoice,
        "StockCode": stock,
        "Description": f"ITEM {stock}",
        "Quantity": qty,
        "InvoiceDate": date,
        "UnitPrice": price,
        "CustomerID": customer,
        "Country": "United Kingdom",
        "LineNo": line_no,
    }


def kinesis_event(payloads: list[Any], first_seq: int = 1) -> dict[str, Any]:
    records = []
    for i, payload in enumerate(payloads):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        seq = str(first_seq + i)
        records.append(
            {
                "kinesis": {
                    "data": base64.b64encode(data).decode(),
                    "sequenceNumber": seq,
                    "partitionKey": "k",
                    "approximateArrivalTimestamp": 1.7e9,
                },
                "eventID": f"shardId-000000000000:{seq}",
                "eventSourceARN": "arn:aws:kinesis:x:1:stream/s",
            }
        )
    return {"Records": records}


def run(resources, payloads, first_seq=1):
    table, queue = resources
    return order_history.process(
        kinesis_event(payloads, first_seq), table, queue, config.client("dynamodb"), config.client("sqs")
    )


def items_of(table: str, customer: str) -> list[dict[str, Any]]:
    response = config.client("dynamodb").query(
        TableName=table,
        KeyConditionExpression="customer_id = :c",
        ExpressionAttributeValues={":c": {"S": customer}},
        ConsistentRead=True,
    )
    return response["Items"]


def drain_queue(queue: str) -> list[dict[str, Any]]:
    sqs = config.client("sqs")
    bodies = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


# --------------------------------------------------------------------------- pure validation


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"InvoiceNo": "1"}).encode(), "missing field"),
        (json.dumps(line("536365", "A", 0, "2011-01-01T10:00:00Z", "1")).encode(), "Quantity"),
        (json.dumps(line("536365", "A", 1, "2011-01-01 10:00", "1")).encode(), "InvoiceDate"),
        (json.dumps(line("536365", "A", 1, "2011-02-30T10:00:00Z", "1")).encode(), "not a real date"),
        (json.dumps(line("536365", "A", 1, "2011-01-01T10:00:00Z", "1", price=-5.0)).encode(), "UnitPrice"),
        (json.dumps(line("536365", "A#B", 1, "2011-01-01T10:00:00Z", "1")).encode(), "StockCode"),
        (json.dumps({**line("536365", "A", 1, "2011-01-01T10:00:00Z", "1"), "LineNo": -1}).encode(), "LineNo"),
    ],
)
def test_malformed_events_are_rejected_with_a_reason(payload, reason):
    with pytest.raises(order_history.Malformed, match=reason):
        order_history.parse_event(payload)


def test_item_is_typed_and_keyed_deterministically():
    event = order_history.parse_event(
        json.dumps(line("536365", "85123A", 6, "2010-12-01T08:26:00Z", "17850", line_no=3, price=2.55)).encode()
    )
    item = order_history.to_item(event)
    assert item["customer_id"] == {"S": "17850"}
    assert item["order_key"] == {"S": "2010-12-01T08:26:00Z#536365#85123A#0003"}
    assert item["line_amount"] == {"N": "15.30"} and item["unit_price"] == {"N": "2.55"}
    assert item["is_guest"] == {"BOOL": False} and item["is_cancellation"] == {"BOOL": False}
    guest = order_history.to_item(
        order_history.parse_event(json.dumps(line("536366", "22633", 1, "2010-12-01T08:28:00Z", None)).encode())
    )
    assert guest["customer_id"] == {"S": "guest-536366"} and guest["is_guest"] == {"BOOL": True}
    # the content hash covers every other attribute: any change of content changes it
    assert item["content_sha256"] == {"S": order_history.content_hash(item)}
    changed = {**item, "quantity": {"N": "7"}}
    assert order_history.content_hash(changed) != item["content_sha256"]["S"]
    assert order_history.content_hash({**item, "content_sha256": {"S": "x"}}) == item["content_sha256"]["S"]
    # its definition, which stored tables are reconciled against: SHA-256 of the sorted, compact JSON of the rest
    odd = {
        **dict(reversed(item.items())),
        "description": {"S": 'caf\u00e9 "\u2603" \\ tab\t'},
        "is_guest": {"BOOL": True},
    }
    for value in (item, guest, odd):
        rest = {k: v for k, v in value.items() if k != "content_sha256"}
        canonical = json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()
        assert order_history.content_hash(value) == hashlib.sha256(canonical).hexdigest()


def test_the_hash_to_item_writes_out_is_the_definition_on_awkward_events():
    """to_item builds the canonical JSON of its attributes itself (faster than encoding the dict): it must be
    content_hash's on every kind of value — escapes, non-ASCII, control characters, guests, cancellations, cents."""
    texts = ['caf\u00e9 "\u2603" \\ tab\t', "line\nbreak \u0001 \u007f", "\U0001f600 emoji", "plain", ""]
    events = [
        line(
            f"{prefix}5363{n}",
            code,
            qty if not prefix else -qty,
            "2010-12-01T08:26:00Z",
            customer,
            line_no=n,
            price=price,
        )
        for n, (prefix, code, qty, customer, price) in enumerate(
            [
                ("", "85123A", 6, "17850", 2.55),
                ("C", "22633", 1, None, 0.005),
                ("", 'q"uote', 999_999_999, "cust\\omer", 1e9),
                ("C", "\u00e9t\u00e9", 3, "17850", 0),
                ("", "POST", 1, None, 123456.785),
            ]
        )
    ]
    for n, raw in enumerate(events):
        raw["Description"], raw["Country"] = texts[n % len(texts)], texts[(n + 1) % len(texts)] or "UK"
        item = order_history.to_item(order_history.parse_event(json.dumps(raw).encode()))
        assert item["content_sha256"] == {"S": order_history.content_hash(item)}, raw
        assert list(item)[-1] == "content_sha256" and len(item) == 16


# --------------------------------------------------------------------------- against the emulator


def test_poison_record_mid_batch_goes_to_the_dlq_and_the_others_are_written(resources):
    table, queue = resources
    customer = uuid.uuid4().hex[:10]
    payloads = [line("600001", f"S{i}", 1, "2011-01-01T10:00:00Z", customer, line_no=i) for i in range(5)]
    poison = b'{"InvoiceNo": "600001", "StockCode": "BAD"'
    response = run(resources, payloads[:2] + [poison] + payloads[2:])
    assert response["batchItemFailures"] == []
    assert response["counts"]["written"] == 5 and response["counts"]["dead_lettered"] == 1
    assert len(items_of(table, customer)) == 5
    dead = drain_queue(queue)
    assert len(dead) == 1
    assert dead[0]["reason"].startswith("not JSON")
    assert base64.b64decode(dead[0]["data_base64"]) == poison
    assert dead[0]["source"]["sequence_number"] == "3" and dead[0]["source"]["shard_id"] == "shardId-000000000000"


def test_replaying_a_batch_leaves_the_table_unchanged(resources):
    table, _ = resources
    customer = uuid.uuid4().hex[:10]
    payloads = [line("600100", f"S{i}", i + 1, "2011-01-02T10:00:00Z", customer, line_no=i) for i in range(30)]
    run(resources, payloads)
    before = sorted(items_of(table, customer), key=lambda i: i["order_key"]["S"])
    run(resources, payloads)
    run(resources, payloads[10:20] + payloads[:5])
    after = sorted(items_of(table, customer), key=lambda i: i["order_key"]["S"])
    assert after == before and len(after) == 30


def test_cancellation_is_stored_and_marks_the_newest_matching_line_once(resources):
    table, _ = resources
    customer = uuid.uuid4().hex[:10]
    older = line("600200", "CUP", 4, "2011-01-03T09:00:00Z", customer)
    newer = line("600201", "CUP", 2, "2011-01-04T09:00:00Z", customer)
    other = line("600201", "PLATE", 2, "2011-01-04T09:00:00Z", customer, line_no=1)
    cancel = line("C600300", "CUP", -2, "2011-01-05T09:00:00Z", customer)
    second_cancel = line("C600301", "CUP", -4, "2011-01-06T09:00:00Z", customer)
    orphan = line("C600302", "BOWL", -1, "2011-01-06T09:00:00Z", customer)
    response = run(resources, [older, newer, other, cancel, second_cancel, orphan])
    counts = response["counts"]
    assert (counts["cancellations"], counts["cancellations_matched"], counts["cancellations_unmatched"]) == (3, 2, 1)
    items = {i["event_id"]["S"]: i for i in items_of(table, customer)}
    assert len(items) == 6
    assert items["600201-0"]["cancelled_by"] == {"S": "C600300-0"} and items["600201-0"]["status"] == {"S": "cancelled"}
    assert items["600200-0"]["cancelled_by"] == {"S": "C600301-0"}
    assert "cancelled_by" not in items["600201-1"]
    assert items["C600300-0"]["quantity"] == {"N": "-2"} and items["C600300-0"]["is_cancellation"] == {"BOOL": True}
    before = sorted(items_of(table, customer), key=lambda i: i["order_key"]["S"])
    # replaying everything, or only the cancellations, keeps the same marks
    run(resources, [older, newer, other, cancel, second_cancel, orphan])
    run(resources, [second_cancel, cancel])
    assert sorted(items_of(table, customer), key=lambda i: i["order_key"]["S"]) == before


def test_guest_lines_get_their_own_partition_and_are_counted(resources):
    table, _ = resources
    invoice = "7" + uuid.uuid4().hex[:6]
    response = run(
        resources,
        [
            line(invoice, "A", 1, "2011-01-07T10:00:00Z", None),
            line(invoice, "B", 1, "2011-01-07T10:00:00Z", None, line_no=1),
        ],
    )
    assert response["counts"]["guest_lines"] == 2
    assert len(items_of(table, f"guest-{invoice}")) == 2


class PartlyThrottled:
    """The emulator's DynamoDB, except that BatchWriteItem accepts only the first ``accept`` items of each call and
    returns the others as UnprocessedItems (what DynamoDB does under throttling; moto never does)."""

    def __init__(self, table: str, accept: int) -> None:
        self.real, self.table, self.accept = config.client("dynamodb"), table, accept

    def batch_write_item(self, RequestItems):  # noqa: N803
        requests = RequestItems[self.table]
        if self.accept:
            self.real.batch_write_item(RequestItems={self.table: requests[: self.accept]})
        rest = requests[self.accept :]
        return {"UnprocessedItems": {self.table: rest} if rest else {}}

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_unprocessed_items_are_retried_then_reported_as_batch_item_failures(resources, monkeypatch):
    table, queue = resources
    monkeypatch.setattr(order_history.time, "sleep", lambda _s: None)
    customer = uuid.uuid4().hex[:10]
    payloads = [line("600400", f"S{i}", 1, "2011-01-08T10:00:00Z", customer, line_no=i) for i in range(3)]
    # one item per attempt: the handler's own retries get all three in
    response = order_history.process(
        kinesis_event(payloads, 10), table, queue, PartlyThrottled(table, 1), config.client("sqs")
    )
    assert response["batchItemFailures"] == [] and len(items_of(table, customer)) == 3
    # nothing ever accepted: every record is reported for the mapping to retry, none counted written
    customer2 = uuid.uuid4().hex[:10]
    payloads2 = [line("600401", f"S{i}", 1, "2011-01-08T10:00:00Z", customer2, line_no=i) for i in range(3)]
    response = order_history.process(
        kinesis_event(payloads2, 20), table, queue, PartlyThrottled(table, 0), config.client("sqs")
    )
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == ["20", "21", "22"]
    assert response["counts"]["written"] == 0 and items_of(table, customer2) == []


# --------------------------------------------------------------------------- standalone, as the Lambda zip


def test_handler_runs_standalone_from_its_lambda_zip(resources, tmp_path):
    """The deployed bundle is the handler plus the order-event rules: it runs from the unpacked zip alone and loads
    no other shoplake module (no pandas, no config)."""
    from shoplake import infra

    table, queue = resources
    with zipfile.ZipFile(BytesIO(infra.lambda_package(infra.find("lambda_function", "order-history")))) as archive:
        assert sorted(archive.namelist()) == [
            "shoplake/__init__.py",
            "shoplake/errors.py",
            "shoplake/events.py",
            "shoplake/lambdas/__init__.py",
            "shoplake/lambdas/_aws.py",
            "shoplake/lambdas/order_history.py",
        ]
        archive.extractall(tmp_path)
    customer = uuid.uuid4().hex[:10]
    event = kinesis_event([line("600500", "Z", 1, "2011-01-09T10:00:00Z", customer), b"garbage"])
    script = (
        "import json, sys\n"
        "from shoplake.lambdas import order_history\n"
        "out = order_history.handler(json.loads(sys.stdin.read()), None)\n"
        "loaded = {m: getattr(sys.modules[m], '__file__', '') for m in sys.modules if m.split('.')[0] == 'shoplake'}\n"
        f"assert all(f.startswith({str(tmp_path)!r}) for f in loaded.values()), loaded\n"
        "allowed = {'shoplake', 'shoplake.errors', 'shoplake.events', 'shoplake.lambdas', "
        "'shoplake.lambdas._aws', 'shoplake.lambdas.order_history'}\n"
        "assert set(loaded) <= allowed, sorted(set(loaded) - allowed)\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SHOPLAKE_", "PYTHONPATH"))}
    env.update(
        TABLE_NAME=table,
        DEAD_LETTER_QUEUE_URL=queue,
        AWS_ENDPOINT_URL=local_services.moto_url(),
        # DynamoDB has an emulator process of its own: botocore's per-service endpoint setting reaches it
        AWS_ENDPOINT_URL_DYNAMODB=local_services.service_url("dynamodb"),
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1])["counts"]
    assert counts["written"] == 1 and counts["dead_lettered"] == 1
    assert len(items_of(table, customer)) == 1
    drain_queue(queue)


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB"])
def test_handler_refuses_a_non_loopback_endpoint(tmp_path, variable):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SHOPLAKE_"))}
    env.update(
        {
            "TABLE_NAME": "t",
            "DEAD_LETTER_QUEUE_URL": "q",
            variable: "http://example.com:4566",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    source = os.path.dirname(order_history.__file__)
    done = subprocess.run(
        [sys.executable, "-c", "import order_history; order_history.handler({'Records': []})"],
        capture_output=True,
        text=True,
        cwd=source,
        env=env,
        timeout=60,
    )
    assert done.returncode != 0 and f"{variable}=http://example.com:4566 is not a loopback address" in done.stderr


def test_a_huge_malformed_record_is_dead_lettered_truncated_with_its_hash(resources):
    """A 900 KB malformed record (Kinesis takes up to 1 MiB) would not fit in one SQS message (256 KiB): the dead
    letter embeds a prefix, the full length and the SHA-256; the rest of the batch is written."""
    import hashlib

    table, queue = resources
    customer = uuid.uuid4().hex[:10]
    huge = b'{"InvoiceNo": "6000X", "Description": "' + b"\x01\x02 control-heavy text " * 40_000
    payloads = [line("600900", "S1", 1, "2011-01-05T10:00:00Z", customer), huge]
    response = run(resources, payloads)
    assert response["batchItemFailures"] == [] and response["counts"]["dead_lettered"] == 1
    assert len(items_of(table, customer)) == 1
    dead = drain_queue(queue)
    assert len(dead) == 1 and dead[0]["reason"].startswith("not JSON")
    assert len(json.dumps(dead[0])) < 256 * 1024
    assert dead[0]["truncated"] and dead[0]["data_length"] == len(huge)
    assert dead[0]["data_sha256"] == hashlib.sha256(huge).hexdigest()
    embedded = base64.b64decode(dead[0]["data_base64"])
    assert 0 < len(embedded) < len(huge) and huge.startswith(embedded)


def test_a_small_malformed_record_is_embedded_whole():
    body = json.loads(order_history.dead_letter_body({"eventID": "shardId-1:5"}, b'{"x": 1', "not JSON: cut"))
    assert base64.b64decode(body["data_base64"]) == b'{"x": 1' and body["data_text"] == '{"x": 1'
    assert not body["truncated"] and body["data_length"] == 7 and body["source"]["shard_id"] == "shardId-1"


def reference_marks(batch: list[dict[str, Any]]) -> dict[str, str]:
    """The module docstring's rule, one cancellation at a time: line event id → the cancellation marking it."""
    marks: dict[str, str] = {}
    for cancel in (e for e in batch if e["InvoiceNo"].startswith("C")):
        candidates = sorted(
            (
                e
                for e in batch
                if e["CustomerID"] == cancel["CustomerID"]
                and not e["InvoiceNo"].startswith("C")
                and e["StockCode"] == cancel["StockCode"]
                and order_history.order_key(e) < cancel["InvoiceDate"] + "#"
            ),
            key=order_history.order_key,
            reverse=True,
        )
        for e in candidates:
            if f"{e['InvoiceNo']}-{e['LineNo']}" not in marks:
                marks[f"{e['InvoiceNo']}-{e['LineNo']}"] = f"{cancel['InvoiceNo']}-{cancel['LineNo']}"
                break
    return marks


def test_cancellation_look_ups_are_one_query_per_customer_per_batch(resources):
    """issue 13: a batch with many cancellations of few customers queries each customer once and marks the same
    lines as one query per cancellation did; the marks go into the batch's puts (no request per cancellation), and
    original lines the queries covered need no other read."""
    table, queue = resources
    tag = uuid.uuid4().hex[:6]
    customers = [f"q-{tag}-{i}" for i in range(3)]
    originals = [
        line(f"61{c}{d}", f"P{d % 4}", 3, f"2011-02-0{1 + d % 5}T10:00:00Z", customers[c], line_no=d)
        for c in range(3)
        for d in range(12)
    ]
    cancels = [
        line(f"C62{c}{d}", f"P{d % 4}", -1, "2011-03-01T10:00:00Z", customers[c], line_no=d)
        for c in range(3)
        for d in range(6)
    ]
    dynamodb = Counting()
    response = order_history.process(kinesis_event(originals + cancels), table, queue, dynamodb, config.client("sqs"))
    counts = response["counts"]
    assert counts["cancellations"] == 18 and counts["cancellations_matched"] == 18
    queries = dynamodb.calls["query"]
    assert len(queries) == 3 and {c["ExpressionAttributeValues"][":c"]["S"] for c in queries} == set(customers)
    assert dynamodb.operations() == {"query": 3, "batch_write_item": 3}  # 54 items, 25 per call
    marked = {
        i["event_id"]["S"]: i["cancelled_by"]["S"] for c in customers for i in items_of(table, c) if "cancelled_by" in i
    }
    assert marked == reference_marks(originals + cancels) and len(marked) == 18
    # a replay in one batch marks nothing new
    again = order_history.process(kinesis_event(originals + cancels), table, queue, Counting(), config.client("sqs"))
    assert again["counts"]["cancellations_matched"] == 18


class Counting:
    """The emulator's DynamoDB client, recording every call by operation."""

    def __init__(self) -> None:
        self.real = config.client("dynamodb")
        self.calls: dict[str, list[dict[str, Any]]] = {}

    def __getattr__(self, name):
        method = getattr(self.real, name)

        def call(**kwargs):
            self.calls.setdefault(name, []).append(kwargs)
            return method(**kwargs)

        return call

    def operations(self) -> dict[str, int]:
        return {name: len(calls) for name, calls in self.calls.items()}


def test_more_stock_codes_than_dynamodbs_in_operator_takes(resources):
    table, queue = resources
    customer = f"wide-{uuid.uuid4().hex[:6]}"
    originals = [line(f"63{d:03d}", f"W{d}", 1, "2011-02-01T10:00:00Z", customer, line_no=d) for d in range(120)]
    cancels = [line(f"C64{d:03d}", f"W{d}", -1, "2011-03-01T10:00:00Z", customer, line_no=d) for d in range(120)]
    response = run(resources, originals + cancels)
    assert response["counts"]["cancellations_matched"] == 120 and not response["batchItemFailures"]
    marked = {i["event_id"]["S"]: i["cancelled_by"]["S"] for i in items_of(table, customer) if "cancelled_by" in i}
    assert marked == {f"63{d:03d}-{d}": f"C64{d:03d}-{d}" for d in range(120)}


def table_of(table: str, customers: list[str]) -> list[dict[str, Any]]:
    return sorted(
        (i for c in customers for i in items_of(table, c)), key=lambda i: (i["customer_id"]["S"], i["order_key"]["S"])
    )


def replay_stream(tag: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Three customers' order lines and cancellations in stream order (by date): cancellations of lines in earlier
    batches, of lines in the same batch, two of one product (two marks), and one with nothing left to mark."""
    customers = [f"r-{tag}-{c}" for c in range(3)]
    stream: list[dict[str, Any]] = []
    for day in range(1, 9):
        for c, customer in enumerate(customers):
            date = f"2011-04-{day:02d}T1{c}:00:00Z"
            if day % 3 == 0:  # cancel two products bought earlier (one of them twice over the days)
                stream.append(line(f"C7{c}{day}", f"P{day % 2}", -1, date, customer))
                stream.append(line(f"C7{c}{day}", f"P{(day + c) % 4}", -2, date, customer, line_no=1))
            else:
                stream.extend(line(f"6{c}{day}", f"P{n}", 2, date, customer, line_no=n) for n in range(4))
    stream.append(line("C79999", "NEVER", -1, "2011-04-30T10:00:00Z", customers[0]))  # nothing to mark
    return stream, customers


def test_replaying_any_subset_in_any_order_keeps_the_cancellation_marks(resources):
    """issue 16 #5: re-putting an original line must not drop the mark a cancellation put on it: replays of any
    subset of the stream, in any order and any batching, leave the table exactly as the full run did."""
    import random

    table, _ = resources
    stream, customers = replay_stream(uuid.uuid4().hex[:6])
    for start in range(0, len(stream), 7):  # the full run, in batches as the mapping cuts them
        run(resources, stream[start : start + 7], first_seq=start + 1)
    full = table_of(table, customers)
    marks = {i["event_id"]["S"]: i["cancelled_by"]["S"] for i in full if "cancelled_by" in i}
    assert marks == reference_marks(stream) and len(marks) >= 10
    assert len(full) == len(stream)
    # the probe's case: the first half again (originals re-put, most of their cancellations not replayed)
    run(resources, stream[: len(stream) // 2])
    assert table_of(table, customers) == full
    # only original lines, one batch each
    for event in (e for e in stream if not e["InvoiceNo"].startswith("C")):
        run(resources, [event])
    assert table_of(table, customers) == full
    rng = random.Random(16)
    for _trial in range(8):
        subset = rng.sample(stream, rng.randint(1, len(stream)))  # any subset, in any order
        size = rng.choice([1, 3, 10, 100])
        for start in range(0, len(subset), size):
            response = run(resources, subset[start : start + size])
            assert response["batchItemFailures"] == []
        assert table_of(table, customers) == full


def test_requests_per_batch_do_not_grow_with_cancellations(resources):
    """issue 13: a batch of new lines whose cancellations mark lines of earlier batches costs one Query per customer,
    one BatchGetItem for the batch's original lines (their marks) and the BatchWriteItem puts — no request per
    cancellation."""
    table, queue = resources
    tag = uuid.uuid4().hex[:6]
    customers = [f"n-{tag}-{c}" for c in range(2)]
    earlier = [
        line(f"65{c}{d}", f"K{d}", 2, "2011-05-01T10:00:00Z", customers[c], line_no=d)
        for c in range(2)
        for d in range(5)
    ]
    run(resources, earlier)
    batch = [
        line(f"66{c}{d}", f"N{d}", 1, "2011-05-02T10:00:00Z", customers[c], line_no=d)
        for c in range(2)
        for d in range(40)
    ]
    batch += [
        line(f"C67{c}", f"K{d}", -1, "2011-05-03T10:00:00Z", customers[c], line_no=d)
        for c in range(2)
        for d in range(5)
    ]
    dynamodb = Counting()
    response = order_history.process(kinesis_event(batch), table, queue, dynamodb, config.client("sqs"))
    assert response["counts"]["cancellations_matched"] == 10 and response["batchItemFailures"] == []
    # 90 items + 10 earlier lines re-put with their marks = 100 puts, 25 per call
    assert dynamodb.operations() == {"query": 2, "batch_get_item": 1, "batch_write_item": 4}
    assert len(dynamodb.calls["batch_get_item"][0]["RequestItems"][table]["Keys"]) == 80
    marked = {
        i["event_id"]["S"]: i["cancelled_by"]["S"] for c in customers for i in items_of(table, c) if "cancelled_by" in i
    }
    assert marked == {f"65{c}{d}-{d}": f"C67{c}-{d}" for c in range(2) for d in range(5)}


class UnprocessedReads:
    """The emulator's DynamoDB, except that BatchGetItem answers only the first ``accept`` keys of each call and
    returns the others as UnprocessedKeys (DynamoDB does so under throttling or past 16 MB; moto never does)."""

    def __init__(self, table: str, accept: int) -> None:
        self.real, self.table, self.accept = config.client("dynamodb"), table, accept
        self.gets = 0

    def batch_get_item(self, RequestItems):  # noqa: N803
        self.gets += 1
        request = RequestItems[self.table]
        keys, rest = request["Keys"][: self.accept], request["Keys"][self.accept :]
        response = {"Responses": {self.table: []}}
        if keys:
            response = self.real.batch_get_item(RequestItems={self.table: {**request, "Keys": keys}})
        response["UnprocessedKeys"] = {self.table: {**request, "Keys": rest}} if rest else {}
        return response

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_unprocessed_keys_are_retried_and_never_lose_a_mark(resources, monkeypatch):
    """BatchGetItem's UnprocessedKeys are read again (with backoff); when some stay unprocessed, nothing is written
    (a put without the mark it carries would un-cancel the line) and the batch is reported for the mapping to retry."""
    table, queue = resources
    monkeypatch.setattr(order_history.time, "sleep", lambda _s: None)
    customer = f"u-{uuid.uuid4().hex[:6]}"
    originals = [line(f"68{d}", f"U{d}", 2, "2011-06-01T10:00:00Z", customer, line_no=d) for d in range(6)]
    cancels = [line("C689", f"U{d}", -1, "2011-06-02T10:00:00Z", customer, line_no=d) for d in range(6)]
    run(resources, originals + cancels)
    full = items_of(table, customer)
    assert sum("cancelled_by" in i for i in full) == 6
    # two keys per attempt: the handler's own retries read all six marks back, the replay keeps them
    reads = UnprocessedReads(table, 2)
    response = order_history.process(kinesis_event(originals, 30), table, queue, reads, config.client("sqs"))
    assert response["batchItemFailures"] == [] and reads.gets == 3 and items_of(table, customer) == full
    # nothing ever read: every record reported, nothing written over the marks
    response = order_history.process(
        kinesis_event(originals, 40), table, queue, UnprocessedReads(table, 0), config.client("sqs")
    )
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [str(40 + i) for i in range(6)]
    assert response["counts"]["written"] == 0 and items_of(table, customer) == full


def test_a_mark_not_written_reports_its_cancellation(resources, monkeypatch):
    """The put carrying a new mark stays unprocessed: the cancellation is reported too (the mapping retries from
    the first failed record, so the mark is decided again), never counted matched."""
    table, queue = resources
    monkeypatch.setattr(order_history.time, "sleep", lambda _s: None)
    customer = f"m-{uuid.uuid4().hex[:6]}"
    original = line("690", "M1", 2, "2011-07-01T10:00:00Z", customer)
    run(resources, [original])
    cancel = line("C691", "M1", -2, "2011-07-02T10:00:00Z", customer)

    class MarksUnprocessed(PartlyThrottled):
        def batch_write_item(self, RequestItems):  # noqa: N803
            requests = RequestItems[self.table]
            keep = [r for r in requests if "cancelled_by" not in r["PutRequest"]["Item"]]
            if keep:
                self.real.batch_write_item(RequestItems={self.table: keep})
            rest = [r for r in requests if r not in keep]
            return {"UnprocessedItems": {self.table: rest} if rest else {}}

    response = order_history.process(
        kinesis_event([cancel], 50), table, queue, MarksUnprocessed(table, 0), config.client("sqs")
    )
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == ["50"]
    assert response["counts"]["cancellations_matched"] == 0
    assert not any("cancelled_by" in i for i in items_of(table, customer))
    response = run(resources, [cancel], first_seq=50)  # the mapping's retry
    assert response["counts"]["cancellations_matched"] == 1
    assert {i["event_id"]["S"]: i.get("cancelled_by", {}).get("S") for i in items_of(table, customer)} == {
        "690-0": "C691-0",
        "C691-0": None,
    }


def test_a_cancellation_before_its_original_line(resources):
    """What the design supports (module docstring): within one batch every line is visible to every cancellation,
    whatever their order; a cancellation handled in an earlier batch than its original (which the stream never does:
    one customer's events share a shard, in date order) stays unmatched and the line arrives unmarked."""
    table, _ = resources
    customer = f"b-{uuid.uuid4().hex[:6]}"
    original = line("69500", "B1", 2, "2011-08-01T10:00:00Z", customer)
    cancel = line("C69501", "B1", -2, "2011-08-02T10:00:00Z", customer)
    assert run(resources, [cancel, original])["counts"]["cancellations_matched"] == 1
    assert {i["event_id"]["S"]: i.get("cancelled_by", {}).get("S") for i in items_of(table, customer)} == {
        "69500-0": "C69501-0",
        "C69501-0": None,
    }
    late = f"b-{uuid.uuid4().hex[:6]}"
    assert run(resources, [{**cancel, "CustomerID": late}])["counts"]["cancellations_unmatched"] == 1
    run(resources, [{**original, "CustomerID": late}])
    assert not any("cancelled_by" in i for i in items_of(table, late))


class InFlight:
    """The emulator's DynamoDB client, noting how many of its calls were running at once (the most seen)."""

    def __init__(self) -> None:
        import threading

        self.real, self.lock = config.client("dynamodb"), threading.Lock()
        self.running = self.most = 0
        self.calls: list[tuple[str, float, float]] = []  # (operation, started, ended)

    def __getattr__(self, name):
        method = getattr(self.real, name)

        def call(**kwargs):
            with self.lock:
                self.running += 1
                self.most = max(self.most, self.running)
            started = time.monotonic()
            try:
                time.sleep(0.05)  # long enough for the others to start, if they are sent at once
                return method(**kwargs)
            finally:
                with self.lock:
                    self.running -= 1
                    self.calls.append((name, started, time.monotonic()))

        return call


def test_a_batchs_requests_are_in_flight_together_and_the_result_is_the_same(resources):
    """issue 13: a batch's BatchWriteItem chunks (and, before them, its Queries and BatchGetItem chunks together) go
    out up to CONCURRENCY at a time instead of one after another; the table ends the same, replays included."""
    table, queue = resources
    customers = [f"p{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    originals = [
        line(f"64{i:03d}", f"P{n}", 3, f"2011-03-0{1 + n % 3}T10:00:00Z", c, line_no=n)
        for i, c in enumerate(customers)
        for n in range(20)
    ]
    cancels = [line(f"C65{i:03d}", "P1", -3, "2011-03-09T10:00:00Z", c) for i, c in enumerate(customers)]
    dynamodb = InFlight()
    response = order_history.process(kinesis_event(originals + cancels), table, queue, dynamodb, config.client("sqs"))
    assert response["batchItemFailures"] == []
    assert response["counts"]["written"] == 126 and response["counts"]["cancellations_matched"] == 6
    assert 1 < dynamodb.most <= order_history.CONCURRENCY
    # the reads are one wave: a BatchGetItem starts before the last Query ends; every write starts after every read
    reads = [c for c in dynamodb.calls if c[0] in ("query", "batch_get_item")]
    assert {c[0] for c in reads} == {"query", "batch_get_item"}
    assert min(c[1] for c in reads if c[0] == "batch_get_item") < max(c[2] for c in reads if c[0] == "query")
    assert min(c[1] for c in dynamodb.calls if c[0] == "batch_write_item") >= max(c[2] for c in reads)
    marked = {c: [i["event_id"]["S"] for i in items_of(table, c) if "cancelled_by" in i] for c in customers}
    assert marked == {c: [f"64{i:03d}-1"] for i, c in enumerate(customers)}
    # a replay of the whole batch, concurrent again, leaves the table as it is
    before = {c: sorted(map(json.dumps, items_of(table, c))) for c in customers}
    again = order_history.process(kinesis_event(originals + cancels), table, queue, InFlight(), config.client("sqs"))
    assert again["batchItemFailures"] == [] and again["counts"]["cancellations_matched"] == 6
    assert {c: sorted(map(json.dumps, items_of(table, c))) for c in customers} == before


def test_each_invoking_thread_has_its_own_pool():
    """issue 13: on Lambda each container runs one invocation at a time with its own pool; locally each shard's
    poller plays a container, so two pollers' batches do not share (and halve) one pool of CONCURRENCY threads."""
    import threading

    pools: dict[str, object] = {}

    def batch(poller: str) -> None:
        assert order_history._each(lambda n: n * 2, [1, 2, 3]) == [2, 4, 6]
        pools[poller] = order_history._POOLS.pool  # kept: the two pools are alive together

    pollers = [threading.Thread(target=batch, args=(f"p{i}",)) for i in range(2)]
    for t in pollers:
        t.start()
    for t in pollers:
        t.join(10)
    assert pools["p0"] is not pools["p1"]
    assert pools["p0"]._max_workers == pools["p1"]._max_workers == order_history.CONCURRENCY
