"""Masks: where they live, the three modes, thresholding, statistics and the
invariants retraining relies on (pruned weights stay exactly zero, later
rounds never revive pruned entries, rewinds are bit for bit)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine import masking, regularizers
from engine.masking import HIST_BINS, MaskedConv2d, MaskedLinear
from engine.models import build_model

# ---------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: one thread is fastest and does not collapse when the 2 cores are busy
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _lenet(seed=0):
    torch.manual_seed(seed)
    return build_model("lenet300", (1, 8, 8), 10)


def _tinyconv(seed=0):
    # conv + linear masked layers, small enough for 200 CPU steps in well under a second
    torch.manual_seed(seed)
    return nn.Sequential(MaskedConv2d(1, 6, kernel_size=3, padding=1), nn.ReLU(),
                         MaskedConv2d(6, 8, kernel_size=3, padding=1, stride=2), nn.ReLU(),
                         nn.Flatten(), MaskedLinear(8 * 4 * 4, 10))


def _resnet20(seed=0):
    torch.manual_seed(seed)
    return build_model("resnet20", (3, 32, 32), 10)


def _random_binary(model, keep=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n, layer in masking.prunable_layers(model):
        m = torch.rand(layer.weight.shape, generator=g) < keep
        flat = m.view(-1)
        flat[0], flat[-1] = True, False  # every layer keeps some and prunes some
        out[n] = m
    return out


def _data(n=256, seed=0, shape=(1, 8, 8), classes=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)


def _train(model, opt, steps, x, y, batch=32, extra_loss=None, extra_opts=()):
    model.train()
    for i in range(steps):
        j = (i * batch) % len(y)
        xb, yb = x[j:j + batch], y[j:j + batch]
        loss = F.cross_entropy(model(xb), yb)
        if extra_loss is not None:
            loss = loss + extra_loss()
        for o in (opt, *extra_opts):
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in (opt, *extra_opts):
            o.step()
        masking.apply_masks_(model)


# ---------------------------------------------------------------- where masks live

@pytest.mark.parametrize("build", [_lenet, _resnet20], ids=["lenet300", "resnet20"])
def test_masks_on_conv_and_linear_weights_only(build):
    model = build()
    layers = masking.prunable_layers(model)
    convs_linears = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [n for n, _ in layers] == [n for n, _ in convs_linears]
    assert len(layers) == (22 if build is _resnet20 else 3)
    mask_names = {n for n, _ in model.named_parameters() if n.endswith(".mask")}
    assert mask_names == {f"{n}.mask" for n, _ in layers}
    for _, layer in layers:
        assert layer.mask.shape == layer.weight.shape
        assert bool((layer.mask == 1).all())
        assert not layer.mask.requires_grad
        assert layer.mode == "dense"
    # no mask on biases or norms
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            assert not hasattr(mod, "mask")
    # weight_parameters = everything but the masks
    masks = masking.mask_parameters(model)
    weights = masking.weight_parameters(model)
    assert len(masks) + len(weights) == len(list(model.parameters()))
    assert not {id(p) for p in masks} & {id(p) for p in weights}
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n_bias = sum(isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None for m in model.modules())
    assert len(weights) == len(layers) + n_bias + 2 * n_bn
    # the last prunable layer is the classifier
    assert layers[-1][1].weight.shape[0] == 10


# ---------------------------------------------------------------- modes

def test_dense_forward_is_plain_linear():
    torch.manual_seed(0)
    layer = MaskedLinear(7, 4)
    x = torch.randn(5, 7)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_soft_forward_equals_linear_with_masked_weight():
    torch.manual_seed(0)
    model = nn.Sequential(MaskedLinear(7, 4))
    masking.set_soft(model)
    layer = model[0]
    assert layer.mode == "soft" and layer.mask.requires_grad
    with torch.no_grad():
        layer.mask.copy_(torch.rand(4, 7))
    x = torch.randn(5, 7)
    out = model(x)
    assert torch.equal(out, F.linear(x, layer.weight * layer.mask, layer.bias))
    # differs from the unmasked forward
    assert not torch.allclose(out, F.linear(x, layer.weight, layer.bias))
    # gradient w.r.t. m is θ ⊙ ∂L/∂W_eff
    out.sum().backward()
    g_eff = x.sum(0).expand(4, 7)
    assert torch.allclose(layer.mask.grad, layer.weight.detach() * g_eff, atol=1e-6)


def test_soft_conv_forward_equals_conv_with_masked_weight():
    torch.manual_seed(0)
    model = nn.Sequential(MaskedConv2d(2, 3, kernel_size=3, padding=1))
    masking.set_soft(model)
    conv = model[0]
    with torch.no_grad():
        conv.mask.copy_(torch.rand_like(conv.mask))
    x = torch.randn(2, 2, 6, 6)
    assert torch.equal(model(x), F.conv2d(x, conv.weight * conv.mask, conv.bias, padding=1))


def test_clip_projection_keeps_mask_in_unit_interval():
    torch.manual_seed(0)
    model = _lenet()
    masking.set_soft(model, init=0.7)
    for _, layer in masking.prunable_layers(model):
        assert bool((layer.mask == 0.7).all())
    raw = {}
    with torch.no_grad():
        for n, layer in masking.prunable_layers(model):
            layer.mask.copy_(torch.randn_like(layer.mask) * 2)   # far outside [0,1]
            raw[n] = layer.mask.clone()
    masking.apply_masks_(model)
    for n, layer in masking.prunable_layers(model):
        m = layer.mask.detach()
        assert float(m.min()) == 0.0 and float(m.max()) == 1.0
        inside = (raw[n] >= 0) & (raw[n] <= 1)
        assert torch.equal(m[inside], raw[n][inside])
        assert bool((m[raw[n] < 0] == 0).all()) and bool((m[raw[n] > 1] == 1).all())


def test_sigmoid_mode_mask_value():
    model = _lenet()
    masking.set_soft(model, init=0.7, param="sigmoid")
    for _, layer in masking.prunable_layers(model):
        assert layer.mask_param == "sigmoid"
        assert torch.allclose(layer.mask, torch.full_like(layer.mask, math.log(0.7 / 0.3)))
        assert torch.allclose(layer.mask_value(), torch.full_like(layer.mask, 0.7), atol=1e-6)
        with torch.no_grad():
            layer.mask.copy_(torch.randn_like(layer.mask) * 5)
        raw = layer.mask.detach().clone()
        assert torch.equal(layer.mask_value(), torch.sigmoid(raw))
    masking.apply_masks_(model)  # no clipping of the raw parameter in sigmoid mode
    for _, layer in masking.prunable_layers(model):
        assert float(layer.mask.detach().max()) > 1.0 and float(layer.mask.detach().min()) < 0.0
    got = masking.get_masks(model)
    for n, layer in masking.prunable_layers(model):
        assert torch.equal(got[n], torch.sigmoid(layer.mask.detach()))


def test_sigmoid_init_clamped_away_from_0_and_1():
    model = _lenet()
    masking.set_soft(model, init=1.0, param="sigmoid")
    v = masking.get_masks(model)
    for m in v.values():
        assert torch.allclose(m, torch.full_like(m, 0.999), atol=1e-6)
    with pytest.raises(ValueError, match="mask_param"):
        masking.set_soft(model, param="tanh")


def test_set_binary_rejects_wrong_shape():
    model = _lenet()
    masks = {n: torch.ones(l.weight.shape) for n, l in masking.prunable_layers(model)}
    name = next(iter(masks))
    masks[name] = torch.ones(3, 3)
    with pytest.raises(ValueError, match=name):
        masking.set_binary(model, masks)


def test_set_dense_restores_all_ones():
    model = _lenet()
    masking.set_binary(model, _random_binary(model))
    masking.set_dense(model)
    for _, layer in masking.prunable_layers(model):
        assert layer.mode == "dense" and bool((layer.mask == 1).all()) and not layer.mask.requires_grad


# ---------------------------------------------------------------- thresholding

def test_threshold_masks_strictly_greater():
    m = {"a": torch.tensor([0.0, 0.49, 0.5, 0.51, 1.0]), "b": torch.tensor([[0.2, 0.8], [0.5, 0.9]])}
    out = masking.threshold_masks(m, 0.5)
    assert out["a"].dtype == torch.bool
    assert out["a"].tolist() == [False, False, False, True, True]
    assert out["b"].tolist() == [[False, True], [False, True]]


def _scores(seed=0):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(300 + 120 + 35, generator=g).float()   # distinct scores
    return {"l0": perm[:300].view(20, 15), "l1": perm[300:420].view(12, 10), "l2": perm[420:].view(5, 7)}


@pytest.mark.parametrize("r", [0.0, 0.1, 0.25, 0.5, 0.77, 1.0])
def test_topk_global_keeps_exact_count_of_largest(r):
    s = _scores()
    out = masking.topk_masks(s, r, "global", keep_every_layer=False)   # the floor has its own test
    n = sum(v.numel() for v in s.values())
    kept = sum(int(v.sum()) for v in out.values())
    assert kept == round(r * n)
    allv = torch.cat([s[k].flatten() for k in s])
    keep = torch.cat([out[k].flatten() for k in s])
    if 0 < kept < n:
        assert float(allv[keep].min()) > float(allv[~keep].max())
        assert float(allv[keep].min()) == float(allv.sort(descending=True).values[kept - 1])
    for k in s:
        assert out[k].shape == s[k].shape and out[k].dtype == torch.bool


@pytest.mark.parametrize("r", [0.1, 0.33, 0.5])
def test_topk_layer_scope_keeps_per_layer_count(r):
    s = _scores(1)
    out = masking.topk_masks(s, r, "layer")
    for k, v in s.items():
        kept = int(out[k].sum())
        assert kept == round(r * v.numel())
        assert float(v[out[k]].min()) > float(v[~out[k]].max())


def test_topk_allowed_excludes_entries():
    s = _scores(2)
    g = torch.Generator().manual_seed(3)
    allowed = {k: torch.rand(v.shape, generator=g) < 0.5 for k, v in s.items()}
    # make the largest scores disallowed, so a naive top-k would pick them
    for k, v in s.items():
        allowed[k][v >= 400] = False
    n = sum(v.numel() for v in s.values())
    pool = sum(int(a.sum()) for a in allowed.values())
    r = 0.2
    out = masking.topk_masks(s, r, "global", allowed=allowed)
    kept = sum(int(v.sum()) for v in out.values())
    assert kept == round(r * n) and kept < pool
    for k in s:
        assert not bool((out[k] & ~allowed[k]).any())
    allowed_scores = torch.cat([s[k][allowed[k]] for k in s])
    kept_scores = torch.cat([s[k][out[k]] for k in s])
    assert torch.equal(kept_scores.sort().values, allowed_scores.sort(descending=True).values[:kept].sort().values)
    # asking for more than the pool keeps exactly the pool
    out = masking.topk_masks(s, 0.9, "global", allowed=allowed)
    for k in s:
        assert torch.equal(out[k], allowed[k])
    # per-layer scope honours allowed too
    out = masking.topk_masks(s, 0.9, "layer", allowed=allowed)
    for k in s:
        assert torch.equal(out[k], allowed[k])


@pytest.mark.parametrize("r", [0.01, 0.1, 0.3, 0.5, 0.9])
def test_topk_ties_are_shared_in_proportion_across_layers(r):
    """All-equal scores (a saturated mask): each layer keeps its proportional share, within
    one entry, and the kept entries are spread over the layer's rows, not its first rows."""
    s = {"first": torch.ones(300, 64), "hidden": torch.ones(100, 300), "output": torch.ones(10, 100)}
    n = sum(v.numel() for v in s.values())
    out = masking.topk_masks(s, r, "global")
    k = round(r * n)
    assert sum(int(v.sum()) for v in out.values()) == k
    for name, v in s.items():
        assert abs(int(out[name].sum()) - k * v.numel() / n) <= 1, name
    kept_first = int(out["first"].sum())                  # spread over rows and columns, not the first rows
    assert int(out["first"].any(dim=1).sum()) >= 0.4 * min(300, kept_first)
    assert int(out["first"].any(dim=0).sum()) >= 0.4 * min(64, kept_first)
    # deterministic: the same scores give the same mask, and so does the per-layer scope
    again = masking.topk_masks(s, r, "global")
    assert all(torch.equal(out[n_], again[n_]) for n_ in s)
    per_layer = masking.topk_masks(s, r, "layer")
    for name, v in s.items():
        assert int(per_layer[name].sum()) == max(1, round(r * v.numel()))


