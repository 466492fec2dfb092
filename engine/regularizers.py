"""Sparsity penalties R(m) on mask entries m ∈ [0,1].

Each entry is elementwise; the method sums it over entries (the paper's form)
or averages it per entry (our default, so that one λ means the same on a
784-entry pixel mask and on LeNet-300-100's 266k weights; see config `reg_scale`).

Every penalty is normalised so that R(0) = 0 and R(1) = 1 per entry: equal λ
means an equal penalty on a fully-on mask, whatever the penalty, and λR(m) ≥ 0.
(`log` is Σ log(1+m/ε)/log(1+1/ε), the paper's log(m+ε) shifted and scaled;
the paper's raw form stays available as `log_raw`, on its own λ scale.)

`l1` is convex; the others are concave on [0,1] and, except SCAD and MCP
(which are linear near 0), strictly concave: their slope near 0 exceeds
their slope near 1, so small entries are pushed to 0 harder than large ones,
which is what lets them recover a target mask more tightly than ℓ1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .registry import Registry

REGULARIZERS = Registry("regularizer")


@dataclass(frozen=True)
class Param:
    default: float
    low: float            # allowed range, exclusive at both ends unless *_closed
    high: float
    help: str
    low_closed: bool = False
    high_closed: bool = False

    def check(self, key: str, value) -> str | None:
        lo = "[" if self.low_closed else "("
        hi = "]" if self.high_closed else ")"
        rng = f"{lo}{self.low:g}, {self.high:g}{hi}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return f"{key} must be a number in {rng}, got {value!r}"
        ok_lo = value >= self.low if self.low_closed else value > self.low
        ok_hi = value <= self.high if self.high_closed else value < self.high
        if not (ok_lo and ok_hi):
            return f"{key} must be in {rng}, got {value!r}"
        return None


@dataclass(frozen=True)
class Regularizer:
    name: str
    fn: Callable[..., torch.Tensor]          # fn(m, **params) -> elementwise penalty
    grad: Callable[..., torch.Tensor]        # grad(m, **params) -> elementwise dR/dm (closed form)
    params: dict[str, Param] = field(default_factory=dict)
    strictly_concave: bool = True
    description: str = ""
    # add_grad(grads, ms, coef, **params): grads[i] += coef·R'(ms[i]) in place, in fewer passes
    # over memory than `grad` and an add (the search step's hot path); None: the loop uses `grad`
    add_grad: Callable[..., None] | None = None

    def resolve(self, given: dict | None = None) -> dict[str, float]:
        """Defaults overlaid with the given values (only this regularizer's keys)."""
        out = {k: p.default for k, p in self.params.items()}
        for k, v in (given or {}).items():
            if k in self.params:
                out[k] = float(v)
        return out

    def value(self, m: torch.Tensor, params: dict | None = None) -> torch.Tensor:
        return self.fn(m, **self.resolve(params))

    def curve(self, params: dict | None = None, n: int = 201, normalized: bool = True):
        """(x, y) on [0,1] for plotting. Normalised so R(0)=0 and R(1)=1 (every
        penalty but `log_raw` already is; that one is negative otherwise)."""
        x = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        y = self.value(x, params)
        if normalized:
            y = (y - y[0]) / (y[-1] - y[0])
        return x.numpy(), y.numpy()


# Each penalty comes with its closed-form derivative: training adds λR'(m)
# straight into the masks' gradient instead of building R through autograd
# every step (one elementwise pass instead of a forward and a backward graph).
# tests/test_regularizers.py checks every one against autograd.

def _l1(m):
    return m


def _l1_grad(m):
    return torch.ones_like(m)


def _log(m, eps):
    # log(1+m/ε)/log(1+1/ε), computed as (log(m+ε) − log ε)/log(1+1/ε): the same value
    # (m + ε is exact enough for m ≥ 0, ε ≤ 1), and log is vectorised on a CPU where
    # log1p is not (≈ 6× slower on LeNet-300-100's 235k-entry layer: R is logged every few steps)
    return (torch.log(m + eps) - math.log(eps)) / math.log1p(1.0 / eps)


def _log_grad(m, eps):
    return (m + eps).reciprocal_().mul_(1.0 / math.log1p(1.0 / eps))


def _add_l1_grad(grads, ms, coef):
    torch._foreach_add_(grads, coef)


def _add_log_grad(grads, ms, coef, eps, scale=None):
    # grad += coef·scale/(m+ε): two passes (m+ε, then one addcdiv) instead of four
    scale = 1.0 / math.log1p(1.0 / eps) if scale is None else scale
    one = ms[0].new_ones(())
    torch._foreach_addcdiv_(grads, [one] * len(grads), torch._foreach_add(ms, eps), value=coef * scale)


def _add_log_raw_grad(grads, ms, coef, eps):
    _add_log_grad(grads, ms, coef, eps, scale=1.0)


def _log_raw(m, eps):
    return torch.log(m + eps)


def _log_raw_grad(m, eps):
    return (m + eps).reciprocal_()


def _lp(m, p, eps):
    # ((m+ε)^p − ε^p)/((1+ε)^p − ε^p): 0 at m=0, 1 at m=1, and a finite slope
    # at 0 so projected training never sees inf.
    return ((m + eps) ** p - eps ** p) / ((1 + eps) ** p - eps ** p)


def _lp_grad(m, p, eps):
    return (m + eps).pow_(p - 1).mul_(p / ((1 + eps) ** p - eps ** p))


def _exp(m, sigma):
    return (1.0 - torch.exp(-m / sigma)) / -math.expm1(-1.0 / sigma)


def _exp_grad(m, sigma):
    return torch.exp(m * (-1.0 / sigma)).mul_(1.0 / (sigma * -math.expm1(-1.0 / sigma)))


def _scad_raw(m, a, b):
    # Classic SCAD with its knot λ=b, divided by b so that its slope at 0 is 1 like ℓ1.
    lin = m
    quad = (2 * a * b * m - m * m - b * b) / (2 * (a - 1) * b)
    flat = torch.full_like(m, b * (a + 1) / 2)
    return torch.where(m <= b, lin, torch.where(m <= a * b, quad, flat))


def _scad_at_1(a, b) -> float:
    return float(_scad_raw(torch.tensor(1.0, dtype=torch.float64), a, b))


def _scad(m, a, b):
    return _scad_raw(m, a, b) / _scad_at_1(a, b)


def _scad_grad(m, a, b):
    quad = (a * b - m) / ((a - 1) * b)
    d = torch.where(m <= b, torch.ones_like(m), torch.where(m <= a * b, quad, torch.zeros_like(m)))
    return d.mul_(1.0 / _scad_at_1(a, b))


def _mcp(m, gamma):
    # Minimax concave penalty, flat beyond m = γ (≤ 1), divided by its flat value γ/2.
    return torch.where(m <= gamma, m - m * m / (2 * gamma), torch.full_like(m, gamma / 2)) * (2.0 / gamma)


def _mcp_grad(m, gamma):
    return (1.0 - m / gamma).clamp_(min=0.0).mul_(2.0 / gamma)


_EPS = Param(0.01, 0.0, 1.0, "ε in log(1+m/ε): smaller ε pushes small entries to 0 harder", high_closed=True)

REGULARIZERS.register("l1", Regularizer("l1", _l1, _l1_grad, {}, strictly_concave=False, add_grad=_add_l1_grad,
                                        description="ℓ1: Σ m. Convex; shrinks every entry at the same rate."))
REGULARIZERS.register("log", Regularizer("log", _log, _log_grad, {"eps": _EPS}, add_grad=_add_log_grad,
                                         description="log: Σ log(1+m/ε)/log(1+1/ε). Strictly concave "
                                                     "(the paper's choice, on ℓ1's scale: R(0)=0, R(1)=1)."))
REGULARIZERS.register("log_raw", Regularizer("log_raw", _log_raw, _log_raw_grad, {"eps": _EPS},
                                             add_grad=_add_log_raw_grad,
                                             description="log_raw: Σ log(m+ε). The paper's raw form: negative, "
                                                         "and its λ is log(1+1/ε) (≈4.6) times log's."))
REGULARIZERS.register("lp", Regularizer("lp", _lp, _lp_grad, {
    "p": Param(0.5, 0.0, 1.0, "exponent p of ℓp; smaller p is more concave"),
    "eps": _EPS}, description="ℓp: Σ ((m+ε)^p − ε^p)/((1+ε)^p − ε^p) with 0<p<1."))
REGULARIZERS.register("exp", Regularizer("exp", _exp, _exp_grad, {
    "sigma": Param(0.25, 0.0, 10.0, "σ in 1−e^(−m/σ); smaller σ saturates sooner")},
    description="exponential: Σ (1−e^(−m/σ))/(1−e^(−1/σ))."))
REGULARIZERS.register("scad", Regularizer("scad", _scad, _scad_grad, {
    "a": Param(3.7, 2.0, 100.0, "SCAD shape a (>2); the penalty is flat beyond a·b"),
    "b": Param(0.2, 0.0, 0.5, "SCAD knot b: linear like ℓ1 below b")}, strictly_concave=False,
    description="SCAD (Fan & Li): linear near 0, then quadratic, then flat; divided by its value at 1."))
REGULARIZERS.register("mcp", Regularizer("mcp", _mcp, _mcp_grad, {
    "gamma": Param(0.5, 0.0, 1.0, "MCP γ: flat beyond m=γ", high_closed=True)}, strictly_concave=False,
    description="MCP (Zhang): slope decreasing linearly to 0 at m=γ, flat beyond; R(1)=1."))


def get(name: str) -> Regularizer:
    return REGULARIZERS.get(name)


def param_specs() -> dict[str, Param]:
    """Every regularizer parameter name across the registry (they share names like eps)."""
    out: dict[str, Param] = {}
    for _, reg in REGULARIZERS.items():
        out.update(reg.params)
    return out
