"""Engine speed: training throughput of masked search (m trainable, λR(m)) and
of retraining with a binary mask, as ratios to plain dense training of the
same model, measured side by side in one process.

    python bench/speed.py [--quick] [--models lenet300,conv2,resnet20] [--device auto|cpu|cuda]

Only the optimizer-step loop is timed (PhaseResult.train_seconds); the three
modes are interleaved and repeated, the first round is a warm-up, and the
ratio reported is the median over repeats of each repeat's own ratio (the
three modes of one repeat run back to back, so a machine whose speed drifts —
a shared 2-core VM drifts by up to 1.8× within a minute — affects them alike).
The ratio of the fastest epochs is reported beside it. `--joined-reg` adds a fourth mode, the
search with R′(m) over all masks joined into one tensor (the GPU's way; on a CPU the engine
does it layer by layer since 2026-12-05), so before and after are measured in one run.
`--before` adds the search step as it was before 2026-12-06 (R′ as `grad` then an add, masks
clamped by two foreach passes, the logged R(m) through log1p), for the same purpose.
Targets: masked/dense ≤ 1.05 on ResNet-20, ≤ 1.10 on LeNet-300-100."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import statistics

import torch
from common import scratch_store, write_result

from engine import masking, regularizers, runner
from engine.config import RunConfig
from engine.data import default_data_dir, mnist_available
from engine.methods.random import random_masks
from engine.train import RunContext

# model: (dataset, data_params, batch size, optimizer, lr) — the optimizers of the
# lottery-ticket literature (Frankle & Carbin 2019; Frankle et al. 2020): Adam for
# LeNet-300-100 and Conv-2, SGD with momentum for ResNet-20. CIFAR-shaped sets
# shrink on a CPU (see measure).
SETUPS = {
    "lenet300": ("mnist", None, 128, "adam", 1.2e-3),
    "conv2": ("synthetic_cifar", {"n_train": 50000}, 128, "adam", 2e-4),
    "resnet20": ("synthetic_cifar", {"n_train": 50000}, 128, "sgd", 0.1),
}


@torch.no_grad()
def _apply_masks_before(model, layers):
    """masking.apply_masks_ before 2026-12-06, for soft clipped masks only (the search here)."""
    clip = [layer.mask for _, layer in layers if layer.mode == "soft" and layer.mask_param == "clip"]
    torch._foreach_clamp_min_(clip, 0.0)
    torch._foreach_clamp_max_(clip, 1.0)


@contextlib.contextmanager
def _step_before():
    """The search step as before 2026-12-06, under the name `log_before`: R(m) through log1p,
    R'(m) through `grad` and an add (no in-place form), the clamp in two foreach passes."""
    if "log_before" not in regularizers.REGULARIZERS:
        old = dataclasses.replace(regularizers.get("log"), name="log_before", add_grad=None,
                                  fn=lambda m, eps: torch.log1p(m / eps) / math.log1p(1.0 / eps))
        regularizers.REGULARIZERS.register("log_before", old)
    saved = masking.apply_masks_
    masking.apply_masks_ = _apply_masks_before
    try:
        yield "log_before"
    finally:
        masking.apply_masks_ = saved


