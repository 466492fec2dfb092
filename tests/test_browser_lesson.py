"""The presentation view in a real browser: `streamlit run` on 127.0.0.1 and headless
Chromium at 1024×768 and 1920×1080, on every Lesson step and on Pixel masks.

Key numbers (metric labels and values) and buttons must lie inside the viewport and must
not be clipped (an element whose scrollWidth exceeds its clientWidth is cut off, e.g. by
an ellipsis: "4 o…", "99.…"); the page must not scroll sideways; the ticket's mask must
be drawn at least 250 px wide. Screenshots of every view land in test-artifacts/ (git
ignores it). The store is empty but for the repository's class pack, as on a fresh server.
One server start; the handout is downloaded once and must hold PNGs."""

from __future__ import annotations

import io
import time
import zipfile

import pytest
from test_browser import ARTIFACTS, settle

from engine.classpack import DEFAULT_PACK
from tests.app_server import CHROMIUM, CHROMIUM_ARGS, needs_browser, serve
from ui import lesson_steps as ls

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = needs_browser(sync_playwright)

SIZES = ((1024, 768), (1920, 1080))

# Every key number and button of the main area: scrolled into view, its box must lie in the
# viewport and neither it nor anything inside it may be wider than the room it has.
CLIPPED_JS = """() => {
  const out = [];
  const main = document.querySelector('[data-testid="stMain"]');
  if (main.scrollWidth > main.clientWidth + 1)
    out.push('main scrolls sideways: ' + main.scrollWidth + ' > ' + main.clientWidth);
  const els = main.querySelectorAll('[data-testid="stMetricValue"], [data-testid="stMetricLabel"], '
                                    + '[data-testid="stBaseButton-primary"], [data-testid="stBaseButton-secondary"], '
                                    + '[data-testid="stPageLink-NavLink"]');
  for (const el of els) {
    if (!el.checkVisibility() || el.closest('details:not([open])')) continue;    // not displayed
    el.scrollIntoView({block: 'center'});
    const r = el.getBoundingClientRect();
    const text = el.innerText.trim().slice(0, 40);
    if (r.left < 0 || r.right > window.innerWidth + 0.5 || r.top < 0 || r.bottom > window.innerHeight + 0.5)
      out.push('outside the viewport: ' + text + ' ' + JSON.stringify([r.left, r.top, r.right, r.bottom]));
    const metric = el.matches('[data-testid="stMetricValue"], [data-testid="stMetricLabel"]');
    if (metric && el.scrollWidth > el.clientWidth + 1)       // text running into its neighbour
      out.push('runs past its column: ' + text + ' (' + el.scrollWidth + ' > ' + el.clientWidth + ')');
    for (const e of [el, ...el.querySelectorAll('*')]) {
      if (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX !== 'visible')
        out.push('clipped: ' + text + ' (' + e.scrollWidth + ' > ' + e.clientWidth + ')');
      if (getComputedStyle(e).textOverflow === 'ellipsis' && e.scrollWidth > e.clientWidth)
        out.push('ellipsis: ' + text);
    }
  }
  return out;
}"""

METRICS_JS = """() => [...document.querySelectorAll('[data-testid="stMetricValue"]')].map(e => e.innerText.trim())"""

# The plot area of the chart whose title starts with "The ticket".
TICKET_PX_JS = """() => { for (const c of document.querySelectorAll('[data-testid="stPlotlyChart"]')) {
    const t = c.querySelector('.gtitle');
    if (t && t.textContent.startsWith('The ticket')) { const r = c.querySelector('.nsewdrag').getBoundingClientRect();
      return [r.width, r.height] } }
  return null }"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An empty store with the repository's class pack: what a class sees on a fresh server."""
    home = tmp_path_factory.mktemp("browser-lesson")
    with serve(home, env={"LOTTERY_MAX_RUNS": "1", "LOTTERY_CLASSPACK": str(DEFAULT_PACK)}, timeout=60) as url:
        yield url, home


def shoot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def check(page, where: str) -> None:
    problems = page.evaluate(CLIPPED_JS)
    assert not problems, f"{where}: {problems}"
    page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollTo(0, 0)")


