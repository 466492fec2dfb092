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
