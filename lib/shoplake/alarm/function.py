"""Lambda handler: the transaction-rate detector on aws — Kinesis tumbling windows → shoplake.alarm → rate_alarm → SNS.

Kinesis Data Analytics for SQL is discontinued, so on aws the detector is this function on the ``orders`` stream with
an event-source mapping that has ``TumblingWindowInSeconds`` (``infra/resources.yaml``: ``orders-to-rate-detector``).
It runs the SAME detection code as the local detector (``shoplake.alarm.detector.RateDetector``: event-time windows,
watermark over shards, random cut forest, alarm policy) — only the transport differs. Deployed as a bundle
(``shoplake/...`` package layout) with numpy + krcf from a layer.

Lambda's tumbling windows are per shard and in *arrival* time; the detector's windows are in *event* (order) time.
So the two levels are:

1. **every invocation** of a tumbling window decodes its records (malformed ones dead-lettered with the reason, never
   a crash) and adds them to the window ``state`` (:class:`WindowState`, a flat map of strings, far below the 1 MB
   limit): the records' event-time windows (``EventTimeWindows``, de-duplicated per ``InvoiceNo#LineNo``) and their
   order times. A record whose event-time window the detector has already closed (``closed_before``, read from
   ``alarm_state`` with a one-attribute projection) is *late*: counted and dead-lettered. If ``rate-alarm-dlq``
   refuses a dead letter, the state keeps only the records before it and ``batchItemFailures`` names it, so Lambda
   re-sends from there (re-adding a record is idempotent: it is then a duplicate);
2. **the final invoke** (``isFinalInvokeForWindow``, or ``isWindowTerminatedEarly``, or the state growing past
   ``SPILL_BYTES``) merges the shard's window state into the detector in DynamoDB ``alarm_state`` (item
   ``detector#<DETECTOR_NAME>``: the ``RateDetector`` state as compressed JSON, the same format as the local
   consumer's, plus a version for optimistic locking and per-shard merge marks): ``RateDetector.process`` counts the
   order lines (per shard, so the watermark is the slowest shard's latest order − allowed lateness), closes the
   event-time windows the watermark passed and scores them with the forest; new alarms go through
   ``rate_alarm.process_event`` (SNS, de-dup per incident, cool-down — all decided in ``alarm_state``).

The forest (100 trees) is heavy state: it lives only in ``alarm_state`` (as the points fed to it since it was planted,
at most 2 × ``tree_size``; rebuilt from them — the same forest, same seed — in ~0.1 s on a cold container, then kept in
memory while the item's version does not change), never in the window state.

Exactly once, where it matters: shards merge concurrently, so the save is conditional on the version read (a
conflict re-reads and merges again); a retried final invoke is recognised by its last sequence number and not merged
twice; alarms are handed to ``rate_alarm`` before the save, and it answers a repeated incident ``duplicate``, so a
crash between the two never texts twice nor loses an alarm. A shard that has not merged for ``IDLE_SHARD_SECONDS``
(no traffic, or a parent shard closed by resharding) stops holding the watermark back.

Configuration (environment): ``STATE_TABLE``, ``TOPIC_ARN``, optionally ``DEAD_LETTER_QUEUE_URL``, ``DETECTOR_NAME``
(default ``rate-detector-fn``), ``WINDOW_SECONDS`` (600), ``ALLOWED_LATENESS_SECONDS`` (60), ``COOLDOWN_SECONDS``
(900), ``IDLE_SHARD_SECONDS`` (300), ``DETECTOR_CONFIG`` (a full ``DetectorConfig`` as JSON, overrides the rest).
A fresh detector learns for two days (profile, then forest); :func:`seed_state` installs a warmed-up one instead.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from shoplake.alarm._windows import EventTimeWindows, iso
from shoplake.alarm.detector import (
    DeadLetter,
    DetectorConfig,
    DetectorError,
    Malformed,
    OrderTime,
    RateDetector,
    decode,
    decode_state,
    detector_config,
    encode_state,
)
from shoplake.lambdas import rate_alarm

log = logging.getLogger("rate_detector")  # the function's log name in CloudWatch

STATE_VERSION = "1"
SPILL_BYTES = 800_000  # merge early, well before Lambda's 1 MB window-state limit
MAX_ITEM_BYTES = 390_000  # DynamoDB items are limited to 400 KB
MAX_SAVE_ATTEMPTS = 8
KEEP_ALARMS = 500  # alarm lists kept in the detector state (they would grow for ever on a live stream)


# ====================================================================== the tumbling window's state (one shard)


@dataclass
class WindowState:
    """What one shard's tumbling window has seen so far: event-time windows, order times, counters."""

    windows: EventTimeWindows
    times: dict[str, int] = field(default_factory=dict)  # "<InvoiceNo>#<LineNo>" -> order time (epoch s)
    counts: dict[str, int] = field(
        default_factory=lambda: {"records_in": 0, "accepted": 0, "malformed": 0, "late": 0, "duplicate": 0}
    )
    first_sequence: str | None = None
    last_sequence: str | None = None
    invocations: int = 0

    @classmethod
    def new(cls, config: DetectorConfig) -> WindowState:
        windows = EventTimeWindows(config.window_seconds, config.allowed_lateness_seconds)
        windows.next_start = 0  # records are late only against the detector's closed windows (``closed_before``)
        return cls(windows)

    @property
    def empty(self) -> bool:
        return self.counts["records_in"] == 0

    def add(self, data: bytes, sequence: str, closed_before: int | None) -> str | None:
        """Count one raw record; returns the dead-letter reason (``malformed: …`` / ``late: …``) or None."""
        self.counts["records_in"] += 1
        self.first_sequence = self.first_sequence or sequence
        self.last_sequence = sequence
        try:
            ts, invoice, line = decode(data)
        except Malformed as exc:
            self.counts["malformed"] += 1
            return f"malformed: {exc}"
        if closed_before is not None and closed_before > (self.windows.next_start or 0):
            self.windows.next_start = closed_before
        verdict = self.windows.add(ts, invoice, line)
        if verdict == "late":
            self.counts["late"] += 1
            return (
                f"late: order time {iso(ts)} is before the watermark's closed windows "
                f"(closed up to {iso(self.windows.next_start or 0)})"
            )
        if verdict == "duplicate":
            self.counts["duplicate"] += 1
            return None
        self.counts["accepted"] += 1
        self.times[f"{invoice}#{line}"] = int(ts)
        return None

    def to_state(self) -> dict[str, str]:
        """The ``state`` Lambda carries to the next invocation: a flat map of strings (what every runtime accepts)."""
        body = {
            "windows": self.windows.to_state(),
            "times": self.times,
            "counts": self.counts,
            "first_sequence": self.first_sequence,
            "last_sequence": self.last_sequence,
            "invocations": self.invocations,
        }
        return {"v": STATE_VERSION, "window": json.dumps(body, separators=(",", ":"))}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None, config: DetectorConfig) -> WindowState:
        if not state or "window" not in state:
            return cls.new(config)
        if state.get("v") != STATE_VERSION:
            raise DetectorError(f"window state version {state.get('v')!r} is not {STATE_VERSION}: let the window end")
        body = json.loads(state["window"])
        return cls(
            EventTimeWindows.from_state(body["windows"]),
            {k: int(v) for k, v in body["times"].items()},
            dict(body["counts"]),
            body["first_sequence"],
            body["last_sequence"],
            int(body["invocations"]),
        )

    def size(self) -> int:
        return len(self.to_state()["window"])

    def order_records(self) -> list[OrderTime]:
        """The accepted order lines (judged when their invocation decoded them), in event-time order."""
        lines = sorted(self.times.items(), key=lambda kv: (kv[1], kv[0]))
        out = []
        for key, ts in lines:
            invoice, _, line = key.rpartition("#")
            out.append(OrderTime(float(ts), invoice, int(line)))
        return out


