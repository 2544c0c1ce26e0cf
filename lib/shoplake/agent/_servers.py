"""Simulated web servers: play the shop's order lines and access log as log files, with rotation.

Each server writes into ``<log_dir>/server-<n>/``:

- ``orders.csv``: one order line per row, in the Online Retail column order (InvoiceNo, StockCode, Description,
  Quantity, InvoiceDate ``M/D/YYYY H:MM``, UnitPrice, CustomerID, Country) **plus LineNo as a trailing column**,
  no header. Seconds are written (``H:MM:SS``) only when not zero, so the agent's CSV→JSON gives back exactly the
  order event of ``docs/internals.md``.
- ``access.log``: the shop's Apache combined log lines.

An invoice always goes to one server (by a hash of InvoiceNo), an access-log line by a hash of the client IP (a
sticky load balancer). ``speed=None`` writes as fast as it can; ``speed=s`` keeps the shop's rhythm compressed ``s``
times (3600: one shop hour per second). Files rotate every ``rotate_lines`` lines like logrotate does:
``rename`` (``orders.csv`` → ``orders.csv.1``, older ones shifted, a new ``orders.csv``) or ``copytruncate``
(copied to ``orders.csv.1``, then truncated in place while the server keeps its file open); ``both`` alternates.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import numbers
import os
import shutil
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from shoplake.agent._flows import ORDER_FIELDS, format_retail_datetime
from shoplake.errors import ConfigError, DataError
from shoplake.events import invoice_time

log = logging.getLogger(__name__)

ROTATIONS = ("rename", "copytruncate", "both", "none")
ORDERS_FILE = "orders.csv"
ACCESS_FILE = "access.log"
FLUSH_EVERY_S = 0.05


def _check_rotate_lines(rotate_lines: int | None) -> None:
    """``rotate_lines``: None (the default) or a whole number ≥ 1 (0 or -1 would rotate never or on every line)."""
    if rotate_lines is None:
        return
    if isinstance(rotate_lines, bool) or not isinstance(rotate_lines, numbers.Integral) or rotate_lines < 1:
        raise ConfigError(f"rotate_lines must be a whole number of lines ≥ 1 (or None), got {rotate_lines!r}")


class RotatingLog:
    """A log file a server appends to, rotated by ``rename`` or ``copytruncate`` every ``rotate_lines`` lines."""

    def __init__(
        self,
        path: Path,
        rotation: str = "rename",
        rotate_lines: int | None = None,
        keep: int | None = None,
        style_offset: int = 0,
    ) -> None:
        if rotation not in ROTATIONS:
            raise ConfigError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
        _check_rotate_lines(rotate_lines)
        self.path = Path(path)
        self.rotation = rotation
        self.rotate_lines = rotate_lines
        self.keep = keep
        self.style_offset = style_offset
        self.rotations: list[str] = []
        self.lines_in_file = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self.path, "ab")  # noqa: SIM115 - a long-lived file, closed in close()

    def write(self, line: str) -> None:
        """Append one line (a newline is added); rotate first when the file is full."""
        if self.rotate_lines and self.lines_in_file >= self.rotate_lines:
            self.rotate()
        self._handle.write(line.encode("utf-8") + b"\n")
        self.lines_in_file += 1

    def flush(self) -> None:
        self._handle.flush()

    def _style(self) -> str:
        if self.rotation == "both":
            return ("rename", "copytruncate")[(len(self.rotations) + self.style_offset) % 2]
        return self.rotation

    def _shift(self) -> None:
        """``name.N`` → ``name.N+1`` for every rotated file (highest first), dropping those beyond ``keep``."""
        numbered = []
        for sibling in self.path.parent.glob(self.path.name + ".*"):
            suffix = sibling.name[len(self.path.name) + 1 :]
            if suffix.isdigit():
                numbered.append(int(suffix))
        for n in sorted(numbered, reverse=True):
            source = self.path.with_name(f"{self.path.name}.{n}")
            if self.keep is not None and n >= self.keep:
                source.unlink()
            else:
                os.rename(source, self.path.with_name(f"{self.path.name}.{n + 1}"))

    def rotate(self) -> None:
        """Rotate now (the style comes from ``rotation``)."""
        style = self._style()
        if style == "none":
            return
        self._handle.flush()
        self._shift()
        first = self.path.with_name(self.path.name + ".1")
        if style == "rename":
            self._handle.close()
            os.rename(self.path, first)
            self._handle = open(self.path, "ab")  # noqa: SIM115
        else:  # copytruncate: the server keeps writing to its open (O_APPEND) file
            shutil.copyfile(self.path, first)
            os.ftruncate(self._handle.fileno(), 0)
        self.rotations.append(style)
        self.lines_in_file = 0

    def close(self) -> None:
        self._handle.close()


# --------------------------------------------------------------------------- the shop's lines as (time, text)


def _csv_writer() -> tuple[io.StringIO, Any]:
    buffer = io.StringIO()
    return buffer, csv.writer(buffer, lineterminator="\n")


def _iso(value: Any) -> str:
    if isinstance(value, str):
        return value
    if hasattr(value, "to_pydatetime"):
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise DataError(f"InvoiceDate {value!r} is neither an ISO string nor a timestamp")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value) == "<NA>"


def order_line_csv(event: dict[str, Any], writer: tuple[io.StringIO, Any] | None = None) -> str:
    """One order event as the servers write it (Online Retail columns + LineNo, no newline)."""
    buffer, out = writer or _csv_writer()
    buffer.seek(0)
    buffer.truncate()
    customer = event.get("CustomerID")
    price = event["UnitPrice"]
    row = [
        str(event["InvoiceNo"]),
        str(event["StockCode"]),
        str(event.get("Description") or "").replace("\r", " ").replace("\n", " "),
        str(int(event["Quantity"])),
        format_retail_datetime(_iso(event["InvoiceDate"])),
        repr(float(price)),  # the shortest text that reads back as the same float
        "" if _missing(customer) else str(customer),
        str(event["Country"]),
        str(int(event["LineNo"])),
    ]
    out.writerow(row)
    return buffer.getvalue()[:-1]


def order_lines_of(order_lines: Any) -> Iterator[tuple[float, str, str]]:
    """``(epoch seconds, InvoiceNo, csv text)`` per order line of a DataFrame or an iterable of event dicts."""
    if hasattr(order_lines, "to_dict"):
        missing = [c for c in ORDER_FIELDS if c not in order_lines.columns]
        if missing:
            raise DataError(f"order lines lack the columns {missing}; expected the order event schema {ORDER_FIELDS}")
        rows: Iterable[dict[str, Any]] = order_lines[list(ORDER_FIELDS)].to_dict(orient="records")
    else:
        rows = order_lines
    writer = _csv_writer()
    for event in rows:
        iso = _iso(event["InvoiceDate"])
        try:
            ts = invoice_time(iso).replace(tzinfo=UTC).timestamp()
        except ValueError:
            raise DataError(
                f"order line {event['InvoiceNo']}: InvoiceDate {iso!r} is not an ISO 8601 UTC time "
                "YYYY-MM-DDTHH:MM:SSZ (or a timestamp); convert the dates first (shoplake data load-retail does)"
            ) from None
        yield ts, str(event["InvoiceNo"]), order_line_csv(event, writer)


def _access_time(line: str) -> float | None:
    """Epoch seconds of an access-log line's ``[10/Oct/2000:13:55:36 -0700]``, or None (no such time): what
    ``datetime.strptime(..., "%d/%b/%Y:%H:%M:%S %z").timestamp()`` gives, with each day and zone parsed once and the
    time of day added (a log of millions of lines repeats its days; strptime was ~7 µs a line)."""
    start = line.find("[")
    end = line.find("]", start + 1)
    if start < 0 or end < 0:
        return None
    stamp = line[start + 1 : end]
    clock = stamp[12:20]  # HH:MM:SS
    if (
        len(stamp) == 26
        and stamp[11] == ":"
        and stamp[20] == " "
        and clock[2] == ":"
        and clock[5] == ":"
        and clock.isascii()
        and (clock[:2] + clock[3:5] + clock[6:]).isdigit()
        and clock[:2] < "24"
        and clock[3:5] < "60"
        and clock[6:] < "60"  # 60 and 61 (leap seconds strptime's pattern reads, then refuses): strptime below
    ):
        day = _day_time(stamp[:11], stamp[21:])
        if day is not None:
            return day + int(clock[:2]) * 3600 + int(clock[3:5]) * 60 + int(clock[6:])
    return _strptime_time(stamp)


@lru_cache(maxsize=16384)
def _day_time(day: str, zone: str) -> float | None:
    """Epoch seconds of ``10/Oct/2000`` at midnight in ``-0700`` (None: not a day and zone strptime takes)."""
    return _strptime_time(f"{day}:00:00:00 {zone}")


def _strptime_time(stamp: str) -> float | None:
    try:
        return datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").timestamp()
    except ValueError:
        return None


def access_lines_of(lines: Iterable[str]) -> Iterator[tuple[float, str, str]]:
    """``(epoch seconds the servers write it at, client ip, line)`` per non-empty access-log line, in line order.

    A line's own time (:func:`_access_time`); a line without one (bad lines are written as they are) goes with the
    line before it, and lines before the log's first time with that first time (0.0 when no line has a time). This
    is the servers' clock, and the clock notebook 05 measures freshness from (``weblogs._analysis``)."""
    before: list[str] = []  # the lines before the first time (held until it comes; a log holds few, if any)
    last: float | None = None
    for raw in lines:
        text = raw.rstrip("\r\n")
        if not text:
            continue
        ts = _access_time(text)
        if ts is None and last is None:
            before.append(text)
            continue
        if before:
            yield from ((ts, held.split(" ", 1)[0], held) for held in before)
            before.clear()
        last = ts if ts is not None else last
        yield last, text.split(" ", 1)[0], text
    yield from ((0.0, held.split(" ", 1)[0], held) for held in before)  # no line has a time


