"""Continuous sparsification (Savarese, Silva & Maire, NeurIPS 2020).

Each prunable weight gets a logit s and a soft mask m = sigmoid(β·s), trained
jointly with θ on L(x; c·m⊙θ) + λ‖m‖₁ (ℓ1 on the soft mask, `reg_scale` as for
concave runs). As in the reference code (lolemacs/continuous-sparsification),
c = 1/sigmoid(s0) scales the soft mask and the ticket alike, so a search starts
at the dense network's output scale (c·sigmoid(s0) = 1); the scale is folded
into the weights once the ticket is retrained, so the saved model is a plain one.
Within each round the temperature β grows from 1 to `beta_final` (default 200)
so m hardens towards a step function of s: exponentially step by step, or once
per epoch with the last epoch at beta_final (`beta_schedule: epoch`, the
reference). Between rounds, as the reference runs it (its temperature is set
back to 1 before the reset), s ← min(s, s0): logits that ended negative keep
their value (and stay off), positive ones restart at `s0`; β restarts at 1 and
the weights carry on. The ticket is s > 0 after the last round; the weights are
rewound to the rewind point and retrained with that binary mask.

Masks are trained by Adam at `mask_lr` (a second parameter group of the fused
optimizer), or by the reference's SGD with Nesterov momentum 0.9
(`mask_optimizer: sgd`; the reference's rate is 0.1). Each round's search starts
fresh optimizers unless `keep_optimizer_state` (the reference keeps them). With
`target_sparsity`, λ adapts during each search (round r aims at
remaining^((r+1)/rounds), as for concave runs) and the ticket keeps s > 0, or
exactly the top-k logits with `threshold_mode: topk`; whether the target was
reached is recorded as the `sparsity_vs_target` check.
docs/continuous_sparsification.md lists what differs from the reference and why.
"""

from __future__ import annotations

import math

import torch

from .. import masking
from ..config import UNSET_MEANS
from ..train import RunContext
from .common import (
    check_target_sparsity,
    save_ticket,
    searched_ticket,
    start_retrain,
    summary,
    train_ticket,
)

S0 = UNSET_MEANS["s0"]
BETA_FINAL = UNSET_MEANS["beta_final"]


def beta_at(step: int, total: int, beta_final: float) -> float:
    """β for the step with index `step` (0-based) of a `total`-step round:
    1 at the first step, exactly `beta_final` at the last, exponential between."""
    if total <= 1:
        return float(beta_final)
    return float(beta_final ** (min(step, total - 1) / (total - 1)))


def epoch_beta_at(step: int, total: int, epochs: int, beta_final: float) -> float:
    """The reference's schedule: β constant within an epoch, 1 in the first, multiplied by
    beta_final^(1/(epochs−1)) at each epoch start, beta_final in the last (one epoch: beta_final)."""
    epoch = min(step // max(1, total // epochs), epochs - 1)
    return beta_at(epoch, epochs, beta_final)


def reset_logits(s: torch.Tensor, s0: float) -> torch.Tensor:
    """Between rounds: s ← min(s, s0), the reference's prune() with its temperature already
    back at 1. Negative logits keep their value (and stay off); positive ones restart at s0."""
    return torch.clamp(s, max=s0)


def mask_scale(s0: float) -> float:
    """The reference's 1/sigmoid(s0): the soft mask at s0 times it is 1, the dense network."""
    return 1.0 + math.exp(-s0)


def set_beta(ctx: RunContext, beta: float) -> None:
    for _, layer in ctx.layers:
        layer.beta = beta


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    s0 = S0 if cfg.s0 is None else cfg.s0
    beta_final = BETA_FINAL if cfg.beta_final is None else cfg.beta_final
    kind, k = cfg.rewind_point()
    capture = ("iter", 0) if kind == "init" else (kind, k) if kind in ("epoch", "iter") else None
    ctx.epochs_planned = cfg.rounds * cfg.epochs + cfg.retrain_epochs_
    st = ctx.state
    scale = mask_scale(s0)
    if not st.get("scale_folded"):     # (after the retrain the saved weights carry it)
        masking.set_mask_scale(ctx.model, scale)

    def schedule(step: int, total: int) -> dict:
        beta = epoch_beta_at(step, total, cfg.epochs, beta_final) if cfg.beta_schedule == "epoch" else \
            beta_at(step, total, beta_final)
        set_beta(ctx, beta)
        return {"beta": beta}

    for r in range(cfg.rounds):
        target_rem = None
        if cfg.target_sparsity is not None:
            target_rem = (1 - cfg.target_sparsity) ** ((r + 1) / cfg.rounds)
        if ctx.stage(f"r{r}-search"):
            logits = st.get("logits")  # the previous round's end (None in round 0)
            masking.set_soft(ctx.model, 0.5, "sigmoid")
            with torch.no_grad():
                for n, layer in ctx.layers:
                    layer.mask.copy_(torch.full_like(layer.mask, s0) if logits is None else
                                     reset_logits(logits[n].to(layer.mask.device), s0))
            ctx.train_phase(round=r, phase="search", epochs=cfg.epochs, regularizer="l1",
                            target_remaining=target_rem, capture=capture if r == 0 else None,
                            schedule=schedule, optimizer_state=st.get("optimizer_state"))
            st["logits"] = {n: layer.mask.detach().cpu().clone() for n, layer in ctx.layers}
            if cfg.keep_optimizer_state:     # the reference's optimizers live through every round
                st["optimizer_state"] = ctx.last_optimizer_state
            set_beta(ctx, 1.0)
            ctx.end_stage()

    if ctx.stage("threshold"):
        logits = st["logits"]
        soft = {n: torch.sigmoid(beta_final * s) for n, s in logits.items()}
        ctx.store.save_masks(ctx.run_id, f"r{cfg.rounds - 1}-search-end", soft, binary=False)
        positive = ticket_of(logits)
        target = None if cfg.target_sparsity is None else 1 - cfg.target_sparsity
        binary = searched_ticket(ctx, logits, positive, target, cfg.rounds - 1)
        start_retrain(ctx, binary, kind, cfg.rounds - 1, soft=soft, phase="retrain")
        st["binary"] = binary
        st["search_remaining"] = masking.sparsity_report(positive)["remaining"]   # s > 0
        ctx.end_stage()

    if ctx.stage("retrain"):
        st["last"] = train_ticket(ctx, cfg.rounds - 1, st["binary"], "retrain", cfg.retrain_epochs_)
        masking.fold_mask_scale(ctx.model)       # c·θ into θ: the saved model is a plain network
        st["scale_folded"] = True
        ctx.end_stage()

    save_ticket(ctx, st["binary"], cfg.rounds - 1)
    check_target_sparsity(ctx, st["binary"])
    return summary(ctx, st["binary"], st["last"], lam_final=ctx.lam, lam_history=ctx.lam_history,
                   s0=s0, beta_final=beta_final, mask_scale=scale, search_remaining=st.get("search_remaining"))


def ticket_of(logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The CS ticket: every weight whose logit ended positive."""
    return {n: s > 0 for n, s in logits.items()}
