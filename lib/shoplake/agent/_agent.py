"""The agent loop: tail each flow's files, turn lines into records, ship them, checkpoint, count.

Per batch of lines (up to the flow's ``maxBatchRecords`` / ``maxBatchBytes``; :mod:`shoplake.streams` cuts it
into service-sized calls and retries the failed records):

1. malformed lines (a processing option cannot parse them, not UTF-8, too long, empty) are dead-lettered to
   ``<state_dir>/dead-letter/<flow>.jsonl`` with the reason, counted, and never shipped;
2. the batch is written to the checkpoint as *pending* (file byte ranges + a hash per record), then sent;
3. records that still fail after the producer's retries are re-sent by the agent a few rounds more (``retried``),
   then dead-lettered (``failed``);
4. the offsets move past the batch and the pending batch is cleared, in one atomic checkpoint write.

A crash between 2 and 4 (SIGKILL, power loss) leaves the pending batch in the checkpoint: on restart the agent
reads the destination back from the pending batch's time (Kinesis: ``AT_TIMESTAMP`` iterators on every shard;
Firehose: the S3 objects it delivered since), re-reads the batch's lines from the files, and sends only the
records that did not land: nothing lost, nothing sent twice. (Where Firehose delivers to OpenSearch only, the
agent cannot look, re-sends the batch and says so in the log: at-least-once there.)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shoplake import config, streams
from shoplake.agent._checkpoint import CheckpointStore, FlowState, Pending, zero_counts
from shoplake.agent._flows import AgentConfig, Flow, Malformed
from shoplake.agent._tail import Line, Tailer, _related
from shoplake.errors import ShoplakeError

log = logging.getLogger(__name__)

AGENT_RETRY_ROUNDS = 3
DEAD_LETTER_MAX_CHARS = 10_000
CLOCK_SLACK_S = 2.0
# Fault injection for the crash tests: SIGKILL this process right after the N-th send, before its commit.
CRASH_AFTER_SENDS_ENV = "SHOPLAKE_AGENT_CRASH_AFTER_SENDS"


class AgentError(ShoplakeError):
    """The agent cannot run (another agent holds the state folder, a destination is missing, ...)."""


def default_state_dir() -> Path:
    """``.shoplake/agent/<prefix>/``: checkpoints, dead letters, pid file and status of the local agent."""
    s = config.settings()
    return s.home / "agent" / s.prefix


def record_hash(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


@dataclass
class _Shipment:
    lines: list[Line]
    records: list[tuple[Line, Any, bytes]] = field(default_factory=list)  # (line, record, encoded bytes)
    malformed: list[tuple[Line, str]] = field(default_factory=list)


class FlowRunner:
    """Ships one flow: its tailer, checkpoint state, counts and dead-letter file."""

    def __init__(
        self,
        flow: Flow,
        state: FlowState,
        store: CheckpointStore,
        dead_letter_dir: Path,
        crash_after: int | None = None,
    ) -> None:
        self.flow = flow
        self.state = state
        self.store = store
        self.tailer = Tailer(flow.patterns, state)
        self.dead_letter_path = dead_letter_dir / f"{flow.name}.jsonl"
        self.counts = zero_counts()
        self.crash_after = crash_after
        self.sends = 0
        self._partition_key = flow.partition_key() if flow.kind == "kinesis" else None

    # ------------------------------------------------------------------ processing and sending

    def _encode(self, record: Any) -> bytes:
        return streams.encode(record, newline=self.flow.kind == "firehose")

    def _prepare(self, lines: list[Line]) -> _Shipment:
        shipment = _Shipment(lines)
        for line in lines:
            if line.too_long:
                shipment.malformed.append((line, f"line longer than {self.tailer.max_line_bytes} bytes"))
                continue
            try:
                text = line.data.decode("utf-8")
                record = self.flow.process(text)
            except UnicodeDecodeError:
                shipment.malformed.append((line, "not UTF-8 text"))
                continue
            except Malformed as exc:
                shipment.malformed.append((line, str(exc)))
                continue
            shipment.records.append((line, record, self._encode(record)))
        return shipment

    def _put(self, items: list[tuple[Line, Any, bytes]]) -> streams.PutResult:
        """Hand the encoded records to :mod:`shoplake.streams` (it batches to the service limits and retries)."""
        data = [encoded for _line, _record, encoded in items]
        if self.flow.kind == "kinesis":
            assert self._partition_key is not None
            keys = {id(encoded): self._partition_key(record) for _line, record, encoded in items}
            return streams.put_records(self.flow.destination, data, partition_key=lambda d: keys[id(d)])
        return streams.put_firehose(self.flow.destination, data)

    def _send(self, items: list[tuple[Line, Any, bytes]]) -> tuple[int, list[tuple[Line, Any, str]]]:
        """Send records (re-sending the ones that failed a few rounds); returns (sent, [(line, record, reason)])."""
        sent = 0
        todo = items
        last_reasons: dict[int, str] = {}
        for round_ in range(AGENT_RETRY_ROUNDS + 1):
            if not todo:
                break
            if round_:
                self.counts["retried"] += len(todo)
                time.sleep(min(4.0, 0.5 * 2 ** (round_ - 1)))
            by_id = {id(data): (line, record) for line, record, data in todo}
            result = self._put(todo)
            sent += result.sent
            self.counts["retried"] += result.retried
            failed_ids = {id(f["record"]): f["reason"] for f in result.failed_records}
            rejected = [(*by_id[id(r["record"])], r["reason"]) for r in result.rejected_records]
            if rejected:
                self._dead_letter([(line, reason) for line, _record, reason in rejected], kind="rejected")
                self.counts["failed"] += len(rejected)
            retry = [(line, record, data) for line, record, data in todo if id(data) in failed_ids]
            if not retry:
                return sent, []
            last_reasons = failed_ids
            todo = retry
            log.warning(
                "flow %s: %d records failed after the producer's retries (%s); the agent retries them",
                self.flow.name,
                len(todo),
                next(iter(failed_ids.values())),
            )
        failures = [(line, record, last_reasons.get(id(data), "failed")) for line, record, data in todo]
        return sent, failures

    def _dead_letter(self, items: list[tuple[Line, str]], kind: str) -> None:
        if not items:
            return
        self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with open(self.dead_letter_path, "a", encoding="utf-8") as handle:
            for line, reason in items:
                text = line.data.decode("utf-8", errors="replace")[:DEAD_LETTER_MAX_CHARS]
                handle.write(
                    json.dumps(
                        {
                            "time": now,
                            "flow": self.flow.name,
                            "kind": kind,
                            "reason": reason,
                            "file": line.path,
                            "offset": line.start,
                            "line": text,
                        }
                    )
                    + "\n"
                )

    def _commit(
        self, lines: list[Line], sent: int, failures: list[tuple[Line, Any, str]], malformed: list[tuple[Line, str]]
    ) -> None:
        self._dead_letter(malformed, kind="malformed")
        self._dead_letter([(line, reason) for line, _record, reason in failures], kind="failed")
        self.tailer.advance(lines)
        self.state.pending = None
        delta = {"lines_read": len(lines), "records_sent": sent, "failed": len(failures), "malformed": len(malformed)}
        for key, value in delta.items():
            self.counts[key] += value
        for key in self.counts:
            self.state.totals[key] = self.state.totals.get(key, 0) + delta.get(key, 0)
        self.state.totals["retried"] = self.state.totals.get("retried", 0) + self._retried_unsaved()
        self.store.save()

    def _retried_unsaved(self) -> int:
        new = self.counts["retried"] - getattr(self, "_retried_saved", 0)
        self._retried_saved = self.counts["retried"]
        return new

    def ship(self, lines: list[Line]) -> None:
        """Steps 1-4 of the module docstring for one batch of lines."""
        shipment = self._prepare(lines)
        self.state.pending = Pending(
            created=time.time(), ranges=_ranges(lines), hashes=[record_hash(data) for _l, _r, data in shipment.records]
        )
        self.store.save()
        sent, failures = self._send(shipment.records) if shipment.records else (0, [])
        self.sends += 1
        if self.crash_after is not None and self.sends >= self.crash_after:
            log.warning("fault injection: SIGKILL after send %d, before its commit", self.sends)
            os.kill(os.getpid(), signal.SIGKILL)
        self._commit(lines, sent, failures, shipment.malformed)

    # ------------------------------------------------------------------ recovery of a pending batch

    def _landed_hashes(self, since: float) -> Counter[str] | None:
        """Hashes of the records in the destination since ``since`` (None: the destination cannot be read back)."""
        if self.flow.kind == "kinesis":
            return _kinesis_hashes(self.flow.destination, since)
        return _firehose_hashes(self.flow.destination, since)

    def _reread(self, pending: Pending) -> tuple[list[Line], list[dict[str, Any]]]:
        """The pending batch's lines, read again from wherever the files are now (renamed or copied)."""
        lines: list[Line] = []
        lost: list[dict[str, Any]] = []
        for rng in pending.ranges:
            fs = self.state.files.get(rng["key"])
            head = fs.head if fs else b""
            path = _locate(self.flow.patterns, rng["key"], head, int(rng["end"]))
            if path is None:
                lost.append(rng)
                continue
            with open(path, "rb") as handle:
                handle.seek(int(rng["start"]))
                body = handle.read(int(rng["end"]) - int(rng["start"]))
            pos = int(rng["start"])
            for raw in body.split(b"\n")[:-1]:
                data = raw[:-1] if raw.endswith(b"\r") else raw
                lines.append(
                    Line(
                        rng["key"], path, pos, pos + len(raw) + 1, data, too_long=len(data) > self.tailer.max_line_bytes
                    )
                )
                pos += len(raw) + 1
        return lines, lost

    def recover(self) -> None:
        """Finish a batch a crash left pending: send only what did not land, then commit it."""
        pending = self.state.pending
        if pending is None:
            return
        lines, lost = self._reread(pending)
        shipment = self._prepare(lines)
        landed = self._landed_hashes(pending.created - CLOCK_SLACK_S) if shipment.records else Counter()
        if landed is None:
            log.warning(
                "flow %s: cannot read %s back; re-sending the %d records of the interrupted batch "
                "(duplicates possible)",
                self.flow.name,
                self.flow.destination,
                len(shipment.records),
            )
            missing = shipment.records
        else:
            wanted = Counter(pending.hashes)
            missing = []
            for item in shipment.records:
                h = record_hash(item[2])
                if landed[h] > 0 and wanted[h] > 0:
                    landed[h] -= 1
                    wanted[h] -= 1
                else:
                    missing.append(item)
        already = len(shipment.records) - len(missing)
        log.warning(
            "flow %s: recovering an interrupted batch of %d lines: %d records had landed, sending %d",
            self.flow.name,
            len(lines),
            already,
            len(missing),
        )
        sent, failures = self._send(missing) if missing else (0, [])
        for rng in lost:
            log.error(
                "flow %s: %s (bytes %s-%s) is gone; its unsent lines are lost",
                self.flow.name,
                rng["path"],
                rng["start"],
                rng["end"],
            )
        # the lines are committed against the checkpointed file states (the scan that follows sorts out rotations)
        for rng in pending.ranges:
            fs = self.state.files.get(rng["key"])
            if fs is not None and fs.offset == int(rng["start"]):
                fs.offset = int(rng["end"])
                fs.lines += int(rng.get("lines", 0))
        lost_lines = sum(int(r.get("lines", 0)) for r in lost)
        self._dead_letter(shipment.malformed, kind="malformed")
        self._dead_letter([(line, reason) for line, _r, reason in failures], kind="failed")
        self.state.pending = None
        # the interrupted batch was not counted before the crash (counts are saved with the commit)
        delta = {
            "lines_read": len(lines) + lost_lines,
            "records_sent": sent + already,
            "failed": len(failures) + lost_lines,
            "malformed": len(shipment.malformed),
        }
        for key, value in delta.items():
            self.counts[key] += value
            self.state.totals[key] = self.state.totals.get(key, 0) + value
        self.state.totals["retried"] = self.state.totals.get("retried", 0) + self._retried_unsaved()
        self.store.save()

    # ------------------------------------------------------------------ polling

    def poll(self, stop: threading.Event | None = None) -> int:
        """Recover, scan, and ship every complete new line; returns the number of lines handled."""
        self.recover()
        self.tailer.scan()
        handled = 0
        while stop is None or not stop.is_set():
            lines = self.tailer.read(self.flow.max_batch_records, self.flow.max_batch_bytes)
            if not lines:
                break
            self.ship(lines)
            handled += len(lines)
        return handled

    def status(self) -> dict[str, Any]:
        return {
            "destination": f"{self.flow.kind}:{streams.stream_name(self.flow.destination)}",
            "patterns": self.flow.patterns,
            "run": dict(self.counts),
            "totals": dict(self.state.totals),
            "lag_bytes": self.tailer.lag_bytes(),
            "files": {fs.path: {"offset": fs.offset, "lines": fs.lines} for fs in self.state.files.values()},
            "dead_letters": str(self.dead_letter_path),
        }


