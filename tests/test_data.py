import pytest
import torch
import torch.nn.functional as F

from engine.data import (
    DATASETS,
    Batches,
    DatasetUnavailable,
    dataset_info,
    default_data_dir,
    load_dataset,
    mnist_available,
    random_crop_flip,
)

DATA = default_data_dir()  # $LOTTERY_DATA when set


def _row_keys(x: torch.Tensor) -> torch.Tensor:
    """An order-free fingerprint of the rows of x (sorted per-row projections)."""
    proj = torch.linspace(1.0, 2.0, x[0].numel(), dtype=torch.float64)
    return (x.flatten(1).double() @ proj).sort().values


# ---------------------------------------------------------------- registry


def test_registry_and_info():
    for name in ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "tiny_imagenet", "planted"]:
        assert name in DATASETS
    info = dataset_info("digits")
    assert info.in_shape == (1, 8, 8) and info.num_classes == 10 and info.offline and not info.augment
    assert dataset_info("cifar100").num_classes == 100 and dataset_info("cifar10").augment
    assert dataset_info("tiny_imagenet").in_shape == (3, 64, 64) and dataset_info("tiny_imagenet").num_classes == 200
    assert dataset_info("planted").offline


def test_unknown_dataset_lists_known_names():
    with pytest.raises(KeyError, match="known:.*digits.*mnist"):
        dataset_info("imagenet-22k")
    with pytest.raises(KeyError, match="digits"):
        load_dataset("nope", DATA)


# ---------------------------------------------------------------- digits


def test_digits_offline_shapes_and_splits(tmp_path):
    d = load_dataset("digits", tmp_path, split_seed=0)  # no files needed
    assert d.train_x.shape[1:] == (1, 8, 8) and d.train_x.dtype == torch.float32
    assert d.train_y.dtype == torch.int64
    assert d.in_shape == (1, 8, 8) and d.num_classes == 10 and d.class_names == [str(i) for i in range(10)]
    assert not d.augment
    full = load_dataset("digits", tmp_path, val_fraction=0.0)
    assert len(full.val_y) == 0
    assert len(full.train_y) == 1437 and len(full.test_y) == 360  # stratified 80/20 of 1797
    assert len(d.train_y) + len(d.val_y) == len(full.train_y)
    assert len(d.val_y) == round(0.1 * len(full.train_y))
    assert set(d.test_y.tolist()) == set(range(10)) and set(d.train_y.tolist()) == set(range(10))
    # train + val is exactly the training split (so val never overlaps test by construction)
    both = torch.cat([d.train_x, d.val_x])
    assert torch.allclose(_row_keys(both), _row_keys(full.train_x))
    assert torch.equal(torch.cat([d.train_y, d.val_y]).sort().values, full.train_y.sort().values)
    # train statistics are normalised
    assert abs(full.train_x.mean().item()) < 1e-3 and abs(full.train_x.std().item() - 1) < 1e-2


def test_digits_split_seed(tmp_path):
    a = load_dataset("digits", tmp_path, split_seed=1)
    b = load_dataset("digits", tmp_path, split_seed=1)
    c = load_dataset("digits", tmp_path, split_seed=2)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert not torch.equal(_row_keys(a.val_x), _row_keys(c.val_x))
    # the test set never depends on split_seed
    assert torch.equal(a.test_x, c.test_x) and torch.equal(a.test_y, c.test_y)


def test_returned_tensors_are_copies(tmp_path):
    a = load_dataset("digits", tmp_path)
    before = a.test_x.clone()
    a.test_x.zero_()
    a.train_x.zero_()
    b = load_dataset("digits", tmp_path)
    assert torch.equal(b.test_x, before)


