"""Datasets held as tensors on the training device.

Every dataset is one registered `DatasetInfo` whose ``loader(data_dir, params)``
returns the decoded, un-normalised `RawData` (uint8 images, or float features
for synthetic sets). `load_dataset` selects classes, carves a seeded
validation split out of the training set, normalises, and moves everything to
the device. Minibatches come from `Batches` (no DataLoader); CIFAR-style
augmentation is a vectorized `random_crop_flip` on the batch tensor.

Files live under a data directory: `default_data_dir()` is ``$LOTTERY_DATA``
when set, else ``<project root>/cache/data``. Torchvision sets are read from
there, downloaded when possible, and otherwise fail with `DatasetUnavailable`
telling where to put the files.
"""

from __future__ import annotations

import functools
import os
import pickle
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .registry import Registry

DATASETS = Registry("dataset")

DOWNLOAD_TIMEOUT_S = 15.0  # socket timeout while trying to download (fails fast offline)
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


class DatasetUnavailable(RuntimeError):
    """The dataset's files are not on disk and could not be downloaded."""


class DatasetDamaged(DatasetUnavailable):
    """The dataset's files are on disk but cannot be read (truncated, corrupted, wrong checksum)."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    in_shape: tuple[int, int, int]
    num_classes: int
    offline: bool  # works with no files and no internet
    description: str
    augment: bool  # CIFAR-style random crop + flip for training
    loader: Callable[[Path, dict], RawData]


@dataclass(frozen=True)
class RawData:
    """Decoded data as a loader returns it (CPU tensors, cached per process).

    x: NCHW, uint8 for images (divide by `scale`) or float32 for synthetic
    features; y: int64. `mean`/`std` are per channel, applied after scaling.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    class_names: tuple[str, ...]
    scale: float = 1.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataSplits:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    in_shape: tuple[int, int, int]
    num_classes: int
    class_names: list[str]
    augment: bool
    extras: dict[str, Any]


# ---------------------------------------------------------------- data dir


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """``$LOTTERY_DATA`` if set, else ``<project root>/cache/data``."""
    env = os.environ.get("LOTTERY_DATA")
    return Path(env).expanduser() if env else project_root() / "cache" / "data"


def mnist_available(data_dir: str | Path | None = None) -> bool:
    """True when the four uncompressed MNIST files are in ``<data_dir>/MNIST/raw``."""
    raw = Path(data_dir if data_dir is not None else default_data_dir()) / "MNIST" / "raw"
    return all((raw / f).is_file() for f in MNIST_FILES)


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name)


# ---------------------------------------------------------------- helpers


@contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _torchvision_dataset(cls, name: str, data_dir: Path, train: bool, where: str, how: str):
    """Open a torchvision dataset: from disk, else by download, else DatasetUnavailable.
    Files that are there but unreadable (truncated, corrupted, failing the checksum)
    raise DatasetDamaged, naming them, instead of a traceback or a download attempt."""
    damaged = (f"dataset files are damaged: {name!r} in {where} could not be read; delete them and "
               f"put fresh copies there ({how})")
    try:
        return cls(root=str(data_dir), train=train, download=False)
    except RuntimeError:
        present = _present_files(cls, data_dir)
        if present:  # the files are there, so torchvision's checksum refused them
            raise DatasetDamaged(f"{damaged}. Failing torchvision's checksum: {', '.join(present)}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            OSError) as e:
        raise DatasetDamaged(f"{damaged}. {type(e).__name__}: {str(e).strip()[:200]}") from None
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return cls(root=str(data_dir), train=train, download=True)
    except Exception as e:  # no internet, bad mirror, corrupt archive, ...
        raise DatasetUnavailable(
            f"dataset {name!r} is not available: its files are not in {where} and downloading failed "
            f"({type(e).__name__}: {str(e).strip()[:300]}). {how} "
            f"Or point $LOTTERY_DATA (or data_dir) at a folder that already has them."
        ) from e


def _present_files(cls, data_dir: Path) -> list[str]:
    """A CIFAR-style dataset's batch files that exist on disk (torchvision lists them with
    their md5 in train_list/test_list/meta); [] when none are there or the class lists none."""
    cls = cls.resolve() if hasattr(cls, "resolve") else cls
    names = [f for f, _ in getattr(cls, "train_list", []) + getattr(cls, "test_list", [])]
    meta = getattr(cls, "meta", None)
    if isinstance(meta, dict) and "filename" in meta:
        names.append(meta["filename"])
    folder = data_dir / getattr(cls, "base_folder", "")
    return [n for n in names if (folder / n).is_file()] if names else []


def _as_nchw_uint8(data) -> torch.Tensor:
    t = data if isinstance(data, torch.Tensor) else torch.from_numpy(data)
    if t.ndim == 3:  # N,H,W (MNIST-like)
        return t.unsqueeze(1).contiguous()
    return t.permute(0, 3, 1, 2).contiguous()  # N,H,W,C (CIFAR-like)


def _as_labels(targets) -> torch.Tensor:
    return torch.as_tensor(targets, dtype=torch.int64).clone()


# ---------------------------------------------------------------- loaders


def _load_digits(data_dir: Path, params: dict) -> RawData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images).to(torch.uint8).unsqueeze(1)  # values 0..16
    y = torch.from_numpy(d.target).to(torch.int64)
    # Fixed split (seed 0): the test set never changes.
    tr, te = train_test_split(torch.arange(len(y)).numpy(), test_size=0.2, stratify=d.target, random_state=0)
    tr, te = torch.from_numpy(tr), torch.from_numpy(te)
    train_x = x[tr].contiguous()
    scaled = train_x.float() / 16.0
    return RawData(
        train_x=train_x,
        train_y=y[tr].contiguous(),
        test_x=x[te].contiguous(),
        test_y=y[te].contiguous(),
        class_names=tuple(str(i) for i in range(10)),
        scale=16.0,
        mean=(scaled.mean().item(),),
        std=(scaled.std().item(),),
    )


def _mnist_like(cls, name: str, folder: str, url: str, mean: float, std: float, class_names=None):
    def load(data_dir: Path, params: dict) -> RawData:
        where = f"{data_dir / folder / 'raw'}/"
        how = (
            f"Put the four files {', '.join(MNIST_FILES)} (uncompressed) there; they can be downloaded "
            f"(as .gz, then gunzip) from {url} on a machine with internet."
        )
        sets = [_torchvision_dataset(cls, name, data_dir, train, where, how) for train in (True, False)]
        names = class_names or tuple(str(c).split(" - ")[-1] for c in sets[0].classes)
        return RawData(
            train_x=_as_nchw_uint8(sets[0].data),
            train_y=_as_labels(sets[0].targets),
            test_x=_as_nchw_uint8(sets[1].data),
            test_y=_as_labels(sets[1].targets),
            class_names=tuple(names),
            scale=255.0,
            mean=(mean,),
            std=(std,),
        )

    return load


def _cifar(cls, name: str, folder: str, archive: str, mean, std):
    def load(data_dir: Path, params: dict) -> RawData:
        where = f"{data_dir / folder}/"
        how = (
            f"Download https://www.cs.toronto.edu/~kriz/{archive} on a machine with internet and either "
            f"extract it into {data_dir}/ (giving {where}) or put the archive itself in {data_dir}/."
        )
        sets = [_torchvision_dataset(cls, name, data_dir, train, where, how) for train in (True, False)]
        return RawData(
            train_x=_as_nchw_uint8(sets[0].data),
            train_y=_as_labels(sets[0].targets),
            test_x=_as_nchw_uint8(sets[1].data),
            test_y=_as_labels(sets[1].targets),
            class_names=tuple(sets[0].classes),
            scale=255.0,
            mean=tuple(mean),
            std=tuple(std),
        )

    return load


def _read_rgb(path: Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)


