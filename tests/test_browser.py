"""The app in a real browser: `streamlit run` on 127.0.0.1, driven by headless
Chromium through Playwright.

It launches the digits preset from the Launch page (a real background worker
trains it), waits until the monitor shows it done, opens Pixel masks and
Trade-offs and checks their charts are drawn, reloads to check that the
selection survives, and builds the run's deployable files in its Deploy tab.
A screenshot of every page lands in test-artifacts/.

Needs the apt package `chromium` (/usr/bin/chromium) and the pip package
`playwright` (never `playwright install`); skips, saying which is missing,
without them. `.ci/run` installs chromium first."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.app_server import DONE_COUNTER_JS, ROOT, launch_page, needs_browser, serve

ARTIFACTS = ROOT / "test-artifacts"

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = needs_browser(sync_playwright)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("browser-home")
    with serve(home, env={"LOTTERY_MAX_RUNS": "1"}, timeout=60) as url:
        yield url, home


def settle(page, quiet: float = 1.0, timeout: float = 60) -> None:
    """Wait until the app has stopped running its script for `quiet` seconds."""
    t0 = last_busy = time.time()
    while time.time() - t0 < timeout:
        busy = page.get_by_role("button", name="Stop").count() > 0 or \
            page.locator("[data-testid='stSkeleton']").count() > 0
        if busy:
            last_busy = time.time()
        elif time.time() - last_busy > quiet:
            return
        time.sleep(0.15)


def shoot(page, name: str) -> None:
    """A screenshot of the whole page (the app scrolls inside its main block)."""
    ARTIFACTS.mkdir(exist_ok=True)
    h = page.evaluate("() => { const m = document.querySelector('[data-testid=\"stMain\"]');"
                      " return m ? m.scrollHeight : 900 }")
    page.set_viewport_size({"width": 1400, "height": min(max(900, h + 40), 6000)})
    time.sleep(1.0)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    page.set_viewport_size({"width": 1400, "height": 900})


def click_until(page, button, shown, name: str, waits: tuple = (30, 60)) -> None:
    """Click `button` until `shown` is visible: at most twice. CI, with both cores training,
    once saw a name-form submit that never took effect (not reproduced here, even with the
    browser's CPU throttled 20×; a WebSocket reconnect drops a click sent meanwhile, and a
    user would click again). A slow answer to the first click is not clicked again: the second
    click only comes when `shown` is still missing and `button` is still there. A second lost
    click fails, with the page's text and a screenshot in test-artifacts/."""
    seen = ""
    for attempt, wait in enumerate(waits, 1):
        if attempt > 1 and (shown.is_visible() or not button.is_visible()):
            break
        button.click()
        try:
            shown.wait_for(timeout=wait * 1000)
            return
        except Exception:  # noqa: BLE001 - playwright's TimeoutError: look, then maybe click once more
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{name}-lost-{attempt}.png"))
            seen = page.locator("body").inner_text()[-1500:]
            print(f"click {attempt} on {name} showed nothing in {wait} s; the page said: {seen!r}")
    try:                                       # still on its way (the button is gone): one last wait
        shown.wait_for(timeout=waits[-1] * 1000)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError, told with what the page showed
        raise AssertionError(f"{name}: clicked, nothing showed; the page said: {seen!r}") from None


def load(page, url: str | None = None) -> None:
    """Open `url` (None: reload the page) and wait until the app has drawn it and is quiet."""
    if url is None:
        page.reload()
    else:
        page.goto(url)
    page.wait_for_selector("h1")
    settle(page)


def nav(page, label: str) -> None:
    page.locator("[data-testid='stSidebarNav']").get_by_text(label, exact=True).click()
    page.wait_for_selector("h1")
    settle(page)


def test_a_typed_name_survives_a_reload(server):
    """The name a student types is kept by the browser (a cookie), so a reload does not lose
    who they are; "Change name" forgets it in the browser too."""
    url, _ = server
    sidebar = "[data-testid='stSidebar']"
    with sync_playwright() as p:
        browser, page = launch_page(p, 1400, 900)
        try:
            load(page, url)
            page.locator(sidebar).get_by_text("Your name (optional)").click()
            box = page.locator(sidebar).get_by_label("Your name", exact=True)
            box.fill("Ana Lopez")
            expect(box).to_have_value("Ana Lopez")
            click_until(page, page.locator(sidebar).get_by_role("button", name="Use this name"),
                        page.locator(sidebar).get_by_text("typed in this browser"), "name-submit")
            settle(page)
            cookie = {c["name"]: c["value"] for c in page.context.cookies()}.get("lottery_name")
            assert cookie == "Ana%20Lopez"
            load(page)
            assert "Ana Lopez" in page.locator(sidebar).inner_text()        # still known after the reload
            click_until(page, page.locator(sidebar).get_by_role("button", name="Change name"),
                        page.locator(sidebar).get_by_text("Your name (optional)"), "change-name")
            settle(page)
            assert "lottery_name" not in {c["name"] for c in page.context.cookies()}
            load(page)
            assert "Ana Lopez" not in page.locator(sidebar).inner_text()
        finally:
            browser.close()


