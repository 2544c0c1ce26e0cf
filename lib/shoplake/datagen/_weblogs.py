"""Synthetic Apache combined-format access log consistent with the orders: sessions, bots, 404s, 5xx bursts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from shoplake.datagen._catalogue import N_GROUPS, group_slug
from shoplake.datagen._customers import random_ips
from shoplake.datagen._orders import Period, iso_seconds, sample_times

SITE = "https://www.shoplake.example"
BROWSERS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
]
BOTS = [
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "66.249.66.", 0.45),
    ("Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)", "157.55.39.", 0.35),
    ("curl/8.5.0", "", 0.20),
]
EXTERNAL_REFERRERS = [
    "-",
    "-",
    "https://www.google.com/",
    "https://www.google.co.uk/",
    "https://www.bing.com/",
    "https://www.facebook.com/",
    "https://duckduckgo.com/",
]
NOT_FOUND_PATHS = [
    "/wp-login.php",
    "/.env",
    "/xmlrpc.php",
    "/old-catalogue.html",
    "/admin/config.php",
    "/images/banner_2009.gif",
    "/shop/index.asp",
]
BURST_PATHS = [("GET", "/search"), ("POST", "/cart/add"), ("POST", "/checkout"), ("GET", "/api/recommendations")]
BOT_SHARE = 0.08
NOT_FOUND_SHARE = 0.012
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

COLUMNS = ["t", "ip", "method", "path", "status", "bytes", "referrer", "agent"]


def _frame(t, ip, method, path, status, size, referrer, agent) -> dict[str, np.ndarray]:  # arrays or scalars
    """Columns of a block of log events (scalars are broadcast)."""
    n = len(t)

    def text(value: object) -> np.ndarray:
        if isinstance(value, str):
            return np.full(n, value, dtype=object)
        return np.asarray(value, dtype=object)

    def number(value: object) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, dtype=np.int64), (n,)).copy()

    return {
        "t": np.asarray(t, dtype=float),
        "ip": text(ip),
        "method": text(method),
        "path": text(path),
        "status": number(status),
        "bytes": number(size),
        "referrer": text(referrer),
        "agent": text(agent),
    }


def _page_bytes(n: int, rng: np.random.Generator, median: float = 14_000) -> np.ndarray:
    return np.round(np.exp(rng.normal(np.log(median), 0.35, n))).astype(np.int64)


def _pick(options: list[str], n: int, rng: np.random.Generator) -> np.ndarray:
    return np.array(options, dtype=object)[rng.integers(0, len(options), n)]


def make_access_log(
    order_lines: pd.DataFrame,
    products: pd.DataFrame,
    customers: pd.DataFrame,
    period: Period,
    n_bursts: int,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Access-log events (columns, sorted by time) and the injected 5xx bursts (ground truth for the log dashboard)."""
    code_path = np.array(["/product/" + c for c in products["StockCode"]], dtype=object)
    real_rows = np.flatnonzero(products["is_product"].to_numpy())
    groups_of_row = products["taste_group"].to_numpy()
    agent_of_customer = _pick(BROWSERS, len(customers), rng)
    ip_of_customer = customers["ip"].to_numpy(dtype=object)
    parts: list[dict[str, np.ndarray]] = []

    # --- one session per order: landing, a view (+ cart add) per item, extra browsing, checkout at the invoice time
    invoice_no = order_lines["InvoiceNo"].to_numpy(dtype=object)
    is_cancel = np.array([no[0] == "C" for no in invoice_no], dtype=bool)
    slot = order_lines["_invoice"].to_numpy()
    line_no = order_lines["LineNo"].to_numpy()
    take = np.flatnonzero(~is_cancel & order_lines["_is_product"].to_numpy(bool))
    take = take[np.lexsort((line_no[take], slot[take]))]
    item_slot = slot[take]
    item_rows = order_lines["_row"].to_numpy()[take]
    inv_slots, first, n = np.unique(item_slot, return_index=True, return_counts=True)
    n_inv = len(inv_slots)
    customer = order_lines["_customer"].to_numpy()[take][first]
    checkout = order_lines["_ts"].to_numpy()[take][first].astype(float)
    guest = customer < 0
    ip = np.where(guest, np.array(random_ips(n_inv, rng), dtype=object), ip_of_customer[np.maximum(customer, 0)])
    agent = np.where(guest, _pick(BROWSERS, n_inv, rng), agent_of_customer[np.maximum(customer, 0)])
    duration = 60 + n * rng.uniform(30, 120, n_inv)
    start = checkout - duration
    landing_group = np.where(guest, rng.integers(0, N_GROUPS, n_inv), groups_of_row[item_rows[first]])
    category = np.array(["/category/" + group_slug(g) for g in range(N_GROUPS)], dtype=object)
    landing_path = np.where(rng.random(n_inv) < 0.5, "/", category[landing_group]).astype(object)
    parts.append(
        _frame(
            start,
            ip,
            "GET",
            landing_path,
            200,
            _page_bytes(n_inv, rng, 18_000),
            _pick(EXTERNAL_REFERRERS, n_inv, rng),
            agent,
        )
    )

    pos = np.repeat(np.arange(n_inv), n)
    j = np.arange(len(take)) - first[pos]
    n_l = n[pos]
    view_t = start[pos] + duration[pos] * (2 * j + 1) / (2 * n_l + 2)
    add_t = start[pos] + duration[pos] * (2 * j + 2) / (2 * n_l + 2) - 1.0
    item_path = code_path[item_rows]
    prev_path = np.where(j == 0, landing_path[pos], np.roll(item_path, 1))
    not_modified = rng.random(len(take)) < 0.08
    parts.append(
        _frame(
            view_t,
            ip[pos],
            "GET",
            item_path,
            np.where(not_modified, 304, 200),
            np.where(not_modified, -1, _page_bytes(len(take), rng)),
            SITE + prev_path,
            agent[pos],
        )
    )
    parts.append(
        _frame(add_t, ip[pos], "POST", "/cart/add", 200, rng.integers(90, 420, len(take)), SITE + item_path, agent[pos])
    )
    parts.append(_frame(checkout, ip, "POST", "/checkout", 302, rng.integers(180, 260, n_inv), SITE + "/cart", agent))

    extra = rng.poisson(0.5, n_inv)
    extra_pos = np.repeat(np.arange(n_inv), extra)
    popularity = products["popularity"].to_numpy()[real_rows]
    extra_rows = real_rows[rng.choice(len(real_rows), size=len(extra_pos), p=popularity / popularity.sum())]
    extra_t = start[extra_pos] + duration[extra_pos] * rng.random(len(extra_pos))
    parts.append(
        _frame(
            extra_t,
            ip[extra_pos],
            "GET",
            code_path[extra_rows],
            200,
            _page_bytes(len(extra_pos), rng),
            SITE + "/search",
            agent[extra_pos],
        )
    )

    # --- cancellations: the customer cancels from the account page at the cancellation invoice's time
    cancel_idx = np.flatnonzero(is_cancel & (line_no == 0))
    c_customer = np.maximum(order_lines["_customer"].to_numpy()[cancel_idx], 0)
    parts.append(
        _frame(
            order_lines["_ts"].to_numpy()[cancel_idx].astype(float),
            ip_of_customer[c_customer],
            "POST",
            "/account/orders/cancel",
            302,
            rng.integers(180, 260, len(cancel_idx)),
            SITE + "/account/orders",
            agent_of_customer[c_customer],
        )
    )

    human = sum(len(p["t"]) for p in parts)
    # --- bots crawl at any hour
    n_bots = round(BOT_SHARE * human)
    bot_kind = rng.choice(len(BOTS), size=n_bots, p=[b[2] for b in BOTS])
    bot_t = rng.uniform(period.start, period.end, n_bots)
    bot_ip = np.array(
        [
            BOTS[k][1] + str(int(x)) if BOTS[k][1] else ip_str
            for k, x, ip_str in zip(bot_kind, rng.integers(1, 250, n_bots), random_ips(n_bots, rng, 0.0), strict=True)
        ],
        dtype=object,
    )
    roll = rng.random(n_bots)
    bot_path = np.where(
        roll < 0.8,
        code_path[real_rows[rng.integers(0, len(real_rows), n_bots)]],
        np.where(roll < 0.9, "/robots.txt", "/sitemap.xml"),
    ).astype(object)
    bot_path = np.where(bot_kind == 2, np.where(roll < 0.5, "/", "/api/health"), bot_path).astype(object)
    bot_304 = (bot_kind == 0) & (rng.random(n_bots) < 0.1)
    parts.append(
        _frame(
            bot_t,
            bot_ip,
            "GET",
            bot_path,
            np.where(bot_304, 304, 200),
            np.where(bot_304, -1, _page_bytes(n_bots, rng, 12_000)),
            "-",
            np.array([b[0] for b in BOTS], dtype=object)[bot_kind],
        )
    )

    # --- random 404s (scanners, stale links), in the human rhythm
    n_404 = max(1, round(NOT_FOUND_SHARE * human))
    nf_t = sample_times(n_404, period, [], rng) + rng.random(n_404)
    stale = rng.random(n_404) < 0.4
    nf_path = np.where(
        stale,
        np.array([f"/product/{x}Z" for x in rng.integers(10000, 99999, n_404)], dtype=object),
        _pick(NOT_FOUND_PATHS, n_404, rng),
    ).astype(object)
    parts.append(
        _frame(
            nf_t,
            np.array(random_ips(n_404, rng), dtype=object),
            "GET",
            nf_path,
            404,
            rng.integers(196, 240, n_404),
            "-",
            np.where(stale, _pick(BROWSERS, n_404, rng), "python-requests/2.32.3").astype(object),
        )
    )

    # --- 5xx bursts: a path fails for a few minutes
    burst_start = sample_times(n_bursts, period, [], rng)
    bursts = []
    for k in range(n_bursts):
        minutes = int(rng.integers(2, 11))
        method, path = BURST_PATHS[int(rng.integers(len(BURST_PATHS)))]
        status = int(rng.choice([500, 502, 503]))
        b_start = int(burst_start[k]) - int(burst_start[k]) % 60
        b_end = b_start + 60 * minutes
        requests = int(minutes * rng.integers(5, 13))
        t = np.sort(rng.uniform(b_start, b_end, requests))
        parts.append(
            _frame(
                t,
                np.array(random_ips(requests, rng), dtype=object),
                method,
                path,
                status,
                rng.integers(300, 600, requests),
                SITE + "/",
                _pick(BROWSERS, requests, rng),
            )
        )
        bursts.append(
            {
                "start": str(iso_seconds(np.array([b_start]))[0]),
                "end": str(iso_seconds(np.array([b_end]))[0]),
                "path": path,
                "method": method,
                "status": status,
                "requests": requests,
            }
        )
    bursts.sort(key=lambda b: b["start"])

    events = {col: np.concatenate([p[col] for p in parts]) for col in COLUMNS}
    order = np.argsort(events["t"], kind="stable")
    return {col: values[order] for col, values in events.items()}, bursts


