"""Ranking metrics and baselines against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from shoplake.recommend import als_job, baselines, evaluate

RECS = ["A", "B", "C", "D", "E"]
RELEVANT = {"A", "C", "F"}


def test_precision_and_recall_at_k():
    assert evaluate.precision_at_k(RECS, RELEVANT, 5) == pytest.approx(2 / 5)
    assert evaluate.recall_at_k(RECS, RELEVANT, 5) == pytest.approx(2 / 3)
    assert evaluate.precision_at_k(RECS, RELEVANT, 2) == pytest.approx(1 / 2)
    assert evaluate.recall_at_k(RECS, RELEVANT, 2) == pytest.approx(1 / 3)
    # a list shorter than k still divides by k
    assert evaluate.precision_at_k(["A"], RELEVANT, 4) == pytest.approx(1 / 4)


def test_average_precision_at_k():
    # hits at ranks 1 and 3: (1/1 + 2/3) / min(3, 5)
    assert evaluate.average_precision_at_k(RECS, RELEVANT, 5) == pytest.approx((1 + 2 / 3) / 3)
    # at k=2 only rank 1 hits, normalised by min(3, 2)
    assert evaluate.average_precision_at_k(RECS, RELEVANT, 2) == pytest.approx(1 / 2)
    assert evaluate.average_precision_at_k(["X", "A"], {"A"}, 2) == pytest.approx(1 / 2)
    # a repeated item is counted once
    assert evaluate.average_precision_at_k(["A", "A"], {"A", "B"}, 2) == pytest.approx(1 / 2)


def test_ndcg_at_k():
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    ideal = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert evaluate.ndcg_at_k(RECS, RELEVANT, 5) == pytest.approx(dcg / ideal)
    assert evaluate.ndcg_at_k(RECS, RELEVANT, 5) == pytest.approx(0.703918, abs=1e-6)
    assert evaluate.ndcg_at_k(RECS, RELEVANT, 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert evaluate.ndcg_at_k(["A", "C", "F"], RELEVANT, 3) == pytest.approx(1.0)


def test_empty_relevance_and_bad_k():
    for metric in (evaluate.recall_at_k, evaluate.average_precision_at_k, evaluate.ndcg_at_k):
        assert metric(RECS, set(), 5) == 0.0
    with pytest.raises(ValueError, match="k must be a positive integer"):
        evaluate.precision_at_k(RECS, RELEVANT, 0)


def test_coverage_and_taste_hit_rate():
    recs = {"u1": ["A", "B"], "u2": ["B", "C"], "u3": ["D", "E"]}
    assert evaluate.coverage(recs, n_items=10, k=2) == pytest.approx(5 / 10)
    assert evaluate.coverage(recs, n_items=10, k=1) == pytest.approx(3 / 10)
    groups = {"u1": 0, "u2": 1, "u3": -1}  # u3 has no taste group: not counted
    items = {"A": 0, "B": 1, "C": 1, "D": 0}
    assert evaluate.taste_hit_rate(recs, groups, items, k=2) == pytest.approx(3 / 4)
    assert evaluate.taste_hit_rate(recs, groups, items, k=1) == pytest.approx(2 / 2)
    with pytest.raises(ValueError, match="n_items"):
        evaluate.coverage(recs, n_items=0, k=2)


def test_evaluate_ranking_averages_over_customers_with_relevant_items():
    recs = {"u1": ["A", "B"], "u2": ["B", "C"]}
    relevant = {"u1": {"A"}, "u2": {"Z"}, "u3": set(), "u4": {"B"}}  # u3 is skipped; u4 has no list: scores 0
    result = evaluate.evaluate_ranking(
        recs, relevant, k=2, n_items=4, customer_group={"u1": 0, "u2": 1}, item_group={"A": 0, "B": 0, "C": 1}
    )
    assert result["customers"] == 3
    assert result["map@2"] == pytest.approx((1 + 0 + 0) / 3)
    assert result["precision@2"] == pytest.approx((1 / 2) / 3)
    assert result["recall@2"] == pytest.approx(1 / 3)
    assert result["coverage@2"] == pytest.approx(3 / 4)
    # u1 (group 0): A and B hit; u2 (group 1): B misses, C hits; u4 has no group
    assert result["taste_hit_rate@2"] == pytest.approx(3 / 4)


def test_most_popular_skips_bought_items():
    train = pd.DataFrame(
        {
            "customer_id": ["u1", "u2", "u3", "u1", "u2", "u3"],
            "stock_code": ["A", "A", "A", "B", "B", "C"],
            "strength": [1.0] * 6,
        }
    )
    lists = baselines.most_popular(train, ["u1", "u3", "new"], k=2)
    assert lists == {"u1": ["C"], "u3": ["B"], "new": ["A", "B"]}


def test_top_k_scores_excludes_bought_and_orders_by_score():
    import numpy as np

    users = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    items = np.array([[3.0, 0.0], [2.0, 1.0], [1.0, 2.0], [0.0, 3.0]], dtype=np.float32)
    top, scores = als_job.top_k_scores(users, items, np.array([0, 1]), {0: np.array([0])}, k=2)
    assert top.tolist() == [[1, 2], [3, 2]]
    assert scores.tolist() == [[2.0, 1.0], [3.0, 2.0]]


def test_job_arguments_round_trip_and_validation():
    cfg = als_job.JobConfig(
        input="s3://lake/curated/order_lines/",
        output="s3://lake/recommend/",
        k=5,
        ranks=[8, 16],
        alphas=[20.0],
        holdout_weeks=2,
        search=False,
        dynamodb_table="shoplake-x-recommendations",
        region="eu-west-1",
    )
    assert als_job.parse_args(als_job.to_args(cfg)) == cfg
    with pytest.raises(als_job.JobError, match="--holdout-weeks"):
        als_job.JobConfig(input="i", output="o", holdout_weeks=0).validate()
    with pytest.raises(als_job.JobError, match="--feedback"):
        als_job.JobConfig(input="i", output="o", feedback="clicks").validate()


def test_job_script_runs_with_only_the_shipped_modules(tmp_path):
    """On EMR only als_job.py and the --py-files zip exist: the script imports from the zip, nothing else."""
    import subprocess
    import sys
    from pathlib import Path

    from shoplake.recommend import emr

    (tmp_path / "als_job.py").write_bytes(Path(als_job.__file__).read_bytes())
    (tmp_path / "shoplake-job.zip").write_bytes(emr.job_bundle())
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/shoplake-job.zip']; import als_job; "
        "print(als_job.evaluate.__file__); print(als_job.JobError.__mro__[1].__name__); "
        "print(als_job.parse_args(['--input', 'i', '--output', 'o']).ranks)"
    )
    # -I -S: no site-packages (no numpy, pandas or the installed shoplake), as on a cluster before the bootstrap
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    evaluate_file, error_base, ranks = done.stdout.split("\n")[:3]
    assert evaluate_file == str(tmp_path / "shoplake-job.zip" / "shoplake" / "recommend" / "evaluate.py")
    assert error_base == "ShoplakeError"
    assert ranks == "[8, 16]"
