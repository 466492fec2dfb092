"""End-to-end methods on small offline data, checking the invariants with numbers."""


import pytest
import torch

from engine import masking, runner
from engine.config import RunConfig, without_unused
from engine.methods.imp import prune_by_magnitude
from engine.models import build_model
from tests.conftest import DATA

FAST = dict(model="lenet300", dataset="digits", epochs=3, retrain_epochs=3, batch_size=64, lr=1e-3)


def run(store, **kw):
    base = without_unused({**FAST, "method": kw.get("method", "concave")})    # FAST's retrain_epochs: concave's
    cfg = RunConfig.from_dict({**base, **kw})
    run_id = runner.create(store, cfg, status="running")
    summary = runner.execute(store, run_id, DATA)
    return run_id, summary


def checks(store, run_id):
    return {c["name"]: c for c in store.checks(run_id)}


def ticket_mask(store, run_id):
    return store.load_array(run_id, "ticket")["mask"]


def test_concave_prunes_and_records_invariants(store):
    run_id, s = run(store, method="concave", regularizer="log", lam=100.0, epochs=4)
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
    base = dict(method="concave", lam=10.0, epochs=2, retrain_epochs=1)
    run_id, s = run(store, rewind=rewind, **base)
    c = checks(store, run_id)
    assert c["zeros_stay_zero"]["value"] == 0.0 and c["rewind_exact"]["value"] == 0.0
    ticket = store.load_array(run_id, "ticket")
    start = ticket["rewind"]                     # the weights the retrain started from
    if rewind.startswith(("iter", "epoch")):
        saved = store.load_array(run_id, "rewind")
        assert saved["step"] == (7 if rewind == "iter:7" else len(range(0, 1437 - 143, 64)))
    elif rewind == "finetune":
        # the search-end m⊙θ, bit for bit (biases as trained)
        end = store.load_array(run_id, "search_end")
        for k, v in end["weights"].items():
            layer = k[: -len(".weight")]
            want = v * end["masks"][layer] if layer in end["masks"] else v
            assert torch.equal(start[k], want), k
    else:
        # reinit: the init-rewind run's exact mask, with θ redrawn from the same distribution
        ref, _ = run(store, rewind="init", **base)
        ref_ticket = store.load_array(ref, "ticket")
        assert all(torch.equal(ticket["mask"][n], ref_ticket["mask"][n]) for n in ref_ticket["mask"])
        init = ref_ticket["rewind"]
        for n in ticket["mask"]:
            k = f"{n}.weight"
            assert not torch.equal(start[k], init[k]), k
            assert float(start[k].std()) == pytest.approx(float(init[k].std()), rel=0.05), k
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
    after thresholding, its check passes, and λ does not oscillate at the end (it may still
    move one way while entries sit at the cut: LamController.active)."""
    run_id, s = run(store, method="concave", lam=lam0, target_sparsity=0.8, epochs=4, retrain_epochs=1)
    assert s["sparsity"] == pytest.approx(0.8, abs=0.01)
    c = checks(store, run_id)["sparsity_vs_target"]
    assert c["target"] == 0.8 and c["passed"] and c["value"] == pytest.approx(s["sparsity"])
    lams = [lam for _, lam in s["lam_history"]]
    assert len(lams) > 20 and s["lam_final"] == lams[-1]
    last = lams[-6:]
    moves = [b / a for a, b in zip(last, last[1:]) if abs(b / a - 1) > 1e-9]
    flips = sum((x > 1) != (y > 1) for x, y in zip(moves, moves[1:]))
    assert flips <= 1, last                                    # no back and forth
    assert max(last) / min(last) <= 2.0, last


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
    # λ 230: the 50 of the raw log(m+ε) on today's scale (× log(1+1/ε) ≈ 4.6)
    run_id, s = run(store, method="concave", mask_param="sigmoid", lam=230.0, mask_init=0.9, mask_lr=0.1,
                    epochs=3, retrain_epochs=1)
    end = store.load_array(run_id, "search_end")["masks"]   # m = sigmoid(s), float32
    ticket = ticket_mask(store, run_id)
    for n, m in end.items():
        assert float(m.min()) > 0.0 and float(m.max()) < 1.0, n   # a sigmoid never reaches 0 or 1
        assert torch.equal(ticket[n], m > 0.5), n                  # τ = 0.5 is s > 0
    assert 0.01 < s["remaining"] < 0.1                               # measured 0.032
    c = checks(store, run_id)
    assert c["zeros_stay_zero"]["value"] == 0.0 and c["rewind_exact"]["value"] == 0.0


def test_multi_round_concave_is_nested(store, monkeypatch):
    """Round 1's search cannot revive what round 0 pruned: its soft mask and its weights are
    exactly 0 there at the end of the search (not only after the masks are ANDed)."""
    from engine.methods import concave
    seen = {}
    real = concave._thresholded_accuracy

    def spy(ctx, binary):  # called right after each search, with the search-end model
        seen[len(seen)] = {n: layer.weight.detach().clone() for n, layer in ctx.layers}
        return real(ctx, binary)

    monkeypatch.setattr(concave, "_thresholded_accuracy", spy)
    run_id, s = run(store, method="concave", lam=10.0, mask_lr=0.05, rounds=2, epochs=2, retrain_epochs=1)
    r0 = store.load_masks(run_id, "r0-ticket")
    soft1 = store.load_masks(run_id, "r1-search-end")
    pruned = sum(int((r0[n] == 0).sum()) for n in r0)
    assert pruned > 0 and len(seen) == 2
    for n in r0:
        gone = r0[n] == 0
        assert float(soft1[n][gone].abs().max()) == 0.0, n
        assert float(seen[1][n][gone.to(seen[1][n].device)].abs().max()) == 0.0, n
    assert checks(store, run_id)["masks_nested"]["value"] == 0
    r1 = store.load_masks(run_id, "r1-ticket")
    assert sum(int(m.sum()) for m in r1.values()) <= sum(int(m.sum()) for m in r0.values())


def test_random_copies_per_layer_density_of_a_ticket(store):
    src, _ = run(store, method="imp", rounds=2, prune_fraction=0.5, epochs=1)
    run_id, s = run(store, method="random", random_from=src, epochs=1, seed=4)
    a, b = ticket_mask(store, src), ticket_mask(store, run_id)
    for n in a:
        k = int(a[n].sum())
        assert k == int(b[n].sum())
        assert not torch.equal(a[n], b[n])
        flat = b[n].flatten()
        assert not bool(flat[:k].all())                     # not the first k entries
        # spread like a uniform draw: every tenth of the layer holds its share (±50%)
        tenths = torch.stack([c.sum() for c in flat.chunk(10)]).float()
        assert float(tenths.min()) > 0.5 * k / 10 and float(tenths.max()) < 1.5 * k / 10
        rows = b[n].any(dim=1).float().mean()               # and over the layer's units
        assert float(rows) > 0.9
    # θ starts from the ticket's rewind point: the seeded init of the source (seed 0), bit for bit
    init = _fresh_init("lenet300", (1, 8, 8), 10, 0)
    start = store.load_array(run_id, "ticket")["rewind"]
    assert all(torch.equal(start[k], v) for k, v in init.items())
    c = checks(store, run_id)
    assert c["zeros_stay_zero"]["value"] == 0.0 and c["rewind_exact"]["value"] == 0.0


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
    run_id, s = run(store, model="logreg", dataset="planted", method="concave", regularizer="log", lam=1.4,
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
    # log's λ on ℓ1's scale: 0.3·log(1+1/ε) ≈ 1.4 gives log the gradient it had at 0.3 before normalising
    _, log = run(store, regularizer="log", warm_start=l1_id, **{**base, "lam": 1.4})
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
    cfg = RunConfig.from_dict({**FAST, "method": "imp", "rounds": 1, "epochs": 1, "rewind": "iter:100000",
                               "retrain_epochs": None})
    run_id = runner.create(store, cfg, status="running")
    with pytest.raises(ValueError):
        runner.execute(store, run_id, DATA)
    assert "iter:100000" in store.get_run(run_id)["reason"]


@pytest.mark.parametrize("mask_param", ["clip", "sigmoid"])
@pytest.mark.parametrize("reg_scale", ["mean", "sum"])
@pytest.mark.parametrize("regularizer", ["lp", "log", "l1"])
def test_mask_gradient_is_that_of_task_loss_plus_lambda_r(store, mask_param, reg_scale, regularizer):
    """The loop adds λR'(m) to the masks' gradient in closed form (add_reg_grad; log and l1 by
    their fused in-place form when masks are clipped); the result must equal autograd's
    gradient of L(m⊙θ) + λR(m)."""
    from engine import regularizers
    from engine.train import RunContext
    cfg = RunConfig.from_dict({**FAST, "method": "concave", "regularizer": regularizer, "lam": 3.0,
                               "mask_param": mask_param, "reg_scale": reg_scale})
    ctx = RunContext(cfg, store, runner.create(store, cfg), DATA)
    masking.set_soft(ctx.model, init=0.7, param=mask_param)
    with torch.no_grad():  # masks spread over (0,1) so R' differs entry by entry
        for _, layer in ctx.layers:
            layer.mask.add_(torch.rand_like(layer.mask) * 0.5 - 0.25)
    reg, params = regularizers.get(regularizer), cfg.reg_params_
    x, y = ctx.splits.train_x[:64], ctx.splits.train_y[:64]

    full = ctx.task_loss(ctx.model(x), y) + ctx.lam * ctx.reg_value(reg, params)
    expected = torch.autograd.grad(full, [layer.mask for _, layer in ctx.layers])

    ctx.task_loss(ctx.model(x), y).backward()
    task_grads = [layer.mask.grad.clone() for _, layer in ctx.layers]
    ctx.add_reg_grad(reg, params)
    for (name, layer), want in zip(ctx.layers, expected):
        torch.testing.assert_close(layer.mask.grad, want, rtol=1e-4, atol=1e-9, msg=name)
    # R'(m) joined into one tensor (the GPU's way) or layer by layer (the CPU's): the same bits
    assert ctx.join_reg_masks is False                   # this context runs on the CPU
    by_layer = [layer.mask.grad.clone() for _, layer in ctx.layers]
    ctx.join_reg_masks = True
    for (_, layer), g in zip(ctx.layers, task_grads):
        layer.mask.grad = g.clone()
    ctx.add_reg_grad(reg, params)
    for (name, layer), want in zip(ctx.layers, by_layer):
        assert torch.equal(layer.mask.grad, want), name


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


def _fresh_init(model, in_shape, classes, seed):
    torch.manual_seed(seed)
    return masking.weights_state(build_model(model, in_shape, classes))


def test_warm_started_retrain_rewinds_to_its_own_seeded_init(store):
    """warm_start moves the search's start, not the rewind point: with rewind=init the
    retrain starts from exactly the weights a fresh run with the same seed starts from."""
    base = dict(model="logreg", method="concave", lam=2.0, epochs=2, retrain_epochs=1, lr=1e-2)
    src, _ = run(store, regularizer="l1", seed=1, **base)
    warm, _ = run(store, regularizer="log", warm_start=src, seed=5, **base)
    rewind = store.load_array(warm, "ticket")["rewind"]
    init = _fresh_init("logreg", (1, 8, 8), 10, 5)
    assert set(rewind) == set(init)
    for k, v in init.items():
        assert torch.equal(rewind[k], v), k
    assert checks(store, warm)["rewind_exact"]["value"] == 0.0
    # the explicit alternative: the source run's own saved rewind weights
    warm_src, _ = run(store, regularizer="log", warm_start=src, warm_start_rewind="source", seed=5, **base)
    src_rewind = store.load_array(src, "ticket")["rewind"]
    got = store.load_array(warm_src, "ticket")["rewind"]
    for k, v in src_rewind.items():
        assert torch.equal(got[k], v), k
    assert not all(torch.equal(got[k], rewind[k]) for k in rewind)   # seed 1's init, not seed 5's
    assert checks(store, warm_src)["rewind_exact"]["value"] == 0.0


def test_a_threshold_that_would_empty_the_network_keeps_one_entry_and_says_so(store):
    """A λ so large that every mask entry falls below τ: the ticket keeps the layer's best
    entry and the run's checks record it; allow_empty_layers=true really empties it."""
    base = dict(model="logreg", method="concave", lam=1000.0, mask_lr=0.1, epochs=1, retrain_epochs=1, lr=1e-2)
    with pytest.warns(UserWarning, match="would have pruned every weight"):
        run_id, s = run(store, **base)
    c = checks(store, run_id)["every_layer_kept"]
    assert s["kept"] == 1 and c["value"] == 1 and not c["passed"]
    soft = next(iter(store.load_masks(run_id, "r0-search-end").values()))
    ticket = next(iter(ticket_mask(store, run_id).values()))
    assert float(soft.max()) <= 0.5 and float(soft[ticket].max()) == float(soft.max())   # its best entry
    with pytest.warns(UserWarning, match="left empty"):
        run_id, s = run(store, allow_empty_layers=True, **base)
    assert s["kept"] == 0 and checks(store, run_id)["every_layer_kept"]["value"] == 1
    run_id, s = run(store, **{**base, "lam": 1.0})
    c = checks(store, run_id)["every_layer_kept"]
    assert c["value"] == 0 and c["passed"]


