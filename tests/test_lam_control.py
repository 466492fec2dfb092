"""The target-sparsity λ controller (engine/lam_control.py): it plans with the rate the mask
group really has (any schedule), counts what the ticket rule keeps (any parametrisation and
threshold), stays between its floor and ceiling, and says early when a target is out of reach.
The full grid (concave and CS × constant and cosine × λ₀ × target) is bench/controller.py."""

import math

import pytest
import torch

from engine import lam_control, masking, regularizers, runner, train
from engine.config import PRESETS, RunConfig
from engine.train import RunContext
from tests.conftest import DATA

FAST = dict(model="lenet300", dataset="digits", batch_size=64, retrain_epochs=0, device="cpu")


def run(store, **kw):
    cfg = RunConfig.from_dict({**FAST, **kw})
    run_id = runner.create(store, cfg, status="running")
    return run_id, runner.execute(store, run_id, DATA)


def target_check(store, run_id):
    return {c["name"]: c for c in store.checks(run_id)}["sparsity_vs_target"]


# ---------------------------------------------------------------- the rate the masks really get

@pytest.mark.parametrize("method, lam0, target, epochs", [
    ("concave", 100.0, 0.9, 6),     # ended at 0.670 before: λ solved for a constant mask_lr
    ("cs", 0.01, 0.98, 3),
])
def test_target_reached_under_a_cosine_schedule(store, method, lam0, target, epochs):
    extra = {"s0": 0.05} if method == "cs" else {}     # the lenet300-cs preset's start
    run_id, s = run(store, method=method, lam=lam0, target_sparsity=target, lr_schedule="cosine", epochs=epochs,
                    **extra)
    assert abs(s["sparsity"] - target) <= 0.01, s["sparsity"]
    assert target_check(store, run_id)["passed"]


