"""Four families of ticket finders on LeNet-300-100 / MNIST (issue 14):
IMP (rewind to init), concave-log, continuous sparsification (CS), pruning at
initialization (SNIP, GraSP, SynFlow, magnitude at init) and random pruning.

    python bench/families.py [--quick] [--seeds 0,1,2] [--levels 0.2,0.05,0.02,0.005] [--epochs 10]
                             [--search-epochs 6] [--cs-rounds 3] [--cs-epochs 2] [--tag NAME]

Every final training (IMP rounds, concave/CS retrain, PaI/random training) has
the same `--epochs`. Per seed: one IMP run (p = 0.2 per round, every round
recorded, read at the round closest to each level); concave-log and CS with
target_sparsity = 1 − level (λ adapts; the achieved remaining is reported, not
assumed); each PaI scorer and random (global) at each level. For every run the
wall time of finding the ticket (IMP: cumulative up to that round; concave/CS:
search; PaI: scoring) and the total epochs spent are recorded.

Checks printed and stored (`checks`):
- layer collapse at 0.1% remaining: per-layer kept weights of magnitude, SNIP,
  GraSP and SynFlow masks at init (scoring only, no training);
- PaI trails IMP and concave at 5% and 2%;
- CS reaches IMP's accuracy at ≤ 5% in fewer total epochs than IMP;
- scoring cost as a fraction of one training epoch (goal ≤ 0.1 for SNIP and magnitude).
`--quick` runs digits, one seed, two levels, one epoch: a smoke test of the script.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import run_timed, scratch_store, write_result

from engine import masking
from engine.config import RunConfig
from engine.data import Batches, default_data_dir, load_dataset, mnist_available
from engine.methods import pai
from engine.models import build_model

SCORERS = ("snip", "grasp", "synflow", "magnitude", "random")
METHODS = ("imp-init", "concave-log", "cs", *SCORERS[:-1], "random")


def search_seconds(store, run_id) -> float:
    """Wall time of the search phases (the ticket-finding part of a concave/CS run)."""
    rows = [r for r in store.metrics(run_id, kind="epoch") if r["phase"] == "search"]
    return max((r["wall"] for r in rows), default=0.0)


def paths(mask: dict[str, torch.Tensor]) -> float:
    """Input→output paths through the kept weights of an MLP (1ᵀ M_L ⋯ M_1 1): 0 = disconnected."""
    v = None
    for m in mask.values():
        m = m.double()
        v = m.sum(1) if v is None else m @ v
    return float(v.sum())


def collapse(dataset: str, remaining: float, seed: int, batch_size: int, iters: int) -> dict:
    """Per-layer kept weights of each PaI scorer's mask at `remaining`, at init (no training)."""
    splits = load_dataset(dataset, default_data_dir(), val_fraction=0.1, split_seed=0, device=torch.device("cpu"))
    torch.manual_seed(seed)
    model = build_model("lenet300", splits.in_shape, splits.num_classes)
    gen = torch.Generator().manual_seed(seed + 2)
    xb, yb = next(iter(Batches(splits.train_x, splits.train_y, batch_size, shuffle=True, generator=gen)))
    out = {}
    for scorer in ("magnitude", "snip", "grasp", "synflow"):
        t = time.time()
        if scorer == "synflow":
            mask = pai.synflow_masks(model, splits.in_shape, remaining, "global", iters)
        else:
            def loss(o, y, scorer=scorer):
                return torch.nn.functional.cross_entropy(o / (pai.GRASP_T if scorer == "grasp" else 1.0), y)
            scores = pai.scores_for(scorer, model, loss, [(xb, yb)], gen)
            mask = masking.topk_masks(scores, remaining, "global")
        rep = masking.sparsity_report(mask)
        out[scorer] = {"seconds": time.time() - t, "paths": paths(mask),
                       "layers": {n: {"kept": d["kept"], "total": d["total"], "dead_units": d["dead_units"]}
                                  for n, d in rep["layers"].items()}}
        model.zero_grad(set_to_none=True)
    return out


