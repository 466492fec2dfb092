"""The paper's concavity claim, measured (issue 19 §6).

    python bench/concavity.py [--quick] [--seeds N] [--sizes default,under,large] [--extra exp]
    python bench/concavity.py --no-log --extra exp      # ℓ1 and exp only, to concavity_exp.json
    python bench/concavity.py --report                  # the Markdown tables of concavity.json

The claim: a strictly concave mask penalty (log) recovers a sparse target better than ℓ1, over
a wider range of λ. Measured on the planted problem (logistic regression on data generated from
k of d features, so the right mask m* is known) over several seeds — each seed draws both the
problem (data_params.planted_seed) and the run (seed) — and several problem sizes, for ℓ1, log
from m = 1, log warm-started from the ℓ1 run at the same λ, log warm-started from the ℓ1 run chosen
on validation with its own λ swept over the grid (the two-stage recipe a user can follow), and
optionally more concave penalties from m = 1, on one λ grid (every penalty on ℓ1's scale,
R(0) = 0, R(1) = 1).

Per seed and penalty, λ is chosen the way a user could: the smallest validation loss of the
retrained ticket (never the recovery error, which needs the unknown m*). At that λ: ‖m* − m̃‖₂
(soft mask at the search end) and support errors (false positives + false negatives of the
ticket). Also the oracle (the best over the grid) and how many grid λ recover the support
exactly, with λ_max/λ_min of that range. Means come with 95 % bootstrap intervals across seeds,
rates with Wilson intervals, and log vs ℓ1 is compared seed by seed.

The runs go in-process on a scratch store on tmpfs when there is one (the store's fsyncs
dominate these sub-second runs otherwise). Results are rewritten after every (seed, size) block,
so an interrupted run leaves its finished part in the JSON ("complete": false)."""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, machine, run_timed

# The Theory page's run (model, optimiser, search epochs, batch) with a longer retrain, which only
# serves the held-out criterion (the recovery figures come from the search) and a larger
# validation share, so that the criterion sees more than a few dozen samples.
BASE = dict(model="logreg", dataset="planted", method="concave", epochs=30, retrain_epochs=10, batch_size=64,
            lr=0.01, val_fraction=0.2)
SIZES = {
    "default": {"dim": 100, "k": 10, "n_train": 400},    # the Theory page's default problem
    "under": {"dim": 200, "k": 5, "n_train": 150},       # fewer samples than features
    "large": {"dim": 200, "k": 10, "n_train": 800},
}
N_TEST = 500                                             # test accuracy is reported, never used to choose
LAMS = [round(0.1 * 2 ** (i / 2), 4) for i in range(17)]   # 0.1 … 25.6, factor √2
WARM = "log warm-started from l1"                 # from the ℓ1 run at the same λ
WARM_CHOSEN = "log warm-started from chosen l1"    # from the ℓ1 run chosen on validation, λ swept again


# ------------------------------------------------------------------ statistics (pure, unit-tested)


def select_on_validation(rows: list[dict]) -> dict:
    """The row a user would pick without knowing m*: the smallest validation loss of the retrained
    ticket; on a tie the larger λ (the sparser ticket)."""
    if not rows:
        raise ValueError("select_on_validation needs at least one row")
    return min(rows, key=lambda r: (r["val_loss"], -r["lam"]))


def exact_range(rows: list[dict]) -> dict:
    """Where on the λ grid the support came back exactly: how many grid points, the smallest and
    largest such λ, their ratio, and whether the exact points are contiguous on the grid."""
    grid = sorted(rows, key=lambda r: r["lam"])
    idx = [i for i, r in enumerate(grid) if r["exact"]]
    if not idx:
        return {"points": 0, "of": len(grid), "lam_min": None, "lam_max": None, "ratio": None, "contiguous": None}
    lo, hi = grid[idx[0]]["lam"], grid[idx[-1]]["lam"]
    return {"points": len(idx), "of": len(grid), "lam_min": lo, "lam_max": hi, "ratio": hi / lo,
            "contiguous": idx[-1] - idx[0] + 1 == len(idx)}


def mean_ci(values: list[float], level: float = 0.95, n_boot: int = 10000, seed: int = 0) -> dict:
    """Mean with a percentile-bootstrap interval for the mean (resampling the seeds)."""
    vals = [float(v) for v in values]
    if not vals:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    rng = random.Random(seed)
    n = len(vals)
    means = sorted(sum(rng.choice(vals) for _ in range(n)) / n for _ in range(n_boot))
    a = (1 - level) / 2
    return {"mean": sum(vals) / n, "lo": means[int(a * n_boot)], "hi": means[min(n_boot - 1, int((1 - a) * n_boot))],
            "n": n}


