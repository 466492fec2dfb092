"""Shared Streamlit widgets: the run-config form, the correctness checklist,
status badges.

The config form is generated from `RunConfig`: every field gets a control
(the usual ones laid out by topic, the rest under "Advanced" from the field's
type and help text), and the values are validated by `RunConfig.from_dict`,
the same validation the CLI runs, so an error names the field it is about.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import MISSING, dataclass, field, fields

import numpy as np
import pandas as pd
import streamlit as st

from engine import data as edata
from engine import models as emodels
from engine import regularizers as eregs
from engine.config import METHODS, OPTIMIZERS, PRESETS, ConfigError, RunConfig, default_rounds
from ui import backend, figures, identity, md
from ui import data as data_

# ------------------------------------------------------------------ help for students

HELP = {
    "model": "The network to prune. `logreg` has one weight per pixel, so its mask is a picture; `lenet300` is "
             "a 300-100 fully connected net (266k weights on MNIST); the conv and ResNet models need 32×32 "
             "images (CIFAR) and, in practice, a GPU.",
    "dataset": "What the network learns to classify. `digits` (8×8 images) ships with scikit-learn and works "
               "offline in seconds; MNIST and CIFAR are downloaded on first use; `planted` is a synthetic "
               "problem whose right answer is known.",
    "classes": "Train on a subset of the classes, e.g. 0 and 1 for the paper's MNIST 0-vs-1 pixel experiment. "
               "Leave empty for all classes. Fewer classes: an easier task and a smaller mask is enough.",
    "method": "concave: learn a mask with a penalty λ·R(m) (the paper). imp: iterative magnitude pruning, the "
              "classic lottery-ticket baseline (train, prune the smallest 20 %, rewind, repeat). random: prune "
              "at random (a ticket should beat it). dense: no pruning, the reference accuracy.",
    "regularizer": "The penalty R(m) on each mask entry. ℓ1 shrinks every entry at the same rate, so many end "
                   "between 0 and 1. Concave penalties such as log push small entries to 0 harder than large "
                   "ones, so the mask comes out closer to binary and thresholding costs less.",
    "eps": "ε in log(1+m/ε). Smaller ε makes the penalty steeper near 0: entries on their way down are pushed "
           "to exactly 0 harder. Typical: 0.01.",
    "lam_mode": "Run one λ, a list of λ values, or a log-spaced sweep (one run per value, grouped as a sweep "
                "so the Trade-offs page can compare them).",
    "lam": "λ weighs the penalty against the task loss. Larger λ: sparser masks, and past some point lower "
           "accuracy. With R averaged per entry (the default) useful values are about 0.5–50 on any model. "
           "Every penalty is scaled to R(0)=0 and R(1)=1 per entry, so equal λ means an equal penalty on a "
           "fully-on mask whatever the penalty.",
    "lam_list": "Comma-separated λ values, e.g. `0.5, 1, 2, 5`. Each value becomes one run.",
    "lam_from": "Smallest λ of the sweep (must be > 0).",
    "lam_to": "Largest λ of the sweep.",
    "lam_count": "How many λ values, spaced evenly on a log scale between the two ends.",
    "target_on": "Instead of guessing λ, say how sparse the mask should end up: λ then adapts during the "
                 "search to land there. A short probe of the masks' gradients before the search sets λ (the value "
                 "above plays no part), and λ is re-solved from the masks' Adam statistics during it.",
    "target_sparsity": "Fraction of weights to prune, e.g. 0.95 keeps 5 %. With top-k thresholding it is hit "
                       "exactly; with τ it is aimed at (within about 2 %).",
    "threshold_mode": "How the soft mask becomes binary: keep entries with m > τ, or keep exactly the top-k "
                      "entries for the target sparsity.",
    "threshold": "τ: an entry survives when m > τ. With a concave penalty most entries end near 0 or 1, so τ "
                 "matters little; with ℓ1 many sit in between and τ changes the result a lot.",
    "prune_fraction": "IMP: fraction of the remaining weights removed each round. 0.2 for 7 rounds leaves "
                      "0.8^7 ≈ 21 %. Larger steps are faster but find worse tickets.",
    "prune_scope": "IMP and random: rank weights over the whole network (global) or separately in each layer "
                   "(every layer then keeps the same fraction).",
    "output_on": "Prune the output layer at its own (usually lower) rate; it is small and sensitive.",
    "output_prune_fraction": "IMP: fraction of the output layer's remaining weights removed each round.",
    "random_from": "Copy each layer's density from this run's ticket, so random pruning is compared at "
                   "exactly the same per-layer sparsity.",
    "rounds": "concave: how many search → threshold → retrain rounds (each starts from the previous ticket). "
              "imp: how many prune rounds after the dense one; each costs a full training.",
    "epochs": "Passes over the training set in each search (concave) or each training (IMP, dense, random). "
              "More epochs: sparser masks for the same λ, and more time.",
    "retrain_epochs": "concave: passes over the data when the ticket is retrained with its binary mask fixed.",
    "rewind_kind": "Which weights the ticket starts retraining from: its initial values (the lottery-ticket "
                   "hypothesis), values from early in training (late rewinding, needed for deep nets), the "
                   "trained values (fine-tuning) or fresh random ones (a sanity check a real ticket beats).",
    "rewind_k": "The epoch or iteration to rewind to.",
    "optimizer": "How the weights are updated. Adam is forgiving; SGD with momentum is the classic choice for "
                 "ResNets with a cosine schedule. Masks always use Adam.",
    "lr": "Learning rate of the weights. Too large: the loss jumps or becomes NaN (the run then fails and "
          "says at which step); too small: slow progress. Adam: ~1e-3; SGD on CIFAR: ~0.1.",
    "batch_size": "Examples per step. Larger batches: fewer, faster steps per epoch (especially on a GPU), "
                  "sometimes slightly lower accuracy.",
    "seeds": "One run per seed, e.g. `0` or `0,1,2` or `0-4`. Several seeds show how much results vary; the "
             "Trade-offs page draws them as a band.",
    "device": "auto uses a GPU when this machine has one. CPU is fine for logreg and LeNet; ResNets need a GPU.",
    "name": "A label of your own, shown in lists. It never changes the result.",
    "reg_scale": "mean: R averaged over mask entries, so one λ means the same on any model (default). sum: the "
                 "paper's plain sum; then divide λ by the number of mask entries.",
    "mask_param": "How m stays in [0,1]: clip projects after every step (default); sigmoid trains s with "
                  "m = sigmoid(s) (an ablation of the paper).",
    "mask_init": "The value every mask entry starts at. 1 = start from the full network.",
    "mask_lr": "Adam learning rate of the mask. Larger: masks move (and prune) faster.",
    "momentum": "SGD momentum.",
    "weight_decay": "L2 penalty on the weights (never on the masks).",
    "lr_schedule": "constant, or cosine decay to 0 over each phase.",
    "val_fraction": "Share of the training set held out to measure validation accuracy.",
    "warm_start": "Start the search from another finished concave run's end point (its weights and mask) "
                  "instead of from m = 1 — e.g. log started from an ℓ1 solution, which avoids log's poor local "
                  "minima when there are fewer samples than features.",
    "precision": "auto uses bfloat16 on a GPU that supports it (faster), else float32. Changes speed, not what "
                 "is computed (up to rounding).",
    "compile": "torch.compile the model: faster on a GPU after a slow first step; rarely worth it on a CPU.",
    "data_params": "Dataset options as JSON, e.g. for planted: {\"dim\": 100, \"k\": 10, \"n_train\": 400}.",
}

REWIND_KINDS = {"init": "initial weights (init)", "epoch:K": "early in training: epoch K",
                "iter:K": "early in training: iteration K", "finetune": "trained weights (fine-tune)",
                "reinit": "fresh random weights (sanity check)"}
LAM_MODES = {"one": "one value", "list": "a list", "sweep": "log-spaced sweep"}
METHOD_TEXT = {"concave": "concave (the paper)", "imp": "IMP (magnitude)", "random": "random pruning",
               "dense": "dense (no pruning)", "cs": "continuous sparsification", "pai": "pruning at init",
               "reinit": "random reinit (control)"}
SCORER_TEXT = {"snip": "SNIP |θ·∂L/∂θ|", "grasp": "GraSP −θ·Hg", "synflow": "SynFlow (data-free)",
               "magnitude": "magnitude |θ|", "random": "random"}
CHOICES = {"reg_scale": ("mean", "sum"), "mask_param": ("clip", "sigmoid"), "lr_schedule": ("constant", "cosine"),
           "threshold_mode": ("tau", "topk"), "prune_scope": ("global", "layer"), "optimizer": OPTIMIZERS,
           "precision": ("auto", "fp32", "bf16")}
# Fields the main layout handles; every other RunConfig field gets a generated control under "Advanced".
LAID_OUT = {"model", "dataset", "classes", "method", "name", "regularizer", "lam", "eps", "reg_params", "warm_start",
            "target_sparsity", "threshold", "threshold_mode", "prune_fraction", "prune_scope",
            "output_prune_fraction", "random_from", "rounds", "rewind", "epochs", "retrain_epochs", "batch_size",
            "lr", "optimizer", "seed", "device", "s0", "beta_final", "scorer", "synflow_iters", "score_batches"}
# what the cs / pai sections show for keys left unset (the methods' own defaults)
FAMILY_DEFAULTS = {"s0": 0.0, "beta_final": 200.0, "scorer": "snip", "synflow_iters": 100, "score_batches": 1}
ADVANCED_ORDER = ("reg_scale", "mask_param", "mask_init", "mask_lr", "momentum", "weight_decay", "lr_schedule",
                  "val_fraction", "data_params")


# Labels of fields a message may name while they are hidden (e.g. the target behind its switch).
HIDDEN_LABELS = {"target_sparsity": "Target sparsity", "lam": "λ", "retrain_epochs": "Retrain epochs",
                 "rounds": "Rounds", "output_prune_fraction": "Output layer: prune per round", "seed": "Seeds"}


def help_for(name: str) -> str:
    if name in HELP:
        return HELP[name]
    f = next((f for f in fields(RunConfig) if f.name == name), None)
    return f.metadata.get("help", "") if f else ""


DEFAULTS = {f.name: (f.default if f.default is not MISSING else None) for f in fields(RunConfig)}


# ------------------------------------------------------------------ parsing helpers

def parse_numbers(text: str, key: str) -> list[float]:
    parts = [p for p in re.split(r"[,\s;]+", text.strip()) if p]
    if not parts:
        raise ConfigError(key, f"{key}: give at least one number")
    out = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise ConfigError(key, f"{key}: {p!r} is not a number") from None
        if math.isnan(v) or math.isinf(v):
            raise ConfigError(key, f"{key}: {p!r} is not a finite number")
        out.append(v)
    return out


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for p in [p for p in re.split(r"[,\s;]+", text.strip()) if p]:
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", p) or re.fullmatch(r"(\d+)", p)
        if not m:
            raise ConfigError("seed", f"seed: {p!r} is not a seed; write e.g. 0 or 0,1,2 or 0-4")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.lastindex == 2 else lo
        if hi < lo or hi - lo > 99:
            raise ConfigError("seed", f"seed: range {p!r} must go up and hold at most 100 seeds")
        out.extend(s for s in range(lo, hi + 1) if s not in out)
    if not out:
        raise ConfigError("seed", "seed: give at least one seed, e.g. 0")
    if len(out) > 100:
        raise ConfigError("seed", "seed: at most 100 seeds at once")
    return out


def _number_or_text(text: str):
    """A typed number as a float; anything else as typed, for the engine to reject by name."""
    try:
        return float(text.strip())
    except (ValueError, AttributeError):
        return text


def log_space(lo: float, hi: float, n: int) -> list[float]:
    if not (lo > 0 and hi > 0):
        raise ConfigError("lam", f"lam: a log-spaced sweep needs both ends > 0, got {lo:g} and {hi:g}")
    if hi < lo:
        raise ConfigError("lam", f"lam: the sweep's upper end must be ≥ its lower end, got {lo:g} to {hi:g}")
    if n < 1 or n > 50:
        raise ConfigError("lam", f"lam: a sweep has between 1 and 50 values, got {n}")
    if n == 1:
        return [lo]
    return [float(f"{v:.3g}") for v in np.geomspace(lo, hi, n)]


# ------------------------------------------------------------------ the form

@dataclass
class FormResult:
    base: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    seeds: list = field(default_factory=list)
    configs: list = field(default_factory=list)
    error_key: str | None = None
    error: str | None = None
    errors: list = field(default_factory=list)      # every invalid value's ConfigError
    labels: dict = field(default_factory=dict)      # config key -> the label of its field (for messages)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.configs)


def config_to_form(cfg: dict) -> dict:
    """A config dict → the form's values (what widgets hold)."""
    d = {**DEFAULTS, **{k: v for k, v in cfg.items() if k in DEFAULTS}}
    if d["rounds"] is None:
        d["rounds"] = default_rounds(d["method"])
    for f in fields(RunConfig):  # number inputs want one numeric type
        v = d[f.name]
        if v is None or isinstance(v, bool):
            continue
        if "float" in str(f.type) and isinstance(v, (int, float)):
            d[f.name] = float(v)
        elif str(f.type) == "int" and isinstance(v, (int, float)):
            d[f.name] = int(v)
    out = {k: d[k] for k in ("model", "dataset", "method", "name", "regularizer", "eps", "threshold",
                             "threshold_mode", "prune_fraction", "prune_scope", "rounds", "epochs", "batch_size",
                             "lr", "optimizer", "device", *ADVANCED_ORDER)}
    out["classes"] = list(d["classes"] or [])
    out["lam_mode"], out["lam"] = "one", f"{d['lam']:g}"
    out["lam_list"] = f"{d['lam']:g}"
    out["target_on"] = d["target_sparsity"] is not None
    out["target_sparsity"] = d["target_sparsity"] if d["target_sparsity"] is not None else 0.9
    out["output_on"] = d["output_prune_fraction"] is not None
    out["output_prune_fraction"] = d["output_prune_fraction"] if d["output_prune_fraction"] is not None else 0.1
    out["random_from"] = d["random_from"] or ""
    out["warm_start"] = d.get("warm_start") or ""
    out["retrain_epochs"] = d["retrain_epochs"] if d["retrain_epochs"] is not None else d["epochs"]
    m = re.fullmatch(r"(epoch|iter):(\d+)", str(d["rewind"]))
    out["rewind_kind"], out["rewind_k"] = (f"{m.group(1)}:K", int(m.group(2))) if m else (d["rewind"], 1)
    out["seeds"] = str(d["seed"])
    for k, v in FAMILY_DEFAULTS.items():
        out[k] = d[k] if d[k] is not None else v
    for k, v in (d["reg_params"] or {}).items():
        out[f"rp_{k}"] = v
    out["data_params"] = json.dumps(d["data_params"]) if d["data_params"] else ""
    return out


