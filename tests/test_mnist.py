"""Real-MNIST outcomes (skipped, with the reason, when the files are absent)."""

from engine import runner
from engine.config import preset
from tests.conftest import DATA, needs_mnist


@needs_mnist
def test_mnist_zero_vs_one_keeps_few_pixels_at_high_accuracy(store):
    """The paper's convex case: a log-regularized pixel mask on MNIST 0-vs-1
    keeps ≤ 10 of 784 pixels at ≥ 99.5% test accuracy."""
    cfg = preset("mnist-8-pixel")
    run_id = runner.create(store, cfg, status="running")
    s = runner.execute(store, run_id, DATA)
    assert s["total"] == 784
    assert 1 <= s["kept"] <= 10
    assert s["test_accuracy"] >= 0.995
    mask = store.load_masks(run_id, "r0-ticket")
    assert sum(int(m.sum()) for m in mask.values()) == s["kept"]
    # mask snapshots every epoch, as a 28×28 image can be drawn from each
    assert len([t for t in store.mask_snapshots(run_id) if "search-e0" in t]) == cfg.epochs
