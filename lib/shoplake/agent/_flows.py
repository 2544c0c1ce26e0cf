"""Agent configuration: flows in the spirit of the Kinesis Agent (file pattern → stream, data processing options).

A config file (``infra/agent.yaml``) looks like::

    pollIntervalSeconds: 0.5
    flows:
      - name: orders
        filePattern: ${SHOPLAKE_LOG_DIR:-.shoplake/servers}/*/orders.csv*
        kinesisStream: orders                 # or deliveryStream: <firehose name>
        partitionKeyOption: CUSTOMER          # RANDOM | DETERMINISTIC | CUSTOMER | field:<name>
        dataProcessingOptions:
          - optionName: CSVTOJSON
            customFieldNames: [InvoiceNo, StockCode, ...]
            fieldTypes: {Quantity: int, InvoiceDate: retail_datetime, CustomerID: optional_string, ...}

``${VAR}`` / ``${VAR:-default}`` are taken from the environment (or the ``variables`` given to :func:`load_config`);
relative patterns are relative to the repository root. Stream names are short names (``orders`` →
``shoplake-<prefix>-orders``), full names or ARNs, as in :mod:`shoplake.streams`.

Processing options: ``CSVTOJSON`` (``customFieldNames``, ``delimiter``, and shoplake's ``fieldTypes``: ``string``
(default), ``optional_string`` (empty → null), ``int``, ``float``, ``retail_datetime`` (``M/D/YYYY H:MM[:SS]`` →
``YYYY-MM-DDTHH:MM:SSZ``), ``iso_datetime``), and ``LOGTOJSON`` (``logFormat`` ``COMMONAPACHELOG`` or
``COMBINEDAPACHELOG``; the Kinesis Agent's keys ``host, ident, authuser, datetime, request, response, bytes``
(+ ``referrer, agent``)). Without options each line is shipped as it is (Firehose adds the newline back).
A line a processing option cannot parse is *malformed*: counted, dead-lettered with the reason, never shipped.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from shoplake import config, events
from shoplake.errors import ConfigError, read_user_text

DEFAULT_CONFIG = config.REPO_ROOT / "infra" / "agent.yaml"
# Order lines as the simulated servers write them: the Online Retail columns plus LineNo as a trailing column — the
# order event's fields (shoplake.events is stdlib only, so the agent process still imports no pandas).
ORDER_FIELDS = events.FIELDS
ORDER_FIELD_TYPES = {
    "Quantity": "int",
    "InvoiceDate": "retail_datetime",
    "UnitPrice": "float",
    "CustomerID": "optional_string",
    "LineNo": "int",
}
PARTITION_KEY_OPTIONS = ("RANDOM", "DETERMINISTIC", "CUSTOMER")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class Malformed(ValueError):
    """A line a processing option cannot turn into a record (the message is the reason)."""


# --------------------------------------------------------------------------- field types


@lru_cache(maxsize=4096)
def _retail_datetime(text: str) -> str:
    """``M/D/YYYY H:MM`` or ``M/D/YYYY H:MM:SS`` (the Online Retail file's format, read as UTC) → ISO 8601 UTC."""
    try:
        day, clock = text.strip().split(" ")
        month, dom, year = (int(p) for p in day.split("/"))
        parts = [int(p) for p in clock.split(":")]
        if len(parts) not in (2, 3):
            raise ValueError
        hour, minute = parts[0], parts[1]
        second = parts[2] if len(parts) == 3 else 0
        value = datetime(year, month, dom, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise Malformed(f"{text!r} is not a date like 12/1/2010 8:26") from exc
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_retail_datetime(iso: str) -> str:
    """ISO 8601 UTC → ``M/D/YYYY H:MM`` (seconds ``:SS`` added only when they are not zero, so nothing is lost)."""
    value = events.invoice_time(iso)
    text = f"{value.month}/{value.day}/{value.year} {value.hour}:{value.minute:02d}"
    return text + (f":{value.second:02d}" if value.second else "")


def _iso_datetime(text: str) -> str:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise Malformed(f"{text!r} is not an ISO 8601 timestamp") from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise Malformed(f"{text!r} is not an integer") from exc


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise Malformed(f"{text!r} is not a number") from exc
    if not math.isfinite(value):
        raise Malformed(f"{text!r} is not a finite number")
    return value


FIELD_TYPES: dict[str, Callable[[str], Any]] = {
    "string": str,
    "optional_string": lambda text: text if text.strip() else None,
    "int": _int,
    "float": _float,
    "retail_datetime": _retail_datetime,
    "iso_datetime": _iso_datetime,
}


# --------------------------------------------------------------------------- processing options


@dataclass
class CsvToJson:
    """CSVTOJSON: one CSV line → a dict with ``field_names`` as keys (typed by ``field_types``)."""

    field_names: list[str]
    delimiter: str = ","
    field_types: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = {t for t in self.field_types.values() if t not in FIELD_TYPES}
        if unknown:
            raise ConfigError(f"CSVTOJSON fieldTypes {sorted(unknown)} unknown; use one of {sorted(FIELD_TYPES)}")
        extra = set(self.field_types) - set(self.field_names)
        if extra:
            raise ConfigError(f"CSVTOJSON fieldTypes name fields {sorted(extra)} that are not in customFieldNames")
        self._converters = [FIELD_TYPES[self.field_types.get(name, "string")] for name in self.field_names]

    def __call__(self, text: str) -> dict[str, Any]:
        try:
            rows = list(csv.reader([text], delimiter=self.delimiter, strict=True))
        except csv.Error as exc:
            raise Malformed(f"not a valid CSV line ({exc})") from exc
        values = rows[0] if rows else []
        if len(values) != len(self.field_names):
            raise Malformed(f"expected {len(self.field_names)} fields, got {len(values)}")
        record: dict[str, Any] = {}
        for name, convert, value in zip(self.field_names, self._converters, values, strict=True):
            try:
                record[name] = convert(value)
            except Malformed as exc:
                raise Malformed(f"field {name}: {exc}") from None
        return record


_COMMON = (
    r"^(?P<host>\S+) (?P<ident>\S+) (?P<authuser>\S+) \[(?P<datetime>[^\]]+)\] "
    r'"(?P<request>(?:[^"\\]|\\.)*)" (?P<response>\d{3}) (?P<bytes>\d+|-)'
)
LOG_FORMATS = {
    "COMMONAPACHELOG": re.compile(_COMMON + r"$"),
    "COMBINEDAPACHELOG": re.compile(_COMMON + r' "(?P<referrer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"$'),
}


@dataclass
class LogToJson:
    """LOGTOJSON: an Apache access-log line → a dict with the Kinesis Agent's keys (all values strings)."""

    log_format: str = "COMBINEDAPACHELOG"

    def __post_init__(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"LOGTOJSON logFormat {self.log_format!r} unknown; use one of {sorted(LOG_FORMATS)}")
        self._pattern = LOG_FORMATS[self.log_format]

    def __call__(self, text: str) -> dict[str, Any]:
        match = self._pattern.match(text)
        if match is None:
            raise Malformed(f"not an Apache {self.log_format} line")
        return match.groupdict()


Processor = CsvToJson | LogToJson


def _processor(option: dict[str, Any], flow: str) -> Processor:
    name = str(option.get("optionName", "")).upper()
    if name == "CSVTOJSON":
        names = option.get("customFieldNames")
        if not names:
            raise ConfigError(f"flow {flow}: CSVTOJSON needs customFieldNames (the CSV columns in order)")
        return CsvToJson(
            [str(n) for n in names],
            str(option.get("delimiter", ",")),
            {str(k): str(v) for k, v in (option.get("fieldTypes") or {}).items()},
        )
    if name == "LOGTOJSON":
        return LogToJson(str(option.get("logFormat", "COMBINEDAPACHELOG")).upper())
    raise ConfigError(
        f"flow {flow}: dataProcessingOptions optionName {option.get('optionName')!r} unknown; "
        "use CSVTOJSON or LOGTOJSON (or no option to ship lines as they are)"
    )


# --------------------------------------------------------------------------- flows


@dataclass
class Flow:
    """One file pattern → one Kinesis stream or Firehose delivery stream."""

    name: str
    patterns: list[str]
    kind: str  # "kinesis" | "firehose"
    destination: str
    processors: list[Processor] = field(default_factory=list)
    partition_key_option: str = "DETERMINISTIC"
    max_batch_records: int = 2000
    max_batch_bytes: int = 4 * 1024 * 1024

    def process(self, text: str) -> Any:
        """The record for one line (a dict after CSVTOJSON/LOGTOJSON, else the line); raises :class:`Malformed`."""
        if not text.strip():
            raise Malformed("empty line")
        record: Any = text
        for processor in self.processors:
            if not isinstance(record, str):
                raise Malformed("only one parsing option per flow can apply")
            record = processor(record)
        return record

    def partition_key(self) -> Callable[[Any], str]:
        """The partition key function handed to :func:`shoplake.streams.put_records`."""
        from shoplake import streams

        option = self.partition_key_option
        if option == "RANDOM":
            return lambda record: uuid.uuid4().hex
        if option == "CUSTOMER":
            return lambda record: streams.order_partition_key(record) if isinstance(record, dict) else _sha(record)
        if option.startswith("field:"):
            name = option.split(":", 1)[1]

            def by_field(record: Any) -> str:
                value = record.get(name) if isinstance(record, dict) else None
                return str(value) if value not in (None, "") else _sha(record)

            return by_field
        return _sha


def _sha(record: Any) -> str:
    from shoplake import streams

    return hashlib.sha1(streams.encode(record)).hexdigest()


@dataclass
class AgentConfig:
    """A parsed agent config file."""

    flows: list[Flow]
    poll_interval_s: float = 0.5
    source: Path | None = None

    def select(self, names: list[str] | None) -> list[Flow]:
        """The flows named ``names`` (all when None); unknown names raise a ConfigError listing the known ones."""
        if not names:
            return list(self.flows)
        known = {f.name: f for f in self.flows}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"unknown flow(s) {unknown} in {self.source}; the flows are {sorted(known)}")
        return [known[n] for n in names]


def expand(text: str, variables: dict[str, str] | None = None) -> str:
    """Replace ``${VAR}`` and ``${VAR:-default}`` from ``variables``, then the environment."""
    lookup = {**os.environ, **(variables or {})}

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = lookup.get(name)
        if value:
            return value
        if default is not None:
            return default
        raise ConfigError(
            f"the agent config uses ${{{name}}} but it is not set: export {name}=... or give a default "
            f"with ${{{name}:-...}}"
        )

    return _VAR.sub(sub, text)


def _pattern(raw: str, variables: dict[str, str] | None) -> str:
    path = Path(expand(raw, variables)).expanduser()
    return str(path if path.is_absolute() else config.REPO_ROOT / path)


def load_config(path: Path | str | None = None, variables: dict[str, str] | None = None) -> AgentConfig:
    """Read an agent config (default ``infra/agent.yaml``); every mistake raises a ConfigError saying what to fix."""
    path = Path(path) if path else DEFAULT_CONFIG
    data = _read_yaml(path)
    raw_flows = data.get("flows")
    if not isinstance(raw_flows, list) or not raw_flows:
        raise ConfigError(f"agent config {path} needs a non-empty list `flows:`")
    flows: list[Flow] = []
    for i, raw in enumerate(raw_flows):
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: flows[{i}] must be a mapping")
        name = str(raw.get("name") or "")
        if not name:
            raise ConfigError(f"{path}: flows[{i}] needs a name")
        patterns = raw.get("filePattern")
        patterns = [patterns] if isinstance(patterns, str) else patterns
        if not patterns:
            raise ConfigError(f"{path}: flow {name} needs a filePattern (a glob such as /var/log/shop/orders.csv*)")
        has_stream, has_firehose = bool(raw.get("kinesisStream")), bool(raw.get("deliveryStream"))
        if has_stream == has_firehose:
            raise ConfigError(f"{path}: flow {name} needs exactly one of kinesisStream or deliveryStream")
        option = str(raw.get("partitionKeyOption", "DETERMINISTIC"))
        if option not in PARTITION_KEY_OPTIONS and not option.startswith("field:"):
            raise ConfigError(
                f"{path}: flow {name} partitionKeyOption {option!r} unknown; use one of "
                f"{list(PARTITION_KEY_OPTIONS)} or field:<name>"
            )
        processors = [_processor(o, name) for o in raw.get("dataProcessingOptions") or []]
        flows.append(
            Flow(
                name=name,
                patterns=[_pattern(str(p), variables) for p in patterns],
                kind="kinesis" if has_stream else "firehose",
                destination=str(raw.get("kinesisStream") or raw.get("deliveryStream")),
                processors=processors,
                partition_key_option=option,
                max_batch_records=int(_number(raw, "maxBatchRecords", 2000, f"{path}: flow {name}", whole=True)),
                max_batch_bytes=int(_number(raw, "maxBatchBytes", 4 * 1024 * 1024, f"{path}: flow {name}", whole=True)),
            )
        )
    names = [f.name for f in flows]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: flow names must be unique, got {names}")
    poll = _number(data, "pollIntervalSeconds", 0.5, str(path), whole=False)
    return AgentConfig(flows=flows, poll_interval_s=poll, source=path)


def _read_yaml(path: Path) -> dict[str, Any]:
    """The config file's mapping; a missing, unreadable, binary or non-mapping file is a one-line ConfigError."""
    hint = "pass --config infra/agent.yaml (or your own YAML file)"
    text = read_user_text(path, "agent config", ConfigError, hint)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"agent config {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"agent config {path} must be a YAML mapping with `flows:` (got a {type(data).__name__}): {hint}"
        )
    return data


def _number(raw: dict[str, Any], key: str, default: float, where: str, *, whole: bool) -> float:
    """``raw[key]``: a finite number > 0 (a whole number if ``whole``), else a ConfigError naming it."""
    value = raw.get(key, default)
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value > 0
    if ok and whole and value != int(value):
        ok = False
    if not ok:
        kind = "a whole number ≥ 1" if whole else "a number of seconds > 0"
        raise ConfigError(f"{where}: {key} must be {kind}, got {value!r}")
    return float(value)
