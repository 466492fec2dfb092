"""A class watching one live run (issue 22): the app server's CPU per watching session and the
time from a metric row written to it drawn in each session's loss chart, with N sessions.

    python bench/class_load.py [--quick] [--sessions 1,8,30] [--browsers 1,8] [--window 30]

The real app (`streamlit run`, as `make run` starts it) on a store holding one live run (this
process plays its worker: pid, heartbeat, and one step row about every second, at a random
moment) plus the class pack's examples. N sessions open /runs?runs=LIVE, as a class following
the teacher's link does:
- protocol sessions (bench/st_client.py): real server sessions that speak Streamlit's WebSocket
  protocol (the fragments' 1 s reruns included) without drawing, so 30 fit on this machine;
- browser sessions: tabs of one headless Chromium (heavier: the browser shares the cores).
For each N: the server's CPU (its process, user + system, over `--window` seconds; with no
session open first, the baseline), per session = (CPU with N − baseline) / N; the row → chart
latency of every session for every row (median, p95, max); then, while the N sessions still
watch, one extra browser tab's first paint of the Runs page and a page switch (Runs → Home →
Runs), each until drawn. The load average is written beside each figure.
Needs /usr/bin/chromium and playwright for the browser parts (skipped with a note without).
Writes bench/results/class_load.json (class_load_quick.json with --quick)."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from app_live import HOME_DRAWN_JS, POINTS_JS, RUNS_DRAWN_JS, _adopt, _nav
from common import ROOT, write_result
from st_client import ProtocolSession

sys.path.insert(0, str(ROOT / "tests"))

from app_server import CHROMIUM, CHROMIUM_ARGS, free_port, serve, stop_group  # noqa: E402
from app_stores import synthetic_store  # noqa: E402

from engine.store import Store  # noqa: E402

LOSS_TITLE = "Loss: the task"


def first_trace_points(spec: str) -> int:
    """Points of the loss chart's first trace (the live run's task loss: one per step row)."""
    import json

    from st_client import count_points
    fig = json.loads(spec)
    return count_points(json.dumps({"data": fig.get("data", [])[:1]}))


def server_pid(port: int) -> int:
    """The `streamlit run … --server.port PORT` process (serve() yields only its URL)."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"streamlit" in b" ".join(cmd) and str(port).encode() in cmd:
                return int(p.name)
    raise RuntimeError(f"no streamlit process on port {port}")


def cpu_seconds(pid: int | list[int]) -> float:
    """User + system CPU seconds of a process (all its threads) and its reaped children; of
    several processes, their sum (the app processes of a class server)."""
    if isinstance(pid, list):
        return sum(cpu_seconds(p) for p in pid)
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick


@contextmanager
def class_server(home: Path, processes: int):
    """The class-server mode (`python -m ops.class_server`, docs/class-server.md): `processes`
    app processes behind a real nginx on one store; yields (nginx's URL, the pids whose CPU is the
    server's: the app processes, nginx's master and workers; not the launcher's idle loop)."""
    port, run = free_port(), home / "class-server"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")} | {"LOTTERY_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "ops.class_server", "--processes", str(processes), "--port",
                             str(port), "--run-dir", str(run)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()           # the one line it prints when ready (EOF when it failed)
        if "ready at" not in line:
            raise RuntimeError(f"class server did not start: {line}{proc.stdout.read()[-2000:]}")
        apps = [server_pid(int(p)) for p in re.findall(r"server 127\.0\.0\.1:(\d+) ", (run / "nginx.conf").read_text())]
        assert len(apps) == processes, apps
        master = int((run / "nginx.pid").read_text())
        yield f"http://127.0.0.1:{port}", apps + [master, *children(master)]
    finally:
        stop_group(proc, grace=30)              # the launcher stops nginx and every app process


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, ValueError):
                continue
    return out


