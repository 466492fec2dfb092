"""Honest estimates in a burst (issue 22, item 4): many students launch within seconds of
each other on one server. Real workers on a scratch store; each launch is made as the app
makes it (the estimate of its result from the store's runs and the machine's load, shown,
then recorded with the run by jobs.submit, under the student's name); launches that arrive
in the same instant are placed one after the other (ui.estimate.launch_estimates). Then it
waits for every run and compares each estimate with the actual time from launch to result.

    python bench/burst.py            # 20 launches by 20 students within 40 s
    python bench/burst.py --quick    # 4 launches within 6 s

Writes bench/results/burst[_quick].json: per launch the estimate, the actual time and
estimate / actual; their median and range; the load average at the start and the end.
Target: every estimate within 0.5–2× of the actual time.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_result  # noqa: E402

# Small digits runs of three kinds (a class tries different things), each launch a new seed.
KINDS = [
    {"model": "logreg", "dataset": "digits", "method": "dense", "epochs": 2, "batch_size": 64},
    {"model": "logreg", "dataset": "digits", "method": "concave", "lam": 5.0, "epochs": 2, "retrain_epochs": 1,
     "batch_size": 64},
    {"model": "lenet300", "dataset": "digits", "method": "dense", "epochs": 1, "batch_size": 64},
]
ENDED = ("done", "failed", "cancelled", "interrupted")


def arrivals(n: int, span: float, seed: int = 0) -> list[float]:
    """n launch times in [0, span] seconds, the first at 0 (a class does not launch evenly)."""
    rng = random.Random(seed)
    return [0.0, *sorted(rng.uniform(0, span) for _ in range(n - 1))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--launches", type=int, default=None)
    ap.add_argument("--within", type=float, default=None, help="seconds over which the launches arrive")
    ap.add_argument("--max-runs", type=int, default=1, help="LOTTERY_MAX_RUNS of the benchmark's store")
    args = ap.parse_args()
    n = args.launches or (4 if args.quick else 20)
    span = args.within if args.within is not None else (6.0 if args.quick else 40.0)
    home = Path(tempfile.mkdtemp(prefix="lottery-bench-burst-"))
    os.environ.update(LOTTERY_HOME=str(home), LOTTERY_MAX_RUNS=str(args.max_runs), LOTTERY_GPUS="",
                      LOTTERY_MAX_PER_PERSON="3")
    from engine import jobs, owners
    from engine.store import Store
    from ui import estimate

    store = Store(home)
    times = arrivals(n, span)
    plan = [(f"student{k + 1:02d}", {**KINDS[k % len(KINDS)], "seed": k}) for k in range(n)]
    load_start = os.getloadavg()
    launched: list[dict] = []
    t0, k = time.time(), 0
    while k < n:
        time.sleep(max(0.0, t0 + times[k] - time.time()))
        due = [i for i in range(k, n) if t0 + times[i] <= time.time()]     # arrived together
        ests = estimate.launch_estimates([plan[i] for i in due], store.list_runs(), estimate.machine_now(),
                                         owners.max_per_person())
        for i, t in zip(due, ests):
            owner, cfg = plan[i]
            rid = jobs.submit(cfg, home, owner=owner, estimate=t)
            launched.append({"id": rid, "owner": owner, "kind": f"{cfg['model']} {cfg['method']}",
                             "at_s": round(time.time() - t0, 2), "together": len(due), "estimate_s": t})
        k = due[-1] + 1
    deadline = time.time() + 120 + 60 * n
    while time.time() < deadline:
        jobs.pump(home)             # (workers pump when they finish; this covers a slow start)
        if all(store.get_run(r["id"])["status"] in ENDED for r in launched):
            break
        time.sleep(1.0)
    else:
        raise TimeoutError("runs not finished in time")
    load_end = os.getloadavg()
    rows = []
    for row in launched:
        r = store.get_run(row["id"])
        actual = r["finished"] - r["created"]
        est = row["estimate_s"]
        rows.append({**row, "status": r["status"], "estimate_s": round(est, 1) if est else None,
                     "actual_s": round(actual, 1), "queued_s": round((r["claimed"] or r["created"]) - r["created"], 1),
                     "worker_start_s": round(r["started"] - r["claimed"], 1) if r["started"] and r["claimed"]
                     else None, "estimate_over_actual": round(est / actual, 3) if est else None})
        print(f"{row['owner']} {row['kind']:<18} at {row['at_s']:5.1f} s  estimate {est or 0:6.1f} s  actual "
              f"{actual:6.1f} s  ratio {(est or 0) / actual:5.2f}  ({r['status']})", flush=True)
    ratios = [r["estimate_over_actual"] for r in rows if r["estimate_over_actual"] is not None]
    summary = {"launches": n, "within_s": span, "done": sum(r["status"] == "done" for r in rows),
               "median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
               "within_half_to_2x": sum(0.5 <= x <= 2.0 for x in ratios), "max_runs": args.max_runs,
               "cores": len(os.sched_getaffinity(0)), "load_at_start": [round(x, 2) for x in load_start],
               "load_at_end": [round(x, 2) for x in load_end]}
    print(f"estimate/actual: median {summary['median_ratio']:.2f}, range {summary['min_ratio']:.2f}–"
          f"{summary['max_ratio']:.2f}; {summary['within_half_to_2x']} of {len(ratios)} within 0.5–2×; load "
          f"{load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end")
    write_result("burst", {"summary": summary, "rows": rows}, args.quick)


if __name__ == "__main__":
    main()
