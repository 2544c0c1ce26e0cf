"""The dashboard page in a real headless browser (Debian's chromium driven by playwright): numbers = index answers."""

from __future__ import annotations

import pytest

from shoplake import config

pytestmark = pytest.mark.slow

SAMPLE = config.REPO_ROOT / "data" / "samples" / "access_tricky.log"
REPORTS = config.REPO_ROOT / "reports"


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@pytest.fixture(scope="module")
def log_index(tiny_dataset):
    from shoplake.weblogs import LocalIndex, parse_file

    index = LocalIndex()
    for source, path in (("tiny", tiny_dataset.access_log_path), ("sample", SAMPLE)):
        result = parse_file(path)
        index.ingest(result.docs, source=source, rejected=[r.as_dict() for r in result.rejected])
    yield index
    index.close()


def test_dashboard_numbers_equal_index_answers(log_index, chromium):
    from playwright.sync_api import sync_playwright

    from shoplake.weblogs import DashboardServer, create_app, snapshot

    expected = {
        "requests": log_index.count(),
        "errors_5xx": log_index.count("status_class:5xx"),
        "bytes": log_index.stats("bytes")["sum"],
        "bots": log_index.count("bot:true"),
        "rejected": log_index.rejected_count(),
    }
    top_paths = log_index.terms("path", size=10)
    spikes = snapshot(log_index).spikes
    assert expected["rejected"] == 10 and expected["errors_5xx"] > 0 and len(spikes) >= 1
    REPORTS.mkdir(exist_ok=True)
    with DashboardServer(create_app(log_index, refresh_s=2.0)) as server, sync_playwright() as pw:
        browser = pw.chromium.launch(**chromium)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1400})
            page.goto(server.url, wait_until="domcontentloaded")
            page.wait_for_function(
                "document.querySelector('#kpi-requests') && document.querySelector('#kpi-requests').innerText !== '…'",
                timeout=30000,
            )
            page.wait_for_function(
                "document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5 && "
                "document.querySelectorAll('#graph-status .bars .point').length > 0",
                timeout=30000,
            )
            shown = {name: _number(page.inner_text(f"#kpi-{name}")) for name in expected}
            assert shown == expected
            rows = page.query_selector_all("#table-paths tr")[1:]
            table = [
                (r.query_selector(".path").inner_text(), int(_number(r.query_selector(".count").inner_text())))
                for r in rows
            ]
            assert table == list(zip(top_paths["key"], top_paths["count"].astype(int), strict=True))
            assert len(page.query_selector_all("#spikes li.spike")) == len(spikes)
            page.screenshot(path=str(REPORTS / "dashboard.png"), full_page=True)

            # the search box: the KPIs follow the query, again as the index answers it
            page.fill("#search", "status:5*")
            page.press("#search", "Enter")
            want = f"{log_index.count('status:5*'):,}"
            page.wait_for_function(f"document.querySelector('#kpi-requests').innerText === '{want}'", timeout=20000)
            assert _number(page.inner_text("#kpi-bytes")) == log_index.stats("bytes", "status:5*")["sum"]
            page.screenshot(path=str(REPORTS / "dashboard-search.png"), full_page=True)
        finally:
            browser.close()
