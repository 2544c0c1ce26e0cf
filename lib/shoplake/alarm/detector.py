"""The rate detector: order events → event-time windows → random cut forest (+ the classic rule) → alarm policy.

:class:`RateDetector` is the transport-free core (records in, alarms out, state as JSON). :func:`consume` runs it
through the target's Lambda runtime (``shoplake.lambda_runtime``; on aws the deployed ``rate-detector`` function does
the work and consume waits for it and reads its state back); locally as its own consumer of the ``orders`` stream
through ``shoplake.lambda_local`` (Kinesis event-source-mapping
semantics, checkpoints per shard under consumer ``rate-detector`` in the ``checkpoints`` table — independent of
the order-history consumer), keeps its state in DynamoDB ``alarm_state`` (item ``detector#<name>``, saved at most every
``save_every_seconds``, always before the mapping checkpoints the records it counted; the state keeps each shard's last
counted sequence number, so re-delivered records are skipped: exactly once across crashes), hands alarms to the ``rate_alarm`` handler (SNS + de-dup +
cool-down) and sends malformed and late records to the ``rate-alarm-dlq`` queue with the reason.

Watermark across shards: each shard's largest order time is tracked; the watermark is the smallest of them
(over every shard of the stream) minus the allowed lateness, so a shard that lags does not turn its records late.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field
from datetime import UTC
from typing import Any, NamedTuple

from shoplake import events
from shoplake.alarm._policy import Alarm, AlarmPolicy, PolicyConfig
from shoplake.alarm._rcf import RateForest, RcfConfig, config_from_dict
from shoplake.alarm._rule import RuleAlarm, RuleConfig, SlidingWindowRule
from shoplake.alarm._windows import EventTimeWindows, WindowCount, iso
from shoplake.errors import ConfigError, ShoplakeError

log = logging.getLogger(__name__)

CONSUMER = "rate-detector"
HISTORY_LIMIT = 2_000  # windows kept in the state for charts (two weeks of 10-minute windows)
SAVE_EVERY_SECONDS = 1.0  # the local consumer saves its state (then checkpoints) at most this often per shard


class DetectorError(ShoplakeError):
    """The detector cannot run (missing resources, state of another configuration)."""


@dataclass(frozen=True)
class DetectorConfig:
    """Every knob of the detector; ``window_seconds`` must match ``rcf.window_seconds``."""

    window_seconds: int = 600
    allowed_lateness_seconds: int = 60
    rcf: RcfConfig = field(default_factory=RcfConfig)
    rule: RuleConfig = field(default_factory=RuleConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)

    def __post_init__(self) -> None:
        if self.rcf.window_seconds != self.window_seconds:
            raise ConfigError(
                f"rcf.window_seconds ({self.rcf.window_seconds}) must equal window_seconds "
                f"({self.window_seconds}); build the config with detector_config(...)"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        return cls(
            window_seconds=data["window_seconds"],
            allowed_lateness_seconds=data["allowed_lateness_seconds"],
            rcf=config_from_dict(data["rcf"]),
            rule=RuleConfig(**data["rule"]),
            policy=PolicyConfig(**data["policy"]),
        )


def detector_config(
    window_seconds: int = 600,
    allowed_lateness_seconds: int = 60,
    *,
    rule_threshold: int | None = None,
    cooldown_seconds: float | None = None,
    **rcf: Any,
) -> DetectorConfig:
    """A consistent config: the window length is shared by windows and forest; other RCF knobs by keyword."""
    rule = RuleConfig(threshold=rule_threshold) if rule_threshold is not None else RuleConfig()
    policy = PolicyConfig(cooldown_seconds=cooldown_seconds) if cooldown_seconds is not None else PolicyConfig()
    rcf_config = RcfConfig(window_seconds=window_seconds, **rcf)
    return DetectorConfig(window_seconds, allowed_lateness_seconds, rcf_config, rule, policy)


Malformed = events.Rejected  # an order record the detector cannot use (``.reason`` says why)


class OrderTime(NamedTuple):
    """An order already judged valid, reduced to what the detector counts (the aws window state keeps only these)."""

    ts: float
    invoice: str
    line: int


def decode(record: bytes | str | dict[str, Any]) -> tuple[float, str, int]:
    """(order time, InvoiceNo, LineNo) of one order event, judged by :func:`shoplake.events.validate` like every
    other consumer judges it; :class:`Malformed` (``events.Rejected``) with the reason otherwise.

    An event plain enough to be valid beyond doubt (:func:`_plain_order`: ASCII keys and text, exact JSON types,
    values well inside the rules) is accepted without the full validation; every other one — any doubt — goes to
    :func:`~shoplake.events.validate`, so the verdicts are the same (``tests/unit/test_alarm_decode.py``)."""
    if isinstance(record, bytes | str):
        try:
            event = json.loads(record)
        except ValueError:  # not JSON (or not UTF-8): events.decode gives the reason
            events.decode(record)
            raise
        if type(event) is dict:
            plain = _plain_order(event)
            if plain is not None:
                return plain
        return _judged(event)
    return _judged(record if isinstance(record, dict) else events.decode(record))


def _judged(event: Any) -> tuple[float, str, int]:
    """The full validation; the order time read as validate reads it."""
    valid = events.validate(event)
    when = events.invoice_time(valid["InvoiceDate"]).replace(tzinfo=UTC)
    return when.timestamp(), valid["InvoiceNo"], valid["LineNo"]


_PLAIN_KEY = re.compile(r"[A-Za-z0-9]{1,64}")


def _plain_order(event: dict[str, Any]) -> tuple[float, str, int] | None:
    """(order time, InvoiceNo, LineNo) when each field passes a check stricter than :func:`events.validate`'s rule
    for it (so validate would accept the event, unchanged); None when in any doubt."""
    invoice, stock, quantity = event.get("InvoiceNo"), event.get("StockCode"), event.get("Quantity")
    if type(invoice) is not str or type(stock) is not str or type(quantity) is not int:
        return None
    if not (_PLAIN_KEY.fullmatch(invoice) and _PLAIN_KEY.fullmatch(stock)):
        return None
    if not 0 < abs(quantity) <= events.MAX_QUANTITY or (quantity < 0) != (invoice[0] in "Cc"):
        return None
    date, price, line = event.get("InvoiceDate"), event.get("UnitPrice"), event.get("LineNo")
    if type(date) is not str:
        return None
    try:  # validate's own reading: its shape, a real date and time ("…T24:00:00Z", "…:60Z": None → validate)
        when = events.invoice_time(date)
    except ValueError:
        return None
    if not events.YEARS[0] <= when.year <= events.YEARS[1]:
        return None
    if type(price) not in (int, float) or not 0 <= price <= events.MAX_UNIT_PRICE:  # NaN fails the comparison
        return None
    if type(line) is not int or not 0 <= line <= events.MAX_LINE_NO:
        return None
    country, description, customer = event.get("Country"), event.get("Description"), event.get("CustomerID")
    if type(country) is not str or not country.isascii() or not country.strip():
        return None
    if description is not None and (type(description) is not str or not description.isascii()):
        return None
    if customer is not None and customer != "" and (type(customer) is not str or not _PLAIN_KEY.fullmatch(customer)):
        return None
    return when.replace(tzinfo=UTC).timestamp(), invoice, line


@dataclass
class DeadLetter:
    """A record the detector did not count, with why."""

    reason: str
    data: bytes
    source: dict[str, Any]

    def message_body(self, consumer: str) -> str:
        """The ``rate-alarm-dlq`` message: the reason, the record (base64 + the first 1,000 characters as text),
        where it came from and which consumer set it aside (the same from the local detector and the Lambda)."""
        return json.dumps(
            {
                "reason": self.reason,
                "data_base64": base64.b64encode(self.data).decode("ascii"),
                "data_text": self.data.decode("utf-8", "replace")[:1000],
                "source": self.source,
                "consumer": consumer,
            }
        )


class RateDetector:
    """Stateful detector core. Feed records with :meth:`process`, close the tail with :meth:`flush`."""

    def __init__(
        self, config: DetectorConfig | None = None, name: str = "rcf", shards: list[str] | None = None
    ) -> None:
        self.config = config or detector_config()
        cfg = self.config
        self.name = name
        self.windows = EventTimeWindows(cfg.window_seconds, cfg.allowed_lateness_seconds)
        self.forest = RateForest(cfg.rcf)
        self.rule = SlidingWindowRule(cfg.rule)
        self.policy = AlarmPolicy(name, cfg.policy)
        self.shard_max: dict[str, float] = {s: float("-inf") for s in (shards or [])}
        self.counts = {
            "records_in": 0,
            "accepted": 0,
            "malformed": 0,
            "late": 0,
            "duplicate": 0,
            "windows": 0,
            "anomalous_windows": 0,
            "alarms": 0,
            "rule_alarms": 0,
        }
        self.history: list[dict[str, Any]] = []
        self.alarms: list[Alarm] = []
        self.rule_alarms: list[RuleAlarm] = []
        # shard → sequence number of the last record counted (the stream consumer skips re-deliveries up to it)
        self.sequences: dict[str, str] = {}

    # ------------------------------------------------------------------ feeding
    def warm_up(self, windows: list[WindowCount]) -> None:
        """Teach the forest earlier days' window counts (deployed: the state carried from yesterday)."""
        for window in windows:
            self.forest.update(window.orders, window.start)

    def process(
        self, records: list[Any], shard_id: str = "shard-0", sources: list[dict[str, Any]] | None = None
    ) -> tuple[list[Alarm], list[DeadLetter]]:
        """Count a batch of records of one shard; returns (new alarms, dead letters) — never raises on bad data."""
        dead: list[DeadLetter] = []
        alarms: list[Alarm] = []
        self.shard_max.setdefault(shard_id, float("-inf"))
        for i, record in enumerate(records):
            self.counts["records_in"] += 1
            source = sources[i] if sources else {}
            try:
                ts, invoice, line = record if isinstance(record, OrderTime) else decode(record)
            except Malformed as exc:
                self.counts["malformed"] += 1
                dead.append(DeadLetter(f"malformed: {exc}", _bytes(record), source))
                continue
            verdict = self.windows.add(ts, invoice, line)
            if verdict == "late":
                self.counts["late"] += 1
                dead.append(
                    DeadLetter(
                        f"late: order time {iso(ts)} is before the watermark's closed windows "
                        f"(closed up to {iso(self.windows.next_start or 0)})",
                        _bytes(record),
                        source,
                    )
                )
                continue
            if verdict == "duplicate":
                self.counts["duplicate"] += 1
                continue
            self.counts["accepted"] += 1
            if ts > self.shard_max[shard_id]:
                self.shard_max[shard_id] = ts
                mark = self.watermark
                # close windows as soon as the watermark passes them: decisions do not wait for the batch's end
                if (
                    mark is not None
                    and self.windows.next_start is not None
                    and mark >= self.windows.next_start + self.config.window_seconds
                ):
                    alarms.extend(self._close(mark))
            if line == 0 and not invoice.startswith("C"):
                rule_alarm = self.rule.add(ts)
                if rule_alarm:
                    self.rule_alarms.append(rule_alarm)
                    self.counts["rule_alarms"] += 1
        return alarms, dead

    @property
    def watermark(self) -> float | None:
        """min over shards of the largest order time seen, minus the allowed lateness (None until all shards spoke)."""
        if not self.shard_max or any(v == float("-inf") for v in self.shard_max.values()):
            return None
        return min(self.shard_max.values()) - self.config.allowed_lateness_seconds

    def flush(self) -> list[Alarm]:
        """End of a replay: close every open window (a live stream never needs this)."""
        mark = self.windows.max_event_ts
        alarms = self._close(self.watermark)
        closed = self.windows.flush()
        return alarms + self._score(closed, mark)

    def advance(self, watermark: float | None) -> list[Alarm]:
        """Close and score every window that ends before ``watermark`` (e.g. after an idle shard stops holding it)."""
        return self._close(watermark)

    def score_windows(self, closed: list[WindowCount]) -> list[Alarm]:
        """Score windows counted elsewhere (a recorded rate series: one row = one closed window), in time order."""
        return self._score(closed, None)

    def _close(self, watermark: float | None) -> list[Alarm]:
        if watermark is None:
            return []
        return self._score(self.windows.close_ready(watermark), watermark + self.config.allowed_lateness_seconds)

    def _score(self, closed: list[WindowCount], decided_at: float | None) -> list[Alarm]:
        alarms = []
        for window in closed:
            verdict = self.forest.update(window.orders, window.start)
            self.counts["windows"] += 1
            self.counts["anomalous_windows"] += int(verdict.anomalous)
            decided = max(window.end, decided_at or window.end)
            alarm = self.policy.observe(
                window, verdict.anomalous, verdict.score, verdict.threshold, verdict.expected, watermark=decided
            )
            self.history.append(
                {
                    "window_start": iso(window.start),
                    "window_end": iso(window.end),
                    "orders": window.orders,
                    "lines": window.lines,
                    "cancellations": window.cancellations,
                    "expected": verdict.expected,
                    "score": verdict.score,
                    "threshold": verdict.threshold,
                    "anomalous": verdict.anomalous,
                    "alarm": alarm.incident_id if alarm else None,
                    "decided_at": iso(decided),
                }
            )
            del self.history[:-HISTORY_LIMIT]
            if alarm:
                self.alarms.append(alarm)
                self.counts["alarms"] += 1
                alarms.append(alarm)
        return alarms

    # ------------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config.as_dict(),
            "windows": self.windows.to_state(),
            "forest": self.forest.to_state(),
            "rule": self.rule.to_state(),
            "policy": self.policy.to_state(),
            "shard_max": self.shard_max,
            "counts": self.counts,
            "history": self.history,
            "alarms": [asdict(a) for a in self.alarms],
            "rule_alarms": [asdict(a) for a in self.rule_alarms],
            "sequences": dict(self.sequences),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RateDetector:
        detector = cls(DetectorConfig.from_dict(state["config"]), state["name"])
        detector.windows = EventTimeWindows.from_state(state["windows"])
        detector.forest = RateForest.from_state(state["forest"])
        detector.rule = SlidingWindowRule.from_state(state["rule"])
        detector.policy = AlarmPolicy.from_state(state["policy"])
        detector.shard_max = {k: float(v) for k, v in state["shard_max"].items()}
        detector.counts.update(state["counts"])
        detector.history = list(state["history"])
        detector.alarms = [Alarm(**a) for a in state["alarms"]]
        detector.rule_alarms = [RuleAlarm(**a) for a in state["rule_alarms"]]
        detector.sequences = dict(state.get("sequences", {}))  # states saved before it was kept have none
        return detector