def _ranges(lines: list[Line]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for line in lines:
        rng = out.setdefault(
            line.key, {"key": line.key, "path": line.path, "start": line.start, "end": line.end, "lines": 0}
        )
        rng["start"] = min(rng["start"], line.start)
        rng["end"] = max(rng["end"], line.end)
        rng["lines"] += 1
    return list(out.values())


def _locate(patterns: list[str], key: str, head: bytes, end: int) -> str | None:
    """A file holding the bytes of inode ``key`` up to ``end``: the inode itself, or a copy made by copytruncate."""
    import glob

    from shoplake.agent._tail import _read_head, file_key

    candidates: list[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)):
            with contextlib.suppress(FileNotFoundError):
                st = os.stat(path)
                current = _read_head(path) or b""
                if st.st_size < end:
                    continue
                if file_key(st) == key and current.startswith(head):
                    return path
                if head and _related(current, head):
                    candidates.append(path)
    return candidates[0] if candidates else None


def _kinesis_hashes(stream: str, since: float) -> Counter[str]:
    kinesis = config.client("kinesis")
    name = streams.stream_name(stream)
    found: Counter[str] = Counter()
    at = datetime.fromtimestamp(since, UTC)
    for shard_id in streams.shards(stream):
        iterator = kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard_id, ShardIteratorType="AT_TIMESTAMP", Timestamp=at
        )["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            records = response.get("Records", [])
            found.update(record_hash(r["Data"]) for r in records)
            iterator = response.get("NextShardIterator")
            if not records and int(response.get("MillisBehindLatest", 0) or 0) == 0:
                break
    return found


def _firehose_hashes(delivery_stream: str, since: float) -> Counter[str] | None:
    firehose = config.client("firehose")
    description = firehose.describe_delivery_stream(DeliveryStreamName=streams.stream_name(delivery_stream))
    description = description["DeliveryStreamDescription"]
    s3 = None
    for destination in description.get("Destinations", []):
        s3 = destination.get("ExtendedS3DestinationDescription") or destination.get("S3DestinationDescription")
        if s3 and not {"ElasticsearchDestinationDescription", "AmazonopensearchserviceDestinationDescription"} & set(
            destination
        ):
            break
        s3 = None
    if s3 is None:
        return None
    bucket = s3["BucketARN"].split(":")[-1]
    prefix = s3.get("Prefix", "")
    interval = int((s3.get("BufferingHints") or {}).get("IntervalInSeconds", 0))
    settle_s = config.by_target(local=0.0, aws=interval + 60.0)  # the emulator delivers at once; Firehose buffers
    wait = since + settle_s - time.time()
    if settle_s and wait > 0:
        log.info("waiting %.0f s for Firehose to flush its buffer before checking what landed", wait)
        time.sleep(wait)
    client = config.client("s3")
    found: Counter[str] = Counter()
    hour = datetime.fromtimestamp(since, UTC).replace(minute=0, second=0, microsecond=0)
    hours: list[str] = []
    while hour <= datetime.now(UTC) + timedelta(hours=1):
        hours.append(prefix + hour.strftime("%Y/%m/%d/%H/"))
        hour += timedelta(hours=1)
    threshold = datetime.fromtimestamp(since - CLOCK_SLACK_S, UTC)
    for hour_prefix in hours:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=hour_prefix):
            for obj in page.get("Contents", []):
                if obj["LastModified"] < threshold:
                    continue
                body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                found.update(record_hash(line) for line in body.splitlines(keepends=True))
    return found