def scoring_cost(dataset: str, remaining: float, seed: int, batch_size: int, iters: int,
                 probe_steps: int) -> dict:
    """Scoring time of each scorer against one training epoch of the same network, the
    epoch timed as `probe_steps` Adam steps on the dense network scaled to the epoch's steps."""
    splits = load_dataset(dataset, default_data_dir(), val_fraction=0.1, split_seed=0, device=torch.device("cpu"))
    torch.manual_seed(seed)
    model = build_model("lenet300", splits.in_shape, splits.num_classes)
    batches = Batches(splits.train_x, splits.train_y, batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    state = masking.weights_state(model)
    warmup = 5  # first steps allocate optimizer state: not timed
    t, n = time.time(), -warmup
    for xb, yb in batches:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        opt.step()
        n += 1
        if n == 0:
            t = time.time()
        if n == probe_steps:
            break
    epoch_s = (time.time() - t) / max(1, n) * len(batches)
    masking.load_weights_state(model, state)
    gen = torch.Generator().manual_seed(seed + 2)
    xb, yb = next(iter(Batches(splits.train_x, splits.train_y, batch_size, shuffle=True, generator=gen)))
    out = {"epoch_seconds_estimate": epoch_s, "probe_steps": n, "steps_per_epoch": len(batches), "scorers": {}}
    for scorer in SCORERS:
        t = time.time()
        if scorer == "synflow":
            pai.synflow_masks(model, splits.in_shape, remaining, "global", iters)
        else:
            def loss(o, y, scorer=scorer):
                return torch.nn.functional.cross_entropy(o / (pai.GRASP_T if scorer == "grasp" else 1.0), y)
            masking.topk_masks(pai.scores_for(scorer, model, loss, [(xb, yb)], gen), remaining, "global")
        secs = time.time() - t
        model.zero_grad(set_to_none=True)
        out["scorers"][scorer] = {"seconds": secs, "epoch_fraction": secs / epoch_s}
        print(f"scoring cost {scorer:<9}: {secs:.3f} s = {secs / epoch_s:.4f} of one epoch "
              f"(epoch ≈ {epoch_s:.1f} s)", flush=True)
    return out


def mean_std(xs):
    return (statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0) if xs else (None, None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--levels", default="0.2,0.05,0.02,0.005")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of every final training")
    ap.add_argument("--search-epochs", type=int, default=6, help="concave-log search epochs")
    ap.add_argument("--cs-rounds", type=int, default=3)
    ap.add_argument("--cs-epochs", type=int, default=2, help="CS search epochs per round")
    ap.add_argument("--cs-lam", type=float, default=1.0)
    ap.add_argument("--synflow-iters", type=int, default=100)
    ap.add_argument("--imp-fraction", type=float, default=0.2, help="IMP: fraction pruned per round")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threshold-mode", default="topk", choices=("topk", "tau"),
                    help="concave/CS ticket: the search's λ controller aims at the level, then topk trims "
                         "it to exactly the level (the same remaining as every other method; default) or "
                         "tau keeps what the search kept (m > τ, s > 0), which can miss")
    ap.add_argument("--tag", default="")
    ap.add_argument("--cost-only", action="store_true",
                    help="only the layer-collapse check at 0.1%% and the scoring cost (no training runs)")
    ap.add_argument("--probe-steps", type=int, default=50, help="steps timed to estimate one epoch")
    ap.add_argument("--reuse-cost", metavar="RESULT", help="take the collapse check and scoring cost from this "
                                                            "results file (e.g. families_cost) instead of measuring")
    ap.add_argument("--summarise", metavar="RESULT", help="recompute the table and checks of this results file "
                                                          "(e.g. families_e3) and write it back; no training")
    args = ap.parse_args()
    if args.summarise:
        import json

        from common import RESULTS
        path = RESULTS / f"{args.summarise}.json"
        result = json.loads(path.read_text())
        result.update(summarise(result, result["levels"]))
        path.write_text(json.dumps(result, indent=2))
        print(f"wrote {path}")
        return
    quick = args.quick or not mnist_available(default_data_dir())
    seeds = [0] if quick else [int(s) for s in args.seeds.split(",")]
    levels = [0.5, 0.2] if quick else [float(x) for x in args.levels.split(",")]
    ep = 1 if quick else args.epochs
    methods = args.methods.split(",")
    dataset = "digits" if quick else "mnist"
    base = dict(model="lenet300", dataset=dataset, batch_size=128, lr=1e-3, device="cpu")
    store = scratch_store()
    rows = []

    def add(seed, method, level, s, find_seconds, epochs_total, run_id):
        row = {"seed": seed, "method": method, "level": level, "remaining": s["remaining"],
               "test_accuracy": s["test_accuracy"], "find_seconds": find_seconds, "epochs_total": epochs_total,
               "wall_seconds": s.get("measured_seconds"), "run_id": run_id,
               "layers": {n: d["remaining"] for n, d in s["layers"].items()}}
        for k in ("scoring_seconds", "scoring_epoch_fraction", "search_remaining"):
            if k in s:
                row[k] = s[k]
        rows.append(row)
        print(f"seed {seed} {method:<12} level {level:<6} remaining {row['remaining']:.4f}  "
              f"test acc {row['test_accuracy']:.4f}  find {find_seconds:.1f} s  epochs {epochs_total}", flush=True)
        write_result(name, result, quick)   # partial results survive a stopped bench

    t_all = time.time()
    settings = {"dataset": dataset, "levels": levels, "seeds": seeds, "epochs": ep,
                "search_epochs": args.search_epochs, "cs_rounds": args.cs_rounds, "cs_epochs": args.cs_epochs,
                "cs_lam": args.cs_lam, "synflow_iters": args.synflow_iters, "methods": methods,
                "imp_fraction": args.imp_fraction, "threshold_mode": args.threshold_mode}
    name = "families" + (f"_{args.tag}" if args.tag else "")

    # ---- layer collapse at 0.1% remaining and scoring cost (scoring only: cheap)
    iters = 10 if quick else args.synflow_iters
    if args.reuse_cost:
        import json

        from common import RESULTS
        prev = json.loads((RESULTS / f"{args.reuse_cost}.json").read_text())
        coll, cost = prev["collapse_0.1%"], {**prev["scoring_cost"], "from": args.reuse_cost}
    else:
        coll = collapse(dataset, 0.001, seeds[0], 128, iters)
        cost = scoring_cost(dataset, 0.05, seeds[0], 128, iters, args.probe_steps)
    for scorer, c in coll.items():
        print(f"0.1% remaining, {scorer:<9}: " + ", ".join(f"{n} {d['kept']}/{d['total']}"
                                                           for n, d in c["layers"].items()), flush=True)
    result = {**settings, "collapse_0.1%": coll, "scoring_cost": cost, "rows": rows, "partial": True}
    write_result(name, result, quick)
    if args.cost_only:
        methods = []
        seeds = []

    for seed in seeds:
        for level in levels:
            for scorer in SCORERS:
                if scorer not in methods:
                    continue
                run_id, s = run_timed(store, RunConfig.from_dict({
                    **base, "method": "pai", "scorer": scorer, "target_sparsity": 1 - level, "epochs": ep,
                    "seed": seed, "synflow_iters": 10 if quick else args.synflow_iters}))
                add(seed, scorer, level, s, s["scoring_seconds"], ep, run_id)
            if "concave-log" in methods:
                run_id, s = run_timed(store, RunConfig.from_dict({
                    **base, "method": "concave", "regularizer": "log", "lam": 1.0, "target_sparsity": 1 - level,
                    "epochs": 1 if quick else args.search_epochs, "retrain_epochs": ep, "seed": seed,
                    "threshold_mode": args.threshold_mode}))
                add(seed, "concave-log", level, s, search_seconds(store, run_id),
                    (1 if quick else args.search_epochs) + ep, run_id)
            if "cs" in methods:
                rounds, cse = (1, 1) if quick else (args.cs_rounds, args.cs_epochs)
                run_id, s = run_timed(store, RunConfig.from_dict({
                    **base, "method": "cs", "lam": args.cs_lam, "target_sparsity": 1 - level, "rounds": rounds,
                    "epochs": cse, "retrain_epochs": ep, "seed": seed, "threshold_mode": args.threshold_mode}))
                add(seed, "cs", level, s, search_seconds(store, run_id), rounds * cse + ep, run_id)
        if "imp-init" in methods:
            p = args.imp_fraction
            n_rounds = 3 if quick else next(r for r in range(1, 200) if (1 - p) ** r <= min(levels) * 1.1)
            run_id, _ = run_timed(store, RunConfig.from_dict({**base, "method": "imp", "rounds": n_rounds,
                                                            "prune_fraction": p, "epochs": ep, "seed": seed}))
            rounds = store.metrics(run_id, kind="round")
            result.setdefault("imp_rounds", {})[str(seed)] = [
                {"round": r["round"], "remaining": r["remaining"], "test_acc": r["test_acc"],
                 "epochs": (r["round"] + 1) * ep, "seconds": r["seconds"]} for r in rounds]
            for level in levels:
                r = min(rounds, key=lambda r: abs(r["remaining"] - level))
                secs = sum(x["seconds"] for x in rounds if x["round"] <= r["round"])
                add(seed, "imp-init", level, {"remaining": r["remaining"], "test_accuracy": r["test_acc"],
                                              "layers": {}, "measured_seconds": secs},
                    secs, (r["round"] + 1) * ep, run_id)

    result.update(summarise(result, levels), partial=False, total_seconds=time.time() - t_all)
    write_result(name, result, quick)


