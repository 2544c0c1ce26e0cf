"""shoplake.lambda_local: Kinesis event-source-mapping semantics against the emulator (checkpoints, retries,
bisect on error, partial batch responses, on-failure destination), with the real order_history handler; pollers
in threads and, with a handler_factory, in processes of their own."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from shoplake import config, lambda_local, streams
from shoplake.lambdas import order_history


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


def _shard_half(partition_key: str) -> int:
    """Which of a 2-shard stream's shards Kinesis puts ``partition_key`` on (the MD5 hash key's top bit)."""
    return int(hashlib.md5(partition_key.encode()).hexdigest(), 16) >> 127


def _customer_ids(tag: str, customers: int) -> list[str]:
    """``<tag>-<k>`` for k < ``customers``, the second one chosen on the other shard than the first: the ids are
    random (the tag), and with 7 of them all would land on one of the 2 shards in 1 run of 64; the tests' per-shard
    expectations need both shards to get records."""
    ids = [f"{tag}-{k}" for k in range(customers)]
    if customers >= 2 and _shard_half(ids[0]) == _shard_half(ids[1]):
        ids[1] = next(
            f"{tag}-{k}" for k in itertools.count(customers) if _shard_half(f"{tag}-{k}") != _shard_half(ids[0])
        )
    return ids


def events(n: int, customers: int = 7, tag: str | None = None) -> list[dict[str, Any]]:
    """``n`` order events of ``customers`` customers (three lines per invoice); from 4 events on, both shards of a
    2-shard stream get some."""
    tag = tag or uuid.uuid4().hex[:6]
    ids = _customer_ids(tag, customers)
    return [
        {
            "InvoiceNo": f"{700000 + i // 3}",
            "StockCode": f"S{i % 3}",
            "Description": "THING",
            "Quantity": 1 + i % 5,
            "InvoiceDate": f"2011-02-{1 + i // 100:02d}T10:{(i // 3) % 60:02d}:00Z",
            "UnitPrice": 1.25,
            "CustomerID": ids[(i // 3) % customers],
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


def mapping(handler, stream, tables, consumer=None, factory=None, **overrides) -> lambda_local.EventSourceMapping:
    """The mapping under test: ``handler`` in poller threads, or (``handler=None``) ``factory`` in poller processes."""
    return lambda_local.EventSourceMapping(
        handler,
        settings(stream, tables, **overrides),
        consumer=consumer or f"c-{uuid.uuid4().hex[:6]}",
        checkpoint_table=tables["checkpoints"],
        handler_factory=factory,
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


def test_mapping_settings_come_from_resources_yaml(local_stack, tables, monkeypatch):
    from shoplake import infra

    monkeypatch.setattr(infra, "resolve", lambda ref: f"resolved:{ref}")
    s = lambda_local.mapping_settings("orders-to-order-history")
    assert (s.stream, s.batch_size, s.batching_window_seconds, s.bisect_on_error, s.max_retry_attempts) == (
        "orders",
        500,
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


# --------------------------------------------------------------------------- issue 13/16: checkpoints, waits, errors


def with_cancellations(batch: list[dict[str, Any]], tag: str, n: int = 10) -> list[dict[str, Any]]:
    """``batch`` + ``n`` cancellations of stock code S0 (after every line), customers cycling like :func:`events`
    (the same ids: :func:`_customer_ids`)."""
    ids = _customer_ids(tag, 7)
    return batch + [
        {
            "InvoiceNo": f"C8{j:05d}",
            "StockCode": "S0",
            "Description": "THING",
            "Quantity": -1,
            "InvoiceDate": "2011-03-01T10:00:00Z",
            "UnitPrice": 1.25,
            "CustomerID": ids[j % 7],
            "Country": "France",
            "LineNo": 0,
        }
        for j in range(n)
    ]


def expected_marks(batch: list[dict[str, Any]]) -> dict[str, str]:
    """event id of each marked line → the cancellation that marks it (newest unmarked S0 line, in stream order)."""
    marks: dict[str, str] = {}
    for cancel in (e for e in batch if e["InvoiceNo"].startswith("C")):
        lines = sorted(
            (e for e in batch if e["CustomerID"] == cancel["CustomerID"] and not e["InvoiceNo"].startswith("C")),
            key=order_history.order_key,
            reverse=True,
        )
        for line in lines:
            lid = f"{line['InvoiceNo']}-{line['LineNo']}"
            if line["StockCode"] == cancel["StockCode"] and lid not in marks:
                marks[lid] = f"{cancel['InvoiceNo']}-{cancel['LineNo']}"
                break
    return marks


def table_marks(tables: dict[str, str], tag: str) -> dict[str, str]:
    pages = (
        config.client("dynamodb")
        .get_paginator("scan")
        .paginate(
            TableName=tables["table"],
            ConsistentRead=True,
            FilterExpression="begins_with(customer_id, :t) AND attribute_exists(cancelled_by)",
            ExpressionAttributeValues={":t": {"S": tag}},
        )
    )
    return {i["event_id"]["S"]: i["cancelled_by"]["S"] for page in pages for i in page["Items"]}


def test_checkpoints_are_written_per_interval_not_per_batch_and_always_at_the_end(stream, tables):
    tag = uuid.uuid4().hex[:6]
    batch = events(300, tag=tag)
    streams.put_records(stream, batch)
    consumer = f"interval-{tag}"
    stats = mapping(
        bound_handler(tables), stream, tables, consumer=consumer, batch_size=10, checkpoint_interval_seconds=3600
    ).run_until_caught_up(timeout=120)
    assert stats.records_done == 300 and stats.invocations >= 30
    # one write per shard, when its poller stopped: the saved checkpoints are the last records handled
    assert stats.checkpoints_written == len(stats.shards)
    saved = lambda_local.Checkpoints(consumer, tables["checkpoints"]).all()
    assert saved == {s: v["checkpoint"] for s, v in stats.shards.items()}
    assert mapping(bound_handler(tables), stream, tables, consumer=consumer).run_until_caught_up(60).records_in == 0


CRASHING_CONSUMER = """
import json, sys, time
from shoplake import config, lambda_local
from shoplake.lambdas import order_history
args = json.loads(sys.argv[1])
dynamodb, sqs = config.client("dynamodb"), config.client("sqs")
handled = []
def handler(event, context=None):
    response = order_history.process(event, args["table"], args["dlq"], dynamodb, sqs)
    handled.append(len(event["Records"]))
    if len(handled) == args["batches"]:
        open(args["flag"], "w").write(str(sum(handled)))
        time.sleep(3600)  # killed here, mid-stream, without any chance to write a checkpoint
    return response
