"""Spark ALS job: curated order lines → implicit feedback → time-based split → ALS with a small search → top-k.

One plain script, three ways to run it:

* ``spark-submit lib/shoplake/recommend/als_job.py --input DIR --output DIR [--k 10 --rank 16,32 ...]``
* on EMR as a step: the same file uploaded to the artifacts bucket (``shoplake.recommend.emr``), ``s3://`` paths;
  the shoplake modules it imports travel with it as a zip through ``--py-files``;
* in-process from the notebook and the CLI: :func:`run` with a :class:`JobConfig` (and an existing SparkSession).

It imports only pyspark, numpy, pandas, boto3 (on EMR) and the standard library, plus ``shoplake.errors`` and
``shoplake.recommend.evaluate`` (standard library only; :data:`SHIPPED_MODULES`), and runs on Python 3.9.

Choices (documented here because they decide what the metrics mean):

* **Implicit feedback** = for each (customer, item) the number of distinct invoices containing the item
  (``--feedback counts``, default). Quantities (``--feedback quantity``) span three orders of magnitude in retail
  data (a wholesaler's 1,200 units vs a household's 2) and let one bulk order drown repeated interest.
  ALS turns it into confidence ``1 + alpha * strength``.
* Lines that cannot teach anything are left out and counted: guests (no customer), cancellations,
  non-positive quantities.
* **Time-based split**: the last ``holdout_weeks`` are the test period, the ``validation_weeks`` before that
  the validation period of the hyper-parameter search (trained on what precedes it). Evaluated customers are those
  known before the cut who bought, in the period, items they had not bought before (and which existed before the
  cut): re-purchases are not counted because the served lists exclude already-bought items.
* **Serving** lists come from the best parameters refitted on *all* interactions and exclude everything the
  customer has bought; the popularity list (distinct buyers) is kept for cold-start customers.
* Top-k scoring collects the factor matrices to the driver and ranks with numpy in blocks (customers × rank
  floats: 100k customers at rank 32 are 13 MB), which makes excluding bought items exact.
"""

# Runs on EMR 7's default Python 3.9 (tests/aws/test_recommend_emr.py checks it with vermin and python3.9):
# no datetime.UTC (3.11), no zip(strict=) (3.10), no match, no runtime `X | Y` types.
# ruff: noqa: UP017, B905

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoplake.errors import ShoplakeError
from shoplake.recommend import evaluate

if TYPE_CHECKING:  # imported where used: the command line and JobConfig load with the standard library alone
    import numpy as np
    import pandas as pd

try:
    from tqdm.auto import tqdm
except ImportError:  # EMR without tqdm: no progress bars

    def tqdm(iterable, **_):  # type: ignore[no-redef]
        return iterable


log = logging.getLogger("shoplake.recommend.als_job")

# the shoplake modules this script imports: shipped to EMR in a zip with --py-files (shoplake.recommend.emr)
SHIPPED_MODULES = ("__init__.py", "errors.py", "recommend/evaluate.py")
MODEL_NAME = "spark-als"
REQUIRED_COLUMNS = ("customer_id", "stock_code", "quantity", "invoice_ts", "invoice_no")
FEEDBACK = ("counts", "quantity")


class JobError(ShoplakeError):
    """Bad input or parameters for the ALS job; the message says what to fix."""


