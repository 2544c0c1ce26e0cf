"""Lambda handler: an order-rate alarm from the detector → one short SNS text per incident (de-dup + cool-down).

Standalone on purpose (stdlib + boto3 only, no shoplake imports): ``infra`` zips this one file and deploys it as
the ``rate-alarm`` function; locally the detector (``shoplake.alarm``) calls :func:`process` with the emulator's
clients, the same code path.

Configuration (environment): ``TOPIC_ARN`` (SNS topic ``alarms``, SMS subscription), ``STATE_TABLE`` (DynamoDB
``alarm_state``, hash key ``key``), optionally ``COOLDOWN_SECONDS`` (default 900) and ``AWS_ENDPOINT_URL`` (loopback
only, for the local emulator).

Event: one alarm, or ``{"alarms": [alarm, ...]}``; an alarm has ``incident_id, detector, kind (surge|drop),
window_start, window_end, observed, expected, score, threshold, raised_at`` (event time, ISO 8601 UTC).

Per alarm, in this order (all decisions in ``alarm_state``, so a restarted or duplicated detector cannot text twice):

1. **de-dup per incident**: item ``incident#<detector>#<incident_id>`` is claimed with a conditional put; an
   incident already ``sent`` or ``suppressed`` is answered ``duplicate`` (a claim left ``pending`` by a failed
   publish is taken over, so retries still deliver);
2. **cool-down**: item ``cooldown#<detector>`` holds the event time of the last published alarm; a conditional
   update lets an alarm through only if ``cooldown_seconds`` of event time have passed (or it is the same
   incident retrying); otherwise the incident is marked ``suppressed`` and answered ``cooled_down``;
3. **publish** the text to the topic, then mark the incident ``sent`` with the message id.

Invalid alarms raise ``ValueError`` (a function error: the caller retries, then dead-letters).
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from typing import Any

from shoplake.lambdas import _aws

log = logging.getLogger("rate_alarm")

REQUIRED = (
    "incident_id",
    "detector",
    "kind",
    "window_start",
    "window_end",
    "observed",
    "expected",
    "score",
    "threshold",
    "raised_at",
)
DEFAULT_COOLDOWN_SECONDS = 900.0
_CLIENTS: dict[str, Any] = {}


def _epoch(value: str) -> float:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC).timestamp()


def validate(alarm: Any) -> dict[str, Any]:
    """The alarm if it is complete; ValueError saying what is missing otherwise."""
    if not isinstance(alarm, dict):
        raise ValueError(f"an alarm must be a JSON object, got {type(alarm).__name__}")
    missing = [k for k in REQUIRED if alarm.get(k) is None]
    if missing:
        raise ValueError(f"alarm is missing {missing}")
    if alarm["kind"] not in ("surge", "drop"):
        raise ValueError(f"alarm kind must be surge or drop, got {alarm['kind']!r}")
    for key in ("window_start", "window_end", "raised_at"):
        try:
            _epoch(alarm[key])
        except ValueError:
            raise ValueError(f"alarm {key} must be ISO 8601 UTC, got {alarm[key]!r}") from None
    return alarm


def message(alarm: dict[str, Any]) -> tuple[str, str]:
    """(subject, text) of the SMS: what happened, window, observed vs expected, score — under 200 characters."""
    start, end = alarm["window_start"], alarm["window_end"]
    observed, expected = float(alarm["observed"]), float(alarm["expected"])
    ratio = f"x{observed / expected:.1f}" if expected > 0 else "no baseline"
    what = "order SURGE" if alarm["kind"] == "surge" else "order DROP"
    text = (
        f"shoplake: {what} {start[11:16]}-{end[11:16]} UTC {start[:10]}: {int(observed)} orders vs "
        f"~{expected:.0f} expected ({ratio}); score {float(alarm['score']):.0f} > {float(alarm['threshold']):.0f}. "
        f"Incident {alarm['incident_id']}"
    )
    return f"shoplake {what.lower()}", text


def process(
    alarm: dict[str, Any],
    topic_arn: str,
    table: str,
    sns: Any,
    dynamodb: Any,
    cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS,
) -> dict[str, Any]:
    """Handle one alarm: ``{"status": published|duplicate|cooled_down, "incident_key", "message_id"?, "text"}``."""
    from botocore.exceptions import ClientError

    alarm = validate(alarm)
    detector, incident = str(alarm["detector"]), str(alarm["incident_id"])
    incident_key = f"incident#{detector}#{incident}"
    raised = _epoch(alarm["raised_at"])
    subject, text = message(alarm)
    try:
        dynamodb.put_item(
            TableName=table,
            Item={
                "key": {"S": incident_key},
                "status": {"S": "pending"},
                "raised_at": {"S": alarm["raised_at"]},
                "kind": {"S": alarm["kind"]},
                "text": {"S": text},
            },
            ConditionExpression="attribute_not_exists(#k) OR #s = :pending",
            ExpressionAttributeNames={"#k": "key", "#s": "status"},
            ExpressionAttributeValues={":pending": {"S": "pending"}},
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            return {"status": "duplicate", "incident_key": incident_key, "text": text}
        raise
    try:
        dynamodb.update_item(
            TableName=table,
            Key={"key": {"S": f"cooldown#{detector}"}},
            UpdateExpression="SET last_alarm_epoch = :t, last_incident = :i, last_alarm_at = :at",
            ConditionExpression="attribute_not_exists(last_alarm_epoch) OR last_alarm_epoch <= :limit OR last_incident = :i",
            ExpressionAttributeValues={
                ":t": {"N": repr(raised)},
                ":i": {"S": incident},
                ":at": {"S": alarm["raised_at"]},
                ":limit": {"N": repr(raised - cooldown_seconds)},
            },
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        _mark(dynamodb, table, incident_key, "suppressed")
        return {"status": "cooled_down", "incident_key": incident_key, "text": text}
    response = sns.publish(TopicArn=topic_arn, Subject=subject, Message=text)
    _mark(dynamodb, table, incident_key, "sent", response.get("MessageId"))
    log.info("published %s: %s", incident_key, text)
    return {"status": "published", "incident_key": incident_key, "message_id": response.get("MessageId"), "text": text}


def _mark(dynamodb: Any, table: str, key: str, status: str, message_id: str | None = None) -> None:
    values: dict[str, Any] = {":s": {"S": status}}
    expression = "SET #s = :s"
    if message_id:
        expression += ", message_id = :m"
        values[":m"] = {"S": message_id}
    dynamodb.update_item(
        TableName=table,
        Key={"key": {"S": key}},
        UpdateExpression=expression,
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=values,
    )


def process_event(
    event: Any, topic_arn: str, table: str, sns: Any, dynamodb: Any, cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS
) -> dict[str, Any]:
    """Handle one alarm or ``{"alarms": [...]}``; returns per-alarm results and counts."""
    alarms = event.get("alarms") if isinstance(event, dict) and "alarms" in event else [event]
    if not isinstance(alarms, list):
        raise ValueError("'alarms' must be a list of alarms")
    results = [process(a, topic_arn, table, sns, dynamodb, cooldown_seconds) for a in alarms]
    counts = {"received": len(results)}
    for status in ("published", "duplicate", "cooled_down"):
        counts[status] = sum(r["status"] == status for r in results)
    return {"counts": counts, "results": results}


_check_endpoint = _aws.check_endpoint


def _client(service: str) -> Any:
    return _aws.client(service, _CLIENTS)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point; configuration from the environment."""
    topic, table = os.environ.get("TOPIC_ARN"), os.environ.get("STATE_TABLE")
    if not topic or not table:
        raise RuntimeError("set TOPIC_ARN and STATE_TABLE (the stack's alarms topic and alarm_state table)")
    cooldown = float(os.environ.get("COOLDOWN_SECONDS", DEFAULT_COOLDOWN_SECONDS))
    return process_event(event, topic, table, _client("sns"), _client("dynamodb"), cooldown)
