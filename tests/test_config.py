"""RunConfig: defaults, JSON round trip, pinned content hashes, and one
ConfigError (naming the key and its allowed range) per invalid value."""

import json
import math

import pytest

from engine.config import PRESETS, ConfigError, RunConfig, preset
from engine.data import DATASETS
from engine.models import MODELS
from engine.regularizers import REGULARIZERS

# Pinned: a change here means a default or the hashing changed, which changes
# every stored run's hash. Update deliberately, never to make a test pass.
# Hash version 2 (issue 15): every hash changed, so runs of the engine before the log penalty
# was normalised (R(1)=1, same keys) are never reused as equal to today's configs.
HASH_DEFAULT = "40a79e1cf590"
HASH_DIGITS = "dd6842765a8a"
HASH_MNIST_01 = "fef8ed66cdb0"


def test_defaults_validate():
    cfg = RunConfig()
    cfg.validate()
    assert RunConfig.from_dict({}) == cfg
    assert cfg.model == "lenet300" and cfg.dataset == "digits" and cfg.method == "concave"
    assert cfg.regularizer == "log" and cfg.lam == 1.0 and cfg.eps == 0.01 and cfg.threshold == 0.5
    assert cfg.rewind_point() == ("init", 0)
    assert cfg.retrain_epochs_ == cfg.epochs == 10
    assert cfg.reg_params_ == {"eps": 0.01}


@pytest.mark.parametrize("cfg", [
    RunConfig(),
    RunConfig(model="logreg", dataset="mnist", classes=[0, 1], lam=2.0),
    RunConfig(regularizer="lp", reg_params={"p": 0.25}, target_sparsity=0.9, rewind="epoch:2", name="x/../y"),
], ids=["default", "mnist01", "lp"])
def test_json_round_trip(cfg):
    text = cfg.to_json()
    assert json.loads(text) == cfg.to_dict()
    back = RunConfig.from_json(text)
    assert back == cfg
    assert back.content_hash() == cfg.content_hash()
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_content_hash_stable_and_ignores_name_and_device():
    cfg = RunConfig()
    h = cfg.content_hash()
    assert len(h) == 12 and all(c in "0123456789abcdef" for c in h)
    assert RunConfig().content_hash() == h
    assert cfg.replace(name="my run").content_hash() == h
    assert cfg.replace(device="cpu").content_hash() == h
    assert cfg.replace(device="cuda:1", name="other").content_hash() == h
    assert cfg.replace(lam=1.5).content_hash() != h
    assert cfg.replace(seed=1).content_hash() != h
    assert cfg.replace(lam=1.5).content_hash() != cfg.replace(lam=1.25).content_hash()


def test_content_hash_pinned():
    assert RunConfig().content_hash() == HASH_DEFAULT
    assert preset("digits").content_hash() == HASH_DIGITS
    assert RunConfig(model="logreg", dataset="mnist", classes=[0, 1], lam=2.0).content_hash() == HASH_MNIST_01


def test_content_hash_is_salted_with_its_version():
    """Version 1 hashed the keys alone; a store written then holds `log` runs trained under the
    unnormalised penalty with the same keys, so version 2 must not give the same hash."""
    import hashlib
    cfg = RunConfig()
    d = {k: v for k, v in cfg.to_dict().items() if v is not None and k not in RunConfig.EXECUTION_KEYS}
    v1 = hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert v1 == "4c64128537b4"          # the version-1 pin this test replaced
    assert RunConfig.HASH_VERSION == 2 and cfg.content_hash() != v1
    # execution settings stay out, the seed is in
    assert cfg.replace(precision="bf16", compile=True, device="cpu", name="x").content_hash() == cfg.content_hash()
    assert cfg.replace(seed=7).content_hash() != cfg.content_hash()


def test_content_hash_same_for_int_and_float_values():
    """Regression (fixed): `--set lam=2` (JSON int) and the preset's lam=2.0 are the same
    experiment but hash differently, because from_dict keeps the int and the hash
    is taken over json.dumps of the raw values."""
    a = RunConfig.from_dict({"lam": 2})
    b = RunConfig.from_dict({"lam": 2.0})
    assert a.content_hash() == b.content_hash()


def test_replace_validates():
    with pytest.raises(ConfigError):
        RunConfig().replace(lam=-1.0)
    assert RunConfig().replace(lam=3.0).lam == 3.0


# ---------------------------------------------------------------- invalid values

