"""Masks on prunable tensors: conv and linear weights only (never biases or norms).

Every prunable layer is a `MaskedLinear` or `MaskedConv2d`. Each carries one
mask parameter with the weight's shape and is in one of three modes:

- ``dense``  : the forward pass uses θ; the mask is all ones and frozen.
- ``soft``   : the forward pass uses m⊙θ with m trainable. m is kept in [0,1]
               by projection after each step (``clip``, the default) or by a
               reparameterisation m = sigmoid(s) (``sigmoid``).
- ``binary`` : m ∈ {0,1} is frozen. Pruned weights are set to exactly zero when
               the mask is applied and again after every optimizer step
               (`apply_masks_`), so the forward pass can use θ directly and
               retraining runs at dense speed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HIST_BINS = 20  # fixed bins of m on [0, 1] for the recorded histograms


class _Masked:
    """Mixin for the two masked layer types; state is (mode, mask_param, mask)."""

    mode: str
    mask_param: str

    def _init_mask(self) -> None:
        self.mask = nn.Parameter(torch.ones_like(self.weight), requires_grad=False)
        self.mode = "dense"
        self.mask_param = "clip"
        self.beta = 1.0  # temperature of the sigmoid mask, m = sigmoid(β·s); raised by continuous sparsification
        # a constant factor on the masked weight (soft and binary modes): continuous sparsification's
        # 1/sigmoid(s0), so its network starts at the dense one's scale; 1 for every other method
        self.mask_scale = 1.0

    def mask_value(self) -> torch.Tensor:
        """The effective mask m in [0,1] (differentiable in soft mode)."""
        if self.mode == "soft" and self.mask_param == "sigmoid":
            return torch.sigmoid(self.mask if self.beta == 1.0 else self.beta * self.mask)
        return self.mask

    def effective_weight(self) -> torch.Tensor:
        if self.mode == "soft":
            m = self.mask_value()
            return self.weight * (m if self.mask_scale == 1.0 else m * self.mask_scale)
        return self.weight if self.mask_scale == 1.0 else self.weight * self.mask_scale


class MaskedLinear(_Masked, nn.Linear):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x):
        return F.linear(x, self.effective_weight(), self.bias)


class MaskedConv2d(_Masked, nn.Conv2d):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_mask()

    def forward(self, x):
        return self._conv_forward(x, self.effective_weight(), self.bias)


def prunable_layers(model: nn.Module) -> list[tuple[str, _Masked]]:
    """(name, layer) for every masked layer, in registration order.
    Models register their classifier last, so the last entry is the output layer."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _Masked)]


