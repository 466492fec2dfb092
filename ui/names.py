"""Names people understand: runs by what they are ("log mask λ=2", "IMP 7×20%"),
layers by their shape ("fc1 784→300", "conv1 3→16 3×3"), snapshots by when they
were taken ("round 1 · search · epoch 3"). No Streamlit here.

Labels are data: a new method or penalty gets a sensible default (its name) and
can register a nicer one in METHOD_LABELS / REG_NAMES."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable

EXAMPLE_BADGE = "📦 example"     # a class-pack run (read-only): the prefix of its label, wherever runs are named

# How a penalty is written for people (anything missing is shown by its registry name).
REG_NAMES = {"l1": "ℓ1", "log": "log", "lp": "ℓp", "exp": "exp", "scad": "SCAD", "mcp": "MCP"}


def reg_name(reg) -> str:
    return REG_NAMES.get(str(reg), str(reg))


def fmt_lam(v) -> str:
    if v is None:
        return "–"
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{v:.3g}"


def _pct(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return "?"
    return f"{v * 100:.3g}%"


def solved_lam(c: dict, summary: dict | None = None):
    """The λ a run ended with: with target_sparsity the controller's solved λ (the config's λ
    is only its start), else the config's λ."""
    if c.get("target_sparsity") is not None and isinstance(summary, dict) and summary.get("lam_final") is not None:
        return summary["lam_final"]
    return c.get("lam")


def _lam_text(c: dict, summary: dict | None) -> str:
    """ "λ=2", or for a target "→ 95% pruned, λ solved 12.3" (λ left out while it is still being solved)."""
    if c.get("target_sparsity") is None:
        return f"λ={fmt_lam(c.get('lam'))}"
    s = f"→ {_pct(c['target_sparsity'])} pruned"
    lam = solved_lam(c, summary) if isinstance(summary, dict) and summary.get("lam_final") is not None else None
    return s + (f", λ solved {fmt_lam(lam)}" if lam is not None else "")


def _concave(c: dict, summary: dict | None = None) -> str:
    s = f"{reg_name(c.get('regularizer', '?'))} mask {_lam_text(c, summary)}"
    if c.get("warm_start"):
        s += " (warm start)"
    if int(c.get("rounds") or 1) > 1:
        s += f" ×{c['rounds']}"
    return s


def _imp(c: dict) -> str:
    return f"IMP {c.get('rounds', '?')}×{_pct(c.get('prune_fraction', 0.2))}"


def _random(c: dict) -> str:
    if c.get("random_from"):
        return f"random, densities of {c['random_from']}"
    if c.get("target_sparsity") is not None:
        return f"random {_pct(c['target_sparsity'])} pruned"
    return "random pruning"


def _cs(c: dict, summary: dict | None = None) -> str:
    return f"CS {_lam_text(c, summary)} ×{c.get('rounds') or 1}"


def _pai(c: dict) -> str:
    scorer = c.get("scorer") or "snip"
    s = f"PaI · {SCORER_NAMES.get(scorer, scorer)}"
    if c.get("target_sparsity") is not None:
        s += f" {_pct(c['target_sparsity'])} pruned"
    return s


def _reinit(c: dict) -> str:
    return f"reinit control of {c['reinit_from']}" if c.get("reinit_from") else "reinit control"


# method → what its runs are called; unknown methods are called by their name.
METHOD_LABELS: dict[str, Callable[[dict], str]] = {"concave": _concave, "imp": _imp, "random": _random,
                                                   "reinit": _reinit, "dense": lambda c: "dense", "cs": _cs,
                                                   "pai": _pai}
SCORER_NAMES = {"snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow", "magnitude": "magnitude", "random": "random"}


def method_label(c: dict, summary: dict | None = None) -> str:
    """What a run is; with its summary, a solved λ in place of the starting one."""
    m = str(c.get("method", "?"))
    fn = METHOD_LABELS.get(m)
    if fn is None:
        return m
    return fn(c, summary) if m in ("concave", "cs") else fn(c)


