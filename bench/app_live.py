"""The app as a user meets it, in a real browser (issue 5 item 8): the time from
`streamlit run` to the first page drawn, and the time from a metric row being
written to the store to it appearing in the browser, with 1 and with 200 runs
in the store.

    python bench/app_live.py [--quick] [--samples 12] [--stores 1,200]

For each store size: a synthetic store (tests/app_stores.py) whose running runs
this process keeps alive (their pid and heartbeat are ours, so the jobs manager
sees a live worker); headless Chromium is started first, then `streamlit run`,
and the clock runs from the Popen to the first page's title being drawn.
Then the Runs page is opened with the live run selected and this process plays
the worker: it writes one step row at a random moment (so every phase of the
page's 1 s refresh is sampled), and the clock runs until the browser's loss
chart holds one more point (Plotly's own data on the page, polled every 25 ms).
Needs /usr/bin/chromium and the playwright package; says so and exits 2 without.
Writes bench/results/app_live.json."""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from common import ROOT, write_result

sys.path.insert(0, str(ROOT / "tests"))

from app_stores import synthetic_store  # noqa: E402

from engine.jobs import Heartbeat, proc_start_time  # noqa: E402
from engine.store import Store  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BUDGET_S = 2.0
# Points in the first chart of the Runs page (the loss curves) as Plotly holds them.
# The "✅ done" counter above the run table.
DONE_JS = """() => { for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
    if (m.innerText.includes('done')) { return parseInt(m.querySelector('[data-testid="stMetricValue"]').innerText) } }
  return -1 }"""
# (calcdata: the points Plotly computed from the figure, however its arrays were encoded)
POINTS_JS = """() => { const g = document.querySelector('.js-plotly-plot');
  return g && g.calcdata ? g.calcdata.reduce((n, t) => n + t.length, 0) : -1 }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _adopt(store: Store, ids: list[str]) -> list[Heartbeat]:
    """Make this process the worker of the running runs: the jobs manager checks pid,
    start time and a heartbeat, which comes from the engine's own Heartbeat thread."""
    me = os.getpid()
    for rid in ids:
        store.update_run(rid, pid=me, pid_start=proc_start_time(me), heartbeat=time.time())
    return [Heartbeat(store, rid, me, every=1.0).start() for rid in ids]


def measure(n_runs: int, samples: int, browser) -> dict:
    home = Path(tempfile.mkdtemp(prefix="lottery-live-bench-"))
    running = 1 if n_runs == 1 else 3
    ids = synthetic_store(home, n_runs, running=running)
    store = Store(home)
    live = ids[-running:]
    beats = _adopt(store, live)
    rid = live[-1]
    step = max(r["step"] or 0 for r in store.metrics(rid)) + 1

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, LOTTERY_HOME=str(home), PYTHONUNBUFFERED="1")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(60_000)
    log = open(home / "streamlit.log", "wb")
    t_start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.perf_counter() - t_start > 120:
                raise RuntimeError(f"streamlit did not start: {(home / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.05)
        t_health = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("h1")
        t_first = time.perf_counter()

        page.goto(f"{url}/runs?runs={rid}")
        page.wait_for_function(f"({POINTS_JS})() > 0", polling=50)
        time.sleep(2.0)                                            # let the first render settle
        rng = random.Random(0)
        lat = []
        for k in range(samples):
            before = page.evaluate(POINTS_JS)
            time.sleep(rng.uniform(0.2, 1.2))                      # land anywhere in the refresh cycle
            store.add_metrics(rid, [{"kind": "step", "round": 0, "phase": "search", "epoch": 3 + (k + 1) / 100,
                                     "step": step + k, "wall": 10.0 + k, "lam": 1.0, "loss": 0.5, "loss_task": 0.4,
                                     "loss_reg": 0.1, "train_acc": 0.9}])
            t_write = time.perf_counter()
            page.wait_for_function(f"({POINTS_JS})() > {before}", polling=25, timeout=30_000)
            lat.append(time.perf_counter() - t_write)
        # A status change: the run finishes; the counter and the table row show it.
        for b in beats:
            b.stop()
        done_before = page.evaluate(DONE_JS)
        time.sleep(rng.uniform(0.2, 1.2))
        store.update_run(rid, status="done", finished=time.time(), progress=1.0, phase="done")
        t_write = time.perf_counter()
        page.wait_for_function(f"({DONE_JS})() > {done_before}", polling=25, timeout=30_000)
        status_s = time.perf_counter() - t_write
        return {"runs_in_store": n_runs, "status_to_browser_s": round(status_s, 3),
                "startup_to_first_page_s": round(t_first - t_start, 2),
                "startup_to_health_s": round(t_health - t_start, 2),
                "row_to_browser_s": {"median": round(statistics.median(lat), 3), "max": round(max(lat), 3),
                                     "min": round(min(lat), 3), "all": [round(x, 3) for x in lat]},
                "within_budget": max(lat) < BUDGET_S and status_s < BUDGET_S}
    except Exception:
        shot = ROOT / "test-artifacts" / f"app_live_failure_{n_runs}.png"
        shot.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        print(f"failed; the page is in {shot.relative_to(ROOT)}", file=sys.stderr)
        raise
    finally:
        for b in beats:
            b.stop()
        page.close()
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 run in the store, 3 samples")
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--stores", default="1,200", help="store sizes to measure")
    args = ap.parse_args()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("needs the playwright package (pip install playwright; no browser download)", file=sys.stderr)
        sys.exit(2)
    if not CHROMIUM.exists():
        print(f"needs {CHROMIUM}: apt-get install -y chromium", file=sys.stderr)
        sys.exit(2)
    sizes = [1] if args.quick else [int(s) for s in args.stores.split(",")]
    samples = 3 if args.quick else args.samples
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            for n in sizes:
                r = measure(n, samples, browser)
                rows.append(r)
                lat = r["row_to_browser_s"]
                print(f"{n:>4} runs: streamlit run → first page {r['startup_to_first_page_s']:.2f} s "
                      f"(server up {r['startup_to_health_s']:.2f} s); row written → in the browser median "
                      f"{lat['median']:.2f} s, max {lat['max']:.2f} s over {samples} rows; run done → shown "
                      f"{r['status_to_browser_s']:.2f} s "
                      f"({'within' if r['within_budget'] else 'OVER'} {BUDGET_S:g} s)", flush=True)
        finally:
            browser.close()
    write_result("app_live", {"budget_s": BUDGET_S, "load_average": os.getloadavg()[0], "stores": rows},
                 args.quick)


if __name__ == "__main__":
    main()
