"""End-to-end methods on small offline data, checking the invariants with numbers."""


import pytest
import torch

from engine import masking, runner
from engine.config import RunConfig
from engine.methods.imp import prune_by_magnitude
from engine.models import build_model
from tests.conftest import DATA

FAST = dict(model="lenet300", dataset="digits", epochs=3, retrain_epochs=3, batch_size=64, lr=1e-3)


def run(store, **kw):
    cfg = RunConfig.from_dict({**FAST, **kw})
    run_id = runner.create(store, cfg, status="running")
    summary = runner.execute(store, run_id, DATA)
    return run_id, summary


def checks(store, run_id):
    return {c["name"]: c for c in store.checks(run_id)}


def ticket_mask(store, run_id):
    return store.load_array(run_id, "ticket")["mask"]


def test_concave_prunes_and_records_invariants(store):
    run_id, s = run(store, method="concave", regularizer="log", lam=20.0, epochs=4)
    mask = ticket_mask(store, run_id)
    kept = sum(int(m.sum()) for m in mask.values())
    total = sum(m.numel() for m in mask.values())
    assert (s["kept"], s["total"]) == (kept, total)          # summary measured from the ticket
    assert s["remaining"] == pytest.approx(kept / total)
    assert s["remaining"] < 0.6                              # λ really pruned
    assert s["test_accuracy"] > 0.8
    c = checks(store, run_id)
    assert c["rewind_exact"]["value"] == 0.0 and c["rewind_exact"]["passed"]
    assert c["zeros_stay_zero"]["value"] == 0.0 and c["zeros_stay_zero"]["passed"]
    run_row = store.get_run(run_id)
    assert run_row["status"] == "done" and run_row["progress"] == 1.0
    # epoch metrics for both phases, regularizer apart from the task loss
    rows = store.metrics(run_id)
    phases = {(r["kind"], r["phase"]) for r in rows}
    assert {("epoch", "search"), ("epoch", "retrain"), ("step", "search"), ("round", "retrain")} <= phases
    assert any(r["loss_reg"] is not None for r in rows if r["phase"] == "search" and r["kind"] == "step")
    # mask stats per layer and snapshots every epoch for this small model
    stats = store.mask_stats(run_id)
    assert {r["layer"] for r in stats} == set(mask)
    assert all(sum(r["hist"]) == r["numel"] for r in stats)
    snaps = store.mask_snapshots(run_id)
    assert "r0-search-e0001" in snaps and "r0-ticket" in snaps and "r0-search-end" in snaps


def test_retrain_starts_bit_for_bit_from_rewind_weights(store):
    """The ticket's rewind weights are the model's weights at init, and the
    run's recorded check is exactly 0."""
    run_id, _ = run(store, method="concave", lam=10.0, rewind="init", epochs=2, retrain_epochs=1)
    t = store.load_array(run_id, "ticket")
    torch.manual_seed(0)
    fresh = build_model("lenet300", (1, 8, 8), 10)
    init = masking.weights_state(fresh)
    for k, v in init.items():
        assert torch.equal(t["rewind"][k], v), k
    assert checks(store, run_id)["rewind_exact"]["value"] == 0.0


@pytest.mark.parametrize("rewind", ["iter:7", "epoch:1", "finetune", "reinit"])
def test_rewind_points(store, rewind):
    run_id, s = run(store, method="concave", lam=10.0, rewind=rewind, epochs=2, retrain_epochs=1)
    c = checks(store, run_id)
    assert c["zeros_stay_zero"]["value"] == 0.0
    if rewind.startswith(("iter", "epoch")):
        saved = store.load_array(run_id, "rewind")
        assert saved["step"] == (7 if rewind == "iter:7" else len(range(0, 1437 - 143, 64)))
        assert c["rewind_exact"]["value"] == 0.0
    else:
        assert "rewind_exact" not in c
    assert s["test_accuracy"] > 0.5