def mask_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [layer.mask for _, layer in prunable_layers(model)]


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter except the masks (weights, biases, norms)."""
    masks = {id(p) for p in mask_parameters(model)}
    return [p for p in model.parameters() if id(p) not in masks]


def weights_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of all weights and buffers, masks excluded: what a rewind restores."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith(".mask")}


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a weights state (names, dtypes, shapes and bytes): what a rewind checkpoint held when saved."""
    import hashlib
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_weights_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Restore weights and buffers bit for bit; masks are left untouched."""
    own = model.state_dict()
    missing = [k for k in own if not k.endswith(".mask") and k not in state]
    if missing:
        raise KeyError(f"rewind state lacks {missing[:3]}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


# ---------------------------------------------------------------- modes

def set_dense(model: nn.Module) -> None:
    for _, layer in prunable_layers(model):
        layer.mode = "dense"
        layer.beta = 1.0
        layer.mask.requires_grad_(False)
        with torch.no_grad():
            layer.mask.fill_(1.0)


def set_soft(model: nn.Module, init: float = 1.0, param: str = "clip",
             start: dict[str, torch.Tensor] | None = None) -> None:
    """Make masks trainable, starting at `init` (or at a previous binary mask:
    entries pruned there start, and stay, at 0 so a later round never revives them)."""
    if param not in ("clip", "sigmoid"):
        raise ValueError(f"mask_param must be 'clip' or 'sigmoid', got {param!r}")
    for _, layer in prunable_layers(model):
        layer.mode = "soft"
        layer.mask_param = param
        layer.beta = 1.0
        value = torch.full_like(layer.weight, float(init))
        if param == "sigmoid":
            p = min(max(float(init), 1e-3), 1 - 1e-3)  # sigmoid never reaches 0 or 1
            value.fill_(math.log(p / (1 - p)))
        with torch.no_grad():
            layer.mask.copy_(value)
        layer.mask.requires_grad_(True)
        layer._frozen_keep = None
    if start is not None:
        _freeze_pruned(model, start)


def _freeze_pruned(model: nn.Module, binary: dict[str, torch.Tensor]) -> None:
    # Entries already pruned get a zero mask and a zero weight; apply_masks_
    # puts them back to zero after every step, so they never revive.
    for name, layer in prunable_layers(model):
        keep = binary[name].to(layer.weight.device, torch.bool)
        with torch.no_grad():
            layer.weight.mul_(keep)
            if layer.mask_param == "sigmoid":
                layer.mask.masked_fill_(~keep, -30.0)
            else:
                layer.mask.mul_(keep)
        layer._frozen_keep = keep


def set_binary(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Fix binary masks and zero the pruned weights."""
    for name, layer in prunable_layers(model):
        m = masks[name].to(device=layer.weight.device)
        if m.shape != layer.weight.shape:
            raise ValueError(f"mask for {name} has shape {tuple(m.shape)}, weight {tuple(layer.weight.shape)}")
        layer.mode = "binary"
        layer.mask_param = "clip"
        layer.beta = 1.0
        layer.mask.requires_grad_(False)
        with torch.no_grad():
            layer.mask.copy_(m.to(layer.mask.dtype) != 0)
            layer.weight.mul_(layer.mask)
        layer._frozen_keep = None


@torch.no_grad()
def apply_masks_(model: nn.Module, layers: list[tuple[str, _Masked]] | None = None) -> None:
    """Call after every optimizer step: keeps pruned weights at exactly zero
    (binary mode), projects m to [0,1] (soft, clip) and keeps frozen entries at 0.
    `layers` (from prunable_layers) spares the module walk in a hot loop. Each
    operation runs on all layers at once (torch._foreach_*): one kernel launch where
    a per-layer loop made one per layer (21 on ResNet-20, every step)."""
    layers = [layer for _, layer in (layers if layers is not None else prunable_layers(model))]
    binary = [layer for layer in layers if layer.mode == "binary"]
    if binary:
        torch._foreach_mul_([layer.weight for layer in binary], [layer.mask for layer in binary])
    clip = [layer.mask for layer in layers if layer.mode == "soft" and layer.mask_param == "clip"]
    if clip and clip[0].device.type == "cpu":
        for m in clip:      # one pass per mask; foreach would make two (min, then max)
            m.clamp_(0.0, 1.0)
    elif clip:              # a GPU: two launches for all layers instead of one per layer
        torch._foreach_clamp_min_(clip, 0.0)
        torch._foreach_clamp_max_(clip, 1.0)
    frozen = [layer for layer in layers if layer.mode == "soft" and getattr(layer, "_frozen_keep", None) is not None]
    if frozen:
        keeps = [layer._frozen_keep for layer in frozen]
        torch._foreach_mul_([layer.weight for layer in frozen], keeps)
        for layer, keep in zip(frozen, keeps):
            if layer.mask_param == "clip":
                layer.mask.mul_(keep)
            else:
                layer.mask.masked_fill_(~keep, -30.0)


def set_mask_scale(model: nn.Module, scale: float) -> None:
    for _, layer in prunable_layers(model):
        layer.mask_scale = float(scale)


