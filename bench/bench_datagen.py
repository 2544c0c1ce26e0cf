"""Benchmark of the synthetic shop generator and the Online Retail loader, as ratios against same-run baselines."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from shoplake import datagen
from shoplake.retail import load_retail


def _timed(func: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    began = time.perf_counter()
    result = func(*args, **kwargs)
    return result, time.perf_counter() - began


def main(scale: str = "small") -> None:
    """Generate ``scale`` into a temporary folder; compare with copying its files and with pandas.read_csv."""
    with tempfile.TemporaryDirectory(prefix="bench-datagen-") as tmp:
        root = Path(tmp)
        dataset, generate_s = _timed(datagen.generate, scale, 42, out_dir=root / "gen", progress=False)
        counts = dataset.manifest["counts"]
        _, copy_s = _timed(shutil.copytree, dataset.dir, root / "copy")
        print(
            f"generate {scale:<5}: {generate_s:6.2f} s  {counts['order_lines'] / generate_s:10,.0f} order lines/s  "
            f"{counts['access_log_lines']:,} log lines"
        )
        print(
            f"  baseline copy of the {sum(f['bytes'] for f in dataset.manifest['files'].values()) / 1e6:.0f} MB "
            f"folder: {copy_s:.2f} s  → generate/copy = {generate_s / copy_s:.1f}x"
        )
        csv_path = dataset.order_lines_csv_path
        (_events, report), retail_s = _timed(load_retail, csv_path)
        _, pandas_s = _timed(pd.read_csv, csv_path, dtype=str, keep_default_na=False)
        print(
            f"load_retail csv : {retail_s:6.2f} s  {report['rows'] / retail_s:10,.0f} rows/s  "
            f"(validating, {report['rejected']} rejected)"
        )
        print(
            f"  baseline pandas.read_csv (no validation): {pandas_s:.2f} s  → load_retail/read_csv = "
            f"{retail_s / pandas_s:.1f}x"
        )


if __name__ == "__main__":
    main()