def test_topk_ties_after_distinct_scores_keep_all_larger_ones():
    s = {"a": torch.tensor([3.0, 1.0, 1.0, 1.0]), "b": torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0, 0.5])}
    out = masking.topk_masks(s, 0.4, "global")              # k = 4: 3, 2, then two of the 1s
    assert bool(out["a"][0]) and bool(out["b"][4]) and not bool(out["b"][5])
    assert sum(int(v.sum()) for v in out.values()) == 4


def test_global_topk_never_empties_a_layer_unless_asked():
    """A global top-k whose largest scores all sit in some layers keeps the others'
    best entry (the count stays exact) and says which layers it refilled."""
    s = {"a": torch.full((50,), 5.0), "b": torch.linspace(0, 1, 40), "c": torch.full((30,), 4.0)}
    refilled: list = []
    out = masking.topk_masks(s, 0.25, "global", refilled=refilled)      # k = 30: a's 50 would take all
    assert refilled == ["b", "c"]
    assert [int(out[n].sum()) for n in s] == [28, 1, 1]
    assert bool(out["b"][-1])                                            # b's best entry (score 1.0)
    raw = masking.topk_masks(s, 0.25, "global", keep_every_layer=False)
    assert [int(raw[n].sum()) for n in s] == [30, 0, 0]
    # per-layer scope: a layer too small for its rounded share keeps one entry
    tiny = {"big": torch.rand(1000), "small": torch.rand(4)}
    refilled = []
    out = masking.topk_masks(tiny, 0.05, "layer", refilled=refilled)
    assert int(out["small"].sum()) == 1 and refilled == ["small"]
    # nothing requested: nothing kept, nothing refilled
    assert sum(int(v.sum()) for v in masking.topk_masks(s, 0.0, "global").values()) == 0