def _load_tiny_imagenet(data_dir: Path, params: dict) -> RawData:
    root = data_dir / "tiny-imagenet-200"
    cache = root / "tensors.pt"
    if not cache.is_file():
        if not (root / "train").is_dir():
            try:
                from torchvision.datasets.utils import download_and_extract_archive

                with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                    download_and_extract_archive(TINY_IMAGENET_URL, str(data_dir), remove_finished=True)
            except Exception as e:
                raise DatasetUnavailable(
                    f"dataset 'tiny_imagenet' is not available: its files are not in {root}/ and downloading "
                    f"failed ({type(e).__name__}: {str(e).strip()[:300]}). Download {TINY_IMAGENET_URL} on a "
                    f"machine with internet and extract it into {data_dir}/ (giving {root}/train, {root}/val, "
                    f"{root}/wnids.txt), or point $LOTTERY_DATA (or data_dir) at a folder that has it."
                ) from e
        _decode_tiny_imagenet(root, cache)
    blob = torch.load(cache, weights_only=True)
    wnids = list(blob["wnids"])
    names = wnids
    words = root / "words.txt"
    if words.is_file():
        lookup = dict(line.rstrip("\n").split("\t", 1) for line in words.read_text().splitlines() if "\t" in line)
        names = [lookup.get(w, w).split(",")[0].strip() for w in wnids]
    return RawData(
        train_x=blob["train_x"],
        train_y=blob["train_y"],
        test_x=blob["test_x"],
        test_y=blob["test_y"],
        class_names=tuple(names),
        scale=255.0,
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2770, 0.2691, 0.2821),
    )


def _decode_tiny_imagenet(root: Path, cache: Path) -> None:
    """Decode the JPEG folder tree once into uint8 tensors saved at `cache`."""
    wnids_file = root / "wnids.txt"
    if wnids_file.is_file():
        wnids = [w.strip() for w in wnids_file.read_text().splitlines() if w.strip()]
    else:
        wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    index = {w: i for i, w in enumerate(wnids)}

    train_files, train_labels = [], []
    for w in wnids:
        files = sorted((root / "train" / w / "images").glob("*.JPEG"))
        train_files += files
        train_labels += [index[w]] * len(files)
    val_files, val_labels = [], []
    for line in sorted((root / "val" / "val_annotations.txt").read_text().splitlines()):
        parts = line.split("\t")
        if len(parts) >= 2:
            val_files.append(root / "val" / "images" / parts[0])
            val_labels.append(index[parts[1]])

    def stack(files):
        return torch.stack([_read_rgb(f) for f in files]) if files else torch.empty(0, 3, 64, 64, dtype=torch.uint8)

    blob = {
        "train_x": stack(train_files),
        "train_y": torch.tensor(train_labels, dtype=torch.int64),
        "test_x": stack(val_files),
        "test_y": torch.tensor(val_labels, dtype=torch.int64),
        "wnids": wnids,
    }
    tmp = cache.with_suffix(".pt.tmp")
    torch.save(blob, tmp)
    os.replace(tmp, cache)


PLANTED_DEFAULTS = {"dim": 100, "k": 10, "n_train": 400, "n_test": 2000, "noise": 0.0, "planted_seed": 0}


