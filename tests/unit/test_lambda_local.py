"""shoplake.lambda_local: Kinesis event-source-mapping semantics against the emulator (checkpoints, retries,
bisect on error, partial batch responses, on-failure destination), with the real order_history handler."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from typing import Any

import pytest

from shoplake import config, lambda_local, streams
from shoplake.functions import order_history


@pytest.fixture(scope="module")
def tables(local_stack):
    """An order-history table, a checkpoints table, a DLQ and an on-failure queue of this module's own."""
    dynamodb, sqs = config.client("dynamodb"), config.client("sqs")
    suffix = uuid.uuid4().hex[:8]
    names = {"table": config.resource_name(f"ll-oh-{suffix}"), "checkpoints": config.resource_name(f"ll-cp-{suffix}")}
    for name, (hash_key, range_key) in (
        (names["table"], ("customer_id", "order_key")),
        (names["checkpoints"], ("consumer", "shard_id")),
    ):
        dynamodb.create_table(
            TableName=name,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[
                {"AttributeName": hash_key, "AttributeType": "S"},
                {"AttributeName": range_key, "AttributeType": "S"},
            ],
            KeySchema=[
                {"AttributeName": hash_key, "KeyType": "HASH"},
                {"AttributeName": range_key, "KeyType": "RANGE"},
            ],
        )
    names["dlq"] = sqs.create_queue(QueueName=config.resource_name(f"ll-dlq-{suffix}"))["QueueUrl"]
    names["on_failure"] = sqs.create_queue(QueueName=config.resource_name(f"ll-of-{suffix}"))["QueueUrl"]
    yield names
    dynamodb.delete_table(TableName=names["table"])
    dynamodb.delete_table(TableName=names["checkpoints"])
    sqs.delete_queue(QueueUrl=names["dlq"])
    sqs.delete_queue(QueueUrl=names["on_failure"])


@pytest.fixture
def stream(local_stack):
    kinesis = config.client("kinesis")
    name = config.resource_name(f"ll-{uuid.uuid4().hex[:8]}")
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
    yield name
    kinesis.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


def events(n: int, customers: int = 7, tag: str | None = None) -> list[dict[str, Any]]:
    tag = tag or uuid.uuid4().hex[:6]
    return [
        {
            "InvoiceNo": f"{700000 + i // 3}",
            "StockCode": f"S{i % 3}",
            "Description": "THING",
            "Quantity": 1 + i % 5,
            "InvoiceDate": f"2011-02-{1 + i // 100:02d}T10:{(i // 3) % 60:02d}:00Z",
            "UnitPrice": 1.25,
            "CustomerID": f"{tag}-{(i // 3) % customers}",
            "Country": "France",
            "LineNo": i % 3,
        }
        for i in range(n)
    ]


def settings(stream: str, tables: dict[str, str], **overrides: Any) -> lambda_local.MappingSettings:
    base = dict(
        stream=stream,
        batch_size=25,
        batching_window_seconds=0.0,
        bisect_on_error=True,
        max_retry_attempts=2,
        report_batch_item_failures=True,
        on_failure=tables["on_failure"],
        retry_delay_seconds=0.001,
        poll_interval_seconds=0.05,
    )
    base.update(overrides)
    return lambda_local.MappingSettings(**base)


def bound_handler(tables: dict[str, str]):
    dynamodb, sqs = config.client("dynamodb"), config.client("sqs")

    def handle(event, context=None):
        return order_history.process(event, tables["table"], tables["dlq"], dynamodb, sqs)

    return handle


def mapping(handler, stream, tables, consumer=None, **overrides) -> lambda_local.EventSourceMapping:
    return lambda_local.EventSourceMapping(
        handler,
        settings(stream, tables, **overrides),
        consumer=consumer or f"c-{uuid.uuid4().hex[:6]}",
        checkpoint_table=tables["checkpoints"],
    )


def table_event_ids(tables: dict[str, str], tag: str) -> Counter[str]:
    pages = (
        config.client("dynamodb")
        .get_paginator("scan")
        .paginate(
            TableName=tables["table"],
            ConsistentRead=True,
            FilterExpression="begins_with(customer_id, :t)",
            ExpressionAttributeValues={":t": {"S": tag}},
        )
    )
    return Counter(i["event_id"]["S"] for page in pages for i in page["Items"])


