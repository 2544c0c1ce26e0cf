"""The detector on the local services: its own consumer of `orders`, alarms to SNS (read back), dead letters, restart."""

from __future__ import annotations

import json
import uuid

import pytest
from alarm_day import four_hours_with_incidents

from shoplake import config, streams
from shoplake.alarm import detector as det
from shoplake.alarm import detector_config, messages
from shoplake.lambdas import rate_alarm


@pytest.fixture(scope="module")
def replayed(provisioned):
    """A 4-hour slice with two incidents on the stream, plus one malformed and one late record."""
    sim = four_hours_with_incidents()
    consumers = [f"alarm-{uuid.uuid4().hex[:6]}", f"alarm-{uuid.uuid4().hex[:6]}"]
    for consumer in consumers:
        det.start_at_stream_end(consumer)  # other tests of this session may have put orders on the stream
    messages.purge_inbox(quiet_seconds=0)
    streams.replay(sim.events, "orders", progress=False)
    late = {
        "InvoiceNo": "999999",
        "StockCode": "X",
        "Quantity": 1,
        "InvoiceDate": "2011-11-09T09:00:00Z",
        "UnitPrice": 1.0,
        "CustomerID": None,
        "Country": "EIRE",
        "Description": "late",
        "LineNo": 0,
    }
    streams.put_records("orders", [b"{broken json", late], progress=False)
    return sim, consumers


def test_alarms_reach_the_topic_once_per_incident_and_bad_records_are_counted(replayed):
    sim, (consumer, _) = replayed
    result = det.consume(consumer, detector_config(600), warmup=sim.warmup)
    counts = result.counts
    assert counts["records_in"] == len(sim.events) + 2
    assert counts["malformed"] == 1 and counts["late"] == 1 and counts["dead_lettered"] == 2
    assert counts["accepted"] == len(sim.events)
    assert result.published == 2, result.alarms
    assert sorted(a["kind"] for a in result.alarms) == ["drop", "surge"]
    texts = [m["text"] for m in messages.sent_messages(quiet_seconds=0) if consumer in m["text"]]
    assert len(texts) == 2 and all("orders vs ~" in t and "score" in t for t in texts)
    dlq = config.client("sqs").receive_message(
        QueueUrl=_outputs()["queue_url:rate-alarm-dlq"], MaxNumberOfMessages=10, VisibilityTimeout=0
    )
    reasons = {
        json.loads(m["Body"])["reason"].split(":")[0]
        for m in dlq.get("Messages", [])
        if json.loads(m["Body"]).get("consumer") == f"detector#{consumer}"
    }
    assert reasons == {"malformed", "late"}


def test_restart_resumes_from_checkpoint_without_re_alarming(replayed):
    sim, (_, consumer) = replayed
    cfg = detector_config(600)
    first = det.consume(consumer, cfg, warmup=sim.warmup, final=False, max_batches=6, batch_size=250)
    assert 0 < first.counts["records_in"] < len(sim.events)
    second = det.consume(consumer, cfg)  # a new process: state and checkpoints from DynamoDB
    assert second.detector.counts["records_in"] == len(sim.events) + 2  # every record exactly once over both runs
    assert first.published + second.published == 2
    again = det.consume(consumer, cfg)  # nothing new on the stream: nothing re-alarmed
    assert again.published == 0 and again.counts["records_in"] == second.detector.counts["records_in"]
    texts = [m["text"] for m in messages.sent_messages(quiet_seconds=0) if consumer in m["text"]]
    assert len(texts) == 2


def _outputs():
    from shoplake import infra

    return infra.outputs()


def test_handler_deduplicates_and_respects_the_cool_down(provisioned):
    outputs = _outputs()
    sns, dynamodb = config.client("sns"), config.client("dynamodb")
    detector = f"unit-{uuid.uuid4().hex[:6]}"

    def alarm(incident: str, at: str) -> dict:
        return {
            "incident_id": incident,
            "detector": detector,
            "kind": "surge",
            "window_start": at,
            "window_end": at,
            "observed": 90,
            "expected": 30.0,
            "score": 50.0,
            "threshold": 20.0,
            "raised_at": at,
        }

    def send(*alarms: dict) -> list[str]:
        answer = rate_alarm.process_event(
            {"alarms": list(alarms)},
            outputs["topic_arn:alarms"],
            outputs["table:alarm_state"],
            sns,
            dynamodb,
            cooldown_seconds=900,
        )
        return [r["status"] for r in answer["results"]]

    assert send(alarm("i1", "2011-11-09T10:00:00Z")) == ["published"]
    assert send(alarm("i1", "2011-11-09T10:00:00Z")) == ["duplicate"]
    assert send(alarm("i2", "2011-11-09T10:10:00Z")) == ["cooled_down"]  # 10 min < 15 min cool-down
    assert send(alarm("i2", "2011-11-09T10:10:00Z"), alarm("i3", "2011-11-09T10:20:00Z")) == ["duplicate", "published"]
    texts = [m["text"] for m in messages.sent_messages(quiet_seconds=0) if "Incident i1" in m["text"]]
    assert any("x3.0" in t for t in texts)
    with pytest.raises(ValueError, match="missing"):
        send({"incident_id": "x"})
