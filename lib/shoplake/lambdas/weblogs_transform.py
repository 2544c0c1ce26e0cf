"""Firehose record transformation for the ``weblogs`` stream: Apache access-log lines → JSON search documents.

The equivalent of the Firehose "Apache log to JSON" Lambda blueprint (``kinesis-firehose-apachelog-to-json``):
each incoming record (one log line, base64) comes back with the same ``recordId``, ``result`` ``Ok`` and one JSON
document as data. A line the parser refuses comes back ``Ok`` too, as a *rejected-line document*
``{"rejected": true, "reason": <the parser's reason>, "line": <the line>, "line_chars": n, "received_at": ...}``,
and lands in the same daily index, where ``shoplake.weblogs`` counts and lists it apart from the access documents.
Why not ``ProcessingFailed``: Firehose then writes the record under ``processing-failed/`` with its own generic
``errorMessage`` ("The Lambda function was successfully invoked but it returned an error result for the record")
and the record's original data; nothing of the function's reason survives, and the Firehose OpenSearch destination
has one index name (no routing of rejected lines elsewhere). ``processing-failed/`` in the S3 backup then only holds
records the function could not handle at all (invocation errors, timeouts) — still counted by ``shoplake.weblogs``.
Stdlib only, so the file alone is the deployment zip. ``shoplake.weblogs`` runs the very same functions locally
(:func:`parse_line`, :func:`transform_records`), so there is one parser.

Formats: Apache *combined* and *common* log format, IPv4/IPv6 clients, Apache's escapes (``\\"``, ``\\\\``,
``\\xhh``) in request/referrer/agent, ``-`` for bytes, any method token, any ``±hhmm`` time zone (converted to
UTC). Records already converted by the Kinesis Agent (``LOGTOJSON``/``COMBINEDAPACHELOG``: ``host``, ``ident``,
``authuser``, ``datetime``, ``request``, ``response``, ``bytes``, ``referrer``, ``agent``) are accepted too.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

log = logging.getLogger(__name__)

_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'
LINE_RE = re.compile(
    r"^(\S+) (\S+) (\S+) \[([^\]]*)\] " + _QUOTED + r" (\S+) (\S+)(?: " + _QUOTED + " " + _QUOTED + r")?\s*$"
)
REQUEST_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*) (\S.*?)(?: ([A-Z]+/\d+(?:\.\d+)?))?$")
TIME_RE = re.compile(r"^(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$")
ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)")
BOT_RE = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|archiver|facebookexternalhit|bingpreview|curl/|wget/|python-requests|"
    r"python-urllib|go-http-client|java/|httpclient|scrapy|headlesschrome|phantomjs|pingdom|uptime|monitor",
    re.IGNORECASE,
)
MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "v": "\v", "b": "\b", "f": "\f"}
MAX_LINE = 65536
MAX_BYTES_DIGITS = 15  # < 2^53: exact in JSON numbers, int64 columns and OpenSearch longs (a petabyte per response)


def _unescape_match(match: re.Match[str]) -> str:
    code = match.group(1)
    if len(code) == 3 and code[0] == "x":
        return chr(int(code[1:], 16))
    return _ESCAPES.get(code, code)


def unescape(value: str) -> str:
    """Undo Apache's log escaping (``\\"`` → ``"``, ``\\\\`` → ``\\``, ``\\xhh`` → the character)."""
    return ESCAPE_RE.sub(_unescape_match, value) if "\\" in value else value


@lru_cache(maxsize=16384)
def _utc_minute(day_hour_minute: str, zone: str) -> str | None:
    """``10/Oct/2000:13:55`` + ``-0700`` → ``2000-10-10T20:55:`` (zones shift whole minutes, so seconds stay)."""
    m = TIME_RE.match(day_hour_minute + ":00 " + zone)
    if not m or m.group(2) not in MONTHS:
        return None
    day, _, year, hour, minute, _, sign, tz_h, tz_m = m.groups()
    if int(tz_h) > 14 or int(tz_m) > 59:
        return None
    try:
        local = datetime(int(year), MONTHS[m.group(2)], int(day), int(hour), int(minute))
    except ValueError:
        return None
    offset = timedelta(hours=int(tz_h), minutes=int(tz_m))
    utc = local - offset if sign == "+" else local + offset
    return utc.strftime("%Y-%m-%dT%H:%M:")


