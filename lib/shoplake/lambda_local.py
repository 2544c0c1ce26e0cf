"""Run a Lambda handler against the local emulator with Kinesis event-source-mapping semantics.

The emulator stores Lambda functions but cannot run them (no Docker), so this module plays the Lambda service's
poller, the same way for any handler (``order_history``, the rate alarm detector, ...):

- one poller per shard, batches of at most ``batch_size`` records gathered for up to the batching window. A poller
  is a thread of this process, or, given a ``handler_factory`` (a picklable function that builds the handler), a
  spawned process of its own, as Lambda runs each shard's invocations in a container of its own: the pollers of
  different shards then do not share one interpreter lock (the orders mapping runs so; a handler that keeps state in
  this process, as the rate detector does, runs in threads);
- per-shard checkpoints (the last sequence number fully handled) persisted in the stack's DynamoDB ``checkpoints``
  table under ``(consumer, shard_id)``, so a restarted consumer resumes where it stopped. By default after every
  batch; with ``checkpoint_interval_seconds`` (as Lambda's own mapping does) at most that often, and always when a
  poller stops or a batch is given up on: a consumer killed in between replays at most that interval's records, so
  only for handlers that write idempotently (orders: same items, same marks, dead letters de-duplicated). A handler
  that keeps its own state in memory and saves it less often than every batch (the rate detector) passes
  ``before_checkpoint``: called with the shard id right before each checkpoint write (so a checkpoint never moves past
  what the handler has made durable; if it raises, the checkpoint is not written);
- the handler gets the Kinesis event shape Lambda sends (``Records[].kinesis.data`` base64, ``eventID``, ...);
- a function error (exception) fails the whole batch: with ``bisect_on_error`` the batch is split in two halves
  that are retried in order (splits do not count as retries, as on Lambda); with ``ReportBatchItemFailures`` a response ``{"batchItemFailures": [...]}``
  checkpoints up to the first failed record and retries from it; after ``max_retry_attempts`` retries (-1 =
  forever) the batch's metadata (shard, sequence range, batch size — Lambda's exact on-failure message, no records)
  goes to the on-failure destination (an SQS queue) and the shard moves on;
- runs until caught up (:meth:`EventSourceMapping.run_until_caught_up`), or in the background
  (:meth:`~EventSourceMapping.start` / :meth:`~EventSourceMapping.drain` / :meth:`~EventSourceMapping.stop`).
  Waiting has no total time limit unless one is given: it lasts while the pollers make progress and fails after
  ``idle_seconds`` without any (a hanging handler), or within seconds when the local emulator stops answering.

Settings come from the ``event_source_mapping`` entries of ``infra/resources.yaml`` (:func:`mapping_settings`), the
same entries infra turns into real mappings on aws.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import multiprocessing
import pickle
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from shoplake import _gc, config, streams
from shoplake._process import ThreadWorker, Worker
from shoplake._stall import StallWatch
from shoplake.errors import ShoplakeError

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]

DEFAULT_IDLE_SECONDS = 300.0  # no poller activity (reads, invocations, retries) for this long → stuck


def kinesis_event(records: list[streams.StreamRecord], stream_arn: str, region: str, role_arn: str) -> dict[str, Any]:
    """The event the Lambda service hands a function mapped to a Kinesis stream, for ``records`` of one shard."""
    return {
        "Records": [
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.partition_key,
                    "sequenceNumber": r.sequence_number,
                    "data": base64.b64encode(r.data).decode("ascii"),
                    "approximateArrivalTimestamp": r.arrival,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{r.shard_id}:{r.sequence_number}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": role_arn,
                "awsRegion": region,
                "eventSourceARN": stream_arn,
            }
            for r in records
        ]
    }


class MappingError(ShoplakeError):
    """The local event-source mapping cannot run (bad settings, missing resources)."""


@dataclass(frozen=True)
class MappingSettings:
    """The knobs of a Kinesis event-source mapping (names as in resources.yaml)."""

    stream: str = "orders"
    batch_size: int = 100
    batching_window_seconds: float = 0.0
    starting_position: str = "TRIM_HORIZON"
    bisect_on_error: bool = False
    max_retry_attempts: int = -1
    report_batch_item_failures: bool = False
    on_failure: str | None = None  # an SQS queue URL (resolved), or None
    retry_delay_seconds: float = 0.05  # first backoff between retries (doubles, capped at 2 s)
    # sleep between empty GetRecords calls while following the stream (Lambda polls a shard about once a second;
    # moto's GetRecords walks the whole shard on every call, so polling faster only slows the emulator down)
    poll_interval_seconds: float = 0.5
    # write the per-shard checkpoint at most this often (0: after every batch, the default); always on stop and on
    # give-up. Only for handlers whose replays are harmless (orders' idempotent writes use 1 s).
    checkpoint_interval_seconds: float = 0.0

    def __post_init__(self) -> None:
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or not 1 <= self.batch_size <= 10_000
        ):
            raise MappingError(f"batch_size must be an integer 1..10000, got {self.batch_size!r}")
        for name in (
            "batching_window_seconds",
            "retry_delay_seconds",
            "poll_interval_seconds",
            "checkpoint_interval_seconds",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise MappingError(f"{name} must be a finite number ≥ 0, got {value!r}")
        if self.batching_window_seconds > 300:
            raise MappingError(f"batching_window_seconds must be 0..300, got {self.batching_window_seconds}")
        if self.starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise MappingError(f"starting_position must be TRIM_HORIZON or LATEST, got {self.starting_position!r}")
        if isinstance(self.max_retry_attempts, bool) or not isinstance(self.max_retry_attempts, int):
            raise MappingError(f"max_retry_attempts must be an integer, got {self.max_retry_attempts!r}")
        if self.max_retry_attempts < -1:
            raise MappingError(f"max_retry_attempts must be -1 (forever) or ≥ 0, got {self.max_retry_attempts}")


def mapping_settings(name: str = "orders-to-order-history", **overrides: Any) -> MappingSettings:
    """The settings of the ``event_source_mapping`` named ``name`` in infra/resources.yaml (on-failure queue resolved)."""
    from shoplake import infra

    props = dict(infra.find("event_source_mapping", name).props)
    on_failure = props.get("on_failure")
    if on_failure:
        kind, _, short = str(on_failure).partition(":")
        if kind != "queue":
            raise MappingError(f"locally the on_failure destination must be a queue:<name>, got {on_failure!r}")
        on_failure = infra.resolve(f"queue_url:{short}")
    settings = MappingSettings(
        stream=props["stream"],
        batch_size=int(props.get("batch_size", 100)),
        batching_window_seconds=float(props.get("batching_window_seconds", 0)),
        starting_position=props.get("starting_position", "TRIM_HORIZON"),
        bisect_on_error=bool(props.get("bisect_on_error", False)),
        max_retry_attempts=int(props.get("max_retry_attempts", -1)),
        report_batch_item_failures="ReportBatchItemFailures" in (props.get("function_response_types") or []),
        on_failure=on_failure,
    )
    return replace(settings, **overrides) if overrides else settings


@dataclass
class MappingStats:
    """Counts of one run of a mapping (all shards together)."""

    records_in: int = 0  # records read from the stream and handed to batches
    records_done: int = 0  # records checkpointed as handled by the function
    records_to_on_failure: int = 0  # records given up on after the retries, sent to the on-failure destination
    invocations: int = 0
    function_errors: int = 0
    partial_failures: int = 0  # invocations that returned batchItemFailures
    retries: int = 0
    bisections: int = 0
    checkpoints_written: int = 0
    shards: dict[str, dict[str, Any]] = field(default_factory=dict)  # shard → {"start_after", "checkpoint", ...}
    latencies_s: list[float] = field(default_factory=list)  # per handled record: done time − arrival time
    handler_counts: dict[str, int] = field(default_factory=dict)  # sum of the handler's "counts" answers
    elapsed_s: float = 0.0

    COUNTS = (  # the summed counts (as_dict, merge)
        "records_in",
        "records_done",
        "records_to_on_failure",
        "invocations",
        "function_errors",
        "partial_failures",
        "retries",
        "bisections",
        "checkpoints_written",
    )

    def merge(self, other: MappingStats) -> None:
        """Add ``other``'s counts (the stats of another shard's poller process) to these."""
        for name in MappingStats.COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.shards.update(other.shards)
        self.latencies_s.extend(other.latencies_s)
        for key, value in other.handler_counts.items():
            self.handler_counts[key] = self.handler_counts.get(key, 0) + value

    def latency_percentiles(self, quantiles: tuple[float, ...] = (0.5, 0.95)) -> dict[str, float | None]:
        """Event arrival → handled latency percentiles in seconds, e.g. ``{"p50": 0.4, "p95": 1.1}``."""
        import numpy as np

        if not self.latencies_s:
            return {f"p{round(q * 100)}": None for q in quantiles}
        values = np.quantile(np.asarray(self.latencies_s), quantiles)
        return {f"p{round(q * 100)}": round(float(v), 4) for q, v in zip(quantiles, values, strict=True)}

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in MappingStats.COUNTS}
        out["elapsed_s"] = round(self.elapsed_s, 3)
        out["handler_counts"] = dict(self.handler_counts)
        return out


MAX_ERROR_CHARS = 4000  # a function error's text kept in the on-failure message


def _reachable(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``url``'s host and port (the local emulator is alive)."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


def _iso_ms(epoch: float) -> str:
    """Epoch seconds as Lambda writes times in on-failure messages: ``2019-11-14T00:38:04.835Z``."""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Context:
    """The bits of a Lambda context object handlers use."""

    def __init__(self, function_name: str, timeout_s: float = 60.0) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.aws_request_id = str(uuid.uuid4())
        self.memory_limit_in_mb = 256
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class Checkpoints:
    """Per-consumer, per-shard checkpoints in the stack's DynamoDB ``checkpoints`` table."""

    def __init__(self, consumer: str, table: str | None = None) -> None:
        self.consumer = consumer
        self.table = table or config.resource_name("checkpoints")
        self.client = config.client("dynamodb")

    def get(self, shard_id: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            item = self.client.get_item(
                TableName=self.table,
                ConsistentRead=True,
                Key={"consumer": {"S": self.consumer}, "shard_id": {"S": shard_id}},
            ).get("Item")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                raise MappingError(
                    f"checkpoint table {self.table} does not exist: run notebook 00_provision "
                    "(or `shoplake infra apply`)"
                ) from exc
            raise
        return item["sequence_number"]["S"] if item else None

    def put(self, shard_id: str, sequence_number: str, records: int) -> None:
        self.client.put_item(
            TableName=self.table,
            Item={
                "consumer": {"S": self.consumer},
                "shard_id": {"S": shard_id},
                "sequence_number": {"S": sequence_number},
                "records_since_start": {"N": str(records)},
                "updated_at": {"S": streams.utc_now_iso()},
            },
        )

    def all(self) -> dict[str, str]:
        """shard id → checkpointed sequence number of this consumer."""
        pages = self.client.get_paginator("query").paginate(
            TableName=self.table,
            KeyConditionExpression="consumer = :c",
            ExpressionAttributeValues={":c": {"S": self.consumer}},
            ConsistentRead=True,
        )
        return {i["shard_id"]["S"]: i["sequence_number"]["S"] for page in pages for i in page.get("Items", [])}

    def reset(self) -> None:
        """Forget this consumer's checkpoints (the next run starts at the starting position)."""
        for shard_id in self.all():
            self.client.delete_item(
                TableName=self.table, Key={"consumer": {"S": self.consumer}, "shard_id": {"S": shard_id}}
            )


ACTIVITY = ("reads", "records_in", "records_done", "invocations", "retries", "checkpoints_written")  # progress


@dataclass
class _Shared:
    """What a mapping's pollers share with the process that waits for them: the stop and drain events, when drain was
    asked for, the batch budget (-1: none) and each shard's :data:`ACTIVITY` counts (written by poller processes).
    Made of multiprocessing's shared objects (spawn context), so the same state serves poller threads and poller
    processes."""

    stop: Any
    drain: Any
    drain_at: Any
    batches_left: Any
    activity: Any = None

    @classmethod
    def new(cls) -> _Shared:
        context = multiprocessing.get_context("spawn")
        return cls(context.Event(), context.Event(), context.Value("d", 0.0, lock=False), context.Value("q", -1))


class _ReadAhead:
    """``read_batches`` one GetRecords ahead, in a thread of its own: the next read is in flight while the current
    batch is delivered (as Lambda's pollers read ahead of the invocations they make), instead of after it.

    Yields ``(records, millis_behind_latest, began)``: ``began`` is a monotonic instant taken before that read was
    asked for (never after it started: the drain's check of "a read that began after drain()" stays safe). At most
    two reads are held ahead (one waiting to be taken, one in flight). An exception of the reader is raised by the
    ``next()`` that would have returned its read; :meth:`close` lets the thread end after the read in flight."""

    _END = object()

    def __init__(self, reader: Any, name: str) -> None:
        self._reader = reader
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1)
        self._closed = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.is_set():
            began = time.monotonic()
            try:
                records, behind = next(self._reader)
            except StopIteration:
                self._put(self._END)
                return
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
                self._put(exc)
                return
            self._put((records, behind, began))

    def _put(self, item: Any) -> None:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def __iter__(self) -> _ReadAhead:
        return self

    def __next__(self) -> tuple[list[streams.StreamRecord], int, float]:
        while not self._finished:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():  # closed, or ended with nothing left
                    self._finished = True
                continue
            if item is self._END or isinstance(item, BaseException):
                self._finished = True  # later calls end at once instead of waiting for a read that never comes
                if item is not self._END:
                    raise item
                break
            return item
        raise StopIteration

    def close(self) -> None:
        self._closed.set()


