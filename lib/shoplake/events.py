"""The order event: its fields, the one set of rules that judge it, its partition key. Stdlib only.

Every consumer of order events (the order-history handler, the lake's curation, the rate detector — locally and
as Lambda functions, whose zips ship this stdlib-only module) judges an event with :func:`validate`, so one event is
never written by one and set aside by another; ``tests/unit/test_events.py`` holds every consumer to one table of
edge events. (The shipping agent is a plain transport, like the Kinesis Agent: it ships what the files hold.)

An event is a JSON object with the Online Retail columns plus ``LineNo`` (its position in the invoice)::

    {"InvoiceNo": "536365", "StockCode": "85123A", "Description": "WHITE HANGING HEART T-LIGHT HOLDER",
     "Quantity": 6, "InvoiceDate": "2010-12-01T08:26:00Z", "UnitPrice": 2.55, "CustomerID": "17850",
     "Country": "United Kingdom", "LineNo": 0}
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any

FIELDS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
    "LineNo",
)
REQUIRED = ("InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "Country", "LineNo")
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", re.ASCII)  # fullmatch: ASCII digits, no newline
# Bounds of a plausible order line: beyond them a value is a data error, and DynamoDB (38 digits) or Parquet
# (int64, decimal(12,2)) could not hold it exactly.
MAX_QUANTITY = 10**9
MAX_UNIT_PRICE = 10**9
MAX_LINE_NO = 10**6
MAX_KEY_CHARS = 64  # InvoiceNo, StockCode, CustomerID
YEARS = (1990, 2099)

# the kinds of rejection, as the dead letters and curation counts name them
MALFORMED_JSON = "malformed_json"
MISSING_FIELD = "missing_field"
INVALID_VALUE = "invalid_value"


class Rejected(ValueError):
    """One event that can never be used: ``kind`` (one of the three above) and a reason a person can act on."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def from_frame(events: Any) -> list[dict[str, Any]]:
    """Order events (a DataFrame in the event schema, or an iterable of dicts) as JSON-ready event dicts.

    The one frame → events conversion (NaN → None, so a guest's ``CustomerID`` is None; timestamps → ``…Z``;
    numpy numbers → Python), used by the producer, the lake delivery and the dataset. Needs pandas, so the Lambda
    bundles never call it.
    """
    from shoplake._json import rows

    return rows(events)


def decode(data: bytes | str | dict[str, Any]) -> dict[str, Any]:
    """The validated event of one record's bytes (or an already parsed object); raises :class:`Rejected`."""
    if isinstance(data, dict):
        return validate(data)
    try:
        event = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected(MALFORMED_JSON, f"not JSON: {exc}") from None
    return validate(event)


def judge(event: Any) -> tuple[dict[str, Any] | None, str, str]:
    """``(event, "", "")`` for a valid event, ``(None, kind, reason)`` otherwise (never raises)."""
    try:
        return validate(event), "", ""
    except Rejected as rejected:
        return None, rejected.kind, rejected.reason


def _key(event: dict[str, Any], name: str) -> str:
    value = event[name]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Rejected(INVALID_VALUE, f"{name} must be a string, got {_show(value)}")
    text = str(value).strip()
    if not text or "#" in text or len(text) > MAX_KEY_CHARS:
        raise Rejected(INVALID_VALUE, f"{name} must be 1-{MAX_KEY_CHARS} characters without '#', got {_show(value)}")
    return text


