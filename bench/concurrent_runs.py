"""How many digits-sized runs fit at once on a CPU server (issue 15, item 4: the CPU slot cap).

For each RUNS:CAP pair: a fresh store, LOTTERY_MAX_RUNS=CAP, RUNS copies of the `digits`
preset (seeds 0..RUNS-1) queued through engine.jobs at once, as RUNS students would. Records
each run's own wall time (training, from its summary), the time from queueing to the last
one done, and the load average. Workers train with the default priority settings (on ≤ 2
cores, one torch thread each).

    python bench/concurrent_runs.py [--pairs 1:1,2:2,3:3,3:1,4:2]  → bench/results/concurrent_runs.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_result  # noqa: E402

from engine import jobs  # noqa: E402
from engine.config import preset  # noqa: E402
from engine.store import Store  # noqa: E402


def measure(n: int, cap: int) -> dict:
    home = Path(tempfile.mkdtemp(prefix="lottery-conc-"))
    os.environ["LOTTERY_MAX_RUNS"] = str(cap)
    load0 = os.getloadavg()[0]
    t0 = time.time()
    ids = [jobs.submit(preset("digits", seed=s), home) for s in range(n)]
    store = Store(home)
    while True:
        runs = [store.get_run(i) for i in ids]
        if all(r["status"] not in ("queued", "running") for r in runs):
            break
        jobs.pump(home)
        time.sleep(0.5)
    total = time.time() - t0
    walls = [(r["summary"] or {}).get("wall_seconds") for r in runs]
    row = {"runs": n, "cap": cap, "statuses": [r["status"] for r in runs], "run_wall_s": walls,
           "queue_to_all_done_s": total, "load_before": load0, "load_after": os.getloadavg()[0]}
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", default="1:1,2:2,3:3,3:1,4:2", help="RUNS:CAP,...")
    args = ap.parse_args()
    rows = [measure(*map(int, p.split(":"))) for p in args.pairs.split(",")]
    write_result("concurrent_runs", {"cores": len(os.sched_getaffinity(0)), "preset": "digits", "rows": rows},
                 quick=False)


if __name__ == "__main__":
    main()