def _bytes(record: Any) -> bytes:
    if isinstance(record, bytes):
        return record
    if isinstance(record, str):
        return record.encode()
    return json.dumps(record, default=str).encode()


# ====================================================================== on the stack (local event-source mapping)


def encode_state(state: dict[str, Any]) -> bytes:
    """The state as compressed JSON (a DynamoDB binary attribute; items are limited to 400 KB)."""
    return zlib.compress(json.dumps(state, separators=(",", ":")).encode(), 6)


def decode_state(blob: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(blob))


class StateStore:
    """The detector's state in DynamoDB ``alarm_state`` under ``detector#<consumer>``."""

    def __init__(self, consumer: str = CONSUMER, table: str | None = None) -> None:
        from shoplake import config

        self.key = f"detector#{consumer}"
        self.table = table or config.resource_name("alarm_state")
        self.client = config.client("dynamodb")

    def load(self) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            item = self.client.get_item(TableName=self.table, Key={"key": {"S": self.key}}, ConsistentRead=True).get(
                "Item"
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise DetectorError(
                    f"table {self.table} does not exist: run notebook 00_provision (or `shoplake infra apply`)"
                ) from exc
            raise
        return decode_state(item["state"]["B"]) if item else None

    def save(self, state: dict[str, Any]) -> int:
        blob = encode_state(state)
        if len(blob) > 390_000:
            raise DetectorError(
                f"detector state is {len(blob)} bytes, over DynamoDB's 400 KB item limit: "
                "use fewer trees/shorter windows or a smaller tree_size"
            )
        self.client.put_item(
            TableName=self.table,
            Item={
                "key": {"S": self.key},
                "state": {"B": blob},
                "updated_at": {"S": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            },
        )
        return len(blob)

    def delete(self) -> None:
        self.client.delete_item(TableName=self.table, Key={"key": {"S": self.key}})


@dataclass
class ConsumeResult:
    """What one :func:`consume` run did."""

    counts: dict[str, Any]
    mapping: dict[str, Any]
    alarms: list[dict[str, Any]]  # alarms raised in this run, with the handler's answer
    detector: RateDetector
    elapsed_s: float
    state_bytes: int = 0

    @property
    def published(self) -> int:
        return sum(a["status"] == "published" for a in self.alarms)


class StreamHandler:
    """The Lambda-shaped handler the local mapping calls (one per shard thread, so it serialises on a lock).

    Exactly once: the detector's state records, per shard, the sequence number of the last record it counted
    (``RateDetector.sequences``), and a batch's records at or before it are skipped as re-deliveries — so a replay
    after a crash between a state save and the checkpoint that follows it neither double-counts nor dead-letters a
    record twice; the checkpoint only says where reading resumes. With ``save_every_seconds`` = 0 the state is saved
    after every batch (any mapping may call the handler). With ``save_every_seconds`` > 0 (what :func:`consume` uses)
    it is saved by :meth:`save`, which the mapping calls before each checkpoint write (``before_checkpoint``; the
    mapping writes checkpoints every ``save_every_seconds``, and always at the end), and at once when a batch raised
    an alarm: a checkpoint never moves past a record the saved state has not counted.

    Alarms and dead letters wait in an outbox until handed over (``rate_alarm``, ``rate-alarm-dlq``); a failed hand-over
    fails the invocation, the mapping retries it (its records are now skipped), and the outbox is sent again first.
    The state is never saved with a non-empty outbox, so a crash re-raises the alarm, which ``rate_alarm`` de-duplicates
    per incident (never texted twice).
    """

    def __init__(
        self,
        detector: RateDetector,
        store: StateStore,
        topic_arn: str,
        dlq_url: str | None,
        save_every_seconds: float = 0.0,
    ) -> None:
        from shoplake import config

        self.detector = detector
        self.store = store
        self.topic_arn = topic_arn
        self.dlq_url = dlq_url
        self.save_every_seconds = save_every_seconds
        self.sns = config.client("sns")
        self.dynamodb = config.client("dynamodb")
        self.sqs = config.client("sqs")
        self.lock = threading.Lock()
        self.outcomes: list[dict[str, Any]] = []
        self.dead_lettered = 0
        self.replayed = 0  # re-delivered records skipped (already counted by the saved state)
        self.state_bytes = 0
        self.saves = 0
        self.dirty = False  # counted records the saved state does not have yet
        self.first_publish_wall: dict[str, float] = {}
        self._alarms: list[Alarm] = []  # the outbox: raised, not yet handed to rate_alarm
        self._dead: list[DeadLetter] = []  # the outbox: not yet accepted by the dead-letter queue

    def __call__(self, event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        records = event.get("Records", [])
        shard = records[0]["eventID"].split(":", 1)[0] if records else "shard-0"
        with self.lock:
            done = self.detector.sequences.get(shard)
            if done is not None:
                records = [r for r in records if int(r["kinesis"]["sequenceNumber"]) > int(done)]
            skipped = len(event.get("Records", [])) - len(records)
            self.replayed += skipped
            data = [base64.b64decode(r["kinesis"]["data"]) for r in records]
            sources = [{"shard_id": shard, "sequence_number": r["kinesis"]["sequenceNumber"]} for r in records]
            alarms, dead = self.detector.process(data, shard, sources)
            if records:
                self.detector.sequences[shard] = records[-1]["kinesis"]["sequenceNumber"]
                self.dirty = True
            self._alarms += alarms
            self._dead += dead
            self._send_outbox()  # with what a failed invocation left (its records were skipped above)
            if self.dirty and (alarms or self.save_every_seconds <= 0):
                self._save()
        return {
            "counts": {"records": len(records), "replayed": skipped, "dead_lettered": len(dead), "alarms": len(alarms)}
        }

    def finish(self) -> None:
        """End of a replay: close every open window, hand over its alarms, save the state."""
        with self.lock:
            self._alarms += self.detector.flush()
            self._send_outbox()
            self._save()

    def save(self, shard_id: str | None = None) -> None:
        """Save the state if it counted records since the last save (the mapping's ``before_checkpoint``)."""
        with self.lock:
            if self.dirty:
                self._send_outbox()
                self._save()

    def _save(self) -> None:
        if self._alarms or self._dead:
            raise DetectorError("the alarm/dead-letter outbox is not empty: the state cannot be saved before it is")
        self.state_bytes = self.store.save(self.detector.to_state())
        self.saves += 1
        self.dirty = False

    def _send_outbox(self) -> None:
        if self._alarms:
            self.deliver(self._alarms)
            self._alarms = []
        while self._dead:
            batch = self._dead[:10]
            self.dead_letter(batch)
            del self._dead[: len(batch)]

    def deliver(self, alarms: list[Alarm]) -> None:
        """Hand alarms to the ``rate_alarm`` handler (locally a direct call; on aws the function does the same)."""
        if not alarms:
            return
        from shoplake.lambdas import rate_alarm

        answer = rate_alarm.process_event(
            {"alarms": [a.as_event() for a in alarms]},
            self.topic_arn,
            self.store.table,
            self.sns,
            self.dynamodb,
            self.detector.config.policy.cooldown_seconds,
        )
        for alarm, result in zip(alarms, answer["results"], strict=True):
            self.outcomes.append(
                {**alarm.as_event(), "status": result["status"], "text": result["text"], "published_wall": time.time()}
            )

    def dead_letter(self, dead: list[DeadLetter]) -> None:
        if not dead or not self.dlq_url:
            return
        for start in range(0, len(dead), 10):
            entries = [
                {"Id": str(i), "MessageBody": d.message_body(self.store.key)}
                for i, d in enumerate(dead[start : start + 10])
            ]
            response = self.sqs.send_message_batch(QueueUrl=self.dlq_url, Entries=entries)
            if response.get("Failed"):
                raise DetectorError(
                    f"dead-letter queue refused {len(response['Failed'])} messages: {response['Failed'][:1]}"
                )
            self.dead_lettered += len(entries)


def load_detector(
    consumer: str = CONSUMER,
    config: DetectorConfig | None = None,
    warmup: list[WindowCount] | None = None,
    shards: list[str] | None = None,
) -> RateDetector:
    """The detector of ``consumer`` from its saved state, or a new one (warmed up on ``warmup``)."""
    state = StateStore(consumer).load()
    if state is not None:
        detector = RateDetector.from_state(state)
        if config is not None and detector.config != config:
            raise DetectorError(
                f"the saved state of {consumer} was made with another configuration: "
                "reset it (consume(reset=True)) or use a new consumer name"
            )
        return detector
    detector = RateDetector(config, name=consumer, shards=shards)
    if warmup:
        detector.warm_up(warmup)
    return detector


def reset(consumer: str = CONSUMER) -> None:
    """Forget the consumer's checkpoints and state (the next run starts over at TRIM_HORIZON)."""
    from shoplake import lambda_local

    lambda_local.Checkpoints(consumer).reset()
    StateStore(consumer).delete()


def start_at_stream_end(consumer: str = CONSUMER) -> dict[str, str]:
    """Checkpoint ``consumer`` at the current end of every shard (a detector deployed now skips older orders)."""
    from shoplake import lambda_local, streams

    checkpoints = lambda_local.Checkpoints(consumer)
    ends = {}
    for shard_id in streams.shards("orders"):
        # the shard's newest record, found without reading the shard (it may hold a million orders of notebook 02)
        last = streams.last_sequence_number("orders", shard_id) or checkpoints.get(shard_id)
        if last:
            checkpoints.put(shard_id, last, 0)
            ends[shard_id] = last
    return ends


def consume(
    consumer: str = CONSUMER,
    config: DetectorConfig | None = None,
    *,
    warmup: list[WindowCount] | None = None,
    final: bool = True,
    max_batches: int | None = None,
    batch_size: int = 500,
    timeout: float = 900.0,
    reset_first: bool = False,
    expected: int | None = None,
    idle_seconds: float | None = None,
    save_every_seconds: float = SAVE_EVERY_SECONDS,
) -> ConsumeResult:
    """Let the detector catch up with the ``orders`` stream through the Lambda runtime of the target
    (``shoplake.lambda_runtime``, mapping ``orders-to-rate-detector``).

    Locally the detector runs in this process as its own consumer (checkpoints under ``consumer``) until caught up
    (or ``max_batches``); ``final=True`` then closes the last open windows (a finished replay; a live deployment never
    does). On aws the deployed ``rate-detector`` function does the work: this waits while its state in
    ``alarm_state`` moves (``expected``: the ``records_in`` to reach; by default until it stops moving for
    ``idle_seconds``) and reads the detector and its alarms' outcomes back; ``consumer``/``config``/``warmup`` are
    then the function's (``DETECTOR_NAME`` in resources.yaml), and ``final`` cannot apply.

    Locally the state is saved, and the checkpoints written, at most every ``save_every_seconds`` per shard (0: after
    every batch), always before the checkpoint that covers the records, at the end and when an alarm is raised
    (:class:`StreamHandler`: exactly once across crashes).
    """
    from shoplake import lambda_runtime

    began = time.perf_counter()
    if reset_first:
        reset(consumer)
    local: dict[str, Any] = {}

    def local_mapping() -> Any:
        from shoplake import infra, lambda_local, streams

        detector = load_detector(consumer, config, warmup, streams.shards("orders"))
        outputs = infra.outputs()
        try:
            topic_arn, dlq_url = outputs["topic_arn:alarms"], outputs["queue_url:rate-alarm-dlq"]
        except KeyError as exc:
            raise DetectorError(
                f"infra output {exc} is missing: run notebook 00_provision (or `shoplake infra apply`)"
            ) from exc
        handler = StreamHandler(detector, StateStore(consumer), topic_arn, dlq_url, save_every_seconds)
        local.update(detector=detector, handler=handler)
        settings = lambda_local.MappingSettings(
            stream="orders",
            batch_size=batch_size,
            starting_position="TRIM_HORIZON",
            bisect_on_error=True,
            max_retry_attempts=3,
            on_failure=dlq_url,
            checkpoint_interval_seconds=save_every_seconds,
        )
        return lambda_local.EventSourceMapping(
            handler, settings, consumer=consumer, function_name=config_name(consumer), before_checkpoint=handler.save
        )

    deployed = StateStore(_deployed_detector_name())

    def probe() -> lambda_runtime.Progress:
        state = deployed.load() or {"counts": {}}
        counts = {k: v for k, v in state.get("counts", {}).items() if isinstance(v, int)}
        dead = counts.get("malformed", 0) + counts.get("late", 0)
        return lambda_runtime.Progress(handled=counts.get("records_in", 0) - dead, dead_lettered=dead, detail=counts)

    runtime = lambda_runtime.open_runtime(
        "orders-to-rate-detector", local=local_mapping, probe=probe, timeout=timeout, idle_seconds=idle_seconds
    )
    stats = runtime.run_until_caught_up(expected=expected, max_batches=max_batches)
    if "handler" not in local:  # the deployed function did the work: read its detector and alarms back
        return _deployed_result(deployed, stats.as_dict(), time.perf_counter() - began)
    detector, handler = local["detector"], local["handler"]
    if final:
        handler.finish()
    counts = dict(detector.counts)
    counts["dead_lettered"] = handler.dead_lettered
    counts["replayed"] = handler.replayed
    counts["state_saves"] = handler.saves
    for status in ("published", "duplicate", "cooled_down"):
        counts[status] = sum(o["status"] == status for o in handler.outcomes)
    return ConsumeResult(
        counts=counts,
        mapping=stats.as_dict(),
        alarms=handler.outcomes,
        detector=detector,
        elapsed_s=time.perf_counter() - began,
        state_bytes=handler.state_bytes,
    )


def _deployed_detector_name() -> str:
    """The ``DETECTOR_NAME`` the deployed rate-detector function keeps its state under (resources.yaml)."""
    from shoplake import infra

    environment = infra.find("lambda_function", "rate-detector").props.get("environment") or {}
    return str(environment.get("DETECTOR_NAME") or "rate-detector-fn")


_STATUS = {"sent": "published", "suppressed": "cooled_down", "pending": "pending"}


def _deployed_result(store: StateStore, mapping: dict[str, Any], elapsed_s: float) -> ConsumeResult:
    """The deployed detector as saved in ``alarm_state``, each alarm with the outcome ``rate_alarm`` recorded."""
    state = store.load()
    if state is None:
        raise DetectorError(
            f"the deployed rate detector has saved no state under {store.key} in {store.table} yet: its tumbling "
            "windows merge at their end (about a minute after orders arrive); check the function's logs"
        )
    detector = RateDetector.from_state(state)
    outcomes = []
    for alarm in detector.alarms:
        event = alarm.as_event()
        item = store.client.get_item(
            TableName=store.table,
            Key={"key": {"S": f"incident#{event['detector']}#{event['incident_id']}"}},
            ConsistentRead=True,
        ).get("Item", {})
        status = _STATUS.get(item.get("status", {}).get("S", ""), "unknown")
        outcomes.append({**event, "status": status, "text": item.get("text", {}).get("S", ""), "published_wall": None})
    counts = dict(detector.counts)
    counts["dead_lettered"] = counts.get("malformed", 0) + counts.get("late", 0)
    for status in ("published", "duplicate", "cooled_down"):
        counts[status] = sum(o["status"] == status for o in outcomes)
    return ConsumeResult(counts, mapping, outcomes, detector, elapsed_s, len(encode_state(state)))


def config_name(consumer: str) -> str:
    from shoplake import config

    return config.resource_name(consumer)
