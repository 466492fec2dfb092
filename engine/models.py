"""Model zoo: every network here is built from `MaskedConv2d` / `MaskedLinear`
(engine.masking), so every conv and linear weight is prunable and carries a
mask. BatchNorm layers stay plain and are never pruned.

Each model registers a `ModelSpec` in `MODELS`. `build_model(name, in_shape,
num_classes)` builds one for inputs of shape (C, H, W); `input_error` checks
the input size cheaply (without building anything) for config validation.

Conventions every model follows:
- the classifier is defined last, so it is the last masked module in
  `named_modules()` order (IMP treats the last prunable layer as the output);
- each model initialises itself in its constructor: conv/linear weights
  Kaiming-normal (fan_in, ReLU gain), biases zero, BatchNorm weight 1 / bias 0;
  deterministic given `torch.manual_seed`;
- any number of input channels C is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from torch import nn

from engine.masking import MaskedConv2d, MaskedLinear, _Masked
from engine.registry import Registry

Shape = tuple[int, int, int]

MODELS = Registry("model")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder, the input sizes it accepts (H and W
    both in [min_hw, max_hw]; max_hw None = no upper bound) and an example
    input shape / class count (used by the tests and the UI)."""

    name: str
    build: Callable[[Shape, int], nn.Module]
    min_hw: int
    max_hw: int | None
    description: str
    example_shape: Shape
    example_classes: int


# ---------------------------------------------------------------- public API

def input_error(name: str, in_shape: Sequence[int]) -> str | None:
    """A human message when model `name` cannot take inputs of shape (C, H, W),
    else None. Cheap: never builds the model. Unknown names raise KeyError."""
    spec: ModelSpec = MODELS.get(name)
    if len(in_shape) != 3 or any(int(d) < 1 for d in in_shape):
        return f"model {name!r} needs a (C, H, W) input shape with positive sizes; dataset gives {tuple(in_shape)}"
    c, h, w = (int(d) for d in in_shape)
    given = f"dataset gives {c}×{h}×{w}"
    if min(h, w) < spec.min_hw:
        style = " (CIFAR-style)" if spec.min_hw >= 32 else ""
        return f"model {name!r} needs inputs of at least {spec.min_hw}×{spec.min_hw}{style}; {given}"
    if spec.max_hw is not None and max(h, w) > spec.max_hw:
        return f"model {name!r} needs inputs of at most {spec.max_hw}×{spec.max_hw}; {given}"
    return None


def build_model(name: str, in_shape: Sequence[int], num_classes: int) -> nn.Module:
    """Build model `name` for inputs of shape (C, H, W) and `num_classes` classes.
    Raises ValueError when the input size or class count does not fit."""
    err = input_error(name, in_shape)
    if err:
        raise ValueError(err)
    if num_classes < 2:
        raise ValueError(f"model {name!r} needs at least 2 classes, got {num_classes}")
    shape = tuple(int(d) for d in in_shape)
    return MODELS.get(name).build(shape, int(num_classes))


def num_outputs(name: str, num_classes: int) -> int:
    """Width of the model's output: 1 logit for binary logistic regression, else num_classes."""
    return 1 if name == "logreg" and num_classes == 2 else num_classes


# ---------------------------------------------------------------- helpers