class ConfigForm:
    """The Launch page's form. Widget values survive conditional sections (a
    shadow copy refills widgets that were hidden for a while)."""

    def __init__(self, key: str = "cfg"):
        self.k = key
        self.shadow: dict = st.session_state.setdefault(f"{key}._shadow", {})
        self.slots: dict[str, object] = {}
        self.labels: dict[str, str] = {}        # config key -> the label its field shows

    def label_of(self, key: str) -> str:
        """The label a config key's field shows ("λ" for lam, "Seeds" for seed), else the key."""
        for name in (key, f"{key}_list", f"{key}s", f"set_{key}"):
            if name in self.labels:
                return self.labels[name].split(" (")[0]      # "λ (ℓ1 on the soft mask)" -> "λ"
        return HIDDEN_LABELS.get(key, key)

    def words(self, e: ConfigError) -> str:
        """An engine message in the form's words: "λ must be …", not "lam must be …"."""
        label = self.label_of(e.key)
        return re.sub(rf"^{re.escape(e.key)}\b", label, str(e)) if label != e.key else str(e)

    def say(self, e: ConfigError) -> str:
        return f"**{md.esc(self.label_of(e.key))}** — {md.esc(self.words(e))}"

    # -- state
    def load(self, cfg: dict, source: str) -> None:
        """Fill the form from a config (a preset, or a run to duplicate); call before rendering."""
        if st.session_state.get(f"{self.k}._source") == source:
            return
        for k in [k for k in st.session_state if str(k).startswith(f"{self.k}.") and not str(k).startswith(
                f"{self.k}._")]:
            del st.session_state[k]
        self.shadow.clear()
        self.shadow.update(config_to_form(cfg))
        st.session_state[f"{self.k}._source"] = source

    def _w(self, fn, name: str, label: str, default=None, options=None, **kw):
        key = f"{self.k}.{name}"
        if key not in st.session_state:
            v = self.shadow.get(name, default)
            if options is not None and v not in options and not isinstance(v, list):
                v = default if default in options else options[0]
            if isinstance(v, list) and options is not None:
                v = [x for x in v if x in options]
            st.session_state[key] = v
        if options is not None:
            kw["options"] = options
        v = fn(label, key=key, help=kw.pop("help", help_for(name)), **kw)
        self.labels[name] = label
        self.shadow[name] = v
        return v

    def slot(self, *names: str) -> None:
        ph = st.empty()
        for n in names:
            self.slots[n] = ph

    # -- rendering
    def render(self, done_runs: list[dict] | None = None, gpu_names: list[str] | None = None) -> FormResult:
        self.done_runs = done_runs
        parse_errors: list[ConfigError] = []
        v: dict = {}

        st.subheader("1 · What to train", divider="gray")
        c1, c2, c3 = st.columns([1, 1, 1])
        with c1:
            v["model"] = self._w(st.selectbox, "model", "Architecture", "lenet300", emodels.MODELS.names(),
                                 format_func=lambda n: f"{n} — {emodels.MODELS.get(n).description}")
        with c2:
            v["dataset"] = self._w(st.selectbox, "dataset", "Dataset", "digits", edata.DATASETS.names(),
                                   format_func=lambda n: f"{n} — {edata.dataset_info(n).description.split('(')[0]}")
        info = edata.dataset_info(v["dataset"])
        with c3:
            opts = list(range(info.num_classes)) if info.num_classes <= 20 else []
            if opts:
                chosen = self._w(st.multiselect, "classes", "Classes (empty: all)", [], opts,
                                 placeholder="all classes")
            else:
                chosen = []
                st.caption(f"{info.num_classes} classes: all are used.")
            v["classes"] = sorted(chosen) if chosen else None
        self.slot("model", "dataset", "classes")

        st.subheader("2 · Method", divider="gray")
        v["method"] = self._w(st.segmented_control, "method", "Method", "concave", list(METHODS),
                              format_func=lambda m: METHOD_TEXT[m], selection_mode="single")
        if v["method"] is None:  # a segmented control can be cleared
            v["method"] = "concave"
        self.slot("method")
        if v["method"] == "concave":
            self._concave(v, parse_errors)
        elif v["method"] == "imp":
            c1, c2 = st.columns(2)
            with c1:
                v["prune_fraction"] = self._w(st.slider, "prune_fraction", "Prune per round", 0.2,
                                              min_value=0.05, max_value=0.95, step=0.05)
            with c2:
                v["prune_scope"] = self._w(st.radio, "prune_scope", "Rank weights", "global",
                                           list(CHOICES["prune_scope"]), horizontal=True)
            c1, c2 = st.columns(2)      # a row of its own: the checkbox's label fits at 1024 px
            with c1:
                if self._w(st.checkbox, "output_on", "Own rate for the output layer", False):
                    with c2:
                        v["output_prune_fraction"] = self._w(st.number_input, "output_prune_fraction",
                                                             "Output layer: prune per round", 0.1, step=0.05)
            self.slot("prune_fraction", "prune_scope", "output_prune_fraction")
        elif v["method"] == "random":
            ids = [""] + [r["id"] for r in (done_runs or [])]
            labels = {r["id"]: r for r in (done_runs or [])}
            c1, c2 = st.columns(2)
            with c1:
                src = self._w(st.selectbox, "random_from", "Copy per-layer densities from", "", ids,
                              format_func=lambda i: "— (use a global target sparsity)" if not i else
                              f"{i} · {labels[i]['config'].get('method')} "
                              f"{(labels[i].get('summary') or {}).get('remaining', 0):.1%} remaining")
                v["random_from"] = src or None
            with c2:
                v["prune_scope"] = self._w(st.radio, "prune_scope", "Rank weights", "global",
                                           list(CHOICES["prune_scope"]), horizontal=True)
            if not src:
                v["target_sparsity"] = self._w(st.number_input, "target_sparsity", "Target sparsity (pruned "
                                               "fraction)", 0.9, step=0.01, format="%.3f")
            self.slot("random_from", "target_sparsity", "prune_scope")
        elif v["method"] == "cs":
            self._cs(v)
        elif v["method"] == "pai":
            self._pai(v)

        st.subheader("3 · Schedule and optimisation", divider="gray")
        c1, c2, c3, c4 = st.columns(4)
        with c1:
            v["epochs"] = self._w(st.number_input, "epochs", "Epochs" + (" per search" if v["method"] == "concave"
                                                                       else " per search round" if v["method"] == "cs"
                                                                       else " per training"), 10, step=1)
        with c2:
            if v["method"] in ("concave", "cs"):
                v["retrain_epochs"] = self._w(st.number_input, "retrain_epochs", "Retrain epochs", 10, step=1)
        with c3:
            if v["method"] in ("concave", "imp", "cs"):
                v["rounds"] = self._w(st.number_input, "rounds", "Rounds", default_rounds(v["method"]),
                                      step=1)
        with c4:
            if v["method"] in ("concave", "imp", "random", "cs"):
                kind = self._w(st.selectbox, "rewind_kind", "Rewind to", "init", list(REWIND_KINDS),
                               format_func=REWIND_KINDS.get)
                if kind.endswith(":K"):
                    k = self._w(st.number_input, "rewind_k", "K", 1, step=1)
                    v["rewind"] = f"{kind[:-2]}:{int(k)}"
                else:
                    v["rewind"] = kind
        self.slot("epochs", "retrain_epochs", "rounds", "rewind")
        c1, c2, c3, c4 = st.columns(4)
        with c1:
            v["optimizer"] = self._w(st.selectbox, "optimizer", "Optimizer", "adam", list(OPTIMIZERS))
        with c2:
            v["lr"] = self._w(st.number_input, "lr", "Learning rate", 1e-3, format="%g", step=1e-4)
        with c3:
            v["batch_size"] = self._w(st.number_input, "batch_size", "Batch size", 128, step=16)
        with c4:
            devs = ["auto", "cpu"] + (["cuda"] + [f"cuda:{i}" for i in range(len(gpu_names or []))]
                                      if gpu_names else ["cuda"])
            v["device"] = self._w(st.selectbox, "device", "Device", "auto", devs)
        self.slot("optimizer", "lr", "batch_size", "device")
        c1, c2 = st.columns([1, 2])
        with c1:
            seeds_text = self._w(st.text_input, "seeds", "Seeds", "0")
        with c2:
            v["name"] = self._w(st.text_input, "name", "Name (optional)", "", max_chars=200)
        self.slot("seed", "name")

        with st.expander("Advanced settings", expanded=False):
            self._advanced(v, parse_errors)
            self.slot(*ADVANCED_ORDER, "reg_params", "config")

        return self._validate(v, seeds_text, parse_errors)

    def _cs(self, v: dict) -> None:
        """Continuous sparsification: soft mask sigmoid(β·s), ℓ1 on it, β → beta_final each round."""
        c1, c2, c3 = st.columns(3)
        with c1:
            # a text field as for concave runs: a typed "abc" reaches the engine's check, never clamped
            v["lam"] = [_number_or_text(self._w(st.text_input, "lam", "λ (ℓ1 on the soft mask)", "1"))]
        with c2:
            v["s0"] = self._w(st.number_input, "s0", "Initial logit s0", 0.0,
                              step=0.05, format="%g")
        with c3:
            v["beta_final"] = self._w(st.number_input, "beta_final", "Final temperature β", 200.0,
                                      format="%g", step=10.0)
        c1, c2 = st.columns(2)      # the target on a row of its own, as for concave runs: its label fits
        with c1:
            if self._w(st.toggle, "target_on", "Aim at a target sparsity", False):
                v["target_sparsity"] = self._w(st.number_input, "target_sparsity", "Target sparsity", 0.9,
                                               step=0.01, format="%.3f")
                with c2:
                    v["threshold_mode"] = self._w(st.radio, "threshold_mode", "Ticket", "tau", ["tau", "topk"],
                                                  format_func={"tau": "s > 0", "topk": "top-k logits"}.get,
                                                  horizontal=True)
        st.caption("The ticket is every weight whose logit s ends positive; its weights rewind and retrain with "
                   "that binary mask. The reference runs 3 rounds and rewinds to epoch 2.")
        self.slot("lam", "s0", "beta_final", "target_sparsity", "threshold_mode")

    def _pai(self, v: dict) -> None:
        """Pruning at initialization: score at init, keep the best, train from init."""
        c1, c2, c3, c4 = st.columns(4)
        with c1:
            v["scorer"] = self._w(st.selectbox, "scorer", "Scorer", "snip", list(SCORER_TEXT),
                                  format_func=SCORER_TEXT.get)
        with c2:
            v["target_sparsity"] = self._w(st.number_input, "target_sparsity", "Target sparsity (pruned fraction)",
                                           0.9, step=0.01, format="%.3f")
        with c3:
            v["prune_scope"] = self._w(st.radio, "prune_scope", "Rank weights", "global",
                                       list(CHOICES["prune_scope"]), horizontal=True)
        with c4:
            if v["scorer"] == "synflow":
                v["synflow_iters"] = int(self._w(st.number_input, "synflow_iters", "SynFlow iterations", 100,
                                                 step=10))
            elif v["scorer"] in ("snip", "grasp"):
                v["score_batches"] = int(self._w(st.number_input, "score_batches", "Scoring batches", 1,
                                                 step=1))
        self.slot("scorer", "target_sparsity", "prune_scope", "synflow_iters", "score_batches")

    def _concave(self, v: dict, parse_errors: list) -> None:
        left, right = st.columns([3, 2], gap="large")
        with left:
            c1, c2 = st.columns(2)
            with c1:
                v["regularizer"] = self._w(st.selectbox, "regularizer", "Regularizer R(m)", "log",
                                           eregs.REGULARIZERS.names(),
                                           format_func=lambda n: f"{n} — {eregs.get(n).description.split('.')[0]}")
            reg = eregs.get(v["regularizer"])
            params = {}
            with c2:
                if "eps" in reg.params:
                    v["eps"] = self._w(st.number_input, "eps", "ε", 0.01, format="%g",
                                       step=0.005)
                    params["eps"] = v["eps"]
            rp = {}
            others = [(n, p) for n, p in reg.params.items() if n != "eps"]
            if others:
                cols = st.columns(len(others))
                for col, (n, p) in zip(cols, others):
                    with col:
                        rp[n] = self._w(st.number_input, f"rp_{n}", n, p.default, format="%g", step=0.05,
                                        help=p.help)
                params.update(rp)
            v["reg_params"] = rp or None
            self.slot("regularizer", "eps", "reg_params")

            mode = self._w(st.radio, "lam_mode", "λ (penalty weight)", "one", list(LAM_MODES),
                           format_func=LAM_MODES.get, horizontal=True)
            if mode == "one":
                # Text, not a number box: what is typed is what gets validated (a number box would
                # refuse "abc" or "1e-3" silently and keep the old value).
                text = self._w(st.text_input, "lam", "λ", "1")
                v["lam"] = [_number_or_text(text)]
            elif mode == "list":
                text = self._w(st.text_input, "lam_list", "λ values", "0.5, 1, 2, 5")
                try:
                    v["lam"] = parse_numbers(text, "lam")
                except ConfigError as e:
                    parse_errors.append(e)
                    v["lam"] = []
            else:
                c1, c2, c3 = st.columns(3)
                with c1:
                    lo = self._w(st.number_input, "lam_from", "from", 0.5, format="%g")
                with c2:
                    hi = self._w(st.number_input, "lam_to", "to", 20.0, format="%g")
                with c3:
                    n = self._w(st.number_input, "lam_count", "values", 6, step=1)
                try:
                    v["lam"] = log_space(lo, hi, int(n))
                except ConfigError as e:
                    parse_errors.append(e)
                    v["lam"] = []
                if v["lam"]:
                    st.caption("λ = " + ", ".join(f"{x:g}" for x in v["lam"]))
            self.slot("lam")

            on = self._w(st.toggle, "target_on", "Aim at a target sparsity", False)   # full width: its label fits
            c1, c2 = st.columns(2)
            with c1:
                if on:
                    v["target_sparsity"] = self._w(st.number_input, "target_sparsity", "Target sparsity", 0.9,
                                                   step=0.01, format="%.3f")
            with c2:
                v["threshold_mode"] = self._w(st.radio, "threshold_mode", "Threshold", "tau", ["tau", "topk"],
                                              format_func={"tau": "m > τ", "topk": "top-k"}.get, horizontal=True)
                if v["threshold_mode"] == "tau":
                    v["threshold"] = self._w(st.slider, "threshold", "τ", 0.5, min_value=0.05, max_value=0.95,
                                             step=0.05)
            self.slot("target_sparsity", "threshold", "threshold_mode")
            same = [r for r in (self.done_runs or []) if r["config"].get("method") == "concave"
                    and r["config"].get("model") == v["model"] and r["config"].get("dataset") == v["dataset"]]
            if same:
                by = {r["id"]: r for r in same}
                ws = self._w(st.selectbox, "warm_start", "Warm start from", "", [""] + list(by),
                             format_func=lambda i: "— none: start from m = 1" if not i else
                             f"{i} · {by[i]['config'].get('regularizer')} λ={by[i]['config'].get('lam'):g}")
                v["warm_start"] = ws or None
                self.slot("warm_start")
        with right:
            try:
                rows = []
                x, y = eregs.get("l1").curve()
                rows.append(pd.DataFrame({"x": x, "y": y, "name": "l1 (reference)", "reference": True}))
                if v["regularizer"] != "l1":
                    x, y = reg.curve(params)
                    rows.append(pd.DataFrame({"x": x, "y": y, "name": f"{v['regularizer']} (your settings)",
                                              "reference": False}))
                st.plotly_chart(figures.regularizer_curves(pd.concat(rows)), key=f"{self.k}.reg_curve",
                                config={"displaylogo": False})   # keeps its camera button
                st.caption("A curve above the dashed ℓ1 line rises faster near 0: small entries pay more per unit "
                           "than large ones, so the search pushes them to 0 while keeping big ones near 1.")
            except Exception as e:  # out-of-range parameters: the validation below names them
                st.info(f"The penalty cannot be drawn with these parameters ({md.esc(e)}).")

    def _advanced(self, v: dict, parse_errors: list) -> None:
        cols = st.columns(3)
        by_name = {f.name: f for f in fields(RunConfig)}
        names = list(ADVANCED_ORDER) + [n for n in by_name if n not in LAID_OUT and n not in ADVANCED_ORDER]
        for i, name in enumerate(names):
            f = by_name[name]
            default = DEFAULTS[name]
            with cols[i % 3]:
                if default is None and "dict" not in str(f.type):
                    if not self._w(st.checkbox, f"set_{name}", f"set {name}", False, help=help_for(name)):
                        continue
                    default = 0.0 if "float" in str(f.type) else 0 if "int" in str(f.type) else ""
                if name in CHOICES:
                    v[name] = self._w(st.selectbox, name, name, default, list(CHOICES[name]))
                elif "dict" in str(f.type):
                    text = self._w(st.text_input, name, f"{name} (JSON)", "", placeholder="{}")
                    if text.strip():
                        try:
                            v[name] = json.loads(text)
                        except json.JSONDecodeError as e:
                            parse_errors.append(ConfigError(name, f"{name}: not valid JSON ({e.msg})"))
                elif "bool" in str(f.type):
                    v[name] = self._w(st.checkbox, name, name, bool(default))
                elif "float" in str(f.type):
                    v[name] = self._w(st.number_input, name, name, default if default is not None else 0.0,
                                      format="%g")
                elif "int" in str(f.type):
                    v[name] = int(self._w(st.number_input, name, name, default or 0, step=1))
                else:
                    text = self._w(st.text_input, name, name, default or "")
                    if text or default is not None:
                        v[name] = text

    # -- validation (the CLI's)
    def _validate(self, v: dict, seeds_text: str, parse_errors: list) -> FormResult:
        res = FormResult()
        lam = v.pop("lam", None)
        errors: list[ConfigError] = list(parse_errors)
        try:
            res.seeds = parse_seeds(seeds_text)
        except ConfigError as e:
            errors.append(e)
            res.seeds = [0]
        for k in ("epochs", "retrain_epochs", "rounds", "batch_size"):
            if k in v and isinstance(v[k], float) and v[k].is_integer():
                v[k] = int(v[k])
        base = {k: x for k, x in v.items() if x is not None or k == "classes"}
        if base.get("classes") is None:
            base.pop("classes")
        if isinstance(lam, list) and lam:
            base["lam"] = lam[0]
            if len(lam) > 1:
                res.grid = {"lam": lam}
        res.base = base
        errors += every_error({**base, "seed": res.seeds[0]}, skip={e.key for e in errors})
        if not errors:
            try:
                res.configs = backend.expand(base, res.grid, res.seeds)     # every combination, validated
                if len(res.configs) > 200:
                    raise ConfigError("seed", f"this would launch {len(res.configs)} runs; at most 200 at once")
            except ConfigError as e:
                errors.append(e)
            except (TypeError, ValueError) as e:
                errors.append(ConfigError("config", str(e)))
        if errors:
            res.configs = []
            res.errors = errors
            res.error_key, res.error = errors[0].key, self.words(errors[0])
            res.labels = {e.key: self.label_of(e.key) for e in errors}
            # Each message next to its field (fields that share a row share one box).
            by_slot: dict[int, tuple[object, list[str]]] = {}
            for e in errors:
                where = self.slots.get(e.key) or self.slots.get("config")
                if where is not None:
                    by_slot.setdefault(id(where), (where, []))[1].append(self.say(e))
            for where, msgs in by_slot.values():
                where.error("  \n".join(msgs), icon="✋")
        return res


