"""The ★ CLI contract: run / show --json / list / export, and clean failures on bad input."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import masking
from engine.models import build_model
from engine.store import Store, torch_load

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"model": "lenet300", "dataset": "digits", "method": "concave", "lam": 20.0, "epochs": 2,
         "retrain_epochs": 1, "batch_size": 64}


def cli(*args, home, stdin=None):
    env = {**os.environ, "LOTTERY_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, input=stdin, timeout=300)


@pytest.fixture
def cfg_file(tmp_path):
    def write(d):
        p = tmp_path / "cfg.json"
        p.write_text(json.dumps(d))
        return str(p)
    return write


def test_run_show_list_export(tmp_path, cfg_file):
    home = tmp_path / "home"
    r = cli("run", "--config", cfg_file(SMALL), "--home", str(home), home=home)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip().splitlines()[-1]
    assert (home / "runs" / run_id / "config.json").exists()

    show = cli("show", run_id, "--json", "--home", str(home), home=home)
    assert show.returncode == 0
    view = json.loads(show.stdout)
    assert view["id"] == run_id and view["status"] == "done"
    assert view["config"]["lam"] == 20.0
    s = view["summary"]
    for key in ("sparsity", "remaining", "kept", "total", "test_accuracy", "wall_seconds"):
        assert key in s
    assert s["kept"] / s["total"] == pytest.approx(s["remaining"])
    assert 0 < s["setup_seconds"] < s["wall_seconds"]  # the time estimate takes set-up out of the epoch rate
    assert {c["name"] for c in view["checks"]} >= {"rewind_exact", "zeros_stay_zero"}

    lst = cli("list", "--json", home=home)
    assert [v["id"] for v in json.loads(lst.stdout)] == [run_id]

    out = tmp_path / "export"
    ex = cli("export", run_id, "--out", str(out), home=home)
    assert ex.returncode == 0, ex.stderr
    assert {p.name for p in out.iterdir()} == {"config.json", "metrics.csv", "summary.json", "ticket.pt"}
    # ... and what they hold: the run's own config, summary and metric rows, and a ticket that loads
    # (safely) into the model it was found in, keeping the summary's count of weights
    assert json.loads((out / "config.json").read_text()) == view["config"]
    assert json.loads((out / "summary.json").read_text()) == s
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    store_rows = Store(home).metrics(run_id)
    assert len(rows) == len(store_rows) and [int(r["seq"]) for r in rows] == [r["seq"] for r in store_rows]
    ticket = torch_load(out / "ticket.pt")
    model = build_model("lenet300", (1, 8, 8), 10)
    layers = dict(masking.prunable_layers(model))
    assert set(ticket["mask"]) == set(layers)
    assert sum(int(m.sum()) for m in ticket["mask"].values()) == s["kept"]
    assert sum(m.numel() for m in ticket["mask"].values()) == s["total"]
    masking.load_weights_state(model, ticket["rewind"])
    masking.set_binary(model, ticket["mask"])
    for n, layer in layers.items():
        assert torch.equal(layer.weight != 0, ticket["mask"][n] & (ticket["rewind"][f"{n}.weight"] != 0)), n


@pytest.mark.parametrize("bad, key", [
    ({"lam": -1}, "lam"), ({"lam": float("nan")}, "lam"), ({"eps": 0}, "eps"), ({"threshold": 1.5}, "threshold"),
    ({"prune_fraction": 1.0}, "prune_fraction"), ({"model": "resnet20"}, "model"), ({"epochs": 0}, "epochs"),
    ({"epochs": "5"}, "epochs"), ({"dataset": "imagenet"}, "dataset"), ({"bogus": 1}, "bogus"),
    ({"method": "pai", "target_sparsity": 0.9, "scorer": "obd"}, "scorer"), ({"method": "cs", "beta_final": 1},
                                                                              "beta_final"),
])
def test_bad_config_is_one_line_and_writes_nothing(tmp_path, cfg_file, bad, key):
    home = tmp_path / "home"
    path = cfg_file({**SMALL, **bad}) if "nan" not in str(bad) else None
    if path is None:  # json.dumps writes NaN, which our reader must still reject as a value
        path = tmp_path / "nan.json"
        path.write_text(json.dumps({**SMALL, **bad}))
        path = str(path)
    r = cli("run", "--config", path, home=home)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0] and "Traceback" not in r.stderr
    assert r.stdout == ""
    assert not home.exists()


def test_missing_or_broken_config_file(tmp_path):
    home = tmp_path / "home"
    r = cli("run", "--config", str(tmp_path / "nope.json"), home=home)
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    r = cli("run", "--config", str(broken), home=home)
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    assert not home.exists()


def test_show_unknown_id(tmp_path, cfg_file):
    home = tmp_path / "home"
    dense = {**SMALL, "method": "dense", "epochs": 1, "lam": 1.0, "retrain_epochs": None}   # lam: concave's
    cli("run", "--config", cfg_file(dense), home=home)
    for bad in ("deadbeef-000000", "../../etc/passwd"):
        r = cli("show", bad, "--json", home=home)
        assert r.returncode != 0 and "no run with id" in r.stderr and "Traceback" not in r.stderr


def test_foreground_run_is_cancelled_from_another_terminal(tmp_path):
    import time
    home = tmp_path / "home"
    env = {**os.environ, "LOTTERY_HOME": str(home), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "engine", "run", "--preset", "digits", "--set", "epochs=200",
                             "--quiet"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_id = None
        for _ in range(300):
            time.sleep(0.2)
            runs = json.loads(cli("list", "--json", home=home).stdout or "[]") if (home / "lottery.db").exists() \
                else []
            if runs and runs[0]["status"] == "running" and runs[0]["progress"] > 0:
                run_id = runs[0]["id"]
                break
        assert run_id, "the run never started"
        shown = json.loads(cli("show", run_id, "--json", home=home).stdout)
        assert shown["pid"] == proc.pid and shown["heartbeat"] < 30
        r = cli("cancel", run_id, home=home)
        assert r.returncode == 0, r.stderr
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 3 and out.strip().splitlines()[-1] == run_id
        assert json.loads(cli("show", run_id, "--json", home=home).stdout)["status"] == "cancelled"
        assert (home / "runs" / run_id / "ckpt.pt").exists()
    finally:
        proc.kill()
