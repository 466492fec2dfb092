"""Deployed tickets: file sizes and CPU latency of dense PyTorch, the sparse loader and
onnxruntime, for LeNet-300-100 tickets at ~20, 5 and 2% remaining (concave and IMP, real MNIST)
and a ResNet-20 ticket at 5% (synthetic CIFAR-shaped data: timing only).

    LOTTERY_DATA=/path/to/data python bench/deploy.py [--quick]

Trainings are kept short (the point is the deployed file, not the best ticket); `--home DIR`
keeps them, and a second run reuses every finished one. Latency: batch 1 (median of 200 calls)
and batch 128 (median of 50), one thread and all threads; the three implementations take turns
in short blocks of calls in this one process, so their ratios are measured side by side. Also
measured: the crossover density of CSR against dense for LeNet's layer shapes. The load average
is recorded next to every timing (the machine is shared)."""

from __future__ import annotations

import argparse
import os
import tempfile
import warnings
from pathlib import Path

import torch
from common import scratch_store, write_result

from engine import deploy as dp
from engine import runner
from engine.config import RunConfig
from engine.data import default_data_dir, mnist_available
from engine.store import Store

# Short trainings (the machine is shared; the point is the deployed file, not the best ticket):
# batch 512 and half the training set (val_fraction 0.5), one epoch per search / retrain / IMP round.
LENET = dict(model="lenet300", dataset="mnist", batch_size=512, lr=2e-3, val_fraction=0.5)
# (label, config overrides): concave with top-k thresholding hits the density exactly; IMP picks
# rounds and a per-round rate whose product lands at the density.
TICKETS = [
    ("lenet300 concave 20%", dict(method="concave", lam=1.0, target_sparsity=0.80, threshold_mode="topk",
                                  epochs=1, retrain_epochs=1)),
    ("lenet300 concave 5%", dict(method="concave", lam=1.0, target_sparsity=0.95, threshold_mode="topk",
                                 epochs=1, retrain_epochs=1)),
    ("lenet300 concave 2%", dict(method="concave", lam=1.0, target_sparsity=0.98, threshold_mode="topk",
                                 epochs=1, retrain_epochs=1)),
    ("lenet300 imp 20%", dict(method="imp", rounds=2, prune_fraction=round(1 - 0.20 ** 0.5, 4), epochs=1)),
    ("lenet300 imp 5%", dict(method="imp", rounds=2, prune_fraction=round(1 - 0.05 ** 0.5, 4), epochs=1)),
    ("lenet300 imp 2%", dict(method="imp", rounds=3, prune_fraction=round(1 - 0.02 ** (1 / 3), 4), epochs=1)),
]
RESNET = ("resnet20 concave 5% (synthetic)", dict(
    model="resnet20", dataset="synthetic_cifar", data_params={"n_train": 256, "n_test": 256}, method="concave",
    lam=1.0, target_sparsity=0.95, threshold_mode="topk", epochs=1, retrain_epochs=1, batch_size=128,
    optimizer="sgd", lr=0.1))


def train(store, overrides: dict) -> str:
    """A finished run of this config in the store (--home), else a new one."""
    cfg = RunConfig.from_dict(overrides)
    for r in store.list_runs():
        if r["status"] == "done" and r["config"] == cfg.to_dict():
            return r["id"]
    run_id = runner.create(store, cfg, status="running")
    runner.execute(store, run_id)
    return run_id


def crossover(reps: int) -> list[dict]:
    """Dense vs CSR product per LeNet layer shape and density, one thread (what calibrate() decides)."""
    rows = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for out_f, in_f in ((300, 784), (100, 300), (10, 100)):
            for density in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5):
                g = torch.Generator().manual_seed(0)
                w = torch.randn(out_f, in_f, generator=g) * (torch.rand(out_f, in_f, generator=g) < density)
                layer = dp.DeployedLinear(w, torch.zeros(out_f))
                layer.calibrate(reps)
                for batch, t in layer.timings.items():
                    rows.append({"shape": [out_f, in_f], "density": density, "batch": batch,
                                 "dense_us": t["dense_us"], "sparse_us": t["sparse_us"],
                                 "ratio": t["sparse_us"] / t["dense_us"]})
    finally:
        torch.set_num_threads(before)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="digits + a tiny synthetic ResNet, few calls")
    ap.add_argument("--home", help="store to keep the trained tickets in (reused when run again); default: scratch")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    data_dir = default_data_dir()
    reps = {1: 20, 128: 5} if args.quick else {1: 200, 128: 50}
    tickets = list(TICKETS)
    base = dict(LENET)
    if args.quick or not mnist_available(data_dir):
        base = dict(model="lenet300", dataset="digits", batch_size=64, lr=1e-3)
        tickets = [t for t in TICKETS if "concave 5%" in t[0] or "imp 2%" in t[0]]
    resnet = dict(RESNET[1])
    if args.quick:
        resnet.update(data_params={"n_train": 64, "n_test": 32}, batch_size=32)
    store = Store(args.home) if args.home else scratch_store()
    results = []
    for label, over in [(lbl, {**base, **o}) for lbl, o in tickets] + [(RESNET[0], resnet)]:
        run_id = train(store, over)
        summary = store.get_run(run_id)["summary"]
        out = Path(tempfile.mkdtemp(prefix="deploy-bench-")) / "out"
        # force: a ticket whose self-check failed (e.g. a layer refilled at 2 %) is still measured;
        # its failed checks are recorded with the row (and in the file's header)
        rep = dp.deploy(store, run_id, out, data_dir=data_dir, force=True)
        load_before = dp.load_average()
        lat = dp.bench_deployed(out, reps=reps)
        row = {"label": label, "dataset": over["dataset"], "method": over["method"],
               "remaining": summary["remaining"], "test_accuracy": summary["test_accuracy"],
               "train_seconds": round(summary["wall_seconds"], 1), "sizes": rep["sizes"], "parity": rep["parity"],
               "linear_paths": rep["linear_paths"], "latency": lat,
               "failed_checks": [c["name"] for c in rep["header"]["failed_checks"]],
               "load_average_before": load_before, "load_average_after": dp.load_average()}
        by = {(r["impl"], r["batch"], r["threads"]): r["median_ms"] for r in lat}
        row["ratios"] = {f"{impl}/dense b{b} t{t}": by[(impl, b, t)] / by[("dense", b, t)]
                         for (impl, b, t) in by if impl != "dense"}
        results.append(row)
        s = rep["sizes"]
        print(f"{label}: remaining {summary['remaining']:.4f} acc {summary['test_accuracy']:.4f} "
              f"dense/fp16 size {s['dense_fp32'] / s['sparse_fp16']:.1f}x; logit error "
              f"{rep['parity']['logits']['deployed']:.1e}/{rep['parity']['logits']['onnx']:.1e}; parity differ "
              f"{rep['parity']['differ_deployed']}/{rep['parity']['differ_onnx']}; load {load_before}", flush=True)
        for k, v in row["ratios"].items():
            print(f"    {k}: {v:.3f}", flush=True)
        write_result("deploy", {"quick": args.quick, "reps": reps, "cpu_count": os.cpu_count(), "partial": True,
                                "tickets": results}, args.quick)       # what is done so far survives a kill
    cross = crossover(5 if args.quick else 25)
    write_result("deploy", {"quick": args.quick, "reps": reps, "cpu_count": os.cpu_count(),
                            "tickets": results, "crossover_1thread": cross,
                            "median_ratio_note": "ratio = impl median / dense PyTorch median, same process, "
                                                 "interleaved calls"}, args.quick)


if __name__ == "__main__":
    main()
