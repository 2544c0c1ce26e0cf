"""The UCI Online Retail loader on the committed sample (hand-counted), UTF-8/Latin-1, .xlsx, errors, CLI."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
from order_line import ORDER_LINE

from shoplake import config
from shoplake.errors import DataError
from shoplake.retail import HEADER, load_retail

SAMPLE = config.REPO_ROOT / "data" / "samples" / "online_retail_sample.csv"

# Counted by hand in data/samples/online_retail_sample.csv (39 data rows and one blank line):
#   rejected: 2 wrong field count (537201 ×2), non-numeric Quantity ("six"), non-numeric UnitPrice ("£2.10"),
#             2 bad InvoiceDate ("31/12/2010 25:61" and empty), missing InvoiceNo, missing StockCode,
#             non-integer Quantity (2.5) → 9
#   parsed 30; cancellations C536379, C536383, C536391 ×2, C537206, C537207 → 6 lines;
#   orders 536365 536366 536367 536370 536414 536544 536569 537149 537200 537204 537205 → 11;
#   without CustomerID: 536414, 536544 ×2, 537149, C537207 → 5.
EXPECTED = {
    "rows": 39,
    "line_items": 30,
    "orders": 11,
    "cancellations": 6,
    "missing_customer": 5,
    "rejected": 9,
    "rejected_by_reason": {
        "bad InvoiceDate": 2,
        "missing InvoiceNo": 1,
        "missing StockCode": 1,
        "non-integer Quantity": 1,
        "non-numeric Quantity": 1,
        "non-numeric UnitPrice": 1,
        "wrong field count": 2,
    },
}


def _subset(report: dict) -> dict:
    return {k: report[k] for k in EXPECTED}


def test_sample_counts_match_the_hand_count():
    events, report = load_retail(SAMPLE)
    assert _subset(report) == EXPECTED
    assert report["encoding"] == "latin-1" and report["format"] == "csv"
    assert len(events) == report["line_items"]
    assert list(events.columns) == HEADER + ["LineNo"]
    assert report["blank_lines"] == 1


def test_sample_values_are_parsed_into_the_event_schema():
    events, _ = load_retail(SAMPLE)
    first = events.iloc[0].to_dict()
    assert first == ORDER_LINE  # the sample's first line
    descriptions = set(events["Description"])
    assert 'POPPY\'S PLAYHOUSE BEDROOM, WITH "QUOTES"' in descriptions  # quoted, with comma and quotes
    assert "SET OF 6 SPICE TINS, PANTRY DESIGN" in descriptions
    assert "CRÈME BRÛLÉE DISH SET" in descriptions  # Latin-1
    assert "JAM MAKING SET\nWITH JARS" in descriptions  # a line break inside quotes
    assert not events.duplicated(["InvoiceNo", "LineNo"]).any()
    assert events.groupby("InvoiceNo")["LineNo"].max().loc["536365"] == 6
    # 537204: its first three rows are rejected, so the one parsed line is line 0
    assert events.loc[events["InvoiceNo"] == "537204", "LineNo"].tolist() == [0]
    cancels = events[events["InvoiceNo"].str.startswith("C")]
    assert (cancels["Quantity"] < 0).all()
    assert set(events["StockCode"]) >= {"POST", "DOT", "M", "BANK CHARGES"}
    assert events.loc[events["InvoiceNo"] == "537205", "CustomerID"].tolist() == ["12351"]
    assert events["CustomerID"].isna().sum() == 5


def test_rejected_rows_keep_line_reason_and_text():
    _, report = load_retail(SAMPLE)
    rejects = report["rejects"]
    assert len(rejects) == 9
    wrong = [r for r in rejects if r["reason"] == "wrong field count"]
    # physical lines: the blank line and the two-line description shift the numbering
    assert [r["line"] for r in wrong] == [30, 31]
    assert wrong[1]["raw"] == "537201,22962,JAR, LARGE,6,12/5/2010 13:12,1.45,12347.0,Iceland"
    by_reason = {r["reason"]: r for r in rejects}
    assert "six" in by_reason["non-numeric Quantity"]["raw"]
    assert "£2.10" in by_reason["non-numeric UnitPrice"]["raw"]


def test_utf8_and_latin1_give_the_same_events(tmp_path):
    latin1_events, _ = load_retail(SAMPLE)
    text = SAMPLE.read_bytes().decode("latin-1")
    utf8 = tmp_path / "utf8.csv"
    utf8.write_bytes(text.encode("utf-8"))
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    for path in (utf8, bom):
        events, report = load_retail(path)
        assert report["encoding"] == "utf-8"
        assert _subset(report) == EXPECTED
        pd.testing.assert_frame_equal(events, latin1_events)


def test_xlsx_original_format(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(HEADER)
    when = dt.datetime(2010, 12, 1, 8, 26)
    sheet.append([536365, "85123A", "WHITE HANGING HEART T-LIGHT HOLDER", 6, when, 2.55, 17850.0, "United Kingdom"])
    sheet.append([536365, 71053, "WHITE METAL LANTERN", 6, when, 3.39, 17850.0, "United Kingdom"])
    sheet.append(["C536379", "D", "Discount", -1, dt.datetime(2010, 12, 1, 9, 41), 27.5, 14527.0, "United Kingdom"])
    sheet.append([536414, 22139, None, 56, dt.datetime(2010, 12, 1, 11, 52), 0, None, "United Kingdom"])
    sheet.append([536415, 22140, "BAD QUANTITY", "lots", when, 1.0, 12345.0, "France"])
    sheet.append([536416, 22141, "EXTRA CELL", 1, when, 1.0, 12345.0, "France", "surprise"])
    sheet.append([])
    path = tmp_path / "Online Retail.xlsx"
    workbook.save(path)

    events, report = load_retail(path)
    assert report["format"] == "xlsx"
    assert {
        k: report[k] for k in ("rows", "line_items", "orders", "cancellations", "missing_customer", "rejected")
    } == {"rows": 6, "line_items": 4, "orders": 2, "cancellations": 1, "missing_customer": 1, "rejected": 2}
    assert report["rejected_by_reason"] == {"non-numeric Quantity": 1, "wrong field count": 1}
    assert events["InvoiceNo"].tolist() == ["536365", "536365", "C536379", "536414"]
    assert events["StockCode"].tolist() == ["85123A", "71053", "D", "22139"]
    assert events["CustomerID"].tolist()[:3] == ["17850", "17850", "14527"]
    assert events["InvoiceDate"].iloc[0] == "2010-12-01T08:26:00Z"
    assert events["LineNo"].tolist() == [0, 1, 0, 0]
    assert events["Description"].iloc[3] == ""


def test_missing_file_and_wrong_header_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_retail(tmp_path / "nope.csv")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("Invoice,Stock,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n1,2,3,4,5,6,7,8\n")
    with pytest.raises(DataError, match="wrong header"):
        load_retail(wrong)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_retail(empty)
    broken = tmp_path / "broken.xlsx"
    broken.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .xlsx"):
        load_retail(broken)


def test_cli_load_retail_json():
    from click.testing import CliRunner

    from shoplake.cli import cli

    result = CliRunner().invoke(cli, ["data", "load-retail", str(SAMPLE), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert _subset(payload) == EXPECTED


def test_retail_dataset_folder_for_the_notebooks(tmp_path, monkeypatch):
    from shoplake import datagen

    dataset = datagen.load_retail_dataset(SAMPLE, out_dir=tmp_path / "retail")
    assert not dataset.is_synthetic and dataset.access_log_path is None and dataset.incidents.empty
    assert dataset.manifest["counts"]["order_lines"] == 30 and dataset.manifest["counts"]["rejected"] == 9
    lines = dataset.order_lines
    assert list(lines.columns) == HEADER + ["LineNo"]
    assert lines["InvoiceDate"].is_monotonic_increasing
    products = dataset.products.set_index("StockCode")
    assert not products.loc[["POST", "DOT", "M", "BANK CHARGES", "D"], "is_product"].any()
    assert products.loc[["85123A", "22139"], "is_product"].all()
    assert len(pd.read_csv(dataset.dir / "rejects.csv")) == 9
    # the same file again is not re-read: the folder is reused
    assert datagen.load_retail_dataset(SAMPLE, out_dir=tmp_path / "retail").dir == dataset.dir
    # and datagen.load(retail_file=...) (or SHOPLAKE_RETAIL_FILE) is how notebooks take it
    monkeypatch.setenv("SHOPLAKE_DATA_DIR", str(tmp_path / "data"))
    loaded = datagen.load(retail_file=SAMPLE)
    assert loaded.dir.parent == tmp_path / "data"
    assert loaded.manifest["source_sha256"] == dataset.manifest["source_sha256"]
    monkeypatch.setenv("SHOPLAKE_RETAIL_FILE", str(SAMPLE))
    assert datagen.load(scale="tiny", seed=42).dir == loaded.dir


# --------------------------------------------------------------------------- exports as people publish them

HEAD = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"


def _csv(tmp_path, rows, head=HEAD, name="export.csv", encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes((head + "".join(r + "\n" for r in rows)).encode(encoding))
    return path


@pytest.mark.parametrize(
    ("dates", "order", "ambiguous", "first"),
    [
        (["12/1/2010 8:26", "12/13/2010 9:00"], "month-first", False, "2010-12-01T08:26:00Z"),
        (["1/12/2010 8:26", "13/12/2010 9:00"], "day-first", False, "2010-12-01T08:26:00Z"),
        (["1/12/10 8:26", "25/12/10 9:00"], "day-first", False, "2010-12-01T08:26:00Z"),  # two-digit years
        (["1/12/2010 8:26", "2/12/2010 9:00"], "month-first", True, "2010-01-12T08:26:00Z"),  # all ambiguous
        (["2010-12-01 08:26:00", "2010-12-13 09:00:00"], "month-first", False, "2010-12-01T08:26:00Z"),
    ],
)
def test_auto_date_order_is_decided_per_file(tmp_path, dates, order, ambiguous, first):
    rows = [f"5363{i},85123A,WHITE HANGING HEART,6,{d},2.55,17850,United Kingdom" for i, d in enumerate(dates)]
    events, report = load_retail(_csv(tmp_path, rows))
    assert (report["date_order"], report["date_order_ambiguous"], report["rejected"]) == (order, ambiguous, 0)
    assert events["InvoiceDate"].iloc[0] == first


def test_day_first_forced_and_mixed_orders_rejected(tmp_path):
    rows = ["536365,85123A,X,6,1/12/2010 8:26,2.55,17850,United Kingdom"]
    events, report = load_retail(_csv(tmp_path, rows), date_order="day-first")
    assert events["InvoiceDate"].iloc[0] == "2010-12-01T08:26:00Z" and not report["date_order_ambiguous"]
    mixed = rows + ["536366,85123A,X,6,13/12/2010 8:26,2.55,17850,UK", "536367,85123A,X,6,12/13/2010 8:26,2.55,1,UK"]
    with pytest.raises(DataError, match="mixes day-first .* and month-first"):
        load_retail(_csv(tmp_path, mixed, name="mixed.csv"))
    with pytest.raises(DataError, match="date order must be one of"):
        load_retail(_csv(tmp_path, rows), date_order="sideways")


def test_second_edition_csv_with_bom_and_float_customer_ids(tmp_path):
    head = "\ufeffInvoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
    rows = ["489434,85048,15CM CHRISTMAS GLASS BALL,12,12/01/2009 07:45,6.95,13085.0,United Kingdom"]
    events, report = load_retail(_csv(tmp_path, rows, head=head))
    assert report["edition"] == "II" and report["rejected"] == 0
    assert events.iloc[0]["CustomerID"] == "13085" and events.iloc[0]["InvoiceDate"] == "2009-12-01T07:45:00Z"


def test_second_edition_xlsx_reads_every_sheet(tmp_path):
    import datetime as dt

    import openpyxl

    book = openpyxl.Workbook()
    first = book.active
    first.title = "Year 2009-2010"
    second = book.create_sheet("Year 2010-2011")
    header = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
    first.append(header)
    first.append(["489434", "85048", "BALL", 12, dt.datetime(2009, 12, 1, 7, 45), 6.95, 13085.0, "United Kingdom"])
    second.append(header)
    second.append(["536365", "85123A", "HEART", 6, dt.datetime(2010, 12, 1, 8, 26), 2.55, 17850.0, "United Kingdom"])
    second.append(["536366", "", "NO CODE", 6, dt.datetime(2010, 12, 1, 8, 28), 1.85, 17850.0, "United Kingdom"])
    path = tmp_path / "online_retail_II.xlsx"
    book.save(path)
    events, report = load_retail(path)
    assert list(events["InvoiceNo"]) == ["489434", "536365"] and report["edition"] == "II"
    assert report["rejects"][0]["reason"] == "missing StockCode" and "Year 2010-2011" in report["rejects"][0]["raw"]


def test_values_out_of_range_are_rejected_not_wrapped(tmp_path):
    rows = [
        "536365,85123A,X,6,12/1/2999 8:26,2.55,17850,United Kingdom",
        "536366,85123A,X,99999999999999999999,12/1/2010 8:26,2.55,17850,United Kingdom",
        "536367,85123A,X,1e30,12/1/2010 8:26,2.55,17850,United Kingdom",
        "536368,85123A,X,6,12/1/2010 8:26,1e40,17850,United Kingdom",
        "536369,85123A,X,6,12/1/2010 8:26,2.55,17850,United Kingdom",
    ]
    events, report = load_retail(_csv(tmp_path, rows))
    assert list(events["InvoiceNo"]) == ["536369"]
    assert report["rejected_by_reason"] == {
        "InvoiceDate out of range": 1,
        "Quantity out of range": 2,
        "UnitPrice out of range": 1,
    }


def test_mixed_utf8_and_latin1_lines_both_decode(tmp_path):
    path = tmp_path / "mixed.csv"
    good = "536365,85123A,CAFÉ MUG,6,12/1/2010 8:26,2.55,17850,United Kingdom\n".encode()
    latin = "536366,85123B,CRÈME JAR,6,12/1/2010 8:27,2.55,17850,United Kingdom\n".encode("latin-1")
    path.write_bytes(HEAD.encode() + good + latin)
    events, report = load_retail(path)
    assert list(events["Description"]) == ["CAFÉ MUG", "CRÈME JAR"]
    assert report["encoding"].startswith("mixed")


def test_retail_out_dir_refuses_a_folder_holding_something_else(tmp_path):
    from shoplake.datagen import load_retail_dataset

    sample = config.REPO_ROOT / "data" / "samples" / "online_retail_sample.csv"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        load_retail_dataset(sample, out_dir=other)
    assert (other / "thesis.txt").read_text() == "mine"
    first = load_retail_dataset(sample, out_dir=tmp_path / "ds")
    two = _csv(tmp_path, ["536365,85123A,X,6,12/1/2010 8:26,2.55,17850,United Kingdom"])
    with pytest.raises(DataError, match="already holds another dataset"):
        load_retail_dataset(two, out_dir=first.dir)


def test_generate_refuses_to_replace_a_folder_it_did_not_write(tmp_path):
    from shoplake.datagen import generate

    home = tmp_path / "photos"
    home.mkdir()
    (home / "holiday.jpg").write_bytes(b"\xff\xd8 not a dataset")
    with pytest.raises(DataError, match="holds no shoplake dataset"):
        generate("tiny", 7, out_dir=home, progress=False)
    assert (home / "holiday.jpg").exists()
    dataset = generate("tiny", 7, out_dir=tmp_path / "shop", progress=False)
    again = generate("tiny", 7, out_dir=dataset.dir, progress=False)  # a dataset folder of ours may be replaced
    assert again.manifest["counts"] == dataset.manifest["counts"]
