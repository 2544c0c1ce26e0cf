"""The agent loop: tail each flow's files, turn lines into records, ship them, checkpoint, count.

Per batch of lines (up to the flow's ``maxBatchRecords`` / ``maxBatchBytes``; :mod:`shoplake.streams` cuts it
into service-sized calls and retries the failed records):

1. malformed lines (a processing option cannot parse them, not UTF-8, too long, empty) are dead-lettered to
   ``<state_dir>/dead-letter/<flow>.jsonl`` with the reason, counted, and never shipped;
2. the batch is written to the checkpoint as *pending* — a write-ahead journal entry: its lines' file byte ranges
   (their identity: file + offset) and the *window* of the destination that only this batch can fill, taken
   before the send (Kinesis: the flow's last committed sequence number per shard; Firehose → S3: the objects
   already there — listed only if records equal to the batch's may be among them: sent by this process within
   the last seconds, or by an agent before it) — then sent;
3. records that still fail after the producer's retries are re-sent by the agent a few rounds more (``retried``),
   then dead-lettered (``failed``);
4. the offsets move past the batch and the pending batch is cleared, in one atomic checkpoint write.

A crash between 2 and 4 (SIGKILL, power loss) leaves the pending batch in the checkpoint: on restart the agent
re-reads the batch's lines from the files (by their byte ranges), reads back the batch's window (Kinesis: each
shard after the flow's committed sequence number — ``AT_TIMESTAMP`` on shards it never wrote to; Firehose: the S3
objects delivered since that were not there before the send), and sends only the records that did not land.
Everything in the window is the pending batch's own (the flow sends one batch at a time), so records are told
apart by where they came from, not by their content: runs of identical lines neither hide a loss nor cause a
duplicate. Nothing lost, nothing sent twice — provided no other writer puts identical records into the same
window (one agent per destination). Where Firehose delivers to OpenSearch only, the agent cannot look, re-sends
the batch and says so in the log: at-least-once there. On AWS, Firehose buffers: the agent waits the buffer
interval before looking, and records of batches committed within that interval before the crash may still be
in the buffer; the agent counts those as not of the pending batch (it may re-send, never lose).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections import Counter, deque
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
# ... or ``<where>:<N>`` with where = before-send (the N-th batch is journaled, nothing of it sent), mid-send (the
# first half of its records sent) or after-send (the same as CRASH_AFTER_SENDS_ENV=N).
CRASH_AT_ENV = "SHOPLAKE_AGENT_CRASH_AT"
CRASH_POINTS = ("before-send", "mid-send", "after-send")


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
        crash_at: tuple[str, int] | None = None,
    ) -> None:
        self.flow = flow
        self.state = state
        self.store = store
        self.tailer = Tailer(flow.patterns, state)
        self.dead_letter_path = dead_letter_dir / f"{flow.name}.jsonl"
        self.counts = zero_counts()
        self.crash_after = crash_after
        self.crash_at = crash_at
        self.sends = 0
        self._partition_key = flow.partition_key() if flow.kind == "kinesis" else None
        self._sent_positions: dict[str, str] = {}
        self._lake: _Lake | None | bool = False  # False: not looked up yet; None: Firehose without an S3 copy
        self._recent: deque[tuple[float, list[str]]] = deque()  # (time, hashes) of batches Firehose may buffer
        self._warned_unreadable = False
        # sends to the destination not noted in _RECENT_SENDS (by agents before this one) ended before this time
        self.started = time.time()

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

    def _note_positions(self, positions: dict[str, str]) -> None:
        """Remember the last sequence number written per Kinesis shard (committed with the batch)."""
        for shard, seq in positions.items():
            if seq and (shard not in self._sent_positions or int(seq) > int(self._sent_positions[shard])):
                self._sent_positions[shard] = seq

    def _commit_positions(self) -> None:
        for shard, seq in self._sent_positions.items():
            if shard not in self.state.positions or int(seq) > int(self.state.positions[shard]):
                self.state.positions[shard] = seq
        self._sent_positions = {}

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
            self._note_positions(result.sequence_numbers)
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
        self._commit_positions()
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
        created = time.time()
        hashes = [record_hash(data) for _l, _r, data in shipment.records]
        self.state.pending = Pending(
            created=created,
            ranges=_ranges(lines),
            hashes=hashes,
            window=self._window(created, hashes) if shipment.records else None,
        )
        self.store.save()
        self._inject_fault("before-send", shipment)
        try:
            sent, failures = self._send(shipment.records) if shipment.records else (0, [])
        finally:
            self._sent_now(hashes)
        self.sends += 1
        if self.crash_after is not None and self.sends >= self.crash_after:
            log.warning("fault injection: SIGKILL after send %d, before its commit", self.sends)
            os.kill(os.getpid(), signal.SIGKILL)
        self._inject_fault("after-send", shipment)
        self._commit(lines, sent, failures, shipment.malformed)
        if self._buffering():
            self._remember(self._sent_hashes(shipment, failures))

    @staticmethod
    def _sent_hashes(shipment: _Shipment, failures: list[tuple[Line, Any, str]]) -> list[str]:
        failed = {id(line) for line, _r, _reason in failures}
        return [record_hash(data) for line, _r, data in shipment.records if id(line) not in failed]

    def _inject_fault(self, where: str, shipment: _Shipment) -> None:
        """The crash tests' SIGKILL at ``where`` of the batch named by CRASH_AT_ENV (no-op otherwise)."""
        if self.crash_at is None:
            return
        point, number = self.crash_at
        if where == "before-send" and point in ("before-send", "mid-send") and self.sends + 1 == number:
            if point == "mid-send":
                self._send(shipment.records[: len(shipment.records) // 2])
        elif not (where == point == "after-send" and self.sends == number):
            return
        log.warning("fault injection: SIGKILL %s of batch %d", point, number)
        os.kill(os.getpid(), signal.SIGKILL)

    # ------------------------------------------------------------------ recovery of a pending batch

    def _lake_view(self) -> _Lake | None:
        if self._lake is False:
            self._lake = _lake_of(self.flow.destination)
        return self._lake  # type: ignore[return-value]

    def _may_share_window(self, lake: _Lake, since: float, hashes: list[str]) -> bool:
        """Could objects already in the window (written at ``since`` or later) hold records of the batch?"""
        cutoff = math.floor(since) - 1.0  # LastModified has whole seconds
        if cutoff <= self.started:
            return True  # an agent before this one may have sent them moments ago (it was not noted)
        sent = _RECENT_SENDS.setdefault(lake.stream, deque())
        while sent and sent[0][0] < cutoff:
            sent.popleft()
        return any(not batch.isdisjoint(hashes) for _end, batch in sent)

    def _sent_now(self, hashes: list[str]) -> None:
        """Note what was just sent to the destination (for :meth:`_may_share_window`; the emulator only)."""
        if self.flow.kind != "firehose" or not hashes:
            return
        lake = self._lake_view()
        if lake is None or lake.settle_s or not lake.default_names:
            return
        now = time.time()
        sent = _RECENT_SENDS.setdefault(lake.stream, deque())
        while sent and sent[0][0] < now - 60.0:
            sent.popleft()
        sent.append((now, frozenset(hashes)))

    def _window(self, created: float, hashes: list[str]) -> dict[str, Any] | None:
        """The part of the destination only the batch about to be sent can fill (see :class:`Pending`)."""
        if self.flow.kind == "kinesis":
            return {"after": dict(self.state.positions)}
        lake = self._lake_view()
        if lake is None:
            return None
        from botocore.exceptions import ClientError

        since = created - CLOCK_SLACK_S
        if not lake.settle_s and lake.default_names and not self._may_share_window(lake, since, hashes):
            # nothing this agent sent may be in the window (no record of the batch was sent since ``since``, and the
            # agent started before): whatever lands there is the batch's — no need to list what is there now
            return {"since": since, "seen": []}
        try:
            seen = sorted(obj["Key"] for obj in _lake_objects(lake, since))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("AccessDenied", "AccessDeniedException"):
                raise
            if not self._warned_unreadable:
                log.warning(
                    "flow %s: cannot list s3://%s/%s (%s): a batch interrupted by a crash will be sent again "
                    "(duplicates possible); allow s3:ListBucket and s3:GetObject there for exactly-once",
                    self.flow.name,
                    lake.bucket,
                    lake.prefix,
                    exc.response["Error"]["Code"],
                )
                self._warned_unreadable = True
            return {"resend": True}
        window: dict[str, Any] = {"since": since, "seen": seen}
        if lake.settle_s:
            # batches sent within the buffer interval may still sit in Firehose's buffer and land in objects made
            # after the send: their records are not counted as the pending batch's
            while self._recent and self._recent[0][0] < created - lake.settle_s - CLOCK_SLACK_S:
                self._recent.popleft()
            window["buffered"] = [h for _t, batch in self._recent for h in batch]
        return window

    def _buffering(self) -> bool:
        """Firehose into S3 on aws: records may sit in its buffer for a while after they were accepted."""
        if self.flow.kind != "firehose":
            return False
        lake = self._lake_view()
        return lake is not None and lake.settle_s > 0

    def _remember(self, hashes: list[str], at: float | None = None) -> None:
        """Keep the hashes of a batch just sent while Firehose may still buffer them."""
        if hashes:
            self._recent.append((time.time() if at is None else at, hashes))

    def _landed_hashes(self, pending: Pending) -> Counter[str] | None:
        """Hashes of the records in the pending batch's window (None: the destination cannot be read back)."""
        window = pending.window
        if window is not None and window.get("resend"):
            return None
        if window is None:
            window = self._legacy_window(pending)
            if window is None:
                return None
        if self.flow.kind == "kinesis":
            found, positions = _kinesis_window(self.flow.destination, window["after"], pending.created - CLOCK_SLACK_S)
            self._note_positions(positions)
            return found
        lake = self._lake_view()
        if lake is None:
            return None
        found = _lake_hashes(lake, float(window["since"]), set(window.get("seen") or ()))
        buffered = Counter(window.get("buffered") or ())
        if buffered & found:
            log.warning(
                "flow %s: %d records sent shortly before the interrupted batch may have landed with it (Firehose "
                "buffers): counting them as not of the batch (those may be sent twice)",
                self.flow.name,
                sum((buffered & found).values()),
            )
        return found - buffered

    def _legacy_window(self, pending: Pending) -> dict[str, Any] | None:
        """A journal without a window (written by an older agent, or for a destination that cannot be read back)."""
        if self.flow.kind == "firehose" and self._lake_view() is None:
            return None
        log.warning(
            "flow %s: the interrupted batch was journaled by an older agent: matching what landed by content since "
            "its time (runs of identical lines may be taken for landed)",
            self.flow.name,
        )
        return {"after": {}} if self.flow.kind == "kinesis" else {"since": pending.created - CLOCK_SLACK_S, "seen": []}

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
        landed = self._landed_hashes(pending) if shipment.records else Counter()
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
        try:
            sent, failures = self._send(missing) if missing else (0, [])
        finally:
            self._sent_now([record_hash(data) for _l, _r, data in missing])
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
        self._commit_positions()
        if self._buffering():
            if pending.window and pending.window.get("buffered"):  # what the crashed agent had in Firehose's buffer
                self._remember(list(pending.window["buffered"]), at=pending.created)
            self._remember(self._sent_hashes(shipment, failures))
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


# What this process sent to each Firehose delivery stream lately: (time the send ended, record hashes), oldest first.
_RECENT_SENDS: dict[str, deque[tuple[float, frozenset[str]]]] = {}


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


def _kinesis_window(stream: str, after: dict[str, str], since: float) -> tuple[Counter[str], dict[str, str]]:
    """Hashes of the records after ``after[shard]`` on every shard (``AT_TIMESTAMP`` ``since`` on the shards the flow
    never wrote to, or whose position expired), and the last sequence number seen per shard."""
    from botocore.exceptions import ClientError

    kinesis = config.client("kinesis")
    found: Counter[str] = Counter()
    last: dict[str, str] = {}
    for shard_id in streams.shards(stream, client=kinesis):
        records: list[tuple[bytes, str]] | None = None
        if shard_id in after:
            try:
                records = [
                    (r.data, r.sequence_number)
                    for r in streams.read_shard(stream, shard_id, after[shard_id], client=kinesis)
                ]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "InvalidArgumentException":
                    raise
                log.warning("%s %s: position %s expired; reading from the batch's time", stream, shard_id, exc)
        if records is None:
            records = _kinesis_since(kinesis, stream, shard_id, since)
        found.update(record_hash(data) for data, _seq in records)
        if records:
            last[shard_id] = records[-1][1]
    return found, last


def _kinesis_since(kinesis: Any, stream: str, shard_id: str, since: float) -> list[tuple[bytes, str]]:
    at = datetime.fromtimestamp(since, UTC)
    return [
        (r.data, r.sequence_number)
        for r in streams.read_shard(stream, shard_id, position="AT_TIMESTAMP", at_timestamp=at, client=kinesis)
    ]


@dataclass(frozen=True)
class _Lake:
    """Where a Firehose delivery stream writes its S3 objects, and how long it may buffer records first."""

    bucket: str
    prefix: str
    stream: str  # the delivery stream's full name (object names start with it)
    version: str
    settle_s: float

    @property
    def default_names(self) -> bool:
        """Objects named ``<prefix>YYYY/MM/DD/HH/<stream>-<version>-YYYY-MM-DD-HH-MM-SS-<random>``."""
        return "!{" not in self.prefix


def _lake_of(delivery_stream: str) -> _Lake | None:
    """The S3 copy of a Firehose delivery stream (None: it delivers to OpenSearch only, nothing to read back)."""
    firehose = config.client("firehose")
    name = streams.stream_name(delivery_stream)
    description = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
    for destination in description.get("Destinations", []):
        s3 = destination.get("ExtendedS3DestinationDescription") or destination.get("S3DestinationDescription")
        if s3 and not {"ElasticsearchDestinationDescription", "AmazonopensearchserviceDestinationDescription"} & set(
            destination
        ):
            interval = int((s3.get("BufferingHints") or {}).get("IntervalInSeconds", 0))
            return _Lake(
                bucket=s3["BucketARN"].split(":")[-1],
                prefix=s3.get("Prefix", "") or "",
                stream=name,
                version=str(description.get("VersionId", "")),
                # the emulator writes each PutRecordBatch at once; Firehose buffers up to its interval
                settle_s=config.by_target(local=0.0, aws=interval + 60.0),
            )
    return None


def _lake_objects(lake: _Lake, since: float) -> list[dict[str, Any]]:
    """The delivery stream's S3 objects written at ``since`` or later (``LastModified`` has whole seconds)."""
    client = config.client("s3")
    threshold = datetime.fromtimestamp(math.floor(since), UTC)
    # object names carry the time the buffer started (the emulator: when the object was made)
    earliest = datetime.fromtimestamp(since - lake.settle_s - CLOCK_SLACK_S, UTC)
    # Firehose puts the YYYY/MM/DD/HH/ folders right after the prefix; the emulator adds a "/" to one without
    prefixes = [lake.prefix] if not lake.prefix or lake.prefix.endswith("/") else [lake.prefix, lake.prefix + "/"]
    out: list[dict[str, Any]] = []
    for prefix in prefixes:
        hour = earliest.replace(minute=0, second=0, microsecond=0)
        while hour <= datetime.now(UTC) + timedelta(seconds=CLOCK_SLACK_S):
            hour_prefix = prefix + hour.strftime("%Y/%m/%d/%H/")
            kwargs: dict[str, Any] = {"Bucket": lake.bucket, "Prefix": hour_prefix}
            if lake.default_names and hour == earliest.replace(minute=0, second=0, microsecond=0):
                kwargs["StartAfter"] = f"{hour_prefix}{lake.stream}-{lake.version}-{earliest:%Y-%m-%d-%H-%M-%S}"
            for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
                for obj in page.get("Contents", []):
                    if obj["LastModified"] < threshold:
                        continue
                    if lake.default_names and not obj["Key"][len(hour_prefix) :].startswith(f"{lake.stream}-"):
                        continue  # another delivery stream writing into the same folder
                    out.append(obj)
            hour += timedelta(hours=1)
    return out


def _lake_hashes(lake: _Lake, since: float, seen: set[str]) -> Counter[str]:
    """Hashes of the records in the objects written since ``since`` that were not there before the send."""
    wait = since + CLOCK_SLACK_S + lake.settle_s - time.time()
    if lake.settle_s and wait > 0:
        log.info("waiting %.0f s for Firehose to flush its buffer before checking what landed", wait)
        time.sleep(wait)
    client = config.client("s3")
    found: Counter[str] = Counter()
    for obj in _lake_objects(lake, since):
        if obj["Key"] in seen:
            continue
        body = client.get_object(Bucket=lake.bucket, Key=obj["Key"])["Body"].read()
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


def _crash_point(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    where, _, number = value.partition(":")
    if where not in CRASH_POINTS or not number.isdigit():
        raise AgentError(f"{CRASH_AT_ENV}={value!r}: expected <{'|'.join(CRASH_POINTS)}>:<batch number>")
    return where, int(number)


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
        crash_at = _crash_point(os.environ.get(CRASH_AT_ENV))
        self.runners = [
            FlowRunner(
                flow,
                self.store.flow(flow.name),
                self.store,
                self.state_dir / "dead-letter",
                crash_after=int(crash) if crash else None,
                crash_at=crash_at,
            )
            for flow in agent_config.select(flows)
        ]
        for runner in self.runners:
            runner.started = self.store.last_send_before()
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
            runner.started = self.store.last_send_before()

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
        for runner in self.runners:
            for orphan in runner.tailer.unshipped_orphans():
                log.warning(
                    "flow %s stops with %d bytes of %s unshipped: the file was truncated or replaced and no copy of "
                    "it has appeared; a later run ships them if one does",
                    runner.flow.name,
                    orphan.unshipped,
                    orphan.path,
                )
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