settings = lambda_local.MappingSettings(stream=args["stream"], batch_size=20, report_batch_item_failures=True,
                                        checkpoint_interval_seconds=3600, poll_interval_seconds=0.05)
lambda_local.EventSourceMapping(handler, settings, consumer=args["consumer"],
                                checkpoint_table=args["checkpoints"]).run_until_caught_up()
"""


def test_a_consumer_killed_between_checkpoints_replays_and_the_table_is_still_exact(stream, tables, tmp_path):
    """kill -9 mid-stream (no checkpoint written): the next run replays those records; items, cancellation marks
    and counts are exactly those of one clean pass (the handler is idempotent)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    tag = uuid.uuid4().hex[:6]
    batch = with_cancellations(events(200, tag=tag), tag)
    streams.put_records(stream, batch, partition_key=lambda _r: "one-shard")  # one shard: the cancellations last
    consumer, flag = f"crash-{tag}", tmp_path / "handled"
    args = {**tables, "stream": stream, "consumer": consumer, "batches": 6, "flag": str(flag)}
    child = subprocess.Popen([sys.executable, "-c", CRASHING_CONSUMER, json.dumps(args)], env=dict(os.environ))
    try:
        for _ in range(1200):
            if flag.exists() and flag.read_text() or child.poll() is not None:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the consumer ended before it was killed"
        handled_before_kill = int(flag.read_text())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert handled_before_kill == 120 and table_event_ids(tables, tag)  # it did write before dying
    assert lambda_local.Checkpoints(consumer, tables["checkpoints"]).all() == {}
    stats = mapping(bound_handler(tables), stream, tables, consumer=consumer, batch_size=20).run_until_caught_up(60)
    assert stats.records_in == len(batch) and stats.records_done == len(batch)  # the 120 were replayed
    ids = table_event_ids(tables, tag)
    assert set(ids) == expected_ids(batch) and set(ids.values()) == {1}
    assert table_marks(tables, tag) == expected_marks(batch) and len(expected_marks(batch)) == 10


def test_bad_numbers_in_the_settings_are_one_clear_error():
    for name in (
        "batching_window_seconds",
        "retry_delay_seconds",
        "poll_interval_seconds",
        "checkpoint_interval_seconds",
    ):
        for value in (float("nan"), float("inf"), -1.0):
            with pytest.raises(lambda_local.MappingError, match=name):
                lambda_local.MappingSettings(**{name: value})
    with pytest.raises(lambda_local.MappingError, match="batch_size"):
        lambda_local.MappingSettings(batch_size=0)
    with pytest.raises(lambda_local.MappingError, match="max_retry_attempts"):
        lambda_local.MappingSettings(max_retry_attempts=-2)


