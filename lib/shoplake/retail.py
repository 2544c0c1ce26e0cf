"""Loader of the real UCI Online Retail file (CSV or the .xlsx original) into the order-event schema.

Rows that cannot be parsed are rejected with a reason and returned in the report, never dropped silently.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoplake import events
from shoplake.errors import DataError

log = logging.getLogger(__name__)

HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
# The data set's second edition ("online_retail_II", 2009-2011) names four columns differently; same meaning.
HEADER_II = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
EVENT_COLUMNS = list(events.FIELDS)  # the order event: the Online Retail columns + LineNo
DATE_ORDERS = ("auto", "month-first", "day-first")
ISO_FORMATS = ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%SZ"]
_SLASH_TIMES = ["%Y %H:%M", "%Y %H:%M:%S", "%y %H:%M", "%y %H:%M:%S"]
DATE_FORMATS = {  # slash dates by order (the UCI original is month-first: 12/1/2010 8:26 is 1 December 2010)
    "month-first": [f"%m/%d/{t}" for t in _SLASH_TIMES] + ISO_FORMATS,
    "day-first": [f"%d/%m/{t}" for t in _SLASH_TIMES] + ISO_FORMATS,
}
_SLASH_DATE = re.compile(r"^\s*(\d{1,2})/(\d{1,2})/\d{2,4}\b")
# Bounds of a plausible order line; beyond them a value is a data error (and DynamoDB/Parquet could not hold it).
MAX_QUANTITY = 10**9
MAX_UNIT_PRICE = 10**9
DATE_RANGE = (pd.Timestamp("1990-01-01"), pd.Timestamp("2100-01-01"))
SOURCE_URL = "https://archive.ics.uci.edu/dataset/352/online+retail"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FLOAT_ID = re.compile(r"^(\d+)\.0*$")


class _Raw:
    """The physical lines of one CSV record, joined only when the record is rejected."""

    __slots__ = ("lines", "first", "last")

    def __init__(self, lines: list[str], first: int, last: int) -> None:
        self.lines, self.first, self.last = lines, first, last

    def __str__(self) -> str:
        return "\n".join(self.lines[self.first - 1 : self.last])


def _decode(raw: bytes) -> tuple[str, str]:
    """UTF-8 if the whole file is; else per line (UTF-8 where it decodes, Latin-1 elsewhere), reported as mixed."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    lines = raw.split(b"\n")
    decoded, latin = [], 0
    for line in lines:
        try:
            decoded.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            decoded.append(line.decode("latin-1"))
            latin += 1
    utf8_only_non_ascii = sum(1 for line in lines if not line.isascii()) - latin
    if utf8_only_non_ascii == 0:
        return "\n".join(decoded), "latin-1"
    log.warning("mixed encodings: %d lines are not UTF-8 and were read as Latin-1", latin)
    return "\n".join(decoded), f"mixed (utf-8, {latin} lines latin-1)"


def _read_csv_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str], str]], str, int]:
    """Header, data rows as (line number, fields, raw text), the detected encoding, blank lines skipped."""
    text, encoding = _decode(path.read_bytes())
    text = text.removeprefix("\ufeff")
    physical = _LINE_BREAK.split(text)
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[tuple[int, list[str], str]] = []
    blank = 0
    last_line = 0
    try:
        for fields in reader:
            first, last_line = last_line + 1, reader.line_num
            if not fields:  # an empty line (a line of commas is a row, and gets rejected)
                blank += 1
                continue
            if header is None:
                header = fields
                continue
            rows.append((first, fields, _Raw(physical, first, last_line)))
    except csv.Error as exc:
        raise DataError(f"{path}: CSV syntax error near line {reader.line_num}: {exc}") from exc
    if header is None:
        raise DataError(f"{path} is empty: expected the header {','.join(HEADER)}")
    return header, rows, encoding, blank


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_xlsx_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str], str]], str, int]:
    """Header and data rows of the first sheet of an .xlsx workbook (openpyxl, read-only)."""
    import openpyxl

    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile/KeyError/InvalidFileException for a broken file
        raise DataError(f"{path} is not a readable .xlsx workbook ({type(exc).__name__}: {exc})") from exc
    try:
        header: list[str] | None = None
        rows: list[tuple[int, list[str], str]] = []
        blank = 0
        # online_retail_II.xlsx holds one sheet per year ("Year 2009-2010", "Year 2010-2011"), each with a header
        for sheet in workbook.worksheets:
            sheet_header: list[str] | None = None
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                cells = list(values)
                while cells and (cells[-1] is None or (isinstance(cells[-1], str) and not cells[-1].strip())):
                    cells.pop()
                if not cells:
                    blank += 1
                    continue
                fields = [_cell(v) for v in cells]
                if sheet_header is None:
                    sheet_header = fields
                    if header is None:
                        header = fields
                    elif [h.strip() for h in fields] != [h.strip() for h in header]:
                        raise DataError(f"{path}: sheet {sheet.title!r} has another header ({fields!r}) than the first")
                    continue
                if len(fields) < len(HEADER):
                    fields += [""] * (len(HEADER) - len(fields))  # empty trailing cells (e.g. no CustomerID, Country)
                rows.append((number, fields, f"{sheet.title}!{number}: " + ",".join(fields)))
    finally:
        workbook.close()
    if header is None:
        raise DataError(f"{path} has no rows: expected the header {','.join(HEADER)}")
    return header, rows, "xlsx", blank


