"""The HTML reports of a workbook run, opened offline in real headless Chromium: every figure draws something."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

# a plotly figure that drew: its traces have marks (bar, line and marker paths with a real outline, heatmap images)
DRAWN = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).map((plot, i) => {
  const shapes = Array.from(plot.querySelectorAll('.trace path')).filter(
    (p) => (p.getAttribute('d') || '').length > 8);
  const images = plot.querySelectorAll('.trace image, .hm image');
  const title = plot.querySelector('.gtitle');
  return {index: i, title: title ? title.textContent : '', marks: shapes.length + images.length};
})
"""


def test_every_report_figure_renders_offline(workbook_run, workbook_dir, chromium):
    from playwright.sync_api import sync_playwright

    reports = workbook_dir / "reports"
    pages = sorted(reports.glob("*.html"))
    assert len(pages) == len(workbook_run), f"one report per notebook: {[p.name for p in pages]}"
    blank: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(**chromium)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            # offline: anything that is not the report's own folder is refused (a CDN fetch would fail here)
            context.route(
                "**/*", lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort()
            )
            for path in pages:
                page = context.new_page()
                page.goto(path.as_uri(), wait_until="load")
                page.wait_for_timeout(500)
                for figure in page.evaluate(DRAWN):
                    if figure["marks"] == 0:
                        blank.append(f"{path.stem} figure {figure['index']} ({figure['title']!r})")
                page.close()
        finally:
            browser.close()
    assert not blank, "figures that drew nothing offline:\n" + "\n".join(blank)