def test_the_on_failure_message_keeps_the_function_errors_text(stream, tables):
    tag = uuid.uuid4().hex[:6]
    batch = events(3, tag=tag)

    def always_crashes(event, context=None):
        raise KeyError("order line 42 has no 'Quantity'")

    streams.put_records(stream, batch, partition_key=lambda _r: "one-shard")
    stats = mapping(always_crashes, stream, tables, bisect_on_error=False, max_retry_attempts=0).run_until_caught_up(
        timeout=60
    )
    assert stats.records_to_on_failure == 3
    (failure,) = queue_bodies(tables["on_failure"])
    context = failure["responseContext"]
    assert context["functionError"] == "Unhandled"
    assert context["errorMessage"] == "KeyError: \"order line 42 has no 'Quantity'\""


def test_waiting_fails_after_idle_seconds_without_progress_not_after_a_total_time(stream, tables):
    release = threading.Event()

    def hangs(event, context=None):
        release.wait(30)
        return {}

    streams.put_records(stream, events(2))
    running = mapping(hangs, stream, tables, max_retry_attempts=0)
    try:
        with pytest.raises(lambda_local.MappingError, match=r"made no progress for .*\(idle_seconds=1;"):
            running.run_until_caught_up(idle_seconds=1)
    finally:
        release.set()


def test_a_dead_emulator_fails_the_consumer_at_once_naming_the_stack(tmp_path, monkeypatch, local_stack):
    """The emulator dies mid-consume: one MappingError naming it and how to restart, not minutes of retries (the
    idle limit is far away, so only the emulator check can end the wait)."""
    import subprocess
    import sys
    import time

    from shoplake import local_services

    port = local_services.free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "shoplake._moto_server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            if lambda_local._reachable(url, timeout=0.2):
                break
            time.sleep(0.05)
        # one private emulator for every service (the shared local services have a DynamoDB emulator of their own)
        monkeypatch.setattr(local_services, "moto_url", lambda: url)
        monkeypatch.setattr(local_services, "service_url", lambda service=None: url)
        monkeypatch.setattr(local_services, "emulator_urls", lambda: [url])
        config.clear_caches()
        own = {"on_failure": config.client("sqs").create_queue(QueueName="of")["QueueUrl"]}
        config.client("dynamodb").create_table(
            TableName="cp",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": k, "AttributeType": "S"} for k in ("consumer", "shard_id")],
            KeySchema=[
                {"AttributeName": "consumer", "KeyType": "HASH"},
                {"AttributeName": "shard_id", "KeyType": "RANGE"},
            ],
        )
        own["checkpoints"] = "cp"
        config.client("kinesis").create_stream(StreamName="shoplake-dead-orders", ShardCount=1)
        streams.put_records("shoplake-dead-orders", events(50))

        def kills_the_emulator(event, context=None):
            server.kill()
            server.wait()
            config.client("dynamodb").put_item(TableName="cp", Item={"consumer": {"S": "x"}, "shard_id": {"S": "y"}})
            return {}

        running = mapping(kills_the_emulator, "shoplake-dead-orders", own, batch_size=10, retry_delay_seconds=0.5)
        with pytest.raises(lambda_local.MappingError, match=f"emulator at {url} stopped answering.*shoplake local up"):
            running.run_until_caught_up(idle_seconds=3600)
    finally:
        server.kill()
        server.wait()
        monkeypatch.undo()
        config.clear_caches()


def test_waiting_lasts_as_long_as_the_pollers_make_progress(stream, tables):
    """A run far longer than idle_seconds succeeds while batches keep being handled (no total time limit)."""
    import time

    tag = uuid.uuid4().hex[:6]
    batch = events(60, tag=tag)
    real = bound_handler(tables)

    def slow(event, context=None):
        time.sleep(0.4)
        return real(event, context)

    streams.put_records(stream, batch, partition_key=lambda _r: "one-shard")
    began = time.monotonic()
    stats = mapping(slow, stream, tables, batch_size=5).run_until_caught_up(idle_seconds=1)
    assert stats.records_done == 60 and stats.invocations == 12 and time.monotonic() - began > 3
    assert set(table_event_ids(tables, tag)) == expected_ids(batch)


# --------------------------------------------------------------------------- poller processes (handler_factory)
# Each shard's poller in a spawned process of its own, as each shard has its own Lambda container. The factories
# below run in those processes.


