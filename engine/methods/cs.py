"""Continuous sparsification (Savarese, Silva & Maire, NeurIPS 2020).

Each prunable weight gets a logit s and a soft mask m = sigmoid(β·s), trained
jointly with θ on L(x; m⊙θ) + λ‖m‖₁ (ℓ1 on the soft mask, `reg_scale` as for
concave runs). Within each round the temperature β grows exponentially from 1
to `beta_final` (default 200), so m hardens towards a step function of s.
Between rounds, as in the reference code, s ← min(β_final·s, s0): logits that
ended negative stay negative (off, at the same soft value), positive ones are
reset to `s0` (with s0 > 0, those with β_final·s below s0 keep β_final·s); β
restarts at 1 and the weights carry on. The ticket is s > 0 after the last round;
the weights are rewound to the rewind point and retrained with that binary mask.

Masks and weights are separate parameter groups of the engine's fused optimizer
(masks: Adam at `mask_lr`). With `target_sparsity`, λ adapts during each search
(round r aims at remaining^((r+1)/rounds), as for concave runs) and the ticket
keeps s > 0, or exactly the top-k logits with `threshold_mode: topk`; whether
the target was reached is recorded as the `sparsity_vs_target` check.
"""

from __future__ import annotations

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


def reset_logits(s: torch.Tensor, beta_final: float, s0: float) -> torch.Tensor:
    """Between rounds: s ← min(β_final·s, s0). Negative logits keep their soft value
    sigmoid(β_final·s) at β = 1 and stay negative; positive ones restart at s0."""
    return torch.clamp(beta_final * s, max=s0)


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

    def schedule(step: int, total: int) -> dict:
        beta = beta_at(step, total, beta_final)
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
                                     reset_logits(logits[n].to(layer.mask.device), beta_final, s0))
            ctx.train_phase(round=r, phase="search", epochs=cfg.epochs, regularizer="l1",
                            target_remaining=target_rem, capture=capture if r == 0 else None,
                            schedule=schedule)
            st["logits"] = {n: layer.mask.detach().cpu().clone() for n, layer in ctx.layers}
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
        ctx.end_stage()

    save_ticket(ctx, st["binary"], cfg.rounds - 1)
    check_target_sparsity(ctx, st["binary"])
    return summary(ctx, st["binary"], st["last"], lam_final=ctx.lam, lam_history=ctx.lam_history,
                   s0=s0, beta_final=beta_final, search_remaining=st.get("search_remaining"))


def ticket_of(logits: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The CS ticket: every weight whose logit ended positive."""
    return {n: s > 0 for n, s in logits.items()}
