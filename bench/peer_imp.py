"""Our IMP against IMP built on torch.nn.utils.prune, as most lottery-ticket
code does it: same LeNet-300-100, data batches, optimizer, rounds and epochs.

    python bench/peer_imp.py [--quick] [--rounds 3] [--epochs 2]

Both evaluate on the validation and test sets every epoch. The peer uses
prune.global_unstructured(L1Unstructured), which keeps weight_orig and applies
weight = weight_orig * weight_mask in a forward pre-hook on every call, and
rewinds by copying the initial weights into weight_orig. Target: ours ≤ 0.8×
the peer's time, with the same sparsity per round. Both sides are timed from
loading the dataset to the last round's evaluation (ours: runner.execute, which
also writes metrics, mask statistics and checkpoints)."""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import scratch_store, write_result
from torch import nn
from torch.nn.utils import prune

from engine import runner
from engine.config import RunConfig
from engine.data import Batches, default_data_dir, load_dataset, mnist_available


def peer_imp(cfg: RunConfig) -> dict:
    t0 = time.time()
    splits = load_dataset(cfg.dataset, default_data_dir(), val_fraction=cfg.val_fraction)
    torch.manual_seed(cfg.seed)
    d = splits.train_x[0].numel()
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                          nn.Linear(100, splits.num_classes))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    linears = [m for m in model if isinstance(m, nn.Linear)]
    params = [(m, "weight") for m in linears]
    gen = torch.Generator().manual_seed(cfg.seed)
    rounds = []
    for r in range(cfg.rounds + 1):
        t = time.time()
        if r > 0:
            prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=cfg.prune_fraction)
            with torch.no_grad():  # rewind the survivors to their initial values
                for i, m in zip((1, 3, 5), linears):
                    m.weight_orig.copy_(init[f"{i}.weight"])
                    m.bias.copy_(init[f"{i}.bias"])
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        for _ in range(cfg.epochs):
            model.train()
            for xb, yb in Batches(splits.train_x, splits.train_y, cfg.batch_size, generator=gen):
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            accs = [_accuracy(model, x, y) for x, y in ((splits.val_x, splits.val_y),
                                                        (splits.test_x, splits.test_y))]
        kept = sum(int((m.weight != 0).sum()) for m in linears)
        total = sum(m.weight.numel() for m in linears)
        rounds.append({"round": r, "remaining": kept / total, "test_acc": accs[1], "seconds": time.time() - t})
    return {"seconds": time.time() - t0, "rounds": rounds}


@torch.no_grad()
def _accuracy(model, x, y) -> float:
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in Batches(x, y, 1024, shuffle=False))
    return correct / len(y)


def ours(cfg: RunConfig) -> dict:
    store = scratch_store()
    run_id = runner.create(store, cfg, status="running")
    t0 = time.time()
    runner.execute(store, run_id, default_data_dir())
    seconds = time.time() - t0
    rounds = [{k: r[k] for k in ("round", "remaining", "test_acc", "seconds")}
              for r in store.metrics(run_id, kind="round")]
    return {"seconds": seconds, "rounds": rounds}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="pairs (peer, ours), alternating which goes first")
    args = ap.parse_args()
    dataset = "mnist" if mnist_available(default_data_dir()) and not args.quick else "digits"
    cfg = RunConfig.from_dict(dict(model="lenet300", dataset=dataset, method="imp", rounds=1 if args.quick else
                                   args.rounds, prune_fraction=0.2, epochs=1 if args.quick else args.epochs,
                                   batch_size=128, lr=1e-3, device="cpu"))
    # Pairs run back to back, the order alternating, so a machine whose speed drifts
    # (a shared VM) weighs on both sides alike; the median of the pair ratios is reported.
    pairs = []
    for rep in range(1 if args.quick else args.repeats):
        if rep % 2 == 0:
            peer, mine = peer_imp(cfg), ours(cfg)
        else:
            mine, peer = ours(cfg), peer_imp(cfg)
        pairs.append((peer, mine))
        print(f"  pair {rep}: ours {mine['seconds']:.1f} s, peer {peer['seconds']:.1f} s, "
              f"ratio {mine['seconds'] / peer['seconds']:.3f}", flush=True)
    ratios = [m["seconds"] / p["seconds"] for p, m in pairs]
    ratio = statistics.median(ratios)
    peer, mine = pairs[0]
    same = all(abs(a["remaining"] - b["remaining"]) < 1e-4 for p, m in pairs for a, b in zip(p["rounds"], m["rounds"]))
    print(f"{dataset}: ours {statistics.median(m['seconds'] for _, m in pairs):.1f} s, torch.nn.utils.prune "
          f"{statistics.median(p['seconds'] for p, _ in pairs):.1f} s (medians), ratio {ratio:.3f} (median of "
          f"{len(pairs)} pairs); same sparsity per round: {same}")
    for a, b in zip(mine["rounds"], peer["rounds"]):
        print(f"  round {a['round']}: remaining {a['remaining']:.4f} vs {b['remaining']:.4f}, "
              f"test acc {a['test_acc']:.4f} vs {b['test_acc']:.4f}")
    write_result("peer_imp", {"dataset": dataset, "config": cfg.to_dict(), "ours": mine, "peer": peer,
                              "pairs": [{"ours_seconds": m["seconds"], "peer_seconds": p["seconds"]}
                                        for p, m in pairs],
                              "ours_over_peer": ratio, "ours_over_peer_each": ratios,
                              "same_sparsity_per_round": same}, args.quick)


if __name__ == "__main__":
    main()