def test_threshold_keeps_each_layers_best_entry_when_all_fall_below_tau():
    m = {"a": torch.tensor([0.9, 0.2, 0.7]), "b": torch.tensor([0.1, 0.4, 0.3])}
    out, refilled = masking.ensure_every_layer(masking.threshold_masks(m, 0.5), m)
    assert out["a"].tolist() == [True, False, True] and out["b"].tolist() == [False, True, False]
    assert refilled == ["b"]
    # entries outside `allowed` (pruned in an earlier round) are never revived
    out, refilled = masking.ensure_every_layer(masking.threshold_masks(m, 0.5), m,
                                               allowed={"a": torch.ones(3, dtype=torch.bool),
                                                        "b": torch.tensor([True, False, False])})
    assert out["b"].tolist() == [True, False, False]


def test_topk_rejects_bad_arguments():
    s = _scores()
    with pytest.raises(ValueError, match="remaining"):
        masking.topk_masks(s, 1.5)
    with pytest.raises(ValueError, match="scope"):
        masking.topk_masks(s, 0.5, "channel")


# ---------------------------------------------------------------- statistics

def test_sparsity_report_matches_manual_counts():
    g = torch.Generator().manual_seed(0)
    masks = {"a": (torch.rand(30, 20, generator=g) < 0.3).float(),
             "b": (torch.rand(10, 3, 3, 3, generator=g) < 0.6).float()}
    rep = masking.sparsity_report(masks)
    ka, kb = int((masks["a"] != 0).sum()), int((masks["b"] != 0).sum())
    assert rep["layers"]["a"]["kept"] == ka and rep["layers"]["a"]["total"] == 600
    assert rep["layers"]["b"]["kept"] == kb and rep["layers"]["b"]["total"] == 270
    assert rep["layers"]["a"]["remaining"] == pytest.approx(ka / 600)
    assert rep["kept"] == ka + kb and rep["total"] == 870
    assert rep["remaining"] == pytest.approx((ka + kb) / 870)
    assert rep["sparsity"] == pytest.approx(1 - (ka + kb) / 870)
    # soft values count as kept when non-zero
    rep = masking.sparsity_report({"s": torch.tensor([0.0, 1e-6, 0.3, 0.0])})
    assert rep["kept"] == 2 and rep["remaining"] == 0.5


