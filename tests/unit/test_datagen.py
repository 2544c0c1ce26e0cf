"""The synthetic shop: determinism, schema, manifest counts, ground truth (taste groups, incidents), access log."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shoplake import datagen
from shoplake.errors import DataError
from shoplake.retail import EVENT_COLUMNS

LOG_LINE = re.compile(
    r"^(?P<ip>[0-9a-f.:]+) - - \[(?P<ts>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} \+0000)\] "
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.1" (?P<status>\d{3}) (?P<bytes>\d+|-) "(?P<ref>[^"]*)" "(?P<agent>[^"]*)"$'
)
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _access_log(dataset: datagen.Dataset) -> pd.DataFrame:
    rows = []
    for line in dataset.access_log_path.read_text(encoding="utf-8").splitlines():
        match = LOG_LINE.match(line)
        assert match, f"access log line does not parse: {line!r}"
        rows.append(match.groupdict())
    frame = pd.DataFrame(rows)
    frame["ts"] = pd.to_datetime(frame["ts"], format="%d/%b/%Y:%H:%M:%S %z", utc=True)
    frame["status"] = frame["status"].astype(int)
    return frame


def test_same_seed_gives_same_bytes_and_another_seed_differs(tmp_path):
    first = datagen.generate("tiny", 7, out_dir=tmp_path / "a", progress=False)
    second = datagen.generate("tiny", 7, out_dir=tmp_path / "b", progress=False)
    other = datagen.generate("tiny", 8, out_dir=tmp_path / "c", progress=False)
    names = sorted(p.name for p in first.dir.iterdir())
    assert names == sorted(p.name for p in second.dir.iterdir())
    assert {
        "order_lines.parquet",
        "order_lines.csv",
        "products.parquet",
        "customers.parquet",
        "incidents.json",
        "access.log",
        "weblog_incidents.json",
        "manifest.json",
    } <= set(names)
    for name in names:
        assert _sha(first.dir / name) == _sha(second.dir / name), f"{name} differs between two runs with seed 7"
    assert _sha(first.dir / "order_lines.parquet") != _sha(other.dir / "order_lines.parquet")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_manifest_counts_match_the_files(tiny_dataset):
    ds = tiny_dataset
    counts = ds.manifest["counts"]
    lines = ds.order_lines
    is_cancel = lines["InvoiceNo"].str.startswith("C")
    assert counts["order_lines"] == len(lines)
    assert counts["invoices"] == lines["InvoiceNo"].nunique()
    assert counts["orders"] == lines.loc[~is_cancel, "InvoiceNo"].nunique()
    assert counts["cancellations"] == int(is_cancel.sum())
    assert counts["missing_customer"] == int(lines["CustomerID"].isna().sum())
    assert counts["customers"] == len(ds.customers)
    assert counts["products"] == int(ds.products["is_product"].sum())
    assert counts["incidents"] == len(ds.incidents) == 4
    assert counts["access_log_lines"] == len(ds.access_log_path.read_text().splitlines())
    for name, entry in ds.manifest["files"].items():
        assert _sha(ds.dir / name) == entry["sha256"], name
    assert ds.manifest["time_range"] == {"start": lines["InvoiceDate"].iloc[0], "end": lines["InvoiceDate"].iloc[-1]}
    # sizes of scale tiny, and the shares the spec asks for
    assert 1_600 <= counts["order_lines"] <= 2_400
    assert counts["customers"] == 150 and counts["products"] == 200
    assert 0.01 <= counts["cancellations"] / counts["order_lines"] <= 0.035
    assert 0.05 <= counts["missing_customer"] / counts["order_lines"] <= 0.12
    assert 1.5 <= counts["access_log_lines"] / counts["order_lines"] <= 3.0


def test_order_lines_follow_the_event_schema(tiny_dataset):
    lines = tiny_dataset.order_lines
    assert list(lines.columns) == EVENT_COLUMNS
    assert lines["Quantity"].dtype == np.int64 and lines["LineNo"].dtype == np.int64
    assert lines["InvoiceDate"].map(lambda s: bool(ISO.match(s))).all()
    assert (lines["UnitPrice"].round(2) == lines["UnitPrice"]).all()
    assert not lines.duplicated(["InvoiceNo", "LineNo"]).any()
    ordered = lines.sort_values(["InvoiceDate", "InvoiceNo", "LineNo"], kind="stable")
    assert (ordered.index == lines.index).all(), "order lines must be sorted by InvoiceDate, InvoiceNo, LineNo"
    # LineNo is 0..n-1 within each invoice; an invoice has one time, one customer, one country
    per_invoice = lines.groupby("InvoiceNo")
    assert (per_invoice["LineNo"].max() + 1 == per_invoice.size()).all()
    assert (per_invoice["InvoiceDate"].nunique() == 1).all()
    assert (per_invoice["Country"].nunique() == 1).all()
    assert (per_invoice.size() > 1).mean() > 0.5, "most invoices have several lines"
    is_cancel = lines["InvoiceNo"].str.startswith("C")
    assert (lines.loc[is_cancel, "Quantity"] < 0).all() and (lines.loc[~is_cancel, "Quantity"] > 0).all()
    assert lines["InvoiceNo"].str.fullmatch(r"C?\d{6}").all()
    # repeat customers
    orders_per_customer = lines[~is_cancel].groupby("CustomerID")["InvoiceNo"].nunique()
    assert (orders_per_customer >= 2).mean() > 0.4
    # the country mix is dominated by the United Kingdom, as in the real file
    assert (lines["Country"] == "United Kingdom").mean() > 0.7


def test_order_events_are_json_ready(tiny_dataset):
    events = tiny_dataset.order_events()
    assert len(events) == tiny_dataset.manifest["counts"]["order_lines"]
    assert list(events[0]) == EVENT_COLUMNS
    json.dumps(events)  # plain types only
    guests = [e for e in events if e["CustomerID"] is None]
    assert len(guests) == tiny_dataset.manifest["counts"]["missing_customer"]
    assert all(isinstance(e["Quantity"], int) and isinstance(e["CustomerID"], (str, type(None))) for e in events)


def test_cancellations_take_back_earlier_lines_of_the_same_customer(tiny_dataset):
    lines = tiny_dataset.order_lines
    is_cancel = lines["InvoiceNo"].str.startswith("C")
    cancels = lines[is_cancel]
    orders = lines[~is_cancel]
    assert len(cancels) > 0 and cancels["CustomerID"].notna().all()
    for _, line in cancels.iterrows():
        earlier = orders[
            (orders["CustomerID"] == line["CustomerID"])
            & (orders["StockCode"] == line["StockCode"])
            & (orders["InvoiceDate"] < line["InvoiceDate"])
        ]
        assert len(earlier), f"cancellation {line['InvoiceNo']} refers to no earlier order line"
        assert (earlier["Quantity"] >= -line["Quantity"]).any()


def test_catalogue_codes_and_non_product_lines(tiny_dataset):
    products = tiny_dataset.products
    assert list(products.columns) == ["StockCode", "Description", "UnitPrice", "taste_group", "is_product"]
    assert products["StockCode"].is_unique and products["Description"].is_unique
    real = products[products["is_product"]]
    assert real["StockCode"].str.fullmatch(r"\d{5}[A-C]?").all()
    assert real["StockCode"].str.fullmatch(r"\d{5}[A-C]").any(), "variant codes like 85123A exist"
    assert (real["UnitPrice"] > 0).all()
    assert real["taste_group"].between(0, 7).all() and real["taste_group"].nunique() == 8
    special = products[~products["is_product"]].set_index("StockCode")
    assert set(special.index) == {"POST", "DOT", "M", "BANK CHARGES"}
    assert (special["taste_group"] == -1).all()
    lines = tiny_dataset.order_lines
    post = lines[lines["StockCode"] == "POST"]
    dot = lines[lines["StockCode"] == "DOT"]
    assert len(post) and (post["Country"] != "United Kingdom").all(), "postage is charged abroad"
    assert len(dot) and dot["CustomerID"].isna().all(), "dotcom postage goes with guest orders"


def test_taste_groups_are_strong_ground_truth(tiny_dataset):
    """A customer buys mostly from its own taste group: the structure the recommender must find."""
    customers = tiny_dataset.customers
    assert list(customers.columns) == ["CustomerID", "Country", "taste_group", "ip"]
    assert customers["taste_group"].nunique() == 8
    group_of_product = tiny_dataset.products.set_index("StockCode")["taste_group"]
    group_of_customer = customers.set_index("CustomerID")["taste_group"]
    lines = tiny_dataset.order_lines
    bought = lines[lines["CustomerID"].notna() & ~lines["InvoiceNo"].str.startswith("C")]
    bought = bought[bought["StockCode"].map(group_of_product) >= 0]
    own = bought["StockCode"].map(group_of_product).to_numpy() == bought["CustomerID"].map(group_of_customer).to_numpy()
    assert own.mean() > 0.65, f"only {own.mean():.0%} of purchases come from the customer's own group"
    per_customer = pd.Series(own).groupby(bought["CustomerID"].to_numpy()).mean()
    assert per_customer.median() > 0.6


def test_implicit_als_recovers_the_taste_groups(tiny_dataset):
    """An implicit-feedback ALS trained on tiny recommends mostly from the customer's own group (chance: 1/8)."""
    sp = pytest.importorskip("scipy.sparse")
    als_module = pytest.importorskip("implicit.als")
    lines = tiny_dataset.order_lines
    group_of_product = tiny_dataset.products.set_index("StockCode")["taste_group"]
    bought = lines[lines["CustomerID"].notna() & ~lines["InvoiceNo"].str.startswith("C")]
    bought = bought[bought["StockCode"].map(group_of_product) >= 0]
    users = bought["CustomerID"].astype("category")
    items = bought["StockCode"].astype("category")
    matrix = sp.csr_matrix((np.ones(len(bought)), (users.cat.codes, items.cat.codes)))
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit is multithreaded itself; BLAS threads only fight it
        model = als_module.AlternatingLeastSquares(factors=16, iterations=15, regularization=0.05, random_state=0)
        model.fit(matrix * 10, show_progress=False)
    recommended, _ = model.recommend(np.arange(matrix.shape[0]), matrix, N=10, filter_already_liked_items=True)
    user_group = tiny_dataset.customers.set_index("CustomerID")["taste_group"].reindex(users.cat.categories).to_numpy()
    item_group = group_of_product.reindex(items.cat.categories).to_numpy()
    share = (item_group[recommended] == user_group[:, None]).mean()
    assert share > 0.35, f"ALS recommends only {share:.0%} from the customer's own taste group"