def _err(**changes) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(changes)
    return info.value


@pytest.mark.parametrize("changes, key, must_contain", [
    ({"lam": -1.0}, "lam", ["lam", "[0, inf)"]),
    ({"lam": float("nan")}, "lam", ["lam", "[0, inf)", "NaN"]),
    ({"lam": "big"}, "lam", ["lam", "[0, inf)", "'big'"]),
    ({"lam": True}, "lam", ["lam", "[0, inf)"]),
    ({"eps": 0.0}, "eps", ["eps", "(0, 1]"]),
    ({"eps": -1.0}, "eps", ["eps", "(0, 1]"]),
    ({"eps": 1.5}, "eps", ["eps", "(0, 1]"]),
    ({"threshold": 0.0}, "threshold", ["threshold", "(0, 1)"]),
    ({"threshold": 1.0}, "threshold", ["threshold", "(0, 1)"]),
    ({"threshold": 1.5}, "threshold", ["threshold", "(0, 1)"]),
    ({"prune_fraction": 0.0}, "prune_fraction", ["prune_fraction", "(0, 1)"]),
    ({"prune_fraction": 1.0}, "prune_fraction", ["prune_fraction", "(0, 1)"]),
    ({"model": "alexnet"}, "model", ["model", "lenet300", "resnet20", "'alexnet'"]),
    ({"dataset": "imagenet"}, "dataset", ["dataset", "digits", "mnist", "cifar10"]),
    ({"method": "magic"}, "method", ["method", "concave", "imp", "random", "dense"]),
    ({"regularizer": "l0"}, "regularizer", ["regularizer", "l1", "log", "scad", "mcp"]),
    ({"optimizer": "rmsprop"}, "optimizer", ["optimizer", "sgd", "adam"]),
    ({"model": "resnet20", "dataset": "digits"}, "model", ["resnet20", "32"]),
    ({"epochs": 0}, "epochs", ["epochs", "[1, 10000]"]),
    ({"epochs": "5"}, "epochs", ["epochs", "integer", "'5'"]),
    ({"epochs": 5.0}, "epochs", ["epochs", "integer"]),
    ({"classes": "01"}, "classes", ["classes", "[0, 9]"]),
    ({"classes": [0, 12]}, "classes", ["classes", "[0, 9]", "digits", "12"]),
    ({"classes": [3]}, "classes", ["classes", "≥ 2"]),
    ({"classes": [1, 1]}, "classes", ["classes", "distinct"]),
    ({"rewind": "epoch:x"}, "rewind", ["rewind", "init", "epoch:K", "iter:K"]),
    ({"rewind": "epoch:50", "epochs": 10}, "rewind", ["rewind", "epochs=10"]),
    ({"device": "tpu"}, "device", ["device", "cpu", "cuda"]),
    ({"regularizer": "lp", "reg_params": {"foo": 1.0}}, "reg_params", ["'foo'", "lp", "takes: p"]),
    ({"reg_params": {"sigma": 1.0}}, "reg_params", ["'sigma'", "log", "nothing"]),
    ({"reg_params": {"eps": 0.1}}, "reg_params", ["'eps'", "its own key"]),
    ({"regularizer": "lp", "reg_params": {"p": 1.5}}, "reg_params", ["reg_params.p", "(0, 1)", "1.5"]),
    ({"regularizer": "lp", "reg_params": {"p": float("nan")}}, "reg_params", ["reg_params.p", "(0, 1)"]),
    ({"regularizer": "mcp", "reg_params": {"gamma": "x"}}, "reg_params", ["reg_params.gamma", "(0, 1]"]),
    ({"reg_params": [1, 2]}, "reg_params", ["reg_params", "object"]),
    ({"mask_init": 0.0}, "mask_init", ["mask_init", "(0, 1]"]),
    ({"val_fraction": 0.6}, "val_fraction", ["val_fraction", "[0, 0.5]"]),
    ({"momentum": 1.0}, "momentum", ["momentum", "[0, 1)"]),
    ({"seed": -1}, "seed", ["seed", "integer"]),
    ({"name": "a\x00b"}, "name", ["name", "NUL"]),
    ({"name": "x" * 201}, "name", ["name", "200"]),
    ({"target_sparsity": 1.0}, "target_sparsity", ["target_sparsity", "(0, 1)"]),
    ({"threshold_mode": "topk"}, "target_sparsity", ["target_sparsity", "topk"]),
    ({"method": "random"}, "target_sparsity", ["target_sparsity", "random_from"]),
    ({"warm_start_rewind": "source"}, "warm_start_rewind", ["warm_start_rewind", "warm_start"]),
    ({"method": "imp", "rewind": "reinit"}, "rewind", ["reinit", "reinit_from"]),
    ({"method": "concave", "rounds": 2, "rewind": "reinit"}, "rewind", ["reinit", "reinit_from"]),
    ({"method": "reinit"}, "reinit_from", ["reinit_from"]),
    ({"method": "random", "reinit_from": "x", "target_sparsity": 0.5}, "reinit_from", ["method=reinit"]),
    ({"method": "reinit", "reinit_from": "x", "rewind": "epoch:1"}, "rewind", ["rewind", "reinit"]),
    ({"method": "random", "target_sparsity": 0.5, "rewind": "epoch:1"}, "rewind", ["random_from"]),
    ({"warm_start": "x", "warm_start_rewind": "theirs"}, "warm_start_rewind", ["own", "source"]),
    ({"warm_start": "x", "warm_start_rewind": "source", "rewind": "finetune"}, "warm_start_rewind",
     ["rewind", "finetune"]),
])
def test_invalid_value_raises_one_config_error(changes, key, must_contain):
    e = _err(**changes)
    assert isinstance(e, ValueError)
    assert e.key == key
    msg = str(e)
    for part in must_contain:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_unknown_key_lists_known_keys():
    e = _err(lamda=1.0)
    assert e.key == "lamda"
    msg = str(e)
    assert "'lamda'" in msg
    for known in ("lam", "eps", "model", "dataset", "threshold", "reg_params", "seed"):
        assert known in msg


