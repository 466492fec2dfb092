"""The paper's convex experiment (issue 5 §5) and the planted theory problem (§6).

    python bench/convex.py [--quick]

MNIST 0-vs-1 with logistic regression: kept pixels and test accuracy against λ
for ℓ1 and log (Fig. 3); the ~8-pixel log mask with digits seen through it
(Fig. 4); magnitude pruning of a dense model at the same pixel count, without
and with retraining, for contrast. Planted problem: ‖m* − m̃‖ and support
recovery against λ for ℓ1, log from m=1, and log warm-started from ℓ1."""

from __future__ import annotations

import argparse

import torch
from common import run_timed, scratch_store, write_result

from engine import masking
from engine.config import RunConfig, preset
from engine.data import default_data_dir, load_dataset, mnist_available
from engine.models import build_model


def choose(rows: list[dict], floor: float, kept: int) -> dict:
    """The row whose kept count is closest to `kept` among those at ≥ `floor` validation
    accuracy (all rows when none reaches it). Never the test accuracy: a figure chosen on the
    test set reports an optimistically selected number."""
    good = [r for r in rows if r["val_accuracy"] >= floor] or rows
    return min(good, key=lambda r: abs(r["kept"] - kept))


def magnitude_contrast(store, k: int, quick: bool) -> dict:
    """Keep the k largest |w| of a dense logistic regression: accuracy as is, and retrained."""
    base = preset("mnist-8-pixel") if not quick else RunConfig.from_dict(
        dict(model="logreg", dataset="digits", classes=[0, 1], epochs=2, lr=1e-2))
    dense_id, dense = run_timed(store, base.replace(method="dense"))
    splits = load_dataset(base.dataset, default_data_dir(), classes=base.classes)
    model = build_model("logreg", splits.in_shape, splits.num_classes)
    model.load_state_dict(store.load_array(dense_id, "ckpt")["model"])
    w = dict(masking.prunable_layers(model))
    name = next(iter(w))
    keep = masking.topk_masks({name: w[name].weight.detach().abs()}, k / w[name].weight.numel())
    masking.set_binary(model, keep)
    with torch.no_grad():
        acc = float(((model(splits.test_x).squeeze(1) > 0).long() == splits.test_y).float().mean())
    retrained = {"test_accuracy": dense["test_accuracy"], "kept": k}
    if 0 < k < w[name].weight.numel():
        _, retrained = run_timed(store, base.replace(method="imp", rounds=1,
                                                   prune_fraction=1 - k / w[name].weight.numel()))
    return {"k": k, "dense_accuracy": dense["test_accuracy"], "topk_no_retrain_accuracy": acc,
            "topk_retrained_accuracy": retrained["test_accuracy"], "topk_retrained_kept": retrained["kept"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    quick = args.quick or not mnist_available(default_data_dir())
    store = scratch_store()
    out = {}

    lams = [1.0, 5.0] if quick else [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]  # one λ scale for both
    sweep = []
    for reg in ("log", "l1"):
        for lam in lams:
            cfg = preset("mnist-8-pixel", regularizer=reg, lam=lam)
            if quick:
                cfg = cfg.replace(dataset="digits", epochs=2, retrain_epochs=1)
            run_id, s = run_timed(store, cfg)
            sweep.append({"regularizer": reg, "lam": lam, "kept": s["kept"], "val_accuracy": s["val_accuracy"],
                          "test_accuracy": s["test_accuracy"],
                          "thresholded_test_accuracy": s["thresholded_test_accuracy"], "run_id": run_id})
            print(f"{reg:>3} λ={lam:<5} kept {s['kept']:>4}  test acc {s['test_accuracy']:.4f} "
                  f"(before retraining {s['thresholded_test_accuracy']:.4f})", flush=True)
    out["pixel_sweep"] = sweep

    # Fig. 4: the log mask closest to 8 pixels at ≥ 99.5% validation accuracy, and digits through it
    best = choose([r for r in sweep if r["regularizer"] == "log"] or sweep, floor=0.995, kept=8)
    mask = next(iter(store.load_masks(best["run_id"], "r0-ticket").values()))
    out["fig4"] = {"lam": best["lam"], "kept": best["kept"], "val_accuracy": best["val_accuracy"],
                   "test_accuracy": best["test_accuracy"], "selected_on": "val_accuracy >= 0.995",
                   "mask": mask.reshape(-1).tolist()}
    out["magnitude_contrast"] = magnitude_contrast(store, best["kept"], quick)
    print(f"fig4: log λ={best['lam']} keeps {best['kept']} pixels at {best['test_accuracy']:.4f}; "
          f"top-{best['kept']} |w| of the dense model: {out['magnitude_contrast']['topk_no_retrain_accuracy']:.4f} "
          f"as is, {out['magnitude_contrast']['topk_retrained_accuracy']:.4f} retrained", flush=True)

    # Planted problem: recovery against λ
    theory = []
    base = dict(model="logreg", dataset="planted", method="concave", epochs=30, retrain_epochs=5, lr=1e-2,
                mask_lr=0.05, batch_size=64)
    for lam in ([0.3] if quick else [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0]):
        l1_id, l1 = run_timed(store, RunConfig.from_dict({**base, "regularizer": "l1", "lam": lam}))
        _, log = run_timed(store, RunConfig.from_dict({**base, "regularizer": "log", "lam": lam}))
        _, warm = run_timed(store, RunConfig.from_dict({**base, "regularizer": "log", "lam": lam, "warm_start": l1_id}))
        for name, s in (("l1", l1), ("log", log), ("log warm-started from l1", warm)):
            theory.append({"penalty": name, "lam": lam, **s["recovery"], "test_accuracy": s["test_accuracy"]})
            r = s["recovery"]
            print(f"planted {name:<12} λ={lam:<5} ‖m*−m̃‖ {r['distance']:.3f}  kept {r['kept']:>3}  hits {r['hits']}  "
                  f"exact {r['exact']}", flush=True)
    out["planted"] = theory
    write_result("convex", out, quick)


if __name__ == "__main__":
    main()
