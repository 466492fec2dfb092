"""Sparsity penalties R(m): values at hand-computed points, concavity on [0,1],
the log penalty's steep slope near 0, the normalised plotting curve, and
parameter range checks."""

import math

import numpy as np
import pytest
import torch

from engine import regularizers
from engine.regularizers import REGULARIZERS, Param

NAMES = REGULARIZERS.names()
STRICTLY_CONCAVE = ("log", "log_raw", "lp", "exp")


def _val(name, m, params=None):
    x = torch.tensor(m, dtype=torch.float64)
    return float(regularizers.get(name).value(x, params))


def test_registry_has_the_design_regularizers():
    assert set(NAMES) >= {"l1", "log", "log_raw", "lp", "exp", "scad", "mcp"}
    assert regularizers.get("l1").strictly_concave is False
    for name in STRICTLY_CONCAVE:
        assert regularizers.get(name).strictly_concave is True


# ---------------------------------------------------------------- values at known points

@pytest.mark.parametrize("m", [0.0, 0.3, 0.77, 1.0])
def test_l1_is_identity(m):
    assert _val("l1", m) == pytest.approx(m, abs=1e-15)


NORMALISED = [n for n in NAMES if n != "log_raw"]


@pytest.mark.parametrize("name", NORMALISED)
@pytest.mark.parametrize("params", [None, "non-default"])
def test_every_penalty_is_0_at_0_and_1_at_1(name, params):
    """One λ scale: R(0)=0 and R(1)=1 per entry for every penalty (not just on the plot)."""
    reg = regularizers.get(name)
    given = {k: (p.low + p.default) / 2 for k, p in reg.params.items()} if params else None
    assert _val(name, 0.0, given) == pytest.approx(0.0, abs=1e-12)
    assert _val(name, 1.0, given) == pytest.approx(1.0, rel=1e-12)
    x = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert float(reg.value(x, given).min()) >= 0.0          # so λR(m) ≥ 0


@pytest.mark.parametrize("m", [0.0, 0.2, 0.5, 1.0])
def test_log_values(m):
    eps = 0.01  # default
    assert regularizers.get("log").resolve() == {"eps": eps}
    assert _val("log", m) == pytest.approx(math.log(1 + m / eps) / math.log(1 + 1 / eps), rel=1e-12, abs=1e-15)
    # the paper's raw form, kept under its own name: the same curve shifted and scaled
    raw = _val("log_raw", m)
    assert raw == pytest.approx(math.log(m + eps), rel=1e-12)
    assert _val("log", m) == pytest.approx((raw - math.log(eps)) / (math.log(1 + eps) - math.log(eps)), rel=1e-12,
                                           abs=1e-15)


def test_log_specific_points():
    assert _val("log", 0.5) == pytest.approx(math.log(51) / math.log(101), rel=1e-12)  # 0.8519...
    assert _val("log", 0.5) == pytest.approx(0.8519443032, rel=1e-9)
    # a different eps is honoured
    assert _val("log", 0.5, {"eps": 0.1}) == pytest.approx(math.log(6) / math.log(11), rel=1e-12)
    assert _val("log_raw", 0.0) == pytest.approx(-4.605170185988091, rel=1e-12)


@pytest.mark.parametrize("m", [0.0, 0.1, 0.5, 1.0])
def test_lp_values(m):
    p, eps = 0.5, 0.01
    assert regularizers.get("lp").resolve() == {"p": p, "eps": eps}
    expected = ((m + eps) ** p - eps ** p) / ((1 + eps) ** p - eps ** p)
    assert _val("lp", m) == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if m == 0.0:
        assert _val("lp", m) == 0.0
    if m == 0.5:
        assert _val("lp", m) == pytest.approx((math.sqrt(0.51) - 0.1) / (math.sqrt(1.01) - 0.1), rel=1e-12)


@pytest.mark.parametrize("m", [0.0, 0.25, 0.5, 1.0])
def test_exp_values(m):
    sigma = 0.25
    assert regularizers.get("exp").resolve() == {"sigma": sigma}
    scale = 1 - math.exp(-1 / sigma)
    assert _val("exp", m) == pytest.approx((1 - math.exp(-m / sigma)) / scale, rel=1e-12, abs=1e-15)
    if m == 0.25:
        assert _val("exp", m) == pytest.approx((1 - math.exp(-1)) / (1 - math.exp(-4)), rel=1e-12)