@pytest.mark.parametrize("source", ["imp", "concave"])
def test_reinit_control_keeps_the_tickets_exact_masks_and_redraws_theta(store, source):
    """method=reinit: at every round of its source the mask is the source ticket's, bit for bit;
    θ is a fresh draw (not the source's init) with each layer's std that of the init distribution."""
    if source == "imp":
        src, _ = run(store, model="logreg", method="imp", rounds=2, prune_fraction=0.5, epochs=1, lr=1e-2)
        rounds, length = [1, 2], 1
    else:
        src, _ = run(store, model="logreg", method="concave", lam=2.0, rounds=2, epochs=1, retrain_epochs=2,
                     lr=1e-2)
        rounds, length = [0, 1], 2
    ctl, s = run(store, model="logreg", method="reinit", reinit_from=src, epochs=length, seed=0, lr=1e-2)
    for r in rounds:
        a, b = store.load_masks(src, f"r{r}-ticket"), store.load_masks(ctl, f"r{r}-ticket")
        assert set(a) == set(b) and all(torch.equal(a[n], b[n]) for n in a), r
    assert [row["round"] for row in store.metrics(ctl, kind="round")] == rounds
    ta, tb = ticket_mask(store, src), ticket_mask(store, ctl)
    assert all(torch.equal(ta[n], tb[n]) for n in ta)
    init = store.load_array(src, "ticket")["rewind"]          # the source's init (rewind=init, seed 0)
    theta = store.load_array(ctl, "ticket")["rewind"]         # where the control's last round started
    prunable = {f"{n}.weight" for n in ta}
    for k, v in init.items():
        if k in prunable:
            assert not torch.equal(theta[k], v), k
        assert float(theta[k].float().std()) == pytest.approx(float(v.float().std()), rel=0.1, abs=1e-12), k
    c = checks(store, ctl)
    assert c["rewind_exact"]["value"] == 0.0 and c["zeros_stay_zero"]["value"] == 0.0
    assert s["kept"] == sum(int(m.sum()) for m in ta.values())
    # it trains exactly as long as its source's retrain, and says so when asked for another length
    epochs = [r for r in store.metrics(ctl, kind="epoch")]
    assert len(epochs) == len(rounds) * length
    with pytest.raises(ValueError, match="epochs"):
        run(store, model="logreg", method="reinit", reinit_from=src, epochs=length + 1, lr=1e-2)


