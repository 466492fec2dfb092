"""Accuracy against sparsity on LeNet-300-100 / MNIST, and the cost of finding
a ticket (issue 5 §3–§4).

    python bench/tradeoff.py [--quick] [--seeds 0,1,2] [--epochs 10] [--tag NAME]
    python bench/tradeoff.py --merge tradeoff_seed1 tradeoff_seed2   # seeds run apart → tradeoff.json

Per seed: dense; IMP rewound to init and to an early iteration (one run each,
every round recorded, 18 rounds reach 1.8% remaining); concave log and ℓ1 with
target_sparsity at each level; random pruning with the per-layer density of
the concave-log ticket at each level. Each method is then read at the levels
50/20/10/5/2% remaining (IMP: the round closest to the level).
Cost: concave-log (one search + one retrain) against IMP up to its first round
at ≤ 5% remaining, wall time and test accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path

from common import run_timed, scratch_store, write_result

from engine.config import RunConfig
from engine.data import default_data_dir, mnist_available

LEVELS = [0.5, 0.2, 0.1, 0.05, 0.02]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--search-epochs", type=int, default=6)
    ap.add_argument("--early-iter", type=int, default=200, help="IMP late-rewinding point (iterations)")
    ap.add_argument("--tag", default="", help="write results/tradeoff_<tag>.json (e.g. one seed per process)")
    ap.add_argument("--merge", nargs="+", metavar="RESULT", help="add these results files' seeds to tradeoff.json")
    ap.add_argument("--methods", default="dense,imp,concave,random",
                    help="which to run (e.g. concave,random after a change that leaves dense and IMP alone); "
                         "the cost comparison needs imp and concave")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge)
        return
    quick = args.quick or not mnist_available(default_data_dir())
    levels = [0.5, 0.2] if quick else LEVELS
    seeds = [0] if quick else [int(s) for s in args.seeds.split(",")]
    ep, sep = (1, 1) if quick else (args.epochs, args.search_epochs)
    base = dict(model="lenet300", dataset="digits" if quick else "mnist", batch_size=128, lr=1e-3, device="cpu")
    store = scratch_store()
    rows, cost = [], []
    methods = set(args.methods.split(","))
    for seed in seeds:
        if "dense" not in methods:
            dense = None
        else:
            _, dense = run_timed(store, RunConfig.from_dict({**base, "method": "dense", "epochs": ep, "seed": seed}))
            rows.append({"seed": seed, "method": "dense", "level": 1.0, "remaining": 1.0,
                         "test_accuracy": dense["test_accuracy"], "seconds": dense["measured_seconds"]})
        n_rounds = 3 if quick else 18
        imp_runs = {}
        for name, rewind in (("imp-init", "init"), ("imp-early", f"iter:{5 if quick else args.early_iter}")) \
                if "imp" in methods else ():
            run_id, _ = run_timed(store, RunConfig.from_dict({**base, "method": "imp", "rounds": n_rounds,
                                                            "prune_fraction": 0.2, "epochs": ep, "seed": seed,
                                                            "rewind": rewind}))
            rounds = store.metrics(run_id, kind="round")
            imp_runs[name] = rounds
            for level in levels:
                r = min(rounds, key=lambda r: abs(r["remaining"] - level))
                rows.append({"seed": seed, "method": name, "level": level, "remaining": r["remaining"],
                             "test_accuracy": r["test_acc"], "seconds": sum(x["seconds"] for x in rounds
                                                                              if x["round"] <= r["round"])})
        for level in levels:
            if "concave" not in methods:
                continue
            for reg in ("log", "l1"):
                run_id, s = run_timed(store, RunConfig.from_dict({
                    **base, "method": "concave", "regularizer": reg, "lam": 1.0, "target_sparsity": 1 - level,
                    "epochs": sep, "retrain_epochs": ep, "seed": seed}))
                rows.append({"seed": seed, "method": f"concave-{reg}", "level": level, "remaining": s["remaining"],
                             "test_accuracy": s["test_accuracy"], "seconds": s["measured_seconds"]})
                if reg == "log":
                    log_id, log_s = run_id, s
            if "random" in methods:
                _, s = run_timed(store, RunConfig.from_dict({**base, "method": "random", "random_from": log_id,
                                                           "epochs": ep, "seed": seed}))
                rows.append({"seed": seed, "method": "random", "level": level, "remaining": s["remaining"],
                             "test_accuracy": s["test_accuracy"], "seconds": s["measured_seconds"]})
            if imp_runs and (level == 0.05 or (quick and level == levels[-1])):
                imp = imp_runs["imp-init"]
                first = next((r for r in imp if r["remaining"] <= max(level, log_s["remaining"]) + 1e-9), imp[-1])
                imp_seconds = sum(r["seconds"] for r in imp if r["round"] <= first["round"])
                cost.append({"seed": seed, "concave_seconds": log_s["measured_seconds"],
                             "concave_remaining": log_s["remaining"], "concave_accuracy": log_s["test_accuracy"],
                             "imp_seconds": imp_seconds, "imp_round": first["round"],
                             "imp_remaining": first["remaining"], "imp_accuracy": first["test_acc"],
                             "time_ratio": log_s["measured_seconds"] / imp_seconds,
                             "accuracy_gap_pp": 100 * (log_s["test_accuracy"] - first["test_acc"])})
        for row in [r for r in rows if r["seed"] == seed]:
            print(f"seed {row['seed']} {row['method']:<13} level {row['level']:<5} remaining {row['remaining']:.4f}"
                  f"  test acc {row['test_accuracy']:.4f}  {row['seconds']:.1f} s", flush=True)
        if cost:
            c = cost[-1]
            print(f"seed {seed} cost: concave {c['concave_seconds']:.1f} s ({c['concave_accuracy']:.4f}) vs IMP "
                  f"{c['imp_seconds']:.1f} s to round {c['imp_round']} ({c['imp_accuracy']:.4f}); "
                  f"ratio {c['time_ratio']:.3f}, gap {c['accuracy_gap_pp']:+.2f} pp", flush=True)
    write_result("tradeoff" + (f"_{args.tag}" if args.tag else ""),
                 {"levels": levels, "seeds": seeds, "epochs": ep, "search_epochs": sep,
                  "rows": rows, "cost": cost}, quick)


def merge(names: list[str]) -> None:
    """Seeds run in separate processes (same settings) joined into tradeoff.json; a seed
    already there is replaced. Each part keeps its machine line in `parts`."""
    import json

    from common import RESULTS
    main_path = RESULTS / "tradeoff.json"
    out = json.loads(main_path.read_text())
    out.setdefault("parts", [{"seeds": out["seeds"], "machine": out["machine"]}])
    for name in names:
        part = json.loads((RESULTS / f"{Path(name).stem}.json").read_text())
        for key in ("levels", "epochs", "search_epochs"):
            if part[key] != out[key]:
                raise SystemExit(f"{name}: {key} {part[key]} differs from tradeoff.json's {out[key]}")
        new = set(part["seeds"])
        out["rows"] = [r for r in out["rows"] if r["seed"] not in new] + part["rows"]
        out["cost"] = [c for c in out["cost"] if c["seed"] not in new] + part["cost"]
        out["seeds"] = sorted(set(out["seeds"]) | new)
        out["parts"].append({"seeds": part["seeds"], "machine": part["machine"], "note": part.get("note", "")})
    main_path.write_text(json.dumps(out, indent=2))
    print(f"{main_path.name}: seeds {out['seeds']}, {len(out['rows'])} rows")


if __name__ == "__main__":
    main()