def wilson(successes: int, n: int, z: float = 1.959964) -> dict:
    """A proportion with its 95 % Wilson score interval (sane at 0 of n and n of n)."""
    if n == 0:
        return {"rate": None, "lo": None, "hi": None, "k": 0, "n": 0}
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return {"rate": p, "lo": max(0.0, centre - half), "hi": min(1.0, centre + half), "k": successes, "n": n}


def paired(a: list[float], b: list[float], lower_is_better: bool = True) -> dict:
    """Seed-by-seed comparison of two penalties' figures: how often each wins, the ties, and the
    mean difference a − b with its bootstrap interval."""
    if len(a) != len(b):
        raise ValueError(f"paired needs one figure per seed on both sides, got {len(a)} and {len(b)}")
    sign = 1 if lower_is_better else -1
    a_wins = sum(sign * (x - y) < 0 for x, y in zip(a, b))
    b_wins = sum(sign * (x - y) > 0 for x, y in zip(a, b))
    return {"a_wins": a_wins, "b_wins": b_wins, "ties": len(a) - a_wins - b_wins,
            "mean_diff": mean_ci([x - y for x, y in zip(a, b)])}


def seed_figures(rows: list[dict]) -> dict:
    """One seed's figures for one penalty over the λ grid."""
    chosen = select_on_validation(rows)
    best = min(rows, key=lambda r: (r["errors"], r["distance"]))
    return {"selected_lam": chosen["lam"], "selected_errors": chosen["errors"], "selected_fp": chosen["fp"],
            "selected_fn": chosen["fn"], "selected_distance": chosen["distance"], "selected_exact": chosen["exact"],
            "selected_test_accuracy": chosen["test_accuracy"],
            "oracle_errors": best["errors"], "oracle_lam": best["lam"],
            "oracle_distance": min(r["distance"] for r in rows), "exact_range": exact_range(rows)}


def summarise(per_seed: dict[str, dict[int, dict]]) -> dict:
    """Across seeds, per penalty: means with intervals, exact-recovery rates, and log vs ℓ1 paired."""
    out = {}
    for pen, by_seed in per_seed.items():
        f = list(by_seed.values())
        ratios = [x["exact_range"]["ratio"] for x in f if x["exact_range"]["ratio"] is not None]
        out[pen] = {
            "seeds": len(f),
            "selected": {key: mean_ci([x[f"selected_{key}"] for x in f]) for key in ("errors", "fp", "fn", "distance")}
            | {"exact": wilson(sum(x["selected_exact"] for x in f), len(f))},
            "oracle": {"errors": mean_ci([x["oracle_errors"] for x in f]),
                       "distance": mean_ci([x["oracle_distance"] for x in f]),
                       "exact_somewhere": wilson(sum(x["exact_range"]["points"] > 0 for x in f), len(f))},
            "exact_range": {"points": mean_ci([x["exact_range"]["points"] for x in f]),
                            "seeds_with_any": len(ratios),
                            "ratio_median": statistics.median(ratios) if ratios else None,
                            "ratio_min": min(ratios) if ratios else None, "ratio_max": max(ratios) if ratios else None},
        }
    comparisons = {}
    for pen in per_seed:
        if pen == "l1" or "l1" not in per_seed:
            continue
        seeds = sorted(set(per_seed[pen]) & set(per_seed["l1"]))
        a, b = [per_seed[pen][s] for s in seeds], [per_seed["l1"][s] for s in seeds]
        comparisons[f"{pen} vs l1"] = {
            "seeds": len(seeds),
            "selected_errors": paired([x["selected_errors"] for x in a], [x["selected_errors"] for x in b]),
            "selected_distance": paired([x["selected_distance"] for x in a], [x["selected_distance"] for x in b]),
            "oracle_errors": paired([x["oracle_errors"] for x in a], [x["oracle_errors"] for x in b]),
            "exact_points": paired([x["exact_range"]["points"] for x in a], [x["exact_range"]["points"] for x in b],
                                   lower_is_better=False)}
    return {"penalties": out, "paired": comparisons}


# ------------------------------------------------------------------ runs


def scratch_store():
    """A throw-away store, on tmpfs where there is one: each run's many small fsynced writes
    cost more than its training on a disk."""
    from engine.store import Store
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() else None
    return Store(tempfile.mkdtemp(prefix="lottery-concavity-", dir=where))


def val_loss(store, run_id: str) -> float:
    """Validation loss after the last retraining epoch (the run's metric log records it)."""
    rows = [r for r in store.metrics(run_id, "epoch") if r.get("phase") == "retrain"]
    return float(rows[-1]["loss_task"])


