"""Per-file checkpoints of the shipping agent (inode + offset + the file's first bytes), written atomically.

One JSON file per agent holds, for every flow: the tracked files (keyed by ``<device>:<inode>``) with the byte
offset shipped so far and the file's first bytes (the *fingerprint*: a file whose first bytes changed was truncated
or its inode reused), recently lost files (*orphans*, so a copy made by ``copytruncate`` can take over their offset),
the *pending* batch (the write-ahead journal: written before a send, cleared after it; a restart checks the
destination for it so that a crash between send and commit neither loses nor re-sends lines), the last Kinesis
sequence number per shard the flow committed, and cumulative counts.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shoplake.errors import DataError

VERSION = 1
FINGERPRINT_BYTES = 512
MAX_ORPHANS = 200
ORPHAN_TTL_S = 7 * 24 * 3600


@dataclass
class FileState:
    """Where the agent is in one file: ``offset`` = bytes shipped (always at a line start)."""

    key: str  # "<st_dev>:<st_ino>"
    path: str
    offset: int = 0
    head: bytes = b""  # the first bytes of the file (up to FINGERPRINT_BYTES): its fingerprint
    lines: int = 0  # complete lines consumed from this file
    updated: float = field(default_factory=time.time)
    unshipped: int = 0  # an orphan's bytes written after ``offset`` when it was lost: shipped if a copy takes over

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["head"] = base64.b64encode(self.head).decode("ascii")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileState:
        data = dict(data)
        data["head"] = base64.b64decode(data.get("head", ""))
        return cls(**data)


@dataclass
class Pending:
    """The write-ahead journal entry of a batch handed to the destination but not yet committed.

    ``ranges``: the batch's lines as byte ranges per file (the records' identity: file + offset). ``window``: where
    in the destination the batch's records can land and nothing else of this flow can, taken before the send —
    Kinesis: ``{"after": {shard: last sequence number this flow had committed}}`` (the batch's records are the
    flow's only ones after those); Firehose → S3: ``{"since": t, "seen": [object keys already there]}`` (the
    batch's records are in the objects not seen yet). None: the destination cannot be read back (or the journal
    was written by an older agent). ``hashes``: the records' content hashes, to notice a file that changed.
    """

    created: float
    ranges: list[dict[str, Any]]  # {"key", "path", "start", "end", "lines"}
    hashes: list[str]
    window: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The journal entry as the checkpoint file holds it (its lists as they are: a save serializes them at once;
        ``asdict``'s deep copy of a batch's ranges and hashes was most of what a save cost)."""
        return {"created": self.created, "ranges": self.ranges, "hashes": self.hashes, "window": self.window}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pending:
        return cls(
            created=float(data["created"]),
            ranges=list(data["ranges"]),
            hashes=list(data["hashes"]),
            window=data.get("window"),
        )


COUNT_KEYS = ("lines_read", "records_sent", "failed", "retried", "malformed")


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


@dataclass
class FlowState:
    """Checkpoint state of one flow."""

    files: dict[str, FileState] = field(default_factory=dict)
    orphans: list[FileState] = field(default_factory=list)
    pending: Pending | None = None
    totals: dict[str, int] = field(default_factory=zero_counts)
    positions: dict[str, str] = field(default_factory=dict)  # Kinesis: shard id → last sequence number committed

    def to_json(self) -> dict[str, Any]:
        return {
            "files": {k: v.to_json() for k, v in self.files.items()},
            "orphans": [o.to_json() for o in self.orphans],
            "pending": self.pending.to_json() if self.pending else None,
            "totals": dict(self.totals),
            "positions": dict(self.positions),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlowState:
        totals = zero_counts()
        totals.update({k: int(v) for k, v in (data.get("totals") or {}).items() if k in totals})
        return cls(
            files={k: FileState.from_json(v) for k, v in (data.get("files") or {}).items()},
            orphans=[FileState.from_json(o) for o in data.get("orphans") or []],
            pending=Pending.from_json(data["pending"]) if data.get("pending") else None,
            totals=totals,
            positions={str(k): str(v) for k, v in (data.get("positions") or {}).items()},
        )

    def prune_orphans(self, now: float | None = None) -> list[FileState]:
        """Forget orphans older than a week, and all but the newest MAX_ORPHANS; returns the forgotten ones."""
        now = time.time() if now is None else now
        kept = [o for o in self.orphans if now - o.updated < ORPHAN_TTL_S]
        kept.sort(key=lambda o: o.updated)
        kept = kept[-MAX_ORPHANS:]
        staying = {id(o) for o in kept}
        forgotten = [o for o in self.orphans if id(o) not in staying]
        self.orphans = kept
        return forgotten


class CheckpointStore:
    """The agent's checkpoint file: loaded once, rewritten atomically (temp file + fsync + rename) on each save."""

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.flows: dict[str, FlowState] = {}
        self.saved = 0.0  # when the file was last written (0: there is none)
        self.load()

    def load(self) -> None:
        if not self.path.exists():
            self.flows = {}
            self.saved = 0.0
            return
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(
                f"the agent checkpoint {self.path} is not valid JSON ({exc}); it is only ever replaced atomically, "
                "so something else wrote it: restore it, or delete it to ship every file again from the start"
            ) from exc
        if data.get("version") != VERSION:
            raise DataError(f"the agent checkpoint {self.path} has version {data.get('version')}, expected {VERSION}")
        self.flows = {name: FlowState.from_json(flow) for name, flow in (data.get("flows") or {}).items()}
        self.saved = float(data.get("saved") or time.time())

    def last_send_before(self) -> float:
        """A time by which every send of the agents that wrote this file had ended: when it was saved if no batch was
        left pending (a commit is saved after its send), else now (an interrupted send may have run until the crash)."""
        if any(flow.pending for flow in self.flows.values()):
            return time.time()
        return self.saved

    def flow(self, name: str) -> FlowState:
        return self.flows.setdefault(name, FlowState())

    def save(self) -> None:
        """Write every flow's state atomically: a reader (or a restart after SIGKILL) sees the old or the new file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": VERSION, "saved": time.time(), "flows": {n: f.to_json() for n, f in self.flows.items()}}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as handle:
            json.dump(payload, handle, separators=(",", ":"))
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        if self.fsync:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


def read_checkpoint(path: Path) -> dict[str, FlowState]:
    """The flows of a checkpoint file (empty when missing), for ``shoplake agent status``."""
    return CheckpointStore(path, fsync=False).flows