def test_random_control_follows_its_sources_rewind_point_and_retrain_length(store):
    """A random control of a rewind=epoch:K ticket whose retrain is shorter than its search
    starts from the ticket's epoch-K weights and trains exactly as many steps as its retrain."""
    src, _ = run(store, method="concave", lam=10.0, rewind="epoch:1", epochs=2, retrain_epochs=1)
    ctl, _ = run(store, method="random", random_from=src, rewind="epoch:1", epochs=1, seed=3)
    src_rewind, ctl_rewind = store.load_array(src, "ticket")["rewind"], store.load_array(ctl, "ticket")["rewind"]
    assert set(src_rewind) == set(ctl_rewind)
    assert all(torch.equal(src_rewind[k], ctl_rewind[k]) for k in src_rewind)
    assert checks(store, ctl)["rewind_exact"]["value"] == 0.0
    src_rows, ctl_rows = store.metrics(src, kind="epoch"), store.metrics(ctl, kind="epoch")
    retrain_steps = src_rows[-1]["step"] - max(r["step"] for r in src_rows if r["phase"] == "search")
    assert retrain_steps > 0 and ctl_rows[-1]["step"] == retrain_steps
    assert len(ctl_rows) == sum(r["phase"] == "retrain" for r in src_rows) == 1
    # any other length or rewind point is refused with the key it needs
    for bad, key in ((dict(epochs=2, rewind="epoch:1"), "epochs"), (dict(epochs=1), "rewind"),
                     (dict(epochs=1, rewind="epoch:1", lr=1e-2), "lr")):
        with pytest.raises(ValueError, match=f"{key}="):
            run(store, method="random", random_from=src, **bad)