def decide_date_order(text: pd.Series, date_order: str = "auto") -> tuple[str, bool]:
    """(order, ambiguous) for a file's InvoiceDate column: one order per file, never guessed row by row.

    ``auto`` reads every date both ways: a date valid only day-first (``13/1/2011``) is evidence for day-first, one
    valid only month-first (``1/13/2011``) for month-first; both kinds in one file is an error; when every date reads
    both ways, month-first (the UCI original's order) is assumed and reported as ambiguous. Invalid dates are neither.
    """
    if date_order not in DATE_ORDERS:
        raise DataError(f"date order must be one of {', '.join(DATE_ORDERS)}, got {date_order!r}")
    if date_order != "auto":
        return date_order, False
    slash = text[text.str.match(_SLASH_DATE)]
    if slash.empty:
        return "month-first", False  # ISO dates only: the order does not matter
    month = _parse_dates(slash, "month-first").notna()
    day = _parse_dates(slash, "day-first").notna()
    only_day, only_month = slash[day & ~month], slash[month & ~day]
    if len(only_day) and len(only_month):
        raise DataError(
            f"InvoiceDate mixes day-first ({only_day.iloc[0]!r}) and month-first ({only_month.iloc[0]!r}) dates in "
            "one file: fix the export, or split the file and load each part with --date-order"
        )
    if len(only_day):
        return "day-first", False
    return "month-first", not len(only_month)


def _parse_dates(text: pd.Series, date_order: str) -> pd.Series:
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[s]")
    for fmt in DATE_FORMATS[date_order]:
        todo = parsed.isna() & (text != "")
        if not todo.any():
            break
        when = pd.to_datetime(text[todo], format=fmt, errors="coerce")
        parsed[todo] = when.astype("datetime64[s]")
    return parsed


def _customer_ids(values: pd.Series) -> np.ndarray:
    """``17850.0`` → ``17850``; empty → None."""
    text = values.astype(str).str.strip().str.replace(_FLOAT_ID.pattern, r"\1", regex=True).to_numpy(dtype=object)
    text[text == ""] = None
    return text


def _iso(stamps: pd.Series) -> np.ndarray:
    """Timestamps → ``YYYY-MM-DDTHH:MM:SSZ`` (each distinct value formatted once)."""
    codes, unique = pd.factorize(stamps)
    if len(unique) == 0:
        return np.array([], dtype=object)
    text = pd.DatetimeIndex(unique).strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy(dtype=object)
    return text[codes]