def one_run(store, cfg_dict: dict) -> tuple[str, dict]:
    from engine.config import RunConfig
    run_id, s = run_timed(store, RunConfig.from_dict(cfg_dict))
    r = s["recovery"]
    fp, fn = r["kept"] - r["hits"], r["support_size"] - r["hits"]
    return run_id, {"lam": cfg_dict["lam"], "distance": r["distance"], "binary_distance": r["binary_distance"],
                    "kept": r["kept"], "hits": r["hits"], "fp": fp, "fn": fn, "errors": fp + fn, "exact": r["exact"],
                    "val_loss": val_loss(store, run_id), "val_accuracy": s["val_accuracy"],
                    "test_accuracy": s["test_accuracy"], "seconds": round(s["measured_seconds"], 3)}


PENALTIES = ["l1", "log", WARM, WARM_CHOSEN]
RUN_COLUMNS = ["size", "seed", "penalty", "lam", "source_lam", "distance", "binary_distance", "kept", "hits", "fp",
               "fn", "errors", "exact", "val_loss", "val_accuracy", "test_accuracy", "seconds"]


def write_result(name: str, data: dict) -> Path:
    """The results JSON, its run rows as a table (one line per run: thousands of runs as keyed,
    indented objects made a megabyte)."""
    def cell(v):
        return round(v, 6) if isinstance(v, float) else v
    rows = [[cell(r.get(c)) for c in RUN_COLUMNS] for r in data["runs"]]
    head = json.dumps({"machine": machine(), **{k: v for k, v in data.items() if k != "runs"}}, indent=2)
    text = (head[:-2] + ',\n  "runs": {\n    "columns": ' + json.dumps(RUN_COLUMNS) + ',\n    "rows": [\n      '
            + ",\n      ".join(json.dumps(row) for row in rows) + "\n    ]\n  }\n}\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(text)
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def run_rows(data: dict) -> list[dict]:
    """The results file's run table as one dict per run."""
    cols = data["runs"]["columns"]
    return [dict(zip(cols, row)) for row in data["runs"]["rows"]]


def run_block(store, base: dict, params: dict, seed: int, lams: list[float], extra: list[str],
              logs: bool = True) -> dict[str, list]:
    """Every penalty over the λ grid for one (problem size, seed); ℓ1 and `extra` only when not `logs`."""
    cfg0 = {**base, "seed": seed, "data_params": {**params, "n_test": N_TEST, "planted_seed": seed}}
    rows: dict[str, list] = {p: [] for p in (PENALTIES if logs else ["l1"]) + extra}
    l1_ids = {}
    for lam in lams:
        l1_ids[lam], rows_l1 = one_run(store, {**cfg0, "regularizer": "l1", "lam": lam})
        rows["l1"].append(rows_l1)
        if logs:
            rows["log"].append(one_run(store, {**cfg0, "regularizer": "log", "lam": lam})[1])
            rows[WARM].append(one_run(store, {**cfg0, "regularizer": "log", "lam": lam,
                                              "warm_start": l1_ids[lam]})[1])
        for pen in extra:
            rows[pen].append(one_run(store, {**cfg0, "regularizer": pen, "lam": lam})[1])
    if logs:    # the two-stage recipe a user can follow: ℓ1 chosen on validation, then log over the grid from it
        source = select_on_validation(rows["l1"])["lam"]
        for lam in lams:
            _, r = one_run(store, {**cfg0, "regularizer": "log", "lam": lam, "warm_start": l1_ids[source]})
            rows[WARM_CHOSEN].append({**r, "source_lam": source})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a tiny smoke run (2 seeds, one small problem, 2 λ)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--sizes", default="default,under,large", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--extra", default="", help="more concave penalties to run from m = 1 ('' for none)")
    ap.add_argument("--report", action="store_true", help="print the results file's tables (Markdown) and stop")
    ap.add_argument("--no-log", action="store_true",
                    help="run only ℓ1 and --extra (written to concavity_<extra>.json, the main file untouched)")
    args = ap.parse_args()
    if args.no_log and not args.extra:
        ap.error("--no-log runs ℓ1 and the --extra penalties: name at least one with --extra (e.g. exp)")
    extra = [p for p in args.extra.split(",") if p]
    out_name = "concavity_quick" if args.quick else "concavity" + ("_" + "_".join(extra) if args.no_log else "")
    if args.report:
        print(report(json.loads((RESULTS / f"{out_name}.json").read_text())))
        return

    if args.quick:
        base = {**BASE, "epochs": 4, "retrain_epochs": 2}
        sizes = {"tiny": {"dim": 20, "k": 3, "n_train": 120}}
        seeds, lams, extra = [0, 1], [0.2, 1.0], []
    else:
        base = BASE
        sizes = {size: SIZES[size] for size in args.sizes.split(",")}
        seeds, lams = list(range(args.seeds)), LAMS

    store = scratch_store()
    runs: list[dict] = []
    per_seed: dict[str, dict[str, dict[int, dict]]] = {s: {} for s in sizes}
    t0 = time.time()

    def write(complete: bool):
        write_result(out_name, {
            "complete": complete, "elapsed_seconds": round(time.time() - t0, 1),
            "settings": {"base": base, "sizes": sizes, "n_test": N_TEST, "lams": lams, "seeds": seeds,
                         "penalties": (PENALTIES if not args.no_log else ["l1"]) + extra,
                         "seeding": "seed s sets both data_params.planted_seed and the run seed",
                         "selection": "per seed and penalty, the λ with the smallest validation loss of the "
                                      "retrained ticket (ties: larger λ); recovery errors never choose",
                         "intervals": "95 % percentile bootstrap of the mean over seeds (10 000 resamples); "
                                      "rates: 95 % Wilson"},
            "summary": {size: summarise(per_seed[size]) for size in sizes if per_seed[size]},
            "per_seed": {size: {pen: {str(s): f for s, f in d.items()} for pen, d in per_seed[size].items()}
                         for size in sizes},
            "runs": runs})

    try:
        for seed in seeds:
            for size, params in sizes.items():
                t = time.time()
                rows = run_block(store, base, params, seed, lams, extra, logs=not args.no_log)
                for pen, pen_rows in rows.items():
                    runs.extend({"size": size, "seed": seed, "penalty": pen, **r} for r in pen_rows)
                    per_seed[size].setdefault(pen, {})[seed] = seed_figures(pen_rows)
                figs = per_seed[size]
                print(f"seed {seed} {size:<8} {time.time() - t:6.1f} s  " + "  ".join(
                    f"{pen}: sel err {figs[pen][seed]['selected_errors']} (λ {figs[pen][seed]['selected_lam']:g}), "
                    f"exact at {figs[pen][seed]['exact_range']['points']}" for pen in rows), flush=True)
                write(complete=False)
        write(complete=True)
    finally:
        shutil.rmtree(store.home, ignore_errors=True)