def _chain(store, method):
    """The runs one comparison of `method` needs (its source ticket first, for the controls),
    and the rows a benchmark selects from. Logistic regression on digits, one epoch a phase."""
    base = dict(model="logreg", epochs=1, retrain_epochs=1, lr=1e-2)
    ids = []
    if method == "concave":              # a λ sweep: a dense-ish and a one-weight mask
        ids = [run(store, method="concave", lam=lam, mask_lr=0.1, **base)[0] for lam in (1.0, 1000.0)]
    else:      # retrain_epochs is concave's; rounds and prune_fraction IMP's (others are refused)
        lean = {k: v for k, v in base.items() if k != "retrain_epochs"}
        if method in ("imp", "dense"):
            ids = [run(store, method=method, **(dict(rounds=2, prune_fraction=0.9) if method == "imp" else {}),
                       **lean)[0]]
        else:
            src = run(store, method="imp", rounds=1, prune_fraction=0.9, **lean)[0]
            ids = [src, run(store, method=method, **{"random_from" if method == "random" else "reinit_from": src},
                            **lean)[0]]
    rows = []
    for i in ids:
        rounds = store.metrics(i, kind="round") or [{"round": 0, **{k: store.get_run(i)["summary"][k2] for k, k2 in
                                                     (("kept", "kept"), ("val_acc", "val_accuracy"),
                                                      ("test_acc", "test_accuracy"))}}]
        rows += [{"run": i, "round": r["round"], "kept": r["kept"], "val_accuracy": r["val_acc"],
                  "test_accuracy": r["test_acc"]} for r in rounds]
    return ids, rows