@dataclass
class JobConfig:
    """Parameters of one ALS job run (the command-line arguments, as a value)."""

    input: str
    output: str
    k: int = 10
    ranks: list[int] = field(default_factory=lambda: [8, 16])
    reg_params: list[float] = field(default_factory=lambda: [0.1])
    alphas: list[float] = field(default_factory=lambda: [2.0, 10.0])
    iterations: int = 10
    holdout_weeks: int = 4
    validation_weeks: int = 4
    feedback: str = "counts"
    seed: int = 42
    search: bool = True
    serve: bool = True
    dynamodb_table: str | None = None
    dynamodb_endpoint_url: str | None = None
    region: str | None = None
    blocks: int | None = None  # ALS user/item blocks; default: Spark's default parallelism
    recommendations_output: str | None = None  # serving lists; default <output>/recommendations

    def validate(self) -> None:
        """Raise :class:`JobError` naming the parameter to fix."""
        if self.k < 1:
            raise JobError(f"--k must be at least 1, got {self.k}")
        if not self.ranks or any(r < 1 for r in self.ranks):
            raise JobError(f"--rank must be positive integers, got {self.ranks}")
        if not self.reg_params or any(r < 0 for r in self.reg_params):
            raise JobError(f"--reg-param must be non-negative numbers, got {self.reg_params}")
        if not self.alphas or any(a <= 0 for a in self.alphas):
            raise JobError(f"--alpha must be positive numbers, got {self.alphas}")
        if self.iterations < 1:
            raise JobError(f"--iterations must be at least 1, got {self.iterations}")
        if self.holdout_weeks < 1 or self.validation_weeks < 1:
            raise JobError(
                f"--holdout-weeks and --validation-weeks must be at least 1, got {self.holdout_weeks}, "
                f"{self.validation_weeks}"
            )
        if self.feedback not in FEEDBACK:
            raise JobError(f"--feedback must be one of {FEEDBACK}, got {self.feedback!r}")

    def grid(self) -> list[dict[str, Any]]:
        """The hyper-parameter combinations searched (only the first one when ``search`` is off)."""
        combos = [
            {"rank": r, "reg_param": g, "alpha": a}
            for r, g, a in itertools.product(self.ranks, self.reg_params, self.alphas)
        ]
        return combos if self.search else combos[:1]


# --------------------------------------------------------------------------- Spark session


QUIET_LOG4J = """status = error
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = error
logger.pygateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.pygateway.level = error
"""


def _quiet_log4j() -> str:
    """A log4j2 configuration that lets only errors through (written once to the temp folder)."""
    import tempfile

    path = Path(tempfile.gettempdir()) / "shoplake-spark-log4j2.properties"
    if not path.exists() or path.read_text() != QUIET_LOG4J:
        tmp = path.with_name(path.name + f".{os.getpid()}")
        tmp.write_text(QUIET_LOG4J)
        os.replace(tmp, path)
    return str(path)


def spark_session(master: str = "local[2]", driver_memory: str = "1g", app_name: str = "shoplake-als") -> Any:
    """A SparkSession for local runs: small shuffles, no UI, UTC; reuses a running session."""
    import warnings

    from pyspark.sql import SparkSession

    # pyspark 4.3 warns on every pandas conversion that pandas 3 is not fully supported; the conversions used
    # here (Arrow, plain columns) are covered by the tests
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    builder = SparkSession.builder.master(master)
    if master.startswith("local"):
        # on this machine only: the driver listens on loopback (not on the external interface), and the JVM logs
        # errors only (no log4j banner, loopback-hostname or netlib BLAS warnings in notebooks and reports)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        # read by pyspark when it launches the driver JVM (a SparkConf setting would come too late for log4j)
        os.environ.setdefault(
            "PYSPARK_SUBMIT_ARGS",
            f"--driver-java-options -Dlog4j2.configurationFile=file:{_quiet_log4j()} pyspark-shell",
        )
        builder = builder.config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
    session = (
        builder.appName(app_name)
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # one folder per order_date: list them on the driver instead of a 60-task listing job
        .config("spark.sql.sources.parallelPartitionDiscovery.threshold", "10000")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


# --------------------------------------------------------------------------- data preparation


def read_order_lines(spark: Any, path: str) -> Any:
    """The curated order lines as a Spark DataFrame (Parquet, possibly partitioned by ``order_date``)."""
    if not path.startswith(("s3://", "s3a://", "hdfs://")) and not Path(path).exists():
        raise JobError(f"--input {path} does not exist: copy the curated lake locally first (lake.curate_orders)")
    try:
        lines = spark.read.parquet(path)
    except Exception as exc:  # AnalysisException: empty folder, not Parquet
        raise JobError(f"--input {path} holds no readable Parquet order lines: {exc}") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in lines.columns]
    if missing:
        raise JobError(f"--input {path} lacks columns {missing}; expected the curated order_lines schema")
    return lines


