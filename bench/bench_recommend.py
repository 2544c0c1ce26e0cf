"""Spark ALS (local[2]) vs the ``implicit`` library's ALS vs most-popular: train + recommend-all time and MAP@10.

All three run on the same time-based split (the Spark job writes it; the baselines read it) with the same
hyper-parameters; times and quality are printed as ratios against the baselines measured in the same run.
Scale full (~1M order lines) by default. Goals (issue 4): MAP@10 within 5 % of implicit, ≥ 1.5× popularity.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

K = 10
PARAMS = {"rank": 16, "reg_param": 0.1, "alpha": 5.0}
ITERATIONS = 10


def main(scale: str = "full", seed: int = 42) -> dict[str, float]:
    from shoplake import datagen
    from shoplake.recommend import als_job, baselines, data, evaluate

    logging.getLogger("py4j").setLevel(logging.WARNING)
    shop = datagen.load(scale=scale, seed=seed, progress=False)
    with tempfile.TemporaryDirectory(prefix="bench-recommend-") as tmp:
        non_products = shop.products.loc[~shop.products["is_product"], "StockCode"]
        lines = data.curated_from_events(shop.order_lines, non_products)
        folder = data.write_local(lines, Path(tmp) / "order_lines")
        t0 = time.perf_counter()
        spark = als_job.spark_session()
        spark_start = time.perf_counter() - t0
        cfg = als_job.JobConfig(
            input=str(folder),
            output=str(Path(tmp) / "out"),
            k=K,
            ranks=[PARAMS["rank"]],
            reg_params=[PARAMS["reg_param"]],
            alphas=[PARAMS["alpha"]],
            iterations=ITERATIONS,
            holdout_weeks=4,
            validation_weeks=4,
            seed=seed,
            search=False,
            serve=False,
        )
        report = als_job.run(cfg, spark=spark)
        spark.stop()

        split = baselines.read_split(cfg.output)
        relevant, n_items = split.relevant, split.n_items
        targets = sorted(split.train["customer_id"].unique())
        implicit_lists, implicit_times = baselines.implicit_als(
            split.train, targets, K, **baselines.implicit_params_from(PARAMS, ITERATIONS, seed)
        )
        t0 = time.perf_counter()
        popular_lists = baselines.most_popular(split.train, targets, K)
        popular_seconds = time.perf_counter() - t0

    spark_map = report["metrics"][f"map@{K}"]
    implicit_map = evaluate.evaluate_ranking(implicit_lists, relevant, K, n_items)[f"map@{K}"]
    popular_map = evaluate.evaluate_ranking(popular_lists, relevant, K, n_items)[f"map@{K}"]
    spark_seconds = report["timings"]["fit_seconds"] + report["timings"]["recommend_all_seconds"]
    implicit_seconds = implicit_times["fit_seconds"] + implicit_times["recommend_all_seconds"]
    counts = report["counts"]
    print(
        f"scale {scale}: {counts['interactions']:,} interactions ({counts['lines_used']:,} lines), "
        f"{counts['customers']:,} customers × {counts['items']:,} items; {len(targets):,} lists of {K}; "
        f"{counts['test_customers']:,} evaluated customers; params {PARAMS}, {ITERATIONS} iterations"
    )
    print(f"spark session start                 {spark_start:8.1f} s (not counted)")
    print(f"spark ALS train + recommend-all     {spark_seconds:8.1f} s   MAP@{K} {spark_map:.4f}")
    print(f"implicit ALS train + recommend-all  {implicit_seconds:8.1f} s   MAP@{K} {implicit_map:.4f}")
    print(f"most-popular                        {popular_seconds:8.1f} s   MAP@{K} {popular_map:.4f}")
    figures = {
        "time_spark_over_implicit": spark_seconds / implicit_seconds,
        "map_spark_over_implicit": spark_map / implicit_map if implicit_map else float("nan"),
        "map_spark_over_popular": spark_map / popular_map if popular_map else float("nan"),
    }
    print(f"time  spark / implicit   {figures['time_spark_over_implicit']:6.2f}×")
    print(f"MAP   spark / implicit   {figures['map_spark_over_implicit']:6.3f}×   (goal ≥ 0.95)")
    print(f"MAP   spark / popular    {figures['map_spark_over_popular']:6.2f}×   (goal ≥ 1.5)")
    return figures


if __name__ == "__main__":
    main()