# --------------------------------------------------------------------------- the agent


def _start_over_after_an_emulator_restart(state_dir: Path) -> None:
    """Locally, checkpoints say what the emulator already holds; a restarted emulator holds nothing, so they are set
    aside (kept, renamed) and every file ships again. On aws the destination keeps its data: nothing to do."""
    from shoplake import local_services

    was = config.by_target(
        local=lambda: local_services.restarted_since(state_dir / "emulator-generation"), aws=lambda: None
    )()
    checkpoints = state_dir / "checkpoints.json"
    if was is not None and checkpoints.exists():
        aside = state_dir / f"checkpoints.emulator-{was}.json"
        os.replace(checkpoints, aside)
        log.warning(
            "the local emulator was restarted since this agent last ran (its data is gone): shipping starts over; "
            "the old checkpoints are kept as %s",
            aside,
        )


class Agent:
    """Runs the flows of a config against one state folder (checkpoints, dead letters, pid, status)."""

    def __init__(
        self,
        agent_config: AgentConfig,
        flows: list[str] | None = None,
        state_dir: Path | None = None,
        fsync: bool = True,
    ) -> None:
        self.config = agent_config
        self.state_dir = Path(state_dir) if state_dir else default_state_dir()
        self.state_dir.mkdir(parents=True, mode=0o700, exist_ok=True)  # dead letters hold order data: private
        _start_over_after_an_emulator_restart(self.state_dir)
        self.store = CheckpointStore(self.state_dir / "checkpoints.json", fsync=fsync)
        crash = os.environ.get(CRASH_AFTER_SENDS_ENV)
        self.runners = [
            FlowRunner(
                flow,
                self.store.flow(flow.name),
                self.store,
                self.state_dir / "dead-letter",
                crash_after=int(crash) if crash else None,
            )
            for flow in agent_config.select(flows)
        ]
        self._lock_handle: Any = None
        self.started = time.time()

    # ------------------------------------------------------------------ single instance + pid file

    def acquire(self) -> None:
        """Take the state folder's lock (one agent per state folder) and write the pid file."""
        handle = open(self.state_dir / "agent.lock", "a+")  # noqa: SIM115 - held for the agent's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            pid = read_pid(self.state_dir)
            raise AgentError(
                f"another agent (pid {pid}) is running with the state folder {self.state_dir}: stop it "
                "with `shoplake agent stop`, or give this one its own --state-dir"
            ) from None
        self._lock_handle = handle
        (self.state_dir / "agent.pid").write_text(str(os.getpid()))
        self.store.load()  # the last agent may have written the checkpoint after we read it
        for runner in self.runners:
            runner.state = self.store.flow(runner.flow.name)
            runner.tailer.state = runner.state

    def release(self) -> None:
        if self._lock_handle is not None:
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / "agent.pid").unlink()
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    # ------------------------------------------------------------------ loop

    def poll(self, stop: threading.Event | None = None) -> int:
        """One pass over every flow; returns the lines handled."""
        return sum(runner.poll(stop) for runner in self.runners)

    def run(
        self,
        follow: bool = False,
        stop: threading.Event | None = None,
        until: Callable[[], bool] | None = None,
        max_errors: int | None = None,
    ) -> dict[str, dict[str, int]]:
        """Ship until caught up (``follow=False``), or keep following the files until ``stop`` is set.

        ``until``: with ``follow=True``, stop once it returns True *and* a full pass found nothing new (how
        :func:`ship_dataset` waits for its servers to finish). A following agent survives failing passes (the
        batch stays pending and is recovered), giving up after ``max_errors`` failures in a row (None: never).
        """
        stop = stop or threading.Event()
        errors = 0
        while not stop.is_set():
            finished = until() if until else False
            try:
                handled = self.poll(stop)
                errors = 0
            except ShoplakeError:
                raise
            except Exception as exc:  # noqa: BLE001 - a follow-mode agent survives a restarting emulator
                errors += 1
                if not follow or (max_errors is not None and errors >= max_errors):
                    raise
                delay = min(30.0, 0.5 * 2**errors)
                log.error(
                    "agent pass failed (%s: %s); retrying in %.1f s (the batch stays pending)",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                stop.wait(delay)
                continue
            self.write_status()
            if handled:
                continue
            if not follow or finished:
                break
            stop.wait(self.config.poll_interval_s)
        self.write_status()
        return self.counts()

    def counts(self) -> dict[str, dict[str, int]]:
        """This run's counts per flow: lines_read, records_sent, failed, retried, malformed."""
        return {runner.flow.name: dict(runner.counts) for runner in self.runners}

    def write_status(self) -> None:
        payload = {
            "pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "flows": {runner.flow.name: runner.status() for runner in self.runners},
        }
        path = self.state_dir / "status.json"
        tmp = path.with_name(f".status.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload, indent=2, default=str))
        os.replace(tmp, path)


def read_pid(state_dir: Path) -> int | None:
    """The pid of the agent running with ``state_dir`` (None when none is)."""
    path = Path(state_dir) / "agent.pid"
    try:
        pid = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid
