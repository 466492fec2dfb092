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
    lr_t·d/√(d² + σ²) at step t, where d is the mean of its gradient (task part
    g plus λ·r, r being R's gradient per unit λ) and σ² its variance. An entry
    ends above the ticket's cut x_τ when that speed cannot carry it across in
    the steps left, which gives each entry a critical λ: it survives exactly
    when λ is below

        λ_i = (q·σ/√(1−q²) − g)/r,   q = (x − x_τ)/T,   T = Σ lr_t over the steps left

    (q ≥ 1: it cannot reach the cut in time, it survives anyway; q ≤ −1: it
    cannot climb back). T is the distance the rate the mask group will have
    can carry an entry: the rate read from the optimizer at this step times the
    rest of the phase's planned schedule (constant, cosine, step, warm-up, ...),
    never the configured mask_lr times the steps left. λ is then the
    (k+1)-th largest λ_i, with k the target count of survivors. g and σ come
    from Adam's moment estimates during the search and, before its first step,
    from a probe over a few training batches, so λ₀ plays no part: every start
    lands on the same λ. Each update re-solves as the statistics drift; λ moves
    at most ×e^±MAX_STEP per update so one noisy estimate cannot throw it far.
    Entries pruned in an earlier round stay pruned and count as such.

    When no λ can reach the target (too many entries cannot cross the cut in
    the distance left, or too few can stay above it), λ goes to the nearest
    value that still acts (the largest, resp. smallest, finite λ_i), never to
    its ceiling or floor, and `reach` says why.
    """

    MAX_STEP = 0.5
    FLOOR, CEILING = 1e-8, 1e8

    def __init__(self, target_remaining: float, total_entries: int, planned_lrs):
        """`planned_lrs`: the mask group's rate at every step of the phase, as its schedule plans it."""
        self.keep = round(target_remaining * total_entries)
        self.target_remaining = target_remaining
        planned = torch.as_tensor(list(planned_lrs), dtype=torch.float64)
        self.total = planned.numel()
        self.planned = planned
        # travel_after[t]: the planned distance of steps t, t+1, ..., the last
        self.travel_after = torch.cat([planned.flip(0).cumsum(0).flip(0), torch.zeros(1, dtype=torch.float64)])
        self.reach: dict | None = None     # the last solve's verdict on reachability
        self.within_reach: int | None = None   # at the last solve: entries the travel left could carry across

    def state(self) -> dict:
        """What a resumed phase needs to decide as this one would (see `active`)."""
        return {"within_reach": self.within_reach}

    def load_state(self, st: dict) -> None:
        self.within_reach = st.get("within_reach")

    def travel(self, step: int, lr_now: float) -> float:
        """Σ lr over steps `step`.. the last: the rate the group has now (read from its optimizer),
        continued along the planned schedule's shape."""
        step = min(max(step, 0), self.total)
        if step >= self.total:
            return 0.0
        planned_now = float(self.planned[step])
        scale = lr_now / planned_now if planned_now > 0 else 1.0
        return scale * float(self.travel_after[step])

    def solve(self, x, g, sd, r, x_tau, travel: float, frozen) -> float | None:
        """The λ that leaves `keep` entries above the cut x_τ (None: nothing to solve).
        Every argument but the scalars is one flat tensor over all entries. Sets `reach`."""
        n = x.numel()
        if self.keep >= n:
            self.reach = None
            return None
        q = (x - x_tau) / max(travel, 1e-30)
        qc = q.clamp(-0.999, 0.999)
        need = qc * sd / torch.sqrt(1 - qc * qc) - g      # λ·r that makes the speed exactly right
        crit = torch.where(r > 0, need / r.clamp(min=1e-30),
                           torch.where(need > 0, math.inf, -math.inf))  # r = 0: λ has no say
        stuck_above = (q >= 1) & ~frozen                    # cannot cross the cut in the distance left
        stuck_below = (q <= -1) | frozen                    # cannot climb back (or pruned before)
        full_speed = torch.where(frozen, -math.inf, crit).double().cpu()   # q clamped: λ_i at ~Adam's top speed
        crit = torch.where(stuck_above, math.inf, torch.where(stuck_below, -math.inf, crit)).double().cpu()
        v = float(torch.kthvalue(crit, n - self.keep).values)  # the (keep+1)-th largest
        above, below = int(stuck_above.sum()), int(stuck_below.sum())
        self.within_reach = int(((q.abs() < 1) & ~frozen).sum())
        self.reach = {"min_remaining": above / n, "max_remaining": (n - below) / n,
                      "too_dense": above > self.keep, "too_sparse": n - below < self.keep,
                      "need_travel": _travel_needed(x, x_tau, frozen, n - self.keep), "travel": travel}
        if v == math.inf:
            # Too many entries cannot cross in time: no λ gets there. The λ that drives the ones
            # to prune at ~Adam's top speed (more only saturates it), not the ceiling.
            v = float(torch.kthvalue(full_speed, n - self.keep).values)
            return v if math.isfinite(v) and v > 0 else None
        if v <= 0:
            # By the model even λ = 0 drops too many: keep all it can, with the smallest λ that
            # still acts (the smallest positive λ_i), not the floor.
            positive = crit[torch.isfinite(crit) & (crit > 0)]
            return float(positive.min()) if positive.numel() else None
        return v

    @staticmethod
    def shrink(mean: torch.Tensor, var_of_mean: torch.Tensor) -> torch.Tensor:
        """A mean gradient estimated from few samples, shrunk towards 0 by its own noise
        (positive-part James–Stein per entry): entries whose mean is not told apart from
        noise count as unsupported, instead of their noise ranking them. Without it the
        noisiest estimates set the quantile and λ comes out far too large on big data."""
        return mean * (1 - var_of_mean / mean.square().clamp(min=1e-30)).clamp(min=0)

    def active(self, step: int, lr_now: float) -> bool:
        """λ holds for the last tenth of the phase's travel, or once less than 0.05 of travel is
        left (a tenth of the way from 1 to τ): there an entry moves by under (1−τ)/10 whatever λ
        is, and re-solving only chases the noise of the few entries that sit right at τ.
        Unless many entries sit within that distance of the cut: a penalty that pushes every
        mask down together (Adam moves all entries at about the same speed) brings them to the
        cut as a block, and a λ held then carried ResNet-20's search from 75 % to 6.5 % remaining
        in its last epoch (target 10 %). While more entries than the target's tolerance (a tenth
        of the survivors) could still cross, λ keeps being solved. After the phase's last step
        nothing is solved: with no travel left every entry looks stuck where it is."""
        left = self.travel(step, lr_now)
        if left <= 0:       # the phase's steps are all done: no mask moves again, λ would act on nothing
            return False
        if left > min(float(self.travel_after[0]) / 10, 0.05):
            return True
        return self.within_reach is not None and self.within_reach > 0.1 * max(self.keep, 1)

    def step_to(self, lam: float, wanted: float | None) -> float:
        if wanted is None:
            return lam
        lo, hi = lam * math.exp(-self.MAX_STEP), lam * math.exp(self.MAX_STEP)
        return float(min(max(min(max(wanted, lo), hi), self.FLOOR), self.CEILING))

    def best_sparsity(self) -> float:
        """The sparsity nearest the target that the last solve found reachable."""
        rc = self.reach or {}
        if rc.get("too_dense"):
            return 1 - rc["min_remaining"]
        if rc.get("too_sparse"):
            return 1 - rc["max_remaining"]
        return 1 - self.target_remaining

    def verdict(self, x_tau_name: str, mask_lr: float, epochs: int) -> str | None:
        """Why the target cannot be reached from here, in one line (None: it can)."""
        rc = self.reach
        if rc is None:
            return None
        if rc["too_dense"]:
            factor = rc["need_travel"] / max(rc["travel"], 1e-30)
            return (f"the search is too short for the masks: at least {rc['min_remaining']:.2%} cannot cross "
                    f"{x_tau_name} in the steps left (the mask group's rate can move an entry by at most "
                    f"{rc['travel']:.3g} there, {rc['need_travel']:.3g} is needed): raise mask_lr to "
                    f"≥ {mask_lr * factor * 1.2:.3g} or epochs to ≥ {math.ceil(epochs * factor * 1.2)}")
        if rc["too_sparse"]:
            return (f"the search is already past the level: at most {rc['max_remaining']:.2%} can end above "
                    f"{x_tau_name} (λ can only prune more)")
        return None


def _travel_needed(x, x_tau, frozen, prune: int) -> float:
    """The distance that lets `prune` entries cross the cut: the prune-th smallest (x − x_τ)⁺
    among those not pruned before (entries already below the cut need 0)."""
    dist = (x - x_tau).clamp(min=0).double().cpu()
    dist = torch.where(frozen.cpu(), torch.zeros_like(dist), dist)
    if prune <= 0:
        return 0.0
    return float(torch.kthvalue(dist, min(prune, dist.numel())).values)


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
    # the cut in the trained parameter's own space, where the ticket rule puts it: m > τ for clip
    # masks, s > logit(τ)/β for sigmoid ones, and s > 0 for continuous sparsification whatever τ
    # (its layers are sigmoid masks whatever cfg.mask_param says; ctx.keep_threshold is 0.5 there)
    tau = ctx.keep_threshold
    first = ctx.layers[0][1]
    x_tau = math.log(tau / (1 - tau)) / first.beta if first.mask_param == "sigmoid" else tau
    frozen = torch.cat([(~layer._frozen_keep.bool()).flatten() if getattr(layer, "_frozen_keep", None)
                        is not None else torch.zeros(layer.mask.numel(), dtype=torch.bool,
                                                      device=layer.mask.device) for _, layer in ctx.layers])
    return x, r, x_tau, frozen

def mask_group_lr(ctx, opts) -> float:
    """The learning rate the masks' parameter group has right now (whatever the schedule did)."""
    first = ctx.layers[0][1].mask
    for o in opts:
        for gr in o.param_groups:
            if any(p is first for p in gr["params"]):
                return float(gr["lr"])
    raise RuntimeError("the masks are in no optimizer's parameter groups")


def calibrated_lam(ctx, controller: LamController, reg: Regularizer, params: dict, opts,
                   batches: int = 16) -> float:
    """The probe before a search: the task gradient's mean and spread per mask entry
    over the first `batches` training batches (eval mode: no buffer moves). Where no λ
    reaches the target, the nearest one that acts (LamController.solve), never λ₀."""
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
    wanted = controller.solve(x, mean, sd, r, x_tau, controller.travel(0, mask_group_lr(ctx, opts)), frozen)
    if wanted is None:     # nothing to steer (keep everything) or no entry λ acts on
        return ctx.lam
    return float(min(max(wanted, controller.FLOOR), controller.CEILING))

def mask_moments(ctx, opts, reg: Regularizer, params: dict):
    """(x, g, σ, r, x_τ, lr, frozen) for LamController.solve from the masks' Adam state:
    g = bias-corrected first moment minus the current λ·r, σ² = second moment − first²;
    lr is the rate the mask group has at this step (read from its optimizer)."""
    x, r, x_tau, frozen = flat_mask_state(ctx, reg, params)
    m1, m2, lr = [], [], mask_group_lr(ctx, opts)
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
