"""The transaction-rate alarm on the aws target: what the functions call (least privilege) and the inbox read-back.

Runs against moto in-process through the ``aws_target`` fixture: botocore validates every request against its service
model, and the recorder attributes each call to the role whose code made it.
"""

from __future__ import annotations

import base64
import json

import pytest

from shoplake import config
from shoplake.alarm import RateDetector, day_slice, detector_config, messages, simulate_day
from shoplake.alarm import function as rd
from shoplake.alarm._windows import parse_ts
from shoplake.lambdas import rate_alarm

pytestmark = pytest.mark.aws

SHARD = "shardId-000000000000"
CONFIG = detector_config(600, num_trees=20, tree_size=64)
SURGE = [
    {
        "incident_id": "s",
        "kind": "surge",
        "start": "2011-11-09T11:04:00Z",
        "end": "2011-11-09T11:34:00Z",
        "multiplier": 4.0,
    }
]
# what the rate-detector function's own code calls (boto3 operation → IAM action), and nothing else
RATE_DETECTOR_CALLS = {
    "dynamodb:GetItem",  # closed_before (every invocation with records), the detector item (final invoke)
    "dynamodb:PutItem",  # the detector saved (conditional on its version); rate_alarm's incident claim
    "dynamodb:UpdateItem",  # rate_alarm: cool-down and the incident's status
    "sns:Publish",  # the alarm text
    "sqs:SendMessageBatch",  # dead letters (malformed, late) → IAM action sqs:SendMessage
    "kinesis:ListShards",  # once, when the detector is new: the watermark waits for every shard
}
RATE_ALARM_CALLS = {"dynamodb:PutItem", "dynamodb:UpdateItem", "sns:Publish"}  # no GetItem, no Kinesis, no SQS


