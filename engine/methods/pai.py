"""Pruning at initialization: score every prunable weight at init, keep the
best `1 − target_sparsity` (globally or per layer, `prune_scope`), then train
the masked network from init for `epochs`.

Scorers (`scorer`, default snip):
- snip      |θ ⊙ ∂L/∂θ| on `score_batches` minibatches (Lee et al. 2019);
- grasp     −θ ⊙ Hg, H g by double backward (Wang et al. 2020). As in the paper,
            the weights with the *largest* scores are removed, i.e. the lowest kept;
- synflow   data-free: |θ| weights (biases too), an all-ones input, R = 1ᵀf(1);
            score |θ ⊙ ∂R/∂θ|, pruned over `synflow_iters` rounds towards the
            target on an exponential schedule (Tanaka et al. 2020);
- magnitude |θ| at init;
- random    uniform random scores (seeded).

BatchNorm scores in eval mode by default (`score_mode`, as Synaptic-Flow's default
`--prune-train-mode False`: running statistics, at init mean 0 and variance 1) or in train
mode (batch statistics, as the original GraSP code). The model's own mode and its running
statistics are restored afterwards; the summary records the mode.

Scoring is its own recorded phase (`score`), with its wall time in the summary
(`scoring_seconds`) and as a fraction of one training epoch (`scoring_epoch_fraction`).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterable

import torch

from .. import masking
from ..config import UNSET_MEANS
from ..data import Batches
from ..train import RunContext
from .common import check_every_layer_kept, check_sparsity, save_ticket, start_retrain, summary, train_ticket

SCORER = UNSET_MEANS["scorer"]
SYNFLOW_ITERS = UNSET_MEANS["synflow_iters"]
SCORE_BATCHES = UNSET_MEANS["score_batches"]
SCORE_MODE = UNSET_MEANS["score_mode"]
GRASP_T = 200.0  # the GraSP reference divides the logits by this temperature when scoring

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: layer.weight for n, layer in masking.prunable_layers(model)}


@contextlib.contextmanager
def scoring_mode(model, score_mode: str):
    """The model in `score_mode` (eval or train) while scoring; afterwards every module's own
    mode and every buffer (train mode moves BatchNorm's running statistics) as they were."""
    if score_mode not in ("eval", "train"):
        raise ValueError(f"score_mode must be eval or train, got {score_mode!r}")
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    model.train(score_mode == "train")
    try:
        yield model
    finally:
        for m, was in modes:
            m.training = was
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)


def snip_scores(model, loss: Loss, batches: Iterable) -> dict[str, torch.Tensor]:
    """|θ ⊙ g|, g the gradient of the loss summed over the batches (dense forward pass)."""
    w = _weights(model)
    g = {n: torch.zeros_like(p) for n, p in w.items()}
    for xb, yb in batches:
        grads = torch.autograd.grad(loss(model(xb), yb), list(w.values()))
        for n, d in zip(w, grads):
            g[n] += d
    return {n: (w[n].detach() * g[n]).abs() for n in w}


def grasp_scores(model, loss: Loss, batches: Iterable) -> dict[str, torch.Tensor]:
    """−θ ⊙ Hg (the paper's S(−θ)); higher = remove first."""
    batches = list(batches)
    w = _weights(model)
    params = list(w.values())
    g = [torch.zeros_like(p) for p in params]
    for xb, yb in batches:
        for acc, d in zip(g, torch.autograd.grad(loss(model(xb), yb), params)):
            acc += d
    hg = [torch.zeros_like(p) for p in params]
    for xb, yb in batches:  # Hg = ∂(gᵀ∇L)/∂θ with g held fixed
        grads = torch.autograd.grad(loss(model(xb), yb), params, create_graph=True)
        z = sum((d * gi).sum() for d, gi in zip(grads, g))
        for acc, d in zip(hg, torch.autograd.grad(z, params)):
            acc += d
    return {n: -(p.detach() * h) for (n, p), h in zip(w.items(), hg)}


def _linearized(model, score_mode: str = SCORE_MODE):
    """A float64 copy in `score_mode` with every parameter replaced by its absolute value."""
    if score_mode not in ("eval", "train"):
        raise ValueError(f"score_mode must be eval or train, got {score_mode!r}")
    net = copy.deepcopy(model).double().train(score_mode == "train")
    masking.set_dense(net)
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    return net


def synflow_scores(model, in_shape, masks: dict[str, torch.Tensor] | None = None,
                   _net=None, score_mode: str = SCORE_MODE) -> dict[str, torch.Tensor]:
    """|θ ⊙ ∂R/∂θ| with R = 1ᵀ f(1) on the network with every parameter replaced by
    its absolute value (pruned weights at 0); in float64, in `score_mode`, on a copy."""
    net = _net if _net is not None else _linearized(model, score_mode)
    w = _weights(net)
    params = list(w.values())
    if masks is not None:
        abs_w = {n: p.detach().clone() for n, p in w.items()}
        with torch.no_grad():
            for n, p in w.items():
                p.mul_(masks[n].to(p.device, p.dtype))
    r = net(torch.ones((1, *in_shape), dtype=torch.float64, device=params[0].device)).sum()
    grads = torch.autograd.grad(r, params)
    out = {n: (p.detach() * d).abs().float() for (n, p), d in zip(w.items(), grads)}
    if masks is not None:  # leave the copy unmasked for the next iteration
        with torch.no_grad():
            for n, p in w.items():
                p.copy_(abs_w[n])
    return out


