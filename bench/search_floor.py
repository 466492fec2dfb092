"""How cheap can a masked search step be? The floor under issue 19's ≤ 1.10 target.

    python bench/search_floor.py [--model lenet300] [--repeats 8] [--steps 400]

Times three step loops on the same model, interleaved in a rotating order (this VM's pace
drifts by 2× within minutes, so only ratios taken side by side mean anything):

- dense : the weights alone, as bench/speed.py's dense mode;
- search: the engine's search step (m⊙θ, λR'(m) through add_reg_grad, the masks' Adam
          step, the projection to [0, 1]);
- floor : what no masked search can skip when masks are trained with Adam — m⊙θ in the
          forward pass, its two backward products, and the masks' Adam step — with no
          penalty and no projection;
- product: m⊙θ and its two backward products alone (the masks get a gradient, never a step).

If floor/dense is already above the target, no reordering of the remaining work (R′, the
clamp) reaches it; only a kernel that fuses the masks' optimizer with the products could.
Batches are random tensors of the dataset's shape (the timing does not depend on the pixels).

`--compiled` adds a fifth loop, the search step with everything after the backward pass (Adam on
the weights and on the masks, log's λR′(m), the projection to [0, 1]) written as one function and
compiled by `torch.compile` (inductor: one C++ loop per tensor), and reports what compiling it
cost the process: whether compiling pays is compile seconds against seconds saved per epoch."""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import scratch_store, write_result

from engine import masking, regularizers, runner
from engine.config import RunConfig
from engine.models import build_model
from engine.train import RunContext

SHAPES = {"lenet300": ((1, 28, 28), 10)}   # MNIST's image shape and classes