def queue_bodies(url: str) -> list[dict[str, Any]]:
    sqs = config.client("sqs")
    out = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return out
        for message in messages:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def expected_ids(batch: list[dict[str, Any]]) -> set[str]:
    return {f"{e['InvoiceNo']}-{e['LineNo']}" for e in batch}


def test_mapping_settings_come_from_stack_yaml(local_stack, tables, monkeypatch):
    from shoplake import infra

    monkeypatch.setattr(infra, "resolve", lambda ref: f"resolved:{ref}")
    s = lambda_local.mapping_settings("orders-to-order-history")
    assert (s.stream, s.batch_size, s.batching_window_seconds, s.bisect_on_error, s.max_retry_attempts) == (
        "orders",
        100,
        1.0,
        True,
        3,
    )
    assert s.report_batch_item_failures and s.on_failure == "resolved:queue_url:order-history-dlq"
    with pytest.raises(lambda_local.MappingError, match="batch_size"):
        lambda_local.MappingSettings(batch_size=0)


def test_poison_record_mid_batch_is_dead_lettered_and_the_rest_written(stream, tables):
    tag = uuid.uuid4().hex[:6]
    batch = events(40, tag=tag)
    streams.put_records(stream, batch[:20] + [b"\x00 poison \xff"] + batch[20:], partition_key=lambda _r: "one-shard")
    stats = mapping(bound_handler(tables), stream, tables).run_until_caught_up(timeout=60)
    assert stats.records_done == 41 and stats.function_errors == 0 and stats.records_to_on_failure == 0
    ids = table_event_ids(tables, tag)
    assert set(ids) == expected_ids(batch) and set(ids.values()) == {1}
    dead = queue_bodies(tables["dlq"])
    assert len(dead) == 1 and dead[0]["reason"].startswith("not JSON") and dead[0]["data_text"] is None