# ====================================================================== the detector in alarm_state


@dataclass(frozen=True)
class Settings:
    """Where the function keeps its state and sends alarms and dead letters, and the detector's configuration."""

    state_table: str
    topic_arn: str
    dlq_url: str | None = None
    name: str = "rate-detector-fn"
    config: DetectorConfig = field(default_factory=detector_config)
    idle_shard_seconds: float = 300.0
    spill_bytes: int = SPILL_BYTES

    @property
    def key(self) -> str:
        return f"detector#{self.name}"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        table, topic = env.get("STATE_TABLE"), env.get("TOPIC_ARN")
        if not table or not topic:
            raise RuntimeError("set STATE_TABLE and TOPIC_ARN (the stack's alarm_state table and alarms topic)")
        if env.get("DETECTOR_CONFIG"):
            config = DetectorConfig.from_dict(json.loads(env["DETECTOR_CONFIG"]))
        else:
            config = detector_config(
                int(env.get("WINDOW_SECONDS", 600)),
                int(env.get("ALLOWED_LATENESS_SECONDS", 60)),
                cooldown_seconds=float(env.get("COOLDOWN_SECONDS", 900)),
            )
        return cls(
            table,
            topic,
            env.get("DEAD_LETTER_QUEUE_URL") or None,
            env.get("DETECTOR_NAME", "rate-detector-fn"),
            config,
            float(env.get("IDLE_SHARD_SECONDS", 300)),
        )