def synflow_masks(model, in_shape, remaining: float, scope: str, iters: int,
                  keep_every_layer: bool = True, refilled: list[str] | None = None,
                  score_mode: str = SCORE_MODE) -> dict[str, torch.Tensor]:
    """Iterative SynFlow: iteration k keeps remaining^(k/iters) of the weights,
    scoring with the previous iteration's mask applied (which avoids layer collapse)."""
    net = _linearized(model, score_mode)
    mask = {n: torch.ones_like(p, dtype=torch.bool).cpu() for n, p in _weights(model).items()}
    for k in range(1, iters + 1):
        scores = {n: s.cpu() for n, s in synflow_scores(model, in_shape, mask, _net=net).items()}
        mask = masking.topk_masks(scores, remaining ** (k / iters), scope, allowed=mask,
                                  keep_every_layer=keep_every_layer, refilled=refilled)
    return mask


def scores_for(scorer: str, model, loss: Loss, batches: Iterable, gen: torch.Generator,
               score_mode: str = SCORE_MODE) -> dict[str, torch.Tensor]:
    """Scores where higher = keep (GraSP's are negated: the paper removes its highest), with
    BatchNorm in `score_mode` while the data passes through."""
    if scorer == "snip":
        with scoring_mode(model, score_mode):
            return snip_scores(model, loss, batches)
    if scorer == "grasp":
        with scoring_mode(model, score_mode):
            return {n: -s for n, s in grasp_scores(model, loss, batches).items()}
    if scorer == "magnitude":
        return {n: p.detach().abs() for n, p in _weights(model).items()}
    if scorer == "random":
        return {n: torch.rand(p.shape, generator=gen) for n, p in _weights(model).items()}
    raise ValueError(f"unknown scorer {scorer!r}")


def run(ctx: RunContext) -> dict:
    cfg = ctx.cfg
    scorer = cfg.scorer or SCORER
    score_mode = cfg.score_mode or SCORE_MODE
    remaining = 1 - cfg.target_sparsity
    ctx.epochs_planned = cfg.epochs
    st = ctx.state
    if ctx.stage("score"):
        masking.set_dense(ctx.model)
        ctx.save_rewind(0, "score", 0)  # the init: what the masked network trains from
        keep_all, refilled = not cfg.allow_empty_layers, []     # no layer emptied unless allowed
        t = time.time()
        if scorer == "synflow":
            mask = synflow_masks(ctx.model, ctx.splits.in_shape, remaining, cfg.prune_scope,
                                 cfg.synflow_iters or SYNFLOW_ITERS, keep_every_layer=keep_all, refilled=refilled,
                                 score_mode=score_mode)
        else:
            gen = torch.Generator().manual_seed(cfg.seed + 2)
            n_batches = cfg.score_batches or SCORE_BATCHES
            batches = []
            data = [] if scorer == "magnitude" else Batches(ctx.splits.train_x, ctx.splits.train_y, cfg.batch_size,
                                                            shuffle=True, generator=gen)   # |θ| needs no data
            for xb, yb in data:
                batches.append((xb, yb))
                if len(batches) == n_batches:
                    break
            if scorer == "grasp":
                def loss(out, y):
                    return ctx.task_loss(out / GRASP_T, y)
            else:
                loss = ctx.task_loss
            scores = scores_for(scorer, ctx.model, loss, batches, gen, score_mode)
            ctx.model.zero_grad(set_to_none=True)
            mask = masking.topk_masks({n: s.cpu() for n, s in scores.items()}, remaining, cfg.prune_scope,
                                      keep_every_layer=keep_all, refilled=refilled)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        seconds = time.time() - t
        check_every_layer_kept(ctx, refilled, mask, 0)
        rep = masking.sparsity_report(mask)
        ctx.log_row(kind="score", round=0, phase="score", remaining=rep["remaining"], kept=rep["kept"],
                    total=rep["total"], seconds=seconds, scorer=scorer, score_mode=score_mode)
        st["mask"], st["scoring_seconds"] = mask, seconds
        # back to the saved init bit for bit (belt and braces: scoring_mode restores the buffers)
        start_retrain(ctx, mask, "init", 0, phase="score")
        ctx.end_stage()
    if ctx.stage("train"):
        st["last"] = train_ticket(ctx, 0, st["mask"], "train", cfg.epochs)
        ctx.end_stage()
    save_ticket(ctx, st["mask"], 0)
    rep = masking.sparsity_report(st["mask"])
    check_sparsity(ctx, rep["sparsity"], cfg.target_sparsity, 0.002, f"target_sparsity ({scorer} scores)")
    epoch_s = st["last"]["train_seconds"] / max(1, cfg.epochs)
    return summary(ctx, st["mask"], st["last"], scorer=scorer, score_mode=score_mode,
                   scoring_seconds=st["scoring_seconds"],
                   scoring_epoch_fraction=st["scoring_seconds"] / epoch_s if epoch_s > 0 else None)
