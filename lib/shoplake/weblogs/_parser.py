"""Apache access-log files → search documents, with every line that cannot be parsed kept and counted with a reason.

The line parser itself is :func:`shoplake.lambdas.weblogs_transform.parse_line` — the code the Firehose
transformation Lambda runs — so the CLI, the local delivery and AWS parse identically.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoplake.errors import DataError
from shoplake.lambdas.weblogs_transform import is_bot, parse_line, parse_many, to_utc_iso, unescape

__all__ = [
    "ParseResult",
    "Rejected",
    "iter_lines",
    "parse_file",
    "parse_lines",
    "parse_line",
    "is_bot",
    "to_utc_iso",
    "unescape",
]


@dataclass(frozen=True)
class Rejected:
    """A line that could not be parsed: where it was, what it said, and why it was refused."""

    line_no: int
    line: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"line_no": self.line_no, "line": self.line, "reason": self.reason}


@dataclass
class ParseResult:
    """Documents and rejected lines of one parse; ``lines == parsed + rejected`` always holds."""

    docs: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    lines: int = 0

    @property
    def parsed(self) -> int:
        return len(self.docs)

    def summary(self) -> dict[str, Any]:
        """What ``shoplake logs parse --json`` prints."""
        statuses = Counter(str(d["status"]) for d in self.docs)
        stamps = [d["@timestamp"] for d in self.docs]
        return {
            "lines": self.lines,
            "parsed": self.parsed,
            "rejected": len(self.rejected),
            "status_counts": dict(sorted(statuses.items())),
            "bytes": sum(d["bytes"] for d in self.docs),
            "bots": sum(1 for d in self.docs if d["bot"]),
            "first": min(stamps) if stamps else None,
            "last": max(stamps) if stamps else None,
            "rejected_reasons": dict(Counter(_reason_kind(r.reason) for r in self.rejected).most_common()),
        }


def _reason_kind(reason: str) -> str:
    """The reason without the offending value (``bad status: '2000'`` → ``bad status``)."""
    return reason.split(": ", 1)[0]


def iter_lines(path: str | os.PathLike[str]) -> Iterator[str]:
    """The lines of a log file without line breaks (a final line break does not start an empty line)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"log file {p} does not exist: pass the path of an Apache access log")
    with p.open("rb") as handle:
        for raw in handle:  # binary: split on b"\n" only, like the delivery splits Firehose objects
            yield raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")


def parse_lines(lines: Iterable[str], first_line_no: int = 1) -> ParseResult:
    """Parse log lines; rejected lines keep their 1-based line number, text and reason.

    The batch parser :func:`~shoplake.lambdas.weblogs_transform.parse_many` does the work: the same documents and
    reasons as :func:`parse_line` line by line, with what repeats (clients, hours, requests, agents) checked once.
    """
    docs, rejected, count = parse_many(lines)
    return ParseResult(
        docs=docs,
        rejected=[Rejected(first_line_no + n, line, reason) for n, line, reason in rejected],
        lines=count,
    )


def parse_file(path: str | os.PathLike[str]) -> ParseResult:
    """Parse a whole access-log file."""
    return parse_lines(iter_lines(path))