def test_dead_unit_fraction():
    m = torch.ones(4, 5)
    m[1] = 0
    m[3] = 0
    m[0, :4] = 0  # row 0 still has one entry, not dead
    assert masking.dead_unit_fraction(m) == 0.5
    conv = torch.ones(8, 2, 3, 3)
    conv[:2] = 0
    assert masking.dead_unit_fraction(conv) == 0.25
    assert masking.sparsity_report({"x": m})["layers"]["x"]["dead_units"] == 0.5


def test_mask_layer_stats():
    m = torch.tensor([0.0, 0.01, 0.04, 0.2, 0.5, 0.51, 0.7, 0.96, 0.99, 1.0])
    prev = torch.tensor([0.0, 0.9, 0.04, 0.6, 0.5, 0.51, 0.1, 0.96, 0.99, 1.0])
    rows = masking.mask_layer_stats({"layer": m.view(2, 5)}, 0.5, {"layer": prev.view(2, 5)})
    assert len(rows) == 1
    r = rows[0]
    assert r["layer"] == "layer" and r["numel"] == 10
    assert sum(r["hist"]) == 10 and len(r["hist"]) == HIST_BINS
    assert r["hist"][0] == 3          # 0, 0.01, 0.04 in [0, 0.05)
    assert r["hist"][-1] == 3         # 0.96, 0.99, 1.0 in [0.95, 1]
    assert r["mean"] == pytest.approx(float(m.mean()))
    assert r["frac_above"] == pytest.approx(0.5)    # 0.51, 0.7, 0.96, 0.99, 1.0
    # crossed τ: 0.01 (was 0.9 above), 0.2 (was 0.6 above), 0.7 (was 0.1 below)
    assert r["churn"] == pytest.approx(0.3)
    # near 0 or 1: 0, 0.01, 0.04, 0.96, 0.99, 1.0
    assert r["near_binary"] == pytest.approx(0.6)
    # rows: [0,.01,.04,.2,.5] none above τ -> dead; [.51,.7,.96,.99,1] alive
    assert r["dead_units"] == 0.5
    # no previous: no churn
    assert masking.mask_layer_stats({"layer": m}, 0.5)[0]["churn"] is None


