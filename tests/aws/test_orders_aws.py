"""The order-history part on the aws target, against moto in-process with every boto3 call recorded.

On AWS the Lambda service polls the stream and invokes the deployed ``order-history`` function; moto cannot run it
(no Docker), so the test plays the Lambda service: it reads the stream and calls the real handler entry point
(``order_history.handler``, configured from the environment as deployed) under the role ``order-history-fn``, and it
sends an on-failure message in Lambda's exact format (metadata only) for a batch it "gives up on". Everything else is
the code a real account runs: ``orders.publish``, ``orders.consume`` (the deployed runtime: mapping Enabled, waiting on
progress), ``orders.dead_letters`` (records read back from the stream by sequence range) and ``orders.reconcile``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from shoplake import infra, lambda_local, lambda_runtime, orders, streams
from shoplake.lambdas import order_history

pytestmark = pytest.mark.aws

NEEDED = {
    "kinesis_stream:orders",
    "dynamodb_table:order_history",
    "sqs_queue:order-history-dlq",
    "iam_role:order-history-fn",
    "lambda_function:order-history",
    "event_source_mapping:orders-to-order-history",
}
# what the order-history function's code calls (issue 11 #18: the role needs exactly these, plus the Lambda service's
# Kinesis reads for the mapping, sqs:SendMessage for its on-failure destination and the log actions)
# (issue 16 #5: BatchGetItem reads the marks of replayed lines; the marks are written by the puts, no UpdateItem)
ORDER_HISTORY_FN_CALLS = {"dynamodb:BatchWriteItem", "dynamodb:BatchGetItem", "dynamodb:Query", "sqs:SendMessage"}


@pytest.fixture
def stack(aws_target, monkeypatch):
    """The order-history resources of resources.yaml, applied by infra on the aws target (moto), the deployed function's
    environment set as Lambda would set it."""
    from moto.awslambda.models import LambdaBackend

    # moto would try to run the function in Docker for every record put; the test plays the Lambda service instead
    monkeypatch.setattr(LambdaBackend, "send_kinesis_message", lambda self, *a, **k: None)
    spec = [r for r in infra.load_spec() if r.key in NEEDED]
    assert {r.key for r in spec} == NEEDED
    infra.apply(spec)
    function = infra.find("lambda_function", "order-history")
    for key, ref in function.props["environment"].items():
        monkeypatch.setenv(key, infra.resolve(ref))
    monkeypatch.setattr(order_history, "_CLIENTS", {})
    aws_target.clear()
    return aws_target


def order(i: int, customer: str | None, invoice: str | None = None, qty: int = 2, stock: str | None = None) -> dict:
    return {
        "InvoiceNo": invoice or f"{580000 + i}",
        "StockCode": stock or f"S{i % 4}",
        "Description": "THING",
        "Quantity": qty,
        "InvoiceDate": f"2011-03-{1 + i // 40:02d}T{8 + (i // 4) % 10:02d}:{i % 60:02d}:00Z",
        "UnitPrice": 1.95,
        "CustomerID": customer,
        "Country": "France",
        "LineNo": 0,
    }


def sample_events() -> list[Any]:
    events: list[Any] = [order(i, None if i % 9 == 0 else f"c{i % 6}") for i in range(80)]
    events.append(order(100, "c1", invoice="C580001", qty=-1, stock="S1"))  # cancels c1's S1 line (a Query)
    events[10:10] = orders.malformed_samples(3)
    return events


def lambda_event(records: list[streams.StreamRecord], stream_arn: str) -> dict[str, Any]:
    """The event the Lambda service hands a Kinesis-mapped function (the same builder the local runner uses)."""
    return lambda_local.kinesis_event(records, stream_arn, "eu-west-1", infra.arn("role", "order-history-fn"))


def on_failure_message(records: list[streams.StreamRecord], stream_arn: str) -> dict[str, Any]:
    """Lambda's on-failure destination message for a Kinesis batch: metadata only, no records."""
    return {
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": infra.arn("function", "order-history"),
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 4,
        },
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "version": "1.0",
        "timestamp": "2026-12-06T10:00:04.835Z",
        "KinesisBatchInfo": {
            "shardId": records[0].shard_id,
            "startSequenceNumber": records[0].sequence_number,
            "endSequenceNumber": records[-1].sequence_number,
            "approximateArrivalOfFirstRecord": "2026-12-06T10:00:00.835Z",
            "approximateArrivalOfLastRecord": "2026-12-06T10:00:01.580Z",
            "batchSize": len(records),
            "streamArn": stream_arn,
        },
    }


