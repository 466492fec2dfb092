"""Sweeps: grid expansion and validation, the CLI, local joblib processes, a real dask LocalCluster."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine import jobs, sweep
from engine.__main__ import main
from engine.config import ConfigError, RunConfig
from engine.store import Store

ROOT = Path(__file__).resolve().parent.parent
BASE = {"model": "logreg", "dataset": "digits", "method": "concave", "epochs": 1, "retrain_epochs": 1,
        "batch_size": 256}


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    for k, v in {"LOTTERY_HOME": str(h), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LOTTERY_GPUS": "",
                 "LOTTERY_MAX_RUNS": "0", "PYTHONPATH": str(ROOT)}.items():
        monkeypatch.setenv(k, v)
    yield h
    if (h / "lottery.db").exists():
        for r in Store(h).runs_with_status("running"):
            if r["pid_start"] and r["executor"] == "jobs":
                jobs._signal_worker(r["pid"], r["pid_start"], signal.SIGKILL)


@pytest.fixture
def cfg_file(tmp_path):
    p = tmp_path / "base.json"
    p.write_text(json.dumps(BASE))
    return str(p)


def test_parse_values():
    assert sweep.parse_values("1e-4,1e-3,0.01") == [1e-4, 1e-3, 0.01]
    assert sweep.parse_values("l1, log") == ["l1", "log"]
    assert sweep.parse_values("[0,1],[3,8]") == [[0, 1], [3, 8]]
    assert sweep.parse_values("null,true,epoch:2") == [None, True, "epoch:2"]
    with pytest.raises(ValueError):
        sweep.parse_values("1,,2")


def test_expand_is_the_product_times_seeds_all_validated():
    cfgs = sweep.expand({**BASE, "name": "grid"}, {"lam": [0.5, 2], "regularizer": ["l1", "log", "exp"]},
                        seeds=[0, 1])
    assert len(cfgs) == 12
    assert [(c.lam, c.regularizer, c.seed) for c in cfgs[:3]] == [(0.5, "l1", 0), (0.5, "l1", 1), (0.5, "log", 0)]
    assert cfgs[0].name == "grid · lam=0.5 regularizer=l1 seed=0"
    assert len({c.content_hash() for c in cfgs}) == 12
    assert [c.seed for c in sweep.expand(BASE, {"seed": [3, 4]})] == [3, 4]
    assert len(sweep.expand(BASE, {})) == 1
    for grid, seeds, key in [({"lamb": [1]}, None, "lamb"), ({"lam": [1, -1]}, None, "lam"),
                             ({"lam": []}, None, "lam"), ({"lam": 1}, None, "lam"),
                             ({"seed": [1]}, [2], "seed"), ({}, [], "seed"), ({"name": ["a"]}, None, "name"),
                             ({"regularizer": ["l1", "cubic"]}, None, "regularizer")]:
        with pytest.raises(ConfigError) as e:
            sweep.expand(BASE, grid, seeds)
        assert e.value.key == key
    with pytest.raises(ConfigError, match="at sweep point lam=-1"):
        sweep.expand(BASE, {"lam": [1, -1]})


@pytest.mark.parametrize("argv, words", [
    (["--grid", "lamb=1,2"], ["lamb"]),
    (["--grid", "lam=1,-2"], ["lam", "lam=-2"]),
    (["--grid", "lam"], ["--grid"]),
    (["--grid", "lam=1,,2"], ["empty value"]),
    (["--grid", "lam=1", "--grid", "lam=2"], ["twice"]),
    (["--seeds", "0,x"], ["--seeds"]),
    (["--grid", "regularizer=l1,cubic"], ["regularizer"]),
    (["--scheduler", "localhost:8786"], ["--scheduler"]),
    (["--jobs", "0"], ["--jobs"]),
])
def test_cli_bad_grid_is_one_line_exit_2_and_writes_nothing(tmp_path, cfg_file, capsys, argv, words):
    h = tmp_path / "nothing-here"
    assert main(["sweep", "--config", cfg_file, *argv, "--home", str(h)]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines
    assert out.out == "" and not h.exists()


def test_background_sweep_goes_through_the_jobs_queue(home):
    sweep_id, ids = sweep.submit_sweep(sweep.expand(BASE, {"lam": [0.5, 2.0]}), home)
    runs = sweep.sweep_runs(sweep_id, home)
    assert [r["id"] for r in runs] == ids
    assert all(r["status"] == "queued" and r["executor"] == "jobs" and r["sweep_id"] == sweep_id for r in runs)


def test_local_sweep_runs_in_joblib_processes(home):
    configs = sweep.expand(BASE, {"regularizer": ["l1", "log"]}, seeds=[0])
    seen = []
    sweep_id, ids = sweep.run_sweep(configs, home, n_jobs=2, on_start=lambda s, r: seen.append((s, list(r))))
    assert seen == [(sweep_id, ids)]
    store = Store(home)
    runs = [store.get_run(i) for i in ids]
    assert [r["status"] for r in runs] == ["done", "done"], [r["reason"] for r in runs]
    assert all(r["sweep_id"] == sweep_id and r["executor"] == "sweep" for r in runs)
    assert all(r["pid"] != os.getpid() for r in runs)            # loky worker processes, not this one
    assert [r["config"]["regularizer"] for r in runs] == ["l1", "log"]
    assert all("test_accuracy" in r["summary"] for r in runs)


def test_dask_local_cluster_runs_a_sweep_through_the_cli(home, cfg_file):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(host="127.0.0.1", n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        r = subprocess.run([sys.executable, "-m", "engine", "sweep", "--config", cfg_file, "--grid",
                            "lam=0.5,2", "--scheduler", cluster.scheduler_address, "--home", str(home)],
                           cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    sweep_id, *ids = r.stdout.split()
    assert sweep_id.startswith("sw-") and len(ids) == 2
    store = Store(home)
    runs = [store.get_run(i) for i in ids]
    assert [r["status"] for r in runs] == ["done", "done"], [r["reason"] for r in runs]
    assert all(r["sweep_id"] == sweep_id for r in runs)
    assert {r["pid"] for r in runs} <= worker_pids                 # executed on the cluster's worker
    assert sorted(r["config"]["lam"] for r in runs) == [0.5, 2.0]


def test_cancel_reaches_a_sweep_task_through_the_marker(home):
    """No process of ours to signal (a joblib task; n_jobs=1 runs it in this process):
    jobs.cancel leaves runs/<id>/cancel, and the task's should_stop sees it."""
    import threading
    import time
    long = {**BASE, "model": "lenet300", "epochs": 30, "batch_size": 8}
    out = {}
    t = threading.Thread(target=lambda: out.update(result=sweep.run_sweep(sweep.expand(long, {}), home)))
    t.start()
    try:
        store = Store(home)
        deadline = time.time() + 60
        while not (store.list_runs() and store.metrics(store.list_runs()[0]["id"], "step")):
            assert time.time() < deadline, "the sweep's run never trained"
            time.sleep(0.05)
        rid = store.list_runs()[0]["id"]
        r = jobs.cancel(rid, home, grace=20)
        assert r["status"] == "cancelled" and "step" in r["reason"], r["reason"]
        assert (store.run_dir(rid) / "ckpt.pt").exists()
    finally:
        t.join(60)
    assert out["result"][1] == [rid]
    assert not (store.run_dir(rid) / jobs.CANCEL_MARKER).exists()