def _cuda(device: str) -> bool:
    import torch
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def measure(model: str, repeats: int, device: str, quick: bool, precision: str, compile: bool,
            joined_reg: bool = False, before: bool = False) -> dict:
    dataset, params, batch, optimizer, lr = SETUPS[model]
    if dataset == "mnist" and not mnist_available(default_data_dir()):
        dataset, params = "synthetic_cifar", {"n_train": 5000}
    if dataset == "synthetic_cifar" and not _cuda(device):
        params = {"n_train": 1024, "n_test": 256}  # a 2-core CPU takes ~1.4 s per conv2 step of 128 images
    if quick:
        dataset, params = ("digits", None) if model == "lenet300" else ("synthetic_cifar",
                                                                         {"n_train": 32, "n_test": 32})
        batch = 16
    cfg = RunConfig.from_dict(dict(model=model, dataset=dataset, data_params=params, method="dense", epochs=1,
                                   batch_size=batch, optimizer=optimizer, lr=lr, device=device,
                                   precision=precision, compile=compile))
    store = scratch_store()
    run_id = runner.create(store, cfg, status="running")
    ctx = RunContext(cfg, store, run_id, default_data_dir())
    init = masking.weights_state(ctx.model)
    shapes = {n: layer.weight.shape for n, layer in masking.prunable_layers(ctx.model)}
    binary = random_masks(shapes, int(0.2 * ctx.total_prunable), torch.Generator().manual_seed(0))
    times = {"dense": [], "search": [], "retrain": []} | ({"search_joined": []} if joined_reg else {}) \
        | ({"search_before": []} if before else {})
    engine_joins = ctx.join_reg_masks
    modes = list(times)
    for rep in range(repeats + 1):
        for mode in modes[rep % len(modes):] + modes[:rep % len(modes)]:  # rotate the order each round
            masking.load_weights_state(ctx.model, init)
            ctx.join_reg_masks = engine_joins or mode == "search_joined"
            if mode == "dense":
                masking.set_dense(ctx.model)
            elif mode.startswith("search"):
                masking.set_soft(ctx.model)
            else:
                masking.set_binary(ctx.model, binary)
            ctx.stage(f"{mode}-{rep}")
            with (_step_before() if mode == "search_before" else contextlib.nullcontext("log")) as reg:
                res = ctx.train_phase(round=0, phase=mode, epochs=1,
                                      regularizer=reg if mode.startswith("search") else None)
            ctx.end_stage()
            if rep > 0:  # round 0 warms up allocators, kernels and (with compile) the graphs
                times[mode].append(res.train_seconds)
    med = {k: statistics.median(v) for k, v in times.items()}
    samples = len(ctx.splits.train_y)
    return {"model": model, "optimizer": optimizer, "lr": lr, "dataset": dataset, "train_samples": samples,
            "batch_size": batch,
            "device": str(ctx.device), "precision": str(ctx.amp_dtype or "fp32"), "compile": compile,
            "repeats": repeats, "seconds": med, "samples_per_second": {k: samples / v for k, v in med.items()},
            "search_over_dense": statistics.median(s / d for s, d in zip(times["search"], times["dense"])),
            "retrain_over_dense": statistics.median(r / d for r, d in zip(times["retrain"], times["dense"])),
            "search_over_dense_fastest": min(times["search"]) / min(times["dense"]),
            "retrain_over_dense_fastest": min(times["retrain"]) / min(times["dense"]),
            **({"search_joined_over_dense": statistics.median(s / d for s, d in zip(times["search_joined"],
                                                                                    times["dense"]))}
               if joined_reg else {}),
            **({"search_before_over_dense": statistics.median(s / d for s, d in zip(times["search_before"],
                                                                                    times["dense"])),
                "search_before_over_dense_fastest": min(times["search_before"]) / min(times["dense"])}
               if before else {}),
            "all_seconds": times}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default="lenet300,conv2,resnet20")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--joined-reg", action="store_true", help="also time the search with R'(m) joined")
    ap.add_argument("--before", action="store_true", help="also time the search step as before 2026-12-06")
    ap.add_argument("--tag", default="", help="suffix for the results file, e.g. gpu")
    args = ap.parse_args()
    rows = []
    for model in args.models.split(","):
        r = measure(model, 1 if args.quick else args.repeats, args.device, args.quick, args.precision, args.compile,
                    args.joined_reg, args.before)
        rows.append(r)
        print(f"{model:<9} {r['dataset']:<16} {r['device']:<5} dense {r['seconds']['dense']:.3f}s  "
              f"search/dense {r['search_over_dense']:.3f} (fastest {r['search_over_dense_fastest']:.3f})  "
              f"retrain/dense {r['retrain_over_dense']:.3f} (fastest {r['retrain_over_dense_fastest']:.3f})"
              + (f"  joined R' search/dense {r['search_joined_over_dense']:.3f}" if args.joined_reg else "")
              + (f"  before: search/dense {r['search_before_over_dense']:.3f} "
                 f"(fastest {r['search_before_over_dense_fastest']:.3f})" if args.before else ""),
              flush=True)
    write_result("speed" + (f"_{args.tag}" if args.tag else ""), {"rows": rows}, args.quick)


if __name__ == "__main__":
    main()