def test_crash_injected_once_mid_batch_is_retried_without_loss_or_duplicates(stream, tables):
    tag = uuid.uuid4().hex[:6]
    batch = events(120, tag=tag)
    streams.put_records(stream, batch)
    real = bound_handler(tables)
    crashed = threading.Event()
    sizes: list[int] = []

    def crash_once(event, context=None):
        sizes.append(len(event["Records"]))
        if len(sizes) == 3 and not crashed.is_set():  # mid-stream: write half the batch, then die
            crashed.set()
            real({"Records": event["Records"][: len(event["Records"]) // 2]}, context)
            raise RuntimeError("injected crash after a partial write")
        return real(event, context)

    stats = mapping(crash_once, stream, tables).run_until_caught_up(timeout=60)
    assert crashed.is_set() and stats.function_errors == 1 and stats.retries + stats.bisections >= 1
    assert stats.records_done == 120 and stats.records_to_on_failure == 0
    ids = table_event_ids(tables, tag)
    assert set(ids) == expected_ids(batch) and set(ids.values()) == {1}
    assert max(sizes) <= 25


def test_persistent_crash_is_bisected_down_to_the_record_then_sent_on_failure(stream, tables):
    tag = uuid.uuid4().hex[:6]
    batch = events(25, tag=tag)
    killer = batch[13]

    real = bound_handler(tables)

    def crash_on_killer(event, context=None):
        for record in event["Records"]:
            data = json.loads(__import__("base64").b64decode(record["kinesis"]["data"]))
            if data == killer:
                raise ValueError("this record always crashes the function")
        return real(event, context)

    streams.put_records(stream, batch, partition_key=lambda _r: "one-shard")
    stats = mapping(crash_on_killer, stream, tables).run_until_caught_up(timeout=60)
    assert stats.bisections >= 2 and stats.records_to_on_failure == 1 and stats.retries == 2
    assert stats.records_done == 24
    ids = table_event_ids(tables, tag)
    assert set(ids) == expected_ids(batch) - expected_ids([killer])
    failures = queue_bodies(tables["on_failure"])
    assert len(failures) == 1
    info = failures[0]["KinesisBatchInfo"]
    assert info["batchSize"] == 1 and info["startSequenceNumber"] == info["endSequenceNumber"]
    assert failures[0]["requestContext"]["condition"] == "RetryAttemptsExhausted"
    # Lambda's on-failure message carries metadata only: the record is read back from the stream by its range
    assert "records" not in failures[0] and info["streamArn"].endswith(f"stream/{stream}")
    back = streams.read_range(stream, info["shardId"], info["startSequenceNumber"], info["endSequenceNumber"])
    assert [json.loads(r.data) for r in back] == [killer]


def test_partial_batch_response_retries_from_the_first_failed_record(stream, tables):
    tag = uuid.uuid4().hex[:6]
    batch = events(20, tag=tag)
    streams.put_records(stream, batch, partition_key=lambda _r: "one-shard")
    real = bound_handler(tables)
    delivered: Counter[str] = Counter()
    failed_once: set[str] = set()

    def fail_seventh_once(event, context=None):
        records = event["Records"]
        for r in records:
            delivered[r["kinesis"]["sequenceNumber"]] += 1
        response = real(event, context)
        if len(records) > 7 and records[7]["kinesis"]["sequenceNumber"] not in failed_once:
            failed_once.add(records[7]["kinesis"]["sequenceNumber"])
            return {"batchItemFailures": [{"itemIdentifier": records[7]["kinesis"]["sequenceNumber"]}]}
        return response

    stats = mapping(fail_seventh_once, stream, tables, batch_size=10).run_until_caught_up(timeout=60)
    assert stats.partial_failures == 2 and stats.records_done == 20
    seqs = sorted(delivered, key=int)
    # records 0-6 of each 10-batch are delivered once; from the failed one on, twice
    assert [delivered[s] for s in seqs] == [1] * 7 + [2] * 3 + [1] * 7 + [2] * 3
    ids = table_event_ids(tables, tag)
    assert set(ids) == expected_ids(batch) and set(ids.values()) == {1}


def test_stopped_consumer_resumes_from_its_checkpoints(stream, tables):
    tag = uuid.uuid4().hex[:6]
    batch = events(300, tag=tag)
    streams.put_records(stream, batch)
    consumer = f"resume-{tag}"
    first = mapping(bound_handler(tables), stream, tables, consumer=consumer, batch_size=20)
    stats1 = first.run_until_caught_up(timeout=60, max_batches=4)
    assert 0 < stats1.records_done < 300
    saved = lambda_local.Checkpoints(consumer, tables["checkpoints"]).all()
    assert saved and all(saved[s] == stats1.shards[s]["checkpoint"] for s in saved)
    second = mapping(bound_handler(tables), stream, tables, consumer=consumer, batch_size=20)
    stats2 = second.run_until_caught_up(timeout=60)
    # nothing re-read: the second run starts after the checkpoints
    assert stats1.records_done + stats2.records_in == 300
    assert {s: v["start_after"] for s, v in stats2.shards.items() if v["start_after"]} == saved
    ids = table_event_ids(tables, tag)
    assert set(ids) == expected_ids(batch) and set(ids.values()) == {1}
    # a third run finds nothing to do
    assert mapping(bound_handler(tables), stream, tables, consumer=consumer).run_until_caught_up(60).records_in == 0


def test_background_mapping_follows_the_stream_with_a_batching_window(stream, tables):
    tag = uuid.uuid4().hex[:6]
    batch = events(90, tag=tag)
    sizes: list[int] = []
    real = bound_handler(tables)

    def counting(event, context=None):
        sizes.append(len(event["Records"]))
        return real(event, context)

    running = mapping(counting, stream, tables, batch_size=50, batching_window_seconds=0.3).start()
    for start in range(0, 90, 30):
        streams.put_records(stream, batch[start : start + 30])
    stats = running.drain(timeout=60)
    assert stats.records_done == 90 and max(sizes) <= 50
    assert len(stats.latencies_s) == 90 and all(0 <= s < 30 for s in stats.latencies_s)
    ids = table_event_ids(tables, tag)
    assert set(ids) == expected_ids(batch)