def to_utc_iso(stamp: str) -> str | None:
    """``10/Oct/2000:13:55:36 -0700`` → ``2000-10-10T20:55:36Z``; None when it is not a valid Apache time."""
    if len(stamp) != 26 or stamp[17] != ":" or stamp[20] != " ":
        return None
    seconds = stamp[18:20]
    if not seconds.isdigit() or seconds > "59":
        return None
    zone = stamp[21:]
    if zone in ("+0000", "-0000"):  # the common case: no arithmetic, only checks
        day = _iso_day(stamp[:11])
        hour, minute = stamp[12:14], stamp[15:17]
        if day is None or stamp[14] != ":" or not (hour + minute).isdigit() or hour > "23" or minute > "59":
            return None
        return f"{day}T{hour}:{minute}:{seconds}Z"
    prefix = _utc_minute(stamp[:17], zone)
    return None if prefix is None else prefix + seconds + "Z"


@lru_cache(maxsize=4096)
def _iso_day(day_month_year: str) -> str | None:
    """``10/Oct/2000`` → ``2000-10-10`` (None for an impossible date)."""
    try:
        return (
            datetime.strptime(day_month_year, "%d/%b/%Y").strftime("%Y-%m-%d")
            if (len(day_month_year) == 11 and day_month_year[3:6] in MONTHS)
            else None
        )
    except ValueError:
        return None


@lru_cache(maxsize=65536)
def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=4096)
def is_bot(agent: str | None) -> bool:
    """Crawlers, monitors and scripted clients (by user agent)."""
    return bool(agent) and BOT_RE.search(agent) is not None


def _dash(value: str | None) -> str | None:
    return None if value is None or value == "-" else value