@pytest.fixture
def resources(aws_target, monkeypatch):
    """The alarm's resources as the stack names them (table, topic, dead-letter queue, inbox, stream)."""
    names = {k: config.resource_name(k) for k in ("alarm_state", "alarms", "rate-alarm-dlq", "alarm-inbox", "orders")}
    ddb, sns, sqs, kinesis = (config.client(s) for s in ("dynamodb", "sns", "sqs", "kinesis"))
    ddb.create_table(
        TableName=names["alarm_state"],
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    kinesis.create_stream(StreamName=names["orders"], ShardCount=1)
    out = {
        "table": names["alarm_state"],
        "topic": sns.create_topic(Name=names["alarms"])["TopicArn"],
        "dlq": sqs.create_queue(QueueName=names["rate-alarm-dlq"])["QueueUrl"],
        "inbox": sqs.create_queue(QueueName=names["alarm-inbox"])["QueueUrl"],
        "stream_arn": kinesis.describe_stream_summary(StreamName=names["orders"])["StreamDescriptionSummary"][
            "StreamARN"
        ],
    }
    out["inbox_arn"] = sqs.get_queue_attributes(QueueUrl=out["inbox"], AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    outputs = {
        "topic_arn:alarms": out["topic"],
        "queue_url:alarm-inbox": out["inbox"],
        "queue_arn:alarm-inbox": out["inbox_arn"],
    }
    monkeypatch.setattr(messages, "_outputs", lambda: outputs)
    monkeypatch.setenv("STATE_TABLE", out["table"])
    monkeypatch.setenv("TOPIC_ARN", out["topic"])
    monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", out["dlq"])
    monkeypatch.setenv("DETECTOR_CONFIG", json.dumps(CONFIG.as_dict()))
    monkeypatch.setattr(rd, "_DETECTOR", None)  # a cold container: the entry point builds its clients
    monkeypatch.setattr(rate_alarm, "_CLIENTS", {})
    aws_target.clear()
    return out


def _events(records: list, stream_arn: str, extra_first: list | None = None, extra_last: list | None = None):
    """Tumbling windows of 5 minutes (arrival = order time): two invocations each, then the final invoke."""
    seq, events = 10**20, []
    first = parse_ts(records[0]["InvoiceDate"])
    slots: dict[int, list] = {}
    for record in records:
        slots.setdefault(int((parse_ts(record["InvoiceDate"]) - first) // 300), []).append(record)
    order = sorted(slots)
    for slot in order:
        batch = slots[slot]
        parts = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
        if slot == order[0]:
            parts[0] = parts[0] + (extra_first or [])
        if slot == order[-1]:
            parts[1] = parts[1] + (extra_last or [])
        for part in parts:
            items = []
            for payload in part:
                seq += 1
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                items.append(
                    {
                        "kinesis": {"data": base64.b64encode(data).decode(), "sequenceNumber": str(seq)},
                        "eventID": f"{SHARD}:{seq}",
                        "eventSourceARN": stream_arn,
                    }
                )
            events.append({"Records": items, "shardId": SHARD, "eventSourceARN": stream_arn})
        events.append({"Records": [], "shardId": SHARD, "eventSourceARN": stream_arn, "isFinalInvokeForWindow": True})
    return events


def _run(events: list) -> list[dict]:
    state, responses = {}, []
    for event in events:
        response = rd.handler({**event, "state": state})
        state = response["state"]
        responses.append(response)
    return responses


def test_rate_detector_calls_exactly_what_its_role_needs(aws_target, resources, monkeypatch):
    sim = day_slice(simulate_day(seed=5, orders_per_day=4_000, incidents=SURGE, window_seconds=600), 10, 13)
    # 1) a new detector (no state yet): asks the stream for its shards once, learns, dead-letters a malformed record
    monkeypatch.setenv("DETECTOR_NAME", "aws-new")
    with aws_target.as_role("rate-detector-fn"):
        _run(_events(sim.records()[:200], resources["stream_arn"], extra_first=[b"{not json"]))
    new_ops = aws_target.operations("rate-detector-fn")
    assert "kinesis:ListShards" in new_ops and "sqs:SendMessageBatch" in new_ops
    # 2) a warmed-up detector (seeded by the user's session, not the function) sees a surge and texts once
    monkeypatch.setenv("DETECTOR_NAME", "aws-warm")
    monkeypatch.setattr(rd, "_DETECTOR", None)
    warm = RateDetector(CONFIG, name="aws-warm", shards=[SHARD])
    warm.warm_up(sim.warmup)
    settings = rd.Settings(resources["table"], resources["topic"], resources["dlq"], "aws-warm", CONFIG)
    rd.seed_state(warm, settings, config.client("dynamodb"), shards=[SHARD])
    late = {**sim.records()[0], "InvoiceNo": "LATE1", "LineNo": 0, "InvoiceDate": "2011-11-09T09:00:00Z"}
    with aws_target.as_role("rate-detector-fn"):
        responses = _run(_events(sim.records(), resources["stream_arn"], extra_last=[late]))
    assert all(r["batchItemFailures"] == [] for r in responses)
    saved = rd.load_detector(settings, config.client("dynamodb"))
    assert saved.counts["alarms"] == 1 and saved.counts["late"] == 1
    # exactly these operations, and only on the stack's resources
    calls = [c for c in aws_target.calls if c.role == "rate-detector-fn"]
    assert {c.action for c in calls} == RATE_DETECTOR_CALLS
    keys = ("TableName", "TopicArn", "QueueUrl", "StreamName")
    targets = {next(c.params[k] for k in keys if k in c.params) for c in calls}
    assert targets == {resources["table"], resources["topic"], resources["dlq"], config.resource_name("orders")}
    publish = [c for c in calls if c.operation == "Publish"]
    assert len(publish) == 1 and "order SURGE" in publish[0].params["Message"]


def test_rate_alarm_function_calls_no_get_item(aws_target, resources):
    alarm = {
        "incident_id": "i1",
        "detector": "aws-direct",
        "kind": "drop",
        "window_start": "2011-11-09T10:00:00Z",
        "window_end": "2011-11-09T10:10:00Z",
        "observed": 3,
        "expected": 40,
        "score": 60,
        "threshold": 20,
        "raised_at": "2011-11-09T10:11:00Z",
    }
    with aws_target.as_role("rate-alarm-fn"):
        first = rate_alarm.handler(alarm)
        again = rate_alarm.handler(alarm)
    assert first["counts"]["published"] == 1 and again["counts"]["duplicate"] == 1
    assert aws_target.operations("rate-alarm-fn") == RATE_ALARM_CALLS


def _publish(sns, topic: str, n: int) -> None:
    for i in range(n):
        sns.publish(TopicArn=topic, Subject="shoplake order surge", Message=f"alarm text {i:02d}")


def test_inbox_long_polls_reads_everything_dedupes_and_leaves_it(aws_target, resources):
    sns, sqs = config.client("sns"), config.client("sqs")
    messages.ensure_inbox()
    _publish(sns, resources["topic"], 23)  # more than one receive's worth (10)
    # SNS → SQS is at-least-once: the same notification delivered twice is one text
    envelope = {"Type": "Notification", "MessageId": "dup-1", "Message": "twice", "Timestamp": "2011-11-09T10:00:00Z"}
    for _ in range(2):
        sqs.send_message(QueueUrl=resources["inbox"], MessageBody=json.dumps(envelope))
    texts = messages.sent_messages(quiet_seconds=0)
    assert len(texts) == 24 and len({t["message_id"] for t in texts}) == 24
    assert sorted(t["text"] for t in texts if t["text"] != "twice") == [f"alarm text {i:02d}" for i in range(23)]
    assert len(messages.sent_messages(expect=24)) == 24  # left in the inbox, visible again at once
    receives = [c for c in aws_target.calls if c.operation == "ReceiveMessage"]
    assert receives and all(c.params["WaitTimeSeconds"] >= 1 for c in receives)  # long polling only
    with pytest.raises(messages.InboxError, match="only 24 of 30 alarm texts"):
        messages.sent_messages(expect=30, max_seconds=1.5)
    assert messages.purge_inbox(quiet_seconds=0) == 25  # distinct SQS messages (the duplicate was sent twice)
    assert messages.sent_messages(quiet_seconds=0) == []


def test_inbox_parameters_are_checked(aws_target, resources):
    with pytest.raises(messages.InboxError, match="wait_seconds must be 1..20"):
        messages.sent_messages(wait_seconds=0)
    with pytest.raises(messages.InboxError, match="quiet_seconds must be"):
        messages.purge_inbox(quiet_seconds=-1)