def every_error(cfg: dict, skip: set[str] = frozenset(), limit: int = 12) -> list[ConfigError]:
    """The engine's message for every invalid value of cfg, not only the first: validate,
    put the offending key back to its default, validate again."""
    out: list[ConfigError] = []
    d = dict(cfg)
    for k in skip:
        if k in DEFAULTS:
            d[k] = DEFAULTS[k]
    seen: set[str] = set(skip)
    for _ in range(limit):
        try:
            RunConfig.from_dict(d)
            break
        except ConfigError as e:
            if e.key not in seen:
                out.append(e)
            if e.key in seen or e.key not in DEFAULTS or d.get(e.key) == DEFAULTS[e.key]:
                break
            seen.add(e.key)
            d[e.key] = DEFAULTS[e.key]
        except (TypeError, ValueError) as e:
            out.append(ConfigError("config", str(e)))
            break
    return out


# ------------------------------------------------------------------ small shared widgets

def checklist(checks: pd.DataFrame) -> None:
    """The engine's invariant checks for one run, as a checklist."""
    from ui.data import CHECK_TEXT
    recorded = set(checks["name"]) if not checks.empty else set()
    for _, c in checks.iterrows():
        icon = "✅" if c["passed"] else "❌"
        val = "" if c["value"] is None or pd.isna(c["value"]) else f"{c['value']:.4g}"
        tgt = "" if c["target"] is None or pd.isna(c["target"]) else f" (target {c['target']:.4g})"
        st.markdown(f"{icon} **{md.esc(c['check'])}** — measured {val}{tgt}  \n"
                    f"<span style='color:#777'>{md.esc(c['detail'])}</span>",
                    unsafe_allow_html=True)
    for name, (title, what) in CHECK_TEXT.items():
        if name not in recorded:
            st.markdown(f"▫️ **{title}** — not recorded for this run  \n<span style='color:#999'>{what}</span>",
                        unsafe_allow_html=True)