def _init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_in, ReLU) conv/linear weights, zero biases, BN = identity.
    Masks are untouched (they stay all ones)."""
    for m in model.modules():
        if isinstance(m, _Masked):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> MaskedConv2d:
    return MaskedConv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=bias)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> MaskedConv2d:
    return MaskedConv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers of the given widths with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        if i:
            layers.append(nn.ReLU(inplace=True))
        layers.append(MaskedLinear(a, b))
    return nn.Sequential(*layers)


# ---------------------------------------------------------------- fully connected

class MLP(nn.Module):
    """Flatten, then fully connected layers (ReLU between them)."""

    def __init__(self, in_shape: Shape, hidden: Sequence[int], num_out: int):
        super().__init__()
        c, h, w = in_shape
        self.classifier = _mlp([c * h * w, *hidden, num_out])
        _init_weights(self)

    def forward(self, x):
        return self.classifier(x.flatten(1))


def logreg(in_shape: Shape, num_classes: int) -> nn.Module:
    """Logistic regression: one linear layer on the flattened input. With two
    classes it has a single logit (binary, trained with BCE by the caller)."""
    return MLP(in_shape, [], 1 if num_classes == 2 else num_classes)


def lenet300(in_shape: Shape, num_classes: int) -> nn.Module:
    """LeNet-300-100 (LeCun et al., 1998; Frankle & Carbin, 2019)."""
    return MLP(in_shape, [300, 100], num_classes)


# ---------------------------------------------------------------- Frankle & Carbin convs

class FrankleConv(nn.Module):
    """Conv-2/4/6 of Frankle & Carbin (2019, "The Lottery Ticket Hypothesis"):
    `blocks` blocks of two 3x3 convs (pad 1, ReLU) and a 2x2 max pool, with
    widths 64, 128, 256; then FC 256, 256, classes."""

    WIDTHS = (64, 128, 256)

    def __init__(self, in_shape: Shape, num_classes: int, blocks: int):
        super().__init__()
        c, h, w = in_shape
        layers: list[nn.Module] = []
        for width in self.WIDTHS[:blocks]:
            layers += [_conv3x3(c, width, bias=True), nn.ReLU(inplace=True),
                       _conv3x3(width, width, bias=True), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c, h, w = width, h // 2, w // 2
        self.features = nn.Sequential(*layers)
        self.classifier = _mlp([c * h * w, 256, 256, num_classes])
        _init_weights(self)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def frankle_conv(blocks: int) -> Callable[[Shape, int], nn.Module]:
    """Conv-(2 * blocks) of Frankle & Carbin (2019)."""

    def build(in_shape: Shape, num_classes: int) -> nn.Module:
        return FrankleConv(in_shape, num_classes, blocks)

    return build


# ---------------------------------------------------------------- ResNets

class BasicBlock(nn.Module):
    """Post-activation basic block (He et al., 2016): conv-BN-ReLU-conv-BN plus
    shortcut, then ReLU. The shortcut is a 1x1 conv + BN (option B) when the
    shape changes, else the identity."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """3x3 stem conv (stride 1, no max pool), stages of basic blocks, global
    average pool, linear classifier. Covers the CIFAR ResNets and ResNet-18."""

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int],
                 strides: Sequence[int], blocks: int):
        super().__init__()
        self.stem = nn.Sequential(_conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for width, stride in zip(widths, strides):
            stage = [BasicBlock(cin, width, stride)] + [BasicBlock(width, width, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = MaskedLinear(cin, num_classes)
        _init_weights(self)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def cifar_resnet(depth: int) -> Callable[[Shape, int], nn.Module]:
    """ResNet-`depth` for CIFAR (He et al., 2016, §4.2): widths 16/32/64,
    n = (depth - 2) / 6 basic blocks per stage."""
    n = (depth - 2) // 6

    def build(in_shape: Shape, num_classes: int) -> nn.Module:
        return ResNet(in_shape[0], num_classes, (16, 32, 64), (1, 2, 2), n)

    return build


def resnet18(in_shape: Shape, num_classes: int) -> nn.Module:
    """ResNet-18 (He et al., 2016) adapted to 64x64 Tiny ImageNet: 3x3 stride-1
    stem, no max pool, stages 64/128/256/512 of 2 basic blocks."""
    return ResNet(in_shape[0], num_classes, (64, 128, 256, 512), (1, 2, 2, 2), 2)


# ---------------------------------------------------------------- VGG

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(nn.Module):
    """CIFAR VGG with BatchNorm (Simonyan & Zisserman, 2015, as in the lottery
    ticket papers): 3x3 conv-BN-ReLU layers and max pools per `cfg`, average
    pool to 1x1, then a single linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, cfg: Sequence[int | str]):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [_conv3x3(c, int(v)), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = MaskedLinear(c, num_classes)
        _init_weights(self)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def vgg16(in_shape: Shape, num_classes: int) -> nn.Module:
    """VGG-16 with BatchNorm for CIFAR."""
    return VGG(in_shape[0], num_classes, VGG16_CFG)


# ---------------------------------------------------------------- Wide ResNet

class WideBlock(nn.Module):
    """Pre-activation wide basic block (Zagoruyko & Komodakis, 2016), dropout 0:
    BN-ReLU-conv-BN-ReLU-conv; a 1x1 conv shortcut on the pre-activated input
    when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.shortcut = _conv1x1(cin, cout, stride) if stride != 1 or cin != cout else None
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        a = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(a))))
        return out + (x if self.shortcut is None else self.shortcut(a))


class WideResNet(nn.Module):
    """WRN-depth-k for CIFAR (Zagoruyko & Komodakis, 2016): 3x3 stem conv with
    16 channels, three stages of (depth - 4) / 6 wide blocks with widths
    16k/32k/64k, final BN-ReLU, global average pool, linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, depth: int, k: int):
        super().__init__()
        n = (depth - 4) // 6
        self.stem = _conv3x3(in_channels, 16)
        stages, cin = [], 16
        for width, stride in zip((16 * k, 32 * k, 64 * k), (1, 2, 2)):
            stages.append(nn.Sequential(*[WideBlock(cin if i == 0 else width, width, stride if i == 0 else 1)
                                          for i in range(n)]))
            cin = width
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = MaskedLinear(cin, num_classes)
        _init_weights(self)

    def forward(self, x):
        out = self.relu(self.bn(self.stages(self.stem(x))))
        return self.fc(self.pool(out).flatten(1))