def seed_state(
    detector: RateDetector, settings: Settings, dynamodb: Any, shards: list[str] | None = None, overwrite: bool = False
) -> None:
    """Install a (warmed-up) detector as the function's state — e.g. one taught yesterday's windows with ``warm_up``.

    ``shards``: the stream's shards, so that the watermark waits for each of them from the first window on.
    """
    from botocore.exceptions import ClientError

    for shard in shards or []:
        detector.shard_max.setdefault(shard, float("-inf"))

    kwargs: dict[str, Any] = {}
    if not overwrite:
        kwargs = {"ConditionExpression": "attribute_not_exists(#k)", "ExpressionAttributeNames": {"#k": "key"}}
    try:
        dynamodb.put_item(TableName=settings.state_table, Item=_item(settings, detector, 1, {"shards": {}}), **kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
            raise DetectorError(f"{settings.key} already has a state: pass overwrite=True to replace it") from exc
        raise


def load_detector(settings: Settings, dynamodb: Any) -> RateDetector | None:
    """The function's detector as saved in ``alarm_state`` (None before its first window), e.g. for a chart."""
    item = dynamodb.get_item(TableName=settings.state_table, Key={"key": {"S": settings.key}}, ConsistentRead=True).get(
        "Item"
    )
    return RateDetector.from_state(decode_state(item["state"]["B"])) if item else None


def _item(settings: Settings, detector: RateDetector, version: int, marks: dict[str, Any]) -> dict[str, Any]:
    blob = encode_state(detector.to_state())
    if len(blob) > MAX_ITEM_BYTES:
        raise DetectorError(
            f"detector state is {len(blob)} bytes, over DynamoDB's 400 KB item limit: "
            "use fewer trees/shorter windows or a smaller tree_size"
        )
    closed = detector.windows.next_start
    item = {
        "key": {"S": settings.key},
        "state": {"B": blob},
        "version": {"N": str(version)},
        "marks": {"S": json.dumps(marks, separators=(",", ":"))},
        "updated_at": {"S": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
    }
    if closed is not None:
        item["closed_before"] = {"N": str(int(closed))}
    return item


@dataclass
class MergeResult:
    """What one final invoke did to the detector."""

    shard_id: str
    status: str  # merged | already_merged
    lines: int = 0
    windows_closed: int = 0
    alarms: list[dict[str, Any]] = field(default_factory=list)  # alarms with rate_alarm's answer
    dead_lettered: int = 0
    attempts: int = 0
    version: int = 0


class TumblingDetector:
    """The function's logic with its clients injected (the Lambda entry point builds them from the environment)."""

    def __init__(
        self, settings: Settings, dynamodb: Any, sns: Any, sqs: Any, kinesis: Any | None = None, cache: bool = True
    ) -> None:
        self.settings = settings
        self.dynamodb, self.sns, self.sqs, self.kinesis = dynamodb, sns, sqs, kinesis
        self.cache = cache
        self._cached: tuple[int, RateDetector] | None = None  # (version, detector) of this warm container
        self.merges: list[MergeResult] = []
        self.dead_lettered = 0

    # ------------------------------------------------------------------ one invocation
    def handle(self, event: dict[str, Any]) -> dict[str, Any]:
        """One tumbling-window invocation → ``{"state": {...}, "batchItemFailures": [...]}``."""
        records = event.get("Records") or []
        shard = event.get("shardId") or (records[0]["eventID"].split(":", 1)[0] if records else "shard-0")
        before = event.get("state") or {}
        window = WindowState.from_state(before, self.settings.config)
        failures: list[dict[str, str]] = []
        if records:
            window, failed_at = self._add(window, records, shard)
            if failed_at is not None:
                window = WindowState.from_state(before, self.settings.config)
                self._add(window, records[:failed_at], shard, send=False)  # those before it were dead-lettered
                failures = [{"itemIdentifier": records[failed_at]["kinesis"]["sequenceNumber"]}]
            window.invocations += 1
        final = bool(event.get("isFinalInvokeForWindow") or event.get("isWindowTerminatedEarly"))
        if final and failures:
            raise DetectorError(
                f"the dead-letter queue refused record {failures[0]['itemIdentifier']} in the final "
                "invoke of a window: failing it so Lambda retries the window's end"
            )
        if final or window.size() > self.settings.spill_bytes:
            self.merge(shard, window, event.get("eventSourceARN"))
            # after the final invoke Lambda drops the state; after a spill the window goes on with a fresh one
            return {
                "state": {} if final else WindowState.new(self.settings.config).to_state(),
                "batchItemFailures": failures,
            }
        return {"state": window.to_state(), "batchItemFailures": failures}

    def _add(
        self, window: WindowState, records: list[dict[str, Any]], shard: str, send: bool = True
    ) -> tuple[WindowState, int | None]:
        closed_before = self.closed_before()
        dead: list[tuple[int, DeadLetter]] = []
        for index, record in enumerate(records):
            data = base64.b64decode(record["kinesis"]["data"])
            sequence = record["kinesis"]["sequenceNumber"]
            reason = window.add(data, sequence, closed_before)
            if reason:
                dead.append((index, DeadLetter(reason, data, {"shard_id": shard, "sequence_number": sequence})))
        if not send:
            return window, None
        refused = self.dead_letter([d for _, d in dead])
        failed_at = min((dead[i][0] for i in refused), default=None)
        return window, failed_at

    def closed_before(self) -> int | None:
        """Start of the oldest event-time window the detector has not closed yet (records before it are late)."""
        item = self.dynamodb.get_item(
            TableName=self.settings.state_table,
            Key={"key": {"S": self.settings.key}},
            ProjectionExpression="closed_before",
        ).get("Item")
        return int(item["closed_before"]["N"]) if item and "closed_before" in item else None

    # ------------------------------------------------------------------ the window's end
    def merge(self, shard: str, window: WindowState, stream_arn: str | None = None) -> MergeResult:
        """Merge a shard's window state into the detector in ``alarm_state``; score and alarm what closed."""
        from botocore.exceptions import ClientError

        for attempt in range(1, MAX_SAVE_ATTEMPTS + 1):
            item = self.dynamodb.get_item(
                TableName=self.settings.state_table, Key={"key": {"S": self.settings.key}}, ConsistentRead=True
            ).get("Item")
            version = int(item["version"]["N"]) if item and "version" in item else 0
            marks = json.loads(item["marks"]["S"]) if item and "marks" in item else {"shards": {}}
            mark = marks["shards"].get(shard, {})
            if (
                window.last_sequence
                and mark.get("last_sequence")
                and int(window.last_sequence) <= int(mark["last_sequence"])
            ):
                result = MergeResult(shard, "already_merged", attempts=attempt, version=version)
                self.merges.append(result)
                return result
            detector = self._detector(item, version, stream_arn)
            self._cached = None  # the detector is being changed: only a saved one is reused
            now = time.time()
            marks.setdefault("created_at", now)
            self._lift_idle_shards(detector, shard, marks, now)
            records = window.order_records()
            windows_before = detector.counts["windows"]
            alarms, dead = detector.process(records, shard)
            if detector.watermark is not None:
                alarms += detector.advance(detector.watermark)  # an idle shard lifted: close what it held back
            for key in ("malformed", "late", "duplicate"):  # what the invocations already judged
                detector.counts[key] += window.counts[key]
                detector.counts["records_in"] += window.counts[key]
            del detector.alarms[:-KEEP_ALARMS], detector.rule_alarms[:-KEEP_ALARMS]
            outcomes = self.deliver(alarms)
            self.dead_letter(dead, strict=True)
            if window.last_sequence:
                marks["shards"][shard] = {"last_sequence": window.last_sequence, "merged_at": now}
            try:
                condition = "attribute_not_exists(#k)" if version == 0 else "version = :v"
                kwargs: dict[str, Any] = {"ConditionExpression": condition}
                if version == 0:
                    kwargs["ExpressionAttributeNames"] = {"#k": "key"}
                else:
                    kwargs["ExpressionAttributeValues"] = {":v": {"N": str(version)}}
                self.dynamodb.put_item(
                    TableName=self.settings.state_table,
                    Item=_item(self.settings, detector, version + 1, marks),
                    **kwargs,
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                log.info("another shard saved %s first (attempt %d): merging again", self.settings.key, attempt)
                continue
            if self.cache:
                self._cached = (version + 1, detector)
            result = MergeResult(
                shard,
                "merged",
                len(records),
                detector.counts["windows"] - windows_before,
                outcomes,
                len(dead),
                attempt,
                version + 1,
            )
            self.merges.append(result)
            log.info(
                "merged %d order lines of %s: %d windows closed, %d alarms",
                len(records),
                shard,
                result.windows_closed,
                len(alarms),
            )
            return result
        raise DetectorError(
            f"could not save {self.settings.key} after {MAX_SAVE_ATTEMPTS} attempts: shards keep "
            "conflicting; Lambda retries the final invoke"
        )

    def _detector(self, item: dict[str, Any] | None, version: int, stream_arn: str | None) -> RateDetector:
        if item and "state" in item:
            if self._cached and self._cached[0] == version:
                return self._cached[1]
            detector = RateDetector.from_state(decode_state(item["state"]["B"]))
            if detector.config != self.settings.config:
                log.warning(
                    "%s was saved with another configuration than the function's: keeping the saved one "
                    "(delete the item to start over with the new one)",
                    self.settings.key,
                )
            return detector
        return RateDetector(self.settings.config, name=self.settings.name, shards=self.shards(stream_arn))

    def shards(self, stream_arn: str | None) -> list[str]:
        """The open shards of the stream (so the watermark waits for every one of them)."""
        if not stream_arn or self.kinesis is None:
            return []
        name = stream_arn.rsplit("/", 1)[-1]
        shards, token = [], None
        while True:
            page = self.kinesis.list_shards(NextToken=token) if token else self.kinesis.list_shards(StreamName=name)
            shards += [s["ShardId"] for s in page["Shards"] if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
            token = page.get("NextToken")
            if not token:
                return shards

    def _lift_idle_shards(self, detector: RateDetector, shard: str, marks: dict[str, Any], now: float) -> None:
        """A shard silent for ``idle_shard_seconds`` no longer holds the watermark back (as if caught up)."""
        active = [v for s, v in detector.shard_max.items() if v != float("-inf")]
        if not active:
            return
        for other, latest in list(detector.shard_max.items()):
            if other == shard:
                continue
            last = marks["shards"].get(other, {}).get("merged_at", marks["created_at"])
            if now - last > self.settings.idle_shard_seconds and latest < max(active):
                log.info("shard %s idle for %.0f s: lifting its watermark", other, now - last)
                detector.shard_max[other] = max(active)

    # ------------------------------------------------------------------ outputs
    def deliver(self, alarms: list[Any]) -> list[dict[str, Any]]:
        """Hand alarms to the ``rate_alarm`` logic (SNS publish, de-dup per incident, cool-down in ``alarm_state``)."""
        if not alarms:
            return []
        answer = rate_alarm.process_event(
            {"alarms": [a.as_event() for a in alarms]},
            self.settings.topic_arn,
            self.settings.state_table,
            self.sns,
            self.dynamodb,
            self.settings.config.policy.cooldown_seconds,
        )
        return [
            {**a.as_event(), "status": r["status"], "text": r["text"]}
            for a, r in zip(alarms, answer["results"], strict=True)
        ]

    def dead_letter(self, dead: list[DeadLetter], strict: bool = False) -> list[int]:
        """Send dead letters to ``rate-alarm-dlq`` (same body as the local consumer's); returns refused indices."""
        if not dead or not self.settings.dlq_url:
            return []
        refused: list[int] = []
        for start in range(0, len(dead), 10):
            entries = [
                {"Id": str(start + i), "MessageBody": d.message_body(self.settings.key)}
                for i, d in enumerate(dead[start : start + 10])
            ]
            response = self.sqs.send_message_batch(QueueUrl=self.settings.dlq_url, Entries=entries)
            failed = [int(f["Id"]) for f in response.get("Failed", [])]
            self.dead_lettered += len(entries) - len(failed)
            refused += failed
        if refused and strict:
            raise DetectorError(f"dead-letter queue refused {len(refused)} messages: Lambda retries the final invoke")
        return sorted(refused)


# ====================================================================== Lambda entry point

_DETECTOR: TumblingDetector | None = None


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point (tumbling-window event → ``{"state", "batchItemFailures"}``); config from the environment."""
    global _DETECTOR
    if _DETECTOR is None:  # one per warm container: it keeps the planted forest between final invokes
        client = rate_alarm._client
        _DETECTOR = TumblingDetector(
            Settings.from_env(), client("dynamodb"), client("sns"), client("sqs"), client("kinesis")
        )
    return _DETECTOR.handle(event)