def test_unknown_model_lists_every_model():
    msg = str(_err(model="alexnet"))
    for name in MODELS.names():
        assert name in msg
    msg = str(_err(dataset="nope"))
    for name in DATASETS.names():
        assert name in msg
    msg = str(_err(regularizer="nope"))
    for name in REGULARIZERS.names():
        assert name in msg


def test_non_object_and_bad_json():
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict([1, 2])
    assert info.value.key == "config"
    with pytest.raises(ConfigError) as info:
        RunConfig.from_json("{bad")
    assert info.value.key == "config" and "JSON" in str(info.value)


@pytest.mark.parametrize("changes, key", [
    ({"device": "cpu\n"}, "device"),
    ({"rewind": "init\n"}, "rewind"),
])
def test_trailing_newline_is_rejected(changes, key):
    """Regression (fixed): REWIND_RE / DEVICE_RE use `^...$` with re.match, and `$` also
    matches before a trailing newline, so 'cpu\\n' passes validation (and then
    torch.device('cpu\\n') fails at run time instead of a ConfigError)."""
    assert _err(**changes).key == key


# ---------------------------------------------------------------- valid edge values

@pytest.mark.parametrize("changes", [
    {"lam": 0.0}, {"lam": 1e6}, {"eps": 1.0}, {"threshold": 1e-6}, {"epochs": 1},
    {"rewind": "epoch:0"}, {"rewind": "iter:500"}, {"rewind": "finetune"}, {"rewind": "reinit"},
    {"device": "cpu"}, {"device": "cuda:3"}, {"classes": [0, 9]},
    {"regularizer": "scad", "reg_params": {"a": 3.0, "b": 0.1}},
    {"regularizer": "exp", "reg_params": {"sigma": 1.0}},
    {"model": "resnet20", "dataset": "cifar10"},
    {"method": "random", "target_sparsity": 0.9},
    {"method": "imp", "output_prune_fraction": 0.0},
])
def test_valid_edge_values(changes):
    cfg = RunConfig.from_dict(changes)
    for k, v in changes.items():
        assert getattr(cfg, k) == v


def test_rewind_point_parsing():
    assert RunConfig(rewind="epoch:3").rewind_point() == ("epoch", 3)
    assert RunConfig(rewind="iter:120").rewind_point() == ("iter", 120)
    assert RunConfig(rewind="finetune").rewind_point() == ("finetune", 0)


def test_reg_params_resolved_with_eps():
    cfg = RunConfig.from_dict({"regularizer": "lp", "eps": 0.05, "reg_params": {"p": 0.3}})
    assert cfg.reg_params_ == {"p": 0.3, "eps": 0.05}
    cfg = RunConfig.from_dict({"regularizer": "scad", "reg_params": {"a": 4.0}})
    assert cfg.reg_params_ == {"a": 4.0, "b": 0.2}


