"""Tailing the files of one flow: glob patterns, rotation (rename and copytruncate), complete lines only.

A file is known by ``<device>:<inode>`` and its first bytes (:class:`~._checkpoint.FileState`):

- **rename rotation** (``orders.csv`` → ``orders.csv.1``, a new ``orders.csv``): the inode keeps its offset under
  its new name and is read to its end; the new file is a new inode, read from 0.
- **copytruncate** (``orders.csv`` copied to ``orders.csv.1``, then truncated): the tracked inode is now shorter
  than its offset, or starts with other bytes: its old state becomes an *orphan* and it is read again from 0. The
  copy is an unknown inode whose first bytes match the orphan: it takes over the orphan's offset, so the lines not
  yet shipped before the truncation are read from the copy, and the shipped ones are not read again. A copy seen
  *before* the truncation (its first bytes match a live file) waits until the original is truncated, and a copy
  still being written (shorter than the orphan's offset) waits until it is complete.
- **inode reuse** (a deleted file's inode given to a new file): the first bytes differ, so it is a new file.

Only complete lines are returned: a partial line at the end of a file waits for its newline.
Rotated names must match the flow's pattern (e.g. ``orders.csv*``) or the lines written just before a rotation
may be lost, as with any tailing agent.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from shoplake.agent._checkpoint import FINGERPRINT_BYTES, FileState, FlowState

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
MAX_LINE_BYTES = 1 << 20
COPY_GRACE_S = 60.0  # an unknown file looking like a copy of a live one waits this long for the truncation


@dataclass
class Line:
    """One complete line of a file: bytes ``[start, end)`` (``end`` is after the newline); ``data`` without it."""

    key: str
    path: str
    start: int
    end: int
    data: bytes
    too_long: bool = False


def file_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}"


def _read_head(path: str, key: str | None = None) -> bytes | None:
    """The first bytes of ``path``; None if it is gone or (with ``key``) is no longer that inode (renamed meanwhile)."""
    try:
        with open(path, "rb") as handle:
            if key is not None and file_key(os.fstat(handle.fileno())) != key:
                return None
            return handle.read(FINGERPRINT_BYTES)
    except FileNotFoundError:
        return None


def _related(a: bytes, b: bytes) -> bool:
    """True when one head is a prefix of the other and the shared part holds a complete line (or is full)."""
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    if not short or not long_.startswith(short):
        return False
    return b"\n" in short or len(short) >= FINGERPRINT_BYTES


def _lost(fs: FileState, why: str) -> None:
    log.warning("%s (%s): its last %d bytes were never shipped (lost): %s", fs.path, fs.key, fs.unshipped, why)


class Tailer:
    """The files of one flow: reconcile them with the checkpoint (:meth:`scan`), read new complete lines."""

    def __init__(
        self,
        patterns: list[str],
        state: FlowState,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        copy_grace_s: float = COPY_GRACE_S,
    ) -> None:
        self.patterns = list(patterns)
        self.state = state
        self.max_line_bytes = max_line_bytes
        self.copy_grace_s = copy_grace_s
        self._sizes: dict[str, int] = {}  # file key -> size at the last scan
        self._mtimes: dict[str, float] = {}
        self._copy_seen: dict[str, float] = {}  # unknown key -> first time it looked like a copy of a live file

    # ------------------------------------------------------------------ discovery

    def _glob(self) -> dict[str, tuple[str, os.stat_result]]:
        found: dict[str, tuple[str, os.stat_result]] = {}
        for pattern in self.patterns:
            for path in sorted(glob.glob(pattern)):
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found.setdefault(file_key(st), (path, st))
        return found

    def _orphan(self, fs: FileState, why: str) -> None:
        """A tracked file is gone or truncated: keep it as an orphan, so that a copy of it (``copytruncate``) takes
        over its offset. Its unshipped bytes are only reported lost when no copy has come (:meth:`unshipped_orphans`,
        or when the orphan is forgotten): a normal rotation says nothing above INFO."""
        last_size = self._sizes.get(fs.key)
        fs.unshipped = max(0, last_size - fs.offset) if last_size is not None else 0
        log.info(
            "%s (%s) %s; %d bytes of it not shipped yet: waiting for a copy of it (copytruncate)",
            fs.path,
            fs.key,
            why,
            fs.unshipped,
        )
        if fs.head:
            fs.updated = time.time()
            self.state.orphans.append(fs)
        elif fs.unshipped:
            _lost(fs, "it had no content to recognise a copy by")

    def unshipped_orphans(self) -> list[FileState]:
        """Lost files whose last bytes no copy has taken over (yet): what a stopping agent leaves unshipped."""
        return [o for o in self.state.orphans if o.unshipped]

    def scan(self) -> None:
        """Match the files on disk to the checkpointed ones (see the module docstring for the rules)."""
        found = self._glob()
        heads: dict[str, bytes | None] = {}

        def head(key: str) -> bytes | None:
            if key not in heads:
                heads[key] = _read_head(found[key][0], key)
            return heads[key]

        kept: dict[str, FileState] = {}
        for key, fs in list(self.state.files.items()):
            if key not in found:
                self._orphan(fs, "is gone (deleted or moved out of the pattern)")
                continue
            path, st = found[key]
            current = head(key)
            if current is None:
                kept[key] = fs  # renamed while we scanned: the next scan finds it under its new name
                continue
            if st.st_size >= fs.offset and current.startswith(fs.head):
                if path != fs.path:
                    log.info("%s was renamed to %s (rotation); continuing at offset %d", fs.path, path, fs.offset)
                fs.path = path
                if len(current) > len(fs.head):
                    fs.head = current
                kept[key] = fs
            else:
                self._orphan(fs, f"was truncated or replaced (size {st.st_size}, offset {fs.offset})")
                kept[key] = FileState(key=key, path=path, offset=0, head=current)

        now = time.time()
        for key, (path, st) in found.items():
            if key in kept:
                continue
            current = head(key)
            if current is None:
                continue
            if b"\n" not in current and st.st_size <= len(current):
                continue  # no complete line yet: too early to tell a new file from a copy
            orphan = self._matching_orphan(current)
            if orphan is not None and orphan.offset > self._size_now(path, key, st.st_size):
                # a copy still being written (copytruncate copies before it truncates): it will hold at least the
                # orphan's offset once complete; read from 0 now, it would repeat every line already shipped
                if self._waits(key, now, path, orphan.path, f"stayed shorter than its offset {orphan.offset}"):
                    continue
                orphan = None
            if orphan is not None:
                self._copy_seen.pop(key, None)
                self.state.orphans.remove(orphan)
                log.info("%s is a copy of %s (copytruncate): continuing at offset %d", path, orphan.path, orphan.offset)
                kept[key] = FileState(key=key, path=path, offset=orphan.offset, head=current, lines=orphan.lines)
                continue
            twin = next((fs for fs in kept.values() if fs.head and _related(current, fs.head)), None)
            if twin is not None and self._waits(key, now, path, twin.path, "that file was not truncated"):
                continue
            self._copy_seen.pop(key, None)
            kept[key] = FileState(key=key, path=path, offset=0, head=current)

        self.state.files = kept
        for forgotten in self.state.prune_orphans(now):
            if forgotten.unshipped:
                _lost(forgotten, "no copy of it appeared before the agent forgot it")
        self._sizes = {k: found[k][1].st_size for k in kept}
        self._mtimes = {k: found[k][1].st_mtime for k in kept}

    def _waits(self, key: str, now: float, path: str, original: str, unless: str) -> bool:
        """True while an unknown file that looks like a copy of ``original`` is within its grace period (it is not
        read yet); once the grace is over, False, and a warning says it will be read as a new file."""
        if now - self._copy_seen.setdefault(key, now) < self.copy_grace_s:
            log.debug("%s looks like a copy of %s: waiting", path, original)
            return True
        log.warning(
            "%s starts like %s but %s within %.0f s: treating it as a new file",
            path,
            original,
            unless,
            self.copy_grace_s,
        )
        return False

    def _matching_orphan(self, current: bytes) -> FileState | None:
        matches = [o for o in self.state.orphans if _related(current, o.head)]
        if not matches:
            return None
        return max(matches, key=lambda o: (len(o.head), o.updated))

    @staticmethod
    def _size_now(path: str, key: str, listed: int) -> int:
        """The size of ``path`` now (the listing's is older than the heads read since); ``listed`` if it moved."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return listed
        return st.st_size if file_key(st) == key else listed

    # ------------------------------------------------------------------ reading

    def lag_bytes(self) -> int:
        """Bytes written to the tracked files and not shipped yet (as of the last scan)."""
        return sum(max(0, self._sizes.get(k, 0) - fs.offset) for k, fs in self.state.files.items())

    def read(self, max_lines: int, max_bytes: int) -> list[Line]:
        """Complete lines after the checkpointed offsets, oldest file first, up to ``max_lines`` / ``max_bytes``."""
        out: list[Line] = []
        budget = max_bytes
        order = sorted(self.state.files.values(), key=lambda fs: (self._mtimes.get(fs.key, 0.0), fs.path))
        for fs in order:
            if len(out) >= max_lines or budget <= 0:
                break
            lines = self._read_file(fs, max_lines - len(out), budget)
            out.extend(lines)
            budget -= sum(line.end - line.start for line in lines)
        return out

    def _read_file(self, fs: FileState, max_lines: int, max_bytes: int) -> list[Line]:
        try:
            handle = open(fs.path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return []
        with handle:
            st = os.fstat(handle.fileno())
            if file_key(st) != fs.key or st.st_size <= fs.offset or not self._unchanged(handle, fs, fs.offset):
                return []  # rotated or truncated since the scan (the next scan sorts it out), or nothing new
            handle.seek(fs.offset)
            lines: list[Line] = []
            pos = fs.offset
            used = 0
            while len(lines) < max_lines and used < max_bytes:
                chunk = handle.read(READ_CHUNK)
                if not chunk:
                    break
                last_newline = chunk.rfind(b"\n")
                if last_newline < 0:
                    line = self._long_line(handle, fs, pos, chunk)
                    if line is None:
                        break  # a partial line: wait for its newline
                    lines.append(line)
                    pos = line.end
                    used += line.end - line.start
                    handle.seek(pos)
                    continue
                for raw in chunk[:last_newline].split(b"\n"):
                    size = len(raw) + 1
                    if lines and (len(lines) >= max_lines or used + size > max_bytes):
                        used = max_bytes  # budget spent: stop after this chunk
                        break
                    data = raw[:-1] if raw.endswith(b"\r") else raw
                    lines.append(Line(fs.key, fs.path, pos, pos + size, data, too_long=len(data) > self.max_line_bytes))
                    pos += size
                    used += size
                handle.seek(pos)
            if lines and not self._unchanged(handle, fs, pos):
                return []  # truncated (copytruncate) while we read: what we read may mix old and new bytes
            return lines

    @staticmethod
    def _unchanged(handle, fs: FileState, upto: int) -> bool:  # noqa: ANN001
        """The open file still holds ``upto`` bytes and starts with the checkpointed first bytes (not truncated)."""
        if os.fstat(handle.fileno()).st_size < upto:
            return False
        return os.pread(handle.fileno(), len(fs.head), 0) == fs.head if fs.head else True

    def _long_line(self, handle, fs: FileState, start: int, first: bytes) -> Line | None:  # noqa: ANN001
        """A line longer than one read: find its newline further on (None if it has none yet)."""
        size = len(first)
        while True:
            chunk = handle.read(READ_CHUNK)
            if not chunk:
                return None
            newline = chunk.find(b"\n")
            if newline >= 0:
                size += newline
                data = first[: self.max_line_bytes + 1]
                return Line(fs.key, fs.path, start, start + size + 1, data, too_long=size > self.max_line_bytes)
            size += len(chunk)

    def advance(self, lines: list[Line]) -> None:
        """Move the checkpointed offsets past ``lines`` (after they were shipped, dead-lettered or skipped)."""
        now = time.time()
        for line in lines:
            fs = self.state.files.get(line.key)
            if fs is None:
                continue
            if line.end > fs.offset:
                fs.offset = line.end
                fs.lines += 1
                fs.updated = now

    def paths(self) -> list[Path]:
        return [Path(fs.path) for fs in self.state.files.values()]