def imp_at(rounds: list[dict], level: float) -> tuple[float, int] | None:
    """IMP's accuracy at exactly `level` remaining, interpolated between its two
    rounds around it (linear in log remaining), and the epochs IMP needs to get
    there (through the first round at or below the level). None outside its range."""
    import math
    rs = sorted(rounds, key=lambda r: -r["remaining"])
    for hi, lo in zip(rs, rs[1:]):
        if lo["remaining"] <= level <= hi["remaining"]:
            w = (math.log(hi["remaining"]) - math.log(level)) / (math.log(hi["remaining"]) - math.log(lo["remaining"]))
            at_or_below = min(r["epochs"] for r in rs if r["remaining"] <= level)
            return hi["test_acc"] + w * (lo["test_acc"] - hi["test_acc"]), at_or_below
    return None


def summarise(result: dict, levels: list[float]) -> dict:
    """Table (mean ± std per method and level) and the qualitative checks, from the
    rows, every IMP round (`imp_rounds`), the collapse check and the scoring cost."""
    rows, coll, cost = result["rows"], result["collapse_0.1%"], result["scoring_cost"]
    table = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        for level in levels:
            sel = [r for r in rows if r["method"] == m and r["level"] == level]
            if sel:
                acc, acc_sd = mean_std([r["test_accuracy"] for r in sel])
                rem, _ = mean_std([r["remaining"] for r in sel])
                fs, fs_sd = mean_std([r["find_seconds"] for r in sel])
                table[f"{m}@{level}"] = {"method": m, "level": level, "n": len(sel), "acc": acc, "acc_std": acc_sd,
                                         "remaining": rem, "find_seconds": fs, "find_seconds_std": fs_sd,
                                         "epochs_total": sel[0]["epochs_total"]}
    # IMP exactly at each level, interpolated between its rounds, per seed
    imp_exact = {}
    for level in levels:
        per_seed = [imp_at(rs, level) for rs in result.get("imp_rounds", {}).values()]
        per_seed = [x for x in per_seed if x is not None]
        if per_seed:
            acc, sd = mean_std([a for a, _ in per_seed])
            imp_exact[level] = {"acc": acc, "acc_std": sd, "epochs": max(e for _, e in per_seed), "n": len(per_seed)}
    checks = {}

    def acc(m, level):
        if m == "imp-init" and level in imp_exact:
            return imp_exact[level]["acc"]
        return (table.get(f"{m}@{level}") or {}).get("acc")

    # collapse: some layer keeps under 5% of its share under a uniform allocation (0.001 × its size)
    collapsed = {s: any(d["kept"] < 0.05 * 0.001 * d["total"] for d in c["layers"].values())
                 or c.get("paths", 1.0) == 0 for s, c in coll.items()}
    checks["layer_collapse_0.1%"] = {
        "kept_per_layer": {s: [d["kept"] for d in c["layers"].values()] for s, c in coll.items()},
        "collapsed": collapsed,
        "paths": {s: c.get("paths") for s, c in coll.items()},
        "holds": collapsed["magnitude"] and collapsed["snip"] and not collapsed["synflow"]
        and all(d["kept"] > 0 for d in coll["synflow"]["layers"].values()),
        "note": "collapsed = some layer keeps < 5% of its uniform share (0.1% of its weights); the claim: "
                "magnitude and SNIP collapse, SynFlow keeps every layer connected; paths = input→output "
                "paths through kept weights (0 = disconnected)"}
    for level in (0.05, 0.02):
        if level not in levels:
            continue
        best = [a for a in (acc("imp-init", level), acc("concave-log", level)) if a is not None]
        pai_accs = {s: acc(s, level) for s in SCORERS[:-1] if acc(s, level) is not None}
        if best and pai_accs:
            checks[f"pai_trails_imp_and_concave_at_{level}"] = {
                "imp": acc("imp-init", level), "concave": acc("concave-log", level), "pai": pai_accs,
                "holds": all(a < min(best) for a in pai_accs.values())}
    for level in [lv for lv in levels if lv <= 0.05]:
        c, i = table.get(f"cs@{level}"), imp_exact.get(level)
        if c and i:
            checks[f"cs_matches_imp_in_fewer_epochs_at_{level}"] = {
                "cs_acc": c["acc"], "cs_remaining": c["remaining"], "cs_epochs": c["epochs_total"],
                "imp_acc_at_level": i["acc"], "imp_epochs_to_level": i["epochs"],
                "holds": c["acc"] >= i["acc"] - 0.002 and c["epochs_total"] < i["epochs"],
                "note": "IMP's accuracy interpolated at exactly the level between its two rounds around it; "
                        "its epochs through the first round at or below the level; matching = within 0.2 points"}
    fr = {s: c["epoch_fraction"] for s, c in cost["scorers"].items()}
    for s in SCORERS:   # measured inside real runs (scoring / that run's own epoch), when there are some
        xs = [r["scoring_epoch_fraction"] for r in rows if r["method"] == s and "scoring_epoch_fraction" in r]
        if xs:
            fr[s] = mean_std(xs)[0]
    checks["scoring_cost_epoch_fraction"] = {"fractions": fr,
                                             "snip_and_magnitude_within_0.1": all(fr.get(s, 0) <= 0.1 for s in
                                                                                  ("snip", "magnitude"))}
    for k, v in checks.items():
        print(f"check {k}: {v}", flush=True)
    return {"table": table, "imp_at_level": imp_exact, "checks": checks}


if __name__ == "__main__":
    main()
