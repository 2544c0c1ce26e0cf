"""Notebook 03_recommendations at scale tiny: lake counts add up, every model is evaluated, serving is sound."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

NOTEBOOK = "03_recommendations"


@pytest.fixture(scope="module")
def metrics(workbook_metrics):
    return workbook_metrics[NOTEBOOK]


def test_every_delivered_line_is_curated_or_set_aside(metrics):
    delivery, curation = metrics["delivery"], metrics["curation"]
    assert delivery["delivered"] == delivery["events"] > 0
    assert curation["delivered"] == curation["curated"] + curation["set_aside_total"]
    assert curation["set_aside_total"] == sum(curation["set_aside"].values())
    assert curation["delivered"] >= delivery["delivered"]  # at-least-once: re-deliveries are set aside as duplicates
    assert curation["curated"] > 0


def test_the_job_used_the_curated_lines(metrics):
    counts, curation = metrics["job_counts"], metrics["curation"]
    assert counts["lines_in"] == curation["curated"]
    assert counts["lines_used"] == curation["training_lines"]
    assert counts["lines_in"] == counts["lines_used"] + sum(v for k, v in counts.items() if k.startswith("left_out_"))
    assert counts["serving_customers"] == counts["customers"] > 0
    assert counts["published"] == counts["customers"] + 1  # one list per customer + the popularity list
    assert metrics["lake_recommendations"]["rows"] == counts["customers"] * metrics["k"]


def test_every_model_is_evaluated_on_the_same_customers(metrics):
    k = metrics["k"]
    assert set(metrics["models"]) == {"spark-als", "implicit-als", "most-popular"}
    assert metrics["evaluated_customers"] > 0
    for name, values in metrics["models"].items():
        for metric, value in values.items():
            assert 0.0 <= value <= 1.0, (name, metric, value)
    # personalised models spread over the catalogue and follow the hidden tastes; popularity cannot
    als, popular = metrics["models"]["spark-als"], metrics["models"]["most-popular"]
    assert als[f"coverage@{k}"] > popular[f"coverage@{k}"]
    assert als[f"taste_hit_rate@{k}"] > popular[f"taste_hit_rate@{k}"]


def test_served_lists_have_k_unbought_items(metrics):
    served = metrics["served"]
    assert served["checked"] > 0
    assert served["short_lists"] == 0
    assert served["bought_items_served"] == 0
    assert served["cold_start"] == 0
    assert metrics["examples_bought_items_served"] == 0
    assert metrics["cold_start_flagged"] is True


def test_the_target_chose_the_training_backend(metrics):
    # the notebook calls recommend.train and never looks at the target; at tiny locally that is Spark local[2]
    assert metrics["backend"] == "local-spark"