def over_room(home, cfgs: list[RunConfig], equal: list | None = None) -> str | None:
    """On a server with a per-person cap: why this person cannot queue `cfgs` now (the configs
    an equal run stands in for cost nothing; `equal`: the page's find_equal of each, when it has
    them), said before the click; None when they can."""
    from ui import state
    try:
        room = backend.room(home, identity.current_user())
    except backend.BackendError:
        return None
    if room is None:
        return None
    if equal is None:
        equal = [backend.find_equal(c, home, state.store()) for c in cfgs]
    new = sum(e is None for e in equal)
    if new <= room:
        return None
    return (f"{new} new run{'s' if new > 1 else ''}, but you may queue {room} more now (the limit per person "
            "counts your queued and running runs): launch fewer, wait for yours to finish, or ask a teacher.")


def sweep_button(label: str, cfgs: list[RunConfig], key: str, home, help: str, what: str = "sweep",
                 per_run_s: float | None = None, disabled: bool = False) -> list[str] | None:
    """A button that queues a sweep launched from a page, and then, where it was, the
    sweep's progress (done / running / queued, ETA), live, with the button disabled while
    any run of it is queued or running. Before submitting it asks the store again, so a
    double click (or a click in a second tab) never queues the same sweep twice.
    Returns the new run ids when it queued them."""
    from ui import estimate, state
    slot = st.container()
    if per_run_s is None and cfgs:       # no finished run of it yet: the cost model's guess
        per_run_s = estimate.estimate(cfgs[0].to_dict(), bool(backend.gpus()), state.runs()).seconds

    def status_now() -> dict:
        return data_.sweep_progress(state.runs(), cfgs, per_run_s=per_run_s) if cfgs else {"active": False}

    def progress() -> None:
        p = status_now()
        if p.get("active"):
            eta = f" · about {data_.fmt_duration(p['eta_s'])} left" if p.get("eta_s") is not None else ""
            st.progress(p["done"] / max(1, p["total"]),
                        text=f"{what}: {p['done']} of {p['total']} done · {p['running']} running · "
                             f"{p['queued']} queued{eta}")
        if st.session_state.get(f"{key}._active") != p.get("active"):
            st.session_state[f"{key}._active"] = p.get("active")
            st.rerun(scope="app")        # the button below follows (enabled again when it is over)

    p = status_now()
    st.session_state[f"{key}._active"] = p.get("active")
    with slot:      # live only while the sweep is queued or running
        st.fragment(run_every=state.LIVE_SECONDS * 2 if p.get("active") else None)(progress)()
    if p.get("active"):
        label = f"{label} — queued or running"
    too_many = over_room(home, cfgs) if cfgs and not p.get("active") else None
    if too_many:
        st.caption(f"⚠️ {md.esc(too_many)}")
    clicked = st.button(label, key=key, disabled=disabled or not cfgs or p.get("active", False) or bool(too_many),
                        help=help, type="primary")
    if p.get("done") and not p.get("active"):
        st.caption(f"{p['done']} of its {p['total']} runs are done already: a launch queues only the others "
                   f"(an equal config is never trained twice).")
    if not clicked:
        return None
    if status_now().get("active"):                  # a second click that arrived before the page changed
        st.info(f"This {what} is already queued; its progress is shown above.")
        return None
    try:
        ids = backend.submit(cfgs, home, owner=identity.current_user(), estimates=launch_estimates(cfgs, home))
    except backend.BackendError as e:
        st.error(md.esc(e))
        return None
    st.toast(reuse_note(ids, what))
    st.rerun()
    return ids