def usable_lines(lines: Any) -> tuple[Any, dict[str, int]]:
    """Lines that carry a purchase by a known customer, and counts of what was left out by reason."""
    from pyspark.sql import functions as F

    no_customer = F.col("customer_id").isNull() | (F.trim(F.col("customer_id")) == "")
    cancelled = F.col("invoice_no").startswith("C")
    if "is_cancellation" in lines.columns:
        cancelled = cancelled | F.coalesce(F.col("is_cancellation"), F.lit(False))
    reason = (
        F.when(no_customer, F.lit("no_customer"))
        .when(cancelled, F.lit("cancellation"))
        .when(F.col("quantity") <= 0, F.lit("non_positive_quantity"))
        .when(F.col("invoice_ts").isNull() | F.col("stock_code").isNull(), F.lit("incomplete"))
    )
    tagged = lines.coalesce(lines.sparkSession.sparkContext.defaultParallelism).withColumn("_left_out", reason).cache()
    by_reason = {r["_left_out"]: int(r["count"]) for r in tagged.groupBy("_left_out").count().collect()}
    kept = by_reason.pop(None, 0)
    counts = {"lines_in": kept + sum(by_reason.values()), "lines_used": kept}
    counts.update({f"left_out_{reason}": n for reason, n in sorted(by_reason.items())})
    usable = tagged.where(F.col("_left_out").isNull()).drop("_left_out")
    return usable, counts


def aggregate_interactions(lines: Any, feedback: str) -> Any:
    """customer_id, stock_code, strength (distinct invoices or summed quantity), last_ts."""
    from pyspark.sql import functions as F

    strength = F.countDistinct("invoice_no") if feedback == "counts" else F.sum("quantity")
    return lines.groupBy("customer_id", "stock_code").agg(
        strength.cast("float").alias("strength"), F.max("invoice_ts").alias("last_ts")
    )


def _index(frame: Any, column: str, index_column: str) -> tuple[np.ndarray, Any]:
    """Dense integer ids for ALS: the sorted distinct values (collected: customers and items fit the driver)."""
    import numpy as np
    import pandas as pd

    values = np.array(sorted(row[0] for row in frame.select(column).distinct().collect()), dtype=object)
    table = pd.DataFrame({column: values.astype(str), index_column: np.arange(len(values), dtype=np.int32)})
    return values, frame.sparkSession.createDataFrame(table, f"{column} string, {index_column} int")


@dataclass
class Split:
    """Interactions before the cut (train) and what each known customer newly bought after it (relevant)."""

    train: Any  # Spark DataFrame customer_id, stock_code, strength, cidx, iidx
    relevant: dict[str, set[str]]
    cut: datetime
    end: datetime


def time_split(
    lines: Any, start: datetime, cut: datetime, end: datetime, feedback: str, indexes: tuple[Any, Any]
) -> Split:
    """Train on lines in ``[start, cut)``; relevant = new (customer, item) pairs bought in ``[cut, end)``."""
    from pyspark.sql import functions as F

    customers, items = indexes
    before = lines.where((F.col("invoice_ts") >= F.lit(start)) & (F.col("invoice_ts") < F.lit(cut)))
    after = lines.where((F.col("invoice_ts") >= F.lit(cut)) & (F.col("invoice_ts") < F.lit(end)))
    train = (
        aggregate_interactions(before, feedback)
        .join(customers, "customer_id")
        .join(items, "stock_code")
        .select("customer_id", "stock_code", "strength", "cidx", "iidx")
        .cache()
    )
    known_customers = train.select("customer_id").distinct()
    known_items = train.select("stock_code").distinct()
    new_pairs = (
        after.select("customer_id", "stock_code")
        .distinct()
        .join(known_customers, "customer_id")
        .join(known_items, "stock_code")
        .join(train.select("customer_id", "stock_code"), ["customer_id", "stock_code"], "left_anti")
    )
    relevant: dict[str, set[str]] = {}
    for row in new_pairs.toPandas().itertuples(index=False):
        relevant.setdefault(row.customer_id, set()).add(row.stock_code)
    return Split(train=train, relevant=relevant, cut=cut, end=end)