def load_retail(path: str | os.PathLike[str], date_order: str = "auto") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read an Online Retail ``.csv`` (UTF-8 or Latin-1) or ``.xlsx`` file into order events and a report.

    Both editions are read: the UCI original (``InvoiceNo,...,UnitPrice,CustomerID,Country``) and
    ``online_retail_II`` (``Invoice,...,Price,Customer ID,Country``, one .xlsx sheet per year). ``date_order``
    (``auto``, ``month-first``, ``day-first``) says how slash dates read; the report says which order was used
    (``date_order``) and whether every date was ambiguous (``date_order_ambiguous``).

    Events have the order-event schema (docs/internals.md) in file order, with ``LineNo`` the position of the
    line within its invoice. The report counts ``rows``, ``line_items``, ``orders``, ``cancellations``,
    ``missing_customer``, ``rejected`` and ``rejected_by_reason``; ``rejects`` lists every rejected row
    (``line``, ``reason``, ``raw``).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"{path} does not exist: download 'Online Retail.xlsx' from {SOURCE_URL} "
            "(or export it as CSV) and pass its path"
        )
    if path.is_dir():
        raise DataError(f"{path} is a folder: pass the Online Retail .csv or .xlsx file itself")
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        header, rows, encoding, blank = _read_xlsx_rows(path)
        file_format = "xlsx"
    elif suffix == ".xls":
        raise DataError(f"{path}: the old .xls format is not supported; save it as .xlsx or .csv")
    else:
        header, rows, encoding, blank = _read_csv_rows(path)
        file_format = "csv"
    names = [h.strip() for h in header]
    if names == HEADER:
        edition = "I"
    elif names == HEADER_II:
        edition = "II"
    else:
        raise DataError(
            f"{path}: wrong header {header!r}; expected the Online Retail columns {','.join(HEADER)} "
            f"(or the second edition's {','.join(HEADER_II)})"
        )
    if date_order not in DATE_ORDERS:
        raise DataError(f"date order must be one of {', '.join(DATE_ORDERS)}, got {date_order!r}")

    good = [r for r in rows if len(r[1]) == len(HEADER)]
    rejects: list[dict[str, Any]] = [
        {"line": line, "reason": "wrong field count", "raw": str(raw), "fields": len(fields)}
        for line, fields, raw in rows
        if len(fields) != len(HEADER)
    ]
    frame = pd.DataFrame([fields for _, fields, _ in good], columns=HEADER, dtype=object)
    if frame.empty:
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in HEADER})
    frame["_line"] = np.array([line for line, _, _ in good], dtype=np.int64)
    frame["_raw"] = pd.Series([raw for _, _, raw in good], dtype=object)

    for col in ("InvoiceNo", "StockCode", "Description", "InvoiceDate", "Quantity", "UnitPrice", "Country"):
        frame[col] = frame[col].astype(str).str.strip()
    frame["Description"] = frame["Description"].str.replace(r"\r\n?", "\n", regex=True)  # CRLF inside quotes
    quantity = pd.to_numeric(frame["Quantity"], errors="coerce")
    price = pd.to_numeric(frame["UnitPrice"], errors="coerce")
    order, ambiguous = decide_date_order(frame["InvoiceDate"], date_order)
    when = _parse_dates(frame["InvoiceDate"], order)
    checks = [
        ("missing InvoiceNo", frame["InvoiceNo"] == ""),
        ("missing StockCode", frame["StockCode"] == ""),
        ("non-numeric Quantity", quantity.isna() | ~np.isfinite(quantity.fillna(0))),
        ("non-integer Quantity", quantity.notna() & (quantity % 1 != 0)),
        ("Quantity out of range", quantity.abs() > MAX_QUANTITY),
        ("non-numeric UnitPrice", price.isna() | ~np.isfinite(price.fillna(0))),
        ("UnitPrice out of range", price.abs() > MAX_UNIT_PRICE),
        ("bad InvoiceDate", when.isna()),
        ("InvoiceDate out of range", when.notna() & ((when < DATE_RANGE[0]) | (when >= DATE_RANGE[1]))),
    ]
    reason = pd.Series(None, index=frame.index, dtype=object)
    for label, failed in checks:
        reason[reason.isna() & failed.to_numpy()] = label
    bad = reason.notna()
    for line, why, raw in zip(frame.loc[bad, "_line"], reason[bad], frame.loc[bad, "_raw"], strict=True):
        rejects.append({"line": int(line), "reason": why, "raw": str(raw)})
    rejects.sort(key=lambda r: r["line"])

    ok = frame[~bad]
    events = pd.DataFrame(
        {
            "InvoiceNo": ok["InvoiceNo"].astype(object),
            "StockCode": ok["StockCode"].astype(object),
            "Description": ok["Description"].astype(object),
            "Quantity": quantity[~bad].astype(np.int64),
            "InvoiceDate": _iso(when[~bad]),
            "UnitPrice": price[~bad].astype(float).round(2),
            "CustomerID": _customer_ids(ok["CustomerID"]),
            "Country": ok["Country"].astype(object),
        }
    ).reset_index(drop=True)
    events["LineNo"] = events.groupby("InvoiceNo", sort=False).cumcount().astype(np.int64)

    is_cancel = events["InvoiceNo"].str.startswith("C")
    by_reason = Counter(r["reason"] for r in rejects)
    report: dict[str, Any] = {
        "path": str(path),
        "format": file_format,
        "edition": edition,
        "encoding": encoding,
        "date_order": order,
        "date_order_ambiguous": ambiguous,
        "rows": len(rows),
        "blank_lines": blank,
        "line_items": len(events),
        "orders": int(events.loc[~is_cancel, "InvoiceNo"].nunique()),
        "invoices": int(events["InvoiceNo"].nunique()),
        "cancellations": int(is_cancel.sum()),
        "missing_customer": int(events["CustomerID"].isna().sum()),
        "customers": int(events["CustomerID"].nunique()),
        "countries": int(events["Country"].nunique()),
        "rejected": len(rejects),
        "rejected_by_reason": dict(sorted(by_reason.items())),
        "time_range": {
            "start": events["InvoiceDate"].min() if len(events) else None,
            "end": events["InvoiceDate"].max() if len(events) else None,
        },
        "rejects": rejects,
    }
    if rejects:
        log.warning("%s: %d of %d rows rejected (%s)", path, len(rejects), len(rows), dict(by_reason))
    return events, report
