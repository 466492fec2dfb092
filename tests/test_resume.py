"""Checkpoint and resume, in process: a run stopped anywhere and resumed ends
bit for bit where an uninterrupted run ends, with no duplicated or missing steps."""

import pytest
import torch

from engine import runner
from engine.config import RunConfig
from engine.train import Cancelled, NonFiniteLoss, RunContext
from tests.conftest import DATA

CFGS = {
    "concave": dict(model="lenet300", dataset="digits", method="concave", lam=20.0, epochs=3, retrain_epochs=2,
                    batch_size=64, target_sparsity=0.7),
    "imp": dict(model="lenet300", dataset="digits", method="imp", rounds=2, prune_fraction=0.5, epochs=2,
                batch_size=64, rewind="iter:5"),
    "cs": dict(model="lenet300", dataset="digits", method="cs", rounds=2, lam=5.0, epochs=1, retrain_epochs=1,
               batch_size=64),
    "pai": dict(model="lenet300", dataset="digits", method="pai", scorer="snip", target_sparsity=0.9, epochs=3,
                batch_size=64),
}
KEYS = ("kind", "round", "phase", "epoch", "step", "lr", "lam", "loss", "loss_task", "loss_reg", "train_acc",
        "val_acc", "test_acc", "remaining", "beta")


class Crash(BaseException):
    """Stands in for a killed process: nothing after it runs."""


def stop_at(step, exc=None):
    state = {"n": 0}

    def should_stop():
        state["n"] += 1
        if state["n"] == step:
            if exc is not None:
                raise exc
            return True
        return False
    return should_stop


def rows(store, run_id):
    return [tuple(r.get(k) for k in KEYS) for r in store.metrics(run_id)]


def tickets(store, run_id):
    return store.load_array(run_id, "ticket")["mask"]


@pytest.fixture(params=list(CFGS), scope="module")
def reference(request, tmp_path_factory):
    """One uninterrupted run per config, in its own store, shared by the tests of this module."""
    from engine.store import Store
    ref_store = Store(tmp_path_factory.mktemp(f"ref-{request.param}"))
    cfg = RunConfig.from_dict(CFGS[request.param])
    ref = runner.create(ref_store, cfg, status="running")
    summary = runner.execute(ref_store, ref, DATA)
    return cfg, (ref_store, ref), summary


@pytest.mark.parametrize("where", [7, 30, 61])
def test_cancel_mid_phase_then_resume_matches_uninterrupted(store, reference, where):
    cfg, (ref_store, ref), ref_summary = reference
    run_id = runner.create(store, cfg, status="running")
    with pytest.raises(Cancelled):
        runner.execute(store, run_id, DATA, should_stop=stop_at(where))
    assert store.get_run(run_id)["status"] == "cancelled"
    assert (store.run_dir(run_id) / "ckpt.pt").exists()
    summary = runner.execute(store, run_id, DATA, resume=True)
    assert store.get_run(run_id)["status"] == "done"
    assert rows(store, run_id) == rows(ref_store, ref)         # same steps, once each, same numbers
    a, b = tickets(store, run_id), tickets(ref_store, ref)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert summary["test_accuracy"] == ref_summary["test_accuracy"]
    steps = [r["step"] for r in store.metrics(run_id, kind="step")]
    assert steps == sorted(set(steps))


def test_crash_without_checkpoint_resumes_from_last_epoch(store, reference):
    """A kill loses the partial epoch: resume drops its rows and redoes it."""
    cfg, (ref_store, ref), _ = reference
    run_id = runner.create(store, cfg, status="running")
    with pytest.raises(Crash):
        runner.execute(store, run_id, DATA, should_stop=stop_at(40, Crash()))
    store.update_run(run_id, status="interrupted")
    runner.execute(store, run_id, DATA, resume=True)
    assert rows(store, run_id) == rows(ref_store, ref)
    jsonl = store.run_dir(run_id) / "metrics.jsonl"
    assert len(jsonl.read_text().splitlines()) == len(store.metrics(run_id))


def test_resume_without_any_checkpoint_starts_over(store):
    cfg = RunConfig.from_dict(CFGS["concave"])
    run_id = runner.create(store, cfg, status="running")
    with pytest.raises(Crash):
        runner.execute(store, run_id, DATA, should_stop=stop_at(3, Crash()))
    assert not (store.run_dir(run_id) / "ckpt.pt").exists()
    runner.execute(store, run_id, DATA, resume=True)
    steps = [r["step"] for r in store.metrics(run_id, kind="step")]
    assert steps[0] == 1 and steps == sorted(set(steps))


@pytest.mark.parametrize("sync_free", [False, True], ids=["per-step check", "GPU-style deferred check"])
def test_nan_at_step_k_fails_there_and_keeps_last_good_checkpoint(store, monkeypatch, sync_free):
    monkeypatch.setattr(RunContext, "sync_free_nan_check", sync_free)
    cfg = RunConfig.from_dict(CFGS["concave"])
    run_id = runner.create(store, cfg, status="running")
    monkeypatch.setenv("LOTTERY_INJECT_NAN_STEP", "50")
    with pytest.raises(NonFiniteLoss):
        runner.execute(store, run_id, DATA)
    run = store.get_run(run_id)
    assert run["status"] == "failed" and "step 50" in run["reason"]
    ck = store.load_array(run_id, "ckpt")
    assert ck["global_step"] < 50
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    assert max(r["step"] for r in store.metrics(run_id) if r["loss_task"] is not None) < 50


def test_checkpoint_with_another_optimizer_layout_is_refused_clearly(store):
    """A mid-phase checkpoint whose optimizer states do not fit this engine's optimizers
    (e.g. written before the masks joined the weights' Adam) fails with a reason, never half-loads."""
    cfg = RunConfig.from_dict(CFGS["concave"])
    run_id = runner.create(store, cfg, status="running")
    with pytest.raises(Cancelled):
        runner.execute(store, run_id, DATA, should_stop=stop_at(7))
    ck = store.load_array(run_id, "ckpt")
    opts = ck["in_stage"]["opts"]
    assert len(opts) == 1 and len(opts[0]["param_groups"]) == 2          # weights + masks in one Adam
    ck["in_stage"]["opts"] = [{**opts[0], "param_groups": opts[0]["param_groups"][:1]}, opts[0]]  # the old layout
    store.save_array(run_id, "ckpt", ck)
    with pytest.raises(RuntimeError, match="another optimizer layout"):
        runner.execute(store, run_id, DATA, resume=True)
    run = store.get_run(run_id)
    assert run["status"] == "failed" and "optimizer layout" in run["reason"]