def test_same_config_and_seed_give_identical_masks_and_metrics(store):
    a, sa = run(store, method="concave", lam=30.0, epochs=3, retrain_epochs=1, seed=3)
    b, sb = run(store, method="concave", lam=30.0, epochs=3, retrain_epochs=1, seed=3)
    ma, mb = ticket_mask(store, a), ticket_mask(store, b)
    assert all(torch.equal(ma[n], mb[n]) for n in ma)
    keys = ("kind", "phase", "epoch", "step", "loss", "loss_task", "loss_reg", "val_acc", "test_acc", "remaining")
    ra = [tuple(r[k] for k in keys) for r in store.metrics(a)]
    rb = [tuple(r[k] for k in keys) for r in store.metrics(b)]
    assert ra == rb
    assert sa["test_accuracy"] == sb["test_accuracy"]
    c, _ = run(store, method="concave", lam=30.0, epochs=3, retrain_epochs=1, seed=4)
    mc = ticket_mask(store, c)
    assert 0.0 < sa["remaining"] < 1.0
    assert not all(torch.equal(ma[n], mc[n]) for n in ma)


def test_imp_rounds_nested_with_measured_sparsity(store):
    run_id, s = run(store, method="imp", rounds=3, prune_fraction=0.5, epochs=2)
    assert s["remaining"] == pytest.approx(0.125, abs=1e-4)
    c = checks(store, run_id)
    assert c["masks_nested"]["value"] == 0 and c["zeros_stay_zero"]["value"] == 0.0
    assert c["rewind_exact"]["value"] == 0.0 and c["sparsity_vs_target"]["passed"]
    rounds = store.metrics(run_id, kind="round")
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert [round(r["remaining"], 3) for r in rounds] == [1.0, 0.5, 0.25, 0.125]
    tickets = [store.load_masks(run_id, f"r{r}-ticket") for r in (1, 2, 3)]
    for prev, new in zip(tickets, tickets[1:]):
        assert all(bool(((new[n] > 0) & (prev[n] == 0)).sum() == 0) for n in new)


def test_imp_output_layer_rate_and_layer_scope():
    torch.manual_seed(0)
    model = build_model("lenet300", (1, 8, 8), 10)
    names = [n for n, _ in masking.prunable_layers(model)]
    full = {n: torch.ones_like(l.weight, dtype=torch.bool) for n, l in masking.prunable_layers(model)}
    new = prune_by_magnitude(model, full, 0.2, "layer", output_p=0.1)
    rep = masking.sparsity_report(new)["layers"]
    for n in names[:-1]:
        assert rep[n]["remaining"] == pytest.approx(0.8, abs=1e-3)
    assert rep[names[-1]]["remaining"] == pytest.approx(0.9, abs=1e-3)
    # the kept weights are exactly the largest |θ| of their layer
    w = dict(masking.prunable_layers(model))[names[0]].weight.detach().abs()
    assert float(w[new[names[0]]].min()) >= float(w[~new[names[0]]].max())


@pytest.mark.parametrize("lam0", [0.01, 100.0])
def test_target_sparsity_adapts_lambda(store, lam0):
    """From a λ far too low and far too high, the controller lands on the target
    after thresholding, its check passes, and λ settles (no oscillation at the end)."""
    run_id, s = run(store, method="concave", lam=lam0, target_sparsity=0.8, epochs=4, retrain_epochs=1)
    assert s["sparsity"] == pytest.approx(0.8, abs=0.01)
    c = checks(store, run_id)["sparsity_vs_target"]
    assert c["target"] == 0.8 and c["passed"] and c["value"] == pytest.approx(s["sparsity"])
    lams = [lam for _, lam in s["lam_history"]]
    assert len(lams) > 20 and s["lam_final"] == lams[-1]
    last = lams[-5:]
    assert max(last) / min(last) <= 1.3, last


def test_target_sparsity_out_of_reach_fails_its_check(store):
    """A search too short for the masks to get there (Adam moves m by ~mask_lr a step)
    ends with a failed check that says so, never silently off target."""
    run_id, s = run(store, method="concave", target_sparsity=0.9, epochs=1, retrain_epochs=1, mask_lr=0.001)
    c = checks(store, run_id)["sparsity_vs_target"]
    assert s["sparsity"] < 0.5 and not c["passed"]
    assert "MISSED" in c["detail"] and "too short" in c["detail"]


def test_topk_threshold_hits_target_exactly(store):
    _, s = run(store, method="concave", lam=1.0, target_sparsity=0.9, threshold_mode="topk", epochs=2,
               retrain_epochs=1)
    assert s["kept"] == round(0.1 * s["total"])