@pytest.mark.filterwarnings("ignore:round 0")  # λ=1000 empties the mask on purpose
@pytest.mark.parametrize("method", ["concave", "imp", "random", "dense", "reinit"])
def test_test_labels_never_steer_tickets_lambda_or_selection(tmp_path, monkeypatch, method):
    """Permuting the test labels changes test accuracy and nothing else: every ticket, every λ,
    the validation curves and the benchmarks' choice of a run (bench/convex.py's Fig. 4 rule:
    the sparsest at ≥ 50% accuracy here) stay bit for bit the same."""
    import dataclasses
    import sys

    from engine import train
    from engine.store import Store
    from tests.conftest import ROOT
    sys.path.insert(0, str(ROOT / "bench"))
    from convex import choose

    real = train.load_dataset
    out = {}
    for permuted in (False, True):
        if permuted:
            def load(*a, **kw):
                sp = real(*a, **kw)
                perm = torch.randperm(len(sp.test_y), generator=torch.Generator().manual_seed(1))
                return dataclasses.replace(sp, test_y=(sp.test_y[perm] + 1) % sp.num_classes)
            monkeypatch.setattr(train, "load_dataset", load)
        store = Store(tmp_path / f"home{int(permuted)}")
        ids, rows = _chain(store, method)
        tickets = [store.load_array(i, "ticket") if (store.run_dir(i) / "ticket.pt").exists() else None
                   for i in ids]
        summaries = [store.get_run(i)["summary"] for i in ids]
        pick = choose(rows, floor=0.5, kept=0)
        out[permuted] = (tickets, [s.get("lam_history") for s in summaries], [s["val_accuracy"] for s in summaries],
                         [r["val_accuracy"] for r in rows], [r["test_accuracy"] for r in rows],
                         (ids.index(pick["run"]), pick["round"]))
    (t0, lam0, val0, rv0, test0, pick0), (t1, lam1, val1, rv1, test1, pick1) = out[False], out[True]
    assert test0 != test1                                   # the permutation did reach the test set
    assert lam0 == lam1 and val0 == val1 and rv0 == rv1 and pick0 == pick1
    for a, b in zip(t0, t1):
        assert (a is None) == (b is None)
        if a is not None:
            assert all(torch.equal(a["mask"][n], b["mask"][n]) for n in a["mask"])
            assert all(torch.equal(a["rewind"][k], b["rewind"][k]) for k in a["rewind"])


