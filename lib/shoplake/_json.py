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