def wrn16_8(in_shape: Shape, num_classes: int) -> nn.Module:
    """WideResNet-16-8 for CIFAR."""
    return WideResNet(in_shape[0], num_classes, depth=16, k=8)


# ---------------------------------------------------------------- registry

def _register(name: str, build: Callable[[Shape, int], nn.Module], min_hw: int, description: str,
              example_shape: Shape = (3, 32, 32), example_classes: int = 10) -> None:
    MODELS.register(name, ModelSpec(name, build, min_hw, None, description, example_shape, example_classes))


_register("logreg", logreg, 1, "Logistic regression (one logit for 2 classes)", (1, 28, 28), 2)
_register("lenet300", lenet300, 1, "LeNet-300-100 fully connected (LeCun et al., 1998)", (1, 28, 28), 10)
_register("conv2", frankle_conv(1), 8, "Conv-2 (Frankle & Carbin, 2019)")
_register("conv4", frankle_conv(2), 8, "Conv-4 (Frankle & Carbin, 2019)")
_register("conv6", frankle_conv(3), 8, "Conv-6 (Frankle & Carbin, 2019)")
_register("resnet20", cifar_resnet(20), 32, "CIFAR ResNet-20 (He et al., 2016)")
_register("resnet32", cifar_resnet(32), 32, "CIFAR ResNet-32 (He et al., 2016)")
_register("resnet56", cifar_resnet(56), 32, "CIFAR ResNet-56 (He et al., 2016)")
_register("vgg16", vgg16, 32, "VGG-16 with BatchNorm for CIFAR (Simonyan & Zisserman, 2015)")
_register("wrn16_8", wrn16_8, 32, "WideResNet-16-8 (Zagoruyko & Komodakis, 2016)")
_register("resnet18", resnet18, 32, "ResNet-18 for 64x64 Tiny ImageNet (He et al., 2016)", (3, 64, 64), 200)