def test_launch_watch_and_analyse_in_a_browser(server):
    url, home = server
    from engine.store import Store
    timings = {}
    with sync_playwright() as p:
        browser, page = launch_page(p, 1400, 900)
        try:
            # ---- Home and the empty Runs page
            load(page, url)
            expect(page.get_by_text("No runs yet", exact=False).first).to_be_visible()
            shoot(page, "home-empty")

            # ---- Launch the digits preset (2 + 2 epochs to keep the test short)
            load(page, f"{url}/launch?preset=digits")
            for label in ("Epochs per search", "Retrain epochs"):
                box = page.locator("[data-testid='stNumberInput']").filter(has_text=label).locator("input")
                box.fill("2")
                box.press("Enter")
                settle(page)
            shoot(page, "launch")
            t_click = time.time()
            page.get_by_role("button", name="Launch run").click()
            page.wait_for_url("**/runs?runs=*")
            rid = page.url.split("runs=")[1].split("&")[0].split("%2C")[0]
            store = Store(home)
            assert store.get_run(rid)["config"]["epochs"] == 2

            # ---- The monitor shows it done, within moments of the store saying so
            done_tab = page.get_by_role("tab", name=f"✅ {rid}")
            deadline = time.time() + 240
            t_store = t_counter = None
            while time.time() < deadline:
                if t_store is None and store.get_run(rid)["status"] == "done":
                    t_store = time.time()
                if t_counter is None and page.evaluate(DONE_COUNTER_JS) >= 1:
                    t_counter = time.time()        # the live run table (a fragment) shows it
                if done_tab.count():               # ... and then the rest of the page
                    break
                status = store.get_run(rid)["status"]
                assert status not in ("failed", "cancelled", "interrupted"), store.get_run(rid)["reason"]
                time.sleep(0.1)
            assert done_tab.count(), f"the monitor never showed {rid} as done"
            t_page = time.time()
            timings = {"launch_to_done_s": round(t_page - t_click, 1), "load_average": os.getloadavg()[0],
                       "store_done_to_table_done_s": round((t_counter or t_page) - (t_store or t_page), 2),
                       "store_done_to_page_done_s": round(t_page - (t_store or t_page), 2)}
            # Live, without a reload (this loop never reloads), and in this order: the store says done,
            # then the live table, then the page. How long it took (about 1-3 s here) is written to
            # test-artifacts/browser_timings.json, not asserted: shared CI machines vary too much.
            assert t_store is not None and t_store <= (t_counter or t_page) <= t_page, timings
            settle(page)
            expect(page.locator(".js-plotly-plot").first).to_be_visible()
            shoot(page, "runs")

            # ---- Selection survives a reload
            load(page)
            assert f"runs={rid}" in page.url
            expect(page.get_by_role("tab", name=f"✅ {rid}")).to_be_visible()
            chip = page.locator("[data-testid='stMultiSelect']").filter(has_text="Runs to inspect")
            expect(chip).to_contain_text(rid)

            # ---- Pixel masks: the mask picture and the digits through it are drawn
            nav(page, "Pixel masks")
            shown = page.get_by_role("combobox", name="Run").evaluate("e => e.value || e.textContent || ''")
            assert rid in shown, shown                                          # our run is the one shown
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3")
            assert page.locator(".js-plotly-plot .heatmaplayer image, .js-plotly-plot .hm").count() >= 1
            shoot(page, "pixels")

            # ---- Trade-offs: the run is a point on the accuracy / remaining plot
            nav(page, "Trade-offs")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 1")
            assert page.locator(".js-plotly-plot .scatterlayer .point").count() >= 1
            shoot(page, "tradeoffs")

            # ---- The other pages, for the record
            nav(page, "Mask evolution")
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 3")
            shoot(page, "masks")
            nav(page, "Theory")
            shoot(page, "theory")
            nav(page, "Home")
            shoot(page, "home")
            nav(page, "Runs")
            assert f"runs={rid}" in page.url                      # the selection followed us around

            # ---- Deploy: the finished ticket is written as a compact file + ONNX, parity shown
            page.get_by_role("tab", name="🚀 Deploy").click()
            page.get_by_role("button", name="Build files").click()
            parity = page.get_by_text("Parity on 360 test images", exact=False)
            parity.wait_for(state="attached", timeout=120_000)        # the build is done and drawn
            settle(page)
            if not parity.is_visible():
                # Seen once in CI under load (not reproduced alone): after the build's rerun the
                # run's tabs showed "Details" again, the parity text drawn in the hidden Deploy tab.
                # A user clicks the tab; so does the test, and the files must be there.
                page.get_by_role("tab", name="🚀 Deploy").click()
            expect(parity).to_be_visible()
            expect(page.get_by_role("button", name="Compact file")).to_be_visible()
            assert (home / "runs" / rid / "deploy" / "model.onnx").exists()
            shoot(page, "deploy")
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "browser_timings.json").write_text(json.dumps(timings, indent=2))