def test_scad_values_and_knots():
    a, b = 3.7, 0.2
    assert regularizers.get("scad").resolve() == {"a": a, "b": b}
    flat = b * (a + 1) / 2          # the classic SCAD's value beyond a·b = 0.74; divided by it
    assert flat == pytest.approx(0.47)
    # linear with slope 1/flat below b
    for m in (0.0, 0.05, 0.1, 0.2):
        assert _val("scad", m) == pytest.approx(m / flat, abs=1e-15)
    # quadratic between b and a*b = 0.74
    for m in (0.3, 0.5, 0.7):
        expected = (2 * a * b * m - m * m - b * b) / (2 * (a - 1) * b) / flat
        assert _val("scad", m) == pytest.approx(expected, rel=1e-12)
    # constant 1 above a*b
    for m in (0.75, 0.9, 1.0):
        assert _val("scad", m) == pytest.approx(1.0, rel=1e-12)
    # continuous at both knots
    d = 1e-9
    for knot in (b, a * b):
        assert _val("scad", knot - d) == pytest.approx(_val("scad", knot + d), abs=1e-8)
    # slope 1/flat just below b
    assert (_val("scad", 0.15) - _val("scad", 0.1)) / 0.05 == pytest.approx(1 / flat, rel=1e-9)


def test_mcp_values_and_knot():
    g = 0.5
    assert regularizers.get("mcp").resolve() == {"gamma": g}
    for m in (0.0, 0.1, 0.3, 0.5):
        assert _val("mcp", m) == pytest.approx((m - m * m / (2 * g)) / (g / 2), abs=1e-15)
    for m in (0.6, 0.8, 1.0):
        assert _val("mcp", m) == pytest.approx(1.0, rel=1e-12)
    assert _val("mcp", g - 1e-9) == pytest.approx(_val("mcp", g + 1e-9), abs=1e-8)
    assert _val("mcp", 0.3) == pytest.approx(0.84)