def test_global_imp_keeps_exactly_the_largest_magnitudes():
    """Global scope: one ranking over every layer. Reference: sort |θ| of the currently kept
    weights of all layers together and keep the top half; the mask must be exactly that set."""
    torch.manual_seed(1)
    model = build_model("lenet300", (1, 8, 8), 10)
    layers = dict(masking.prunable_layers(model))
    gen = torch.Generator().manual_seed(2)
    current = {n: torch.rand(l.weight.shape, generator=gen) < 0.7 for n, l in layers.items()}   # a round-1 mask
    new = prune_by_magnitude(model, current, 0.5, "global", output_p=None)
    flat = torch.cat([layers[n].weight.detach().abs().flatten() for n in layers])
    kept_before = torch.cat([current[n].flatten() for n in layers])
    k = int(round(0.5 * int(kept_before.sum())))
    order = torch.argsort(torch.where(kept_before, flat, torch.tensor(-1.0)), descending=True)
    want = torch.zeros_like(kept_before)
    want[order[:k]] = True
    got = torch.cat([new[n].flatten() for n in layers])
    assert int(got.sum()) == k and torch.equal(got, want)
    # the layers end unequal: a global ranking, not a per-layer one
    per_layer = [float(new[n].sum() / current[n].sum()) for n in layers]
    assert max(per_layer) - min(per_layer) > 0.05, per_layer


def test_multi_round_concave_spreads_target_sparsity_over_the_rounds(store):
    """rounds=2, target_sparsity=0.84, λ steered from a far too small λ0: round 0 aims at
    0.16^(1/2) = 40 % remaining, round 1 at 16 % (each within the check's 10 % of it); each
    round's ticket lies within the previous one, and the final check passes."""
    run_id, s = run(store, method="concave", rounds=2, target_sparsity=0.84, epochs=4, retrain_epochs=1, lam=0.01)
    rounds = [r for r in store.metrics(run_id, kind="round")]
    assert [r["round"] for r in rounds] == [0, 1]
    for r, want in zip(rounds, (0.4, 0.16)):
        assert r["remaining"] == pytest.approx(want, rel=0.10), (r["round"], r["remaining"])
    c = checks(store, run_id)
    assert c["masks_nested"]["value"] == 0 and c["masks_nested"]["passed"]
    assert c["sparsity_vs_target"]["passed"] and c["sparsity_vs_target"]["target"] == 0.84
    assert s["sparsity"] == pytest.approx(0.84, abs=0.016)
    r0, r1 = store.load_masks(run_id, "r0-ticket"), store.load_masks(run_id, "r1-ticket")
    assert all(not bool((r1[n].bool() & ~r0[n].bool()).any()) for n in r1)
