"""The DynamoDB items the ALS job publishes: one per customer in key order, each list by rank (one sort of the whole
frame), the same items the straightforward per-customer sort gives."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd

from shoplake.recommend import als_job


def _per_customer(serving: pd.DataFrame, popular: pd.DataFrame, generated_at: str) -> list[dict]:
    """The definition: group by customer (sorted), sort each group by rank."""

    def entries(frame: pd.DataFrame) -> list[dict]:
        return [
            {
                "rank": int(r.rank),
                "stock_code": str(r.stock_code),
                "description": "" if pd.isna(r.description) else str(r.description),  # a missing one (None, NaN): ""
                "score": Decimal(f"{float(r.score):.6f}"),
            }
            for r in frame.sort_values("rank").itertuples(index=False)
        ]

    items = [
        {
            "customer_id": str(c),
            "model": als_job.MODEL_NAME,
            "generated_at": generated_at,
            "cold_start": False,
            "items": entries(g),
        }
        for c, g in serving.groupby("customer_id", sort=True)
    ]
    return items + [
        {
            "customer_id": als_job.POPULAR_KEY,
            "model": "most-popular",
            "generated_at": generated_at,
            "cold_start": True,
            "items": entries(popular),
        }
    ]


def test_items_are_the_per_customer_definition_on_shuffled_lists():
    rng = np.random.default_rng(7)
    customers = [f"{n:05d}" for n in rng.choice(90000, size=300, replace=False)]
    rows = [(c, rank, f"S{rng.integers(1000)}", float(rng.random())) for c in customers for rank in range(1, 11)]
    serving = pd.DataFrame(rows, columns=["customer_id", "rank", "stock_code", "score"])
    serving["description"] = np.where(rng.random(len(serving)) < 0.1, None, "A MUG")
    serving = serving.sample(frac=1.0, random_state=3).reset_index(drop=True)  # customers and ranks interleaved
    serving.loc[5, "customer_id"] = None  # a line without a customer is no one's list
    popular = pd.DataFrame(
        {"rank": [3, 1, 2], "stock_code": ["R", "P", "Q"], "description": ["", None, "CUE"], "score": [1.0, 3.0, 2.0]}
    )
    got = als_job.dynamodb_items(serving, popular, "2026-12-07T00:00:00Z")
    assert sum(e["description"] == "" for i in got for e in i["items"]) > 100  # missing: "", not "nan"
    assert got == _per_customer(serving, popular, "2026-12-07T00:00:00Z")
    assert [i["customer_id"] for i in got[:-1]] == sorted(set(serving["customer_id"].dropna()))
    assert all([e["rank"] for e in i["items"]] == sorted(e["rank"] for e in i["items"]) for i in got)
    assert got[-1]["items"][0] == {"rank": 1, "stock_code": "P", "description": "", "score": Decimal("3.000000")}
