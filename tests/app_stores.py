"""Stores for the app's tests and bench/app_responsiveness.py.

`mixed_store` runs a few tiny real runs in this process (digits and the planted
problem: offline, about a second each) and adds hand-written rows for what a
real store also holds: a running run with live metrics, queued, failed,
cancelled and interrupted runs, and damaged ones (config that is not JSON, an
unknown status, a missing run folder, a mask snapshot that is not a tensor
file). `synthetic_store` writes n plausible finished and running runs without
training anything (for the 200-run responsiveness check)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from engine import runner
from engine.config import RunConfig
from engine.store import Store

TINY = dict(epochs=1, retrain_epochs=1, batch_size=128)


def _real(store: Store, data_dir, **cfg) -> str:
    c = RunConfig.from_dict(cfg)
    rid = runner.create(store, c, status="running")
    runner.execute(store, rid, data_dir)
    return rid


def mixed_store(home: Path, data_dir: Path) -> dict[str, str]:
    """Build the store; returns {role: run id}."""
    store = Store(home)
    ids: dict[str, str] = {}
    ids["concave"] = _real(store, data_dir, model="lenet300", dataset="digits", method="concave", regularizer="log",
                           lam=5.0, **TINY)
    ids["imp"] = _real(store, data_dir, model="lenet300", dataset="digits", method="imp", rounds=1, epochs=1,
                       batch_size=128)
    ids["pixel"] = _real(store, data_dir, model="logreg", dataset="digits", classes=[0, 1], method="concave",
                         regularizer="log", lam=2.0, epochs=2, retrain_epochs=1, batch_size=64, lr=0.01)
    ids["planted"] = _real(store, data_dir, model="logreg", dataset="planted", method="concave", regularizer="l1",
                           lam=1.0, epochs=2, retrain_epochs=1, batch_size=64, lr=0.01)
    now = time.time()
    base = RunConfig.from_dict(dict(model="lenet300", dataset="digits", method="concave", lam=2.0, **TINY))

    def hand(status, **fields):
        rid = runner.create(store, base.replace(seed=len(ids) + 1), status="queued")
        store.update_run(rid, status=status, **fields)
        return rid

    ids["running"] = hand("running", started=now - 20, heartbeat=now, progress=0.4, phase="round 0 search epoch 1/1",
                          round=0)
    # live metrics for the running run: a copy of the finished run's first rows
    rows = [{k: v for k, v in r.items() if k not in ("run_id", "seq")} for r in store.metrics(ids["concave"])][:12]
    store.add_metrics(ids["running"], rows)
    ids["queued"] = hand("queued")
    ids["failed"] = hand("failed", started=now - 30, finished=now - 25,
                         reason="NonFiniteLoss: non-finite loss at step 7 of the search phase")
    (store.run_dir(ids["failed"]) / "error.txt").write_text("Traceback (most recent call last):\n  ...\n"
                                                              "NonFiniteLoss: non-finite loss at step 7\n")
    ids["cancelled"] = hand("cancelled", started=now - 60, finished=now - 50, reason="cancelled from the app")
    ids["interrupted"] = hand("interrupted", started=now - 90, progress=0.6, phase="round 0 retrain epoch 1/1",
                              reason="worker process vanished (no heartbeat for 31 s)")
    # damaged runs
    ids["bad_config"] = hand("done", started=now - 100, finished=now - 99)
    ids["bad_status"] = hand("done")
    ids["no_folder"] = hand("done", summary={"remaining": 0.5, "test_accuracy": 0.9, "kept": 1, "total": 2,
                                             "sparsity": 0.5, "wall_seconds": 1.0})
    with store.connect() as db:
        db.execute("UPDATE runs SET config='{not json' WHERE id=?", (ids["bad_config"],))
        db.execute("UPDATE runs SET status='garbage', summary='[truncated' WHERE id=?", (ids["bad_status"],))
    import shutil
    shutil.rmtree(store.run_dir(ids["no_folder"]))
    # a finished pixel run whose snapshots are damaged
    bad_pix = _real(store, data_dir, model="logreg", dataset="digits", classes=[0, 1], method="concave",
                    regularizer="l1", lam=2.0, epochs=1, retrain_epochs=1, batch_size=64, lr=0.01)
    for p in (store.run_dir(bad_pix) / "masks").glob("*.pt"):
        p.write_bytes(b"not a tensor file")
    ids["bad_snapshots"] = bad_pix
    return ids


def synthetic_store(home: Path, n: int = 200, running: int = 3, seed: int = 0) -> list[str]:
    """n runs (most of them done, `running` of them live) with summaries, a few metric
    rows and mask statistics each; rows are written in one transaction (no training)."""
    rng = random.Random(seed)
    store = Store(home)
    layers = {"classifier.0": 19_200, "classifier.2": 30_000, "classifier.4": 1_000}
    now = time.time()
    runs, metrics, stats = [], [], []
    for i in range(n):
        method = rng.choice(["concave", "concave", "imp", "dense"])
        cfg = dict(model="lenet300", dataset="digits", method=method, seed=i % 3, epochs=3)
        if method == "concave":
            cfg |= dict(regularizer=rng.choice(["l1", "log"]), lam=round(10 ** rng.uniform(-0.5, 1.3), 3),
                        retrain_epochs=3)
        if method == "imp":
            cfg |= dict(rounds=3)
        c = RunConfig.from_dict(cfg)
        rid = f"{c.content_hash()[:8]}-{i:06x}"
        store.run_dir(rid).mkdir(parents=True, exist_ok=True)
        rem = 1.0 if method == "dense" else rng.uniform(0.02, 0.6)
        summary = {"method": method, "remaining": rem, "sparsity": 1 - rem, "kept": int(rem * 50_200),
                   "total": 50_200, "test_accuracy": rng.uniform(0.9, 0.98), "val_accuracy": rng.uniform(0.9, 0.98),
                   "wall_seconds": rng.uniform(5, 60), "device": "cpu",
                   "layers": {k: {"kept": int(v * rem), "total": v, "remaining": rem, "dead_units": 0.0}
                              for k, v in layers.items()}}
        if i >= n - running:
            runs.append((rid, json.dumps(c.to_dict()), "running", now - 1000 + i, now - 30, None, now,
                         rng.uniform(0.1, 0.9), "round 0 search epoch 2/3", None))
        else:
            runs.append((rid, json.dumps(c.to_dict()), "done", now - 1000 + i, now - 100, now - 50, now - 50, 1.0,
                         "done", json.dumps(summary)))
        seq = 0
        for e in range(1, 4):
            for s in range(5):
                metrics.append((rid, seq, "step", 0, "search", e - 1 + (s + 1) / 5, e * 5 + s, e * 2.0, 1.0 / e,
                                0.9 / e, 0.1, cfg.get("lam"), 0.8 + 0.05 * e, None, None, None))
                seq += 1
            metrics.append((rid, seq, "epoch", 0, "search", e, e * 5 + 4, e * 2.0, None, 0.9 / e, None,
                            cfg.get("lam"), None, 0.85 + 0.03 * e, 0.85 + 0.03 * e, 1 - (1 - rem) * e / 3))
            seq += 1
            for k, v in layers.items():
                stats.append((rid, 0, "search", e, e * 5, k, v, 0.5, 1 - (1 - rem) * e / 3, 0.3 * e, 0.1 / e, 0.0,
                              json.dumps([v // 20] * 20)))
    with store.transaction() as db:
        db.executemany("INSERT INTO runs(id, config, status, created, started, finished, heartbeat, progress, "
                       "phase, summary) VALUES(?,?,?,?,?,?,?,?,?,?)", runs)
        db.executemany("INSERT INTO metrics(run_id, seq, kind, round, phase, epoch, step, wall, loss, loss_task, "
                       "loss_reg, lam, train_acc, val_acc, test_acc, remaining) "
                       "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", metrics)
        db.executemany("INSERT INTO mask_stats(run_id, round, phase, epoch, step, layer, numel, mean, frac_above, "
                       "near_binary, churn, dead_units, hist) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)", stats)
    (Path(home) / "synthetic.json").write_text(json.dumps({"n": n, "running": running}))
    return [r[0] for r in sorted(runs, key=lambda r: r[3])]


def comparable_store(home: Path) -> dict[str, list[str]]:
    """Finished runs written by hand (nothing trained) that must not be averaged together:
    IMP on digits with 2 and 1 epochs per round, a 1-round IMP run, a class-pack example equal
    to a user's run, and dense runs of 2 and 6 epochs. Returns {role: [run ids]}."""
    store = Store(home)
    ids: dict[str, list[str]] = {}

    def done(role, cfg, summary, rounds=(), example=False, owner=None):
        c = RunConfig.from_dict(dict(model="lenet300", dataset="digits", batch_size=64, **cfg))
        rid = store.create_run(c.to_dict(), c.content_hash(), status="done")
        store.update_run(rid, summary=json.dumps({"total": 1000, "kept": int(1000 * summary["remaining"]),
                                                  "sparsity": 1 - summary["remaining"], **summary}),
                         finished=time.time(), owner=owner)
        store.add_metrics(rid, [{"kind": "round", "round": r, "phase": "train", "remaining": rem, "test_acc": acc,
                                 "seconds": 2.0} for r, (rem, acc) in enumerate(rounds)])
        if example:
            with store.connect() as db:
                db.execute("UPDATE runs SET example=1 WHERE id=?", (rid,))
        ids.setdefault(role, []).append(rid)

    imp3 = [(1.0, 0.95), (0.8, 0.95), (0.64, 0.94)]
    for seed in (0, 1):
        done("imp_2ep", dict(method="imp", rounds=2, epochs=2, seed=seed),
             dict(remaining=0.64, test_accuracy=0.94 + 0.002 * seed, wall_seconds=76.0, setup_seconds=0.5), imp3)
    done("imp_1ep", dict(method="imp", rounds=2, epochs=1),
         dict(remaining=0.64, test_accuracy=0.90, wall_seconds=3.0), [(1.0, 0.91), (0.8, 0.905), (0.64, 0.90)])
    done("imp_1round", dict(method="imp", rounds=1, epochs=2),
         dict(remaining=0.8, test_accuracy=0.95, wall_seconds=4.0), imp3[:2])
    done("imp_example", dict(method="imp", rounds=2, epochs=2),
         dict(remaining=0.64, test_accuracy=0.80, wall_seconds=6.0), [(1.0, 0.82), (0.8, 0.81), (0.64, 0.80)],
         example=True)
    done("dense_2ep", dict(method="dense", epochs=2), dict(remaining=1.0, test_accuracy=0.95, wall_seconds=2.0))
    done("dense_6ep", dict(method="dense", epochs=6), dict(remaining=1.0, test_accuracy=0.97, wall_seconds=6.0))
    for seed in (0, 1):
        done("log_lam5", dict(method="concave", regularizer="log", lam=5.0, epochs=2, retrain_epochs=2, seed=seed),
             dict(remaining=0.1, test_accuracy=0.93 + 0.002 * seed, wall_seconds=5.0))
    return ids


