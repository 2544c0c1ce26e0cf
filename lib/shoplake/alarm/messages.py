"""Read back the alarm texts the SNS topic sent: an SQS ``alarm-inbox`` queue subscribed to the ``alarms`` topic.

The emulator's ``/moto-api/data.json`` would show the topic's ``sent_notifications`` too, but it answers 500 as
soon as a Lambda function exists on the stack (moto asks Docker while dumping it), so shoplake reads back through
a subscription that works the same on aws: every publish to the topic lands in the inbox as well as on the phone.

Reading SQS reliably (the same code on both targets): every receive **long-polls** (``WaitTimeSeconds`` ≥ 1, so SQS
asks all its servers and an empty answer means empty, unlike a short poll), reading goes on until a **quiet period**
with no new message (or until ``expect`` texts arrived and a receive came back empty), and messages are
**de-duplicated** by the SNS message id (SNS → SQS is at-least-once, and SQS may hand a message out twice). The
received messages are hidden while reading (so each receive brings others) and made visible again at the end.
The waits are parameters: tests use short ones; the defaults suit a real account.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from shoplake import config
from shoplake.errors import ShoplakeError
from shoplake.resources import topic_to_queue_policy

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
        # first: the queue must allow the topic to send (aws checks; the emulator does not)
        policy = topic_to_queue_policy(queue_arn, topic)
        config.client("sqs").set_queue_attributes(
            QueueUrl=outputs["queue_url:alarm-inbox"], Attributes={"Policy": json.dumps(policy)}
        )
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "false"},
            ReturnSubscriptionArn=True,
        )
    return outputs["queue_url:alarm-inbox"]


HIDE_SECONDS = 60  # how long received messages stay hidden while one call reads (then made visible again)


class InboxError(ShoplakeError):
    """The alarm inbox did not deliver what was expected, or a read parameter is out of range."""


def _check_waits(wait_seconds: int, quiet_seconds: float, max_seconds: float) -> None:
    if not 1 <= wait_seconds <= 20:
        raise InboxError(f"wait_seconds must be 1..20 (SQS long polling), got {wait_seconds!r}")
    if quiet_seconds < 0 or max_seconds <= 0:
        raise InboxError(f"quiet_seconds must be ≥ 0 and max_seconds > 0, got {quiet_seconds!r}, {max_seconds!r}")


def _text(raw: dict[str, Any]) -> dict[str, Any]:
    """One inbox message as ``{message_id, subject, text, timestamp}`` (SNS envelope, or a raw delivery)."""
    try:
        body = json.loads(raw["Body"])
    except json.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("Type") == "Notification":
        return {
            "message_id": body.get("MessageId", raw["MessageId"]),
            "subject": body.get("Subject"),
            "text": body.get("Message"),
            "timestamp": body.get("Timestamp"),
        }
    sent = raw.get("Attributes", {}).get("SentTimestamp")  # raw message delivery: the body is the text itself
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(sent) / 1000)) if sent else None
    return {"message_id": raw["MessageId"], "subject": None, "text": raw["Body"], "timestamp": stamp}


def _receive(sqs: Any, url: str, wait_seconds: int) -> list[dict[str, Any]]:
    return sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=wait_seconds,
        VisibilityTimeout=HIDE_SECONDS,
        AttributeNames=["SentTimestamp"],
    ).get("Messages", [])


def sent_messages(
    *, expect: int | None = None, wait_seconds: int = 1, quiet_seconds: float = 3.0, max_seconds: float = 120.0
) -> list[dict[str, Any]]:
    """Every alarm text in the inbox (oldest first): ``{message_id, subject, text, timestamp}``; leaves them there.

    Reads with long polls until ``quiet_seconds`` pass without a new text, or — with ``expect`` — until that many
    distinct texts arrived and a receive came back empty; :class:`InboxError` if ``expect`` is not reached within
    ``max_seconds``.
    """
    _check_waits(wait_seconds, quiet_seconds, max_seconds)
    url = ensure_inbox()
    sqs = config.client("sqs")
    seen: dict[str, dict[str, Any]] = {}
    handles: dict[str, str] = {}  # SQS message id -> latest receipt handle (to make it visible again)
    began = last_new = time.monotonic()
    try:
        while True:
            batch = _receive(sqs, url, wait_seconds)
            now = time.monotonic()
            for raw in batch:
                handles[raw["MessageId"]] = raw["ReceiptHandle"]
                message = _text(raw)
                if message["message_id"] not in seen:
                    seen[message["message_id"]] = message
                    last_new = now
            enough = expect is not None and len(seen) >= expect
            if not batch and (enough or (expect is None and now - last_new >= quiet_seconds)):
                break
            if now - began >= max_seconds:
                if expect is not None and not enough:
                    raise InboxError(
                        f"only {len(seen)} of {expect} alarm texts reached the alarm-inbox queue within "
                        f"{max_seconds:.0f} s: check its subscription to the alarms topic (`shoplake infra plan`)"
                    )
                break
    finally:
        _release(sqs, url, list(handles.values()))
    return sorted(seen.values(), key=lambda m: (m["timestamp"] or "", m["message_id"]))


def _release(sqs: Any, url: str, handles: list[str]) -> None:
    """Make received messages visible again at once (a later read sees them)."""
    for start in range(0, len(handles), 10):
        entries = [
            {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
            for i, h in enumerate(handles[start : start + 10])
        ]
        failed = sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries).get("Failed", [])
        if failed:  # a stale handle (the message was handed out again): it reappears after HIDE_SECONDS anyway
            log.warning("%d inbox messages stay hidden for up to %d s: %s", len(failed), HIDE_SECONDS, failed[0])


def purge_inbox(*, wait_seconds: int = 1, quiet_seconds: float = 3.0, max_seconds: float = 300.0) -> int:
    """Delete every message in the inbox (a fresh run): reads with long polls until ``quiet_seconds`` pass without a
    message; returns how many distinct messages were removed."""
    _check_waits(wait_seconds, quiet_seconds, max_seconds)
    url = ensure_inbox()
    sqs = config.client("sqs")
    removed: set[str] = set()
    began = last = time.monotonic()
    while True:
        batch = _receive(sqs, url, wait_seconds)
        now = time.monotonic()
        if batch:
            last = now
            response = sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)],
            )
            failed = {int(f["Id"]) for f in response.get("Failed", [])}
            removed.update(m["MessageId"] for i, m in enumerate(batch) if i not in failed)
        elif now - last >= quiet_seconds:
            return len(removed)
        if now - began >= max_seconds:
            raise InboxError(f"the alarm-inbox queue was still receiving messages after {max_seconds:.0f} s of purging")