def _load_planted(data_dir: Path, params: dict) -> RawData:
    unknown = set(params) - set(PLANTED_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown planted params {sorted(unknown)}; known: {sorted(PLANTED_DEFAULTS)}")
    p = {**PLANTED_DEFAULTS, **params}
    dim, k, n_train, n_test, noise = int(p["dim"]), int(p["k"]), int(p["n_train"]), int(p["n_test"]), float(p["noise"])
    if not 1 <= k <= dim:
        raise ValueError(f"planted: need 1 <= k <= dim, got k={k}, dim={dim}")
    if n_train < 1 or n_test < 0:
        raise ValueError(f"planted: need n_train >= 1 and n_test >= 0, got {n_train}, {n_test}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"planted: noise is a flip probability in [0, 1], got {noise}")

    g = torch.Generator().manual_seed(int(p["planted_seed"]))
    n = n_train + n_test
    x = torch.randn(n, dim, generator=g)
    support = torch.randperm(dim, generator=g)[:k]
    signs = torch.randint(0, 2, (k,), generator=g).float() * 2 - 1
    mags = 1 + torch.randn(k, generator=g).abs()
    w = torch.zeros(dim)
    w[support] = signs * mags
    y = (x @ w > 0).long()
    flip = torch.rand(n, generator=g) < noise
    y = torch.where(flip, 1 - y, y)
    x = x.view(n, 1, 1, dim)
    return RawData(
        train_x=x[:n_train].contiguous(),
        train_y=y[:n_train].contiguous(),
        test_x=x[n_train:].contiguous(),
        test_y=y[n_train:].contiguous(),
        class_names=("neg", "pos"),
        extras={"target_mask": (w != 0).float().view(1, dim), "target_weight": w.view(1, dim).clone()},
    )


SYNTHETIC_DEFAULTS = {"n_train": 5000, "n_test": 1000, "seed": 0}


def _load_synthetic_cifar(data_dir: Path, params: dict) -> RawData:
    """CIFAR-shaped images (3x32x32, 10 classes) made offline: each class is a
    fixed random template plus noise, so the task is learnable. For speed
    benchmarks and GPU smoke tests where the real CIFAR files are absent."""
    unknown = set(params) - set(SYNTHETIC_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown synthetic_cifar params {sorted(unknown)}; known: {sorted(SYNTHETIC_DEFAULTS)}")
    p = {**SYNTHETIC_DEFAULTS, **params}
    g = torch.Generator().manual_seed(int(p["seed"]))
    n = int(p["n_train"]) + int(p["n_test"])
    templates = torch.rand(10, 3, 32, 32, generator=g) * 255
    y = torch.randint(0, 10, (n,), generator=g)
    x = (0.5 * templates[y] + 0.5 * torch.rand(n, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    k = int(p["n_train"])
    return RawData(train_x=x[:k].contiguous(), train_y=y[:k].contiguous(), test_x=x[k:].contiguous(),
                   test_y=y[k:].contiguous(), class_names=tuple(str(i) for i in range(10)), scale=255.0,
                   mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _register(name, in_shape, num_classes, offline, description, augment, loader):
    DATASETS.register(name, DatasetInfo(name, in_shape, num_classes, offline, description, augment, loader))


def _tv(attr: str):
    """Resolve a torchvision dataset class lazily (keeps import of this module light)."""

    def make(*args, **kwargs):
        import torchvision.datasets as tvd

        return getattr(tvd, attr)(*args, **kwargs)

    def resolve():
        import torchvision.datasets as tvd

        return getattr(tvd, attr)

    make.resolve = resolve  # the class itself, for its file lists
    return make


_register(
    "digits", (1, 8, 8), 10, True, "scikit-learn 8x8 handwritten digits (1797 images, bundled)", False, _load_digits
)
_register(
    "mnist",
    (1, 28, 28),
    10,
    False,
    "MNIST handwritten digits (60k train / 10k test)",
    False,
    _mnist_like(
        _tv("MNIST"),
        "mnist",
        "MNIST",
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        0.1307,
        0.3081,
        tuple(str(i) for i in range(10)),
    ),
)
_register(
    "fashion_mnist",
    (1, 28, 28),
    10,
    False,
    "Fashion-MNIST clothing images (60k train / 10k test)",
    False,
    _mnist_like(
        _tv("FashionMNIST"),
        "fashion_mnist",
        "FashionMNIST",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        0.2860,
        0.3530,
    ),
)
_register(
    "cifar10",
    (3, 32, 32),
    10,
    False,
    "CIFAR-10 colour images (50k train / 10k test)",
    True,
    _cifar(
        _tv("CIFAR10"),
        "cifar10",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
    ),
)
_register(
    "cifar100",
    (3, 32, 32),
    100,
    False,
    "CIFAR-100 colour images (50k train / 10k test)",
    True,
    _cifar(
        _tv("CIFAR100"),
        "cifar100",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
)
_register(
    "tiny_imagenet",
    (3, 64, 64),
    200,
    False,
    "Tiny ImageNet 64x64 (100k train / 10k official val used as test)",
    True,
    _load_tiny_imagenet,
)
_register(
    "planted",
    (1, 1, PLANTED_DEFAULTS["dim"]),
    2,
    True,
    "synthetic linearly separable problem with a known k-sparse target mask (params: dim, k, n_train, "
    "n_test, noise, planted_seed)",
    False,
    _load_planted,
)


# ---------------------------------------------------------------- load_dataset


@functools.lru_cache(maxsize=8)
def _load_raw(name: str, data_dir: str, params_key: tuple) -> RawData:
    return dataset_info(name).loader(Path(data_dir), dict(params_key))


def clear_cache() -> None:
    """Forget the in-process cache of decoded datasets."""
    _load_raw.cache_clear()


def _check_classes(classes, num_classes: int) -> list[int]:
    allowed = f"allowed: distinct integers in 0..{num_classes - 1}"
    try:
        ids = [int(c) for c in classes]
    except (TypeError, ValueError):
        raise ValueError(f"classes must be a list of integer class ids, got {classes!r}; {allowed}") from None
    if not ids:
        raise ValueError(f"classes must not be empty; {allowed}")
    bad = [orig for c, orig in zip(ids, classes) if not 0 <= c < num_classes or c != orig]
    if bad:
        raise ValueError(f"invalid classes {list(classes)!r} (bad ids: {bad!r}); {allowed}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"classes {ids!r} has duplicates; {allowed}")
    return ids


def _select(x: torch.Tensor, y: torch.Tensor, ids: list[int] | None, num_classes: int):
    if ids is None:
        return x, y
    lut = torch.full((num_classes,), -1, dtype=torch.int64)
    lut[torch.tensor(ids)] = torch.arange(len(ids))
    new_y = lut[y]
    keep = (new_y >= 0).nonzero().squeeze(1)
    return x[keep], new_y[keep]


def _to_device(x: torch.Tensor, raw: RawData, device) -> torch.Tensor:
    x = x.to(device).to(torch.float32)
    if raw.scale != 1.0:
        x = x / raw.scale
    if raw.mean is not None:
        c = x.shape[1]
        mean = torch.tensor(raw.mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
        std = torch.tensor(raw.std, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    classes: list[int] | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    device: str | torch.device = "cpu",
    params: dict | None = None,
) -> DataSplits:
    """Load `name` as float32 NCHW / int64 tensors on `device`.

    `classes` keeps those original labels (train, val and test) and remaps them
    to 0..len(classes)-1 in the given order. The validation split is a seeded
    (`split_seed`) random `val_fraction` of the training set; the test set
    never depends on `split_seed`. `params` configures synthetic datasets
    (`planted`, `synthetic_cifar`) and is ignored by the others. Returned tensors are fresh
    copies: modifying them does not touch the process cache.
    """
    info = dataset_info(name)
    if not 0.0 <= float(val_fraction) <= 0.5:
        raise ValueError(f"val_fraction must be in [0, 0.5], got {val_fraction}")
    params = dict(params or {})
    if name not in ("planted", "synthetic_cifar"):
        params = {}  # only generated sets take params; keep the cache key stable
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    dir_key = "" if info.offline else str(data_dir.expanduser().resolve())  # offline sets need no files
    raw = _load_raw(name, dir_key, tuple(sorted(params.items())))

    in_shape = tuple(int(s) for s in raw.train_x.shape[1:])
    num_classes = info.num_classes
    ids = _check_classes(classes, num_classes) if classes is not None else None
    train_x, train_y = _select(raw.train_x, raw.train_y, ids, num_classes)
    test_x, test_y = _select(raw.test_x, raw.test_y, ids, num_classes)

    n = len(train_y)
    n_val = int(round(n * float(val_fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(split_seed)))
    val_idx, tr_idx = perm[:n_val].sort().values, perm[n_val:].sort().values

    device = torch.device(device)
    extras = {k: v.to(device).clone() if isinstance(v, torch.Tensor) else v for k, v in raw.extras.items()}
    return DataSplits(
        train_x=_to_device(train_x[tr_idx], raw, device),
        train_y=train_y[tr_idx].to(device),
        val_x=_to_device(train_x[val_idx], raw, device),
        val_y=train_y[val_idx].to(device),
        test_x=_to_device(test_x, raw, device),
        test_y=test_y.clone().to(device),
        in_shape=in_shape,
        num_classes=len(ids) if ids is not None else num_classes,
        class_names=[raw.class_names[c] for c in ids] if ids is not None else list(raw.class_names),
        augment=info.augment,
        extras=extras,
    )


def normalisation(name: str, data_dir: str | Path | None = None, params: dict | None = None) -> dict:
    """How `load_dataset` turns stored pixels into model inputs: x / scale, then (x − mean) / std
    per channel (mean/std None: no shift). What a deployed model needs to classify raw images."""
    info = dataset_info(name)
    params = dict(params or {}) if name in ("planted", "synthetic_cifar") else {}
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    dir_key = "" if info.offline else str(data_dir.expanduser().resolve())
    raw = _load_raw(name, dir_key, tuple(sorted(params.items())))
    return {"scale": float(raw.scale), "mean": None if raw.mean is None else [float(v) for v in raw.mean],
            "std": None if raw.std is None else [float(v) for v in raw.std]}


# ---------------------------------------------------------------- batches and augmentation


def _rand_device(generator: torch.Generator | None, x: torch.Tensor) -> torch.device:
    return generator.device if generator is not None else x.device


def _to_device_async(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`. From the CPU to a GPU the copy goes through pinned memory without
    blocking: a copy from ordinary (pageable) memory first waits for everything queued on
    the GPU, which made every augmented step a full synchronisation (the CPU could not
    queue the next step while the GPU ran this one). PyTorch's pinned-memory cache keeps
    the buffer until the copy has finished."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def random_crop_flip(
    x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4, flip: bool = True
) -> torch.Tensor:
    """Per-sample random crop (zero padding `pad`) and random horizontal flip of an NCHW batch.

    Vectorized: the batch is padded once and each output is gathered from a
    window of the padded image at a random offset in [0, 2*pad]; a flipped
    sample reads that window's columns in reverse. Randomness comes from
    `generator` (which may live on the CPU while `x` is on a GPU).
    """
    n, c, h, w = x.shape
    if n == 0:
        return x.clone()
    rdev = _rand_device(generator, x)
    hp, wp = h + 2 * pad, w + 2 * pad
    # drawn in this order (offsets, then flips) as always, and moved to x's device in one copy
    draws = [torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=rdev),
             torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=rdev)]
    if flip:
        draws.append((torch.rand(n, generator=generator, device=rdev) < 0.5).long())
    draws = _to_device_async(torch.stack(draws), x.device)
    oy, ox = draws[0], draws[1]
    cols = torch.arange(w, device=x.device).expand(n, w)
    if flip:
        cols = torch.where(draws[2, :, None].bool(), (w - 1) - cols, cols)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = ox[:, None] + cols  # (n, w)
    idx = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    padded = F.pad(x, (pad, pad, pad, pad)).reshape(n, c, hp * wp)
    return padded.gather(2, idx).view(n, c, h, w)


class Batches:
    """Minibatches of (x, y) tensors already on the device, without a DataLoader.

    Each iteration is one epoch; with `shuffle` the order is a fresh
    `torch.randperm` from `generator`, so a seeded generator gives a
    reproducible sequence of epochs. With `augment`, each batch goes through
    `random_crop_flip` (same generator).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        augment: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        pad: int = 4,
    ):
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.generator = generator
        self.pad = pad

    def __len__(self) -> int:
        n, b = len(self.y), self.batch_size
        return n // b if self.drop_last else (n + b - 1) // b

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, b = len(self.y), self.batch_size
        order = None
        if self.shuffle:
            rdev = _rand_device(self.generator, self.x)
            order = _to_device_async(torch.randperm(n, generator=self.generator, device=rdev), self.x.device)
        for i in range(len(self)):
            if order is None:
                xb, yb = self.x[i * b : (i + 1) * b], self.y[i * b : (i + 1) * b]
            else:
                idx = order[i * b : (i + 1) * b]
                xb, yb = self.x[idx], self.y[idx]
            if self.augment:
                xb = random_crop_flip(xb, self.generator, self.pad)
            yield xb, yb
_register(
    "synthetic_cifar",
    (3, 32, 32),
    10,
    True,
    "generated CIFAR-shaped images (10 noisy class templates; params: n_train, n_test, seed) for benchmarks",
    True,
    _load_synthetic_cifar,
)
