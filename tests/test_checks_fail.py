"""Issue 23, item 3: every self-check a user reads is shown failing, not only passing.

Each run below is a real (tiny) IMP run with the one violation its check exists to catch
injected into the engine: a pruned weight made non-zero after retraining, a kept weight
nudged between the rewind and the retrain, a rewind point that moved with training, a
rewind.pt changed after it was saved, a revived IMP entry, an emptied layer, a missed
sparsity schedule. For each: the check's value, passed=False, and the Runs page (AppTest)
showing it failed."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from streamlit.testing.v1 import AppTest
from test_app import APP, no_traceback, plain, routed_by_app_py, torch_threads_restored  # noqa: F401 - autouse

from engine import masking, runner
from engine.config import RunConfig
from engine.methods import imp
from engine.store import Store
from engine.train import RunContext
from tests.conftest import DATA
from ui.data import CHECK_TEXT

# logistic regression on digits: one 10×64 layer, 1 epoch a round (about a second a run)
IMP = dict(model="logreg", dataset="digits", method="imp", rounds=2, prune_fraction=0.5, epochs=1, batch_size=128)


def first(mask: torch.Tensor, value: bool) -> tuple[int, ...]:
    """Index of the first entry of `mask` equal to `value`."""
    return tuple(int(i) for i in (mask == value).nonzero()[0])


def prunable(ctx: RunContext) -> tuple[str, torch.nn.Module]:
    return masking.prunable_layers(ctx.model)[0]


# ------------------------------------------------------------------ the injected violations

def leak_after_retrain(mp):
    """zeros_stay_zero: after round 1's retrain a pruned weight is 0.25."""
    train_phase = RunContext.train_phase

    def leaky(self, **kw):
        res = train_phase(self, **kw)
        if kw["round"] == 1:
            _, layer = prunable(self)
            with torch.no_grad():
                layer.weight[first(layer.mask, 0)] = 0.25
        return res
    mp.setattr(RunContext, "train_phase", leaky)


def nudge_after_rewind(mp):
    """rewind_exact: round 1's restored weights, then one kept weight moved by 0.5 before retraining."""
    start_retrain = imp.start_retrain

    def nudged(ctx, binary, kind, round, **kw):
        start_retrain(ctx, binary, kind, round, **kw)
        if round == 1:
            name, layer = prunable(ctx)
            with torch.no_grad():
                layer.weight[first(binary[name], True)] += 0.5
    mp.setattr(imp, "start_retrain", nudged)


def rewind_point_follows_training(mp):
    """rewind_exact: the rewind state aliases the live weights (no copy), so training moves the
    'saved' point and the restore puts back the trained weights: the copy equals itself."""
    mp.setattr(masking, "weights_state",
               lambda model: {k: v.detach() for k, v in model.state_dict().items() if not k.endswith(".mask")})


def rewind_file_changed(mp):
    """rewind_exact: rewind.pt rewritten after it was saved (a pruned entry changed, its old hash kept)."""
    start_retrain = imp.start_retrain

    def changed(ctx, binary, kind, round, **kw):
        start_retrain(ctx, binary, kind, round, **kw)
        if round == 1:
            saved = ctx.store.load_array(ctx.run_id, "rewind")
            name, _ = prunable(ctx)
            saved["state"][f"{name}.weight"][first(binary[name], False)] += 1.0
            ctx.store.save_array(ctx.run_id, "rewind", saved)
    mp.setattr(imp, "start_retrain", changed)


def revive_in_round_2(mp):
    """masks_nested: round 2 keeps one entry round 1 had pruned."""
    prune = imp.prune_by_magnitude

    def reviving(model, current, *a, **kw):
        new = prune(model, current, *a, **kw)
        name = next(iter(current))
        if not bool(current[name].all()):            # round 2: round 1 pruned something
            new[name][first(current[name], False)] = True
        return new
    mp.setattr(imp, "prune_by_magnitude", reviving)


def empty_the_layer(mp):
    """every_layer_kept: round 1's selection prunes every weight of the layer."""
    prune = imp.prune_by_magnitude

    def emptying(model, current, *a, **kw):
        new = prune(model, current, *a, **kw)
        return {n: torch.zeros_like(m) for n, m in new.items()}
    mp.setattr(imp, "prune_by_magnitude", emptying)


def prune_nothing(mp):
    """sparsity_vs_target: the rounds keep every weight, missing (1−0.5)² = 25 % remaining."""
    mp.setattr(imp, "prune_by_magnitude", lambda model, current, *a, **kw: {n: m.clone() for n, m in current.items()})


