"""The target-sparsity λ controller (engine/lam_control.py): it plans with the rate the mask
group really has (any schedule), counts what the ticket rule keeps (any parametrisation and
threshold), stays between its floor and ceiling, and says early when a target is out of reach.
The full grid (concave and CS × constant and cosine × λ₀ × target) is bench/controller.py."""

import math
import warnings

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


# ---------------------------------------------------------------- the controller's own promises

SEARCH = dict(method="concave", target_sparsity=0.9, epochs=2, rounds=2, mask_lr=0.02)   # reaches 0.899


@pytest.fixture(scope="module")
def two_starts(tmp_path_factory):
    """The same two-round concave search from λ₀ = 0.01 and from λ₀ = 100:
    {λ₀: (store, run_id, summary, the warnings it gave)}."""
    from engine.store import Store
    out = {}
    for lam0 in (0.01, 100.0):
        store = Store(tmp_path_factory.mktemp(f"lam0-{lam0}"))
        cfg = RunConfig.from_dict({**FAST, **SEARCH, "lam": lam0})
        run_id = runner.create(store, cfg, status="running")
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            out[lam0] = (store, run_id, runner.execute(store, run_id, DATA), [str(w.message) for w in said])
    return out


def _search_phases(history, steps_per_phase, rounds):
    """lam_history split into its search phases. Round r's probe is written at global step r·P,
    after round r−1's last update (which may carry the same step): the last entry at that step."""
    starts = [max(i for i, (step, _) in enumerate(history) if step == r * steps_per_phase) for r in range(rounds)]
    return [history[a:b] for a, b in zip(starts, starts[1:] + [len(history)])]


def _steps_per_phase():
    from engine.data import load_dataset
    cfg = RunConfig.from_dict({**FAST, **SEARCH})
    n = len(load_dataset(cfg.dataset, DATA, val_fraction=cfg.val_fraction, split_seed=0).train_y)
    return cfg.epochs * math.ceil(n / cfg.batch_size)


def test_lambda0_plays_no_part(two_starts):
    """The class docstring: 'λ₀ plays no part: every start lands on the same λ', over a whole run."""
    (_, _, low, _), (_, _, high, _) = two_starts[0.01], two_starts[100.0]
    assert low["lam_history"] == high["lam_history"]        # every (step, λ), exactly
    assert len(low["lam_history"]) > 20
    assert low["lam_history"][0][1] not in (0.01, 100.0)
    assert low["sparsity"] == high["sparsity"] and abs(low["sparsity"] - 0.9) <= 0.01, low["sparsity"]


def test_each_update_moves_lambda_at_most_its_stated_step(two_starts):
    """Within a search phase, consecutive λ differ by at most ×e^±MAX_STEP (the probe starting
    each phase is free to jump: it solves from scratch)."""
    history = two_starts[0.01][2]["lam_history"]
    phases = _search_phases(history, _steps_per_phase(), SEARCH["rounds"])
    assert [len(p) for p in phases] == [len(p) for p in phases if len(p) > 5]      # both phases steered
    assert sum(len(p) for p in phases) == len(history)
    bound = lam_control.LamController.MAX_STEP + 1e-12
    for phase in phases:
        logs = [math.log(b / a) for (_, a), (_, b) in zip(phase, phase[1:])]
        assert max(abs(v) for v in logs) <= bound, logs
    # the bound is not met by accident: across a phase boundary the probe jumped further
    assert abs(math.log(phases[1][0][1] / phases[0][-1][1])) > bound


def test_no_update_once_the_phase_has_no_travel_left(two_starts):
    """After a phase's last step Adam moves no mask, so λ has nothing to act on. The controller
    re-solved there with zero travel left: λ jumped ×e^0.5 (the run's lam_final was that λ, never
    applied to a step) and the run warned 'raise mask_lr to ≥ 4.17e+25'."""
    c = lam_control.LamController(0.1, 100, [0.01] * 10)
    c.within_reach = 100                    # a block of entries at the cut: steered up to the last step
    assert c.active(9, 0.01) and not c.active(10, 0.01)
    store, run_id, s, said = two_starts[0.01]
    per_phase = _steps_per_phase()
    phases = _search_phases(s["lam_history"], per_phase, SEARCH["rounds"])
    for r, phase in enumerate(phases):
        assert all(r * per_phase < step < (r + 1) * per_phase for step, _ in phase[1:]), (r, phase[-3:])
    assert s["lam_final"] == s["lam_history"][-1][1]
    assert not [w for w in said if "cannot be reached" in w], said      # the target was met (0.899)
    assert target_check(store, run_id)["passed"]