@torch.no_grad()
def fold_mask_scale(model: nn.Module) -> None:
    """θ ← scale·θ and scale ← 1: the same function, as a plain network (for the saved model)."""
    for _, layer in prunable_layers(model):
        if layer.mask_scale != 1.0:
            layer.weight.mul_(layer.mask_scale)
            layer.mask_scale = 1.0


def get_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Effective mask values per layer (detached, float32, on the CPU)."""
    with torch.no_grad():
        return {n: layer.mask_value().detach().float().cpu().clone() for n, layer in prunable_layers(model)}


# ---------------------------------------------------------------- thresholding

def threshold_masks(masks: dict[str, torch.Tensor], tau: float) -> dict[str, torch.Tensor]:
    """Binary mask m > τ (callers add `ensure_every_layer` so no layer ends empty)."""
    return {n: m > tau for n, m in masks.items()}


# Ties. Saturated masks put many entries at exactly 1 (or 0), so ties at the cut are
# common. They are broken by a fixed order: inside each layer a seeded permutation
# (seed 0) ranks the entries, and an entry's tie key is its rank divided by the layer's
# size. So equal scores are shared between layers in proportion to their sizes (within
# one entry) and spread over each layer's rows and columns, never "the first k" (which
# empties whole layers or units). The result depends only on the scores and shapes.

def _tie_keys(flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    keys = {}
    for n, v in flat.items():
        size = v.numel()
        rank = torch.empty(size, dtype=torch.float64)
        rank[torch.randperm(size, generator=torch.Generator().manual_seed(0))] = \
            torch.arange(size, dtype=torch.float64)
        keys[n] = (rank + 0.5) / size
    return keys


def _ranked(scores: torch.Tensor, ties: torch.Tensor) -> torch.Tensor:
    """Indices by descending score, ties by ascending tie key, then by position."""
    by_tie = torch.argsort(ties, stable=True)
    return by_tie[torch.argsort(-scores[by_tie], stable=True)]


def _flat_scores(scores, allowed):
    flat = {n: scores[n].detach().float().flatten().cpu() for n in scores}
    if allowed is not None:  # already pruned: never kept
        flat = {n: torch.where(allowed[n].flatten().cpu().bool(), flat[n], torch.tensor(-math.inf))
                for n in flat}
    return flat


def topk_masks(scores: dict[str, torch.Tensor], remaining: float, scope: str = "global",
               allowed: dict[str, torch.Tensor] | None = None, keep_every_layer: bool = True,
               refilled: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Keep the `remaining` fraction of entries with the largest scores, across all
    layers (``global``) or per layer (``layer``); exactly that many (ties: see above).
    Entries outside `allowed` (already pruned) are never kept.

    Unless `keep_every_layer` is False, a layer that would end with no entry keeps its
    best one (taken from the same budget, so the count stays exact while it covers one
    entry per layer); its name is appended to `refilled`."""
    if not 0.0 <= remaining <= 1.0:
        raise ValueError(f"remaining must be in [0,1], got {remaining}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    names = list(scores)
    flat = _flat_scores(scores, allowed)
    ties = _tie_keys(flat)
    pools = {n: int(torch.isfinite(flat[n]).sum()) for n in names}
    out = {}
    if scope == "global":
        allv = torch.cat([flat[n] for n in names])
        k = min(int(round(remaining * allv.numel())), sum(pools.values()))
        order = _ranked(allv, torch.cat([ties[n] for n in names]))
        keep = torch.zeros_like(allv, dtype=torch.bool)
        keep[order[:k]] = True
        sizes = [flat[n].numel() for n in names]
        empty = [n for n, part in zip(names, keep.split(sizes)) if not part.any() and pools[n] > 0]
        if empty and k > 0 and keep_every_layer:
            # top-k under "every layer keeps ≥ 1": each layer's best entry, then the best of the rest
            pos = torch.empty_like(order)
            pos[order] = torch.arange(order.numel())
            best, off = [], 0
            for n, size in zip(names, sizes):
                if pools[n] > 0:
                    best.append(off + int(torch.argmin(pos[off:off + size])))
                off += size
            keep.zero_()
            keep[best] = True
            rest = order[~keep[order]][: max(0, k - len(best))]
            keep[rest] = True
            if refilled is not None:
                refilled.extend(empty)
        for n, part in zip(names, keep.split(sizes)):
            out[n] = part.view_as(scores[n])
    else:
        for n in names:
            v = flat[n]
            k = min(int(round(remaining * v.numel())), pools[n])
            if k == 0 and remaining > 0 and pools[n] > 0 and keep_every_layer:
                k = 1
                if refilled is not None:
                    refilled.append(n)
            keep = torch.zeros_like(v, dtype=torch.bool)
            keep[_ranked(v, ties[n])[:k]] = True
            out[n] = keep.view_as(scores[n])
    return out


def ensure_every_layer(binary: dict[str, torch.Tensor], scores: dict[str, torch.Tensor],
                       allowed: dict[str, torch.Tensor] | None = None) -> tuple[dict, list[str]]:
    """A layer left with no kept entry (e.g. every m ≤ τ) keeps its best-scored entry among
    `allowed`, so a threshold never disconnects the network. Returns (masks, refilled layers)."""
    flat = _flat_scores(scores, allowed)
    out, refilled = dict(binary), []
    for n, b in binary.items():
        if not b.any() and bool(torch.isfinite(flat[n]).any()):
            keep = torch.zeros(b.numel(), dtype=torch.bool)
            keep[_ranked(flat[n], _tie_keys({n: flat[n]})[n])[0]] = True
            out[n] = keep.view(b.shape).to(b.device)
            refilled.append(n)
    return out, refilled


# ---------------------------------------------------------------- statistics

def sparsity_report(masks: dict[str, torch.Tensor]) -> dict:
    """Measured from the masks: kept/total per layer and globally (a mask entry
    counts as kept when it is non-zero)."""
    layers = {}
    kept_all = total_all = 0
    for n, m in masks.items():
        kept = int((m != 0).sum())
        total = m.numel()
        layers[n] = {"kept": kept, "total": total, "remaining": kept / total,
                     "dead_units": dead_unit_fraction(m)}
        kept_all += kept
        total_all += total
    rem = kept_all / total_all if total_all else 1.0
    return {"kept": kept_all, "total": total_all, "remaining": rem, "sparsity": 1 - rem, "layers": layers}


def dead_unit_fraction(mask: torch.Tensor) -> float:
    """Fraction of output units (rows / output channels) whose whole mask is zero."""
    rows = (mask != 0).reshape(mask.shape[0], -1).any(dim=1)
    return float(1 - rows.float().mean())


def mask_layer_stats(soft: dict[str, torch.Tensor], tau: float,
                     previous: dict[str, torch.Tensor] | None = None) -> list[dict]:
    """Per-layer statistics of a (soft or binary) mask, as DESIGN §5 lists:
    mean of m, fraction above τ, histogram on [0,1], churn across τ since the
    previous snapshot, the fraction near 0 or 1 (how binary the mask is), dead units."""
    rows = []
    for n, m in soft.items():
        m = m.float()
        above = m > tau
        hist = torch.histc(m.clamp(0, 1), bins=HIST_BINS, min=0.0, max=1.0)
        churn = None
        if previous is not None and n in previous:
            churn = float((above != (previous[n].float() > tau)).float().mean())
        rows.append({
            "layer": n,
            "numel": m.numel(),
            "mean": float(m.mean()),
            "frac_above": float(above.float().mean()),
            "near_binary": float(((m < 0.05) | (m > 0.95)).float().mean()),
            "churn": churn,
            "dead_units": dead_unit_fraction(above),
            "hist": [int(x) for x in hist.tolist()],
        })
    return rows