class Writer:
    """The live run's worker: a step row about every second (uniform 0.5–1.5 s apart, so rows
    land anywhere in the sessions' 1 s refresh), progress moving; the write times kept."""

    def __init__(self, store: Store, rid: str):
        self.store, self.rid = store, rid
        self.times: list[float] = []
        self.step = max(r["step"] or 0 for r in store.metrics(rid)) + 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.rng = random.Random(0)

    def _loop(self) -> None:
        k = 0
        while not self._stop.wait(self.rng.uniform(0.5, 1.5)):
            self.store.add_metrics(self.rid, [{
                "kind": "step", "round": 0, "phase": "search", "epoch": 3 + k / 1000, "step": self.step + k,
                "wall": 10.0 + k, "lam": 1.0, "loss": 0.5, "loss_task": 0.4 + 0.1 * self.rng.random(),
                "loss_reg": 0.1, "train_acc": 0.9}])
            self.times.append(time.perf_counter())
            self.store.update_run(self.rid, progress=min(0.99, 0.3 + k / 10_000))
            k += 1

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _summary(xs: list[float]) -> dict:
    if not xs:
        return {"n": 0}
    s = sorted(xs)
    return {"n": len(s), "median": round(statistics.median(s), 3), "p95": round(s[int(0.95 * (len(s) - 1))], 3),
            "max": round(s[-1], 3), "min": round(s[0], 3)}


class Latencies:
    """Row → chart latency per session: when a session's loss chart holds more of the run's
    points than before, each newly drawn row counts from the moment it was written."""

    def __init__(self, writer: Writer):
        self.writer = writer
        self.seen: dict[int, int] = {}        # session → rows it has drawn (index into writer.times)
        self.base: dict[int, int] = {}        # session → points before the first row
        self.lat: list[float] = []
        self.t_from = 0.0                     # rows written before this are not counted

    def observe(self, sid: int, points: int, now: float) -> None:
        if sid not in self.base:
            self.base[sid] = points - len(self.writer.times)
            self.seen[sid] = len(self.writer.times)
            return
        drawn = points - self.base[sid]
        times = self.writer.times
        while self.seen[sid] < min(drawn, len(times)):
            t = times[self.seen[sid]]
            if t >= self.t_from:
                self.lat.append(now - t)
            self.seen[sid] += 1


async def _protocol_window(url: str, rid: str, n: int, lat: Latencies, pid: int, window: float,
                           extra=None) -> dict:
    sessions = []
    for i in range(n):
        s = ProtocolSession(url, page="runs", query=f"runs={rid}")

        def on_chart(path, spec, t, i=i):
            if LOSS_TITLE in spec:
                lat.observe(i, first_trace_points(spec), t)
        s.on_chart = on_chart
        await s.connect()
        sessions.append(s)
        await asyncio.sleep(0.05)
    await asyncio.sleep(8.0)                       # every session drawn its first page
    missing = [i for i in range(n) if i not in lat.base]
    lat.t_from = time.perf_counter()
    c0, t0, l0 = cpu_seconds(pid), time.perf_counter(), os.getloadavg()[0]
    await asyncio.sleep(window)
    c1, t1 = cpu_seconds(pid), time.perf_counter()
    out = {"server_cores": round((c1 - c0) / (t1 - t0), 3), "load_avg_1min": [round(l0, 2),
                                                                               round(os.getloadavg()[0], 2)],
           "sessions_without_a_chart": missing, "page_errors": sorted({e for s in sessions for e in s.errors})}
    if extra is not None:          # the extra browser tab, while the sessions still watch
        out |= await asyncio.get_running_loop().run_in_executor(None, extra)
    for s in sessions:
        await s.close()
    return out