def launch_estimates(cfgs: list[RunConfig], home) -> list[float | None]:
    """Seconds until each config's result if launched now (queue and load counted), to
    record with each run; None for configs an equal run stands in for (nothing queued) and
    for those past this person's cap (refused). The same estimate.launch_estimates that
    bench/burst.py measures."""
    from engine import owners
    from ui import estimate, state
    user = identity.current_user()
    todo = [i for i, c in enumerate(cfgs) if backend.find_equal(c, home, state.store()) is None]
    out: list[float | None] = [None] * len(cfgs)
    if not todo:
        return out
    try:
        cap = 0 if identity.is_teacher(user) else owners.max_per_person()
        est = estimate.launch_estimates([(user, cfgs[i].to_dict()) for i in todo], state.runs(),
                                        estimate.machine_now(), cap, bool(backend.gpus()))
    except Exception:  # noqa: BLE001 - the estimate is informative only; never block a launch on it
        return out
    for i, t in zip(todo, est):
        out[i] = t
    return out


def note_reused(ids) -> None:
    """Whose runs a launch reused, said on the Runs page the launch opens next
    ('Reused alice's run from 10:42 …'): Launch and Home go there at once."""
    from ui import state
    said = []
    for rid in getattr(ids, "reused", []):
        try:
            said.append(data_.reuse_text(state.store().get_run(rid), identity.current_user()))
        except Exception:  # noqa: BLE001 - a run deleted meanwhile: nothing to say about it
            continue
    if said:
        st.session_state["runs.reused"] = said


def reuse_note(ids: list[str], what: str = "sweep") -> str:
    """'Queued 2 runs of the sweep; the other 2 equal earlier runs (…), so they were not queued again'."""
    reused = len(getattr(ids, "reused", []))
    new = len(ids) - reused
    if not reused:
        return f"Queued {new} run{'s' if new != 1 else ''}"
    return (f"Queued {new} run{'s' if new != 1 else ''} of the {what}; the other {reused} equal earlier runs "
            f"(finished, or already queued or running), so they were not queued again")


def preset_config(name: str) -> RunConfig:
    return RunConfig.from_dict(dict(PRESETS[name]))