def test_rate_profile_has_daily_and_weekly_rhythm_and_incidents():
    week = pd.date_range("2011-01-03", periods=7 * 24 * 60, freq="min", tz="UTC")  # Monday 00:00, one week
    profile = datagen.rate_profile(week)
    assert profile.mean() == pytest.approx(1.0, rel=1e-3)
    by_hour = pd.Series(profile).groupby(week.hour).mean()
    assert by_hour.loc[3] < 0.1 * by_hour.loc[12], "nights are quiet, middays busy"
    by_day = pd.Series(profile).groupby(week.day_of_week).mean()
    assert by_day.loc[5] < 0.6 * by_day.loc[2], "Saturday is quieter than Wednesday"
    incidents = [
        {"start": "2011-01-05T10:00:00Z", "end": "2011-01-05T10:30:00Z", "multiplier": 4.0},
        {"start": "2011-01-06T11:00:00Z", "end": "2011-01-06T11:20:00Z", "multiplier": 0.05},
    ]
    with_incidents = datagen.rate_profile(week, incidents)
    ratio = with_incidents / profile
    surge = (week >= pd.Timestamp("2011-01-05T10:00Z")) & (week < pd.Timestamp("2011-01-05T10:30Z"))
    outage = (week >= pd.Timestamp("2011-01-06T11:00Z")) & (week < pd.Timestamp("2011-01-06T11:20Z"))
    assert np.allclose(ratio[surge], 4.0) and np.allclose(ratio[outage], 0.05)
    assert np.allclose(ratio[~surge & ~outage], 1.0)
    naive = datagen.rate_profile(pd.DatetimeIndex(week.tz_localize(None)))
    assert np.allclose(naive, profile), "naive timestamps are taken as UTC"


