"""The paper's method: learn a relaxed mask m ∈ [0,1] jointly with θ on
L(x; m⊙θ) + λR(m), threshold it to a binary ticket, rewind, retrain.

Choices the paper leaves open are config parameters (defaults in brackets):
how m stays in [0,1] (`mask_param`: clip [projection] or sigmoid), the
threshold (`threshold` τ [0.5] or `threshold_mode`=topk), the rewind point
(`rewind` [init]), the scale of R (`reg_scale` [mean per entry]) and, with
`target_sparsity`, λ adapted during the search. With several rounds each
search starts from the previous ticket and its target is spread
geometrically: round r aims at remaining^((r+1)/rounds).
"""

from __future__ import annotations

import torch

from .. import masking
from ..train import RunContext
from .common import (
    check_nested,
    check_target_sparsity,
    save_ticket,
    searched_ticket,
    start_retrain,
    summary,
    train_ticket,
)


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    kind, k = cfg.rewind_point()
    capture = ("iter", 0) if kind == "init" else (kind, k) if kind in ("epoch", "iter") else None
    ctx.epochs_planned = cfg.rounds * (cfg.epochs + cfg.retrain_epochs_)
    st = ctx.state  # survives a resume: stages already done are skipped
    st.setdefault("prev", None)
    st.setdefault("threshold_accs", [])
    for r in range(cfg.rounds):
        target_rem = None
        if cfg.target_sparsity is not None:
            target_rem = (1 - cfg.target_sparsity) ** ((r + 1) / cfg.rounds)

        if ctx.stage(f"r{r}-search"):
            masking.set_soft(ctx.model, cfg.mask_init, cfg.mask_param, start=st["prev"])
            first_capture = capture if r == 0 else None
            if r == 0 and cfg.warm_start:
                # The rewind point stays this run's own: its seeded init is saved before the
                # source's weights replace it (or, when asked, the source's rewind weights are used).
                if cfg.warm_start_rewind == "source":
                    _source_rewind(ctx, cfg.warm_start)
                    first_capture = None
                elif capture == ("iter", 0):
                    ctx.save_rewind(0, "search", 0)
                    first_capture = None
                _warm_start(ctx, cfg.warm_start)
            ctx.train_phase(round=r, phase="search", epochs=cfg.epochs, regularizer=cfg.regularizer,
                            target_remaining=target_rem, capture=first_capture)
            ctx.end_stage()

        if ctx.stage(f"r{r}-threshold"):
            soft = masking.get_masks(ctx.model)
            ctx.store.save_masks(ctx.run_id, f"r{r}-search-end", soft, binary=False)
            if r == 0:  # what another run's warm_start starts from
                ctx.store.save_array(ctx.run_id, "search_end", {"weights": masking.weights_state(ctx.model),
                                                                "masks": soft})
            above = masking.threshold_masks(soft, cfg.threshold)
            binary = searched_ticket(ctx, soft, above, target_rem, r, allowed=st["prev"])
            # what the search itself kept (m > τ), whatever the threshold mode trimmed it to
            st["search_remaining"] = masking.sparsity_report(above)["remaining"]
            check_nested(ctx, st["prev"], binary)
            st["threshold_accs"].append(_thresholded_accuracy(ctx, binary))
            # rewind (or fine-tune / re-init) and fix the binary mask
            start_retrain(ctx, binary, kind, r, soft=soft, phase="retrain")
            st["binary"] = binary
            ctx.end_stage()

        if ctx.stage(f"r{r}-retrain"):
            st["last"] = train_ticket(ctx, r, st["binary"], "retrain", cfg.retrain_epochs_)
            st["prev"] = st["binary"]
            ctx.end_stage()

    save_ticket(ctx, st["prev"], cfg.rounds - 1)
    check_target_sparsity(ctx, st["prev"])
    return summary(ctx, st["prev"], st["last"], lam_final=ctx.lam, lam_history=ctx.lam_history,
                   thresholded_test_accuracy=st["threshold_accs"][-1],
                   search_remaining=st.get("search_remaining"))


def _warm_start(ctx: RunContext, run_id: str) -> None:
    """θ and m from another run's first search end (same architecture)."""
    try:
        src = ctx.store.load_array(run_id, "search_end")
    except (FileNotFoundError, KeyError):
        raise ValueError(f"warm_start run {run_id!r} has no search-end state in this store "
                         f"(it must be a finished concave run)") from None
    layers = dict(masking.prunable_layers(ctx.model))
    if set(src["masks"]) != set(layers) or any(src["masks"][n].shape != layers[n].weight.shape for n in layers):
        raise ValueError(f"warm_start run {run_id!r} has a different architecture")
    masking.load_weights_state(ctx.model, src["weights"])
    with torch.no_grad():
        for n, layer in layers.items():
            m = src["masks"][n].to(layer.mask.device)
            if layer.mask_param == "sigmoid":
                m = torch.logit(m.clamp(1e-3, 1 - 1e-3))
            layer.mask.copy_(m)


def _source_rewind(ctx: RunContext, run_id: str) -> None:
    """warm_start_rewind=source: this run rewinds to the warm_start run's saved rewind weights."""
    try:
        state = ctx.store.load_array(run_id, "rewind")["state"]
    except (FileNotFoundError, KeyError):
        raise ValueError(f"warm_start run {run_id!r} has no saved rewind weights in this store") from None
    own = masking.weights_state(ctx.model)
    if set(state) != set(own) or any(state[k].shape != own[k].shape for k in own):
        raise ValueError(f"warm_start run {run_id!r} has a different architecture")
    masking.load_weights_state(ctx.model, state)
    ctx.save_rewind(0, "search", 0)  # this run's rewind.pt: the source's weights, bit for bit
    masking.load_weights_state(ctx.model, own)


def _thresholded_accuracy(ctx: RunContext, binary) -> float:
    """Test accuracy right after thresholding, before any retraining (binary m ⊙ trained θ).
    ℓ1 masks sit between 0 and 1 far more than log masks, so this shows what thresholding costs."""
    saved = masking.weights_state(ctx.model)
    modes = [(layer, layer.mode, layer.mask_param, layer.mask.detach().clone())
             for _, layer in masking.prunable_layers(ctx.model)]
    masking.set_binary(ctx.model, binary)
    _, acc = ctx.evaluate("test")
    masking.load_weights_state(ctx.model, saved)
    for layer, mode, param, mask in modes:
        layer.mode, layer.mask_param = mode, param
        layer.mask.data.copy_(mask)
        layer.mask.requires_grad_(mode == "soft")
    return acc