def test_sweep_task_processes_run_below_the_app_once(tmp_path):
    """Sweep tasks are workers too (issue 12 item 16): a task process lowers its priority and
    torch threads like a queue worker, once however many tasks it runs; the process that
    launched the sweep (joblib with one job runs tasks in it) is left as it is."""
    home = tmp_path / "h"
    store = Store(home)
    cfg = RunConfig.from_dict({"dataset": "digits", "model": "logreg", "epochs": 1, "retrain_epochs": 1})
    ids = [store.create_run(cfg.to_dict(), cfg.content_hash(), status="queued", sweep_id="sw-t",
                            extra={"executor": "sweep"}) for _ in range(3)]
    code = ("import os, sys, torch; from engine import sweep, jobs; home, a, b, c = sys.argv[1:5];"
            "sweep.run_one(home, a, None, (jobs.hostname(), os.getpid())); n0 = os.nice(0);"
            "sweep.run_one(home, b, None, ('elsewhere', 1)); n1 = os.nice(0);"
            "sweep.run_one(home, c, None, ('elsewhere', 1)); n2 = os.nice(0);"
            "print(n0, n1, n2, torch.get_num_threads())")
    env = {**os.environ, "LOTTERY_WORKER_NICE": "7", "LOTTERY_WORKER_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code, str(home), *ids], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parent.parent, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    n0, n1, n2, threads = map(int, out.stdout.split()[-4:])
    base = os.nice(0)
    assert (n0, n1, n2) == (base, base + 7, base + 7)      # launcher untouched; lowered once, not twice
    assert threads == 1
    assert [store.get_run(i)["status"] for i in ids] == ["done"] * 3