def test_digits_class_subset_remaps_in_order(tmp_path):
    full = load_dataset("digits", tmp_path, val_fraction=0.0)
    sub = load_dataset("digits", tmp_path, classes=[5, 3], val_fraction=0.0)
    assert sub.num_classes == 2 and sub.class_names == ["5", "3"]
    assert set(sub.train_y.tolist()) == {0, 1} and set(sub.test_y.tolist()) == {0, 1}
    for split in ("train", "test"):
        fx, fy = getattr(full, f"{split}_x"), getattr(full, f"{split}_y")
        sx, sy = getattr(sub, f"{split}_x"), getattr(sub, f"{split}_y")
        # label 0 <-> original 5, label 1 <-> original 3 (original order is preserved)
        assert torch.equal(sx[sy == 0], fx[fy == 5])
        assert torch.equal(sx[sy == 1], fx[fy == 3])
        assert len(sy) == int(((fy == 3) | (fy == 5)).sum())
    # val carved after selection also contains only the two classes
    withval = load_dataset("digits", tmp_path, classes=[3, 5])
    assert set(withval.val_y.tolist()) <= {0, 1} and len(withval.val_y) > 0


@pytest.mark.parametrize("bad", [[0, 10], [-1], [], [1, 1], [1.5]])
def test_invalid_classes(tmp_path, bad):
    with pytest.raises(ValueError, match="classes"):
        load_dataset("digits", tmp_path, classes=bad)