def test_mask_layer_stats_histogram_on_larger_mask():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(37, 11, generator=g)
    r = masking.mask_layer_stats({"x": m}, 0.3)[0]
    assert sum(r["hist"]) == m.numel()
    expected = torch.histc(m, bins=HIST_BINS, min=0, max=1).long().tolist()
    assert r["hist"] == expected
    assert r["frac_above"] == pytest.approx(float((m > 0.3).float().mean()))


# ---------------------------------------------------------------- the key invariant

@pytest.mark.parametrize("build", [_lenet, _tinyconv], ids=["lenet300", "conv"])
@pytest.mark.parametrize("opt_name", ["sgd", "adam"])
def test_pruned_weights_stay_exactly_zero(build, opt_name):
    model = build()
    binary = _random_binary(model, keep=0.4)
    masking.set_binary(model, binary)
    masks_before = {n: l.mask.detach().clone() for n, l in masking.prunable_layers(model)}
    w0 = {n: l.weight.detach().clone() for n, l in masking.prunable_layers(model)}
    for n, layer in masking.prunable_layers(model):
        assert bool((layer.weight[~binary[n]] == 0.0).all())
        assert torch.equal(layer.mask, binary[n].float())
    params = masking.weight_parameters(model)
    if opt_name == "sgd":
        opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    else:
        opt = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4)
    x, y = _data()
    with torch.no_grad():
        loss0 = float(F.cross_entropy(model(x), y))
    _train(model, opt, 200, x, y)
    for n, layer in masking.prunable_layers(model):
        pruned = ~binary[n]
        w = layer.weight.detach()
        assert bool((w[pruned] == 0.0).all()), f"{n}: pruned weight drifted to {float(w[pruned].abs().max())}"
        kept = binary[n]
        changed = (w[kept] != w0[n][kept]).float().mean()
        assert float(changed) > 0.5, f"{n}: kept weights barely trained"
        assert torch.equal(layer.mask, masks_before[n])
        assert not layer.mask.requires_grad and layer.mask.grad is None
        assert layer.mode == "binary"
    with torch.no_grad():
        assert float(F.cross_entropy(model(x), y)) < loss0


# ---------------------------------------------------------------- later rounds never revive

def _soft_round(model, prev, param, steps=60):
    masking.set_soft(model, init=1.0, param=param, start=prev)
    reg = regularizers.get("log")
    lam = 1.0

    def reg_loss():
        total = sum(reg.fn(l.mask_value(), eps=0.01).sum() for _, l in masking.prunable_layers(model))
        return lam * total / sum(l.weight.numel() for _, l in masking.prunable_layers(model))

    opt = torch.optim.SGD(masking.weight_parameters(model), lr=0.01, momentum=0.9, weight_decay=5e-4)
    mopt = torch.optim.Adam(masking.mask_parameters(model), lr=0.05)
    x, y = _data(seed=1)
    _train(model, opt, steps, x, y, extra_loss=reg_loss, extra_opts=(mopt,))