class EventSourceMapping:
    """A local Kinesis → handler mapping: ``EventSourceMapping(handler, settings, consumer="order-history")``.

    With ``handler_factory`` (a picklable module-level function returning the handler) instead of ``handler``, each
    shard's poller runs in a spawned process of its own that builds its handler with it (module docstring)."""

    def __init__(
        self,
        handler: Handler | None,
        settings: MappingSettings,
        consumer: str,
        function_name: str | None = None,
        checkpoint_table: str | None = None,
        before_checkpoint: Callable[[str], None] | None = None,
        *,
        handler_factory: Callable[[], Handler] | None = None,
    ) -> None:
        if not consumer:
            raise MappingError("a consumer name is needed (it keys the checkpoints)")
        if (handler is None) == (handler_factory is None):
            raise MappingError("give either a handler (pollers in threads) or a handler_factory (poller processes)")
        if handler_factory is not None and before_checkpoint is not None:
            raise MappingError("before_checkpoint needs the handler in this process: give a handler, not a factory")
        if handler_factory is not None:
            try:
                pickle.dumps(handler_factory)
            except Exception as exc:  # noqa: BLE001 - named in the error
                raise MappingError(
                    f"handler_factory must be a module-level function (it is sent to the poller processes), got "
                    f"{handler_factory!r}: {exc}"
                ) from None
        self.handler_factory = handler_factory
        # a factory is also called here once: a missing resource fails now, with the factory's own message
        self.handler = handler if handler is not None else handler_factory()  # type: ignore[misc]
        self.settings = settings
        self.consumer = consumer
        self.function_name = function_name or config.resource_name(consumer)
        self.stream_name = streams.stream_name(settings.stream)
        self.checkpoints = Checkpoints(consumer, checkpoint_table)
        self.before_checkpoint = before_checkpoint  # shard id → None, before each checkpoint write (module docstring)
        self.stats = MappingStats()
        self._lock = threading.Lock()
        self._shared = _Shared.new()
        self._pollers: list[Worker | ThreadWorker] = []
        self._errors: list[BaseException] = []
        self._began = 0.0
        self._region = config.settings().region
        self._account = config.client("sts").get_caller_identity()["Account"]
        self._stream_arn = f"arn:aws:kinesis:{self._region}:{self._account}:stream/{self.stream_name}"
        self._sqs = config.client("sqs") if settings.on_failure else None
        # the local emulator processes' addresses, watched while waiting (none on aws: nothing local to watch)
        self._endpoints = config.emulator_urls()
        self._reads = 0  # GetRecords answers seen (activity, for the idle check)
        self._pending: dict[str, tuple[str, int]] = {}  # shard → checkpoint handled but not yet written
        self._flushed_at: dict[str, float] = {}

    @property
    def _stop(self) -> Any:
        return self._shared.stop

    @property
    def _drain(self) -> Any:
        return self._shared.drain

    # ------------------------------------------------------------------ running

    def start(self, max_batches: int | None = None) -> EventSourceMapping:
        """Start one poller per shard in the background (follows the stream until :meth:`stop`/:meth:`drain`).

        ``max_batches`` stops every poller after that many handled batches in total (to simulate a consumer that
        is stopped mid-stream).
        """
        if self._pollers:
            raise MappingError("this mapping is already running")
        self._stop.clear()
        self._errors.clear()
        self._shared.batches_left.value = -1 if max_batches is None else max_batches
        self._began = time.perf_counter()
        shard_ids = streams.shards(self.stream_name)
        if self.handler_factory is None:
            for shard_id in shard_ids:
                name = f"esm-{self.consumer}-{shard_id}"
                self._pollers.append(ThreadWorker(self._run_shard, shard_id, name=name))
            return self
        context = multiprocessing.get_context("spawn")
        self._shared.activity = context.Array("q", len(shard_ids) * len(ACTIVITY), lock=False)
        for index, shard_id in enumerate(shard_ids):
            self._pollers.append(
                Worker(
                    _poll_in_process,
                    self.handler_factory,
                    self.settings,
                    self.consumer,
                    self.function_name,
                    self.checkpoints.table,
                    shard_id,
                    index,
                    self._shared,
                    name=f"esm-{self.consumer}-{shard_id}",
                )
            )
        return self

    def drain(self, timeout: float | None = None, idle_seconds: float | None = None) -> MappingStats:
        """Let the pollers finish once each shard is caught up, wait for them, and return the stats.

        Waits while they make progress; ``idle_seconds`` (default :data:`DEFAULT_IDLE_SECONDS`) without any is an
        error, and so is ``timeout`` seconds in total when given."""
        self._shared.drain_at.value = time.monotonic()
        self._drain.set()
        return self._join(timeout, idle_seconds)

    def stop(self, timeout: float | None = None) -> MappingStats:
        """Stop the pollers after their current batch and return the stats."""
        self._stop.set()
        return self._join(timeout)

    def run_until_caught_up(
        self, timeout: float | None = None, max_batches: int | None = None, idle_seconds: float | None = None
    ) -> MappingStats:
        """Poll every shard until no record is left (or ``max_batches`` handled), then return the stats (waiting as
        :meth:`drain` does)."""
        self._shared.drain_at.value = time.monotonic()
        self._drain.set()
        self.start(max_batches=max_batches)
        return self._join(timeout, idle_seconds)

    def _activity(self) -> tuple[int, ...]:
        """The :data:`ACTIVITY` counts so far, over every shard (from the poller processes' shared counts)."""
        if self.handler_factory is None or self._shared.activity is None:
            return (self._reads, *(getattr(self.stats, name) for name in ACTIVITY[1:]))
        counts = self._shared.activity[:]
        width = len(ACTIVITY)
        return tuple(sum(counts[i::width]) for i in range(width))

    def _publish_activity(self, index: int) -> None:
        """In a poller process: write this shard's :data:`ACTIVITY` counts where the waiting process reads them."""
        width = len(ACTIVITY)
        self._shared.activity[index * width : (index + 1) * width] = list(self._activity())

    def _abandon(self) -> list[str]:
        """Stop waiting: ask the pollers to stop, end poller processes at once (threads cannot be ended: they stop
        after their batch); returns the names of the pollers that were still running."""
        self._stop.set()
        names = [p.name for p in self._pollers if not p.done()]
        for poller in self._pollers:
            poller.stop()
        self._pollers = [p for p in self._pollers if isinstance(p, ThreadWorker)]
        return names

    def _join(self, timeout: float | None, idle_seconds: float | None = None) -> MappingStats:
        idle_limit = DEFAULT_IDLE_SECONDS if idle_seconds is None else idle_seconds
        if not (isinstance(idle_limit, int | float) and math.isfinite(idle_limit) and idle_limit > 0):
            raise MappingError(f"idle_seconds must be a finite number > 0, got {idle_seconds!r}")
        began = time.monotonic()
        watch = StallWatch(idle_limit, value=self._activity())
        unreachable = 0
        while True:
            alive = [p for p in self._pollers if not p.done()]
            if not alive:
                break
            alive[0].done(0.5)
            now = time.monotonic()
            if self._endpoints and any(not p.done() for p in self._pollers):
                gone = [url for url in self._endpoints if not _reachable(url)]
                unreachable = unreachable + 1 if gone else 0
                if unreachable >= 3:  # ~1.5 s of refused connections: the emulator is gone, not busy
                    self._abandon()
                    self._pollers = []
                    raise MappingError(
                        f"the local services's AWS emulator at {', '.join(gone)} stopped answering while {self.consumer} "
                        "was consuming: start it with `shoplake local up` (or `make local-up`) and run again; the "
                        "consumer resumes from its checkpoints"
                    )
            activity = self._activity()
            idle = watch.observe(activity)
            done = activity[ACTIVITY.index("records_done")]
            if timeout is not None and now - began > timeout:
                names = self._abandon()
                raise MappingError(
                    f"pollers {names} did not finish within the timeout of {timeout} s given by the caller "
                    f"({done} records handled so far); leave timeout unset to wait while they make progress"
                )
            if idle > idle_limit:
                names = self._abandon()
                raise MappingError(
                    f"pollers {names} of {self.consumer} made no progress for {idle:.0f} s "
                    f"(idle_seconds={idle_limit:g}; {done} records handled): the handler hangs or every call fails"
                )
        pollers, self._pollers = self._pollers, []
        for poller in pollers:
            try:
                answer = poller.result()
            except Exception as exc:  # noqa: BLE001 - a poller process's error, or its death (WorkerError)
                self._errors.append(exc)
                continue
            finally:
                poller.stop()  # a poller process is reaped (it has answered: it exits on its own)
            if answer is not None:  # a poller process's stats
                self.stats.merge(answer)
        self._drain.clear()
        self.stats.elapsed_s = time.perf_counter() - self._began
        if self._errors:
            raise MappingError(f"a poller of {self.consumer} failed: {self._errors[0]!r}") from self._errors[0]
        return self.stats

    # ------------------------------------------------------------------ one shard

    def _run_shard(self, shard_id: str) -> None:
        try:
            self._poll_shard(shard_id)
        except BaseException as exc:  # noqa: BLE001 - surfaced by _join
            log.exception("poller %s/%s failed", self.consumer, shard_id)
            self._errors.append(exc)
            self._stop.set()
        finally:
            try:  # what was handled stays handled: write the last checkpoint
                self._flush(shard_id)
            except Exception as exc:  # noqa: BLE001 - surfaced by _join (the next run replays, idempotently)
                log.warning("%s: could not write the checkpoint of %s: %r", self.consumer, shard_id, exc)
                self._errors.append(exc)

    def _poll_shard(self, shard_id: str) -> None:
        s = self.settings
        start_after = self.checkpoints.get(shard_id)
        self._flushed_at[shard_id] = time.monotonic()
        with self._lock:
            self.stats.shards[shard_id] = {"start_after": start_after, "checkpoint": start_after, "records": 0}
        reader = streams.read_batches(
            self.stream_name,
            shard_id,
            after_sequence=start_after,
            position=s.starting_position,
            limit=max(s.batch_size, 1000),
            follow=True,
            poll_interval=s.poll_interval_seconds,
            stop=self._stop,
        )
        ahead = _ReadAhead(reader, name=f"esm-read-{shard_id}")
        try:
            self._deliver_reads(shard_id, ahead)
        finally:
            ahead.close()

    def _deliver_reads(self, shard_id: str, reads: _ReadAhead) -> None:
        """Batch the shard's reads and deliver the batches, until the mapping stops or drains."""
        s = self.settings
        buffer: list[streams.StreamRecord] = []
        first_at = 0.0
        while True:
            try:
                records, behind, read_at = next(reads)  # read_at: that GetRecords call started after this instant
            except StopIteration:
                return
            self._reads += 1
            if records:
                if not buffer:
                    first_at = time.monotonic()
                buffer.extend(records)
                with self._lock:
                    self.stats.records_in += len(records)
            caught_up = not records and behind == 0
            while buffer and (
                len(buffer) >= s.batch_size or caught_up or time.monotonic() - first_at >= s.batching_window_seconds
            ):
                batch, buffer = buffer[: s.batch_size], buffer[s.batch_size :]
                first_at = time.monotonic()
                self._deliver(shard_id, batch)
                if self._batch_budget_spent() or self._stop.is_set():
                    self._stop.set()
                    return
            # drain: stop only after an empty read that began after drain() was called (records put before
            # drain() must not be missed by a poller whose last empty read was earlier)
            if caught_up and not buffer and self._drain.is_set() and read_at >= self._shared.drain_at.value:
                return

    def _batch_budget_spent(self) -> bool:
        budget = self._shared.batches_left
        with budget.get_lock():  # shared by every poller, threads or processes
            if budget.value < 0:
                return False
            budget.value -= 1
            return budget.value <= 0

    # ------------------------------------------------------------------ delivering a batch

    def _deliver(self, shard_id: str, batch: list[streams.StreamRecord]) -> None:
        """Deliver ``batch`` with retries/bisection until every record is handled or given up on."""
        s = self.settings
        pending: list[tuple[list[streams.StreamRecord], int]] = [(batch, 0)]  # (records, retries so far), in order
        while pending:
            records, attempt = pending.pop(0)
            outcome, failed_from, error = self._invoke(shard_id, records)
            if outcome == "ok":
                self._checkpoint(shard_id, records)
                continue
            if outcome == "partial":
                done, rest = records[:failed_from], records[failed_from:]
                if done:
                    self._checkpoint(shard_id, done)
                reason = "batchItemFailures"
            else:
                rest = records
                reason = f"function error: {error}"
            if outcome == "error" and s.bisect_on_error and len(rest) > 1:
                # Lambda: splitting a batch does not count towards the retry quota
                half = len(rest) // 2
                with self._lock:
                    self.stats.bisections += 1
                pending[:0] = [(rest[:half], attempt), (rest[half:], attempt)]
                continue
            if s.max_retry_attempts != -1 and attempt >= s.max_retry_attempts:
                self._give_up(shard_id, rest, attempt, reason)
                continue
            if self._stop.is_set() and not self._drain.is_set():
                return  # stopping: the unhandled records stay after the checkpoint for the next run
            with self._lock:
                self.stats.retries += 1
            time.sleep(min(2.0, s.retry_delay_seconds * 2**attempt))
            pending.insert(0, (rest, attempt + 1))

    def _event(self, records: list[streams.StreamRecord]) -> dict[str, Any]:
        return kinesis_event(records, self._stream_arn, self._region, f"arn:aws:iam::local:role/{self.function_name}")

    def _invoke(self, shard_id: str, records: list[streams.StreamRecord]) -> tuple[str, int, str]:
        """Call the handler once: ("ok", n, "") | ("partial", index of the first failed record, "") | ("error", 0,
        "<exception type>: <its text>")."""
        with self._lock:
            self.stats.invocations += 1
        try:
            response = self.handler(self._event(records), _Context(self.function_name))
        except Exception as exc:  # noqa: BLE001 - a function error, as Lambda sees it
            log.warning("%s: function error on %d records of %s: %r", self.consumer, len(records), shard_id, exc)
            with self._lock:
                self.stats.function_errors += 1
            return "error", 0, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        if isinstance(response, dict) and isinstance(response.get("counts"), dict):
            with self._lock:
                for key, value in response["counts"].items():
                    if isinstance(value, int):
                        self.stats.handler_counts[key] = self.stats.handler_counts.get(key, 0) + value
        if not self.settings.report_batch_item_failures:
            return "ok", len(records), ""
        failures = (response or {}).get("batchItemFailures") if isinstance(response, dict) else None
        if not failures:
            return "ok", len(records), ""
        index = {r.sequence_number: i for i, r in enumerate(records)}
        positions = []
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            if identifier not in index:  # Lambda treats an invalid identifier as a failure of the whole batch
                with self._lock:
                    self.stats.function_errors += 1
                return "error", 0, f"invalid itemIdentifier {identifier!r} in batchItemFailures"
            positions.append(index[identifier])
        with self._lock:
            self.stats.partial_failures += 1
        return "partial", min(positions), ""

    def _checkpoint(
        self, shard_id: str, records: list[streams.StreamRecord], handled: bool = True, force: bool = False
    ) -> None:
        """Account for ``records`` (handled, or given up on) and move the shard's checkpoint past them: written to
        the table when ``checkpoint_interval_seconds`` have passed since the last write, or at once with ``force``."""
        now = time.time()
        last = records[-1].sequence_number
        with self._lock:
            shard = self.stats.shards[shard_id]
            shard["records"] += len(records)
            count = shard["records"]
            if handled:
                self.stats.records_done += len(records)
                self.stats.latencies_s.extend(now - r.arrival for r in records)
        self._pending[shard_id] = (last, count)
        interval = self.settings.checkpoint_interval_seconds
        if force or time.monotonic() - self._flushed_at.get(shard_id, 0.0) >= interval:
            self._flush(shard_id)

    def _flush(self, shard_id: str) -> None:
        """Write the shard's pending checkpoint (if any) to the checkpoints table."""
        pending = self._pending.get(shard_id)
        if pending is None:
            return
        if self.before_checkpoint is not None:  # the handler makes what the checkpoint covers durable first
            self.before_checkpoint(shard_id)
        self.checkpoints.put(shard_id, pending[0], pending[1])
        if self._pending.get(shard_id) == pending:
            del self._pending[shard_id]
        self._flushed_at[shard_id] = time.monotonic()
        with self._lock:
            self.stats.shards[shard_id]["checkpoint"] = pending[0]
            self.stats.checkpoints_written += 1

    def _give_up(self, shard_id: str, records: list[streams.StreamRecord], attempts: int, reason: str) -> None:
        """After the last retry: send the batch to the on-failure destination, then move past it."""
        log.warning(
            "%s: giving up on %d records of %s after %d retries (%s)",
            self.consumer,
            len(records),
            shard_id,
            attempts,
            reason,
        )
        if self.settings.on_failure:
            # exactly what Lambda sends to a Kinesis mapping's on-failure destination: metadata only, no records
            # (readers fetch the records back from the stream by the sequence range: streams.read_range)
            message = {
                "requestContext": {
                    "requestId": str(uuid.uuid4()),
                    "functionArn": f"arn:aws:lambda:{self._region}:{self._account}:function:{self.function_name}",
                    "condition": "RetryAttemptsExhausted",
                    "approximateInvokeCount": attempts + 1,
                },
                # Lambda names the error kind ("Unhandled"); the local runner also keeps the exception's text
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    "functionError": "Unhandled" if reason.startswith("function error") else reason,
                    **({"errorMessage": reason.split(": ", 1)[1]} if reason.startswith("function error: ") else {}),
                },
                "version": "1.0",
                "timestamp": _iso_ms(time.time()),
                "KinesisBatchInfo": {
                    "shardId": shard_id,
                    "startSequenceNumber": records[0].sequence_number,
                    "endSequenceNumber": records[-1].sequence_number,
                    "approximateArrivalOfFirstRecord": _iso_ms(records[0].arrival),
                    "approximateArrivalOfLastRecord": _iso_ms(records[-1].arrival),
                    "batchSize": len(records),
                    "streamArn": self._stream_arn,
                },
            }
            assert self._sqs is not None
            self._sqs.send_message(QueueUrl=self.settings.on_failure, MessageBody=json.dumps(message))
        with self._lock:
            self.stats.records_to_on_failure += len(records)
        self._checkpoint(shard_id, records, handled=False, force=True)