def order_history_in_this_process() -> lambda_local.Handler:
    """The real handler on the test's table and DLQ (named in the environment the children inherit); its counts
    also say which process handled how many records."""
    table, dlq = os.environ["LL_TABLE"], os.environ["LL_DLQ"]
    dynamodb, sqs = config.client("dynamodb"), config.client("sqs")

    def handle(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        response = order_history.process(event, table, dlq, dynamodb, sqs)
        response["counts"][f"pid:{os.getpid()}"] = len(event["Records"])
        return response

    return handle


def hangs() -> lambda_local.Handler:
    def handle(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        time.sleep(3600)
        return {}

    return handle


def dies() -> lambda_local.Handler:
    def handle(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        os._exit(7)

    return handle


@pytest.fixture
def env(tables, monkeypatch):
    monkeypatch.setenv("LL_TABLE", tables["table"])
    monkeypatch.setenv("LL_DLQ", tables["dlq"])
    return tables


def in_processes(factory, stream, tables, consumer=None, **overrides) -> lambda_local.EventSourceMapping:
    return mapping(None, stream, tables, consumer=consumer, factory=factory, **overrides)


def pids_of(stats: lambda_local.MappingStats) -> dict[int, int]:
    return {int(k.split(":")[1]): v for k, v in stats.handler_counts.items() if k.startswith("pid:")}


def test_each_shard_is_polled_in_a_process_of_its_own_and_the_counts_add_up(stream, env):
    tag = uuid.uuid4().hex[:6]
    batch = events(300, customers=20, tag=tag)
    streams.put_records(stream, batch)
    stats = in_processes(order_history_in_this_process, stream, env).run_until_caught_up(timeout=120)
    pids = pids_of(stats)
    assert len(pids) == 2 and os.getpid() not in pids  # two shards, two poller processes, none of them this one
    assert sum(pids.values()) == stats.records_in == stats.records_done == len(batch)
    assert set(stats.shards) == set(streams.shards(stream)) and sum(s["records"] for s in stats.shards.values()) == 300
    assert len(stats.latencies_s) == len(batch) and stats.invocations >= 2 and stats.elapsed_s > 0
    ids = table_event_ids(env, tag)
    assert set(ids) == expected_ids(batch) and set(ids.values()) == {1}


def test_a_stopped_consumer_resumes_from_the_checkpoints_its_processes_wrote(stream, env):
    tag = uuid.uuid4().hex[:6]
    first_half, second_half = events(100, tag=tag), events(100, tag=tag + "b")
    streams.put_records(stream, first_half)
    consumer = f"resume-{tag}"
    first = in_processes(order_history_in_this_process, stream, env, consumer=consumer).run_until_caught_up(60)
    assert first.records_done == 100
    written = lambda_local.Checkpoints(consumer, env["checkpoints"]).all()
    assert set(written) == set(streams.shards(stream))
    streams.put_records(stream, second_half)
    second = in_processes(order_history_in_this_process, stream, env, consumer=consumer).run_until_caught_up(60)
    assert second.records_in == second.records_done == 100  # only what came after the checkpoints


def test_the_batch_budget_is_shared_by_the_poller_processes(stream, env):
    streams.put_records(stream, events(400, customers=20))
    stats = in_processes(order_history_in_this_process, stream, env, batch_size=10).run_until_caught_up(
        timeout=60, max_batches=3
    )
    # each process may finish the batch it was handling when the budget ran out: at most one more per shard
    assert 3 <= stats.invocations <= 3 + 1 and stats.records_done == 10 * stats.invocations


def test_a_hanging_handler_fails_after_idle_seconds_and_its_processes_are_ended(stream, env):
    streams.put_records(stream, events(4))
    running = in_processes(hangs, stream, env, max_retry_attempts=0).start()
    processes = [poller._process for poller in running._pollers]
    with pytest.raises(lambda_local.MappingError, match=r"made no progress for .*\(idle_seconds=2;"):
        running.drain(idle_seconds=2)
    assert len(processes) == 2 and not any(p.is_alive() for p in processes)  # ended, not left hanging


def test_a_poller_process_that_dies_is_one_clear_error(stream, env):
    streams.put_records(stream, events(4))
    with pytest.raises(lambda_local.MappingError, match=r"a poller of .* failed: .*exit code 7"):
        in_processes(dies, stream, env).run_until_caught_up(timeout=60)


def test_an_error_in_a_poller_process_comes_back_as_it_was(stream, env):
    streams.put_records(stream, events(4))
    missing = {**env, "checkpoints": "no-such-checkpoint-table"}
    with pytest.raises(lambda_local.MappingError, match="checkpoint table no-such-checkpoint-table does not exist"):
        in_processes(order_history_in_this_process, stream, missing).run_until_caught_up(timeout=60)


def test_a_factory_must_travel_to_the_poller_processes_and_comes_alone():
    local = lambda: hangs()  # noqa: E731 - a lambda cannot be pickled
    base = lambda_local.MappingSettings(stream="orders")
    with pytest.raises(lambda_local.MappingError, match="module-level function"):
        lambda_local.EventSourceMapping(None, base, consumer="c", handler_factory=local)
    with pytest.raises(lambda_local.MappingError, match="either a handler .* or a handler_factory"):
        lambda_local.EventSourceMapping(hangs(), base, consumer="c", handler_factory=hangs)
    with pytest.raises(lambda_local.MappingError, match="before_checkpoint needs the handler in this process"):
        lambda_local.EventSourceMapping(None, base, consumer="c", handler_factory=hangs, before_checkpoint=print)