VIOLATIONS = {
    "leak": ("zeros_stay_zero", leak_after_retrain),
    "nudge": ("rewind_exact", nudge_after_rewind),
    "alias": ("rewind_exact", rewind_point_follows_training),
    "file": ("rewind_exact", rewind_file_changed),
    "revive": ("masks_nested", revive_in_round_2),
    "empty": ("every_layer_kept", empty_the_layer),
    "miss": ("sparsity_vs_target", prune_nothing),
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    """One store with a run per violation: (home, {violation: (run id, {check: row})})."""
    home = tmp_path_factory.mktemp("broken")
    store = Store(home)
    out = {}
    for what, (_, inject) in VIOLATIONS.items():
        with pytest.MonkeyPatch.context() as mp:
            inject(mp)
            cfg = RunConfig.from_dict({**IMP, "name": what})
            rid = runner.create(store, cfg, status="running")
            with pytest.warns(UserWarning, match="pruned every weight") if what == "empty" else nullcontext():
                runner.execute(store, rid, DATA)
        assert store.get_run(rid)["status"] == "done", store.get_run(rid)
        out[what] = rid, {c["name"]: c for c in store.checks(rid)}
    return home, out


def test_a_clean_run_passes_every_check(store):
    rid = runner.create(store, RunConfig.from_dict(IMP), status="running")
    runner.execute(store, rid, DATA)
    c = {c["name"]: c for c in store.checks(rid)}
    assert set(c) == set(CHECK_TEXT)
    assert all(row["passed"] for row in c.values()), c
    assert [c[n]["value"] for n in ("zeros_stay_zero", "rewind_exact", "masks_nested", "every_layer_kept")] == \
        [0.0, 0.0, 0, 0]


def test_a_pruned_weight_made_nonzero_fails_zeros_stay_zero(broken):
    c = broken[1]["leak"][1]["zeros_stay_zero"]
    assert c["value"] == 0.25 and c["target"] == 0.0 and not c["passed"]


def test_a_kept_weight_nudged_after_the_rewind_fails_rewind_exact(broken):
    c = broken[1]["nudge"][1]["rewind_exact"]
    assert c["value"] == pytest.approx(0.5, rel=1e-5) and not c["passed"]
    assert "retrain start" in c["detail"]


def test_a_rewind_point_that_moved_with_training_fails_rewind_exact(broken):
    """Comparing right after the restore (the old check) saw 0 here: the copy equals itself."""
    c = broken[1]["alias"][1]["rewind_exact"]
    assert c["value"] > 1e-4 and not c["passed"]


def test_a_changed_rewind_file_fails_rewind_exact_by_its_hash(broken):
    """The changed entry is pruned, so no kept weight differs (value 0): only the hash tells."""
    c = broken[1]["file"][1]["rewind_exact"]
    assert c["value"] == 0.0 and not c["passed"]
    assert "no longer matches the sha256" in c["detail"]


def test_a_revived_imp_entry_fails_masks_nested(broken):
    c = broken[1]["revive"][1]["masks_nested"]
    assert c["value"] == 1 and c["target"] == 0 and not c["passed"]


def test_an_emptied_layer_fails_every_layer_kept(broken):
    c = broken[1]["empty"][1]["every_layer_kept"]
    assert c["value"] == 1 and c["target"] == 0 and not c["passed"]


def test_a_missed_schedule_fails_sparsity_vs_target(broken):
    c = broken[1]["miss"][1]["sparsity_vs_target"]
    assert c["value"] == 0.0 and c["target"] == pytest.approx(0.75) and not c["passed"]
    assert "MISSED by -0.7500" in c["detail"]


def test_the_violated_check_is_the_only_one_failing(broken):
    """Each injection trips its own check; the others keep measuring what they measure
    (an emptied layer also misses the schedule, which the sparsity check rightly reports)."""
    also = {"empty": {"sparsity_vs_target"}}
    for what, (check, _) in VIOLATIONS.items():
        failed = {n for n, c in broken[1][what][1].items() if not c["passed"]}
        assert failed == {check} | also.get(what, set()), (what, failed)


def test_runs_page_shows_each_violated_check_as_failed(monkeypatch, broken):
    home, runs = broken
    monkeypatch.setenv("LOTTERY_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/runs.py")
    at.query_params["runs"] = ",".join(rid for rid, _ in runs.values())
    at.run()
    no_traceback(at)
    assert len(at.tabs) >= len(runs)
    tabs = {t.label: t for t in at.tabs}
    for what, (check, _) in VIOLATIONS.items():
        rid, checks = runs[what]
        tab = next(t for label, t in tabs.items() if rid in plain(label))
        title = CHECK_TEXT[check][0]
        errors = [plain(e.value) for e in tab.error]
        assert any("Failed check" in e and title in e and checks[check]["detail"] in e for e in errors), \
            (what, errors)
        assert any(f"❌ **{title}**" in m.value for m in tab.markdown), what
