"""Baselines on the Spark job's own split: most-popular and the ``implicit`` library's ALS, evaluated alike.

Both read ``<output>/split/train`` (customer, item, strength before the test cut) and ``<output>/split/test``
(the new purchases after it) that :func:`shoplake.recommend.als_job.run` wrote, so every model sees exactly the
same data; both exclude already-bought items, like the Spark model and the served lists.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoplake.errors import DataError
from shoplake.recommend import evaluate

log = logging.getLogger(__name__)


@dataclass
class SplitFrames:
    """The split the Spark job used: train interactions, test relevance, Spark's test-period top-k."""

    train: pd.DataFrame  # customer_id, stock_code, strength
    test: pd.DataFrame  # customer_id, stock_code (new purchases after the cut)
    spark_recommendations: pd.DataFrame  # customer_id, rank, stock_code, score

    @property
    def relevant(self) -> dict[str, set[str]]:
        return {c: set(g) for c, g in self.test.groupby("customer_id")["stock_code"]}

    @property
    def n_items(self) -> int:
        return int(self.train["stock_code"].nunique())


def read_split(output: str | os.PathLike[str]) -> SplitFrames:
    """Read the split and Spark's evaluation lists from a finished job's (local) output folder."""
    base = Path(output)
    paths = {"train": base / "split" / "train", "test": base / "split" / "test", "eval": base / "eval_recommendations"}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise DataError(f"{missing} missing: run the ALS job first (shoplake recommend train)")
    return SplitFrames(
        train=pd.read_parquet(paths["train"]),
        test=pd.read_parquet(paths["test"]),
        spark_recommendations=pd.read_parquet(paths["eval"]).sort_values(["customer_id", "rank"]),
    )


def lists_from_frame(frame: pd.DataFrame) -> dict[str, list[str]]:
    """``customer_id, rank, stock_code`` rows → customer → ranked list."""
    ordered = frame.sort_values(["customer_id", "rank"])
    return {c: list(g) for c, g in ordered.groupby("customer_id", sort=False)["stock_code"]}


def most_popular(train: pd.DataFrame, customers: Iterable[str], k: int) -> dict[str, list[str]]:
    """Items by number of distinct buyers (ties: stock code), the first ``k`` each customer has not bought."""
    buyers = train.groupby("stock_code")["customer_id"].nunique().reset_index(name="buyers")
    ranking = buyers.sort_values(["buyers", "stock_code"], ascending=[False, True])["stock_code"].tolist()
    bought = {c: set(g) for c, g in train.groupby("customer_id")["stock_code"]}
    lists: dict[str, list[str]] = {}
    for customer in customers:
        seen = bought.get(customer, set())
        picks: list[str] = []
        for code in ranking:
            if code not in seen:
                picks.append(code)
                if len(picks) == k:
                    break
        lists[customer] = picks
    return lists


def implicit_als(
    train: pd.DataFrame,
    customers: Iterable[str],
    k: int,
    factors: int = 32,
    regularization: float = 0.1,
    alpha: float = 40.0,
    iterations: int = 10,
    seed: int = 42,
) -> tuple[dict[str, list[str]], dict[str, float]]:
    """The ``implicit`` library's ALS (CPU) on the same strengths; returns lists and fit/recommend seconds."""
    from implicit.als import AlternatingLeastSquares
    from scipy.sparse import csr_matrix
    from threadpoolctl import threadpool_limits

    customer_codes = pd.Categorical(train["customer_id"])
    item_codes = pd.Categorical(train["stock_code"])
    user_items = csr_matrix(
        (train["strength"].to_numpy(dtype=np.float32), (customer_codes.codes, item_codes.codes)),
        shape=(len(customer_codes.categories), len(item_codes.categories)),
    )
    timings: dict[str, float] = {}
    with threadpool_limits(1, "blas"):  # implicit is multithreaded itself; BLAS threads only fight it
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            alpha=alpha,
            iterations=iterations,
            random_state=seed,
            calculate_training_loss=False,
        )
        t0 = time.perf_counter()
        model.fit(user_items, show_progress=False)
        timings["fit_seconds"] = time.perf_counter() - t0
        index = {c: i for i, c in enumerate(customer_codes.categories)}
        wanted = [c for c in customers if c in index]
        rows = np.array([index[c] for c in wanted], dtype=np.int32)
        t0 = time.perf_counter()
        ids, _scores = model.recommend(rows, user_items[rows], N=k, filter_already_liked_items=True)
        timings["recommend_all_seconds"] = time.perf_counter() - t0
    items = np.asarray(item_codes.categories)
    return {c: [str(items[i]) for i in row if i >= 0] for c, row in zip(wanted, ids, strict=True)}, timings


def compare_models(
    output: str | os.PathLike[str],
    k: int = 10,
    customers: pd.DataFrame | None = None,
    products: pd.DataFrame | None = None,
    implicit_params: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per model (spark-als, implicit-als, most-popular): the metrics at ``k`` on the job's split.

    ``customers`` (CustomerID, taste_group) and ``products`` (StockCode, taste_group) add the taste-group hit rate
    (synthetic shop only). ``implicit_params`` defaults to the Spark job's best parameters.
    """
    split = read_split(output)
    relevant = split.relevant
    n_items = split.n_items
    groups: dict[str, Any] = {}
    if customers is not None and products is not None:
        groups = {
            "customer_group": dict(zip(customers["CustomerID"].astype(str), customers["taste_group"], strict=True)),
            "item_group": dict(zip(products["StockCode"].astype(str), products["taste_group"], strict=True)),
        }
    targets = sorted(split.train["customer_id"].unique())
    rows = []

    spark_lists = lists_from_frame(split.spark_recommendations)
    rows.append({"model": "spark-als", **evaluate.evaluate_ranking(spark_lists, relevant, k, n_items, **groups)})

    params = dict(implicit_params or {})
    params.setdefault("factors", 32)
    t0 = time.perf_counter()
    implicit_lists, timings = implicit_als(split.train, targets, k, **params)
    rows.append(
        {
            "model": "implicit-als",
            **evaluate.evaluate_ranking(implicit_lists, relevant, k, n_items, **groups),
            "seconds": time.perf_counter() - t0,
            **timings,
        }
    )

    t0 = time.perf_counter()
    popular_lists = most_popular(split.train, targets, k)
    rows.append(
        {
            "model": "most-popular",
            **evaluate.evaluate_ranking(popular_lists, relevant, k, n_items, **groups),
            "seconds": time.perf_counter() - t0,
        }
    )
    return pd.DataFrame(rows).set_index("model")


def implicit_params_from(best_params: dict[str, Any], iterations: int, seed: int) -> dict[str, Any]:
    """The Spark job's chosen parameters in the ``implicit`` library's names."""
    return {
        "factors": int(best_params["rank"]),
        "regularization": float(best_params["reg_param"]),
        "alpha": float(best_params["alpha"]),
        "iterations": int(iterations),
        "seed": int(seed),
    }