def test_incidents_are_in_business_hours_and_well_formed(tiny_dataset):
    incidents = tiny_dataset.incidents
    assert list(incidents.columns) == ["incident_id", "kind", "start", "end", "multiplier"]
    minutes = (incidents["end"] - incidents["start"]).dt.total_seconds() / 60
    assert minutes.between(20, 90).all()
    assert set(incidents["kind"]) <= {"surge", "outage"}
    surges = incidents[incidents["kind"] == "surge"]
    assert surges["multiplier"].between(3, 6).all()
    assert (incidents.loc[incidents["kind"] == "outage", "multiplier"] == 0.05).all()
    raw = json.loads((tiny_dataset.dir / "incidents.json").read_text())
    assert all(ISO.match(i["start"]) and ISO.match(i["end"]) for i in raw)


@pytest.mark.slow
def test_incidents_are_visible_in_the_order_rate_at_scale_small():
    """Inside a surge the order rate is far above the same clock window on other weekdays; inside an outage far below."""
    ds = datagen.load(scale="small", seed=42, progress=False)
    invoices = ds.order_lines.drop_duplicates("InvoiceNo")
    ts = pd.to_datetime(invoices["InvoiceDate"], utc=True)
    weekday = ts.dt.day_of_week < 5
    clock = ts.dt.hour * 60 + ts.dt.minute
    n_weekdays = ts[weekday].dt.date.nunique()
    kinds = set()
    for incident in ds.incidents.itertuples():
        inside = int(((ts >= incident.start) & (ts < incident.end)).sum())
        begin = incident.start.hour * 60 + incident.start.minute
        length = (incident.end - incident.start).total_seconds() / 60
        same_window = int((weekday & (clock >= begin) & (clock < begin + length)).sum())
        usual = (same_window - inside) / (n_weekdays - 1)
        assert usual > 3, "incidents sit in busy hours"
        if incident.kind == "surge":
            assert inside > 2.0 * usual, f"surge {incident.incident_id}: {inside} orders vs usual {usual:.1f}"
        else:
            assert inside < 0.3 * usual, f"outage {incident.incident_id}: {inside} orders vs usual {usual:.1f}"
        kinds.add(incident.kind)
    assert kinds == {"surge", "outage"}