def group_label(c: dict) -> str:
    """Runs that differ only in seed and λ share this (a line on the trade-off plot)."""
    m = c.get("method", "?")
    if m == "concave":
        g = f"{reg_name(c.get('regularizer', '?'))} mask"
        if c.get("warm_start"):
            g += " (warm start)"
        if c.get("target_sparsity") is not None:
            g += " (target)"
        return g
    if m == "imp":
        return f"IMP ({c.get('prune_scope', 'global')}, {_pct(c.get('prune_fraction', 0.2))} a round)"
    if m == "cs":
        return "CS (continuous sparsification)"
    if m == "pai":       # "PaI · snip": figures.METHOD_COLORS gives each scorer its colour
        return f"PaI · {c.get('scorer') or 'snip'}" + (" (per layer)" if c.get("prune_scope") == "layer" else "")
    return method_label(c) if m in METHOD_LABELS and m != "random" else str(m)


# ------------------------------------------------------------------ snapshots

PHASE_WORDS = {"search": "search", "retrain": "retrain", "train": "training"}


def round_number(r) -> int:
    """The engine's round index as every page shows it: counted from 1 (IMP's round 1 is its
    dense training). The one place that turns an index into a shown number."""
    return int(r) + 1


def snapshot_label(tag: str) -> str:
    """"r0-search-e0003" → "round 1 · search · epoch 3"; "r0-ticket" → "round 1 · ticket"."""
    m = re.fullmatch(r"r(\d+)-(\w+?)-(?:e(\d+)|(end))", tag)
    if m:
        when = f"epoch {int(m.group(3))}" if m.group(3) else "end"
        return f"round {round_number(m.group(1))} · {PHASE_WORDS.get(m.group(2), m.group(2))} · {when}"
    m = re.fullmatch(r"r(\d+)-ticket", tag)
    if m:
        return f"round {round_number(m.group(1))} · ticket"
    return tag


def when_label(round_: int, phase: str, epoch) -> str:
    """The same wording for a (round, phase, epoch) of the metrics."""
    e = 0 if epoch is None or (isinstance(epoch, float) and math.isnan(epoch)) else int(epoch)
    return f"round {round_number(round_)} · {PHASE_WORDS.get(phase, phase)} · epoch {e}"


def phase_label(phase: str) -> str:
    """The engine's progress text "round 0 search epoch 2/3" in the same words (rounds from 1)."""
    m = re.fullmatch(r"round (\d+) (\w+) epoch (\d+)/(\d+)", phase.strip())
    if m:
        return (f"round {round_number(m.group(1))} · {PHASE_WORDS.get(m.group(2), m.group(2))} · "
                f"epoch {m.group(3)}/{m.group(4)}")
    return phase


# ------------------------------------------------------------------ layers

def layer_names(shapes: dict[str, tuple]) -> dict[str, str]:
    """Module path → "fc1 784→300" / "out 100→10" / "conv1 3→16 3×3", from the weights' shapes
    (in the model's order; the last layer is the output). Unknown shapes keep their path."""
    out: dict[str, str] = {}
    n_fc = n_conv = 0
    items = list(shapes.items())
    for i, (path, shape) in enumerate(items):
        shape = tuple(int(x) for x in shape)
        last = i == len(items) - 1
        if len(shape) == 2:
            n_fc += 1
            name = ("linear" if len(items) == 1 else "out") if last else f"fc{n_fc}"
            out[path] = f"{name} {shape[1]}→{shape[0]}"
        elif len(shape) == 4:
            n_conv += 1
            name = "out" if last else f"conv{n_conv}"
            out[path] = f"{name} {shape[1]}→{shape[0]} {shape[2]}×{shape[3]}"
        else:
            out[path] = path
    return out


@functools.lru_cache(maxsize=64)
def _model_shapes(model: str, dataset: str, n_classes: int | None) -> tuple:
    import torch

    from engine import masking
    from engine.data import dataset_info
    from engine.models import build_model
    info = dataset_info(dataset)
    with torch.device("meta"):     # shapes only: no memory, no compute
        m = build_model(model, info.in_shape, n_classes or info.num_classes)
    return tuple((n, tuple(layer.weight.shape)) for n, layer in masking.prunable_layers(m))


def layer_names_for(cfg: dict) -> dict[str, str]:
    """layer_names for a run's config ({} when its model cannot be built here)."""
    try:
        classes = cfg.get("classes")
        return layer_names(dict(_model_shapes(cfg["model"], cfg["dataset"], len(classes) if classes else None)))
    except Exception:  # noqa: BLE001 - an unknown model keeps its module paths
        return {}
