"""The Spark ALS job for real (local[2]) on the synthetic shop: outputs, served lists, DynamoDB, quality vs baselines.

One Spark session and one job run for the module (Spark start ~6 s, each ALS fit a few seconds). The quality test
needs a scale where the metrics are stable: scale small (≈1,100 evaluated customers); tiny has ≈35.
"""

from __future__ import annotations

import pandas as pd
import pytest

from shoplake.errors import ShoplakeError
from shoplake.recommend import als_job, baselines, data, serve

pytestmark = pytest.mark.slow

K = 10
PARAMS = {"ranks": [16], "alphas": [5.0], "reg_params": [0.1], "iterations": 8, "search": False}


@pytest.fixture(scope="module")
def spark():
    session = als_job.spark_session()
    yield session
    session.stop()


@pytest.fixture(scope="module")
def shop():
    from shoplake import datagen

    return datagen.load(scale="small", seed=42, progress=False)


@pytest.fixture(scope="module")
def curated(shop, tmp_path_factory):
    non_products = shop.products.loc[~shop.products["is_product"], "StockCode"]
    lines = data.curated_from_events(shop.order_lines, non_products)
    folder = data.write_local(lines, tmp_path_factory.mktemp("lake") / "order_lines")
    return lines, folder


@pytest.fixture(scope="module")
def recommendations_table(local_stack):
    from shoplake import infra

    infra.apply([r for r in infra.load_spec() if r.type == "dynamodb_table" and r.name == "recommendations"])
    return serve.table_name()


@pytest.fixture(scope="module")
def job(spark, curated, recommendations_table, tmp_path_factory):
    _, folder = curated
    output = tmp_path_factory.mktemp("als")
    cfg = als_job.JobConfig(input=str(folder), output=str(output), k=K, holdout_weeks=2, validation_weeks=2, **PARAMS)
    report = als_job.run(cfg, spark=spark, publish=serve.publish)
    return cfg, report


def test_report_counts_add_up(job, curated):
    cfg, report = job
    lines, _ = curated
    counts = report["counts"]
    assert counts["lines_in"] == len(lines)
    left_out = {k: v for k, v in counts.items() if k.startswith("left_out_")}
    assert counts["lines_in"] == counts["lines_used"] + sum(left_out.values())
    assert left_out["left_out_no_customer"] == int(lines["customer_id"].isna().sum())
    assert left_out["left_out_cancellation"] == int((lines["is_cancellation"] & lines["customer_id"].notna()).sum())
    used = lines[lines["customer_id"].notna() & ~lines["is_cancellation"] & (lines["quantity"] > 0)]
    assert counts["customers"] == used["customer_id"].nunique()
    assert counts["items"] == used["stock_code"].nunique()
    assert counts["interactions"] == len(used.groupby(["customer_id", "stock_code"]))
    assert als_job.read_report(cfg.output)["metrics"] == report["metrics"]


def test_split_holds_out_only_new_purchases_after_the_cut(job, curated):
    cfg, report = job
    lines, _ = curated
    split = baselines.read_split(cfg.output)
    cut = pd.Timestamp(report["period"]["test_cut"])
    before = lines[(lines["invoice_ts"] < cut) & lines["customer_id"].notna() & ~lines["is_cancellation"]]
    assert split.train["customer_id"].nunique() == before["customer_id"].nunique()
    pairs_before = set(zip(before["customer_id"], before["stock_code"], strict=True))
    held_out = set(zip(split.test["customer_id"], split.test["stock_code"], strict=True))
    assert held_out and not held_out & pairs_before
    assert report["counts"]["test_customers"] == split.test["customer_id"].nunique()