def test_access_log_parses_is_chronological_and_matches_the_orders(tiny_dataset):
    log = _access_log(tiny_dataset)
    assert log["ts"].is_monotonic_increasing
    lines = tiny_dataset.order_lines
    orders = lines[~lines["InvoiceNo"].str.startswith("C")].drop_duplicates("InvoiceNo")
    checkouts = log[(log["method"] == "POST") & (log["path"] == "/checkout") & (log["status"] == 302)]
    assert len(checkouts) == len(orders)
    assert sorted(checkouts["ts"]) == sorted(pd.to_datetime(orders["InvoiceDate"], utc=True))
    # every bought product was viewed and added to a cart
    viewed = set(log.loc[log["path"].str.startswith("/product/"), "path"].str.removeprefix("/product/"))
    products = set(tiny_dataset.products.loc[tiny_dataset.products["is_product"], "StockCode"])
    bought = set(lines.loc[lines["StockCode"].isin(products), "StockCode"])
    assert bought <= viewed
    ordered_items = lines[~lines["InvoiceNo"].str.startswith("C") & lines["StockCode"].isin(products)]
    assert ((log["path"] == "/cart/add") & (log["status"] == 200)).sum() == len(ordered_items)
    agents = log["agent"]
    assert agents.str.contains("Googlebot").any() and agents.str.contains("bingbot").any()
    assert agents.str.startswith("curl/").any()
    assert (log["status"] == 404).sum() > 0
    assert (log.loc[log["bytes"] == "-", "status"] == 304).all() and (log["status"] == 304).any()
    assert log["ip"].str.contains(":").any() and (~log["ip"].str.contains(":")).mean() > 0.8
    assert (log["ref"] != "-").any()


