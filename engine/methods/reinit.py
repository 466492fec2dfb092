"""The random-reinit control of a ticket (Frankle & Carbin 2019, §"random reinitialization"):
keep the ticket's exact mask and redraw only θ, from the model's own init distribution with
another seed, then train like the ticket's retrain. A real ticket should beat it.

`reinit_from` names a finished concave or imp run. Every round of that run is repeated on its
own mask (the `r{k}-ticket` snapshots), each from a fresh draw, so the control has one
accuracy per sparsity level, like its source. (IMP's `rewind=reinit` is refused: it would
prune the re-drawn network and drift away from the ticket's masks.)"""

from __future__ import annotations

from ..train import RunContext
from .common import (
    redraw_weights,
    save_ticket,
    source_ticket,
    start_retrain,
    summary,
    train_ticket,
)


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    src, _ = source_ticket(ctx, "reinit_from", rewind=False)
    rounds = sorted(int(t[1:-len("-ticket")]) for t in ctx.store.mask_snapshots(cfg.reinit_from)
                    if t.startswith("r") and t.endswith("-ticket"))
    ctx.epochs_planned = len(rounds) * cfg.epochs
    st = ctx.state
    for r in rounds:
        if ctx.stage(f"r{r}-setup"):
            mask = {n: m.bool() for n, m in ctx.store.load_masks(cfg.reinit_from, f"r{r}-ticket").items()}
            seed = cfg.seed + 7_919 * (r + 1)
            redraw_weights(ctx, seed if seed != src["seed"] else seed + 1)  # never the source's own init
            ctx.save_rewind(r, "train", 0)
            start_retrain(ctx, mask, "init", r)
            st["mask"] = mask
            ctx.end_stage()
        if ctx.stage(f"r{r}-train"):
            st["last"] = train_ticket(ctx, r, st["mask"], "train", cfg.epochs)
            ctx.end_stage()
    save_ticket(ctx, st["mask"], rounds[-1])
    return summary(ctx, st["mask"], st["last"], source_run=cfg.reinit_from)



