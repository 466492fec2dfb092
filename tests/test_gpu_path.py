"""The GPU path's pieces that a CPU can check (bench/gpu.py runs the rest on a real GPU):
a worker's share of GPU memory, a config's cuda:N through the queue, the device a worker sees."""

import time

import pytest
import torch
from torch.cuda._utils import _get_device_index

from engine import jobs, train
from engine.config import RunConfig


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda as seen on a one-GPU machine; set_per_process_memory_fraction validates its
    device argument with torch's own _get_device_index (which refuses an index-less torch.device)."""
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, device=None: calls.append((fraction, _get_device_index(device))))
    monkeypatch.delenv("LOTTERY_SLOT", raising=False)
    return calls


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "auto"])
def test_a_worker_can_be_held_to_a_share_of_the_gpu_memory(fake_cuda, monkeypatch, name):
    monkeypatch.setenv("LOTTERY_CUDA_MEMORY_FRACTION", "0.25")
    assert train.pick_device(name).type == "cuda"
    assert fake_cuda == [(0.25, 0)]


def test_without_the_setting_the_whole_gpu_is_the_workers(fake_cuda, monkeypatch):
    monkeypatch.delenv("LOTTERY_CUDA_MEMORY_FRACTION", raising=False)
    train.pick_device("cuda")
    assert fake_cuda == []


@pytest.mark.parametrize("bad", ["0", "1.5", "half", "-0.1"])
def test_a_bad_memory_fraction_names_the_variable_and_range(fake_cuda, monkeypatch, bad):
    monkeypatch.setenv("LOTTERY_CUDA_MEMORY_FRACTION", bad)
    with pytest.raises(ValueError, match=r"LOTTERY_CUDA_MEMORY_FRACTION must be a number in \(0, 1\]"):
        train.pick_device("cuda")
    assert fake_cuda == []


def test_a_gpu_index_this_process_cannot_see_is_refused_clearly(fake_cuda):
    with pytest.raises(RuntimeError, match=r"'cuda:3' requested but this process sees 1 GPU"):
        train.pick_device("cuda:3")


def test_a_worker_sees_its_slot_as_cuda_0(fake_cuda, monkeypatch):
    """The queue runs a cuda:1 config on GPU 1 with CUDA_VISIBLE_DEVICES=1: inside, that GPU is cuda:0."""
    monkeypatch.setenv("LOTTERY_SLOT", "1")
    assert train.worker_device_name("cuda:1") == "cuda:0"
    assert train.pick_device("cuda:1") == torch.device("cuda:0")
    assert train.worker_device_name("cuda") == "cuda" and train.worker_device_name("auto") == "auto"
    monkeypatch.delenv("LOTTERY_SLOT")
    assert train.worker_device_name("cuda:1") == "cuda:1"     # the foreground CLI: as written


def test_requested_gpu_counts_the_workers_gpus():
    assert jobs.requested_gpu("cuda:1", ["0", "1"]) == "1"
    assert jobs.requested_gpu("cuda:1", ["2", "5"]) == "5"     # LOTTERY_GPUS=2,5: the second of them
    assert jobs.requested_gpu("cuda:2", ["0", "1"]) is None
    assert jobs.requested_gpu("cuda", ["0", "1"]) is None and jobs.requested_gpu("cpu", ["0"]) is None


def _wait_status(home, run_id, statuses, deadline_s=90):
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        run = jobs._open(home)[0].get_run(run_id)
        if run["status"] in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {run['status']} after {deadline_s} s")


def test_the_queue_puts_a_cuda_n_config_on_gpu_n_and_refuses_one_past_the_last(tmp_path, monkeypatch):
    """On a (pretended) two-GPU machine a cuda:1 run takes slot 1 even when slot 0 is free, and a
    cuda:2 run fails at once with a reason naming the GPUs there are. (This CPU has no CUDA, so the
    cuda:1 worker itself then fails; which slot it was given is what is checked.)"""
    home = tmp_path / "home"
    monkeypatch.setenv("LOTTERY_GPUS", "0,1")
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "2")
    base = dict(model="logreg", dataset="digits", method="dense", epochs=1, batch_size=64)
    on_1 = jobs.submit(RunConfig.from_dict({**base, "device": "cuda:1"}), home)
    run = _wait_status(home, on_1, ("running", "failed", "done"))
    assert run["slot"] == "1"
    past = jobs.submit(RunConfig.from_dict({**base, "device": "cuda:2", "seed": 1}), home)
    run = _wait_status(home, past, ("failed",))
    assert run["reason"] == "device cuda:2 requested but this machine's workers have 2 GPU(s): cuda:0 to cuda:1"
    _wait_status(home, on_1, ("failed", "done", "interrupted"))


def test_the_gpu_estimate_follows_the_measured_h200_epochs():
    """ui.estimate's GPU model against the epochs bench/gpu.py measured on a real GPU
    (bench/results/gpu_gpu.json, committed): a dense epoch of each model within ±25 %."""
    import json
    from pathlib import Path

    from ui import estimate
    data = json.loads((Path(__file__).resolve().parent.parent / "bench/results/gpu_gpu.json").read_text())
    assert data["device"].startswith("cuda:0 (NVIDIA")
    rows = {r["key"]: r for r in data["steps"]["speed"] if "seconds" in r}
    for model, dataset in (("resnet20", "cifar10"), ("lenet300", "mnist")):
        row = rows[f"{model}/fp32/eager"]      # what precision: auto runs for these models
        cfg = {"model": model, "dataset": dataset, "method": "dense", "epochs": 1, "batch_size": 128,
               "device": "cuda"}
        measured = row["seconds"]["dense"] * estimate._samples(cfg) / row["train_samples"]   # at the same size
        one = estimate.estimate(cfg, gpu_available=True).seconds - estimate.STARTUP_S
        assert 0.75 <= one / measured <= 1.25, (model, one, measured)


def test_the_gpu_script_runs_its_steps_on_tiny_settings(tmp_path):
    """bench/gpu.py --quick on this CPU: a speed row and the preset through the CLI, written fresh."""
    import json
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    out = root / "bench" / "results" / "gpu_quick.json"
    out.unlink(missing_ok=True)
    r = subprocess.run([sys.executable, "bench/gpu.py", "--quick", "--only", "speed,run", "--rows",
                        "lenet300/fp32/eager", "--out", str(tmp_path)], cwd=root, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
                            "LOTTERY_DATA": str(tmp_path / "nodata")}, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    assert json.loads((tmp_path / "gpu_quick.json").read_text()) == data
    (row,) = data["steps"]["speed"]
    assert row["key"] == "lenet300/fp32/eager" and row["device"] == "cpu" and row["seconds"]["search"] > 0
    run = data["steps"]["run"]
    assert run["exit_code"] == 0 and run["status"] == "done" and run["ticket_files"] == ["ticket.pt"]
    assert set(run["checks"]) >= {"zeros_stay_zero", "rewind_exact", "every_layer_kept"}
    assert "--home" not in run["command"]


def test_auto_precision_is_fp32_for_the_small_models_bf16_for_the_large():
    """Measured on the H200: bf16 autocast made ResNet-20 and LeNet-300-100 slower (launch-bound)."""
    assert train.autocast_dtype("auto", "resnet20", True) is None
    assert train.autocast_dtype("auto", "lenet300", True) is None
    assert train.autocast_dtype("auto", "wrn16_8", True) is torch.bfloat16
    assert train.autocast_dtype("auto", "wrn16_8", False) is None
    assert train.autocast_dtype("bf16", "resnet20", False) is torch.bfloat16
    assert train.autocast_dtype("fp32", "vgg16", True) is None