# --------------------------------------------------------------------------- model


def fit_als(train: Any, params: dict[str, Any], iterations: int, seed: int, blocks: int = 10) -> Any:
    """``pyspark.ml.recommendation.ALS(implicitPrefs=True)`` fitted on ``cidx, iidx, strength``.

    ``blocks`` (user and item blocks) should match the cores: Spark's default of 10 only adds task overhead
    on ``local[2]``.
    """
    from pyspark.ml.recommendation import ALS

    als = ALS(
        userCol="cidx",
        itemCol="iidx",
        ratingCol="strength",
        implicitPrefs=True,
        rank=int(params["rank"]),
        regParam=float(params["reg_param"]),
        alpha=float(params["alpha"]),
        maxIter=iterations,
        seed=seed,
        coldStartStrategy="drop",
        numUserBlocks=blocks,
        numItemBlocks=blocks,
    )
    return als.fit(train)


def _factors(frame: Any, size: int, rank: int) -> np.ndarray:
    import numpy as np

    pdf = frame.toPandas()
    matrix = np.zeros((size, rank), dtype=np.float32)
    if len(pdf):
        matrix[pdf["id"].to_numpy()] = np.stack(pdf["features"].to_numpy()).astype(np.float32)
    return matrix


def top_k_scores(
    user_factors: np.ndarray,
    item_factors: np.ndarray,
    users: np.ndarray,
    bought: dict[int, np.ndarray],
    k: int,
    block: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """For each user index: the ``k`` best item indexes (and scores) it has not bought, best first."""
    import numpy as np

    n_items = item_factors.shape[0]
    k_eff = min(k, n_items)
    top_items = np.empty((len(users), k_eff), dtype=np.int64)
    top_scores = np.empty((len(users), k_eff), dtype=np.float32)
    for start in range(0, len(users), block):
        chunk = users[start : start + block]
        scores = user_factors[chunk] @ item_factors.T
        for row, user in enumerate(chunk):
            seen = bought.get(int(user))
            if seen is not None and len(seen):
                scores[row, seen] = -np.inf
        part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        top_items[start : start + len(chunk)] = np.take_along_axis(part, order, axis=1)
        top_scores[start : start + len(chunk)] = np.take_along_axis(part_scores, order, axis=1)
    return top_items, top_scores


def recommend(
    model: Any, train: Any, n_customers: int, n_items: int, rank: int, k: int, customers: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k unbought items for ``customers`` (default: every customer in ``train``): users, items, scores."""
    import numpy as np

    user_factors = _factors(model.userFactors, n_customers, rank)
    item_factors = _factors(model.itemFactors, n_items, rank)
    pairs = train.select("cidx", "iidx").toPandas()
    bought = {int(c): g.to_numpy() for c, g in pairs.groupby("cidx")["iidx"]}
    users = np.array(sorted(bought), dtype=np.int64) if customers is None else customers
    items, scores = top_k_scores(user_factors, item_factors, users, bought, k)
    return users, items, scores


def _as_lists(
    users: np.ndarray, items: np.ndarray, customer_ids: np.ndarray, stock_codes: np.ndarray
) -> dict[str, list[str]]:
    return {str(customer_ids[u]): [str(stock_codes[i]) for i in row] for u, row in zip(users, items)}


# --------------------------------------------------------------------------- outputs


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def write_text(path: str, text: str, region: str | None = None) -> None:
    """Write a small text file locally or to ``s3://`` (boto3 on EMR)."""
    if path.startswith(("s3://", "s3a://")):
        import boto3

        bucket, _, key = path.split("://", 1)[1].partition("/")
        boto3.client("s3", region_name=region).put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"))
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")


def read_report(output: str) -> dict[str, Any]:
    """The ``report.json`` a finished run wrote under ``output`` (local folder)."""
    path = Path(output) / "report.json"
    if not path.exists():
        raise JobError(f"{path} does not exist: run the ALS job first (shoplake recommend train)")
    return json.loads(path.read_text())


def dynamodb_items(serving: pd.DataFrame, popular: pd.DataFrame, generated_at: str) -> list[dict[str, Any]]:
    """One item per customer (``customer_id``, ranked ``items``), plus ``#popular`` for cold-start customers.

    Customers in key order, each one's lists by rank: one sort of the whole frame, not one per customer (~0.5 ms
    each: 6 s for the 11,742 customers of the full scale).
    """
    from decimal import Decimal

    import pandas as pd

    def entry(r: Any) -> dict[str, Any]:
        return {
            "rank": int(r.rank),
            "stock_code": str(r.stock_code),
            "description": "" if pd.isna(r.description) else str(r.description),  # a missing one (None, NaN): ""
            "score": Decimal(f"{float(r.score):.6f}"),
        }

    ordered = serving[serving["customer_id"].notna()].sort_values(["customer_id", "rank"], kind="stable")
    items = [
        {
            "customer_id": str(customer),
            "model": MODEL_NAME,
            "generated_at": generated_at,
            "cold_start": False,
            "items": [entry(r) for r in rows],
        }
        for customer, rows in itertools.groupby(ordered.itertuples(index=False), key=lambda r: r.customer_id)
    ]
    items.append(
        {
            "customer_id": POPULAR_KEY,
            "model": "most-popular",
            "generated_at": generated_at,
            "cold_start": True,
            "items": [entry(r) for r in popular.sort_values("rank", kind="stable").itertuples(index=False)],
        }
    )
    return items


POPULAR_KEY = "#popular"


def write_dynamodb(
    items: list[dict[str, Any]], table: str, endpoint_url: str | None = None, region: str | None = None
) -> int:
    """Batch-write the serving items with boto3 (the spark-submit path; in-process runs pass a writer)."""
    import boto3

    resource = boto3.resource("dynamodb", endpoint_url=endpoint_url, region_name=region)
    with resource.Table(table).batch_writer(overwrite_by_pkeys=["customer_id"]) as batch:
        for item in items:
            batch.put_item(Item=item)
    return len(items)


# --------------------------------------------------------------------------- the job


def run(
    cfg: JobConfig,
    spark: Any | None = None,
    publish: Callable[[list[dict[str, Any]]], int] | None = None,
    progress: Callable[[str], None] | None = None,
    show_progress: bool = False,
) -> dict[str, Any]:
    """Run the whole job and return the report (also written to ``<output>/report.json``).

    Outputs under ``cfg.output``: ``recommendations/`` (serving top-k, Parquet), ``popular/``, ``split/train/`` and
    ``split/test/`` (so baselines use exactly this split), ``eval_recommendations/`` (top-k of the train-only model),
    ``report.json``. ``publish`` receives the DynamoDB items (default: boto3 when ``dynamodb_table`` is set).
    ``show_progress`` shows a tqdm bar over the search (notebooks).
    """
    import numpy as np
    import pandas as pd
    from pyspark.sql import functions as F

    cfg.validate()
    spark = spark or spark_session()
    say = progress or (lambda message: log.info(message))
    began = time.perf_counter()
    timings: dict[str, float] = {}
    blocks = cfg.blocks or max(1, spark.sparkContext.defaultParallelism)

    lines = read_order_lines(spark, cfg.input)
    usable, counts = usable_lines(lines)
    if counts["lines_used"] == 0:
        raise JobError(f"--input {cfg.input} has no usable purchase lines ({counts}); check the curation step")
    bounds = usable.agg(F.min("invoice_ts").alias("first"), F.max("invoice_ts").alias("last")).collect()[0]
    first, last = _utc(bounds["first"]), _utc(bounds["last"])
    end = last + timedelta(seconds=1)
    cut = end - timedelta(weeks=cfg.holdout_weeks)
    val_cut = cut - timedelta(weeks=cfg.validation_weeks)
    if val_cut <= first:
        raise JobError(
            f"the data covers {first:%Y-%m-%d} to {last:%Y-%m-%d} ({(last - first).days} days): too short for "
            f"--holdout-weeks {cfg.holdout_weeks} + --validation-weeks {cfg.validation_weeks}; lower them"
        )

    all_interactions = aggregate_interactions(usable, cfg.feedback)
    customer_ids, customers = _index(all_interactions, "customer_id", "cidx")
    stock_codes, items = _index(all_interactions, "stock_code", "iidx")
    customers, items = customers.cache(), items.cache()
    n_customers, n_items = len(customer_ids), len(stock_codes)
    customer_index = {c: i for i, c in enumerate(customer_ids)}
    counts.update({"customers": n_customers, "items": n_items, "interactions": all_interactions.count()})
    say(f"{counts['lines_used']} lines, {n_customers} customers, {n_items} items")

    # 1. hyper-parameter search: train before val_cut, score on [val_cut, cut) (skipped for a single combination)
    search: list[dict[str, Any]] = []
    grid = cfg.grid()
    validation_customers = 0
    if len(grid) > 1:
        validation = time_split(usable, first, val_cut, cut, cfg.feedback, (customers, items))
        validation_customers = len(validation.relevant)
        val_users = np.array(sorted(customer_index[c] for c in validation.relevant), dtype=np.int64)
        for params in tqdm(grid, desc="ALS search", unit="fit", disable=not show_progress):
            t0 = time.perf_counter()
            model = fit_als(validation.train, params, cfg.iterations, cfg.seed, blocks)
            users, top, _ = recommend(model, validation.train, n_customers, n_items, params["rank"], cfg.k, val_users)
            lists = _as_lists(users, top, customer_ids, stock_codes)
            metrics = evaluate.evaluate_ranking(lists, validation.relevant, cfg.k, n_items)
            search.append({**params, f"map@{cfg.k}": metrics[f"map@{cfg.k}"], "seconds": time.perf_counter() - t0})
            say(f"search {params}: MAP@{cfg.k} {metrics[f'map@{cfg.k}']:.4f}")
        validation.train.unpersist()
        best = max(search, key=lambda row: row[f"map@{cfg.k}"])
    else:
        best = grid[0]
    best_params = {key: best[key] for key in ("rank", "reg_param", "alpha")}

    # 2. the chosen parameters on the test period: train before cut, score on [cut, end)
    test = time_split(usable, first, cut, end, cfg.feedback, (customers, items))
    t0 = time.perf_counter()
    model = fit_als(test.train, best_params, cfg.iterations, cfg.seed, blocks)
    timings["fit_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    users, top, scores = recommend(model, test.train, n_customers, n_items, best_params["rank"], cfg.k)
    timings["recommend_all_seconds"] = time.perf_counter() - t0
    eval_lists = _as_lists(users, top, customer_ids, stock_codes)
    test_metrics = evaluate.evaluate_ranking(eval_lists, test.relevant, cfg.k, n_items)
    say(f"test MAP@{cfg.k} {test_metrics[f'map@{cfg.k}']:.4f} with {best_params}")

    eval_frame = _ranked_frame(users, top, scores, customer_ids, stock_codes)
    spark.createDataFrame(eval_frame).write.mode("overwrite").parquet(_join(cfg.output, "eval_recommendations"))
    test.train.select("customer_id", "stock_code", "strength").write.mode("overwrite").parquet(
        _join(cfg.output, "split", "train")
    )
    relevant_rows = pd.DataFrame(
        [(c, s) for c, codes in sorted(test.relevant.items()) for s in sorted(codes)],
        columns=["customer_id", "stock_code"],
    )
    spark.createDataFrame(relevant_rows, "customer_id string, stock_code string").write.mode("overwrite").parquet(
        _join(cfg.output, "split", "test")
    )
    test.train.unpersist()

    # 3. serving: refit on everything, top-k unbought items for every customer, popularity for cold start
    generated_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    descriptions = _descriptions(usable)
    full = all_interactions.join(customers, "customer_id").join(items, "stock_code").cache()
    popular = (
        full.groupBy("stock_code")
        .agg(F.countDistinct("customer_id").alias("buyers"))
        .orderBy(F.desc("buyers"), F.asc("stock_code"))
        .limit(cfg.k)
        .toPandas()
    )
    popular["rank"] = np.arange(1, len(popular) + 1)
    popular["score"] = popular["buyers"].astype(float)
    popular["description"] = popular["stock_code"].map(descriptions).fillna("")
    popular = popular[["rank", "stock_code", "description", "score", "buyers"]]
    spark.createDataFrame(popular).write.mode("overwrite").parquet(_join(cfg.output, "popular"))
    serving_count = serving_rows = 0
    published = 0
    if cfg.serve:
        t0 = time.perf_counter()
        serving_model = fit_als(full, best_params, cfg.iterations, cfg.seed, blocks)
        users, top, scores = recommend(serving_model, full, n_customers, n_items, best_params["rank"], cfg.k)
        serving = _ranked_frame(users, top, scores, customer_ids, stock_codes)
        serving["description"] = serving["stock_code"].map(descriptions).fillna("")
        serving["model"] = MODEL_NAME
        serving["generated_at"] = generated_at
        spark.createDataFrame(serving).write.mode("overwrite").parquet(
            cfg.recommendations_output or _join(cfg.output, "recommendations")
        )
        timings["serving_seconds"] = time.perf_counter() - t0
        serving_count = int(serving["customer_id"].nunique())
        serving_rows = len(serving)
        ddb_items = dynamodb_items(serving, popular, generated_at)
        if publish is not None:
            published = publish(ddb_items)
        elif cfg.dynamodb_table:
            published = write_dynamodb(ddb_items, cfg.dynamodb_table, cfg.dynamodb_endpoint_url, cfg.region)
    full.unpersist()
    usable.unpersist()

    timings["total_seconds"] = time.perf_counter() - began
    report = {
        "model": MODEL_NAME,
        "config": {key: value for key, value in asdict(cfg).items() if key != "dynamodb_endpoint_url"},
        "k": cfg.k,
        "feedback": cfg.feedback,
        "period": {"first": _iso(first), "last": _iso(last), "validation_cut": _iso(val_cut), "test_cut": _iso(cut)},
        "counts": {
            **counts,
            "validation_customers": validation_customers,
            "test_customers": len(test.relevant),
            "serving_customers": serving_count,
            "serving_rows": serving_rows,
            "published": published,
        },
        "search": search,
        "best_params": best_params,
        "metrics": test_metrics,
        "timings": timings,
        "generated_at": generated_at,
    }
    write_text(_join(cfg.output, "report.json"), json.dumps(report, indent=2, sort_keys=True, default=str), cfg.region)
    return report


def _ranked_frame(
    users: np.ndarray, top: np.ndarray, scores: np.ndarray, customer_ids: np.ndarray, stock_codes: np.ndarray
) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    k = top.shape[1]
    return pd.DataFrame(
        {
            "customer_id": np.repeat(customer_ids[users], k).astype(str),
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), len(users)),
            "stock_code": stock_codes[top.ravel()].astype(str),
            "score": scores.ravel().astype(np.float64),
        }
    )


def _descriptions(lines: Any) -> dict[str, str]:
    """The most recent description of each stock code."""
    from pyspark.sql import functions as F

    if "description" not in lines.columns:
        return {}
    latest = lines.groupBy("stock_code").agg(F.max_by("description", "invoice_ts").alias("description")).toPandas()
    return dict(zip(latest["stock_code"], latest["description"].fillna("")))


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _iso(value: datetime) -> str:
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- command line


def _numbers(kind: type) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from exc

    return parse


def parse_args(argv: list[str] | None = None) -> JobConfig:
    """The command line of ``spark-submit als_job.py`` as a :class:`JobConfig`."""
    p = argparse.ArgumentParser(prog="als_job.py", description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True, help="curated order_lines Parquet folder (local path or s3://)")
    p.add_argument("--output", required=True, help="output folder: recommendations/, split/, report.json")
    p.add_argument("--k", type=int, default=10, help="recommendations per customer")
    p.add_argument("--rank", type=_numbers(int), default=[8, 16], help="ALS ranks to search, e.g. 8,16")
    p.add_argument("--reg-param", type=_numbers(float), default=[0.1], help="regParam values to search")
    p.add_argument("--alpha", type=_numbers(float), default=[2.0, 10.0], help="confidence alphas to search")
    p.add_argument("--iterations", type=int, default=10, help="ALS maxIter")
    p.add_argument("--holdout-weeks", type=int, default=4, help="last weeks held out as the test period")
    p.add_argument("--validation-weeks", type=int, default=4, help="weeks before the holdout used to pick parameters")
    p.add_argument("--feedback", choices=FEEDBACK, default="counts", help="implicit strength: invoices or quantity")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--blocks", type=int, default=None, help="ALS user/item blocks (default: Spark's parallelism)")
    p.add_argument("--no-search", action="store_true", help="use the first value of each grid, no search")
    p.add_argument("--no-serve", action="store_true", help="skip the serving refit and the DynamoDB write")
    p.add_argument("--recommendations-output", default=None, help="serving lists folder (<output>/recommendations)")
    p.add_argument("--dynamodb-table", default=None, help="write serving lists to this DynamoDB table")
    p.add_argument("--dynamodb-endpoint-url", default=None, help="DynamoDB endpoint (the emulator, locally)")
    p.add_argument("--region", default=None, help="AWS region of the DynamoDB table")
    a = p.parse_args(argv)
    return JobConfig(
        input=a.input,
        output=a.output,
        k=a.k,
        ranks=a.rank,
        reg_params=a.reg_param,
        alphas=a.alpha,
        iterations=a.iterations,
        holdout_weeks=a.holdout_weeks,
        validation_weeks=a.validation_weeks,
        feedback=a.feedback,
        seed=a.seed,
        blocks=a.blocks,
        search=not a.no_search,
        serve=not a.no_serve,
        recommendations_output=a.recommendations_output,
        dynamodb_table=a.dynamodb_table,
        dynamodb_endpoint_url=a.dynamodb_endpoint_url,
        region=a.region,
    )


def to_args(cfg: JobConfig) -> list[str]:
    """The command line that :func:`parse_args` turns back into ``cfg`` (for EMR steps)."""
    args = [
        "--input",
        cfg.input,
        "--output",
        cfg.output,
        "--k",
        str(cfg.k),
        "--rank",
        ",".join(map(str, cfg.ranks)),
        "--reg-param",
        ",".join(map(str, cfg.reg_params)),
        "--alpha",
        ",".join(map(str, cfg.alphas)),
        "--iterations",
        str(cfg.iterations),
        "--holdout-weeks",
        str(cfg.holdout_weeks),
        "--validation-weeks",
        str(cfg.validation_weeks),
        "--feedback",
        cfg.feedback,
        "--seed",
        str(cfg.seed),
    ]
    optional = {
        "--blocks": cfg.blocks,
        "--recommendations-output": cfg.recommendations_output,
        "--dynamodb-table": cfg.dynamodb_table,
        "--dynamodb-endpoint-url": cfg.dynamodb_endpoint_url,
        "--region": cfg.region,
    }
    args += [part for flag, value in optional.items() if value is not None for part in (flag, str(value))]
    if not cfg.search:
        args.append("--no-search")
    if not cfg.serve:
        args.append("--no-serve")
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spark-submit als_job.py``: uses the session spark-submit configured (local[2] otherwise)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = parse_args(argv)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    spark = active or SparkSession.builder.appName("shoplake-als").getOrCreate()
    try:
        report = run(cfg, spark)
    except JobError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {"metrics": report["metrics"], "best_params": report["best_params"], "counts": report["counts"]}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