def test_sigmoid_parameterisation_runs_and_prunes(store):
    run_id, s = run(store, method="concave", mask_param="sigmoid", lam=50.0, mask_init=0.9, mask_lr=0.1,
                    epochs=3, retrain_epochs=1)
    assert s["remaining"] < 1.0
    assert checks(store, run_id)["zeros_stay_zero"]["value"] == 0.0


def test_multi_round_concave_is_nested(store):
    run_id, s = run(store, method="concave", lam=5.0, rounds=2, epochs=2, retrain_epochs=1)
    c = checks(store, run_id)
    assert c["masks_nested"]["value"] == 0
    r0, r1 = store.load_masks(run_id, "r0-ticket"), store.load_masks(run_id, "r1-ticket")
    assert sum(int(m.sum()) for m in r1.values()) <= sum(int(m.sum()) for m in r0.values())


def test_random_copies_per_layer_density_of_a_ticket(store):
    src, _ = run(store, method="imp", rounds=2, prune_fraction=0.5, epochs=1)
    run_id, s = run(store, method="random", random_from=src, epochs=2)
    a, b = ticket_mask(store, src), ticket_mask(store, run_id)
    for n in a:
        assert int(a[n].sum()) == int(b[n].sum())
        assert not torch.equal(a[n], b[n])
    assert checks(store, run_id)["zeros_stay_zero"]["value"] == 0.0


def test_random_global_density(store):
    _, s = run(store, method="random", target_sparsity=0.75, epochs=1)
    assert s["remaining"] == pytest.approx(0.25, abs=1e-4)


def test_dense_reference(store):
    _, s = run(store, method="dense", epochs=5)
    assert s["remaining"] == 1.0 and s["test_accuracy"] > 0.9


def test_planted_dataset_recovers_support_with_log(store):
    """The planted convex problem has a known 10-sparse target mask over 100 inputs:
    the log-regularized mask finds most of it with few false positives."""
    from engine.data import load_dataset
    run_id, s = run(store, model="logreg", dataset="planted", method="concave", regularizer="log", lam=0.3,
                    epochs=30, retrain_epochs=5, lr=1e-2, mask_lr=0.05)
    target = load_dataset("planted", DATA).extras["target_mask"].bool()
    ticket = ticket_mask(store, run_id)["classifier.0"] if "classifier.0" in ticket_mask(store, run_id) else \
        next(iter(ticket_mask(store, run_id).values()))
    hits = int((ticket & target).sum())
    assert s["total"] == 100 and int(target.sum()) == 10
    assert hits >= 7 and s["kept"] - hits <= 3, (hits, s["kept"])


def test_bf16_autocast_and_compile_paths_run(store):
    """The GPU path's switches work on the CPU too: bf16 autocast and torch.compile."""
    run_id, s = run(store, method="concave", lam=20.0, epochs=1, retrain_epochs=1, precision="bf16")
    assert checks(store, run_id)["zeros_stay_zero"]["value"] == 0.0 and s["test_accuracy"] > 0.3
    run_id, s = run(store, model="logreg", method="concave", lam=0.5, epochs=3, retrain_epochs=2, lr=1e-2,
                    compile=True)
    assert checks(store, run_id)["zeros_stay_zero"]["value"] == 0.0 and s["test_accuracy"] > 0.3


def test_log_warm_started_from_l1_recovers_the_planted_support_exactly(store):
    """The theory page's claim on the planted convex problem: ℓ1 finds a superset
    of the support; log started from the ℓ1 solution keeps exactly the support,
    with a much smaller ‖m* − m̃‖ than ℓ1."""
    base = dict(model="logreg", dataset="planted", method="concave", epochs=30, retrain_epochs=2, lr=1e-2,
                mask_lr=0.05, lam=0.3)
    l1_id, l1 = run(store, regularizer="l1", **base)
    _, log = run(store, regularizer="log", warm_start=l1_id, **base)
    assert l1["recovery"]["recall"] == 1.0 and l1["recovery"]["kept"] > 10
    assert log["recovery"]["exact"] and log["recovery"]["kept"] == 10
    assert log["recovery"]["distance"] < 0.5 * l1["recovery"]["distance"]