def test_value_is_elementwise():
    m = torch.tensor([[0.0, 0.5], [1.0, 0.25]], dtype=torch.float64)
    for name in NAMES:
        reg = regularizers.get(name)
        out = reg.value(m)
        assert out.shape == m.shape
        for i in range(2):
            for j in range(2):
                assert float(out[i, j]) == pytest.approx(_val(name, float(m[i, j])), rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------- concavity

@pytest.mark.parametrize("name", NAMES)
def test_concave_on_unit_interval(name):
    x = torch.linspace(0.0, 1.0, 2001, dtype=torch.float64)
    y = regularizers.get(name).value(x)
    d2 = y[2:] - 2 * y[1:-1] + y[:-2]
    assert float(d2.max()) <= 1e-9, f"{name} is not concave: max second difference {float(d2.max())}"
    if name in STRICTLY_CONCAVE:
        assert float(d2.min()) < -1e-9
        # strictly negative everywhere on the grid, not just somewhere
        assert bool((d2 < 0).all())
    if name == "l1":
        assert float(d2.abs().max()) <= 1e-12


def test_l1_second_difference_exactly_zero_on_dyadic_grid():
    # on a grid of exact binary fractions the ℓ1 second difference is exactly 0
    x = torch.arange(0, 257, dtype=torch.float64) / 256
    y = regularizers.get("l1").value(x)
    d2 = y[2:] - 2 * y[1:-1] + y[:-2]
    assert bool((d2 == 0).all())


# ---------------------------------------------------------------- gradients

def _grad(name, m):
    x = torch.tensor(m, dtype=torch.float64, requires_grad=True)
    regularizers.get(name).value(x).backward()
    return float(x.grad)


def test_log_gradient_exceeds_l1_near_zero():
    eps = 0.01
    g_l1 = _grad("l1", 1e-3)
    g_log = _grad("log", 1e-3)
    assert g_l1 == 1.0
    assert g_log == pytest.approx(1 / ((1e-3 + eps) * math.log(101)), rel=1e-12)  # ≈ 19.7
    assert g_log > 15 * g_l1
    # near 1 the log slope is below ℓ1's
    assert _grad("log", 1.0) == pytest.approx(1 / (1.01 * math.log(101)), rel=1e-12)
    assert _grad("log", 1.0) < _grad("l1", 1.0)
    # ratio of slopes at 0 and 1 is (1+eps)/eps = 101
    assert _grad("log", 0.0) / _grad("log", 1.0) == pytest.approx(101.0, rel=1e-12)


@pytest.mark.parametrize("name", STRICTLY_CONCAVE)
def test_strictly_concave_slope_drops(name):
    assert _grad(name, 0.0) > _grad(name, 0.5) > _grad(name, 1.0) > 0


# ---------------------------------------------------------------- curve

@pytest.mark.parametrize("name", NAMES)
def test_curve_normalised_and_monotone(name):
    x, y = regularizers.get(name).curve()
    assert isinstance(x, np.ndarray) and isinstance(y, np.ndarray)
    assert len(x) == len(y) == 201
    assert x[0] == 0.0 and x[-1] == 1.0
    assert bool(np.all(np.diff(x) > 0))
    assert y[0] == pytest.approx(0.0, abs=1e-12)
    assert y[-1] == pytest.approx(1.0, abs=1e-12)
    assert bool(np.all(np.diff(y) >= -1e-12)), f"{name} curve decreases"


def test_curve_unnormalised_matches_value():
    x, y = regularizers.get("log_raw").curve(normalized=False, n=11)
    assert len(x) == 11
    assert y[0] == pytest.approx(math.log(0.01))
    assert y[-1] == pytest.approx(math.log(1.01))
    # normalised log curve at 0.5: (log(0.51) - log(0.01)) / (log(1.01) - log(0.01)), for both forms
    xn, yn = regularizers.get("log_raw").curve(n=3)
    assert yn[1] == pytest.approx((math.log(0.51) - math.log(0.01)) / (math.log(1.01) - math.log(0.01)))
    xn, yn = regularizers.get("log").curve(n=3, normalized=False)
    assert yn[1] == pytest.approx((math.log(0.51) - math.log(0.01)) / (math.log(1.01) - math.log(0.01)))
    # concave ⇒ the normalised curve lies above the diagonal
    assert yn[1] > 0.5


def test_resolve_ignores_foreign_keys_and_overrides():
    reg = regularizers.get("lp")
    assert reg.resolve({"p": 0.25, "sigma": 3.0}) == {"p": 0.25, "eps": 0.01}
    assert regularizers.get("l1").resolve({"eps": 0.5}) == {}


# ---------------------------------------------------------------- parameter checks

def test_param_check_accepts_in_range():
    p = Param(0.5, 0.0, 1.0, "p")
    assert p.check("p", 0.5) is None
    assert p.check("p", 1e-9) is None
    assert p.check("p", 1) is not None          # high end open
    closed = Param(0.01, 0.0, 1.0, "eps", high_closed=True)
    assert closed.check("eps", 1.0) is None
    assert closed.check("eps", 1) is None
    lo_closed = Param(0.0, 0.0, 1.0, "x", low_closed=True)
    assert lo_closed.check("x", 0.0) is None


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5, float("nan"), float("inf"), True, False, "0.5", None])
def test_param_check_rejects(value):
    p = Param(0.5, 0.0, 1.0, "exponent")
    msg = p.check("reg_params.p", value)
    assert msg is not None
    assert "reg_params.p" in msg
    assert "(0, 1)" in msg


def test_param_check_range_brackets():
    msg = Param(0.01, 0.0, 1.0, "eps", high_closed=True).check("eps", 2.0)
    assert "eps" in msg and "(0, 1]" in msg
    msg = Param(3.7, 2.0, 100.0, "a").check("a", 2.0)
    assert "a must be in (2, 100)" in msg


@pytest.mark.parametrize("name", NAMES)
def test_defaults_pass_their_own_checks(name):
    for key, spec in regularizers.get(name).params.items():
        assert spec.check(key, spec.default) is None


def test_param_specs_cover_every_parameter():
    specs = regularizers.param_specs()
    assert set(specs) == {"eps", "p", "sigma", "a", "b", "gamma"}


