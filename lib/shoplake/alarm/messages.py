"""Read back the alarm texts the SNS topic sent: an SQS ``alarm-inbox`` queue subscribed to the ``alarms`` topic.

The emulator's ``/moto-api/data.json`` would show the topic's ``sent_notifications`` too, but it answers 500 as
soon as a Lambda function exists on the stack (moto asks Docker while dumping it), so shoplake reads back through
a subscription that works the same on aws: every publish to the topic lands in the inbox as well as on the phone.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from shoplake import config
from shoplake.errors import ShoplakeError

log = logging.getLogger(__name__)


def _outputs() -> dict[str, str]:
    from shoplake import infra

    outputs = infra.outputs()
    if "topic_arn:alarms" not in outputs or "queue_url:alarm-inbox" not in outputs:
        raise ShoplakeError(
            "the alarms topic or the alarm-inbox queue is missing: run notebook 00_provision "
            "(or `shoplake infra apply`)"
        )
    return outputs


def ensure_inbox() -> str:
    """Subscribe the ``alarm-inbox`` queue to the ``alarms`` topic (idempotent); returns the queue URL."""
    outputs = _outputs()
    sns = config.client("sns")
    topic, queue_arn = outputs["topic_arn:alarms"], outputs["queue_arn:alarm-inbox"]
    pages = sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic)
    if not any(s["Endpoint"] == queue_arn for page in pages for s in page["Subscriptions"]):
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "false"},
            ReturnSubscriptionArn=True,
        )
        if not config.settings().is_local:  # on aws the queue must allow the topic to send
            policy = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "sns.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": queue_arn,
                        "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
                    }
                ],
            }
            config.client("sqs").set_queue_attributes(
                QueueUrl=outputs["queue_url:alarm-inbox"], Attributes={"Policy": json.dumps(policy)}
            )
    return outputs["queue_url:alarm-inbox"]


def sent_messages(max_polls: int = 50) -> list[dict[str, Any]]:
    """Every alarm text in the inbox (oldest first): ``{message_id, subject, text, timestamp}``; leaves them there."""
    url = ensure_inbox()
    sqs = config.client("sqs")
    seen: dict[str, dict[str, Any]] = {}
    empty = 0
    for _ in range(max_polls):
        batch = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0, WaitTimeSeconds=0, AttributeNames=["All"]
        ).get("Messages", [])
        new = 0
        for raw in batch:
            body = json.loads(raw["Body"])
            message_id = body.get("MessageId", raw["MessageId"])
            if message_id not in seen:
                new += 1
                seen[message_id] = {
                    "message_id": message_id,
                    "subject": body.get("Subject"),
                    "text": body.get("Message"),
                    "timestamp": body.get("Timestamp"),
                }
        empty = empty + 1 if not new else 0
        if empty >= 3:
            break
    return sorted(seen.values(), key=lambda m: (m["timestamp"] or "", m["message_id"]))


def purge_inbox() -> int:
    """Delete every message in the inbox (a fresh run); returns how many were removed."""
    url = ensure_inbox()
    sqs = config.client("sqs")
    removed = 0
    while True:
        batch = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30).get("Messages", [])
        if not batch:
            return removed
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        )
        removed += len(batch)