def test_warm_start_from_unknown_run_fails_with_reason(store):
    cfg = RunConfig.from_dict({**FAST, "method": "concave", "warm_start": "deadbeef-000000"})
    run_id = runner.create(store, cfg, status="running")
    with pytest.raises(ValueError):
        runner.execute(store, run_id, DATA)
    assert "warm_start" in store.get_run(run_id)["reason"]


def test_rewind_iteration_beyond_the_first_phase_fails_clearly(store):
    cfg = RunConfig.from_dict({**FAST, "method": "imp", "rounds": 1, "epochs": 1, "rewind": "iter:100000"})
    run_id = runner.create(store, cfg, status="running")
    with pytest.raises(ValueError):
        runner.execute(store, run_id, DATA)
    assert "iter:100000" in store.get_run(run_id)["reason"]


@pytest.mark.parametrize("mask_param", ["clip", "sigmoid"])
@pytest.mark.parametrize("reg_scale", ["mean", "sum"])
def test_mask_gradient_is_that_of_task_loss_plus_lambda_r(store, mask_param, reg_scale):
    """The loop adds λR'(m) to the masks' gradient in closed form (add_reg_grad);
    the result must equal autograd's gradient of L(m⊙θ) + λR(m)."""
    from engine import regularizers
    from engine.train import RunContext
    cfg = RunConfig.from_dict({**FAST, "method": "concave", "regularizer": "lp", "lam": 3.0,
                               "mask_param": mask_param, "reg_scale": reg_scale})
    ctx = RunContext(cfg, store, runner.create(store, cfg), DATA)
    masking.set_soft(ctx.model, init=0.7, param=mask_param)
    with torch.no_grad():  # masks spread over (0,1) so R' differs entry by entry
        for _, layer in ctx.layers:
            layer.mask.add_(torch.rand_like(layer.mask) * 0.5 - 0.25)
    reg, params = regularizers.get("lp"), cfg.reg_params_
    x, y = ctx.splits.train_x[:64], ctx.splits.train_y[:64]

    full = ctx.task_loss(ctx.model(x), y) + ctx.lam * ctx.reg_value(reg, params)
    expected = torch.autograd.grad(full, [layer.mask for _, layer in ctx.layers])

    ctx.task_loss(ctx.model(x), y).backward()
    ctx.add_reg_grad(reg, params)
    for (name, layer), want in zip(ctx.layers, expected):
        torch.testing.assert_close(layer.mask.grad, want, rtol=1e-4, atol=1e-9, msg=name)


@pytest.mark.filterwarnings("ignore:Detected call of")  # the schedule is stepped here without training
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_masks_get_adam_at_mask_lr_without_weight_decay(store, optimizer):
    """Whatever the weights use, masks are stepped by Adam at mask_lr with no weight decay
    (with Adam(W) weights they share one fused optimizer as a second parameter group)."""
    from engine.train import RunContext
    cfg = RunConfig.from_dict({**FAST, "method": "concave", "optimizer": optimizer, "lr": 0.003,
                               "weight_decay": 0.1, "mask_lr": 0.02, "lr_schedule": "cosine"})
    ctx = RunContext(cfg, store, runner.create(store, cfg), DATA)
    masking.set_soft(ctx.model)
    opts, scheds = ctx.make_optimizers(True, epochs=2, steps_per_epoch=5)
    masks = {id(p) for p in masking.mask_parameters(ctx.model)}
    groups = [(o, g) for o in opts for g in o.param_groups]
    mask_groups = [(o, g) for o, g in groups if {id(p) for p in g["params"]} & masks]
    assert len(mask_groups) == 1
    o, g = mask_groups[0]
    assert {id(p) for p in g["params"]} == masks
    assert isinstance(o, (torch.optim.Adam, torch.optim.AdamW)) and g["lr"] == 0.02 and g["weight_decay"] == 0.0
    weight_groups = [g for _, g in groups if not {id(p) for p in g["params"]} & masks]
    assert all(g["lr"] == 0.003 and g["weight_decay"] == 0.1 for g in weight_groups)
    assert sum(len(g["params"]) for g in weight_groups) == len(masking.weight_parameters(ctx.model))
    for _ in range(10):                       # the cosine schedule anneals both to 0 over the phase
        for sc in scheds:
            sc.step()
    assert g["lr"] == pytest.approx(0.0, abs=1e-12) and weight_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