def report(data: dict) -> str:
    """The summary as Markdown tables (what docs/RESULTS.md quotes): `--report` prints it."""
    def ci(c, fmt="{:.2f}"):
        return "–" if c["mean"] is None else f"{fmt.format(c['mean'])} [{fmt.format(c['lo'])}, {fmt.format(c['hi'])}]"

    def rate(w):
        return f"{w['k']}/{w['n']} [{w['lo']:.2f}, {w['hi']:.2f}]"

    lines = []
    for name, summ in data["summary"].items():
        p = data["settings"]["sizes"][name]
        lines += [f"**{name}**: d = {p['dim']}, k = {p['k']}, n = {p['n_train']} ({summ['penalties']['l1']['seeds']} "
                  "seeds)", "",
                  "| penalty | support errors at the chosen λ | FP | FN | ‖m* − m̃‖ at the chosen λ "
                  "| exact at the chosen λ | oracle errors (best λ) | exact somewhere | exact λ points (of "
                  f"{len(data['settings']['lams'])}) | λ_max/λ_min of the exact range, median [min, max] |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for pen, s in summ["penalties"].items():
            r = s["exact_range"]
            ratio = "–" if r["ratio_median"] is None else \
                f"{r['ratio_median']:.2f} [{r['ratio_min']:.2f}, {r['ratio_max']:.2f}] ({r['seeds_with_any']} seeds)"
            lines.append(f"| {pen} | {ci(s['selected']['errors'])} | {ci(s['selected']['fp'])} | "
                         f"{ci(s['selected']['fn'])} | {ci(s['selected']['distance'], '{:.3f}')} | "
                         f"{rate(s['selected']['exact'])} | {ci(s['oracle']['errors'])} | "
                         f"{rate(s['oracle']['exact_somewhere'])} | {ci(r['points'])} | {ratio} |")
        lines += ["", "| paired, per seed | support errors at the chosen λ: wins / ties / losses, mean diff | "
                      "‖m* − m̃‖ at the chosen λ | oracle errors | exact λ points (more wins) |",
                  "|---|---|---|---|---|"]
        for cmp_name, c in summ["paired"].items():
            cells = [f"{c[key]['a_wins']} / {c[key]['ties']} / {c[key]['b_wins']}, "
                     f"{ci(c[key]['mean_diff'], '{:+.2f}' if key != 'selected_distance' else '{:+.3f}')}"
                     for key in ("selected_errors", "selected_distance", "oracle_errors", "exact_points")]
            lines.append(f"| {cmp_name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