def write_access_log(events: dict[str, np.ndarray], path: Path, progress: bool = True) -> int:
    """Write ``events`` as Apache combined-format lines (``[10/Oct/2000:13:55:36 +0000]``); returns the line count."""
    seconds = np.floor(events["t"]).astype(np.int64)
    day = seconds // 86_400
    first_day = int(day.min()) if len(day) else 0
    day_text = {}
    for d in np.unique(day):
        ts = pd.Timestamp(int(d) * 86_400, unit="s")
        day_text[int(d)] = f"{ts.day:02d}/{MONTHS[ts.month - 1]}/{ts.year}"
    day_list = [day_text.get(first_day + i, "") for i in range(int(day.max()) - first_day + 1)] if len(day) else []
    hms = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
    size_text = np.where(events["bytes"] < 0, "-", events["bytes"].astype(str)).astype(object)
    columns = [
        events["ip"],
        (day - first_day),
        seconds % 86_400,
        events["method"],
        events["path"],
        events["status"],
        size_text,
        events["referrer"],
        events["agent"],
    ]
    chunk = 200_000
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for lo in tqdm(
            range(0, len(seconds), chunk), desc="access.log", unit="chunk", disable=not progress, leave=False
        ):
            rows = zip(*(c[lo : lo + chunk].tolist() for c in columns), strict=True)
            out.write(
                "".join(
                    f'{ip} - - [{day_list[d]}:{hms[s]} +0000] "{m} {p} HTTP/1.1" {st} {b} "{r}" "{a}"\n'
                    for ip, d, s, m, p, st, b, r, a in rows
                )
            )
    return len(seconds)