def test_soft_start_from_binary_never_revives_pruned_entries():
    model = _lenet()
    prev = _random_binary(model, keep=0.5, seed=4)
    masking.set_binary(model, prev)
    x, y = _data()
    _train(model, torch.optim.SGD(masking.weight_parameters(model), lr=0.01), 5, x, y)
    _soft_round(model, prev, "clip")
    masks = masking.get_masks(model)
    moved = 0
    for n, layer in masking.prunable_layers(model):
        pruned = ~prev[n]
        assert bool((layer.mask.detach()[pruned] == 0.0).all())
        assert bool((layer.weight.detach()[pruned] == 0.0).all())
        assert bool((masks[n][pruned] == 0.0).all())
        assert float(layer.mask.detach().min()) >= 0.0 and float(layer.mask.detach().max()) <= 1.0
        moved += int((layer.mask.detach()[~pruned] < 1.0).sum())
    assert moved > 0, "mask training did not happen"
    # thresholding the new soft mask never keeps anything pruned before
    new = masking.threshold_masks(masks, 0.5)
    assert all(not bool((new[n] & ~prev[n]).any()) for n in new)
    assert masking.sparsity_report(masks)["kept"] <= masking.sparsity_report(prev)["kept"]


def test_soft_sigmoid_start_from_binary_keeps_pruned_weights_zero():
    model = _lenet()
    prev = _random_binary(model, keep=0.5, seed=5)
    masking.set_binary(model, prev)
    _soft_round(model, prev, "sigmoid", steps=30)
    for n, layer in masking.prunable_layers(model):
        pruned = ~prev[n]
        assert bool((layer.weight.detach()[pruned] == 0.0).all())
        assert bool((layer.mask.detach()[pruned] == -30.0).all())
        assert float(layer.mask_value().detach()[pruned].max()) < 1e-12
        assert bool((layer.effective_weight().detach()[pruned] == 0.0).all())


def test_set_soft_without_start_forgets_an_earlier_start():
    """Regression (fixed): set_soft(start=None) keeps the `_frozen_keep` left by
    an earlier set_soft(start=...), unless set_binary ran in between; a later soft
    phase then silently zeroes weights that were never pruned in it."""
    model = _lenet()
    prev = _random_binary(model, keep=0.5, seed=6)
    masking.set_soft(model, start=prev)
    masking.set_dense(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for _, layer in masking.prunable_layers(model):
            layer.weight.copy_(torch.randn_like(layer.weight))
    masking.set_soft(model)  # a fresh soft phase, nothing frozen
    masking.apply_masks_(model)
    for n, layer in masking.prunable_layers(model):
        assert bool((layer.mask == 1.0).all()), f"{n}: stale frozen entries from an earlier start"
        assert bool((layer.weight != 0).all()), f"{n}: weights zeroed by a stale frozen keep"


# ---------------------------------------------------------------- rewind state

def test_weights_state_round_trip_bit_for_bit():
    model = _resnet20()
    model.train()
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        model(torch.randn(2, 3, 32, 32, generator=g))
    state = masking.weights_state(model)
    assert not any(k.endswith(".mask") for k in state)
    assert "stem.1.running_mean" in state and "stem.1.num_batches_tracked" in state
    assert int(state["stem.1.num_batches_tracked"]) == 2
    assert float(state["stem.1.running_mean"].abs().sum()) > 0
    expected = {k: v.clone() for k, v in state.items()}
    # move everything: more train-mode forwards, perturbed weights, a binary mask
    for _ in range(2):
        model(torch.randn(2, 3, 32, 32, generator=g))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    binary = _random_binary(model, keep=0.5)
    masking.set_binary(model, binary)
    cur = model.state_dict()
    assert not torch.equal(cur["stem.1.running_mean"], expected["stem.1.running_mean"])
    assert int(cur["stem.1.num_batches_tracked"]) == 4
    # the saved copy is detached from the model
    for k in state:
        assert torch.equal(state[k], expected[k])
    masking.load_weights_state(model, state)
    cur = model.state_dict()
    for k, v in expected.items():
        assert cur[k].dtype == v.dtype
        assert torch.equal(cur[k], v), k
    # masks are left untouched
    for n, layer in masking.prunable_layers(model):
        assert torch.equal(layer.mask, binary[n].float())


def test_load_weights_state_refuses_incomplete_state():
    model = _lenet()
    state = masking.weights_state(model)
    state.pop("classifier.0.bias")
    with pytest.raises(KeyError, match="classifier.0.bias"):
        masking.load_weights_state(model, state)