# --------------------------------------------------------------------------- servers


@dataclass
class ServerRun:
    """What the simulated servers wrote."""

    log_dir: Path
    lines: dict[str, int] = field(default_factory=lambda: {"orders": 0, "access": 0})
    rotations: dict[str, int] = field(default_factory=lambda: {"rename": 0, "copytruncate": 0})
    files: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def counts(self) -> dict[str, Any]:
        return {
            "log_dir": str(self.log_dir),
            "lines": dict(self.lines),
            "rotations": dict(self.rotations),
            "elapsed_s": round(self.elapsed_s, 3),
        }


def _server(key: str, servers: int) -> int:
    return zlib.crc32(key.encode("utf-8")) % servers


def simulate_servers(
    order_lines: Any = None,
    access_lines: Iterable[str] | Path | None = None,
    log_dir: Path | str | None = None,
    *,
    servers: int = 2,
    speed: float | None = None,
    rotation: str = "both",
    rotate_lines: int | None = None,
    keep: int | None = None,
    stop: threading.Event | None = None,
    progress: bool = False,
) -> ServerRun:
    """Write the shop's order lines and access-log lines as ``servers`` web servers would (see the module doc).

    ``order_lines``: a DataFrame (or dicts) in the order event schema; ``access_lines``: a path or lines of an
    Apache combined log. ``rotate_lines=None`` rotates each file about three times over the run.
    """
    if isinstance(servers, bool) or not isinstance(servers, numbers.Integral) or servers < 1:
        raise ConfigError(f"servers must be a whole number ≥ 1, got {servers!r}")
    if speed is not None and not (isinstance(speed, numbers.Real) and math.isfinite(speed) and speed > 0):
        raise ConfigError(f"speed must be a positive number of shop seconds per wall second (or None), got {speed}")
    if rotation not in ROTATIONS:
        raise ConfigError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
    _check_rotate_lines(rotate_lines)
    from shoplake import config

    log_dir = Path(log_dir) if log_dir else config.settings().home / "servers"
    events: list[tuple[float, int, int, str]] = []  # (time, server, kind 0=orders 1=access, text)
    if order_lines is not None:
        for ts, invoice, text in order_lines_of(order_lines):
            events.append((ts, _server(invoice, servers), 0, text))
    if access_lines is not None:
        if isinstance(access_lines, str | Path):
            with open(access_lines, encoding="utf-8", errors="replace") as handle:
                raw_lines = handle.readlines()
        else:
            raw_lines = list(access_lines)
        for ts, ip, text in access_lines_of(raw_lines):
            events.append((ts, _server(ip, servers), 1, text))
    events.sort(key=lambda e: e[0])  # stable: each source keeps its own order within a second

    per_file = [[0, 0] for _ in range(servers)]
    for _ts, server, kind, _text in events:
        per_file[server][kind] += 1
    biggest = max((n for pair in per_file for n in pair), default=0)
    if rotate_lines is None:
        rotate_lines = max(10, math.ceil(biggest / 4))

    run = ServerRun(log_dir=log_dir)
    files: dict[tuple[int, int], RotatingLog] = {}
    for server in range(servers):
        for kind, name in ((0, ORDERS_FILE), (1, ACCESS_FILE)):
            if per_file[server][kind]:
                files[server, kind] = RotatingLog(
                    log_dir / f"server-{server}" / name, rotation, rotate_lines, keep, style_offset=server + kind
                )
    from tqdm.auto import tqdm

    began = time.perf_counter()
    last_flush = began
    try:
        with tqdm(total=len(events), desc="servers writing", unit="line", disable=not progress) as bar:
            first = events[0][0] if events else 0.0
            for i, (ts, server, kind, text) in enumerate(events):
                if stop is not None and stop.is_set():
                    break
                if speed is not None:
                    due = (ts - first) / speed
                    while (ahead := due - (time.perf_counter() - began)) > 0:
                        for handle in files.values():
                            handle.flush()
                        if stop is not None and stop.wait(min(ahead, 0.5)):
                            break
                        if stop is None:
                            time.sleep(min(ahead, 0.5))
                files[server, kind].write(text)
                run.lines["orders" if kind == 0 else "access"] += 1
                now = time.perf_counter()
                if now - last_flush > FLUSH_EVERY_S:
                    for handle in files.values():
                        handle.flush()
                    last_flush = now
                if i % 1000 == 0:
                    bar.update(1000 if i else 1)
    finally:
        for handle in files.values():
            handle.close()
            for style in handle.rotations:
                run.rotations[style] += 1
    run.files = sorted(str(p) for p in log_dir.glob("server-*/*"))
    run.elapsed_s = time.perf_counter() - began
    log.info("servers wrote %s into %s (%s rotations)", run.lines, log_dir, run.rotations)
    return run