def play_lambda_service(rec, give_up_on: int = 0) -> list[streams.StreamRecord]:
    """Invoke the deployed handler on every record of the stream in batches of resources.yaml's size, as the role
    ``order-history-fn``; the first ``give_up_on`` records of the first shard get an on-failure message instead.
    Returns the records given up on."""
    import boto3

    stream_arn = infra.arn("stream", "orders")
    batch_size = int(infra.find("event_source_mapping", "orders-to-order-history").props["batch_size"])
    given_up: list[streams.StreamRecord] = []
    for n, shard in enumerate(streams.shards("orders")):
        records = list(streams.read_shard("orders", shard))
        if n == 0 and give_up_on:
            given_up, records = records[:give_up_on], records[give_up_on:]
            boto3.client("sqs").send_message(
                QueueUrl=infra.resolve("queue_url:order-history-dlq"),
                MessageBody=json.dumps(on_failure_message(given_up, stream_arn)),
            )
        with rec.as_role("order-history-fn"):
            for start in range(0, len(records), batch_size):
                response = order_history.handler(lambda_event(records[start : start + batch_size], stream_arn))
                assert response["batchItemFailures"] == []
    return given_up


def test_handler_calls_only_what_its_role_lists(stack):
    events = sample_events()
    orders.publish(events, progress=False)
    play_lambda_service(stack)
    assert stack.operations("order-history-fn") == ORDER_HISTORY_FN_CALLS
    # the cancellation found and marked its line through a Query on the customer's partition
    marked = orders.table_items().dropna(subset=["cancelled_by"])
    assert list(marked["cancelled_by"]) == ["C580001-0"]


def test_every_call_of_the_handler_is_granted_by_its_policy_in_stack_yaml(stack):
    """issue 11 #1: the role lacked dynamodb:Query → AccessDenied on a real account (policy: infra/resources.yaml)."""
    orders.publish(sample_events(), progress=False)
    play_lambda_service(stack)
    role = infra.find("iam_role", "order-history-fn")
    granted = {a for statement in role.props["policy"] for a in statement["actions"]}
    assert stack.operations("order-history-fn") <= granted, stack.operations("order-history-fn") - granted


def test_consume_waits_for_the_deployed_function_and_reconciles_an_on_failure_batch(stack):
    events = sample_events()
    given_up: list[streams.StreamRecord] = []

    def publish_while_lambda_consumes() -> streams.PutResult:
        put = orders.publish(events, progress=False)
        given_up.extend(play_lambda_service(stack, give_up_on=7))
        return put

    # the deployed runtime: mapping Enabled, then progress counted until the events are accounted for
    report = orders.ingest(events, publisher=publish_while_lambda_consumes, progress=False)
    assert report.put.sent == len(events) and "lambda:ListEventSourceMappings" in stack.operations(None)
    valid_given_up = []
    for r in given_up:
        try:
            valid_given_up.append(order_history.parse_event(r.data))
        except order_history.Malformed:
            pass
    malformed_given_up = len(given_up) - len(valid_given_up)  # given up before the handler could dead-letter them
    dead_total = 3 - malformed_given_up + len(given_up)
    stats = report.mapping
    assert stats.records_done == orders.item_count() > 0 and stats.records_to_on_failure == dead_total
    assert stats.handler_counts == {"dead_lettered": 3 - malformed_given_up, "exhausted": len(given_up)}
    # consume: the stream is already covered, nothing left to wait for
    assert orders.consume().records_done == 0
    dead = orders.dead_letters()
    exhausted = dead.records[dead.records["kind"] == "exhausted"]
    assert sorted(exhausted["sequence_number"]) == sorted(r.sequence_number for r in given_up)
    assert set(exhausted["data_text"]) == {r.data.decode() for r in given_up}
    result = orders.reconcile(events, dead=dead)
    # in = written + dead-lettered, computed from the metadata-only message: balanced on aws too
    assert result.balanced and result.dead_lettered == dead_total, result.as_dict()
    # the valid records of the exhausted batch are exactly what the table misses
    assert len(result.missing) == len(valid_given_up) > 0 and not result.exactly_once


def test_reset_on_aws_only_empties_what_the_prefix_owns(stack):
    orders.publish(sample_events(), progress=False)
    play_lambda_service(stack)
    assert orders.item_count() > 0 and len(orders.dead_letters()) == 3
    stack.clear()
    done = orders.reset()
    assert done["items_deleted"] > 0 and done["dead_letters_deleted"] == 3 and done["skipped_to"] == {}
    assert orders.item_count() == 0 and len(orders.dead_letters()) == 0
    actions = stack.operations(None)
    assert not {"dynamodb:DeleteTable", "sqs:DeleteQueue", "sqs:PurgeQueue", "dynamodb:CreateTable"} & actions
    prefix = "shoplake-"
    for call in stack.calls:
        name = call.params.get("TableName") or call.params.get("QueueUrl") or call.params.get("QueueName") or ""
        assert not name or prefix in name, call