def test_5xx_bursts_are_recorded(tiny_dataset):
    log = _access_log(tiny_dataset)
    bursts = tiny_dataset.weblog_incidents
    assert len(bursts) == tiny_dataset.manifest["counts"]["weblog_incidents"] == 2
    errors = log[log["status"] >= 500]
    assert len(errors) == bursts["requests"].sum()
    for burst in bursts.itertuples():
        inside = errors[(errors["ts"] >= burst.start) & (errors["ts"] < burst.end) & (errors["path"] == burst.path)]
        assert len(inside) == burst.requests
        assert (inside["status"] == burst.status).all()


def test_csv_export_reads_back_with_the_retail_loader(tiny_dataset):
    from shoplake.retail import load_retail

    events, report = load_retail(tiny_dataset.order_lines_csv_path)
    counts = tiny_dataset.manifest["counts"]
    assert report["rejected"] == 0
    assert report["line_items"] == counts["order_lines"]
    assert report["orders"] == counts["orders"]
    assert report["cancellations"] == counts["cancellations"]
    assert report["missing_customer"] == counts["missing_customer"]
    original = tiny_dataset.order_lines
    assert (events["InvoiceNo"].to_numpy() == original["InvoiceNo"].to_numpy()).all()
    assert (events["LineNo"].to_numpy() == original["LineNo"].to_numpy()).all()
    assert np.allclose(events["UnitPrice"], original["UnitPrice"])
    assert (events["InvoiceDate"].str[:16] == original["InvoiceDate"].str[:16]).all(), "CSV keeps minutes"


def test_load_generates_once_even_when_processes_race(tmp_path):
    """Two processes load the same missing dataset at once: both get it, one folder, nothing half-written."""
    env = {**os.environ, "SHOPLAKE_DATA_DIR": str(tmp_path)}
    code = (
        "from shoplake import datagen; d = datagen.load(scale='tiny', seed=11, progress=False); "
        "print(d.manifest['files']['order_lines.parquet']['sha256'])"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    assert outs[0][0] == outs[1][0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-s11"]


def test_load_regenerates_a_dataset_made_by_other_code(tmp_path, monkeypatch):
    monkeypatch.setenv("SHOPLAKE_DATA_DIR", str(tmp_path))
    first = datagen.load(scale="tiny", seed=3, progress=False)
    assert datagen.load(scale="tiny", seed=3).dir == first.dir
    manifest = json.loads((first.dir / "manifest.json").read_text())
    manifest["code"] = "stale"
    (first.dir / "manifest.json").write_text(json.dumps(manifest))
    again = datagen.load(scale="tiny", seed=3, progress=False)
    assert again.manifest["code"] != "stale"
    assert again.manifest["files"] == {k: v for k, v in manifest["files"].items()}


def test_bad_parameters_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match="scale must be one of"):
        datagen.generate("huge", 1, out_dir=tmp_path / "x")
    with pytest.raises(DataError, match="seed must be"):
        datagen.generate("tiny", -1, out_dir=tmp_path / "x")
    with pytest.raises(DataError, match="not a shoplake dataset"):
        datagen.Dataset(tmp_path)


def test_cli_generate_prints_the_manifest(tmp_path):
    from click.testing import CliRunner

    from shoplake.cli import cli

    result = CliRunner().invoke(
        cli, ["data", "generate", "--scale", "tiny", "--seed", "5", "--out-dir", str(tmp_path / "t5"), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["scale"] == "tiny" and payload["seed"] == 5
    assert payload["counts"]["order_lines"] == len(pd.read_parquet(tmp_path / "t5" / "order_lines.parquet"))
