"""Ranking metrics for recommendations: precision@k, recall@k, MAP@k, nDCG@k, coverage, taste-group hit rate.

Standard library only, so the Spark job can ship this file next to itself to EMR (``--py-files``).

Conventions (the same for every model, so models compare fairly):

* ``recommendations``: customer → ranked list of item ids (best first); only the first ``k`` count.
* ``relevant``: customer → set of item ids the customer bought in the held-out weeks *and had not bought before*
  (serving excludes already-bought items, so re-purchases cannot be recommended and are not counted).
* Means are taken over the customers in ``relevant`` with at least one relevant item; a customer without
  recommendations scores 0 (it is not silently dropped).
* Relevance is binary; nDCG uses gain 1 and discount ``1 / log2(rank + 1)`` (rank starting at 1).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

Item = Hashable


def _check_k(k: int) -> None:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def precision_at_k(recommended: Sequence[Item], relevant: Iterable[Item], k: int) -> float:
    """Share of the first ``k`` recommendations that are relevant (divided by ``k``, not by the list length)."""
    _check_k(k)
    relevant = set(relevant)
    return sum(1 for item in recommended[:k] if item in relevant) / k


def recall_at_k(recommended: Sequence[Item], relevant: Iterable[Item], k: int) -> float:
    """Share of the relevant items found in the first ``k`` recommendations (0 when nothing is relevant)."""
    _check_k(k)
    relevant = set(relevant)
    if not relevant:
        return 0.0
    return sum(1 for item in recommended[:k] if item in relevant) / len(relevant)


def average_precision_at_k(recommended: Sequence[Item], relevant: Iterable[Item], k: int) -> float:
    """AP@k: mean of precision@i at each rank i ≤ k holding a relevant item, divided by ``min(|relevant|, k)``."""
    _check_k(k)
    relevant = set(relevant)
    if not relevant:
        return 0.0
    hits = 0
    total = 0.0
    seen: set[Item] = set()
    for rank, item in enumerate(recommended[:k], start=1):
        if item in relevant and item not in seen:
            hits += 1
            total += hits / rank
        seen.add(item)
    return total / min(len(relevant), k)


def ndcg_at_k(recommended: Sequence[Item], relevant: Iterable[Item], k: int) -> float:
    """nDCG@k with binary gains: DCG of the list over the DCG of an ideal list of ``min(|relevant|, k)`` hits."""
    _check_k(k)
    relevant = set(relevant)
    if not relevant:
        return 0.0
    dcg = sum(1.0 / math.log2(rank + 1) for rank, item in enumerate(recommended[:k], start=1) if item in relevant)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(relevant), k) + 1))
    return dcg / ideal


def coverage(recommendations: Mapping[Any, Sequence[Item]], n_items: int, k: int) -> float:
    """Catalogue coverage: distinct items appearing in anyone's first ``k`` recommendations / ``n_items``."""
    _check_k(k)
    if n_items <= 0:
        raise ValueError(f"n_items must be positive, got {n_items}")
    shown = {item for items in recommendations.values() for item in items[:k]}
    return len(shown) / n_items


def taste_hit_rate(
    recommendations: Mapping[Any, Sequence[Item]],
    customer_group: Mapping[Any, int],
    item_group: Mapping[Item, int],
    k: int,
) -> float:
    """Share of recommended items (first ``k``) in the customer's hidden taste group.

    Only customers with a taste group (``>= 0``) count; items without a group (or unknown) count as misses.
    Returns 0.0 when no customer has a taste group.
    """
    _check_k(k)
    hits = shown = 0
    for customer, items in recommendations.items():
        group = customer_group.get(customer, -1)
        if group is None or group < 0:
            continue
        for item in items[:k]:
            shown += 1
            if item_group.get(item, -1) == group:
                hits += 1
    return hits / shown if shown else 0.0


def evaluate_ranking(
    recommendations: Mapping[Any, Sequence[Item]],
    relevant: Mapping[Any, Iterable[Item]],
    k: int,
    n_items: int,
    customer_group: Mapping[Any, int] | None = None,
    item_group: Mapping[Item, int] | None = None,
) -> dict[str, float]:
    """All metrics at ``k`` for one model, averaged over the customers with relevant items.

    Returns ``precision@k``, ``recall@k``, ``map@k``, ``ndcg@k``, ``coverage@k`` (over every customer that got a
    list), ``customers`` evaluated, and ``taste_hit_rate@k`` when the ground-truth groups are given.
    """
    _check_k(k)
    rows = [(customer, set(items)) for customer, items in relevant.items()]
    rows = [(customer, items) for customer, items in rows if items]
    sums = {"precision": 0.0, "recall": 0.0, "map": 0.0, "ndcg": 0.0}
    for customer, items in rows:
        ranked = list(recommendations.get(customer, ()))
        sums["precision"] += precision_at_k(ranked, items, k)
        sums["recall"] += recall_at_k(ranked, items, k)
        sums["map"] += average_precision_at_k(ranked, items, k)
        sums["ndcg"] += ndcg_at_k(ranked, items, k)
    n = len(rows)
    result = {f"{name}@{k}": (total / n if n else 0.0) for name, total in sums.items()}
    result[f"coverage@{k}"] = coverage(recommendations, n_items, k) if recommendations else 0.0
    result["customers"] = float(n)
    if customer_group is not None and item_group is not None:
        evaluated = {customer: recommendations.get(customer, ()) for customer, _ in rows}
        result[f"taste_hit_rate@{k}"] = taste_hit_rate(evaluated, customer_group, item_group, k)
    return result