def pixel_sweep_store(home: Path) -> dict[str, list[str]]:
    """A class-pack-like ℓ1/log λ sweep on MNIST 0-vs-1 (examples, written by hand) and two
    rehearsal runs of the student's on the same setting, newer than the pack's."""
    store = Store(home)
    ids: dict[str, list[str]] = {"pack": [], "mine": []}

    def done(role, reg, lam, example):
        c = RunConfig.from_dict(dict(model="logreg", dataset="mnist", classes=[0, 1], method="concave",
                                     regularizer=reg, lam=lam, epochs=5, retrain_epochs=5, lr=1e-2))
        rid = store.create_run(c.to_dict(), c.content_hash(), status="done")
        kept = max(1, int(200 / lam))
        store.update_run(rid, finished=time.time(), summary=json.dumps(
            {"remaining": kept / 784, "kept": kept, "total": 784, "sparsity": 1 - kept / 784,
             "test_accuracy": 0.99 if kept > 5 else 0.9, "wall_seconds": 3.0}))
        if example:
            with store.connect() as db:
                db.execute("UPDATE runs SET example=1 WHERE id=?", (rid,))
        ids[role].append(rid)
        time.sleep(0.01)

    for reg in ("l1", "log"):
        for lam in (1.0, 10.0, 50.0):
            done("pack", reg, lam, True)
    done("mine", "log", 2.0, False)
    done("mine", "l1", 10.0, False)
    return ids
