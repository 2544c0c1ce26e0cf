"""The Lambda runtime of a stream consumer, chosen once: the local event-source mapping or the deployed function.

One rule shared by ``orders.consume`` and ``alarm.consume`` (issue 11 §1), picked with ``config.by_target``:

- **local** (:class:`LocalRuntime`): the emulator cannot run Lambda, so ``shoplake.lambda_local`` plays the Lambda
  service in this process (per-shard pollers, checkpoints, retries, bisect, on-failure queue) and runs the handler
  until the stream is caught up;
- **aws** (:class:`DeployedRuntime`): the function and its event-source mapping from ``infra/resources.yaml`` do the work.
  The runtime only checks that the mapping exists and is ``Enabled`` (``lambda:ListEventSourceMappings`` /
  ``GetEventSourceMapping``) and waits while progress is being made: the part's *probe* counts what landed (items,
  dead letters, detector state), and the mapping's ``LastProcessingResult`` is watched. It returns when the probe
  reaches ``expected``; it fails with a clear :class:`LambdaRuntimeError` only after ``idle_seconds`` without any
  progress — never after a fixed total time that larger data would outgrow.

Both return :class:`shoplake.lambda_local.MappingStats` and offer the same verbs: ``start``, ``drain``, ``stop``,
``run_until_caught_up``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shoplake import config, lambda_local
from shoplake._stall import StallWatch
from shoplake.errors import ShoplakeError

log = logging.getLogger(__name__)

DEFAULT_IDLE_SECONDS = 180.0  # no progress for this long → the deployed consumer is considered stuck
DEFAULT_POLL_SECONDS = 5.0
READY_STATES = ("Creating", "Enabling", "Updating")  # transient states worth waiting for


class LambdaRuntimeError(ShoplakeError):
    """The consumer's Lambda runtime cannot run or stopped making progress."""


@dataclass
class Progress:
    """What a part can observe of its consumer's work: records handled and records dead-lettered so far."""

    handled: int = 0  # records the function accounted for (items written, records counted, ...)
    dead_lettered: int = 0  # records in the dead-letter / on-failure queue
    detail: dict[str, int] = field(default_factory=dict)  # part-specific counts, reported as handler_counts

    @property
    def total(self) -> int:
        return self.handled + self.dead_lettered


Probe = Callable[[], Progress]
Expected = int | Callable[[], int] | None  # records to account for (a callable is only evaluated on aws)


class Runtime:
    """The common verbs of both runtimes (see the module docstring)."""

    kind = "?"

    def start(self) -> Runtime:
        raise NotImplementedError

    def drain(self, expected: Expected = None) -> lambda_local.MappingStats:
        raise NotImplementedError

    def stop(self) -> lambda_local.MappingStats:
        raise NotImplementedError

    def run_until_caught_up(
        self, expected: Expected = None, max_batches: int | None = None
    ) -> lambda_local.MappingStats:
        raise NotImplementedError

    def skip_to_end(self) -> dict[str, str]:
        """Make the consumer ignore what is already in the stream; returns {shard: sequence} where it now starts."""
        raise NotImplementedError


class LocalRuntime(Runtime):
    """The handler run in-process by ``lambda_local``'s event-source mapping (``expected`` is not needed: caught up
    means every shard read to its end)."""

    kind = "local"

    def __init__(
        self, mapping: lambda_local.EventSourceMapping, timeout: float | None = None, idle_seconds: float | None = None
    ) -> None:
        self.mapping = mapping
        self.timeout = timeout  # a total bound only when the caller gives one
        self.idle_seconds = idle_seconds  # no poller activity for this long → error (lambda_local's default)

    def start(self) -> LocalRuntime:
        self.mapping.start()
        return self

    def drain(self, expected: Expected = None) -> lambda_local.MappingStats:
        return self.mapping.drain(timeout=self.timeout, idle_seconds=self.idle_seconds)

    def stop(self) -> lambda_local.MappingStats:
        return self.mapping.stop(timeout=60)

    def run_until_caught_up(
        self, expected: Expected = None, max_batches: int | None = None
    ) -> lambda_local.MappingStats:
        return self.mapping.run_until_caught_up(
            timeout=self.timeout, max_batches=max_batches, idle_seconds=self.idle_seconds
        )

    def skip_to_end(self) -> dict[str, str]:
        """Checkpoint every shard at its last record (the next run starts after what the stream holds now)."""
        from shoplake import streams

        checkpoints, stream = self.mapping.checkpoints, self.mapping.stream_name
        moved: dict[str, str] = {}
        for shard_id in streams.shards(stream):
            last = checkpoints.get(shard_id)
            for records, _behind in streams.read_batches(stream, shard_id, after_sequence=last):
                last = records[-1].sequence_number if records else last
            if last:
                checkpoints.put(shard_id, last, 0)
                moved[shard_id] = last
        return moved