def test_invalid_val_fraction(tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", tmp_path, val_fraction=0.6)


# ---------------------------------------------------------------- mnist / unavailable


@pytest.mark.skipif(not mnist_available(DATA), reason="real MNIST files not found in $LOTTERY_DATA/MNIST/raw")
def test_mnist_real_files():
    d = load_dataset("mnist", DATA, val_fraction=0.1)
    assert d.train_x.shape == (54000, 1, 28, 28) and d.val_x.shape == (6000, 1, 28, 28)
    assert d.test_x.shape == (10000, 1, 28, 28) and d.in_shape == (1, 28, 28) and d.num_classes == 10
    assert abs(d.train_x.mean().item()) < 0.05 and abs(d.train_x.std().item() - 1) < 0.05
    s = load_dataset("mnist", DATA, classes=[0, 1])
    assert len(s.train_y) + len(s.val_y) == 12665 and len(s.test_y) == 2115
    assert s.num_classes == 2 and set(s.test_y.tolist()) == {0, 1}


def test_unavailable_dataset_offline(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("fashion_mnist", empty)
    msg = str(err.value)
    assert "fashion_mnist" in msg and str(empty.resolve() / "FashionMNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg
    assert isinstance(err.value, RuntimeError)


def test_tiny_imagenet_folder_layout(tmp_path):
    from PIL import Image

    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n")

    def save(path, value):
        Image.new("RGB", (64, 64), (value, value, value)).save(path, format="JPEG")

    for i, w in enumerate(wnids):
        (root / "train" / w / "images").mkdir(parents=True)
        for j in range(3):
            save(root / "train" / w / "images" / f"{w}_{j}.JPEG", 40 + 160 * i)
    (root / "val" / "images").mkdir(parents=True)
    ann = []
    for j, i in enumerate([1, 0]):
        save(root / "val" / "images" / f"val_{j}.JPEG", 40 + 160 * i)
        ann.append(f"val_{j}.JPEG\t{wnids[i]}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")

    d = load_dataset("tiny_imagenet", tmp_path, val_fraction=0.0)
    assert (root / "tensors.pt").is_file()
    assert d.train_x.shape == (6, 3, 64, 64) and d.test_x.shape == (2, 3, 64, 64) and d.augment
    assert d.train_y.tolist() == [0, 0, 0, 1, 1, 1] and d.test_y.tolist() == [1, 0]
    assert d.class_names[:2] == ["goldfish", "European fire salamander"]
    # brightness follows the label
    assert d.train_x[d.train_y == 1].mean() > d.train_x[d.train_y == 0].mean() + 1
    cached = torch.load(root / "tensors.pt", weights_only=True)
    assert cached["train_x"].dtype == torch.uint8 and cached["wnids"] == wnids


# ---------------------------------------------------------------- planted


def test_planted_problem(tmp_path):
    p = {"dim": 50, "k": 7, "n_train": 300, "n_test": 500, "planted_seed": 3}
    d = load_dataset("planted", tmp_path, params=p, val_fraction=0.0)
    mask, w = d.extras["target_mask"], d.extras["target_weight"]
    assert mask.shape == (1, 50) and w.shape == (1, 50) and mask.dtype == torch.float32
    assert int(mask.sum()) == 7 and set(mask.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(mask, (w != 0).float()) and bool((w.abs()[w != 0] >= 1).all())
    assert d.train_x.shape == (300, 1, 1, 50) and d.test_x.shape == (500, 1, 1, 50) and d.in_shape == (1, 1, 50)
    assert d.num_classes == 2
    for x, y in ((d.train_x, d.train_y), (d.test_x, d.test_y)):
        assert torch.equal(((x.flatten(1) @ w.t()).squeeze(1) > 0).long(), y)
    assert 0.2 < d.train_y.float().mean().item() < 0.8
    again = load_dataset("planted", tmp_path, params=p, val_fraction=0.0)
    assert torch.equal(again.train_x, d.train_x) and torch.equal(again.extras["target_mask"], mask)
    other = load_dataset("planted", tmp_path, params={**p, "planted_seed": 4}, val_fraction=0.0)
    assert not torch.equal(other.train_x, d.train_x)
    noisy = load_dataset("planted", tmp_path, params={**p, "noise": 0.3}, val_fraction=0.0)
    assert torch.equal(noisy.train_x, d.train_x) and not torch.equal(noisy.train_y, d.train_y)
    default = load_dataset("planted", tmp_path)
    assert default.extras["target_mask"].shape == (1, 100) and int(default.extras["target_mask"].sum()) == 10
    assert len(default.train_y) + len(default.val_y) == 400 and len(default.test_y) == 2000
    with pytest.raises(ValueError, match="unknown planted params"):
        load_dataset("planted", tmp_path, params={"dims": 3})


# ---------------------------------------------------------------- batches / augmentation


def _toy(n=103):
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 4, 4).contiguous()
    return x, torch.arange(n)


def test_batches_cover_each_sample_once():
    x, y = _toy()
    b = Batches(x, y, 10, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(b) == 11
    for _ in range(2):  # every epoch
        ys = [yb for _, yb in b]
        assert len(ys) == 11 and len(ys[-1]) == 3
        seen = torch.cat(ys)
        assert torch.equal(seen.sort().values, y)
        for xb, yb in b:
            assert torch.equal(xb[:, 0, 0, 0].long(), yb)  # x and y stay paired
    dl = Batches(x, y, 10, drop_last=True, generator=torch.Generator().manual_seed(0))
    assert len(dl) == 10 and sum(len(yb) for _, yb in dl) == 100
    plain = Batches(x, y, 10, shuffle=False)
    assert torch.equal(torch.cat([yb for _, yb in plain]), y)


def test_batches_reproducible_order():
    x, y = _toy()

    def order(seed):
        b = Batches(x, y, 16, generator=torch.Generator().manual_seed(seed))
        return torch.cat([torch.cat([yb for _, yb in b]) for _ in range(2)])

    assert torch.equal(order(5), order(5))
    assert not torch.equal(order(5), order(6))
    first, second = order(5).split(103)
    assert not torch.equal(first, second)  # a fresh permutation each epoch


def test_batches_augment_shape_and_reproducible():
    x = torch.randn(50, 3, 32, 32)
    y = torch.arange(50)

    def run(seed):
        b = Batches(x, y, 16, augment=True, generator=torch.Generator().manual_seed(seed))
        return [(xb.clone(), yb) for xb, yb in b]

    a, b = run(1), run(1)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.shape == (len(ya), 3, 32, 32) and torch.equal(xa, xb) and torch.equal(ya, yb)
    assert any(not torch.equal(xa, x[ya]) for xa, ya in a)  # augmentation changed something


def test_flip_really_flips():
    x = torch.randn(64, 3, 8, 8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    same = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    assert bool((same | flipped).all())
    assert 10 < int(flipped.sum()) < 54  # about half are flipped
    assert torch.equal(out, random_crop_flip(x, torch.Generator().manual_seed(0), pad=0))


def test_crops_are_windows_of_padded_image():
    n, pad = 24, 4
    x = torch.arange(1, n * 3 * 32 * 32 + 1, dtype=torch.float32).view(n, 3, 32, 32)  # distinct, nonzero
    out = random_crop_flip(x, torch.Generator().manual_seed(7), pad=pad)
    assert out.shape == x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets, flips = set(), 0
    for i in range(n):
        hits = [
            (a, b, f)
            for a in range(2 * pad + 1)
            for b in range(2 * pad + 1)
            for f in (False, True)
            if torch.equal(out[i], (lambda w: w.flip(-1) if f else w)(padded[i, :, a : a + 32, b : b + 32]))
        ]
        assert len(hits) == 1, f"sample {i} is not a window of its padded image"
        offsets.add(hits[0][:2])
        flips += hits[0][2]
    assert len(offsets) > 5 and 0 < flips < n  # offsets and flips vary per sample


# ---------------------------------------------------------------- real file formats (tiny copies)

def _pickle_py2_style(path, obj):
    """CIFAR's batches are Python-2 pickles with str keys and numpy arrays;
    torchvision reads them with pickle.load(encoding="latin1")."""
    import pickle
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar(root, hundred: bool, n_per_batch: int = 4):
    """A tiny CIFAR-10/100 in the real layout: cifar-10-batches-py/{data_batch_1..5,test_batch,
    batches.meta} or cifar-100-python/{train,test,meta}, uint8 rows of 3072 (R, G, B planes)."""
    import numpy as np
    rng = np.random.default_rng(0)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    n_classes = 100 if hundred else 10
    written = {}

    def batch(name, n, label):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, n_classes, size=n)]
        entry = {"batch_label": label, "data": data, "filenames": [f"img_{i}.png" for i in range(n)]}
        if hundred:
            entry.update(fine_labels=labels, coarse_labels=[v // 5 for v in labels])
        else:
            entry["labels"] = labels
        _pickle_py2_style(folder / name, entry)
        written[name] = (data, labels)

    if hundred:
        batch("train", 5 * n_per_batch, "training batch 1 of 1")
        batch("test", n_per_batch, "testing batch 1 of 1")
        _pickle_py2_style(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                                            "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    else:
        for i in range(1, 6):
            batch(f"data_batch_{i}", n_per_batch, f"training batch {i} of 5")
        batch("test_batch", n_per_batch, "testing batch 1 of 1")
        _pickle_py2_style(folder / "batches.meta", {"num_cases_per_batch": n_per_batch, "num_vis": 3072,
                                                    "label_names": [f"class{i}" for i in range(10)]})
    return folder, written


@pytest.fixture
def no_md5(monkeypatch):
    """Our tiny files cannot match torchvision's published md5 sums: accept any existing file."""
    import os

    from torchvision.datasets import cifar, utils
    exists = lambda fpath, md5=None: os.path.isfile(fpath)  # noqa: E731
    monkeypatch.setattr(cifar, "check_integrity", exists)
    monkeypatch.setattr(utils, "check_integrity", exists)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("as_archive", [False, True])
def test_cifar_real_format_loads(tmp_path, no_md5, name, as_archive):
    import tarfile

    import numpy as np
    hundred = name == "cifar100"
    src, written = _write_cifar(tmp_path / "src", hundred)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if as_archive:  # the downloaded .tar.gz, not yet extracted: the engine extracts it offline
        with tarfile.open(data_dir / ("cifar-100-python.tar.gz" if hundred else "cifar-10-python.tar.gz"),
                          "w:gz") as tar:
            tar.add(src, arcname=src.name)
    else:
        src.rename(data_dir / src.name)
    d = load_dataset(name, data_dir, val_fraction=0.0)
    train_names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    want_x = np.vstack([written[n][0] for n in train_names]).reshape(-1, 3, 32, 32)
    want_y = sum((written[n][1] for n in train_names), [])
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32)
    assert d.num_classes == (100 if hundred else 10) and d.in_shape == (3, 32, 32)
    assert d.train_y.tolist() == want_y
    assert d.test_y.tolist() == written["test" if hundred else "test_batch"][1]
    # pixels came through in the right order (planes R, G, B; rows; columns), then normalised
    info_mean = (0.5071, 0.4865, 0.4409) if hundred else (0.4914, 0.4822, 0.4465)
    info_std = (0.2673, 0.2564, 0.2762) if hundred else (0.2470, 0.2435, 0.2616)
    back = d.train_x * torch.tensor(info_std).view(1, 3, 1, 1) + torch.tensor(info_mean).view(1, 3, 1, 1)
    torch.testing.assert_close(back * 255, torch.from_numpy(want_x).float(), atol=1e-3, rtol=0)


def test_cifar_truncated_batch_is_reported_as_damaged(tmp_path, no_md5):
    folder, _ = _write_cifar(tmp_path, hundred=False)
    blob = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar10", tmp_path)
    assert str(err.value).startswith("dataset files are damaged: 'cifar10'")
    assert str(tmp_path / "cifar-10-batches-py") in str(err.value)


def test_cifar_files_failing_the_checksum_are_reported_as_damaged(tmp_path):
    """Without the test's md5 bypass our tiny files fail torchvision's checksum:
    the engine says which files are damaged instead of trying to download."""
    _write_cifar(tmp_path, hundred=False)
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar10", tmp_path)
    msg = str(err.value)
    assert msg.startswith("dataset files are damaged") and "data_batch_1" in msg and "checksum" in msg


def test_fashion_mnist_real_idx_files(tmp_path):
    """FashionMNIST/raw/ with the four uncompressed idx files (big-endian headers,
    magic 2051 for images and 2049 for labels), loaded through the engine."""
    import struct

    import numpy as np
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    sets = {}
    for split, n in (("train", 30), ("t10k", 10)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
        sets[split] = (images, labels)
    d = load_dataset("fashion_mnist", tmp_path, val_fraction=0.0)
    assert d.train_x.shape == (30, 1, 28, 28) and d.test_x.shape == (10, 1, 28, 28)
    assert d.train_y.tolist() == sets["train"][1].tolist() and d.test_y.tolist() == sets["t10k"][1].tolist()
    back = d.test_x * 0.3530 + 0.2860
    torch.testing.assert_close(back[:, 0] * 255, torch.from_numpy(sets["t10k"][0]).float(), atol=1e-3, rtol=0)


def test_crop_flip_draws_its_randomness_in_the_documented_order():
    """Offsets (rows, then columns) then flips, from the generator, as an independent loop
    computes them: moving the draws to the device in one copy changed no run's images."""
    x = torch.arange(2 * 3 * 6 * 5, dtype=torch.float32).view(2, 3, 6, 5)
    out = random_crop_flip(x, torch.Generator().manual_seed(3), pad=2)
    g = torch.Generator().manual_seed(3)
    oy = torch.randint(0, 5, (2,), generator=g)
    ox = torch.randint(0, 5, (2,), generator=g)
    flip = torch.rand(2, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        crop = padded[i, :, oy[i]:oy[i] + 6, ox[i]:ox[i] + 5]
        assert torch.equal(out[i], crop.flip(-1) if flip[i] else crop)