# ---------------------------------------------------------------- at projector size (issue 12)

CLIPPED_JS = """() => {
  const out = [];
  const vw = window.innerWidth;
  const sel = '[data-testid="stMetricValue"], [data-testid="stMetricLabel"], [data-testid="stMain"] button, ' +
              '[data-testid="stMain"] [data-testid="stWidgetLabel"] .stMarkdownEllipsis';   // widget labels
  for (const el of document.querySelectorAll(sel)) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || !el.innerText.trim()) continue;      // hidden (a closed expander's)
    const inner = el.querySelector('p, div, span') || el;
    const cut = inner.scrollWidth > inner.clientWidth + 1 || el.scrollWidth > el.clientWidth + 1;
    if (cut || r.left < -1 || r.right > vw + 1) out.push(el.innerText.trim().slice(0, 60));
  }
  return out }"""

TICKS_JS = """() => {
  const bad = [], titles = [];
  for (const svg of document.querySelectorAll('.js-plotly-plot .main-svg')) {
    for (const layer of svg.querySelectorAll('.xaxislayer-above, .yaxislayer-above')) {
      const t = [...layer.querySelectorAll('text')].map(e => e.textContent).filter(s => s);
      for (let i = 1; i < t.length; i++) if (t[i] === t[i - 1]) bad.push(t.join(' '));
    }
    const w = svg.getBoundingClientRect().width;
    for (const g of svg.querySelectorAll('.gtitle')) {
      const b = g.getBoundingClientRect(), s = svg.getBoundingClientRect();
      if (b.right > s.left + w + 1 || b.top < s.top - 1) titles.push(g.textContent.slice(0, 60));
    }
  }
  return {bad, titles} }"""


@pytest.fixture(scope="module")
def projector_store(tmp_path_factory):
    """A store with finished runs of several kinds and one real pixel run (no worker)."""
    import sys
    sys.path.insert(0, str(ROOT / "tests"))
    from app_stores import _real, synthetic_store

    from engine.store import Store
    home = tmp_path_factory.mktemp("projector-home")
    ids = synthetic_store(home, n=8, running=1)
    pixel = _real(Store(home), ROOT / "cache" / "data", model="logreg", dataset="digits", classes=[0, 1],
                  method="concave", regularizer="log", lam=2.0, epochs=2, retrain_epochs=1, batch_size=64, lr=0.01)
    return home, ids, pixel


def test_projector_size_nothing_clipped_and_ticks_read(projector_store):
    """At 1024×768 metrics and buttons were cut off ("4 o…", "99.…"), accuracy ticks all read
    "100%", the Home diagram's text was ~8 px and out-of-range numbers were silently kept."""
    home, ids, pixel = projector_store
    with serve(home, env={"LOTTERY_MAX_RUNS": "0"}, timeout=60) as url, sync_playwright() as p:
        browser, page = launch_page(p, 1024, 768)
        try:
            pages = [("", "home"), (f"runs?runs={ids[-1]},{ids[0]}", "runs"), (f"pixels?runs={pixel}", "pixels"),
                     ("tradeoffs", "tradeoffs"), (f"masks?runs={ids[0]},{ids[1]}", "masks"),
                     *[(f"launch?preset={p}", f"launch-{p}") for p in ("lenet300-cs", "lenet300-synflow",
                                                                        "lenet300-imp")],
                     ("launch", "launch")]
            for path, name in pages:
                page.goto(f"{url}/{path}")
                page.wait_for_selector("h1")
                if not name.startswith(("launch", "home")):
                    page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 1")
                settle(page, quiet=1.0)
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"projector-{name}.png"), full_page=True)
                assert page.evaluate(CLIPPED_JS) == [], (name, page.evaluate(CLIPPED_JS))
                ticks = page.evaluate(TICKS_JS)
                assert ticks == {"bad": [], "titles": []}, (name, ticks)
                if name == "pixels":
                    for label in ("Pixels used", "Test accuracy"):
                        expect(page.locator("[data-testid='stMetric']").filter(has_text=label)).to_be_visible()
                if name == "home":       # the pipeline's text at its own size, every box on screen
                    sizes = page.evaluate("""() => [...document.querySelectorAll('.ll-step')].map(e => {
                        const r = e.getBoundingClientRect();
                        return [parseFloat(getComputedStyle(e).fontSize), r.left, r.right] })""")
                    assert len(sizes) == 6 and all(fs >= 14 and left >= 0 and right <= 1024
                                                   for fs, left, right in sizes), sizes
            # the Launch form: an out-of-range value is named, never silently kept
            box = page.locator("[data-testid='stNumberInput']").filter(has_text="Epochs per search").locator("input")
            box.fill("1000000")
            box.press("Enter")
            settle(page)
            expect(page.get_by_text("got 1000000").first).to_be_visible()
            expect(page.get_by_role("button", name="Launch run")).to_be_disabled()
            assert box.input_value() == "1000000"
            page.screenshot(path=str(ARTIFACTS / "projector-launch-invalid.png"), full_page=True)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "projector-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
