"""RunConfig: the one definition of a run's settings.

The CLI, the app's form and the saved `config.json` all go through
`RunConfig.from_dict`, so the same validation runs everywhere. Every invalid
value raises one `ConfigError` naming the key and its allowed range.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

METHODS = ("concave", "imp", "random", "dense", "cs", "pai", "reinit")
SCORERS = ("snip", "grasp", "synflow", "magnitude", "random")
OPTIMIZERS = ("sgd", "adam", "adamw")
REWIND_RE = re.compile(r"^(init|finetune|reinit|(epoch|iter):(\d+))$")
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """An invalid config value; `key` names the offending field."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


CS_ROUNDS = 3   # continuous sparsification's rounds when a config leaves `rounds` out


def default_rounds(method: str) -> int:
    """The rounds a config of `method` runs when it leaves `rounds` out."""
    return CS_ROUNDS if method == "cs" else 1

# The keys each method reads, beyond the ones every method reads (model, data, training
# schedule, seed, execution). A key listed here for some methods is refused on any other
# method when a config sets it to something else than its default (`unused_key_error`):
# `--set target_sparsity=0.9` on IMP is an error, not a silently ignored option. The
# trade-off views also compare runs on these keys only (ui/data.py). A new method or
# method-specific key: add it here (a key in no list is read by every method).
_MASK_SEARCH = ("lam", "reg_scale", "mask_lr", "threshold", "threshold_mode", "target_sparsity",
                "allow_empty_layers", "rounds", "rewind", "retrain_epochs")
METHOD_KEYS: dict[str, tuple[str, ...]] = {
    "concave": _MASK_SEARCH + ("regularizer", "eps", "reg_params", "mask_param", "mask_init", "warm_start",
                               "warm_start_rewind"),
    "cs": _MASK_SEARCH + ("s0", "beta_final", "beta_schedule", "mask_optimizer", "keep_optimizer_state"),
    "imp": ("prune_fraction", "prune_scope", "output_prune_fraction", "rounds", "rewind", "allow_empty_layers"),
    "random": ("target_sparsity", "random_from", "prune_scope", "rewind"),
    "pai": ("target_sparsity", "scorer", "synflow_iters", "score_batches", "score_mode", "prune_scope",
            "allow_empty_layers"),
    "dense": (),
    "reinit": ("reinit_from", "rewind"),
}


def method_specific_keys() -> set[str]:
    """Keys some method reads and another does not."""
    return {k for keys in METHOD_KEYS.values() for k in keys}


def used_by(key: str) -> list[str]:
    """The methods that read a method-specific key."""
    return [m for m, keys in METHOD_KEYS.items() if key in keys]


def unused_keys(d: dict[str, Any]) -> list[str]:
    """The keys of config dict `d` that its method does not read and that `d` sets to
    something else than their default (a full stored config spells every default out)."""
    method = d.get("method", "concave")
    if method not in METHOD_KEYS:
        return []
    used = set(METHOD_KEYS[method])
    defaults = {f.name: f.default for f in fields(RunConfig)}
    defaults["rounds"] = default_rounds(method)
    return [k for k in d if k in method_specific_keys() and k not in used
            and not _same(d[k], defaults.get(k), UNSET_MEANS.get(k))]


def _same(v, default, unset_means) -> bool:
    if v is None or v == default or (unset_means is not None and v == unset_means):
        return True
    return isinstance(v, (int, float)) and isinstance(default, (int, float)) and float(v) == float(default)


def without_unused(d: dict[str, Any]) -> dict[str, Any]:
    """`d` with the keys its method does not read dropped (they go back to their defaults):
    for code that derives a config of one method from another's (dense from a concave base)."""
    method = d.get("method", "concave")
    used = set(METHOD_KEYS.get(method, ()))
    return {k: v for k, v in d.items() if k not in method_specific_keys() or k in used}


# What an optional key left unset (None) stands for. The methods read their defaults
# from here, and the content hash leaves a key out when it is spelled out at this value,
# so a form that fills the defaults in names the same run as a preset that leaves them out.
UNSET_MEANS: dict[str, Any] = {"s0": 0.0, "beta_final": 200.0, "scorer": "snip", "synflow_iters": 100,
                               "score_batches": 1, "warm_start_rewind": "own", "allow_empty_layers": False,
                               "beta_schedule": "step", "mask_optimizer": "adam", "keep_optimizer_state": False,
                               "score_mode": "eval"}