def _poll_in_process(
    handler_factory: Callable[[], Handler],
    settings: MappingSettings,
    consumer: str,
    function_name: str,
    checkpoint_table: str,
    shard_id: str,
    index: int,
    shared: _Shared,
) -> MappingStats:
    """One shard's poller in a process of its own (:meth:`EventSourceMapping.start` with a ``handler_factory``):
    builds the handler, polls the shard as a poller thread would, with the waiting process's stop, drain and budget,
    and returns its stats, or raises the poller's first error (``_process.Worker`` hands it to the waiting process)."""
    mapping = EventSourceMapping(handler_factory(), settings, consumer, function_name, checkpoint_table)
    mapping._shared = shared
    mapping._began = time.perf_counter()
    finished = threading.Event()

    def publish() -> None:  # the waiting process watches these counts for progress
        while not finished.wait(0.25):
            mapping._publish_activity(index)

    reporter = threading.Thread(target=publish, daemon=True, name=f"esm-activity-{shard_id}")
    reporter.start()
    try:
        with _gc.relaxed():
            mapping._run_shard(shard_id)
    finally:
        finished.set()
        reporter.join()
        mapping._publish_activity(index)
    if mapping._errors:  # raised: the worker sends it back (one that cannot be pickled, by its type and text)
        raise mapping._errors[0]
    return mapping.stats