def find_mapping(mapping_name: str, client: Any = None) -> dict[str, Any]:
    """The deployed event-source mapping of resources.yaml's ``event_source_mapping`` ``mapping_name`` (physical names
    through ``shoplake.infra``); a clear error when infra has not created it."""
    from shoplake import infra

    spec = infra.find("event_source_mapping", mapping_name)
    function = config.resource_name(spec.props["function"])
    stream_arn = infra.arn("stream", spec.props["stream"])
    lam = client or config.client("lambda")
    try:
        found = lam.list_event_source_mappings(FunctionName=function, EventSourceArn=stream_arn)["EventSourceMappings"]
    except Exception as exc:
        if infra._code(exc) == "ResourceNotFoundException":
            found = []
        else:
            raise
    if not found:
        raise LambdaRuntimeError(
            f"no event-source mapping from {stream_arn} to function {function}: run `shoplake infra apply` "
            f"(or notebook 00_provision) with SHOPLAKE_PREFIX={config.settings().prefix}"
        )
    return found[0]


class DeployedRuntime(Runtime):
    """The deployed function + its mapping do the work; this waits while the part's probe shows progress."""

    kind = "aws"

    def __init__(
        self,
        mapping_name: str,
        probe: Probe,
        *,
        idle_seconds: float | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from shoplake import infra

        self.mapping_name = mapping_name
        self.probe = probe
        props = infra.find("event_source_mapping", mapping_name).props
        # a tumbling window only reports at its end: never call that silence "idle"
        quiet = float(props.get("batching_window_seconds", 0)) + float(props.get("tumbling_window_seconds", 0))
        self.idle_seconds = float(idle_seconds) if idle_seconds is not None else max(DEFAULT_IDLE_SECONDS, quiet + 120)
        if self.idle_seconds <= 0:
            raise LambdaRuntimeError(f"idle_seconds must be > 0, got {idle_seconds}")
        self.poll_seconds = poll_seconds
        self.clock, self.sleep = clock, sleep
        self.baseline: Progress | None = None
        self.uuid: str | None = None
        self.last: dict[str, Any] = {}
        self._began = 0.0

    # ------------------------------------------------------------------ the mapping
    def _describe(self) -> dict[str, Any]:
        lam = config.client("lambda")
        if self.uuid is None:
            found = find_mapping(self.mapping_name, lam)
            self.uuid = found["UUID"]
            self.last = found
        else:
            self.last = lam.get_event_source_mapping(UUID=self.uuid)
        return self.last

    def check_enabled(self) -> dict[str, Any]:
        """The mapping's description once it is ``Enabled`` (transient states are waited for up to idle_seconds)."""
        waited_since = self.clock()
        while True:
            found = self._describe()
            state = found.get("State", "")
            if state == "Enabled":
                return found
            if state not in READY_STATES or self.clock() - waited_since > self.idle_seconds:
                raise LambdaRuntimeError(
                    f"event-source mapping {self.mapping_name} ({self.uuid}) is {state or 'in no state'} "
                    f"({found.get('StateTransitionReason', '')}): enable it with `aws lambda "
                    f"update-event-source-mapping --uuid {self.uuid} --enabled` or run `shoplake infra apply`"
                )
            self.sleep(self.poll_seconds)

    # ------------------------------------------------------------------ verbs
    def start(self) -> DeployedRuntime:
        self.check_enabled()
        self.baseline = self.probe()
        self._began = time.perf_counter()
        return self

    def stop(self) -> lambda_local.MappingStats:
        """The deployed mapping keeps running on AWS; this only reports what was seen so far."""
        return self._stats(self.probe(), None)

    def skip_to_end(self) -> dict[str, str]:
        """Nothing to move: the deployed mapping keeps its own position (after what it has already handled)."""
        self.check_enabled()
        return {}

    def run_until_caught_up(
        self, expected: Expected = None, max_batches: int | None = None
    ) -> lambda_local.MappingStats:
        if max_batches is not None:
            raise LambdaRuntimeError(
                "max_batches stops the local runner mid-stream; a deployed mapping cannot be stopped after N batches"
            )
        if self.baseline is None:
            self.start()
        return self.drain(expected)

    def drain(self, expected: Expected = None) -> lambda_local.MappingStats:
        """Wait until the probe's total reaches ``expected`` (records accounted for, counted as the probe counts
        them). With ``expected=None``: until the probe stops moving for a full ``idle_seconds`` (then the mapping's
        last processing result must not be a PROBLEM). No progress for ``idle_seconds`` before ``expected`` → error."""
        if self.baseline is None:
            self.start()
        if callable(expected):
            expected = expected()
        seen = self.probe()
        result = self.last.get("LastProcessingResult", "")
        watch = StallWatch(self.idle_seconds, value=(seen.total, seen.detail, result), clock=self.clock)
        while True:
            if expected is not None and seen.total >= expected:
                return self._stats(seen, expected)
            idle = watch.idle_s
            if idle >= self.idle_seconds:
                if expected is None and not str(result).startswith("PROBLEM"):
                    return self._stats(seen, None)
                raise LambdaRuntimeError(
                    f"the deployed consumer of mapping {self.mapping_name} made no progress for {idle:.0f} s: "
                    f"{seen.total} records accounted for ({seen.handled} handled, {seen.dead_lettered} "
                    f"dead-lettered){f' of {expected} expected' if expected is not None else ''}; mapping state "
                    f"{self.last.get('State')}, last processing result {result or 'none'!r}. Check the function's "
                    f"log group /aws/lambda/{str(self.last.get('FunctionArn', '')).rsplit(':', 1)[-1]}"
                )
            self.sleep(self.poll_seconds)
            now = self.probe()
            described = self._describe()
            new_result = described.get("LastProcessingResult", "")
            if described.get("State") not in ("Enabled", *READY_STATES):
                raise LambdaRuntimeError(
                    f"event-source mapping {self.mapping_name} became {described.get('State')} while waiting "
                    f"({described.get('StateTransitionReason', '')})"
                )
            watch.observe((now.total, now.detail, new_result))
            seen, result = now, new_result

    def _stats(self, seen: Progress, expected: int | None) -> lambda_local.MappingStats:
        base = self.baseline or Progress()
        stats = lambda_local.MappingStats(
            records_in=max(0, (expected if expected is not None else seen.total) - base.total),
            records_done=max(0, seen.handled - base.handled),
            records_to_on_failure=max(0, seen.dead_lettered - base.dead_lettered),
            handler_counts={k: v - base.detail.get(k, 0) for k, v in seen.detail.items()},
        )
        stats.elapsed_s = time.perf_counter() - self._began if self._began else 0.0
        stats.shards = {
            "deployed": {"mapping": self.uuid, "last_processing_result": self.last.get("LastProcessingResult")}
        }
        return stats


def open_runtime(
    mapping_name: str,
    *,
    local: Callable[[], lambda_local.EventSourceMapping],
    probe: Probe,
    timeout: float | None = None,
    idle_seconds: float | None = None,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
) -> Runtime:
    """The runtime of resources.yaml's mapping ``mapping_name`` for the current target (chosen here, once).

    ``local`` builds the in-process mapping (only called on the local target); ``probe`` counts progress on aws.
    ``idle_seconds`` is the consumer's allowed silence on both targets (locally: no poller activity); ``timeout``
    adds a total bound to the local pollers only when given.
    """
    factory = config.by_target(
        local=lambda: LocalRuntime(local(), timeout=timeout, idle_seconds=idle_seconds),
        aws=lambda: DeployedRuntime(mapping_name, probe, idle_seconds=idle_seconds, poll_seconds=poll_seconds),
    )
    return factory()