SCORE_MODES = ("eval", "train")


@dataclass(frozen=True)
class RunConfig:
    # --- what to train -------------------------------------------------------
    model: str = _f("lenet300", "architecture (see engine.models)")
    dataset: str = _f("digits", "dataset (see engine.data); digits works offline")
    classes: list | None = _f(None, "optional subset of class ids, e.g. [0, 1] for MNIST 0-vs-1")
    method: str = _f("concave", "concave (the paper), imp, random, dense, cs (continuous sparsification), "
                                "pai (pruning at initialization), or reinit (the random-reinit control of a "
                                "ticket: see reinit_from)")
    name: str = _f("", "free-text label; metadata only, never part of a path or the hash")
    # --- concave search ------------------------------------------------------
    regularizer: str = _f("log", "penalty R(m) on mask entries: l1, log, lp, exp, scad, mcp (each with R(0)=0, "
                                 "R(1)=1), or log_raw (the paper's unscaled log(m+ε))")
    lam: float = _f(1.0, "λ, weight of R(m) (every penalty has R(0)=0, R(1)=1 per entry); with reg_scale=mean "
                         "a useful λ is ~0.5–50 on any model; with target_sparsity it is set by the controller")
    eps: float = _f(0.01, "ε of the log, log_raw and lp penalties, in (0, 1]")
    reg_params: dict = _f(None, "other penalty parameters: p (lp), sigma (exp), a, b (scad), gamma (mcp)")
    reg_scale: str = _f("mean", "mean: R averaged per mask entry (default); sum: the paper's plain sum")
    mask_param: str = _f("clip", "clip: project m to [0,1] after each step; sigmoid: m = sigmoid(s)")
    mask_init: float = _f(1.0, "initial value of every mask entry, in (0, 1]")
    mask_lr: float = _f(0.01, "learning rate of the mask m (Adam; cs with mask_optimizer=sgd: SGD, the reference "
                              "used 0.1)")
    target_sparsity: float | None = _f(None, "if set, λ is set and re-solved during the search so the mask ends "
                                               "at this sparsity (then lam plays no part)")
    warm_start: str | None = _f(None, "concave: start the first search from this run's search-end θ and m "
                                      "(e.g. log warm-started from an l1 solution, a reweighting-style start)")
    warm_start_rewind: str | None = _f(None, "with warm_start, what retraining rewinds to: own (default: this "
                                             "run's own rewind point, e.g. its seeded init) or source (the "
                                             "warm_start run's saved rewind weights)")
    threshold: float = _f(0.5, "τ: an entry survives when m > τ, in (0, 1)")
    threshold_mode: str = _f("tau", "tau: keep m > τ; topk: keep the largest m to hit target_sparsity exactly")
    allow_empty_layers: bool | None = _f(None, "true: a threshold or a global top-k may prune a whole layer away "
                                               "(disconnecting the network); by default such a layer keeps its "
                                               "best-scored entry and the run's checks say so")
    # --- IMP / random ----------------------------------------------------------
    prune_fraction: float = _f(0.2, "IMP: fraction of the remaining weights pruned each round, in (0, 1)")
    prune_scope: str = _f("global", "IMP/random/pai: rank weights globally or per layer")
    output_prune_fraction: float | None = _f(None, "IMP: separate (usually lower) rate for the output layer")
    random_from: str | None = _f(None, "random: copy per-layer densities from this run's ticket; the control "
                                       "starts from that ticket's rewind weights and must train like its "
                                       "retrain (epochs = its retrain length, same rewind and optimizer)")
    reinit_from: str | None = _f(None, "reinit: this ticket's exact mask, round by round, with θ redrawn from the "
                                       "model's init distribution (another seed), trained like its retrain")
    # --- continuous sparsification / pruning at init (unset = the default named in the help) ---
    s0: float | None = _f(None, "cs: initial mask logit s, in [-5, 5] (default 0; negative for sparser tickets)")
    beta_final: float | None = _f(None, "cs: temperature β of the mask sigmoid(β·s) at each round's end, "
                                        "in (1, 1e6] (default 200)")
    beta_schedule: str | None = _f(None, "cs: how β rises from 1 to beta_final within a round: step (default: "
                                         "every step, exponentially) or epoch (the reference: once per epoch, the "
                                         "last epoch at beta_final)")
    mask_optimizer: str | None = _f(None, "cs: adam (default, at mask_lr) or sgd (the reference: momentum 0.9, "
                                          "Nesterov, at mask_lr, which it set to 0.1); target_sparsity needs adam")
    keep_optimizer_state: bool | None = _f(None, "cs: true keeps the optimizers' state (momenta, Adam moments) "
                                                 "from one round's search to the next, as the reference does; "
                                                 "default false (each round starts fresh)")
    scorer: str | None = _f(None, "pai: snip, grasp, synflow, magnitude or random (default snip)")
    synflow_iters: int | None = _f(None, "pai synflow: pruning iterations, in [1, 10000] (default 100)")
    score_batches: int | None = _f(None, "pai snip/grasp: minibatches the scores use, in [1, 1000] (default 1)")
    score_mode: str | None = _f(None, "pai: the mode BatchNorm scores in: eval (default, as Synaptic-Flow's "
                                      "--prune-train-mode False) or train (as the original GraSP code)")
    # --- schedule --------------------------------------------------------------
    rounds: int = _f(None, "concave: search→retrain rounds; imp: number of prune rounds; cs: search rounds "
                           "(default 1; 3 for cs, as in the reference, when the key is left out)")
    rewind: str = _f("init", "weights retraining starts from: init, epoch:K, iter:K, finetune or reinit")
    epochs: int = _f(10, "epochs of each search (concave) or training (imp, dense, random) phase")
    retrain_epochs: int | None = _f(None, "concave: epochs of the retrain phase (default: epochs)")
    batch_size: int = _f(128, "minibatch size")
    lr: float = _f(1e-3, "learning rate of the weights")
    optimizer: str = _f("adam", "sgd (momentum 0.9), adam or adamw")
    momentum: float = _f(0.9, "SGD momentum, in [0, 1)")
    weight_decay: float = _f(0.0, "L2 weight decay on weights (never on masks)")
    lr_schedule: str = _f("constant", "constant or cosine (per phase)")
    val_fraction: float = _f(0.1, "share of the training set held out for validation, in [0, 0.5]")
    data_params: dict = _f(None, "dataset options, e.g. planted: dim, k, n_train, noise, planted_seed")
    seed: int = _f(0, "seeds weights, masks, shuffling and augmentation")
    device: str = _f("auto", "auto (cuda when present), cpu, cuda or cuda:N")
    precision: str = _f("auto", "auto (fp32; bf16 autocast for vgg16, wrn16_8 and resnet18 on a GPU "
                                   "that supports it), fp32 or bf16")
    compile: bool = _f(False, "torch.compile the model for training (faster on GPU after a slow first step)")

    # Execution settings: they change how fast a run goes, not what it computes
    # (up to floating-point rounding), so they stay out of the content hash.
    EXECUTION_KEYS = ("name", "device", "precision", "compile")
    # Salted into the content hash; bump it when the engine computes a different result
    # for the same keys, so finished runs of the old engine are never reused as equal.
    # 2: the log penalty was normalised to R(1)=1 (log_raw is the old one) under the same keys.
    HASH_VERSION = 2

    # ------------------------------------------------------------------ build
    def __post_init__(self):
        # `rounds` left out means the method's own default (CS: 3, as Savarese et al. run),
        # written in, so the config, its hash and every reader see the number.
        if self.rounds is None:
            object.__setattr__(self, "rounds", default_rounds(self.method))

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, unused: str = "refuse") -> RunConfig:
        """Validate `d`. unused="keep" lets a key the method does not read pass: for configs
        stored before that was refused (a finished run, the committed class pack)."""
        if not isinstance(d, dict):
            raise ConfigError("config", f"config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        for k in d:
            if k not in known:
                raise ConfigError(k, f"unknown config key {k!r}; known keys: {', '.join(sorted(known))}")
        # 2 and 2.0 are the same λ: normalise ints in float fields so the hash agrees.
        floats = {f.name for f in fields(cls) if "float" in str(f.type)}
        d = {k: float(v) if k in floats and isinstance(v, int) and not isinstance(v, bool) else v
             for k, v in d.items()}
        # defaults spelled out are the same run, with the same hash
        if d.get("warm_start_rewind") == "own":
            d = {**d, "warm_start_rewind": None}
        if d.get("allow_empty_layers") is False:
            d = {**d, "allow_empty_layers": None}
        cfg = cls(**d)
        cfg.validate()
        # after the ranges: a value out of range is named as such first
        unused_ = unused_keys(d) if unused == "refuse" else []
        if unused_:
            k = unused_[0]
            raise ConfigError(k, f"{k} does not apply to method={cfg.method}: it is used by "
                                 f"{', '.join(used_by(k))}. Leave it out, or pick one of those methods")
        return cfg

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError("config", f"config is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def replace(self, **changes) -> RunConfig:
        """This config with `changes`; a change of method drops what the new method does not read."""
        d = {**self.to_dict(), **changes}
        if "method" in changes:
            d = without_unused({k: v for k, v in d.items() if k != "rounds" or "rounds" in changes})
        return RunConfig.from_dict(d)

    def result_keys(self, without: tuple[str, ...] = (), only_used: bool = False) -> dict[str, Any]:
        """The keys that decide the result, as the content hash sees them, less `without`
        (e.g. the seed, for runs that may be averaged). Optional settings left unset (None),
        or set to what unset means, are left out, so adding a new optional key later does not
        change the hash of existing configs. `only_used` also leaves out the keys the method
        does not read (a stored config may spell some out; they never change its result)."""
        used, specific = set(METHOD_KEYS.get(self.method, ())), method_specific_keys()
        return {k: v for k, v in self.to_dict().items() if v is not None and k not in self.EXECUTION_KEYS
                and k not in without and not (only_used and k in specific and k not in used)
                and not (k in UNSET_MEANS and v == UNSET_MEANS[k] and type(v) is type(UNSET_MEANS[k]))}

    def content_hash(self) -> str:
        """Stable hash of everything that determines the result (not the name
        or the execution settings). Pinned by tests: changing a default changes hashes."""
        d = self.result_keys()
        if self.method == "pai":
            # SNIP/GraSP scored in train mode before score_mode existed (default now eval): every pai
            # hash names its mode, so those runs are never reused as equal to an eval-mode config.
            d["score_mode"] = self.score_mode or UNSET_MEANS["score_mode"]
        if self.HASH_VERSION > 1:       # version 1 hashed the keys alone
            d["_hash_version"] = self.HASH_VERSION
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    # ------------------------------------------------------------------ derived
    @property
    def retrain_epochs_(self) -> int:
        return self.retrain_epochs if self.retrain_epochs is not None else self.epochs

    @property
    def reg_params_(self) -> dict:
        from . import regularizers
        return regularizers.get(self.regularizer).resolve({"eps": self.eps, **(self.reg_params or {})})

    def rewind_point(self) -> tuple[str, int]:
        """('init', 0) | ('epoch', K) | ('iter', K) | ('finetune', 0) | ('reinit', 0)."""
        m = REWIND_RE.fullmatch(self.rewind)
        if m.group(2):
            return m.group(2), int(m.group(3))
        return m.group(1), 0

    # ------------------------------------------------------------------ validation
    def _validate_cs_options(self) -> None:
        """Continuous sparsification's options with the reference's values (docs/continuous_sparsification.md)."""
        for key in ("beta_schedule", "mask_optimizer", "keep_optimizer_state"):
            if getattr(self, key) is not None and self.method != "cs":
                raise ConfigError(key, f"{key} applies only to method=cs (continuous sparsification), "
                                       f"not method={self.method}")
        if self.beta_schedule is not None:
            _choice("beta_schedule", self.beta_schedule, ("step", "epoch"))
        if self.mask_optimizer is not None:
            _choice("mask_optimizer", self.mask_optimizer, ("adam", "sgd"))
            if self.mask_optimizer == "sgd" and self.target_sparsity is not None:
                raise ConfigError("mask_optimizer", "mask_optimizer=sgd cannot steer to target_sparsity: the λ "
                                                    "controller models Adam's steps; use mask_optimizer=adam, or "
                                                    "set lam without target_sparsity")
        if self.keep_optimizer_state is not None and not isinstance(self.keep_optimizer_state, bool):
            raise ConfigError("keep_optimizer_state", f"keep_optimizer_state must be true or false, "
                                                      f"got {self.keep_optimizer_state!r}")

    def validate(self) -> None:
        from . import data, models, regularizers

        _choice("model", self.model, models.MODELS.names())
        _choice("dataset", self.dataset, data.DATASETS.names())
        _choice("method", self.method, METHODS)
        _choice("regularizer", self.regularizer, regularizers.REGULARIZERS.names())
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("reg_scale", self.reg_scale, ("mean", "sum"))
        _choice("mask_param", self.mask_param, ("clip", "sigmoid"))
        _choice("threshold_mode", self.threshold_mode, ("tau", "topk"))
        _choice("prune_scope", self.prune_scope, ("global", "layer"))
        _choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        _choice("precision", self.precision, ("auto", "fp32", "bf16"))
        if self.allow_empty_layers is not None and not isinstance(self.allow_empty_layers, bool):
            raise ConfigError("allow_empty_layers", f"allow_empty_layers must be true or false, "
                                                    f"got {self.allow_empty_layers!r}")
        if not isinstance(self.compile, bool):
            raise ConfigError("compile", f"compile must be true or false, got {self.compile!r}")
        _string("name", self.name, 200)

        _number("lam", self.lam, 0.0, math.inf, lo_closed=True)
        _number("eps", self.eps, 0.0, 1.0, hi_closed=True)
        _number("mask_init", self.mask_init, 0.0, 1.0, hi_closed=True)
        _number("threshold", self.threshold, 0.0, 1.0)
        _number("prune_fraction", self.prune_fraction, 0.0, 1.0)
        _number("lr", self.lr, 0.0, 10.0)
        _number("momentum", self.momentum, 0.0, 1.0, lo_closed=True)
        _number("weight_decay", self.weight_decay, 0.0, 1.0, lo_closed=True)
        _number("val_fraction", self.val_fraction, 0.0, 0.5, lo_closed=True, hi_closed=True)
        _number("mask_lr", self.mask_lr, 0.0, 10.0)
        if self.target_sparsity is not None:
            _number("target_sparsity", self.target_sparsity, 0.0, 1.0)
        if self.output_prune_fraction is not None:
            _number("output_prune_fraction", self.output_prune_fraction, 0.0, 1.0, lo_closed=True)
        if self.s0 is not None:
            _number("s0", self.s0, -5.0, 5.0, lo_closed=True, hi_closed=True)
        if self.beta_final is not None:
            _number("beta_final", self.beta_final, 1.0, 1e6, hi_closed=True)
        self._validate_cs_options()
        if self.scorer is not None:
            _choice("scorer", self.scorer, SCORERS)
        if self.synflow_iters is not None:
            _integer("synflow_iters", self.synflow_iters, 1, 10_000)
        if self.score_batches is not None:
            _integer("score_batches", self.score_batches, 1, 1000)
        if self.score_mode is not None:
            _choice("score_mode", self.score_mode, SCORE_MODES)
            if self.method != "pai":
                raise ConfigError("score_mode", f"score_mode applies only to method=pai (pruning at init), "
                                                f"not method={self.method}")

        _integer("epochs", self.epochs, 1, 10_000)
        if self.retrain_epochs is not None:
            _integer("retrain_epochs", self.retrain_epochs, 0, 10_000)
        _integer("rounds", self.rounds, 1, 100)
        _integer("batch_size", self.batch_size, 1, 1 << 16)
        _integer("seed", self.seed, 0, 2**31 - 1)

        if not isinstance(self.rewind, str) or not REWIND_RE.fullmatch(self.rewind):
            raise ConfigError("rewind", f"rewind must be one of init, finetune, reinit, epoch:K, iter:K "
                                        f"(K an integer ≥ 0), got {self.rewind!r}")
        if not isinstance(self.device, str) or not DEVICE_RE.fullmatch(self.device):
            raise ConfigError("device", f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")

        # penalty parameters of the chosen regularizer (unknown names refused)
        if self.reg_params is not None:
            if not isinstance(self.reg_params, dict):
                raise ConfigError("reg_params", f"reg_params must be an object, got {self.reg_params!r}")
            specs = {k: p for k, p in regularizers.get(self.regularizer).params.items() if k != "eps"}
            for k, v in self.reg_params.items():
                if k not in specs:
                    raise ConfigError("reg_params", f"reg_params key {k!r} does not apply to regularizer "
                                      f"{self.regularizer}; it takes: {', '.join(sorted(specs)) or 'nothing'}"
                                      f" (eps is its own key)")
                msg = specs[k].check(f"reg_params.{k}", v)
                if msg:
                    raise ConfigError("reg_params", msg)

        if self.data_params is not None and not isinstance(self.data_params, dict):
            raise ConfigError("data_params", f"data_params must be an object, got {self.data_params!r}")
        for key in ("random_from", "reinit_from", "warm_start"):
            if getattr(self, key) is not None:
                _string(key, getattr(self, key), 200)

        # classes against the dataset
        info = data.dataset_info(self.dataset)
        if self.classes is not None:
            if (not isinstance(self.classes, list) or len(self.classes) < 2
                    or any(isinstance(c, bool) or not isinstance(c, int) for c in self.classes)
                    or len(set(self.classes)) != len(self.classes)):
                raise ConfigError("classes", f"classes must be a list of ≥ 2 distinct integers in "
                                             f"[0, {info.num_classes - 1}], got {self.classes!r}")
            bad = [c for c in self.classes if not 0 <= c < info.num_classes]
            if bad:
                raise ConfigError("classes", f"classes must be in [0, {info.num_classes - 1}] for "
                                             f"{self.dataset}, got {bad}")

        # the model must accept the dataset's input
        msg = models.input_error(self.model, info.in_shape)
        if msg:
            raise ConfigError("model", msg)

        # method-specific requirements
        if self.threshold_mode == "topk" and self.target_sparsity is None and self.method in ("concave", "cs"):
            raise ConfigError("target_sparsity", "threshold_mode=topk needs target_sparsity in (0, 1)")
        if self.method == "random" and self.random_from is None and self.target_sparsity is None:
            raise ConfigError("target_sparsity", "method=random needs target_sparsity in (0, 1) "
                                                 "or random_from (a run id)")
        if self.method == "pai" and self.target_sparsity is None:
            raise ConfigError("target_sparsity", "method=pai needs target_sparsity in (0, 1)")
        kind, k = self.rewind_point()
        if (self.method == "reinit") != (self.reinit_from is not None):
            raise ConfigError("reinit_from", "method=reinit needs reinit_from (a ticket's run id), and "
                                             "reinit_from applies only to method=reinit")
        if kind == "reinit" and (self.method == "imp" or self.rounds > 1):
            # Each round would prune the re-drawn network, so the masks drift from the ticket's.
            raise ConfigError("rewind", "rewind=reinit with imp or several rounds prunes re-drawn weights, so "
                                        "its masks are not the ticket's: run the ticket (rewind init, epoch:K or "
                                        "iter:K), then method=reinit with reinit_from=ITS_RUN_ID")
        if self.method == "reinit" and kind != "init":
            raise ConfigError("rewind", "method=reinit redraws θ; rewind does not apply (leave it at init)")
        if self.method == "random" and self.random_from is None and kind != "init":
            raise ConfigError("rewind", "method=random with target_sparsity trains from its init; rewind must "
                                        "be init (with random_from it follows the source ticket's rewind)")
        if self.warm_start_rewind is not None:
            _choice("warm_start_rewind", self.warm_start_rewind, ("own", "source"))
            if self.warm_start is None or self.method != "concave":
                raise ConfigError("warm_start_rewind", "warm_start_rewind applies only to method=concave "
                                                       "with warm_start (a run id)")
            if kind not in ("init", "epoch", "iter"):
                raise ConfigError("warm_start_rewind", f"warm_start_rewind=source needs rewind init, epoch:K "
                                                       f"or iter:K (rewind={self.rewind} restores no saved weights)")
        if kind == "epoch" and self.method in ("concave", "imp", "cs") and k > self.epochs:
            raise ConfigError("rewind", f"rewind epoch:{k} must be in [0, epochs={self.epochs}]")


# -------------------------------------------------------------------- checks

def _choice(key, value, allowed):
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(key, f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _string(key, value, max_len):
    if not isinstance(value, str) or len(value) > max_len or "\x00" in value:
        raise ConfigError(key, f"{key} must be text of at most {max_len} characters without NUL")


def _number(key, value, lo, hi, lo_closed=False, hi_closed=False):
    rng = f"{'[' if lo_closed else '('}{lo:g}, {hi:g}{']' if hi_closed else ')'}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(key, f"{key} must be a number in {rng}, got {value!r} ({type(value).__name__})")
    if math.isnan(value):
        raise ConfigError(key, f"{key} must be a number in {rng}, got NaN")
    ok = (value >= lo if lo_closed else value > lo) and (value <= hi if hi_closed else value < hi)
    if not ok:
        raise ConfigError(key, f"{key} must be in {rng}, got {value!r}")


def _integer(key, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"{key} must be an integer in [{lo}, {hi}], got {value!r} ({type(value).__name__})")
    if not lo <= value <= hi:
        raise ConfigError(key, f"{key} must be an integer in [{lo}, {hi}], got {value}")


# -------------------------------------------------------------------- presets

PRESETS: dict[str, dict[str, Any]] = {
    # Offline, ~10 s on 2 CPU cores: the embedded default.
    "digits": dict(model="lenet300", dataset="digits", method="concave", regularizer="log",
                   lam=20.0, epochs=10, retrain_epochs=10, batch_size=64, lr=1e-3),
    # The paper's convex case: logistic regression on MNIST 0-vs-1 keeps ~8 pixels.
    "mnist-8-pixel": dict(model="logreg", dataset="mnist", classes=[0, 1], method="concave",
                          regularizer="log", lam=10.0, epochs=5, retrain_epochs=5, batch_size=128, lr=1e-2),
    "lenet300-concave": dict(model="lenet300", dataset="mnist", method="concave", regularizer="log",
                             lam=1.0, target_sparsity=0.95, epochs=6, retrain_epochs=10, batch_size=128),
    "lenet300-imp": dict(model="lenet300", dataset="mnist", method="imp", rounds=7, prune_fraction=0.2,
                         epochs=10, batch_size=128),
    # Continuous sparsification and SynFlow at 95 % sparsity: with IMP and concave, the four families.
    # s0 = 0.05, not the reference's 0: with its reset s ← min(s, s0) every round restarts near the cut, and a
    # short search at s0 = 0 prunes past the level on its own (λ ≥ 0 can only prune more)
    "lenet300-cs": dict(model="lenet300", dataset="mnist", method="cs", lam=1.0, target_sparsity=0.95, rounds=3,
                        epochs=2, retrain_epochs=10, batch_size=128, s0=0.05),
    "lenet300-synflow": dict(model="lenet300", dataset="mnist", method="pai", scorer="synflow",
                             target_sparsity=0.95, epochs=10, batch_size=128),
    "resnet20-cifar10": dict(model="resnet20", dataset="cifar10", method="concave", regularizer="log",
                             lam=5.0, epochs=30, retrain_epochs=60, batch_size=128, optimizer="sgd",
                             lr=0.1, weight_decay=1e-4, lr_schedule="cosine", mask_lr=0.01),
}


def preset(preset_name: str, /, **overrides) -> RunConfig:
    if preset_name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {preset_name!r}; known: {', '.join(PRESETS)}")
    base = dict(PRESETS[preset_name])
    if overrides.get("method", base.get("method")) != base.get("method"):
        # another method: the preset's keys that method does not read go back to their defaults
        base = without_unused({k: v for k, v in {**base, "method": overrides["method"]}.items() if k != "rounds"})
    return RunConfig.from_dict({**base, **overrides})
