"""The target-sparsity λ controller: λ solved from a model of the masks' Adam steps.

`LamController` holds the target and solves for λ; the functions gather what it
needs from a run (`ctx`, a train.RunContext): the probe before a search
(`calibrated_lam`) and the masks' Adam moments during it (`mask_moments`).
"""

from __future__ import annotations

import math

import torch

from .data import Batches
from .regularizers import Regularizer


class LamController:
    """Sets λ during a search so the mask ends it at a target remaining fraction.

    A model of the masks' own optimizer, not a feedback loop with a fixed
    step: masks are trained by Adam, which moves an entry x by about
    lr·d/√(d² + σ²) per step, where d is the mean of its gradient (task part
    g plus λ·r, r being R's gradient per unit λ) and σ² its variance. An entry
    ends above τ when that speed cannot carry it across τ in the steps left,
    which gives each entry a critical λ: it survives exactly when λ is below

        λ_i = (q·σ/√(1−q²) − g)/r,   q = (x − x_τ)/(lr·steps left)

    (q ≥ 1: it cannot reach τ in time, it survives anyway; q ≤ −1: it cannot
    climb back). λ is then the (k+1)-th largest λ_i, with k the target count
    of survivors. g and σ come from Adam's moment estimates during the search
    and, before its first step, from a probe over a few training batches, so
    λ₀ plays no part: every start lands on the same λ. Each update re-solves
    as the statistics drift; λ moves at most ×e^±MAX_STEP per update so one
    noisy estimate cannot throw it far. Entries pruned in an earlier round
    stay pruned and count as such.
    """

    MAX_STEP = 0.5

    def __init__(self, target_remaining: float, total_entries: int, total_steps: int):
        self.keep = round(target_remaining * total_entries)
        self.total = total_steps

    def state(self) -> dict:
        return {}

    def load_state(self, st: dict) -> None:
        pass

    def solve(self, x, g, sd, r, x_tau, lr: float, steps_left: int, frozen) -> float | None:
        """The λ that leaves `keep` entries above τ (None: no λ can, in the steps left).
        Every argument but the scalars is one flat tensor over all entries."""
        q = (x - x_tau) / (lr * max(1, steps_left))
        qc = q.clamp(-0.999, 0.999)
        need = qc * sd / torch.sqrt(1 - qc * qc) - g      # λ·r that makes the speed exactly right
        crit = torch.where(r > 0, need / r.clamp(min=1e-30),
                           torch.where(need > 0, math.inf, -math.inf))  # r = 0: λ has no say
        crit = torch.where(q >= 1, math.inf, torch.where(q <= -1, -math.inf, crit))
        crit = torch.where(frozen, -math.inf, crit)
        if self.keep >= crit.numel():
            return None
        v = float(torch.kthvalue(crit.cpu(), crit.numel() - self.keep).values)  # the (keep+1)-th largest
        return v if math.isfinite(v) else (math.inf if v > 0 else 0.0)

    @staticmethod
    def shrink(mean: torch.Tensor, var_of_mean: torch.Tensor) -> torch.Tensor:
        """A mean gradient estimated from few samples, shrunk towards 0 by its own noise
        (positive-part James–Stein per entry): entries whose mean is not told apart from
        noise count as unsupported, instead of their noise ranking them. Without it the
        noisiest estimates set the quantile and λ comes out far too large on big data."""
        return mean * (1 - var_of_mean / mean.square().clamp(min=1e-30)).clamp(min=0)

    def active(self, steps_left: int, lr: float) -> bool:
        """λ holds for the last tenth of the time an entry needs to fall from 1 to τ:
        there an entry moves by under (1−τ)/10 whatever λ is, and re-solving only
        chases the noise of the few entries that sit right at τ."""
        return steps_left > min(self.total // 10, math.ceil(0.05 / lr))

    def step_to(self, lam: float, wanted: float | None) -> float:
        if wanted is None:
            return lam
        lo, hi = lam * math.exp(-self.MAX_STEP), lam * math.exp(self.MAX_STEP)
        return float(min(max(min(max(wanted, lo), hi), 1e-8), 1e8))


def flat_mask_state(ctx, reg: Regularizer, params: dict):
    """x (the trained mask parameter), r (∂(λR)/∂x per unit λ, as add_reg_grad
    applies it), x at τ, and which entries an earlier round froze; all flat."""
    x = torch.cat([layer.mask.detach().flatten() for _, layer in ctx.layers]).float()
    saved, ctx.lam = ctx.lam, 1.0
    grads = [layer.mask.grad for _, layer in ctx.layers]
    try:
        for _, layer in ctx.layers:
            layer.mask.grad = None
        ctx.add_reg_grad(reg, params)
        r = torch.cat([layer.mask.grad.flatten() for _, layer in ctx.layers]).float()
    finally:
        ctx.lam = saved
        for (_, layer), gr in zip(ctx.layers, grads):
            layer.mask.grad = gr
    tau = ctx.cfg.threshold
    # where the trained parameter x crosses τ: the layers' own parametrisation, not cfg.mask_param
    # (continuous sparsification trains logits, m = sigmoid(β·s), whatever the config's mask_param)
    first = ctx.layers[0][1]
    x_tau = math.log(tau / (1 - tau)) / first.beta if first.mask_param == "sigmoid" else tau
    frozen = torch.cat([(~layer._frozen_keep.bool()).flatten() if getattr(layer, "_frozen_keep", None)
                        is not None else torch.zeros(layer.mask.numel(), dtype=torch.bool,
                                                      device=layer.mask.device) for _, layer in ctx.layers])
    return x, r, x_tau, frozen

def calibrated_lam(ctx, controller: LamController, reg: Regularizer, params: dict,
                    batches: int = 16) -> float:
    """The probe before a search: the task gradient's mean and spread per mask entry
    over the first `batches` training batches (eval mode: no buffer moves)."""
    was = ctx.model.training
    ctx.model.eval()
    s1 = s2 = None
    n = 0
    for xb, yb in Batches(ctx.splits.train_x, ctx.splits.train_y, ctx.cfg.batch_size, shuffle=False):
        for _, layer in ctx.layers:
            layer.mask.grad = None
        ctx.task_loss(ctx.run_model(ctx.model, xb), yb).backward()
        g = torch.cat([layer.mask.grad.flatten() for _, layer in ctx.layers]).float()
        s1 = g.clone() if s1 is None else s1.add_(g)
        s2 = g * g if s2 is None else s2.add_(g * g)
        n += 1
        if n == batches:
            break
    for p in ctx.model.parameters():
        p.grad = None
    ctx.model.train(was)
    mean = s1 / n
    var = (s2 / n - mean * mean).clamp(min=0)
    sd = var.sqrt()
    mean = controller.shrink(mean, var / n)
    x, r, x_tau, frozen = flat_mask_state(ctx, reg, params)
    wanted = controller.solve(x, mean, sd, r, x_tau, ctx.cfg.mask_lr, controller.total, frozen)
    if wanted is None or wanted == 0.0 or math.isinf(wanted):
        return ctx.lam
    return float(min(max(wanted, 1e-8), 1e8))

def mask_moments(ctx, opts, reg: Regularizer, params: dict):
    """(x, g, σ, r, x_τ, lr, frozen) for LamController.solve from the masks' Adam state:
    g = bias-corrected first moment minus the current λ·r, σ² = second moment − first²."""
    x, r, x_tau, frozen = flat_mask_state(ctx, reg, params)
    m1, m2, lr = [], [], ctx.cfg.mask_lr
    for _, layer in ctx.layers:
        for o in opts:
            st = o.state.get(layer.mask)
            if st:
                beta1, beta2 = next(gr["betas"] for gr in o.param_groups
                                    if any(p is layer.mask for p in gr["params"]))
                t = float(st["step"])
                m1.append(st["exp_avg"].flatten().float() / (1 - beta1 ** t))
                m2.append(st["exp_avg_sq"].flatten().float() / (1 - beta2 ** t))
                break
    if len(m1) != len(ctx.layers):
        return x, torch.zeros_like(x), torch.zeros_like(x), r, x_tau, lr, frozen
    mean, sq = torch.cat(m1), torch.cat(m2)
    var = (sq - mean * mean).clamp(min=0)
    task = mean - ctx.lam * r
    # Adam's first moment is an EMA over about (1+β1)/(1−β1) = 19 steps: its noise is var/19
    return x, LamController.shrink(task, var / 19.0), var.sqrt(), r, x_tau, lr, frozen
