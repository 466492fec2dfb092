"""Never retrain an identical config (issue 15, item 5): a run's identity is its config's
content hash; submit/run/sweep reuse an equal run unless asked to train again."""

import hashlib
import json
import time
from pathlib import Path

import pytest

from engine import jobs, sweep
from engine.__main__ import main
from engine.config import RunConfig
from engine.store import Store
from tests.conftest import at_once

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model": "logreg", "dataset": "digits", "method": "dense", "epochs": 1, "batch_size": 256}
SUMMARY = {"test_accuracy": 0.9, "remaining": 1.0, "sparsity": 0.0, "kept": 640, "total": 640, "wall_seconds": 1.0}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A store whose queue is paused (LOTTERY_MAX_RUNS=0): nothing trains unless a test says so."""
    h = tmp_path / "home"
    for k, v in {"LOTTERY_HOME": str(h), "OMP_NUM_THREADS": "1", "LOTTERY_GPUS": "", "LOTTERY_MAX_RUNS": "0"}.items():
        monkeypatch.setenv(k, v)
    return h


def finished(store: Store, cfg: dict | RunConfig, status: str = "done", config_hash: str | None = None,
             example: int = 0) -> str:
    """A run in `status` as if it had trained (no training: these tests are about identity)."""
    c = cfg if isinstance(cfg, RunConfig) else RunConfig.from_dict(cfg)
    rid = store.create_run(c.to_dict(), config_hash or c.content_hash(), name=c.name, status="queued")
    store.update_run(rid, status=status, started=time.time(), finished=time.time(),
                     summary=SUMMARY if status == "done" else None)
    if example:
        with store.connect() as db:
            db.execute("UPDATE runs SET example=1 WHERE id=?", (rid,))
    return rid


def test_same_config_twice_gives_one_run(home):
    store = Store(home)
    first = jobs.submit(TINY, home)
    assert not isinstance(first, jobs.Reused) and store.get_run(first)["status"] == "queued"
    # queued: a second launch (another tab, another student) follows the same run
    second = jobs.submit({**TINY, "name": "another label", "device": "cpu"}, home)
    assert second == first and isinstance(second, jobs.Reused)
    assert len(store.list_runs()) == 1
    store.update_run(first, status="done", finished=time.time(), summary=SUMMARY)
    assert jobs.find_done(TINY, home)["id"] == first
    assert jobs.submit(RunConfig.from_dict(TINY), home) == first and len(store.list_runs()) == 1
    # --again: a new run; a new seed: a new run
    again = jobs.submit(TINY, home, again=True)
    new_seed = jobs.submit({**TINY, "seed": 1}, home)
    assert len({first, again, new_seed}) == 3 and len(store.list_runs()) == 3
    assert not isinstance(again, jobs.Reused) and not isinstance(new_seed, jobs.Reused)


@pytest.mark.parametrize("status", ["failed", "cancelled", "interrupted"])
def test_failed_cancelled_interrupted_runs_are_not_reused(home, status):
    store = Store(home)
    bad = finished(store, TINY, status)
    assert jobs.find_done(TINY, home) is None and jobs.find_equal(TINY, home) is None
    rid = jobs.submit(TINY, home)
    assert rid != bad and store.get_run(rid)["status"] == "queued"


def test_example_runs_damaged_runs_and_old_hashes_are_not_reused(home):
    store = Store(home)
    finished(store, TINY, example=1)                    # a class-pack example
    damaged = finished(store, TINY)
    for f in store.run_dir(damaged).iterdir():
        f.unlink()
    store.run_dir(damaged).rmdir()                      # its arrays are gone
    cfg = RunConfig.from_dict(TINY)
    d = {k: v for k, v in cfg.to_dict().items() if v is not None and k not in RunConfig.EXECUTION_KEYS}
    v1 = hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    finished(store, TINY, config_hash=v1)               # trained by the engine before hash version 2
    assert jobs.find_done(TINY, home) is None
    assert not isinstance(jobs.submit(TINY, home), jobs.Reused)
    assert len(store.list_runs()) == 4


def test_done_is_preferred_to_queued_and_newest_done_wins(home):
    store = Store(home)
    old = finished(store, TINY)
    time.sleep(0.01)
    new = finished(store, TINY)
    queued = jobs.submit(TINY, home, again=True)
    assert jobs.find_equal(TINY, home)["id"] == new and jobs.submit(TINY, home) == new
    assert old != new and store.get_run(queued)["status"] == "queued"


def test_submit_refuses_a_bad_estimate_and_records_a_good_one(home, capsys):
    store = Store(home)
    with pytest.raises(jobs.JobError, match="estimate must be a number of seconds ≥ 0"):
        jobs.submit(TINY, home, estimate=-1.0)
    assert not store.list_runs()
    rid = jobs.submit(TINY, home, estimate=12.5)
    assert store.get_run(rid)["estimate"] == 12.5
    assert main(["show", rid, "--json", "--home", str(home)]) == 0
    assert json.loads(capsys.readouterr().out)["estimate"] == 12.5


def _submit_once(home: str, barrier, out) -> None:
    barrier.wait()
    out.put(str(jobs.submit(TINY, home)))


def test_parallel_equal_launches_queue_one_run(home):
    Store(home)
    out = at_once(_submit_once, home, 4)
    ids = {out.get(timeout=5) for _ in range(4)}
    assert len(ids) == 1 and [r["id"] for r in Store(home).list_runs()] == list(ids)


# ------------------------------------------------------------------ CLI

def test_cli_run_twice_trains_once_and_again_trains_anew(home, tmp_path, capsys):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    argv = ["run", "--config", str(cfg), "--home", str(home), "--quiet"]
    assert main(argv) == 0
    first = capsys.readouterr().out.strip().splitlines()[-1]
    assert Store(home).get_run(first)["status"] == "done"
    before = Store(home).get_run(first)
    assert main(argv) == 0
    out = capsys.readouterr()
    assert out.out.strip().splitlines()[-1] == first
    assert f"reusing finished run {first} with the same config; --again trains a new one" in out.err
    after = Store(home).list_runs()                                             # nothing trained:
    assert [r["id"] for r in after] == [first]                                  # no new run, the old
    assert (after[0]["data_version"], after[0]["finished"]) == (before["data_version"], before["finished"])  # untouched
    # submit of the finished config: the same id, last line, nothing queued
    assert main(["submit", "--config", str(cfg), "--home", str(home)]) == 0
    out = capsys.readouterr()
    assert out.out.strip().splitlines()[-1] == first and "reusing finished run" in out.err
    assert main([*argv, "--again"]) == 0
    again = capsys.readouterr().out.strip().splitlines()[-1]
    assert again != first and Store(home).get_run(again)["status"] == "done"
    assert main(["submit", "--config", str(cfg), "--home", str(home), "--again"]) == 0
    queued = capsys.readouterr().out.strip().splitlines()[-1]
    assert queued not in (first, again) and Store(home).get_run(queued)["status"] == "queued"
    assert len(Store(home).list_runs()) == 3


# ------------------------------------------------------------------ sweeps

def test_sweep_of_four_points_with_two_done_queues_two(home, capsys):
    store = Store(home)
    points = sweep.expand(TINY, {"lr": [0.001, 0.01]}, seeds=[0, 1])
    done = [finished(store, points[0]), finished(store, points[3])]
    sweep_id, ids = sweep.submit_sweep(points, home)
    assert sweep.reused_count(ids) == 2 and [ids[0], ids[3]] == done
    assert [r["id"] for r in store.runs_with_status("queued")] == [ids[1], ids[2]]
    assert all(r["sweep_id"] == sweep_id for r in store.runs_with_status("queued"))
    # the CLI says how many were skipped; every point is queued now, so none is queued again
    assert main(["sweep", "--config", _cfg_file(home.parent), "--grid", "lr=0.001,0.01", "--seeds", "0,1",
                 "--background", "--home", str(home)]) == 0
    out = capsys.readouterr()
    assert "sweep sw-" in out.err and ": 0 runs" in out.err and "4 point(s) equal to an earlier run" in out.err
    assert out.out.split()[1:] == ids
    assert len(store.list_runs()) == 4


def test_foreground_sweep_of_done_points_trains_nothing(home, capsys):
    store = Store(home)
    points = sweep.expand(TINY, {"lr": [0.001, 0.01]})
    done = [finished(store, p) for p in points]
    assert main(["sweep", "--config", _cfg_file(home.parent), "--grid", "lr=0.001,0.01", "--home", str(home)]) == 0
    out = capsys.readouterr()
    assert out.out.split()[1:] == done and "2 point(s) equal to an earlier run" in out.err
    assert len(store.list_runs()) == 2


def _cfg_file(where: Path) -> str:
    p = where / "sweep-base.json"
    p.write_text(json.dumps(TINY))
    return str(p)


def test_a_running_run_whose_worker_died_is_not_followed(home):
    """A `running` equal run whose worker is gone is marked interrupted first, then not reused."""
    store = Store(home)
    cfg = RunConfig.from_dict(TINY)
    dead = store.create_run(cfg.to_dict(), cfg.content_hash(), status="running", extra={"executor": "jobs"})
    store.update_run(dead, pid=2**22 + 12345, pid_start=1.0, heartbeat=time.time(), started=time.time())
    rid = jobs.submit(TINY, home)
    assert rid != dead and not isinstance(rid, jobs.Reused)
    assert store.get_run(dead)["status"] == "interrupted"
