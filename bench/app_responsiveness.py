"""How fast the app's pages render with a full store (issue 4: the Runs page with
200 runs in under 2 s).

    python bench/app_responsiveness.py [--runs 200] [--repeat 5] [--quick]

Builds a synthetic store (finished and running runs with metrics and mask
statistics, written directly; nothing is trained), then renders pages with
Streamlit's AppTest — the same script run a browser session gets, without the
network and the browser's drawing — and reports the median of warm renders
(the first render, which imports torch and plotly, is reported apart).
Writes bench/results/app_responsiveness.json."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, write_result

sys.path.insert(0, str(ROOT / "tests"))

from app_stores import synthetic_store  # noqa: E402

APP = str(ROOT / "app.py")
BUDGET_S = 2.0


def _route_through_app_py():
    """As tests/test_app.py: AppTest resets Streamlit's legacy pages-folder switch on every run."""
    from streamlit.runtime.pages_manager import PagesManager
    init = PagesManager.__init__

    def patched(self, *a, **kw):
        init(self, *a, **kw)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = patched


def render(page: str, query: dict | None = None) -> tuple[float, int]:
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(page)
    if query:
        at.query_params.update(query)
    t = time.perf_counter()
    at.run()
    dt = time.perf_counter() - t
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception[0].value}")
    return dt, len(at.get("plotly_chart"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="2 repeats")
    args = ap.parse_args()
    repeat = 2 if args.quick else args.repeat

    home = Path(tempfile.mkdtemp(prefix="lottery-app-bench-"))
    t = time.perf_counter()
    ids = synthetic_store(home, args.runs, running=3)
    build_s = time.perf_counter() - t
    os.environ["LOTTERY_HOME"] = str(home)
    _route_through_app_py()

    cases = [("runs, nothing selected", "pages/runs.py", None),
             ("runs, 3 live runs selected", "pages/runs.py", {"runs": ",".join(ids[-3:])}),
             ("home", "pages/home.py", None),
             ("trade-offs, all runs", "pages/tradeoffs.py", None),
             ("mask evolution", "pages/masks.py", {"runs": ids[0]})]
    first = {}
    rows = []
    for name, page, query in cases:
        times = []
        for i in range(repeat + 1):
            dt, n_charts = render(page, query)
            if i == 0:
                first[name] = dt
            else:
                times.append(dt)
        med = statistics.median(times)
        rows.append({"case": name, "page": page, "median_s": round(med, 3), "max_s": round(max(times), 3),
                     "first_s": round(first[name], 3), "charts": n_charts, "within_budget": med < BUDGET_S})
    print(f"{args.runs} runs in the store (built in {build_s:.1f} s); median of {repeat} warm renders:")
    for r in rows:
        flag = "ok" if r["within_budget"] else f"OVER {BUDGET_S:g} s"
        print(f"  {r['case']:<30} {r['median_s']:6.3f} s  (max {r['max_s']:.3f}, first {r['first_s']:.3f}, "
              f"{r['charts']} charts)  {flag}")
    write_result("app_responsiveness", {"runs_in_store": args.runs, "repeat": repeat, "budget_s": BUDGET_S,
                                        "note": "AppTest script time (server side); excludes network and "
                                                "browser drawing", "cases": rows}, args.quick)


if __name__ == "__main__":
    main()