def test_step_to_clamps_to_the_stated_factor_and_range():
    c = lam_control.LamController(0.1, 100, [0.01] * 10)
    e = math.exp(c.MAX_STEP)
    assert c.step_to(2.0, 1e6) == pytest.approx(2.0 * e) and c.step_to(2.0, 1e-6) == pytest.approx(2.0 / e)
    assert c.step_to(2.0, 2.5) == 2.5 and c.step_to(2.0, None) == 2.0
    assert c.step_to(c.CEILING, 1e12) == c.CEILING and c.step_to(c.FLOOR, 0.0) == c.FLOOR


def _critical(x, g, sd, r, x_tau, travel):
    """λ_i = (q·σ/√(1−q²) − g)/r with q = (x − x_τ)/T, by hand (entries with |q| < 1 and r > 0)."""
    q = (x - x_tau) / travel
    return (q * sd / math.sqrt(1 - q * q) - g) / r


def test_solve_returns_the_keep_plus_first_largest_critical_lambda():
    """Synthetic statistics whose critical λ is known per entry: solve() returns the (keep+1)-th
    largest, so exactly `keep` entries have λ_i above it. Entries that cannot cross the cut in the
    travel left (q ≥ 1) count as kept whatever λ; frozen ones (pruned before) as pruned."""
    x_tau, travel = 0.5, 0.8
    rows = [  # x, g, σ, r
        (0.90, -0.02, 0.05, 1.0), (0.70, 0.01, 0.10, 0.5), (0.60, 0.00, 0.02, 2.0), (0.55, -0.05, 0.20, 1.5),
        (0.95, -0.03, 0.01, 0.2), (0.80, -0.10, 0.30, 3.0), (0.52, -0.01, 0.05, 0.1), (0.75, 0.02, 0.07, 0.8),
        (0.65, -0.04, 0.15, 1.2), (0.85, -0.06, 0.04, 0.4),
    ]
    crit = [_critical(x, g, sd, r, x_tau, travel) for x, g, sd, r in rows]
    assert all(v > 0 for v in crit) and len(set(crit)) == len(crit)
    x, g, sd, r = (torch.tensor(col, dtype=torch.float64) for col in zip(*rows))
    none_frozen = torch.zeros(len(rows), dtype=torch.bool)
    for keep in (1, 3, 6):
        c = lam_control.LamController(keep / len(rows), len(rows), [0.01] * 80)
        assert c.keep == keep
        lam = c.solve(x, g, sd, r, x_tau, travel, none_frozen)
        assert lam == pytest.approx(sorted(crit, reverse=True)[keep], rel=1e-12)
        assert sum(v > lam for v in crit) == keep
        assert not c.reach["too_dense"] and not c.reach["too_sparse"]

    # one entry too far above the cut to cross (x − x_τ ≥ T) and one frozen: 12 entries, keep 4
    x2 = torch.cat([x, torch.tensor([1.5, 0.9], dtype=torch.float64)])
    g2, sd2, r2 = (torch.cat([t, torch.tensor([0.0, -1.0], dtype=torch.float64)]) for t in (g, sd, r))
    r2[-2:] = 1.0
    frozen = torch.zeros(12, dtype=torch.bool)
    frozen[-1] = True                   # its λ_i would be the largest of all: it must not count as kept
    c = lam_control.LamController(4 / 12, 12, [0.01] * 80)
    lam = c.solve(x2, g2, sd2, r2, x_tau, travel, frozen)
    assert lam == pytest.approx(sorted(crit, reverse=True)[3], rel=1e-12)   # 3 solved survivors + the stuck one
    assert c.reach["min_remaining"] == pytest.approx(1 / 12) and c.reach["max_remaining"] == pytest.approx(11 / 12)
    assert c.within_reach == 10