def _browser_window(browser, url: str, rid: str, n: int, lat: Latencies, pid: int, window: float) -> dict:
    pages = []
    for _ in range(n):
        p = browser.new_page(viewport={"width": 1024, "height": 768})
        p.set_default_timeout(120_000)
        p.goto(f"{url}/runs?runs={rid}")
        pages.append(p)
    for p in pages:
        p.wait_for_function(f"({POINTS_JS})() > 0", polling=100)
    time.sleep(3.0)
    lat.t_from = time.perf_counter()
    c0, t0, l0 = cpu_seconds(pid), time.perf_counter(), os.getloadavg()[0]
    end = t0 + window
    last = -1
    while time.perf_counter() < end:          # latency sampled in the first tab (polled every 25 ms)
        pts = pages[0].evaluate(POINTS_JS)
        if pts != last:
            lat.observe(0, pts // 2, time.perf_counter())   # two traces per row in the page's chart data
            last = pts
        time.sleep(0.025)
    c1, t1 = cpu_seconds(pid), time.perf_counter()
    for p in pages:
        p.close()
    return {"server_cores": round((c1 - c0) / (t1 - t0), 3),
            "load_avg_1min": [round(l0, 2), round(os.getloadavg()[0], 2)]}


def extra_tab(browser_factory, url: str, rid: str):
    """One more browser tab while the class watches: the Runs page's first paint and a page switch."""
    def go() -> dict:
        with browser_factory() as browser:
            page = browser.new_page(viewport={"width": 1024, "height": 768})
            page.set_default_timeout(120_000)
            load = os.getloadavg()[0]
            t = time.perf_counter()
            page.goto(f"{url}/runs?runs={rid}")
            page.wait_for_function(RUNS_DRAWN_JS, polling=25, timeout=120_000)
            paint = time.perf_counter() - t
            time.sleep(1.0)
            home = _nav(page, "Home", HOME_DRAWN_JS)
            time.sleep(1.0)
            back = _nav(page, "Runs", RUNS_DRAWN_JS)
            page.close()
        return {"extra_tab": {"first_paint_s": round(paint, 2), "switch_to_home_s": round(home, 2),
                              "switch_to_runs_s": round(back, 2), "load_avg_1min": round(load, 2)}}
    return go


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", help="protocol sessions, comma-separated counts (default 1,8,30; --quick 1,2)")
    ap.add_argument("--browsers", default="1,8", help="browser-tab sessions, comma-separated counts ('' = none)")
    ap.add_argument("--window", type=float, default=30.0, help="seconds of measurement per N")
    ap.add_argument("--processes", type=int, default=1,
                    help="app processes: 1 = `streamlit run` alone; more = the class server (nginx in front)")
    ap.add_argument("--quick", action="store_true", help="N = 1 and 2 protocol sessions, no browsers, 6 s windows")
    a = ap.parse_args()
    if a.quick:
        a.sessions, a.browsers, a.window = a.sessions or "1,2", "", 6.0
    a.sessions = a.sessions or "1,8,30"
    protocol_ns = [int(x) for x in a.sessions.split(",") if x.strip()]
    browser_ns = [int(x) for x in a.browsers.split(",") if x.strip()]
    have_browser = CHROMIUM.exists()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        have_browser = False

    @contextmanager
    def chromium():
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                yield b
            finally:
                b.close()

    home = Path(tempfile.mkdtemp(prefix="lottery-class-bench-"))
    rid = synthetic_store(home, 1, running=1)[0]
    store = Store(home)
    beats = _adopt(store, [rid])
    results: dict = {"live_run": rid, "cores": os.cpu_count(), "window_s": a.window, "app_processes": a.processes,
                     "protocol": {}, "browser": {}, "notes": []}

    @contextmanager
    def app():
        if a.processes > 1:
            with class_server(home, a.processes) as (url, pids):
                yield url, pids
        else:
            with serve(home) as url:
                yield url, server_pid(int(url.rsplit(":", 1)[1]))
    try:
        with app() as (url, pid):
            writer = Writer(store, rid).start()
            # warm the server (imports, class pack) with one page, then the baseline: nobody watching
            asyncio.run(_protocol_window(url, rid, 1, Latencies(writer), pid, 2.0))
            time.sleep(3.0)
            c0, t0 = cpu_seconds(pid), time.perf_counter()
            time.sleep(a.window)
            base = (cpu_seconds(pid) - c0) / (time.perf_counter() - t0)
            results["baseline_server_cores"] = round(base, 3)
            print(f"baseline (no session): server {base:.3f} cores", flush=True)
            for n in protocol_ns:
                lat = Latencies(writer)
                extra = extra_tab(chromium, url, rid) if have_browser and not a.quick else None
                r = asyncio.run(_protocol_window(url, rid, n, lat, pid, a.window, extra))
                r["per_session_cores"] = round((r["server_cores"] - base) / n, 4)
                r["row_to_chart_s"] = _summary(lat.lat)
                results["protocol"][str(n)] = r
                print(f"protocol N={n}: {r}", flush=True)
                time.sleep(3.0)
            if browser_ns and have_browser:
                with chromium() as browser:
                    for n in browser_ns:
                        lat = Latencies(writer)
                        r = _browser_window(browser, url, rid, n, lat, pid, a.window)
                        r["per_session_cores"] = round((r["server_cores"] - base) / n, 4)
                        r["row_to_chart_s"] = _summary(lat.lat)
                        results["browser"][str(n)] = r
                        print(f"browser N={n}: {r}", flush=True)
                        time.sleep(3.0)
            elif browser_ns:
                results["notes"].append(f"browser sessions skipped: no Chromium at {CHROMIUM} or no playwright")
            writer.stop()
    finally:
        for b in beats:
            b.stop()
    write_result("class_load" if a.processes == 1 else f"class_load_{a.processes}proc", results, a.quick)


if __name__ == "__main__":
    main()
