"""The Runs page's Deploy tab in a real browser at 1024×768 (issue 20): the build button's and the
download buttons' labels were cut ("Rebuild the…", "Compact file (.safet…"), and the size chart's log
axis was crowded with its bar labels on top of each other. Needs Chromium and playwright, as
tests/test_browser.py; skips, saying which is missing, without them."""

from __future__ import annotations

import json

from tests.app_server import ROOT, launch_page, needs_browser, serve
from tests.test_browser import CLIPPED_JS, TICKS_JS, settle

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = needs_browser(sync_playwright)

# Buttons of the main column with any part of their label cut (CSS ellipsis: the text element is
# wider than its box), whatever element inside the button holds the text.
CUT_BUTTONS_JS = """() => [...document.querySelectorAll('[data-testid="stMain"] button')]
  .filter(b => b.getBoundingClientRect().width > 0 && b.innerText.trim())
  .filter(b => [b, ...b.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1))
  .map(b => b.innerText.trim().slice(0, 60))"""

# The size chart: its bar labels whose boxes intersect, the smallest label's height (plotly shrinks a
# label that does not fit its bar), and its numeric tick labels.
SIZE_CHART_JS = """() => {
  const chart = [...document.querySelectorAll('.js-plotly-plot')].find(c => c.textContent.includes('File size'));
  const boxes = [...chart.querySelectorAll('.bartext')]
    .map(e => [e.textContent, e.getBoundingClientRect()]).filter(([t, r]) => t && r.width > 0);
  const ticks = [...chart.querySelectorAll('.xtick text, .ytick text')].map(e => e.textContent)
    .filter(t => /^[0-9.,]+( KB)?$/.test(t));
  const out = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [a, r] = boxes[i], [b, s] = boxes[j];
    if (r.left < s.right - 1 && s.left < r.right - 1 && r.top < s.bottom - 1 && s.top < r.bottom - 1)
      out.push(a + ' / ' + b);
  }
  return {n: boxes.length, out, smallest: Math.min(...boxes.map(([t, r]) => r.height)), ticks} }"""


def test_deploy_tab_reads_at_1024_px(tmp_path):
    from engine import deploy as dp
    from engine.store import Store
    from tests.app_stores import _real
    home = tmp_path / "home"
    store = Store(home)
    rid = _real(store, ROOT / "cache" / "data", model="lenet300", dataset="digits", method="imp", rounds=1,
                epochs=1, batch_size=128)
    out = store.run_dir(rid) / "deploy"
    dp.deploy(store, rid, out)                                      # what the tab's build button writes
    # the sizes of the issue's LeNet-300-100 on MNIST at 5 % remaining (longer labels than digits')
    rep = json.loads((out / "deploy.json").read_text())
    rep["sizes"] = {"dense_fp32": 1_066_904, "dense_fp32_zip": 986_381, "sparse_fp32": 104_871,
                    "sparse_fp32_zip": 97_200, "sparse_fp16": 52_531, "sparse_fp16_zip": 48_410}
    (out / "deploy.json").write_text(json.dumps(rep))
    with serve(home, env={"LOTTERY_MAX_RUNS": "0"}, timeout=60) as url, sync_playwright() as p:
        browser, page = launch_page(p, 1024, 768)
        try:
            page.goto(f"{url}/runs?runs={rid}")
            page.wait_for_selector("h1")
            page.get_by_role("tab", name="🚀 Deploy").click()
            page.get_by_role("button", name="Rebuild").wait_for()
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg .bartext').length >= 6")
            settle(page)
            chart = page.locator(".js-plotly-plot", has_text="File size")
            chart.scroll_into_view_if_needed()
            chart.screenshot(path=str(tmp_path / "deploy-sizes-1024.png"))
            page.screenshot(path=str(tmp_path / "deploy-1024.png"))
            clipped = [t for t in page.evaluate(CLIPPED_JS) if t] + page.evaluate(CUT_BUTTONS_JS)
            assert clipped == [], clipped
            assert page.evaluate(TICKS_JS) == {"bad": [], "titles": []}
            bars = page.evaluate(SIZE_CHART_JS)
            assert bars["n"] == 6 and bars["out"] == [] and bars["smallest"] >= 11, bars
            assert len(bars["ticks"]) <= 4, bars["ticks"]         # a few labelled decades, not 2, 3, … 9
        finally:
            browser.close()
