"""The synthetic catalogue: Online-Retail-like stock codes, descriptions and prices, one taste group per product."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Each taste group is a theme; its products' descriptions come from the theme's nouns.
GROUP_THEMES: list[tuple[str, list[str]]] = [
    (
        "christmas",
        [
            "CHRISTMAS BAUBLE",
            "STAR T-LIGHT HOLDER",
            "ADVENT CALENDAR",
            "SNOWFLAKE DECORATION",
            "REINDEER CANDLE",
            "XMAS TREE DECORATION",
            "CHRISTMAS STOCKING",
            "ANGEL ORNAMENT",
        ],
    ),
    (
        "baking",
        [
            "CAKE CASES",
            "BAKING SET",
            "TEA TOWEL",
            "JAM MAKING SET",
            "CAKE STAND",
            "MEASURING SPOONS",
            "CAKE TIN",
            "RECIPE BOX",
        ],
    ),
    (
        "garden",
        [
            "PLANT POT",
            "WATERING CAN",
            "BIRD HOUSE",
            "GARDEN MARKER",
            "HANGING PLANTER",
            "SEED TIN",
            "WIND CHIME",
            "GARDEN KNEELER",
        ],
    ),
    (
        "party",
        [
            "PARTY BUNTING",
            "PAPER CHAIN KIT",
            "PARTY CUPS",
            "PAPER NAPKINS",
            "BALLOON SET",
            "PARTY BAG",
            "BIRTHDAY CANDLE SET",
            "CONFETTI TUBE",
        ],
    ),
    (
        "home",
        [
            "HANGING HEART T-LIGHT HOLDER",
            "GLASS LANTERN",
            "PHOTO FRAME",
            "WALL CLOCK",
            "METAL SIGN",
            "DOORSTOP",
            "CUSHION COVER",
            "CANDLE HOLDER",
        ],
    ),
    (
        "kids",
        [
            "ALARM CLOCK BAKELIKE",
            "LUNCH BOX",
            "CHILDRENS BEAKER",
            "CHILDRENS APRON",
            "TOY TIDY",
            "SKIPPING ROPE",
            "COLOURING PENCILS",
            "JIGSAW",
        ],
    ),
    (
        "bags",
        ["JUMBO BAG", "LUNCH BAG", "SHOPPER BAG", "CHARLOTTE BAG", "WASHBAG", "SHOULDER BAG", "PURSE", "TOTE BAG"],
    ),
    (
        "stationery",
        [
            "NOTEBOOK",
            "WRAPPING PAPER",
            "GIFT TAG SET",
            "GREETING CARD",
            "PENCIL CASE",
            "STICKER SHEET",
            "ENVELOPE SET",
            "MEMO BOARD",
        ],
    ),
]
N_GROUPS = len(GROUP_THEMES)
MODIFIERS = [
    "WHITE",
    "RED",
    "PINK",
    "BLUE",
    "GREEN",
    "IVORY",
    "RETROSPOT",
    "VINTAGE",
    "REGENCY",
    "PAISLEY",
    "WOODLAND",
    "SPOTTY",
    "STRIPED",
    "FLORAL",
    "HEART",
    "BIRD",
    "SKULL",
    "POLKADOT",
    "DOLLY GIRL",
    "SPACEBOY",
    "ENGLISH ROSE",
    "SWEETHEART",
]
PREFIXES = ["", "", "SET OF 3 ", "SMALL ", "LARGE ", "PACK OF 12 "]

# Non-product codes of the real file: postage, dotcom postage, manual adjustments, bank charges.
NON_PRODUCTS = [
    ("POST", "POSTAGE", 18.00),
    ("DOT", "DOTCOM POSTAGE", 0.0),  # price set per invoice
    ("M", "Manual", 0.0),  # price set per line
    ("BANK CHARGES", "Bank Charges", 15.00),
]

ZIPF_EXPONENT = 0.9


def make_catalogue(n_products: int, rng: np.random.Generator) -> pd.DataFrame:
    """Products (StockCode, Description, UnitPrice, taste_group, is_product, popularity) + the non-product codes.

    ``popularity`` (global Zipf weight, sums to 1 over products) is ground truth the generator uses; it is
    kept in the DataFrame but the file written to disk has only the contract's columns.
    """
    groups = np.arange(n_products) % N_GROUPS
    rng.shuffle(groups)

    # Stock codes: distinct 5-digit numbers; some come as families of variants 85123A, 85123B, ...
    n_bases = n_products
    bases = rng.choice(np.arange(10002, 90999), size=n_bases, replace=False)
    codes: list[str] = []
    i = 0
    while len(codes) < n_products:
        base = int(bases[i])
        i += 1
        if rng.random() < 0.15:
            for suffix in "ABC"[: int(rng.integers(2, 4))]:
                codes.append(f"{base}{suffix}")
        else:
            codes.append(str(base))
    codes = codes[:n_products]

    descriptions: list[str] = []
    seen: set[str] = set()
    for g in groups:
        nouns = GROUP_THEMES[int(g)][1]
        for attempt in range(50):
            noun = nouns[int(rng.integers(len(nouns)))]
            mod = MODIFIERS[int(rng.integers(len(MODIFIERS)))]
            prefix = PREFIXES[int(rng.integers(len(PREFIXES)))]
            if rng.random() < 0.04:
                text = f"{prefix}{noun}, {mod} DESIGN"  # a comma inside the description, as in the real file
            else:
                text = f"{prefix}{mod} {noun}"
            if attempt >= 40:
                text = f"{text} {attempt}"
            if text not in seen:
                break
        seen.add(text)
        descriptions.append(text)

    # Prices: log-normal around 2.50, rounded to 5 pence, at least 0.19.
    prices = np.round(np.exp(rng.normal(np.log(2.5), 0.75, n_products)) * 20) / 20
    prices = np.maximum(prices, 0.19)
    prices = np.where(prices > 0.19, np.round(prices - 0.05 * (rng.random(n_products) < 0.5), 2), prices)

    ranks = rng.permutation(n_products) + 1
    popularity = 1.0 / ranks**ZIPF_EXPONENT
    popularity = popularity / popularity.sum()

    products = pd.DataFrame(
        {
            "StockCode": codes,
            "Description": descriptions,
            "UnitPrice": np.round(prices.astype(float), 2),
            "taste_group": groups.astype("int64"),
            "is_product": True,
            "popularity": popularity,
        }
    )
    extra = pd.DataFrame(
        {
            "StockCode": [c for c, _, _ in NON_PRODUCTS],
            "Description": [d for _, d, _ in NON_PRODUCTS],
            "UnitPrice": [p for _, _, p in NON_PRODUCTS],
            "taste_group": -1,
            "is_product": False,
            "popularity": 0.0,
        }
    )
    return pd.concat([products, extra], ignore_index=True)


def group_slug(group: int) -> str:
    """The web-shop category slug of a taste group (used in access-log paths)."""
    return GROUP_THEMES[group][0] if 0 <= group < N_GROUPS else "all"
