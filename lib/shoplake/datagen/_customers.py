"""Synthetic customers: IDs like the real file's, countries (United Kingdom dominant), hidden taste groups, IPs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shoplake.datagen._catalogue import N_GROUPS

# Share of customers per country, roughly as in the UCI Online Retail file.
COUNTRIES: list[tuple[str, float]] = [
    ("United Kingdom", 0.880),
    ("Germany", 0.022),
    ("France", 0.020),
    ("EIRE", 0.008),
    ("Spain", 0.007),
    ("Belgium", 0.006),
    ("Netherlands", 0.005),
    ("Switzerland", 0.005),
    ("Portugal", 0.005),
    ("Italy", 0.004),
    ("Finland", 0.003),
    ("Norway", 0.003),
    ("Australia", 0.003),
    ("Austria", 0.003),
    ("Denmark", 0.003),
    ("Channel Islands", 0.002),
    ("Sweden", 0.002),
    ("Cyprus", 0.002),
    ("Japan", 0.002),
    ("Poland", 0.002),
    ("USA", 0.001),
    ("Israel", 0.001),
    ("Canada", 0.001),
    ("Iceland", 0.001),
    ("Greece", 0.001),
    ("Singapore", 0.001),
    ("Unspecified", 0.001),
]
IPV6_SHARE = 0.12


def random_ips(n: int, rng: np.random.Generator, ipv6_share: float = IPV6_SHARE) -> list[str]:
    """``n`` public-looking client addresses, mostly IPv4, some IPv6."""
    v4 = rng.integers(0, 256, size=(n, 4))
    v4[:, 0] = rng.choice([31, 46, 62, 77, 81, 86, 90, 109, 151, 176, 185, 194, 212, 217], size=n)
    v6 = rng.integers(0, 65536, size=(n, 4))
    is_v6 = rng.random(n) < ipv6_share
    out = []
    for i in range(n):
        if is_v6[i]:
            a, b, c, d = v6[i]
            out.append(f"2a02:c7f:{a:x}:{b:x}::{c:x}:{d:x}")
        else:
            out.append(f"{v4[i, 0]}.{v4[i, 1]}.{v4[i, 2]}.{v4[i, 3]}")
    return out


def make_customers(n_customers: int, rng: np.random.Generator) -> pd.DataFrame:
    """Customers (CustomerID, Country, taste_group, ip, activity); ``activity`` sums to 1 (repeat-buying weight)."""
    ids = np.sort(rng.choice(np.arange(12346, 12346 + 3 * n_customers + 10), size=n_customers, replace=False))
    names = np.array([c for c, _ in COUNTRIES])
    weights = np.array([w for _, w in COUNTRIES])
    countries = rng.choice(names, size=n_customers, p=weights / weights.sum())
    groups = rng.integers(0, N_GROUPS, size=n_customers)
    # Heavy-tailed activity: a few wholesalers buy very often, most customers a few times.
    activity = np.exp(rng.normal(0.0, 1.0, n_customers))
    activity = activity / activity.sum()
    return pd.DataFrame(
        {
            "CustomerID": [str(i) for i in ids],
            "Country": countries.astype(object),
            "taste_group": groups.astype("int64"),
            "ip": random_ips(n_customers, rng),
            "activity": activity,
        }
    )
