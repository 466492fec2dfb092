"""Every registered model builds, runs forward/backward in dense and soft mode,
masks exactly its conv/linear weights and ends with its classifier."""

import pytest
import torch
from torch import nn

from engine import masking
from engine.models import MODELS, build_model, input_error, num_outputs

NAMES = MODELS.names()


def _example(name):
    spec = MODELS.get(name)
    return spec.example_shape, spec.example_classes


def _build(name, seed=0):
    torch.manual_seed(seed)
    shape, classes = _example(name)
    return build_model(name, shape, classes)


def _batch(name, n=2):
    shape, _ = _example(name)
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", NAMES)
def test_forward_backward_dense(name):
    model = _build(name)
    _, classes = _example(name)
    out = model(_batch(name))
    assert out.shape == (2, num_outputs(name, classes))
    assert torch.isfinite(out).all()
    out.sum().backward()
    for p in masking.weight_parameters(model):
        assert p.grad is not None and torch.isfinite(p.grad).all()
    for m in masking.mask_parameters(model):
        assert not m.requires_grad and m.grad is None


@pytest.mark.parametrize("name", NAMES)
def test_soft_mode_gives_mask_gradients(name):
    model = _build(name)
    masking.set_soft(model)
    model(_batch(name)).sum().backward()
    for m in masking.mask_parameters(model):
        assert m.grad is not None and torch.isfinite(m.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_masks_cover_exactly_conv_and_linear_weights(name):
    model = _build(name)
    convs_linears = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert convs_linears
    for m in convs_linears:
        assert isinstance(m, masking._Masked)
        assert m.mask.shape == m.weight.shape
    assert len(masking.prunable_layers(model)) == len(convs_linears)
    for pname, _ in model.named_parameters():
        if pname.endswith("mask"):
            owner = model.get_submodule(pname.rpartition(".")[0])
            assert pname.endswith(".mask") and isinstance(owner, masking._Masked), pname
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            assert not hasattr(m, "mask")


@pytest.mark.parametrize("name", NAMES)
def test_last_prunable_layer_is_classifier(name):
    model = _build(name)
    _, classes = _example(name)
    _, last = masking.prunable_layers(model)[-1]
    assert isinstance(last, nn.Linear)
    assert last.out_features == num_outputs(name, classes)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_weights(name):
    a, b = _build(name, seed=0).state_dict(), _build(name, seed=0).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = _build(name, seed=1).state_dict()
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_logreg_outputs():
    torch.manual_seed(0)
    binary = build_model("logreg", (1, 28, 28), 2)
    multi = build_model("logreg", (3, 8, 8), 5)
    assert binary(torch.randn(2, 1, 28, 28)).shape == (2, 1)
    assert multi(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    assert len(masking.prunable_layers(multi)) == 1


def test_lenet_two_classes_has_two_logits():
    model = build_model("lenet300", (1, 28, 28), 2)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 2)


@pytest.mark.parametrize("name", ["conv2", "conv4", "conv6"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_frankle_convs_on_small_inputs(name, shape):
    model = build_model(name, shape, 10)
    assert model(torch.randn(2, *shape)).shape == (2, 10)


def test_input_size_checks():
    msg = input_error("resnet20", (1, 8, 8))
    assert msg is not None and "resnet20" in msg and "32" in msg
    assert input_error("lenet300", (1, 8, 8)) is None
    assert input_error("conv6", (1, 8, 8)) is None
    assert input_error("conv2", (1, 7, 7)) is not None
    with pytest.raises(ValueError, match="resnet20"):
        build_model("resnet20", (1, 8, 8), 10)
    with pytest.raises(KeyError):
        input_error("nope", (3, 32, 32))


def _prunable_count(model):
    return sum(layer.mask.numel() for _, layer in masking.prunable_layers(model))


# (prunable weights, all parameters) of every model at its example input, pinned exactly.
# Independent arithmetic where it is short; the rest match the literature's sizes
# (ResNet-56 0.85M, VGG-16 14.7M, WRN-16-8 11.0M, ResNet-18 with a 3x3 stem 11.2M).
_CONV = 3 * 64 * 9 + 64 * 64 * 9                                      # Conv-2's two 3x3 convs
_R20 = (3 * 16 + 6 * 16 * 16 + 32 * 16 + 5 * 32 * 32 + 64 * 32 + 5 * 64 * 64) * 9 \
    + 16 * 32 + 32 * 64 + 64 * 10                                        # 3x3 convs, 1x1 shortcuts, fc
PINNED_COUNTS = {
    "logreg": (784, 784 + 1),
    "lenet300": (784 * 300 + 300 * 100 + 100 * 10, 784 * 300 + 300 * 100 + 100 * 10 + 300 + 100 + 10),
    "conv2": (_CONV + 16 * 16 * 64 * 256 + 256 * 256 + 256 * 10, 4_301_642),
    "conv4": (2_425_024, 2_425_930),
    "conv6": (2_261_184, 2_262_602),
    "resnet20": (_R20, _R20 + 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64 + 32 + 64) + 10),
    "resnet32": (464_432, 466_906),
    "resnet56": (851_504, 855_770),
    "vgg16": (14_715_584, 14_724_042),
    "wrn16_8": (10_954_160, 10_961_370),
    "resnet18": (11_261_632, 11_271_432),
}


@pytest.mark.parametrize("name", sorted(PINNED_COUNTS))
def test_parameter_counts(name):
    spec = MODELS.get(name)
    model = build_model(name, spec.example_shape, spec.example_classes)
    total = sum(p.numel() for k, p in model.named_parameters() if not k.endswith(".mask"))
    assert (_prunable_count(model), total) == PINNED_COUNTS[name]


def test_every_model_has_pinned_counts():
    assert set(MODELS.names()) == set(PINNED_COUNTS)


def test_specs_are_consistent():
    for name, spec in MODELS.items():
        assert spec.name == name and spec.description
        assert input_error(name, spec.example_shape) is None
