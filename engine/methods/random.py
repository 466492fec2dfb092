"""Random pruning: the baseline a real ticket must beat. Either the per-layer
densities of another run's ticket (`random_from`), or one density
(`target_sparsity`) spread globally or per layer.

With `random_from` the control is that ticket with its mask shuffled: it starts
from the ticket's own rewind weights (init, epoch:K or iter:K, bit for bit) and
trains exactly as long as the ticket's retrain; a config that asks for another
length, rewind point or optimizer is refused with a message naming the key.
With `target_sparsity` it trains from its own seeded init for `epochs`."""

from __future__ import annotations

import torch

from .. import masking
from ..train import RunContext
from .common import check_rewind, check_sparsity, check_zeros, save_ticket, source_ticket, start_retrain, summary


def random_masks(shapes: dict[str, torch.Size], kept: dict[str, int] | int, gen: torch.Generator):
    """Exactly `kept` random entries per layer (dict) or across all layers (int)."""
    if isinstance(kept, dict):
        out = {}
        for n, shape in shapes.items():
            numel = int(torch.Size(shape).numel())
            keep = torch.zeros(numel, dtype=torch.bool)
            keep[torch.randperm(numel, generator=gen)[: kept[n]]] = True
            out[n] = keep.view(shape)
        return out
    sizes = [int(torch.Size(s).numel()) for s in shapes.values()]
    keep = torch.zeros(sum(sizes), dtype=torch.bool)
    keep[torch.randperm(sum(sizes), generator=gen)[:kept]] = True
    chunks = keep.split(sizes)
    return {n: c.view(s) for (n, s), c in zip(shapes.items(), chunks)}


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    ctx.epochs_planned = cfg.epochs
    shapes = {n: layer.weight.shape for n, layer in masking.prunable_layers(ctx.model)}
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    rewind = None
    if cfg.random_from:
        src, full = source_ticket(ctx, "random_from", rewind=True)
        if not full.get("rewind"):
            raise ValueError(f"random_from run {cfg.random_from} has no rewind weights (rewind={src['rewind']}); "
                             f"a random control needs a ticket with rewind init, epoch:K or iter:K")
        rewind = full["rewind"]
        ticket = full["mask"]
        kept = {n: int(ticket[n].sum()) for n in shapes}
        target = 1 - sum(kept.values()) / sum(t.numel() for t in ticket.values())
        what = f"ticket of run {cfg.random_from}"
    else:
        total = sum(int(torch.Size(s).numel()) for s in shapes.values())
        rem = 1 - cfg.target_sparsity
        if cfg.prune_scope == "layer":
            kept = {n: int(round(rem * torch.Size(s).numel())) for n, s in shapes.items()}
        else:
            kept = int(round(rem * total))
        target = cfg.target_sparsity
        what = "target_sparsity"
    st = ctx.state
    if ctx.stage("setup"):
        st["mask"] = random_masks(shapes, kept, gen)
        masking.set_dense(ctx.model)
        if rewind is not None:  # the source ticket's rewind weights, bit for bit
            masking.load_weights_state(ctx.model, {k: v.to(ctx.device) for k, v in rewind.items()})
        ctx.save_rewind(0, "train", 0)
        start_retrain(ctx, st["mask"], "init", 0)
        ctx.end_stage()
    if ctx.stage("train"):
        if not ctx.resuming_stage():
            check_rewind(ctx, st["mask"], 0)
        res = ctx.train_phase(round=0, phase="train", epochs=cfg.epochs)
        check_zeros(ctx, 0)
        st["last"] = ctx.result_dict(res)
        ctx.end_stage()
    save_ticket(ctx, st["mask"], 0)
    check_sparsity(ctx, masking.sparsity_report(st["mask"])["sparsity"], target, 0.002, what)
    return summary(ctx, st["mask"], st["last"])