# ---------------------------------------------------------------- closed-form derivatives

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("params", [None, "non-default"])
def test_closed_form_gradient_matches_autograd(name, params):
    """Training adds λR'(m) to the masks' gradient from `grad`; it must be R's true derivative."""
    reg = regularizers.get(name)
    given = None
    if params == "non-default":  # move every parameter off its default, inside its range
        given = {k: (p.low + p.default) / 2 if p.low > -math.inf else p.default * 0.5 for k, p in reg.params.items()}
    resolved = reg.resolve(given)
    # Avoid the knots of SCAD/MCP, where the derivative is one-sided.
    m = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    knots = [resolved.get("b"), resolved.get("a", 0) * resolved.get("b", 0), resolved.get("gamma")]
    keep = torch.ones_like(m, dtype=torch.bool)
    for k in knots:
        if k:
            keep &= (m - k).abs() > 1e-3
    m = m[keep].requires_grad_(True)
    reg.fn(m, **resolved).sum().backward()
    analytic = reg.grad(m.detach(), **resolved)
    assert analytic.shape == m.shape
    torch.testing.assert_close(analytic, m.grad, rtol=1e-10, atol=1e-12)


def test_closed_form_gradient_leaves_m_untouched():
    m = torch.rand(50, dtype=torch.float64)
    before = m.clone()
    for name in NAMES:
        reg = regularizers.get(name)
        reg.grad(m, **reg.resolve())
        assert torch.equal(m, before), name


FUSED = [n for n in NAMES if regularizers.get(n).add_grad is not None]


def test_the_search_step_has_a_fused_form_for_the_common_penalties():
    assert {"l1", "log", "log_raw"} <= set(FUSED)


@pytest.mark.parametrize("name", FUSED)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_add_grad_adds_coef_times_the_closed_form_gradient(name, dtype):
    """add_grad (the search step's in-place form) must add exactly coef·R'(m) to each
    gradient, layer shapes mixed, masks untouched; float32 within rounding of `grad`."""
    reg = regularizers.get(name)
    gen = torch.Generator().manual_seed(3)
    shapes = [(30, 78), (10, 30), (7,)]
    ms = [torch.rand(s, generator=gen, dtype=dtype) for s in shapes]
    ms[0][0, :5] = torch.tensor([0.0, 1.0, 1e-7, 0.5, 0.999], dtype=dtype)   # the ends and near 0
    grads = [torch.randn(s, generator=gen, dtype=dtype) * 1e-3 for s in shapes]
    before = [m.clone() for m in ms]
    for params in (reg.resolve(), reg.resolve({"eps": 0.5})):
        for coef in (2.5e-4, 3.0):
            want = [g + coef * reg.grad(m, **params) for g, m in zip(grads, ms)]
            got = [g.clone() for g in grads]
            reg.add_grad(got, ms, coef, **params)
            tol = dict(rtol=1e-12, atol=1e-15) if dtype == torch.float64 else dict(rtol=2e-6, atol=1e-9)
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, **tol)
    assert all(torch.equal(m, b) for m, b in zip(ms, before))


def test_log_value_is_log1p_form_to_rounding():
    """R for log is computed as (log(m+ε) − log ε)/log(1+1/ε) (log is vectorised, log1p is
    not); it must equal log(1+m/ε)/log(1+1/ε) to float64 rounding and float32 rounding."""
    reg = regularizers.get("log")
    for eps in (1e-3, 0.01, 1.0):
        m = torch.cat([torch.linspace(0, 1, 1001, dtype=torch.float64), torch.tensor([1e-9, 1e-6])])
        want = torch.log1p(m / eps) / math.log1p(1.0 / eps)
        torch.testing.assert_close(reg.fn(m, eps=eps), want, rtol=1e-12, atol=1e-15)
        got32 = reg.fn(m.float(), eps=eps).double()
        torch.testing.assert_close(got32, want, rtol=1e-5, atol=3e-7)
        assert float(reg.fn(torch.zeros(()), eps=eps)) == 0.0
        assert abs(float(reg.fn(torch.ones(()), eps=eps)) - 1.0) < 1e-6
