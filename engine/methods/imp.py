"""Iterative magnitude pruning (Frankle & Carbin 2019; Frankle et al. 2020).

Round 0 trains the dense network; each later round prunes a fraction p of the
remaining weights by |θ| (globally or per layer; the output layer may have its
own rate), rewinds the survivors to the rewind point and retrains. Round r
therefore ends at (1−p)^r remaining; each round's mask and accuracy are stored.
"""

from __future__ import annotations

import time

import torch

from .. import masking
from ..train import RunContext
from .common import (
    check_every_layer_kept,
    check_nested,
    check_sparsity,
    record_round,
    save_ticket,
    start_retrain,
    summary,
    train_ticket,
)


def prune_by_magnitude(model, current: dict[str, torch.Tensor], p: float, scope: str,
                       output_p: float | None, keep_every_layer: bool = True,
                       refilled: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Remove a fraction p of the currently kept weights with the smallest |θ|
    (a layer the global ranking would empty keeps its largest weight, see topk_masks)."""
    layers = dict(masking.prunable_layers(model))
    names = list(layers)
    scores = {n: layers[n].weight.detach().abs().float().cpu() for n in names}
    groups = [(names, p)] if output_p is None else [(names[:-1], p), (names[-1:], output_p)]
    out: dict[str, torch.Tensor] = {}
    for group, rate in groups:
        units = [group] if scope == "global" else [[n] for n in group]
        for unit in units:
            kept = sum(int(current[n].sum()) for n in unit)
            numel = sum(current[n].numel() for n in unit)
            k_new = int(round((1 - rate) * kept))
            out.update(masking.topk_masks({n: scores[n] for n in unit}, k_new / numel, "global",
                                          allowed={n: current[n] for n in unit},
                                          keep_every_layer=keep_every_layer, refilled=refilled))
    return out


def expected_remaining(model, rounds: int, p: float, output_p: float | None) -> float:
    layers = masking.prunable_layers(model)
    sizes = [layer.weight.numel() for _, layer in layers]
    if output_p is None:
        return (1 - p) ** rounds
    return (sum(sizes[:-1]) * (1 - p) ** rounds + sizes[-1] * (1 - output_p) ** rounds) / sum(sizes)


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    kind, k = cfg.rewind_point()
    capture = ("iter", 0) if kind == "init" else (kind, k) if kind in ("epoch", "iter") else None
    ctx.epochs_planned = (cfg.rounds + 1) * cfg.epochs
    st = ctx.state
    if ctx.stage("r0-train"):
        masking.set_dense(ctx.model)
        st["mask"] = {n: torch.ones_like(layer.weight, dtype=torch.bool).cpu() for n, layer in
                      masking.prunable_layers(ctx.model)}
        t = time.time()
        res = ctx.train_phase(round=0, phase="train", epochs=cfg.epochs, capture=capture)
        record_round(ctx, 0, st["mask"], res, "train", time.time() - t)
        st["last"] = ctx.result_dict(res)
        ctx.end_stage()
    for r in range(1, cfg.rounds + 1):
        if ctx.stage(f"r{r}-prune"):
            refilled: list[str] = []
            new = prune_by_magnitude(ctx.model, st["mask"], cfg.prune_fraction, cfg.prune_scope,
                                     cfg.output_prune_fraction, keep_every_layer=not cfg.allow_empty_layers,
                                     refilled=refilled)
            check_every_layer_kept(ctx, refilled, new, r)
            check_nested(ctx, st["mask"], new)
            st["mask"] = new
            start_retrain(ctx, new, kind, r)
            ctx.end_stage()
        if ctx.stage(f"r{r}-train"):
            st["last"] = train_ticket(ctx, r, st["mask"], "train", cfg.epochs)
            ctx.end_stage()
    save_ticket(ctx, st["mask"], cfg.rounds)
    rep = masking.sparsity_report(st["mask"])
    target = 1 - expected_remaining(ctx.model, cfg.rounds, cfg.prune_fraction, cfg.output_prune_fraction)
    check_sparsity(ctx, rep["sparsity"], target, 0.002, f"(1−p)^rounds schedule, {cfg.rounds} rounds")
    return summary(ctx, st["mask"], st["last"])