def test_served_lists_have_k_items_none_bought(job, curated):
    cfg, report = job
    lines, _ = curated
    served = pd.read_parquet(f"{cfg.output}/recommendations")
    bought = {c: set(codes) for c, codes in lines[lines["customer_id"].notna()].groupby("customer_id")["stock_code"]}
    per_customer = served.groupby("customer_id")["stock_code"].agg(list)
    assert len(per_customer) == report["counts"]["customers"]
    assert all(len(codes) == K == len(set(codes)) for codes in per_customer)
    assert not any(set(codes) & bought[customer] for customer, codes in per_customer.items())
    assert (served.groupby("customer_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()
    assert served["description"].ne("").all()
    # the evaluation lists of the train-only model exclude what was bought before the cut, too
    split = baselines.read_split(cfg.output)
    train_pairs = set(zip(split.train["customer_id"], split.train["stock_code"], strict=True))
    recs = split.spark_recommendations
    assert not set(zip(recs["customer_id"], recs["stock_code"], strict=True)) & train_pairs


def test_served_from_dynamodb(job, curated):
    _, report = job
    lines, _ = curated
    assert report["counts"]["published"] == report["counts"]["customers"] + 1
    customer = lines["customer_id"].dropna().iloc[0]
    found = serve.recommendations_for(customer, k=K)
    assert found["cold_start"] is False and found["model"] == "spark-als"
    assert [e["rank"] for e in found["items"]] == list(range(1, K + 1))
    assert not {e["stock_code"] for e in found["items"]} & set(
        lines.loc[lines["customer_id"] == customer, "stock_code"]
    )
    assert len(serve.recommendations_for(customer, k=3)["items"]) == 3
    newcomer = serve.recommendations_for("no-such-customer", k=K)
    assert newcomer["cold_start"] is True and newcomer["model"] == "most-popular" and len(newcomer["items"]) == K
    popular = pd.read_parquet(f"{job[0].output}/popular")
    assert [e["stock_code"] for e in newcomer["items"]] == popular.sort_values("rank")["stock_code"].tolist()
    with pytest.raises(ShoplakeError, match="positive integer"):
        serve.recommendations_for(customer, k=0)


def test_spark_als_beats_most_popular(job, shop):
    cfg, report = job
    table = baselines.compare_models(
        cfg.output,
        K,
        shop.customers,
        shop.products,
        baselines.implicit_params_from(report["best_params"], cfg.iterations, cfg.seed),
    )
    als, popular = table.loc["spark-als"], table.loc["most-popular"]
    assert table["customers"].nunique() == 1 and table["customers"].iloc[0] > 500
    assert als[f"map@{K}"] == pytest.approx(report["metrics"][f"map@{K}"])
    assert als[f"map@{K}"] >= 1.5 * popular[f"map@{K}"]
    assert als[f"taste_hit_rate@{K}"] >= 0.5
    assert popular[f"taste_hit_rate@{K}"] <= 0.1
    # the peer library on the same split lands in the same range (not a speed or quality race here)
    assert table.loc["implicit-als", f"map@{K}"] >= 1.2 * popular[f"map@{K}"]


def test_bad_input_is_a_clear_error(spark, curated, tmp_path):
    lines, _ = curated
    with pytest.raises(als_job.JobError, match="does not exist"):
        als_job.run(als_job.JobConfig(input=str(tmp_path / "nowhere"), output=str(tmp_path / "out")), spark=spark)
    short = data.write_local(lines[lines["order_date"] <= lines["order_date"].min()], tmp_path / "one_day")
    with pytest.raises(als_job.JobError, match="too short"):
        als_job.run(als_job.JobConfig(input=str(short), output=str(tmp_path / "out")), spark=spark)
    no_customers = lines.drop(columns=["customer_id"]).head(50)
    folder = data.write_local(no_customers, tmp_path / "no_customers")
    with pytest.raises(als_job.JobError, match="customer_id"):
        als_job.run(als_job.JobConfig(input=str(folder), output=str(tmp_path / "out")), spark=spark)


def test_local_spark_listens_on_loopback_only(spark):
    """The driver's ports are bound to 127.0.0.1, never to the machine's external interface."""
    import psutil

    assert spark.conf.get("spark.driver.host") == "127.0.0.1"
    jvms = [p for p in psutil.Process().children(recursive=True) if "java" in p.name()]
    listening = [c.laddr for jvm in jvms for c in jvm.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening, "the Spark JVM listens on its driver ports"
    assert all(addr.ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for addr in listening), listening