def test_presentation_view_nothing_cut_off(server):
    url, home = server
    t0 = time.time()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for w, h in SIZES:
                page = browser.new_page(viewport={"width": w, "height": h}, accept_downloads=True)
                page.goto(f"{url}/lesson?step=1&present=1")
                page.wait_for_selector("h1")
                settle(page)
                assert page.locator("[data-testid='stSidebar']").is_hidden()       # the sidebar is hidden
                for i in range(1, len(ls.STEPS) + 1):
                    page.wait_for_selector(f"h2:has-text('{i}. ')")
                    settle(page, quiet=0.5)
                    assert page.locator("[data-testid='stPlotlyChart']").count() >= 1, f"step {i}: no figure"
                    values = page.evaluate(METRICS_JS)
                    assert values and all(v and v != "—" for v in values[:1]), f"step {i}: {values}"
                    check(page, f"step {i} at {w}×{h}")
                    shoot(page, f"lesson-present-step{i}-{w}x{h}")
                    assert "present=1" in page.url and f"step={i}" in page.url
                    if i < len(ls.STEPS):
                        page.get_by_role("button", name="Next →").first.click()
                if w == 1024:      # the handout of the last step: one click, a zip with a PNG and the page
                    page.get_by_text("Handout: this step").click()
                    with page.expect_download(timeout=60_000) as dl:
                        page.get_by_role("button", name="Download the handout").click()
                    z = zipfile.ZipFile(io.BytesIO(open(dl.value.path(), "rb").read()))
                    assert "handout.html" in z.namelist() and any(n.endswith(".png") for n in z.namelist())
                # to Pixel masks by the presentation's own link: the flag follows
                page.locator("[data-testid='stPageLink-NavLink']").get_by_text("Pixel masks").click()
                page.wait_for_selector("h1:has-text('Pixel masks')")
                settle(page)
                assert "present=1" in page.url
                assert page.locator("[data-testid='stSidebar']").is_hidden()
                values = page.evaluate(METRICS_JS)
                assert len(values) == 2 and values[0].isdigit() and values[1].endswith("%"), values
                check(page, f"Pixel masks at {w}×{h}")
                tw, th = page.evaluate(TICKET_PX_JS)
                assert tw >= 250 and th >= 250, (tw, th)
                shoot(page, f"pixels-present-{w}x{h}")
                if w != 1024:       # the normal view below: where the defect was, 1024×768
                    page.close()
                    continue
                # the normal view of Pixel masks: the same checks, with the sidebar
                page.goto(f"{url}/pixels?present=0")
                page.wait_for_selector("h1:has-text('Pixel masks')")
                settle(page)
                assert page.locator("[data-testid='stSidebar']").is_visible()
                check(page, f"Pixel masks (normal view) at {w}×{h}")
                tw, th = page.evaluate(TICKET_PX_JS)
                assert tw >= 250 and th >= 250, (tw, th)      # 107 px before (issue 15)
                shoot(page, f"pixels-{w}x{h}")
                # the normal view of every lesson step and of Theory: four metrics in a row read
                # "1 min 16 s" cut off, Theory's "0 support errors" ran into each other
                for path in [f"lesson?step={i}&present=0" for i in range(1, len(ls.STEPS) + 1)] + ["theory"]:
                    page.goto(f"{url}/{path}")
                    page.wait_for_selector("h1")
                    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1")
                    settle(page, quiet=0.5)
                    check(page, f"{path} (normal view) at {w}×{h}")
                page.close()
        finally:
            browser.close()
    print(f"presentation-view browser test: {time.time() - t0:.1f} s after the server started")


def test_run_it_live_status_figure_and_caption_change_together(tmp_path):
    """Issue 20: the status line said "running (0 %)" for 40–150 s after the run was done while the
    caption already said "From your own finished run". A run of step 1 is queued (the queue is paused,
    so nothing trains); the test marks it done in the store; within 3 s, without a reload, the status
    line is gone and the figure's caption says the student's run."""
    import json

    from engine import runner
    from engine.config import PRESETS, RunConfig
    from engine.store import Store
    from tests.app_server import launch_page
    store = Store(tmp_path)
    rid = runner.create(store, RunConfig.from_dict(dict(PRESETS["digits"])), status="queued")
    with serve(tmp_path, env={"LOTTERY_MAX_RUNS": "0", "LOTTERY_CLASSPACK": "off"}) as url, sync_playwright() as p:
        browser, page = launch_page(p, 1024, 768)
        try:
            page.goto(f"{url}/lesson?step=1")
            page.get_by_text(f"Your run {rid} is queued").wait_for(timeout=60_000)
            settle(page)
            store.update_run(rid, status="done", progress=1.0, finished=time.time(), summary=json.dumps(
                {"remaining": 0.1, "kept": 100, "total": 1000, "sparsity": 0.9, "test_accuracy": 0.9,
                 "wall_seconds": 9.0}))
            t0 = time.time()
            page.get_by_text("From your own finished run(s).").wait_for(timeout=10_000)
            page.get_by_text(f"Your run {rid} is queued").wait_for(state="detached", timeout=10_000)
            took = time.time() - t0
            assert took < 3.0, f"status, figure and caption changed {took:.1f} s after the run finished"
            page.get_by_text("10.0%").first.wait_for(timeout=5_000)   # the figure's key number: the run's
        finally:
            browser.close()
