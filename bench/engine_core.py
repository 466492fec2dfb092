"""The engine-core figures (issue 2): MNIST 0-vs-1 pixel masks against λ,
LeNet-300-100 dense / IMP / concave, and the digits preset end to end.

    python bench/engine_core.py [--quick]   (quick: 1 epoch on digits)

Writes bench/results/engine_core.json and prints a table. Uses its own store
under cache/bench so the app's runs are untouched."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import ROOT, scratch_store, write_result

from engine import runner
from engine.config import METHOD_KEYS, preset
from engine.data import default_data_dir, mnist_available


def run(store, cfg):
    rid = runner.create(store, cfg, status="running")
    t = time.time()
    s = runner.execute(store, rid, default_data_dir())
    return {"id": rid, "kept": s["kept"], "total": s["total"], "remaining": s["remaining"],
            "test_accuracy": s["test_accuracy"], "wall_seconds": round(time.time() - t, 1),
            "checks": {c["name"]: c["value"] for c in store.checks(rid)}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="tiny settings, for the smoke test")
    ap.add_argument("--only", choices=["pixels", "lenet", "digits"], action="append")
    args = ap.parse_args()
    store = scratch_store()
    out = {}
    only = set(args.only or ["pixels", "lenet", "digits"])
    quick = args.quick or not mnist_available(default_data_dir())

    def pick(name, **kw):  # the preset, shrunk onto offline digits for the smoke test
        cfg = preset(name, **kw)
        short = {"retrain_epochs": 1} if "retrain_epochs" in METHOD_KEYS[cfg.method] else {}
        return cfg.replace(dataset="digits", epochs=1, **short) if quick else cfg

    if "pixels" in only:
        lams = [2.0] if quick else [0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
        rows = []
        for reg in ("log", "l1"):
            for lam in lams:
                r = run(store, pick("mnist-8-pixel", regularizer=reg, lam=lam))
                rows.append({"regularizer": reg, "lam": lam, **r})
                print(f"pixels {reg:>3} λ={lam:<5} kept {r['kept']:>4}/784  test acc {r['test_accuracy']:.4f}  "
                      f"{r['wall_seconds']} s", flush=True)
        out["mnist01_pixels"] = rows

    if "lenet" in only:
        ep = 1 if quick else 10
        res = {}
        res["dense"] = run(store, pick("lenet300-imp", method="dense", epochs=ep))
        res["imp_7x20"] = run(store, pick("lenet300-imp", rounds=1 if quick else 7, epochs=ep))
        res["imp_rounds"] = [{k: r[k] for k in ("round", "remaining", "test_acc", "seconds")}
                             for r in store.metrics(res["imp_7x20"]["id"], kind="round")]
        res["concave_log_95"] = run(store, pick("lenet300-concave", epochs=1 if quick else 6,
                                                  retrain_epochs=ep))
        res["concave_log_79"] = run(store, pick("lenet300-concave", target_sparsity=0.79,
                                                  epochs=1 if quick else 6, retrain_epochs=ep))
        for k, r in res.items():
            if k != "imp_rounds":
                print(f"lenet {k:<15} remaining {r['remaining']:.4f}  test acc {r['test_accuracy']:.4f}  "
                      f"{r['wall_seconds']} s", flush=True)
        out["lenet300_mnist"] = res

    if "digits" in only:
        t = time.time()
        p = subprocess.run([sys.executable, "-m", "engine", "run", "--preset", "digits", "--quiet",
                            "--home", str(store.home)], cwd=ROOT, capture_output=True, text=True)
        out["digits_preset_seconds"] = round(time.time() - t, 1)
        out["digits_preset_stderr_tail"] = p.stderr.strip().splitlines()[-1:]
        print(f"digits preset, command to summary: {out['digits_preset_seconds']} s  {p.stderr.strip()[-120:]}")

    write_result("engine_core", out, quick)


if __name__ == "__main__":
    main()