def test_deployed_runtime_waits_while_progress_is_made_and_fails_only_when_idle(stack):
    """Progress over 20 simulated minutes (longer than any fixed timeout) is waited for; silence is an error."""
    clock = {"t": 0.0}
    script = iter([0, 0, 100, 100, 250, 400, 400, 550, 700, 800, 800, 800, 800, 800, 800])
    last = {"n": 0}

    def probe() -> lambda_runtime.Progress:
        last["n"] = next(script, last["n"])
        return lambda_runtime.Progress(handled=last["n"])

    def sleep(seconds: float) -> None:
        clock["t"] += seconds

    runtime = lambda_runtime.DeployedRuntime(
        "orders-to-order-history", probe, idle_seconds=250, poll_seconds=100, clock=lambda: clock["t"], sleep=sleep
    )
    stats = runtime.run_until_caught_up(expected=800)
    assert stats.records_done == 800 and clock["t"] == 800 > 3 * 250  # 3× idle_seconds in total, never idle
    stalled = lambda_runtime.DeployedRuntime(
        "orders-to-order-history", probe, idle_seconds=250, poll_seconds=100, clock=lambda: clock["t"], sleep=sleep
    )
    with pytest.raises(lambda_runtime.LambdaRuntimeError, match="no progress for 300 s: 800 records .* of 900"):
        stalled.run_until_caught_up(expected=900)


def test_a_disabled_or_missing_mapping_is_a_clear_error(stack):
    import boto3

    runtime = orders.runtime()
    assert isinstance(runtime, lambda_runtime.DeployedRuntime)
    found = lambda_runtime.find_mapping("orders-to-order-history")
    boto3.client("lambda").update_event_source_mapping(UUID=found["UUID"], Enabled=False)
    with pytest.raises(lambda_runtime.LambdaRuntimeError, match="update-event-source-mapping"):
        runtime.start()
    boto3.client("lambda").delete_event_source_mapping(UUID=found["UUID"])
    with pytest.raises(lambda_runtime.LambdaRuntimeError, match="infra apply"):
        orders.runtime().start()
    with pytest.raises(lambda_runtime.LambdaRuntimeError, match="max_batches"):
        orders.consume(max_batches=2)


def test_alarm_consume_on_aws_waits_on_the_rate_detector_mapping_and_reads_its_state_back(aws_target, monkeypatch):
    """The same runtime rule for the alarm: the deployed rate-detector's mapping must be Enabled, its state in
    alarm_state (saved by the function under DETECTOR_NAME) is the progress, and the detector is read back."""
    import io
    import zipfile

    import boto3
    from moto.awslambda.models import LambdaBackend

    from shoplake import alarm
    from shoplake.alarm.detector import RateDetector, StateStore

    monkeypatch.setattr(LambdaBackend, "send_kinesis_message", lambda self, *a, **k: None)
    keys = {"kinesis_stream:orders", "dynamodb_table:alarm_state", "iam_role:rate-detector-fn"}
    infra.apply([r for r in infra.load_spec() if r.key in keys])
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as archive:  # the real bundle needs the numpy/krcf layer: a stand-in here
        archive.writestr("stand_in.py", "def handler(event, context):\n    return {}\n")
    lam = boto3.client("lambda")
    lam.create_function(
        FunctionName=infra.physical_name(infra.find("lambda_function", "rate-detector")),
        Runtime="python3.12",
        Role=infra.arn("role", "rate-detector-fn"),
        Handler="stand_in.handler",
        Code={"ZipFile": package.getvalue()},
    )
    with pytest.raises(lambda_runtime.LambdaRuntimeError, match="infra apply"):
        alarm.consume(expected=1)
    lam.create_event_source_mapping(
        EventSourceArn=infra.arn("stream", "orders"),
        FunctionName=infra.physical_name(infra.find("lambda_function", "rate-detector")),
        StartingPosition="LATEST",
    )
    detector = RateDetector(alarm.detector_config(600), name="rate-detector-fn", shards=["shardId-000000000000"])
    records = [json.dumps(order(i, "c1")).encode() for i in range(30)] + [b"{bad"]
    detector.process(records, "shardId-000000000000")
    StateStore("rate-detector-fn").save(detector.to_state())  # what the function's final invokes leave behind
    result = alarm.consume(expected=31)
    assert result.counts["records_in"] == 31 and result.counts["malformed"] == 1
    assert result.counts["dead_lettered"] == 1 and result.detector.counts == detector.counts
    # the mapping's stats count what happened during this call: the function had finished before it
    assert result.mapping["records_done"] == result.mapping["records_to_on_failure"] == 0
    assert "lambda:ListEventSourceMappings" in aws_target.operations(None)
    with pytest.raises(lambda_runtime.LambdaRuntimeError, match="max_batches"):
        alarm.consume(max_batches=1)