def parse_line_reference(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """The straightforward parser, check by check: what :func:`parse_line` returns, for every line.

    :func:`parse_line` and :func:`parse_many` take a fast path for the common line and fall back to this one for
    anything unusual; the unit tests hold them equal on a large varied sample.
    """
    line = line.rstrip("\r\n")
    if not line.strip():
        return None, "empty line"
    if len(line) > MAX_LINE:
        return None, f"line longer than {MAX_LINE} characters"
    m = LINE_RE.match(line)
    if m is None:
        return None, "not an Apache common or combined log line"
    client, ident, user, stamp, request, status, size, referrer, agent = m.groups()
    if not _valid_ip(client):
        return None, f"client is not an IPv4/IPv6 address: {client[:60]!r}"
    timestamp = to_utc_iso(stamp)
    if timestamp is None:
        return None, f"bad timestamp: [{stamp[:40]}]"
    if len(status) != 3 or not (status.isascii() and status.isdigit()) or not 100 <= int(status) <= 599:
        return None, f"bad status: {status[:20]!r}"
    if size == "-":
        nbytes = 0
    elif size.isascii() and size.isdigit() and len(size) <= MAX_BYTES_DIGITS:  # '²' is a digit to str.isdigit
        nbytes = int(size)
    else:
        return None, f"bad bytes: {size[:20]!r} (ASCII digits, at most {MAX_BYTES_DIGITS})"
    request = unescape(request)
    method = path = query = protocol = None
    rm = REQUEST_RE.match(request)
    if rm is not None:
        method, target, protocol = rm.groups()
        path, _, query = target.partition("?")
        query = query or None
    referrer = _dash(unescape(referrer)) if referrer is not None else None
    agent = _dash(unescape(agent)) if agent is not None else None
    return {
        "@timestamp": timestamp,
        "client_ip": client,
        "ident": _dash(ident),
        "user": _dash(user),
        "method": method,
        "path": path,
        "query": query,
        "protocol": protocol,
        "request": request,
        "status": int(status),
        "bytes": nbytes,
        "referrer": referrer,
        "agent": agent,
        "bot": is_bot(agent),
    }, None


# --------------------------------------------------------------------------- the fast path
# One regex does the work for the common line: ASCII-only shapes (status 100-599, bytes of at most 15 ASCII digits,
# seconds 00-59, a ±hhmm zone, no backslash so nothing to unescape). Whatever repeats — clients, the local hour with
# its zone (the minute too for zones like +0530), requests, agents — is checked once by the reference code and
# remembered. A line the fast regex does not take, or whose remembered check failed, goes to parse_line_reference, so
# every rejection and its reason come from the reference checks. tests/unit/test_weblogs_fastpath.py holds both equal.
_FAST_RE = re.compile(
    r"(\S+) (\S+) (\S+) \[([0-9][0-9]/[A-Z][a-z][a-z]/[0-9]{4}:[0-9][0-9]):([0-5][0-9]:[0-5][0-9]) ([+-][0-9]{4})\] "
    r'"([^"]*)" ([1-5][0-9][0-9]) (-|[0-9]{1,15})(?: "([^"]*)" "([^"]*)")?[ \t]*$'
)
_STATUS = {str(code): code for code in range(100, 600)}
_CACHE_LIMIT = 65536  # entries per memo; a memo that grows past it starts over (bounded memory on any input)


class _Memo:
    """What the fast path remembers between lines and calls (module-wide; safe to share between threads: a lost
    or repeated entry is only checked again)."""

    __slots__ = ("clients", "hours", "minutes", "requests", "agents")

    def __init__(self) -> None:
        self.clients: dict[str, str] = {}
        self.hours: dict[str, str | bool] = {}
        self.minutes: dict[str, str | bool] = {}
        self.requests: dict[str, tuple[str | None, str | None, str | None, str | None, str]] = {}
        self.agents: dict[str | None, tuple[str | None, bool]] = {}

    def trim(self) -> None:
        for memo in (self.clients, self.hours, self.minutes, self.requests, self.agents):
            if len(memo) > _CACHE_LIMIT:
                memo.clear()


_MEMO = _Memo()


def _request_parts(request: str) -> tuple[str | None, str | None, str | None, str | None, str]:
    """``(method, path, query, protocol, request)`` of an (unescaped) request, as parse_line_reference splits it
    (the request itself last: the documents of a repeated request share one copy of it)."""
    rm = REQUEST_RE.match(request)
    if rm is None:
        return None, None, None, None, request
    method, target, protocol = rm.groups()
    path, _, query = target.partition("?")
    return method, path, query or None, protocol, request


def _hour_prefix(day_hour: str, zone: str) -> str | bool:
    """What the fast path remembers per local hour ``10/Oct/2000:13`` and zone.

    A zone of whole hours (``-0700``) shifts whole hours: the UTC prefix to_utc_iso gives, ``2000-10-10T20:`` (the
    minute and second stay the local ones), or False when to_utc_iso refuses the time. A zone with minutes
    (``+0530``) shifts the minute too: True, look it up per minute (:func:`_minute_prefix`).
    """
    if not zone.endswith("00"):
        return True
    iso = to_utc_iso(f"{day_hour}:00:00 {zone}")
    return False if iso is None else iso[:14]


def _minute_prefix(day_hour: str, minute: str, zone: str) -> str | bool:
    """The UTC prefix to_utc_iso gives ``day_hour:minute`` in a zone with minutes (``2000-10-10T08:25:``), or False."""
    iso = to_utc_iso(f"{day_hour}:{minute}:00 {zone}")
    return False if iso is None else iso[:17]


def _agent_parts(agent: str | None) -> tuple[str | None, bool]:
    agent = _dash(agent) if agent is not None else None
    return agent, is_bot(agent)


def parse_many(lines: Iterable[str]) -> tuple[list[dict[str, Any]], list[tuple[int, str, str]], int]:
    """Parse many lines: ``(documents, [(0-based position, line, reason), ...], lines read)``.

    Exactly what :func:`parse_line_reference` gives line by line (same documents, same reasons), faster.
    """
    docs: list[dict[str, Any]] = []
    rejected: list[tuple[int, str, str]] = []
    append = docs.append
    match = _FAST_RE.match
    memo = _MEMO
    memo.trim()
    clients, hours, minutes, requests, agents = memo.clients, memo.hours, memo.minutes, memo.requests, memo.agents
    status_of = _STATUS
    n = -1
    for n, line in enumerate(lines):
        m = None if "\\" in line or len(line) > MAX_LINE else match(line)
        if m is not None:
            client, ident, user, hour, minute_second, zone, request, status, size, referrer, agent = m.groups()
            known = clients.get(client)  # the first copy of a valid client ("" if invalid): docs share it
            if known is None:
                known = clients[client] = client if _valid_ip(client) else ""
            key = hour + zone
            prefix = hours.get(key)
            if prefix is None:
                prefix = hours[key] = _hour_prefix(hour, zone)
            if prefix is True:  # a zone with minutes (+0530): remembered per local minute
                key = f"{hour}:{minute_second[:2]}{zone}"
                prefix = minutes.get(key)
                if prefix is None:
                    prefix = minutes[key] = _minute_prefix(hour, minute_second[:2], zone)
                minute_second = minute_second[3:]
            if known and prefix:
                parts = requests.get(request)
                if parts is None:
                    parts = requests[request] = _request_parts(request)
                agent_parts = agents.get(agent)
                if agent_parts is None:
                    agent_parts = agents[agent] = _agent_parts(agent)
                append(
                    {
                        "@timestamp": f"{prefix}{minute_second}Z",
                        "client_ip": known,
                        "ident": None if ident == "-" else ident,
                        "user": None if user == "-" else user,
                        "method": parts[0],
                        "path": parts[1],
                        "query": parts[2],
                        "protocol": parts[3],
                        "request": parts[4],
                        "status": status_of[status],
                        "bytes": 0 if size == "-" else int(size),
                        "referrer": None if referrer is None or referrer == "-" else referrer,
                        "agent": agent_parts[0],
                        "bot": agent_parts[1],
                    }
                )
                if not n & 0xFFFF:
                    memo.trim()
                continue
        doc, reason = parse_line_reference(line)
        if doc is None:
            rejected.append((n, line, reason or "unparseable"))
        else:
            append(doc)
    return docs, rejected, n + 1


def parse_line(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """One access-log line → ``(document, None)``, or ``(None, reason)`` when the line cannot be parsed."""
    docs, rejected, _ = parse_many((line,))
    return (docs[0], None) if docs else (None, rejected[0][2])


def agent_json_to_line(record: dict[str, Any]) -> str:
    """A Kinesis Agent ``LOGTOJSON`` record back to its log line (the agent keeps fields as written, escapes included)."""
    line = (
        f"{record.get('host', '-')} {record.get('ident', '-')} {record.get('authuser', '-')} "
        f'[{record.get("datetime", "")}] "{record.get("request", "-")}" {record.get("response", "-")} '
        f"{record.get('bytes', '-')}"
    )
    if "agent" in record or "referrer" in record:
        line += f' "{record.get("referrer", "-")}" "{record.get("agent", "-")}"'
    return line


def decode_record(data: bytes) -> str:
    """The log line a Firehose record carries (raw line or agent JSON), without its line break."""
    text = data.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return text
        if isinstance(obj, dict) and "request" in obj and "host" in obj:
            return agent_json_to_line(obj)
    return text


def rejected_document(line: str, reason: str, arrival_ms: int | None = None) -> dict[str, Any]:
    """The document a refused line becomes: the parser's reason, the line (cut at ``MAX_LINE``), arrival time."""
    arrived = (
        datetime.fromtimestamp(arrival_ms / 1000.0, UTC) if arrival_ms is not None else datetime.now(UTC)
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "rejected": True,
        "reason": reason,
        "line": line[:MAX_LINE],
        "line_chars": len(line),
        "received_at": arrived,
    }


def is_rejected(doc: dict[str, Any]) -> bool:
    """True for a rejected-line document (:func:`rejected_document`)."""
    return doc.get("rejected") is True


def _encode(doc: dict[str, Any]) -> str:
    return base64.b64encode((json.dumps(doc, separators=(",", ":")) + "\n").encode()).decode()


def transform_texts(
    texts: list[str], arrivals_ms: list[int | None] | None = None
) -> list[tuple[dict[str, Any], str | None]]:
    """Decoded records (:func:`decode_record`) → ``(document, reason)`` pairs: a parsed line's access document and
    None, or a refused one's rejected-line document and the parser's reason. What :func:`transform_records` encodes
    into Firehose's response; the local delivery takes the documents as they are."""
    docs, refused, _ = parse_many([text for text in texts if "\n" not in text])  # the batch at once
    reasons = {n: reason for n, _, reason in refused}
    parsed = iter(docs)
    results: list[tuple[dict[str, Any], str | None]] = []
    n = 0  # position among the one-line records
    for k, text in enumerate(texts):
        if "\n" in text:
            doc, reason = None, f"record holds {text.count(chr(10)) + 1} lines; send one log line per record"
        else:
            reason = reasons.get(n)
            doc = None if reason is not None else next(parsed)
            n += 1
        if doc is None:
            doc = rejected_document(text, reason or "unparseable", arrivals_ms[k] if arrivals_ms else None)
        results.append((doc, reason))
    return results


def transform_records(records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str | None]]:
    """Firehose records → ``(output record, reason)`` pairs; reason is None for a parsed line.

    Every output record is ``Ok``: a parsed line carries its access document, a refused one its rejected-line
    document (reason included), so the reason reaches the index instead of Firehose's generic error.
    """
    texts = [decode_record(base64.b64decode(record["data"])) for record in records]
    arrivals = [record.get("approximateArrivalTimestamp") for record in records]
    return [
        ({"recordId": record["recordId"], "result": "Ok", "data": _encode(doc)}, reason)
        for record, (doc, reason) in zip(records, transform_texts(texts, arrivals), strict=True)
    ]


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """The Lambda entry point Firehose invokes with ``{"records": [{"recordId", "data", ...}, ...]}``."""
    results = transform_records(event.get("records", []))
    rejected = [(out["recordId"], reason) for out, reason in results if reason]
    for record_id, reason in rejected[:20]:
        log.warning("record %s: %s", record_id, reason)
    print(json.dumps({"records": len(results), "parsed": len(results) - len(rejected), "rejected": len(rejected)}))
    return {"records": [out for out, _ in results]}