def _int(event: dict[str, Any], name: str, low: int, high: int) -> int:
    value = event[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise Rejected(INVALID_VALUE, f"{name} must be an integer from {low:,} to {high:,}, got {_show(value)}")
    return value


def _text(value: Any, name: str) -> str:
    text = value if isinstance(value, str) else str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected(INVALID_VALUE, f"{name} is not valid Unicode (a lone surrogate)") from None
    return text


def _show(value: Any, limit: int = 80) -> str:
    """A value as a reason shows it: repr, cut to ``limit`` characters (a rejected 50 MB field is not echoed)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text):,} chars)"


def _real_time(text: str) -> datetime:
    """The time of a text of :data:`_DATE`'s shape (ASCII digits): ``datetime.strptime(text, DATE_FORMAT)``'s answer
    and its ValueError for a date or time that does not exist (Feb 30, hour 24, second 60), ~20× faster (strptime
    was a quarter of what validating an event cost)."""
    return datetime.fromisoformat(text[:-1])


def invoice_time(text: str) -> datetime:
    """An InvoiceDate ``YYYY-MM-DDTHH:MM:SSZ`` as a naive UTC datetime, as :func:`validate` reads it; ValueError for
    another shape (one-digit days, other digits than ASCII, a zone other than Z) or a date or time that does not
    exist."""
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        raise ValueError(f"time data {text!r} does not match format {DATE_FORMAT!r}")
    return _real_time(text)


def _plain_key(value: Any) -> str | None:
    """An InvoiceNo, StockCode or CustomerID as :func:`_key` and :func:`_text` accept it, for the common case only:
    a ``str`` of ASCII (which always encodes) that is valid once stripped; None sends the event to the full rules."""
    if type(value) is not str:
        return None
    text = value.strip()
    if not text or "#" in text or len(text) > MAX_KEY_CHARS or not text.isascii():
        return None
    return text


def _common_event(event: dict[str, Any]) -> dict[str, Any] | None:
    """:func:`validate`'s answer for an event of the common shape — exact ``str``, ``int`` and ``float`` values, ASCII
    text, every rule met — in one pass of plain checks (about half the time); None for anything else (an invalid
    event, an integer key, non-ASCII text, a numpy number, ...), which the full rules then judge, so every rejection
    and its reason come from them. ``tests/unit/test_events.py`` holds the two equal on mutated events."""
    get = event.get
    invoice_no = _plain_key(get("InvoiceNo"))
    stock_code = _plain_key(get("StockCode"))
    quantity = get("Quantity")
    invoice_date = get("InvoiceDate")
    price = get("UnitPrice")
    line_no = get("LineNo")
    country = get("Country")
    if (
        invoice_no is None
        or stock_code is None
        or type(quantity) is not int
        or not (0 < quantity <= MAX_QUANTITY if invoice_no[0] not in "cC" else -MAX_QUANTITY <= quantity < 0)
        or type(invoice_date) is not str
        or not _DATE.fullmatch(invoice_date)
        or (type(price) is not float and type(price) is not int)
        or not 0 <= price <= MAX_UNIT_PRICE  # False for NaN; infinity is above the bound
        or type(line_no) is not int
        or not 0 <= line_no <= MAX_LINE_NO
        or type(country) is not str
    ):
        return None
    country = country.strip()
    if not country or not country.isascii():
        return None
    customer = get("CustomerID")
    if customer is not None:
        if type(customer) is not str:
            return None
        if customer.strip():
            customer = _plain_key(customer)
            if customer is None:
                return None
        else:
            customer = None  # "" or blank: a guest line
    description = get("Description")
    if description is None:
        description = ""
    elif type(description) is not str or not description.isascii():
        return None
    try:
        when = _real_time(invoice_date)
    except ValueError:
        return None
    if not YEARS[0] <= when.year <= YEARS[1]:
        return None
    return {
        "InvoiceNo": invoice_no,
        "StockCode": stock_code,
        "Description": description,
        "Quantity": quantity,
        "InvoiceDate": invoice_date,
        "UnitPrice": price,
        "CustomerID": customer,
        "Country": country,
        "LineNo": line_no,
    }


def validate(event: Any) -> dict[str, Any]:
    """The normalized event (keys stripped, CustomerID a string or None, Description a string) or :class:`Rejected`.

    Rules: every REQUIRED field present and not null/empty; InvoiceNo, StockCode (and CustomerID when present) are
    strings or integers of 1-64 characters without '#'; Quantity a non-zero integer within ±10^9, negative exactly
    for cancellations (InvoiceNo starting with 'C'); InvoiceDate ``YYYY-MM-DDTHH:MM:SSZ``, a real date in 1990-2099;
    UnitPrice a finite number from 0 to 10^9; LineNo an integer from 0 to 10^6; Country a non-empty string; text valid
    Unicode. A guest line has no CustomerID.
    """
    if type(event) is dict:
        common = _common_event(event)
        if common is not None:
            return common
    return _validate(event)


def _validate(event: Any) -> dict[str, Any]:
    """:func:`validate`'s rules, each in turn: the answer for every event, and the reason for a rejected one."""
    if not isinstance(event, dict):
        raise Rejected(MALFORMED_JSON, f"not a JSON object but {type(event).__name__}")
    missing = [k for k in REQUIRED if event.get(k) is None or event.get(k) == ""]
    if missing:
        raise Rejected(MISSING_FIELD, f"missing field(s) {', '.join(missing)}")
    invoice_no = _text(_key(event, "InvoiceNo"), "InvoiceNo")
    stock_code = _text(_key(event, "StockCode"), "StockCode")
    quantity = _int(event, "Quantity", -MAX_QUANTITY, MAX_QUANTITY)
    if quantity == 0:
        raise Rejected(INVALID_VALUE, "Quantity must be a non-zero integer, got 0")
    cancellation = invoice_no.upper().startswith("C")
    if cancellation and quantity > 0:
        raise Rejected(INVALID_VALUE, f"cancellation {invoice_no} with a positive Quantity {quantity}")
    if not cancellation and quantity < 0:
        raise Rejected(INVALID_VALUE, f"sale {invoice_no} with a negative Quantity {quantity}")
    invoice_date = event["InvoiceDate"]
    if not isinstance(invoice_date, str) or not _DATE.fullmatch(invoice_date):
        raise Rejected(
            INVALID_VALUE, f"InvoiceDate must be ISO 8601 UTC YYYY-MM-DDTHH:MM:SSZ, got {_show(invoice_date)}"
        )
    try:
        when = _real_time(invoice_date)
    except ValueError:
        raise Rejected(INVALID_VALUE, f"InvoiceDate is not a real date: {_show(invoice_date)}") from None
    if not YEARS[0] <= when.year <= YEARS[1]:
        raise Rejected(INVALID_VALUE, f"InvoiceDate {invoice_date} is outside {YEARS[0]}-{YEARS[1]}")
    price = event["UnitPrice"]
    if (
        isinstance(price, bool)
        or not isinstance(price, int | float)
        or not math.isfinite(price)
        or not 0 <= price <= MAX_UNIT_PRICE
    ):
        raise Rejected(INVALID_VALUE, f"UnitPrice must be a number from 0 to {MAX_UNIT_PRICE:,}, got {_show(price)}")
    line_no = _int(event, "LineNo", 0, MAX_LINE_NO)
    customer = event.get("CustomerID")
    if customer is not None and customer != "":
        if isinstance(customer, str) and not customer.strip():
            customer = None
        else:
            customer = _text(_key(event, "CustomerID"), "CustomerID")
    else:
        customer = None
    country = event["Country"]
    if not isinstance(country, str) or not country.strip():
        raise Rejected(INVALID_VALUE, f"Country must be a non-empty string, got {_show(country)}")
    description = event.get("Description")
    return {
        "InvoiceNo": invoice_no,
        "StockCode": stock_code,
        "Description": "" if description is None else _text(description, "Description"),
        "Quantity": quantity,
        "InvoiceDate": invoice_date,
        "UnitPrice": price,
        "CustomerID": customer,
        "Country": _text(country.strip(), "Country"),
        "LineNo": line_no,
    }


def is_cancellation(event: dict[str, Any]) -> bool:
    return str(event["InvoiceNo"]).upper().startswith("C")


def partition_key(event: dict[str, Any]) -> str:
    """The customer the event belongs to, or ``guest-<InvoiceNo>`` for a guest line (Kinesis and DynamoDB key)."""
    customer = event.get("CustomerID")
    if customer is None or customer != customer or not str(customer).strip():  # None, NaN (a pandas gap), blank
        return f"guest-{event.get('InvoiceNo')}"
    return str(customer).strip()


def encode(event: dict[str, Any]) -> bytes:
    """The record bytes of an event, as every producer sends them (compact JSON, UTF-8, the FIELDS order)."""
    return json.dumps({k: event.get(k) for k in FIELDS}, separators=(",", ":"), ensure_ascii=False).encode()