def test_any_schedule_the_optimizer_applies(store, monkeypatch):
    """A warm-up then step-decay schedule (put in place of cosine): the controller follows it
    through the rates the optimizer holds, so the target is reached all the same."""
    def warmup_then_steps(t, total):
        if t < total // 10:
            return (t + 1) / (total // 10)
        return 1.0 if t < total // 2 else 0.3 if t < 3 * total // 4 else 0.1
    monkeypatch.setitem(train.LR_SCHEDULES, "cosine", warmup_then_steps)
    run_id, s = run(store, method="concave", lam=1.0, target_sparsity=0.9, lr_schedule="cosine", epochs=6)
    rates = [r["lr"] for r in store.metrics(run_id) if r["kind"] == "step"]
    assert rates[0] < rates[len(rates) // 3] and rates[-1] == pytest.approx(0.1 * 1e-3)   # the weights' rate, ×0.1
    assert abs(s["sparsity"] - 0.9) <= 0.01, s["sparsity"]


def test_mask_moments_read_the_rate_the_mask_group_has(store):
    """The rate comes from the optimizer at that step, not the configured mask_lr."""
    cfg = RunConfig.from_dict({**FAST, "lam": 1.0})
    ctx = RunContext(cfg, store, runner.create(store, cfg), DATA)
    masking.set_soft(ctx.model, 1.0, "clip")
    opts, _ = ctx.make_optimizers(True, 1, 10)
    for gr in opts[0].param_groups[1:]:
        gr["lr"] = 0.00123
    assert lam_control.mask_moments(ctx, opts, regularizers.get("log"), {"eps": 0.01})[5] == 0.00123


def test_travel_is_the_rest_of_the_planned_schedule_at_the_rate_read_now():
    c = lam_control.LamController(0.1, 100, [1.0, 1.0, 0.5, 0.5])
    assert c.travel(0, 1.0) == 3.0 and c.travel(2, 0.5) == 1.0
    assert c.travel(2, 0.25) == 0.5         # the optimizer holds half the planned rate: half the distance
    assert c.travel(4, 1.0) == 0.0


# ---------------------------------------------------------------- what the ticket keeps, any threshold

@pytest.mark.parametrize("lam0", [0.01, 100.0])
def test_cs_with_another_threshold_counts_its_ticket_rule(store, lam0):
    """CS's ticket is s > 0 whatever τ: with τ = 0.8 the controller counted s > logit(0.8)/β,
    and its probe fell back to λ₀ (0.661 sparsity from λ₀ = 0.01, 0.897 from 100)."""
    run_id, s = run(store, method="cs", rounds=1, threshold=0.8, lam=lam0, target_sparsity=0.9, epochs=3, s0=0.05)
    assert abs(s["sparsity"] - 0.9) <= 0.01, s["sparsity"]
    assert s["lam_history"][0][1] != lam0                       # the probe set λ, not λ₀
    epoch_rows = [r for r in store.metrics(run_id) if r["kind"] == "epoch"]
    assert epoch_rows[-1]["remaining"] == pytest.approx(s["remaining"], abs=1e-9)   # live rows count s > 0


def test_probe_is_the_same_from_any_start(store):
    firsts = []
    for lam0 in (0.01, 100.0):
        _, s = run(store, method="cs", rounds=1, threshold=0.8, lam=lam0, target_sparsity=0.9, epochs=1, s0=0.05)
        firsts.append(s["lam_history"][0][1])
    assert firsts[0] == firsts[1]


# ---------------------------------------------------------------- never floor or ceiling for nothing

def _flat(n, x, g, sd=0.01, r=1.0):
    return (torch.full((n,), x), torch.full((n,), g), torch.full((n,), sd), torch.full((n,), r))


def test_out_of_reach_gives_the_nearest_lambda_that_acts_not_ceiling_or_floor():
    n = 1000
    frozen = torch.zeros(n, dtype=torch.bool)
    c = lam_control.LamController(0.1, n, [0.001] * 100)        # 0.1 of travel; the mask needs 0.5
    x, g, sd, r = _flat(n, 1.0, 0.0)
    lam = c.solve(x, g, sd, r, 0.5, c.travel(0, 0.001), frozen)
    assert c.reach["too_dense"] and math.isfinite(lam) and 0 < lam < 1e3      # full speed, not ∞
    assert "mask_lr to ≥ 0.006" in c.verdict("τ = 0.5", 0.001, 10)            # 0.5/0.1 × 1.2
    # the task pushes every entry down hard: by the model even λ = 0 keeps nobody, yet some
    # entries are helped by a positive task gradient; λ goes to the smallest that still acts
    x, g, sd, r = _flat(n, 0.6, 5.0)
    g[:50] = -5.0
    c = lam_control.LamController(0.1, n, [0.01] * 100)
    lam = c.solve(x, g, sd, r, 0.5, c.travel(0, 0.01), frozen)
    assert lam is not None and lam > c.FLOOR


def test_a_search_too_short_says_why_at_its_first_step(store):
    """The digits preset with a cosine schedule and a 3-epoch search cannot move a mask from 1
    to τ = 0.5 (Adam at mask_lr 0.01 covers ~0.32 in 63 cosine steps): it ended at 100 % remaining
    with λ running ×300 up. Now the run says so at step 0, in a warning and in the check, with
    what to change, and λ stays at the full-speed value; with that change the target is met."""
    cfg = {**PRESETS["digits"], "target_sparsity": 0.9, "lr_schedule": "cosine", "epochs": 3, "retrain_epochs": 0}
    seen = []
    real = store.set_check

    def spy(run_id, name, value, target, passed, detail=""):
        if name == "sparsity_vs_target":
            seen.append(detail)
        return real(run_id, name, value, target, passed, detail)
    store.set_check = spy
    with pytest.warns(UserWarning, match="step 0 of 63.*too short"):
        run_id, s = run(store, **cfg)
    assert seen[0].startswith("projected") and "step 0 of 63" in seen[0]
    c = target_check(store, run_id)
    assert not c["passed"] and "step 0 of 63" in c["detail"] and "mask_lr to ≥ 0.0187" in c["detail"]
    lams = [lam for _, lam in s["lam_history"]]
    assert max(lams) <= 3 * min(lams), (min(lams), max(lams))
    run_id, s = run(store, **{**cfg, "mask_lr": 0.0187})
    assert abs(s["sparsity"] - 0.9) <= 0.01 and target_check(store, run_id)["passed"]


@pytest.mark.parametrize("method, param, tau, beta, cut", [
    ("cs", "sigmoid", 0.8, 7.0, 0.0),                      # CS keeps s > 0 whatever τ and β (was logit(0.8)/7)
    ("cs", "sigmoid", 0.3, 1.0, 0.0),
    ("concave", "sigmoid", 0.8, 1.0, math.log(0.8 / 0.2)),  # m = sigmoid(s) > τ  ⇔  s > logit(τ)
    ("concave", "clip", 0.7, 1.0, 0.7),
])
def test_the_controllers_cut_is_the_ticket_rules(store, method, param, tau, beta, cut):
    cfg = RunConfig.from_dict({**FAST, "method": method, "threshold": tau})
    ctx = RunContext(cfg, store, runner.create(store, cfg), DATA)
    masking.set_soft(ctx.model, 0.9, param)
    for _, layer in ctx.layers:
        layer.beta = beta
    assert lam_control.flat_mask_state(ctx, regularizers.get("l1"), {})[2] == pytest.approx(cut)
    assert ctx.keep_threshold == (0.5 if method == "cs" else tau)


def test_lambda_keeps_steering_while_a_block_of_masks_sits_at_the_cut():
    """In the last tenth of the travel λ holds, unless more entries than the target's tolerance
    could still cross: ResNet-20's masks, pushed down together, reached the cut as a block and a
    held λ carried the search from 75 % to 6.5 % remaining (target 10 %) in its last epoch."""
    n, keep_frac = 10_000, 0.1
    ctl = lam_control.LamController(keep_frac, n, [0.01] * 100)
    step = 95                                   # travel left 0.05 of 1.0: the old rule held λ here
    assert ctl.travel(step, 0.01) == pytest.approx(0.05)
    g, sd, r = torch.zeros(n), torch.full((n,), 1e-3), torch.ones(n)
    frozen = torch.zeros(n, dtype=torch.bool)
    bunched = 0.5 + torch.linspace(0.001, 0.04, n)              # every entry within 0.05 of τ
    ctl.solve(bunched, g, sd, r, 0.5, ctl.travel(step, 0.01), frozen)
    assert ctl.within_reach == n and ctl.active(step, 0.01)
    spread = torch.cat([torch.full((n - 50,), 0.95), 0.5 + torch.linspace(0.001, 0.04, 50)])
    ctl.solve(spread, g, sd, r, 0.5, ctl.travel(step, 0.01), frozen)
    assert ctl.within_reach == 50 and not ctl.active(step, 0.01)   # 50 ≤ a tenth of the 1,000 to keep
    restored = lam_control.LamController(keep_frac, n, [0.01] * 100)
    restored.load_state(ctl.state())                             # a resumed phase decides the same
    assert restored.within_reach == 50 and not restored.active(step, 0.01)
    assert ctl.active(10, 0.01)                                  # early on it always steers