def batch_loss(ctx: RunContext, x: torch.Tensor, y: torch.Tensor, i: int, batch: int) -> torch.Tensor:
    """The task loss of step i's batch (the batches taken in turn)."""
    j = i % (len(x) // batch)
    return ctx.task_loss(ctx.run_model(ctx.model, x[j * batch:(j + 1) * batch]), y[j * batch:(j + 1) * batch])


def step_loop(ctx: RunContext, mode: str, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int) -> float:
    """Seconds per step over `steps` steps of one mode."""
    model = ctx.model
    (masking.set_dense if mode == "dense" else masking.set_soft)(model)
    opts, _ = ctx.make_optimizers(mode in ("search", "floor"), 1, steps)
    masks = masking.mask_parameters(model) if mode == "product" else []
    reg = regularizers.get("log")
    params = reg.resolve({"eps": ctx.cfg.eps})
    t0 = time.perf_counter()
    for i in range(steps):
        loss = batch_loss(ctx, x, y, i, batch)
        for o in opts:
            o.zero_grad(set_to_none=True)
        for p in masks:   # "product": no optimizer holds the masks; drop their gradient as zero_grad would
            p.grad = None
        loss.backward()
        if mode == "search":
            ctx.add_reg_grad(reg, params)
        for o in opts:
            o.step()
        if mode in ("dense", "search"):
            masking.apply_masks_(model, ctx.layers)
    return (time.perf_counter() - t0) / steps


def compiled_loop(ctx: RunContext, x: torch.Tensor, y: torch.Tensor, steps: int, batch: int, kept: dict) -> float:
    """Seconds per step of the search step whose post-backward work is one compiled function (see
    the module's doc). Its Adam is torch.optim.Adam's update (β 0.9/0.999, ε 1e-8, bias-corrected);
    `kept` holds the moments and the compiled function from one repeat to the next."""
    model = ctx.model
    masking.set_soft(model)
    opt = ctx.make_optimizers(True, 1, steps)[0][0]
    groups = [(g["params"], g["lr"]) for g in opt.param_groups]
    if "fn" not in kept:
        b1, b2, eps = 0.9, 0.999, 1e-8

        def post(groups, grads, avgs, sqs, coef, reg_eps, bc1, bc2):
            for k, (params, lr) in enumerate(groups):
                for p, g, a, s in zip(params, grads[k], avgs[k], sqs[k]):
                    if k == 1:                          # the masks: + λR′(m) of log, then clipped
                        g = g + coef / (p + reg_eps)
                    a.lerp_(g, 1 - b1)
                    s.mul_(b2).addcmul_(g, g, value=1 - b2)
                    p.sub_(lr * a / bc1 / ((s / bc2).sqrt() + eps))
                    if k == 1:
                        p.clamp_(0.0, 1.0)
        kept["fn"] = torch.compile(post, fullgraph=True)
        kept["avgs"] = [[torch.zeros_like(p) for p in ps] for ps, _ in groups]
        kept["sqs"] = [[torch.zeros_like(p) for p in ps] for ps, _ in groups]
        kept["step"] = 0
    coef = torch.tensor(ctx.lam / ctx.total_prunable)
    reg_eps = torch.tensor(ctx.cfg.eps)
    everything = [p for ps, _ in groups for p in ps]
    t0 = time.perf_counter()
    for i in range(steps):
        loss = batch_loss(ctx, x, y, i, batch)
        for p in everything:
            p.grad = None
        loss.backward()
        kept["step"] += 1
        t = kept["step"]
        with torch.no_grad():
            kept["fn"](groups, [[p.grad for p in ps] for ps, _ in groups], kept["avgs"], kept["sqs"], coef,
                       reg_eps, torch.tensor(1 - 0.9 ** t), torch.tensor(1 - 0.999 ** t))
    return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="lenet300", choices=list(SHAPES))
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="2 repeats of 10 steps (a smoke test)")
    ap.add_argument("--compiled", action="store_true",
                    help="also time the search step with its post-backward work compiled (torch.compile)")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.steps, args.batch = 2, 10, 16
    cfg = RunConfig.from_dict(dict(model=args.model, dataset="digits", method="dense", epochs=1,
                                   batch_size=args.batch, optimizer="adam", lr=1.2e-3, device="cpu"))
    store = scratch_store()
    ctx = RunContext(cfg, store, runner.create(store, cfg, status="running"), None)
    shape, classes = SHAPES[args.model]
    # the context was made on digits (no download needed); its model is rebuilt at MNIST's size
    ctx.model = ctx.forward = build_model(args.model, shape, classes)
    ctx.layers = masking.prunable_layers(ctx.model)
    ctx.total_prunable = sum(layer.weight.numel() for _, layer in ctx.layers)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((40 * args.batch, *shape), generator=gen)
    y = torch.randint(0, classes, (40 * args.batch,), generator=gen)
    ctx.lam = 1e-4
    modes = ["dense", "search", "floor", "product"] + (["compiled"] if args.compiled else [])
    times: dict[str, list[float]] = {m: [] for m in modes}
    kept: dict = {}
    compile_s = None
    if args.compiled:           # the first call compiles: timed alone, as a run would pay it
        t = time.perf_counter()
        compiled_loop(ctx, x, y, 1, args.batch, kept)
        compile_s = time.perf_counter() - t
    for rep in range(args.repeats + 1):
        for mode in modes[rep % len(modes):] + modes[:rep % len(modes)]:
            t = (compiled_loop(ctx, x, y, args.steps, args.batch, kept) if mode == "compiled"
                 else step_loop(ctx, mode, x, y, args.steps, args.batch))
            if rep:  # the first round warms up
                times[mode].append(t)
    row = {"model": args.model, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
           "ms_per_step": {m: 1e3 * statistics.median(v) for m, v in times.items()},
           "search_over_dense": statistics.median(s / d for s, d in zip(times["search"], times["dense"])),
           "floor_over_dense": statistics.median(f / d for f, d in zip(times["floor"], times["dense"])),
           "product_over_dense": statistics.median(f / d for f, d in zip(times["product"], times["dense"])),
           "all_seconds": times}
    if args.compiled:
        row["compiled_over_dense"] = statistics.median(c / d for c, d in zip(times["compiled"], times["dense"]))
        row["compile_seconds"] = compile_s
        saved = statistics.median(s - c for s, c in zip(times["search"], times["compiled"]))
        row["saved_ms_per_step"] = 1e3 * saved
        # LeNet-300-100 on MNIST: 469 steps an epoch at batch 128
        row["epochs_to_repay_compile"] = compile_s / (saved * 60_000 / args.batch) if saved > 0 else None
    print(f"{args.model}: dense {row['ms_per_step']['dense']:.3f} ms/step  search/dense "
          f"{row['search_over_dense']:.3f}  floor/dense {row['floor_over_dense']:.3f}  "
          f"product/dense {row['product_over_dense']:.3f}", flush=True)
    if args.compiled:
        repaid = row["epochs_to_repay_compile"] or float("inf")
        print(f"  compiled/dense {row['compiled_over_dense']:.3f}  compiling took {compile_s:.1f} s  saves "
              f"{row['saved_ms_per_step']:.3f} ms/step: repaid after {repaid:.1f} MNIST epochs", flush=True)
    name = f"search_floor_{args.model}" + ("_compiled" if args.compiled else "")
    write_result(name if not args.quick else "search_floor", {"rows": [row]}, args.quick)


if __name__ == "__main__":
    main()
