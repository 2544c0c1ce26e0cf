"""One way to make values JSON-ready: numpy scalars, Decimals, timestamps (UTC, ``…Z``), NaN/NaT → null, paths."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import PurePath
from typing import Any


def plain(value: Any) -> Any:
    """``value`` with every nested part turned into what ``json.dumps`` writes as the value means it."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, datetime):  # pandas.Timestamp is a datetime, and so is NaT (which is unequal to itself)
        if value != value:
            return None
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars (and numpy datetimes)
        return plain(value.item())
    try:
        import pandas as pd

        if pd.isna(value):  # NaT, pd.NA
            return None
    except (ImportError, TypeError, ValueError):
        pass
    return value


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: :func:`plain`'s value, or the text of a value it leaves as is."""
    converted = plain(value)
    return str(converted) if converted is value else converted


def rows(data: Any) -> list[dict[str, Any]]:
    """The rows of a DataFrame (or an iterable of dicts) as JSON-ready dicts, with :func:`plain`'s rules.

    A DataFrame is converted column by column (integers and floats by numpy, timestamps formatted once per column),
    so a million rows take about a second rather than one :func:`plain` call per cell.
    """
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        return [{str(k): plain(v) for k, v in dict(row).items()} for row in data]
    columns: dict[str, list[Any]] = {}
    for name in data.columns:
        series = data[name]
        if pd.api.types.is_bool_dtype(series.dtype) and not series.hasnans:
            values = series.astype(bool).tolist()
        elif pd.api.types.is_integer_dtype(series.dtype) and not series.hasnans:
            values = series.astype("int64").tolist()
        elif pd.api.types.is_float_dtype(series.dtype):
            values = [v if math.isfinite(v) else None for v in series.astype(float).tolist()]
        elif pd.api.types.is_datetime64_any_dtype(series.dtype):
            stamps = series.dt.tz_localize("UTC") if series.dt.tz is None else series.dt.tz_convert("UTC")
            values = stamps.dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype(object).where(series.notna(), None).tolist()
        else:
            values = [plain(v) for v in series.astype(object).tolist()]
        columns[str(name)] = values
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