# ---------------------------------------------------------------- presets

@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_validate(name):
    cfg = preset(name)
    cfg.validate()
    for k, v in PRESETS[name].items():
        assert getattr(cfg, k) == v
    assert RunConfig.from_json(cfg.to_json()) == cfg


def test_preset_overrides_and_unknown():
    cfg = preset("digits", lam=3.0, seed=7)
    assert cfg.lam == 3.0 and cfg.seed == 7 and cfg.batch_size == 64
    with pytest.raises(ConfigError) as info:
        preset("nope")
    assert info.value.key == "preset" and "digits" in str(info.value)
    with pytest.raises(ConfigError) as info:
        preset("digits", lam=-1.0)
    assert info.value.key == "lam"


def test_preset_can_override_the_name_field():
    """The preset's own name is positional-only, so the config field `name` (the run label) can be set."""
    cfg = preset("digits", name="my run")
    assert cfg.name == "my run"
    assert cfg.content_hash() == HASH_DIGITS


def test_mnist_8_pixel_preset_is_binary_logreg():
    cfg = preset("mnist-8-pixel")
    # λ 10: 7 pixels at 99.67% in docs/RESULTS.md (log on ℓ1's scale)
    assert cfg.model == "logreg" and cfg.classes == [0, 1] and math.isclose(cfg.lam, 10.0)


def test_unset_optional_keys_stay_out_of_the_hash():
    """Adding an optional key (default None) later must not change existing hashes."""
    cfg = RunConfig()
    assert cfg.replace(warm_start=None).content_hash() == cfg.content_hash()
    warm = cfg.replace(warm_start="abc")
    assert warm.replace(warm_start_rewind="own").content_hash() == warm.content_hash()  # the default, spelled out
    assert cfg.replace(target_sparsity=0.9).content_hash() != cfg.content_hash()


# ---------------------------------------------------------------- issue 20: an option the method does not use

@pytest.mark.parametrize("cfg, key, users", [
    (dict(method="imp", target_sparsity=0.9), "target_sparsity", "concave, cs, random, pai"),
    (dict(method="dense", lam=5.0), "lam", "concave, cs"),
    (dict(method="concave", prune_fraction=0.5), "prune_fraction", "imp"),
    (dict(method="pai", target_sparsity=0.9, rounds=3), "rounds", "concave, cs, imp"),
    (dict(method="cs", regularizer="l1"), "regularizer", "concave"),
])
def test_a_key_the_method_does_not_use_is_refused_naming_who_uses_it(cfg, key, users):
    """`--set target_sparsity=0.9` on IMP ran to 80 % remaining with exit 0 (issue 20)."""
    e = _err(**cfg)
    assert e.key == key and f"it is used by {users}" in str(e) and f"method={cfg['method']}" in str(e)


def test_defaults_spelled_out_are_not_unused_keys():
    """A stored config spells every key out (lam=1.0 on IMP, rounds=1 on dense): that is no error,
    and a change of method drops what the new method does not read."""
    for m in ("imp", "dense", "pai", "cs"):
        extra = {"target_sparsity": 0.9} if m == "pai" else {}
        full = RunConfig.from_dict({"method": m, **extra}).to_dict()
        assert RunConfig.from_dict(full).to_dict() == full
    dense = preset("digits").replace(method="dense")
    assert dense.lam == 1.0 and dense.rounds == 1
    assert preset("lenet300-cs").replace(method="imp").target_sparsity is None


def test_cli_refuses_an_unused_set_but_a_preset_may_change_method(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from engine.__main__ import _load_config, build_parser
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run([sys.executable, "-m", "engine", "run", "--preset", "lenet300-imp", "--set",
                        "target_sparsity=0.9", "--home", str(tmp_path / "h")], cwd=root, capture_output=True,
                       text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "target_sparsity does not apply to method=imp" in lines[0] and "concave" in lines[0]
    assert not (tmp_path / "h").exists() or not any((tmp_path / "h").rglob("config.json"))
    args = build_parser().parse_args(["run", "--preset", "digits", "--set", "method=imp", "--set", "rounds=2"])
    cfg = _load_config(args)
    assert cfg.method == "imp" and cfg.rounds == 2 and cfg.lam == 1.0
