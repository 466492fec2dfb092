"""How honest is the Launch page's time estimate? Launch small digits runs the way the
page does (ui.estimate.launch_estimate over the store's runs and the machine's load,
recorded with each run), while another process trains, and compare each estimate with
the actual time from launch to result (finished − created).

    python bench/estimates.py            # 9 runs: 3 alone, then a batch of 3 twice (the queue counts)
    python bench/estimates.py --quick    # 4 runs

Writes bench/results/estimates[_capN][_quick].json (`--max-runs N`, default 1): one
row per run (estimate, actual, ratio = actual / estimate) and their distribution. Goal: every ratio within [0.5, 2].
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, write_result  # noqa: E402

# Small digits runs of three kinds, so the estimate meets both its throughput model
# (no finished run of that kind yet) and its history of earlier runs.
KINDS = [
    {"model": "logreg", "dataset": "digits", "method": "concave", "lam": 5.0, "epochs": 3, "retrain_epochs": 3,
     "batch_size": 64},
    {"model": "lenet300", "dataset": "digits", "method": "dense", "epochs": 4, "batch_size": 64},
    {"model": "lenet300", "dataset": "digits", "method": "concave", "lam": 20.0, "epochs": 3, "retrain_epochs": 3,
     "batch_size": 64},
]
LOAD = ["run", "--preset", "digits", "--set", "epochs=10000", "--quiet"]    # trains until stopped


def launch(cfgs: list[dict], home: Path):
    """Submit as the Launch page does: the estimate of each run's result, shown, then recorded."""
    from engine import jobs
    from engine.store import Store
    from ui import estimate
    est = estimate.launch_estimate(cfgs, Store(home).list_runs(), estimate.machine_now())
    return [(jobs.submit(c, home, estimate=t), t) for c, t in zip(cfgs, est.until)], est


def wait_all(home: Path, ids: list[str], timeout: float = 900) -> None:
    from engine import jobs
    from engine.store import Store
    store, end = Store(home), time.time() + timeout
    while time.time() < end:
        jobs.pump(home)            # (workers pump when they finish; this covers a slow start)
        if all(store.get_run(i)["status"] in ("done", "failed", "cancelled", "interrupted") for i in ids):
            return
        time.sleep(1.0)
    raise TimeoutError(f"runs not finished after {timeout:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-runs", type=int, default=1, help="LOTTERY_MAX_RUNS of the benchmark's store")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="lottery-bench-estimates-"))
    load_home = Path(tempfile.mkdtemp(prefix="lottery-bench-load-"))
    os.environ.update(LOTTERY_HOME=str(home), LOTTERY_MAX_RUNS=str(args.max_runs), LOTTERY_GPUS="")
    from engine.store import Store

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # so `finally` stops the load process
    # the other process that trains meanwhile (another user's run; its own store)
    load = subprocess.Popen([sys.executable, "-m", "engine", *LOAD, "--home", str(load_home)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    plan = ([[KINDS[0]], [KINDS[1]], [KINDS[0], KINDS[1]]] if args.quick else
            [[KINDS[0]], [KINDS[1]], [KINDS[2]], [KINDS[0], KINDS[1], KINDS[2]], [KINDS[2], KINDS[0], KINDS[1]]])
    rows, seed = [], 0
    try:
        time.sleep(10)                       # the load process is training by now
        if load.poll() is not None:
            raise RuntimeError(f"the load process ended (exit {load.returncode}): python -m engine {' '.join(LOAD)}")
        for batch in plan:
            cfgs = []
            for c in batch:
                cfgs.append({**c, "seed": seed})     # a new seed: a new run (never a reused one)
                seed += 1
            load1 = os.getloadavg()[0]
            launched, est = launch(cfgs, home)
            wait_all(home, [i for i, _ in launched])
            store = Store(home)
            for (rid, t), c in zip(launched, cfgs):
                r = store.get_run(rid)
                actual = r["finished"] - r["created"]
                rows.append({"id": rid, "kind": f"{c['model']} {c['method']}", "batch": len(batch),
                             "status": r["status"], "estimate_s": round(t, 1), "actual_s": round(actual, 1),
                             "ratio": round(actual / t, 3), "load1_at_launch": round(load1, 2),
                             "busy_sessions": est.machine.sessions, "slowdown": round(est.slowdown, 2),
                             "slowdown_from": "recent runs" if est.paced else "load",
                             "basis": "history" if any(x["status"] == "done" and x["config"]["model"] == c["model"]
                                                       and x["created"] < r["created"] for x in store.list_runs())
                             else "model"})
                print(f"{rows[-1]['kind']:<18} batch {len(batch)}  estimate {t:6.1f} s  actual {actual:6.1f} s  "
                      f"ratio {actual / t:5.2f}  (load {load1:.2f}, ×{est.slowdown:.2f} from "
                      f"{rows[-1]['slowdown_from']}, {r['status']})", flush=True)
    finally:
        if load.poll() is None:
            os.killpg(load.pid, 15)
            load.wait(30)
    ratios = [r["ratio"] for r in rows]
    within = sum(0.5 <= x <= 2.0 for x in ratios)
    summary = {"runs": len(rows), "median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
               "max_ratio": max(ratios), "within_2x": within, "cores": os.cpu_count(), "max_runs": args.max_runs}
    print(f"actual/estimate: median {summary['median_ratio']:.2f}, range {summary['min_ratio']:.2f}–"
          f"{summary['max_ratio']:.2f}; {within} of {len(rows)} within 2×")
    name = "estimates" if args.max_runs == 1 else f"estimates_cap{args.max_runs}"
    write_result(name, {"summary": summary, "rows": rows, "load": " ".join(LOAD)}, args.quick)


if __name__ == "__main__":
    main()
