"""Background runs with real processes: queue, cap and slots, liveness, kill -9, SIGTERM,
cancel and resume, damaged stores, hostile names, crafted checkpoints, injected NaN.

Every worker is a real `python -m engine worker` process on the tiny `digits` set.
Tests marked RESUME-CONTRACT need the runner's checkpoint-resume work
(`runner.execute(..., resume=True)`, a checkpoint on cancel, `LOTTERY_INJECT_NAN_STEP`).
"""

import contextlib
import json
import multiprocessing as mp
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from engine import jobs
from engine.__main__ import main, run_view
from engine.config import ConfigError, RunConfig
from engine.store import RUN_ID_RE, Store, UnknownRun, atomic_torch_save, torch_load

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model": "logreg", "dataset": "digits", "method": "dense", "epochs": 1, "batch_size": 256}
SHORT = {"model": "lenet300", "dataset": "digits", "method": "concave", "lam": 2.0, "epochs": 2,
         "retrain_epochs": 1, "batch_size": 64}
# ~160 steps per epoch: seconds per epoch, long enough to act on mid-epoch
LONG = {"model": "lenet300", "dataset": "digits", "method": "concave", "lam": 2.0, "epochs": 3,
        "retrain_epochs": 1, "batch_size": 8}
ENDED = ("done", "failed", "cancelled", "interrupted")


# ------------------------------------------------------------------ helpers

@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    for k, v in {"LOTTERY_HOME": str(h), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LOTTERY_GPUS": "",
                 "LOTTERY_MAX_RUNS": "1"}.items():
        monkeypatch.setenv(k, v)
    for k in ("LOTTERY_INJECT_NAN_STEP", "LOTTERY_HEARTBEAT_TIMEOUT"):
        monkeypatch.delenv(k, raising=False)
    yield h
    stop_everything(h)


def stop_everything(h: Path) -> None:
    """Teardown: no worker of this store outlives its test."""
    if not (h / "lottery.db").exists():
        return
    store = Store(h)
    for _ in range(2):
        killed = False
        for r in store.list_runs():
            if r["status"] == "queued":
                store.update_run_if(r["id"], {"status": "queued"}, status="cancelled", reason="test teardown")
            if r["pid"] and r["pid_start"] and r["status"] == "running":
                killed |= jobs._signal_worker(r["pid"], r["pid_start"], signal.SIGKILL)
        if not killed:
            break
        time.sleep(0.2)
    jobs._reap()


def wait_for(pred, timeout: float, what: str, every: float = 0.05):
    t0 = time.time()
    while True:
        v = pred()
        if v:
            return v
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def wait_status(store: Store, run_id: str, statuses, timeout: float = 90) -> dict:
    statuses = (statuses,) if isinstance(statuses, str) else statuses

    def check():
        jobs.reconcile(store.home)
        r = store.get_run(run_id)
        return r if r["status"] in statuses else None
    try:
        return wait_for(check, timeout, f"run {run_id} to become {'/'.join(statuses)}", every=0.2)
    except AssertionError:
        r = store.get_run(run_id)
        log = store.run_dir(run_id) / "worker.log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no worker.log)"
        raise AssertionError(f"run {run_id} is {r['status']} ({r['reason']}), not {statuses}; "
                             f"worker.log:\n{tail}") from None


def step_rows(store: Store, run_id: str) -> list[int]:
    return [m["step"] for m in store.metrics(run_id, "step")]


def worker_processes(run_id: str) -> list[int]:
    """Live `python -m engine worker RUN_ID` processes (from /proc, not from the store)."""
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in argv and run_id.encode() in argv and jobs.proc_start_time(int(p.name)) is not None:
            out.append(int(p.name))
    return out


def cli(*args, home, timeout=120):
    env = {**os.environ, "LOTTERY_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def files_outside(tmp_path: Path, home: Path) -> set[str]:
    return {str(p) for p in tmp_path.rglob("*") if home not in p.parents and p != home}


# ------------------------------------------------------------------ settings and liveness (no training)

def test_cap_and_gpu_detection_from_env(monkeypatch):
    monkeypatch.delenv("LOTTERY_MAX_RUNS", raising=False)
    monkeypatch.setenv("LOTTERY_GPUS", "")
    assert jobs.gpu_ids() == [] and jobs.resolve_max_runs() == 1        # CPU-only: one at a time
    monkeypatch.setenv("LOTTERY_GPUS", "0,1,3")
    assert jobs.gpu_ids() == ["0", "1", "3"] and jobs.resolve_max_runs() == 3   # one per GPU
    monkeypatch.delenv("LOTTERY_GPUS")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,-1,4")
    assert jobs.gpu_ids() == ["2"]
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "5")
    assert jobs.resolve_max_runs() == 5 and jobs.resolve_max_runs(0) == 0
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "many")
    with pytest.raises(jobs.JobError, match="LOTTERY_MAX_RUNS"):
        jobs.resolve_max_runs()
    assert jobs._free_slot(["0", "1"], [{"slot": "0"}]) == "1"
    assert jobs._free_slot([], []) is None


def test_proc_start_time_names_one_process():
    me = jobs.proc_start_time(os.getpid())
    assert me is not None and me == jobs.proc_start_time(os.getpid())
    p = subprocess.Popen(["sleep", "30"])
    try:
        st = jobs.proc_start_time(p.pid)
        assert st is not None and st >= me
        assert jobs.same_process(p.pid, st) and not jobs.same_process(p.pid, st + 1)
    finally:
        p.kill()
    wait_for(lambda: _state(p.pid) == "Z", 30, "the killed child to become a zombie", every=0.01)
    assert jobs.proc_start_time(p.pid) is None           # a zombie is not alive
    p.wait()
    assert jobs.proc_start_time(p.pid) is None


def test_reconcile_judges_pid_start_time_and_heartbeat(home):
    store = Store(home)
    cfg = RunConfig.from_dict(TINY)

    def running(pid, pid_start, heartbeat, **kw):
        rid = store.create_run(cfg.to_dict(), cfg.content_hash(), status="running",
                               extra={"executor": kw.pop("executor", "jobs")})
        store.update_run(rid, pid=pid, pid_start=pid_start, heartbeat=heartbeat, started=heartbeat, **kw)
        return rid

    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    try:
        now = time.time()
        st = jobs.proc_start_time(sleeper.pid)
        alive = running(sleeper.pid, st, now)
        reused = running(other.pid, jobs.proc_start_time(other.pid) - 5, now)   # same pid, another process
        dead = running(gone.pid, 12345.0, now)
        silent = running(other.pid, jobs.proc_start_time(other.pid), now - 100)
        never = running(None, None, now - 100)
        foreground = running(os.getpid(), None, now)            # `run` in a terminal: no pid_start
        driver_gone = store.create_run(cfg.to_dict(), cfg.content_hash(), status="queued",
                                       extra={"executor": "sweep", "pid": gone.pid, "pid_start": 1.0})
        queued = jobs.submit(TINY, home, start=False, again=True)     # equal to the runs above: again

        # pump: the live run holds the only slot, so nothing new starts
        assert jobs.pump(home) == []
        r = {rid: store.get_run(rid) for rid in (alive, reused, dead, silent, never, foreground, driver_gone)}
        assert r[alive]["status"] == "running" and r[foreground]["status"] == "running"
        assert r[reused]["status"] == "interrupted" and "belongs to another process" in r[reused]["reason"]
        assert r[dead]["status"] == "interrupted" and f"worker process {gone.pid} is gone" in r[dead]["reason"]
        assert r[silent]["status"] == "interrupted" and re.search(r"no heartbeat for 10\d s", r[silent]["reason"])
        assert r[never]["status"] == "interrupted" and "never started" in r[never]["reason"]
        assert r[driver_gone]["status"] == "interrupted" and "sweep process" in r[driver_gone]["reason"]
        assert store.get_run(queued)["status"] == "queued"
        # the silent worker was killed (its session), so it cannot keep writing next to a resumed run
        assert other.wait(timeout=5) == -signal.SIGKILL
        assert sleeper.poll() is None
    finally:
        for p in (sleeper, other):
            p.kill()
            p.wait()


def test_cancel_queued_and_state_errors(home, capsys):
    store = Store(home)
    rid = jobs.submit(TINY, home, start=False)
    assert store.get_run(rid)["status"] == "queued"
    r = jobs.cancel(rid, home)
    assert r["status"] == "cancelled" and "before it started" in r["reason"]
    assert not (store.run_dir(rid) / "worker.log").exists()
    with pytest.raises(jobs.JobError, match="only queued or running"):
        jobs.cancel(rid, home)
    with pytest.raises(jobs.JobError, match="no run with id"):
        jobs.resume("../x", home)
    # resume a cancelled run with the queue paused: queued with the resume flag
    os.environ["LOTTERY_MAX_RUNS"] = "0"
    r = jobs.resume(rid, home)
    assert r["status"] == "queued" and r["resume"] == 1 and r["reason"] is None
    with pytest.raises(jobs.JobError, match="only interrupted, cancelled, failed"):
        jobs.resume(rid, home)
    # CLI: one line on stderr, exit 2, for unknown ids and wrong states
    nowhere = home.parent / "nowhere"
    for argv in (["cancel", "deadbeef-000000"], ["resume", "../../etc"], ["resume", rid], ["cancel", "/abs"],
                 ["cancel", rid, "--grace", "nan"], ["cancel", rid, "--home", str(nowhere)],
                 ["submit", "--preset", "digits", "--home", str(nowhere), "--set", "lam=-1"]):
        assert main([*argv, "--home", str(home)] if "--home" not in argv else argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err
    os.environ["LOTTERY_MAX_RUNS"] = "lots"
    assert main(["submit", "--preset", "digits", "--home", str(nowhere)]) == 2
    assert "LOTTERY_MAX_RUNS" in capsys.readouterr().err
    assert not nowhere.exists()                        # bad input writes nothing
    os.environ["LOTTERY_MAX_RUNS"] = "0"
    assert main(["cancel", rid, "--home", str(home)]) == 0                  # queued → cancelled
    assert capsys.readouterr().out.strip() == "cancelled"
    assert main(["submit", "--preset", "digits", "--home", str(home)]) == 0
    new = capsys.readouterr().out.strip()
    assert store.get_run(new)["status"] == "queued"


# ------------------------------------------------------------------ kill, restart, SIGTERM

def test_fresh_manager_reattaches_and_never_starts_a_second_worker(home):
    """An app restart is a new process calling pump over the same store."""
    store = Store(home)
    a = jobs.submit({**LONG, "epochs": 30}, home)
    b = jobs.submit(TINY, home)                     # waits: the cap is 1
    wait_for(lambda: step_rows(store, a), 60, "run A to train")
    ra = store.get_run(a)
    assert ra["status"] == "running" and ra["pid"] and ra["pid_start"]
    view = run_view(store, ra)                     # what `show --json` prints
    assert view["pid"] == ra["pid"] and 0 <= view["heartbeat"] < jobs.HEARTBEAT_TIMEOUT

    code = "import json; from engine import jobs; print(json.dumps(jobs.pump()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []          # nothing started
    ra2 = store.get_run(a)
    assert (ra2["status"], ra2["pid"], ra2["pid_start"]) == ("running", ra["pid"], ra["pid_start"])
    assert worker_processes(a) == [ra["pid"]]
    assert store.get_run(b)["status"] == "queued" and not worker_processes(b)

    assert jobs.cancel(b, home)["status"] == "cancelled"
    # as the app does it: SIGTERM and return at once. The worker is stopped, so a cancel that
    # waited would find it cancelled by its own kill after the grace; this one returns it running
    _stop_outside_a_write(store, ra["pid"])
    assert jobs.cancel(a, home, wait=False)["status"] == "running"
    os.kill(ra["pid"], signal.SIGCONT)                # the worker acts on the SIGTERM itself
    ra3 = wait_status(store, a, ENDED, timeout=60)
    assert ra3["status"] == "cancelled" and step_rows(store, a)           # data so far is kept
    assert re.fullmatch(r"cancelled at step \d+.*", ra3["reason"]), ra3["reason"]   # the worker's, not a kill
    wait_for(lambda: not worker_processes(a), 15, "A's worker to exit")
    log = (store.run_dir(a) / "worker.log").read_text()
    assert log.count("=== worker") == 2                                   # one start line, one end line


def test_kill9_mid_epoch_is_interrupted_then_resume_has_every_step(home, monkeypatch):
    """RESUME-CONTRACT: runner.execute(resume=True) continues from the last checkpoint."""
    store = Store(home)
    rid = jobs.submit(LONG, home)

    def mid_epoch2():
        ep = store.metrics(rid, "epoch")
        return ep and max(step_rows(store, rid)) > ep[0]["step"] + 10
    wait_for(mid_epoch2, 90, "the run to be inside its second epoch")
    run = store.get_run(rid)
    # judged by its pid, not by a heartbeat timeout: with an hour's timeout it is still interrupted
    monkeypatch.setenv("LOTTERY_HEARTBEAT_TIMEOUT", "3600")
    os.kill(run["pid"], signal.SIGKILL)
    r = wait_status(store, rid, "interrupted", timeout=60)
    assert r["reason"] == f"worker process {run['pid']} is gone"
    monkeypatch.delenv("LOTTERY_HEARTBEAT_TIMEOUT")

    r = jobs.resume(rid, home)
    assert r["status"] == "running" and r["resume"] == 1
    r = wait_status(store, rid, ENDED, timeout=120)
    assert r["status"] == "done", r["reason"]
    assert_every_step_once(store, rid, [("search", LONG["epochs"]), ("retrain", LONG["retrain_epochs"])])


def assert_every_step_once(store: Store, rid: str, phases: list[tuple[str, int]]) -> None:
    """Epoch rows and step rows exactly as one uninterrupted run writes them."""
    ep = store.metrics(rid, "epoch")
    assert [(m["phase"], m["epoch"]) for m in ep] == [(p, e) for p, n in phases for e in range(1, n + 1)]
    spe = ep[0]["step"]
    assert [m["step"] for m in ep] == [spe * (i + 1) for i in range(len(ep))]
    log_every = max(1, spe // 20)
    expected, offset = [], 0
    for _, n in phases:
        expected += [offset + s for s in range(1, n * spe + 1) if s == 1 or s % log_every == 0]
        offset += n * spe
    got = step_rows(store, rid)
    dup = sorted({s for s in got if got.count(s) > 1})
    missing = sorted(set(expected) - set(got))
    assert got == expected, f"duplicated steps {dup[:10]}, missing steps {missing[:10]}"


def test_sigterm_finishes_the_step_checkpoints_and_exits_cancelled(home):
    """RESUME-CONTRACT: a cancelled run writes runs/<id>/ckpt.pt at the step it stopped."""
    store = Store(home)
    rid = jobs.submit({**LONG, "epochs": 30}, home)
    wait_for(lambda: step_rows(store, rid), 60, "the run to train")
    run = store.get_run(rid)
    os.killpg(run["pid"], signal.SIGTERM)
    assert jobs._CHILDREN[run["pid"]].wait(timeout=30) == 3      # the worker's exit code for `cancelled`
    r = store.get_run(rid)
    assert r["status"] == "cancelled", r["reason"]
    m = re.search(r"step (\d+)", r["reason"] or "")
    assert m, r["reason"]
    stopped = int(m.group(1))
    assert max(step_rows(store, rid)) <= stopped
    ckpt_path = store.run_dir(rid) / "ckpt.pt"
    assert ckpt_path.exists(), "no checkpoint written on SIGTERM"
    ckpt = torch_load(ckpt_path)
    assert ckpt["global_step"] == stopped and ckpt["in_stage"]["phase_step"] > 0


def _stop_outside_a_write(store: Store, pid: int) -> None:
    """SIGSTOP the worker at a moment it holds no SQLite write lock (else every writer waits)."""
    for _ in range(50):
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: _state(pid) == "T", 10, "the worker to stop", every=0.01)
        if _write_lock_free(store):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError("never stopped the worker outside a database write")


@pytest.mark.parametrize("wait", [True, False], ids=["cancel waits", "cancel(wait=False) then reconcile"])
def test_cancel_kills_a_stopped_worker_after_the_grace_with_that_reason(home, wait):
    """Issue 23, item 6: a worker that cannot act on SIGTERM (stopped) is SIGKILLed once the
    grace is over, by cancel itself or, after cancel(wait=False), by the next reconcile; the
    run is `cancelled` with the reason that says so, never before the grace."""
    store = Store(home)
    rid = jobs.submit({**LONG, "epochs": 30}, home)
    wait_for(lambda: step_rows(store, rid), 60, "the run to train")
    run = store.get_run(rid)
    pid = run["pid"]
    _stop_outside_a_write(store, pid)
    assert _state(pid) == "T"
    asked, v = time.time(), store.version()
    r = jobs.cancel(rid, home, grace=2.0, wait=wait)
    if not wait:
        assert r["status"] == "running"                 # asked; nothing is recorded within the grace
        assert store.version() > v                      # the marker moved the store: views show cancelling
        assert jobs.reconcile(home) == [] or time.time() - asked > 2.0
        wait_status(store, rid, "cancelled", timeout=60)
    r = store.get_run(rid)
    assert r["status"] == "cancelled"
    assert r["reason"] == (f"cancelled: worker process {pid} did not stop in time and was killed; "
                           f"data up to its last checkpoint is kept")
    assert r["finished"] - asked >= 2.0                 # the grace was given
    assert jobs._CHILDREN.pop(pid).wait(timeout=30) == -signal.SIGKILL


WRITER = """
import sys, torch
from engine.store import atomic_torch_save
v = 1
while True:
    atomic_torch_save(sys.argv[1], {"version": v, "data": torch.full((12_000_000,), float(v))})
    v += 1
"""


def test_kill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "run" / "ckpt.pt"
    atomic_torch_save(path, {"version": 0, "data": torch.zeros(10)})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for _attempt in range(3):
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, env=env)
        try:
            wait_for(lambda p=p: [f for f in os.listdir(path.parent) if f.endswith(".tmp")] or p.poll() is not None,
                     60, "a checkpoint write", every=0.0005)
        finally:
            p.kill()
            p.wait()
        ckpt = torch_load(path)                      # loads: the previous complete checkpoint
        v = ckpt["version"]
        assert isinstance(v, int) and bool((ckpt["data"] == float(v)).all())
        leftovers = [f for f in os.listdir(path.parent) if f.endswith(".tmp")]
        if leftovers:                                # the kill landed inside a write
            break
    assert leftovers, "never managed to kill the writer inside a write"


# ------------------------------------------------------------------ many submitters

def _submit_many(home: str, n: int, barrier) -> None:
    barrier.wait()
    for _ in range(n):
        jobs.submit(TINY, home, again=True)     # equal configs, each its own run
        time.sleep(0.05)


def test_twenty_concurrent_submissions_hold_the_cap(home, monkeypatch):
    monkeypatch.setenv("LOTTERY_GPUS", "0,1")            # two device slots → cap 2
    monkeypatch.delenv("LOTTERY_MAX_RUNS")
    Store(home)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_submit_many, args=(str(home), 5, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    store = Store(home)
    seen = {"max": 0, "pids": {}, "violations": [], "reads": 0, "read_errors": []}
    done = threading.Event()

    def poll():
        while not done.is_set():
            try:                  # a reader must never see "database is locked" while others write
                running = store.runs_with_status("running")
            except sqlite3.Error as e:
                seen["read_errors"].append(repr(e))
                running = []
            else:
                seen["reads"] += 1
            if running:
                seen["max"] = max(seen["max"], len(running))
                slots = [r["slot"] for r in running]
                if len(running) > 2 or len(set(slots)) != len(slots):
                    seen["violations"].append([(r["id"], r["slot"]) for r in running])
                for r in running:
                    if r["pid"]:
                        seen["pids"].setdefault(r["id"], set()).add(r["pid"])
                        with contextlib.suppress(OSError):
                            env = Path(f"/proc/{r['pid']}/environ").read_bytes().split(b"\0")
                            if f"CUDA_VISIBLE_DEVICES={r['slot']}".encode() not in env and \
                                    jobs.proc_start_time(r["pid"]) == r["pid_start"]:
                                seen["violations"].append(("env", r["id"], r["slot"]))
            time.sleep(0.02)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        runs = store.list_runs()
        assert len(runs) == 20                               # every submission recorded
        wait_for(lambda: sum(r["status"] == "done" for r in store.list_runs()) >= 2, 90, "two runs to finish")
        # the rest are not needed: cancel the queued ones, then (in parallel) the running ones
        for r in store.runs_with_status("queued"):
            with contextlib.suppress(jobs.JobError):
                jobs.cancel(r["id"], home)
        stoppers = [threading.Thread(target=jobs.cancel, args=(r["id"], home))
                    for r in store.runs_with_status("running")]
        for s in stoppers:
            s.start()
        for s in stoppers:
            s.join()
    finally:
        done.set()
        t.join()
    assert not seen["violations"], seen["violations"][:5]
    assert seen["read_errors"] == [], seen["read_errors"][:5]
    # the reader polled all along (every 20 ms, while two runs finished): a handful of reads would
    # mean it was blocked, not that it held
    assert seen["reads"] >= 200, seen["reads"]
    assert seen["max"] == 2                                  # the cap was reached and never passed
    runs = store.list_runs()
    assert all(r["status"] in ("done", "cancelled") for r in runs), [(r["status"], r["reason"]) for r in runs]
    for r in runs:
        assert len(seen["pids"].get(r["id"], ())) <= 1
        log = store.run_dir(r["id"]) / "worker.log"
        starts = log.read_text().count("=== worker") if log.exists() else 0
        assert starts <= 2 and (r["status"] != "done" or starts == 2), (r["id"], starts)   # start + end line


def test_twenty_owners_launching_together_finish_first_come_with_the_cap_held(home, monkeypatch):
    """Issue 22, item 5: twenty students launch one small run each within a second (threads);
    with two slots, the runs are claimed in the order they were queued, never more than two
    run at once, a second launch by a student whose run is still waiting is refused (the
    per-person cap, here 1), and every run finishes: none lost, none doubled."""
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "2")
    monkeypatch.setenv("LOTTERY_MAX_PER_PERSON", "1")
    monkeypatch.setenv("LOTTERY_WORKER_NICE", "0")      # (only so the test is quick on a busy machine)
    store = Store(home)
    owners_ = [f"student{i:02d}" for i in range(20)]
    barrier, ids, errors = threading.Barrier(20), {}, []

    def launch(i: int) -> None:
        barrier.wait()
        try:
            ids[owners_[i]] = jobs.submit({**TINY, "seed": i}, home, owner=owners_[i])
        except Exception as e:      # noqa: BLE001 - reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=launch, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(ids) == 20, errors
    waiting = [r for r in store.runs_with_status("queued")]
    assert waiting, "every run started at once: the cap did not hold"
    with pytest.raises(jobs.JobError, match="LOTTERY_MAX_PER_PERSON"):
        jobs.submit({**TINY, "seed": 99}, home, owner=waiting[-1]["owner"])
    wait_for(lambda: all(r["status"] in ENDED for r in store.list_runs()), 240, "all twenty runs to end", every=0.5)
    runs = store.list_runs()
    assert sorted(r["owner"] for r in runs) == owners_                    # one each: none lost, none doubled
    assert all(r["status"] == "done" for r in runs), [(r["owner"], r["status"], r["reason"]) for r in runs]
    by_queue = [r["id"] for r in sorted(runs, key=lambda r: (r["created"], r["id"]))]
    by_claim = [r["id"] for r in sorted(runs, key=lambda r: (r["claimed"], r["id"]))]
    assert by_claim == by_queue                                             # first come, first served
    events = sorted([(r["claimed"], 1) for r in runs] + [(r["finished"], -1) for r in runs])
    at_once = max(sum(d for _, d in events[:k + 1]) for k in range(len(events)))
    assert at_once == 2                                                     # the slots were used, never passed


def test_reusing_someone_elses_run_adopts_it(home):
    """Issue 20, item 7: a launch that reuses an equal run of someone else's records it under the
    launcher's runs (Store.adopted); the run keeps its owner; reusing one's own records nothing."""
    from engine import runner
    store = Store(home)
    bobs = runner.create(store, RunConfig.from_dict(TINY), status="queued")
    store.update_run(bobs, status="done", owner="bob", finished=time.time())
    assert jobs.submit(TINY, home, owner="alice", start=False) == bobs
    assert jobs.submit(TINY, home, owner="bob", start=False) == bobs
    assert set(store.adopted("alice")) == {bobs} and store.adopted("bob") == {}
    assert store.get_run(bobs)["owner"] == "bob" and len(store.list_runs()) == 1
    store.delete_run(bobs)
    assert store.adopted("alice") == {}


def test_a_finishing_worker_starts_the_next_queued_run(home):
    """Issue 23, item 5: with LOTTERY_MAX_RUNS=1 the second run waits in the queue and the first
    run's worker starts it when it finishes. The test only reads the store: no pump, no reconcile,
    no jobs.list_runs (which reconciles), so nothing but the worker can have started it."""
    store = Store(home)
    first = jobs.submit(TINY, home)
    second = jobs.submit({**TINY, "seed": 1}, home)
    assert store.get_run(second)["status"] == "queued"         # the cap holds it (the first is loading torch)
    wait_for(lambda: store.get_run(second)["status"] in ENDED, 180, "the second run to end", every=0.2)
    a, b = store.get_run(first), store.get_run(second)
    assert (a["status"], b["status"]) == ("done", "done"), ((a["status"], a["reason"]), (b["status"], b["reason"]))
    assert a["started"] < a["finished"] <= b["started"] < b["finished"]   # one after the other
    assert a["pid"] != b["pid"]
    # the first worker got past its closing pump (the line is printed after it)
    assert f"run {first} done" in (store.run_dir(first) / "worker.log").read_text()


# ------------------------------------------------------------------ damaged stores and failures

def test_damaged_and_failing_runs_end_with_reasons_and_others_are_unaffected(tmp_path, home, capsys,
                                                                            monkeypatch):
    """A corrupted run folder, a truncated metrics record, a garbage status, a missing
    config, a bad config, a missing dataset, a full disk: each run is listed with a
    reason, and the healthy run (with a hostile name) finishes as usual."""
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "0")              # build the damage before anything starts
    store = Store(home)
    not_a_dir = tmp_path / "data-is-a-file"
    not_a_dir.write_text("")
    before = files_outside(tmp_path, home)
    # again=True: equal configs, one run each (by default a second submit would reuse the first)
    good = jobs.submit({**TINY, "name": "../x"}, home)
    no_config = jobs.submit(TINY, home, again=True)
    bad_config = jobs.submit(TINY, home, again=True)
    folder = jobs.submit(TINY, home, again=True)
    garbage = jobs.submit(TINY, home, again=True)
    truncated = jobs.submit(TINY, home, again=True)
    no_data = jobs.submit({**TINY, "dataset": "mnist", "model": "lenet300"}, home, data_dir=not_a_dir)
    full = jobs.submit(TINY, home, again=True)
    with store.connect() as db:
        db.execute("UPDATE runs SET config='{not json' WHERE id=?", (no_config,))
        db.execute("UPDATE runs SET config=? WHERE id=?", (json.dumps({**TINY, "lam": -1}), bad_config))
        db.execute("UPDATE runs SET status='zzz' WHERE id=?", (garbage,))
        db.execute("UPDATE runs SET status='done', summary='{\"test_accuracy\": 0.5}' WHERE id=?", (truncated,))
    (store.run_dir(no_config) / "config.json").unlink()
    d = store.run_dir(folder)
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    d.write_bytes(b"\x00garbage")                          # the run folder is a file now
    store.add_metrics(truncated, [{"kind": "step", "step": 1, "loss": 0.5}])
    with open(store.run_dir(truncated) / "metrics.jsonl", "a") as f:
        f.write('{"kind": "step", "step": 2, "lo')
    (store.run_dir(full) / "metrics.jsonl").symlink_to("/dev/full")     # every write: ENOSPC

    monkeypatch.setenv("LOTTERY_MAX_RUNS", "6")
    jobs.pump(home)
    for rid in (good, no_config, bad_config, folder, no_data, full):
        wait_status(store, rid, ENDED, timeout=120)
    assert main(["list", "--json", "--home", str(home)]) == 0
    listed = {v["id"]: v for v in json.loads(capsys.readouterr().out)}
    assert set(listed) == {good, no_config, bad_config, folder, garbage, truncated, no_data, full}
    assert listed[good]["status"] == "done" and listed[good]["reason"] is None
    assert listed[good]["name"] == "../x"

    def failed(rid, *words):
        v = listed[rid]
        assert v["status"] == "failed" and all(w in (v["reason"] or "") for w in words), (v["status"], v["reason"])
    failed(no_config, "config")
    failed(bad_config, "lam")
    failed(folder, "could not start a worker")
    failed(no_data, "dataset 'mnist' is not available")
    failed(full, "disk full while writing", "metrics.jsonl")
    assert "unknown status 'zzz'" in listed[garbage]["reason"]
    assert listed[truncated]["status"] == "done"
    assert [m["step"] for m in store.metrics(truncated)] == [1]
    assert main(["show", garbage, "--json", "--home", str(home)]) == 0
    capsys.readouterr()
    assert files_outside(tmp_path, home) == before          # nothing written outside the store


def test_failure_reasons_for_oom_and_disk_full():
    import errno
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has ...")
    assert jobs.failure_reason(oom).startswith("CUDA out of memory. Tried to allocate 20.00 GiB")
    assert jobs.failure_reason(RuntimeError("weird")) is None
    e = OSError(errno.ENOSPC, "No space left on device", "/store/runs/x/ckpt.pt")
    assert jobs.failure_reason(e) == "disk full while writing /store/runs/x/ckpt.pt (No space left on device)"
    assert jobs.failure_reason(sqlite3.OperationalError("database or disk is full")).startswith("disk full")
    # an I/O error is not a full disk: it is not reported as one
    assert jobs.failure_reason(sqlite3.OperationalError("disk I/O error")) is None
    assert jobs.failure_reason(ConfigError("lam", "lam must be ≥ 0")) == "invalid config: lam must be ≥ 0"


def test_hostile_names_stay_metadata(tmp_path, home, monkeypatch, capsys):
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "0")
    before = files_outside(tmp_path, home)
    names = ["../x", "/etc/passwd", "a/../../b", "..", "~root/.ssh", "x" * 200, "名前 \u202e"]
    ids = [jobs.submit({**TINY, "name": n}, home, again=True) for n in names]   # names are not identity
    store = Store(home)
    for rid, n in zip(ids, names):
        assert RUN_ID_RE.fullmatch(rid) and store.get_run(rid)["name"] == n
        assert store.run_dir(rid).parent == home / "runs"
    assert sorted(p.name for p in (home / "runs").iterdir()) == sorted(ids)
    for bad in ("a\x00b", "x" * 500):
        with pytest.raises(ConfigError, match="name"):
            jobs.submit({**TINY, "name": bad}, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    cfg = tmp_path / "nul.json"
    cfg.write_text(json.dumps({**TINY, "name": "a\x00b"}))
    assert main(["submit", "--config", str(cfg), "--home", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "name" in err[0]
    assert not (tmp_path / "other").exists()
    for bad_id in ("../x", "/etc", "a\x00", "X" * 500):
        with pytest.raises(UnknownRun):
            store.run_dir(bad_id)
    assert files_outside(tmp_path, home) == before | {str(cfg)}


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_checkpoint_is_refused(tmp_path, home, monkeypatch):
    """RESUME-CONTRACT (the resume part): resuming loads ckpt.pt with weights_only=True."""
    marker = tmp_path / "PWNED"
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "0")
    store = Store(home)
    rid = jobs.submit(SHORT, home)
    store.update_run(rid, status="interrupted", reason="test")
    ckpt = store.run_dir(rid) / "ckpt.pt"
    torch.save({"model": _Payload(marker), "global_step": 5}, ckpt)
    with pytest.raises(Exception):                 # noqa: B017 - any refusal will do, as long as nothing runs
        torch_load(ckpt)
    assert not marker.exists()
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "1")
    jobs.resume(rid, home)
    r = wait_status(store, rid, ENDED)
    assert not marker.exists(), "the pickle payload ran"
    assert r["status"] == "failed", r["reason"]
    assert "unexpected keyword argument 'resume'" not in r["reason"], "runner.execute has no resume yet"
    assert r["reason"] == ("ckpt.pt is not a readable Lottery Lab checkpoint (it may be damaged or not ours); "
                           "it was not loaded."), r["reason"]


def test_nan_at_step_k_fails_there_and_keeps_the_last_good_checkpoint(home, monkeypatch):
    """RESUME-CONTRACT: LOTTERY_INJECT_NAN_STEP, and checkpoints before the failure."""
    k = 30                                       # second search epoch (21 steps per epoch at batch 64)
    monkeypatch.setenv("LOTTERY_INJECT_NAN_STEP", str(k))
    store = Store(home)
    rid = jobs.submit(SHORT, home)
    r = wait_status(store, rid, ENDED)
    assert r["status"] == "failed", r["reason"]
    assert re.search(rf"non-finite loss at step {k}\b", r["reason"]), r["reason"]
    assert all(s < k for s in step_rows(store, rid))
    ckpt_path = store.run_dir(rid) / "ckpt.pt"
    assert ckpt_path.exists(), "the last good checkpoint is gone"
    ckpt = torch_load(ckpt_path)
    # the last good one is the end of the first search epoch, the epoch the failure never reached
    first_epoch_end = store.metrics(rid, "epoch")[0]["step"]
    assert ckpt["global_step"] == first_epoch_end < k
    assert (ckpt["in_stage"]["name"], ckpt["in_stage"]["epoch"], ckpt["in_stage"]["batch"]) == ("r0-search", 2, 0)


# ------------------------------------------------------------------ priority (issue 12 item 16)

def test_workers_run_below_the_app(home, monkeypatch):
    """Page loads took up to 40 s while one worker trained on 2 cores: workers start at a
    lower CPU priority and, on ≤ 2 cores, leave the app a core (LOTTERY_WORKER_NICE /
    LOTTERY_WORKER_THREADS change both; junk is refused naming the variable)."""
    for k in ("LOTTERY_WORKER_NICE", "LOTTERY_WORKER_THREADS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert jobs.worker_priority() == (10, 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert jobs.worker_priority() == (10, None)             # many cores: torch's own choice
    monkeypatch.setenv("LOTTERY_WORKER_NICE", "0")
    monkeypatch.setenv("LOTTERY_WORKER_THREADS", "3")
    assert jobs.worker_priority() == (0, 3)
    monkeypatch.setenv("LOTTERY_WORKER_NICE", "high")
    with pytest.raises(jobs.JobError, match="LOTTERY_WORKER_NICE must be an integer in"):
        jobs.submit(TINY, home=home)
    monkeypatch.undo()
    monkeypatch.setenv("LOTTERY_HOME", str(home))
    monkeypatch.setenv("LOTTERY_WORKER_THREADS", "1")
    store = Store(home)
    rid = jobs.submit(TINY, home=home)
    second = jobs.submit({**TINY, "seed": 1}, home=home)     # cap 1: the first run's worker starts it
    wait_status(store, second, "done")
    for r in (rid, second):      # not +10 on top of the first worker's +10
        log = (store.run_dir(r) / "worker.log").read_text()
        m = re.search(r"nice (\d+), torch threads (\w+)", log)
        assert m, log[-500:]
        assert int(m.group(1)) == min(19, os.nice(0) + 10) and m.group(2) == "1", (r, log[-500:])


# ------------------------------------------------------------------ one writer per run (fencing)

STOPPABLE = {**LONG, "epochs": 2}      # a first epoch to stop after, then a second and a retrain to resume
STATUS_LOG = """
CREATE TABLE IF NOT EXISTS status_log(run_id TEXT, status TEXT, pid INTEGER);
CREATE TRIGGER IF NOT EXISTS log_status AFTER UPDATE OF status ON runs
BEGIN INSERT INTO status_log VALUES(NEW.id, NEW.status, NEW.pid); END;
"""


def _started_then_stopped(store: Store, proc: subprocess.Popen, monkeypatch) -> str:
    """Wait for the process's run to finish an epoch, SIGSTOP it, wait for `interrupted`."""
    rid = wait_for(lambda: next((r["id"] for r in store.list_runs() if r["pid"] == proc.pid), None), 90,
                   "the process to take its run")
    wait_for(lambda: store.metrics(rid, "epoch") or proc.poll() is not None, 90, "a first epoch")
    assert proc.poll() is None, proc.communicate()
    for _ in range(50):
        os.kill(proc.pid, signal.SIGSTOP)
        # Stopped inside a database write it would hold SQLite's write lock, and every writer
        # would wait until it runs again or is killed (`resume --force`, tested below): stop it
        # again at another moment, as a user's Ctrl-Z almost always lands.
        if _write_lock_free(store):
            break
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(0.05)
    monkeypatch.setenv("LOTTERY_HEARTBEAT_TIMEOUT", "3")
    wait_status(store, rid, "interrupted", timeout=30)        # no heartbeat for 3 s
    monkeypatch.setenv("LOTTERY_HEARTBEAT_TIMEOUT", "30")     # (the resumed worker beats every 2 s)
    assert _state(proc.pid) == "T"
    return rid


def _write_lock_free(store: Store) -> bool:
    db = sqlite3.connect(store.db_path, timeout=1.0, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


def _state(pid: int) -> str:
    data = Path(f"/proc/{pid}/stat").read_text()
    return data[data.rindex(")") + 2:].split()[0]


@pytest.mark.parametrize("kind", ["foreground run", "sweep task"])
def test_stopped_writer_resumed_elsewhere_writes_nothing_after_sigcont(home, tmp_path, monkeypatch, capsys, kind):
    """Issue 13, failure 1: SIGSTOP a writer, let the run be resumed by another process,
    then SIGCONT the first one. It stops at its next write, says so, exits non-zero
    and writes nothing: one writer's rows, steps strictly increasing, `done` once."""
    store = Store(home)
    with store.connect() as db:
        db.executescript(STATUS_LOG)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(STOPPABLE))
    argv = ["run", "--config", str(cfg_file), "--quiet"] if kind == "foreground run" else \
        ["sweep", "--config", str(cfg_file), "--grid", "seed=0", "--jobs", "1"]
    env = {**os.environ, "LOTTERY_HOME": str(home)}
    first = subprocess.Popen([sys.executable, "-m", "engine", *argv], cwd=ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        rid = _started_then_stopped(store, first, monkeypatch)
        before = store.get_run(rid)
        refused = main(["resume", rid])          # must refuse: the stopped process is alive (checked below)
        refusal = capsys.readouterr().err
        if refused != 0:
            # so resume it "elsewhere": as if the stopped process ran on a machine we cannot look into
            with store.connect() as db:
                db.execute("UPDATE runs SET host='another-machine' WHERE id=?", (rid,))
            assert main(["resume", rid]) == 0
        wait_for(lambda: store.get_run(rid)["started"] != before["started"], 60, "the resumed worker to take the run")
        v0 = store.get_run(rid)["data_version"]
        wait_for(lambda: store.get_run(rid)["data_version"] > v0, 60, "the resumed worker to write")
        os.kill(first.pid, signal.SIGCONT)
        out, errs = first.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(first.pid, signal.SIGCONT)
        if first.poll() is None:
            first.kill()
            first.wait()
    # what went wrong before: two writers' rows, steps not monotonic, a final status twice
    r = wait_status(store, rid, ENDED, timeout=120)
    wait_for(lambda: not jobs.same_process(r["pid"], r["pid_start"]), 120, "the resumed worker to exit")
    r = store.get_run(rid)
    assert r["status"] == "done", r["reason"]
    assert_every_step_once(store, rid, [("search", STOPPABLE["epochs"]), ("retrain", STOPPABLE["retrain_epochs"])])
    stats = [(m["phase"], m["epoch"], m["layer"]) for m in store.mask_stats(rid)]
    assert len(stats) == len(set(stats))                        # no mask statistics twice
    with store.connect() as db:
        log = [tuple(x) for x in db.execute("SELECT status, pid FROM status_log WHERE run_id=?", (rid,))]
    finals = [(s, p) for s, p in log if s in ("done", "failed", "cancelled")]
    assert finals == [("done", r["pid"])], log                  # written once, by the resumed worker
    # the stale writer said so and exited non-zero
    assert first.returncode == 4, errs                          # jobs.EXIT_STALE
    assert re.search(r"attempt \d+ took it over", errs) and "stopped without writing anything" in errs, errs
    assert "done:" not in errs and "Traceback" not in errs
    # and `resume` had refused while the stopped process was alive
    err = refusal.strip().splitlines()
    assert refused == 2 and len(err) == 1 and "still alive (stopped)" in err[0] and "--force" in err[0], err


def test_resume_refuses_a_live_stopped_holder_and_force_kills_it(home, monkeypatch):
    """`resume` looks at the recorded process (pid + start time): alive, even stopped, means no;
    --force kills it first. A pid that now names another process does not count."""
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "0")
    store = Store(home)
    cfg = RunConfig.from_dict(TINY)
    holder, stuck = subprocess.Popen(["sleep", "60"]), subprocess.Popen(["sleep", "60"])
    try:
        rid = store.create_run(cfg.to_dict(), cfg.content_hash(), status="interrupted")
        store.update_run(rid, pid=holder.pid, pid_start=jobs.proc_start_time(holder.pid))
        os.kill(holder.pid, signal.SIGSTOP)
        wait_for(lambda: _state(holder.pid) == "T", 5, "the holder to stop")
        with pytest.raises(jobs.JobError, match=rf"process {holder.pid} is still alive \(stopped\)"):
            jobs.resume(rid, home)
        assert store.get_run(rid)["status"] == "interrupted"
        r = jobs.resume(rid, home, force=True)
        assert holder.wait(timeout=5) == -signal.SIGKILL
        assert r["status"] == "queued" and r["resume"] == 1 and r["attempt"] == 1
        # a run still `running` whose process is stopped: --force kills it (it might hold the write lock)
        running = store.create_run(cfg.to_dict(), cfg.content_hash(), status="running")
        store.update_run(running, pid=stuck.pid, pid_start=jobs.proc_start_time(stuck.pid), heartbeat=time.time())
        os.kill(stuck.pid, signal.SIGSTOP)
        wait_for(lambda: _state(stuck.pid) == "T", 5, "the process to stop")
        with pytest.raises(jobs.JobError, match="only interrupted"):
            jobs.resume(running, home)
        r = jobs.resume(running, home, force=True)
        assert stuck.wait(timeout=5) == -signal.SIGKILL and r["status"] == "queued"
        # a recorded pid whose start time differs is another process: no refusal
        other = store.create_run(cfg.to_dict(), cfg.content_hash(), status="failed")
        store.update_run(other, pid=os.getpid(), pid_start=jobs.proc_start_time(os.getpid()) - 1)
        assert jobs.resume(other, home)["status"] == "queued"
    finally:
        for p in (holder, stuck):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_referenced_run_ids_are_checked_before_anything_is_queued(home, monkeypatch, capsys):
    """Issue 13: random_from / warm_start (and reinit_from) must name a finished run of this
    store with a ticket (a search-end state for warm_start): else one line, exit 2, nothing queued."""
    from engine.refs import check_references
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "0")
    store = Store(home)
    cfg = RunConfig.from_dict(TINY)

    def make(status, *files):
        rid = store.create_run(cfg.to_dict(), cfg.content_hash(), status=status)
        for f in files:
            store.save_array(rid, f, {"mask": {}})
        return rid
    with_ticket, no_ticket, running = make("done", "ticket"), make("done"), make("running", "ticket")
    searched = make("done", "ticket", "search_end")
    h = ["--home", str(home)]
    bad = [("random_from", "../../etc", "must be the id of a finished run"),
           ("random_from", "deadbeef-000000", "no run with id 'deadbeef-000000'"),
           ("random_from", running, f"run {running} is running"),
           ("random_from", no_ticket, "has no ticket"),
           ("warm_start", with_ticket, "has no search-end state")]
    before = len(store.list_runs())
    for key, value, words in bad:
        method = "random" if key == "random_from" else "concave"
        for argv in (["submit", "--preset", "digits"], ["run", "--preset", "digits", "--quiet"],
                     ["sweep", "--preset", "digits", "--grid", "seed=0,1", "--background"]):
            assert main([*argv, "--set", f"method={method}", "--set", f"{key}={value}", *h]) == 2, (argv, key)
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and key in err[0] and words in err[0], err
    assert len(store.list_runs()) == before                  # nothing queued
    assert not (home.parent / "elsewhere").exists()
    with pytest.raises(ConfigError, match="no run with id"):  # a store that does not exist is not created
        check_references({"random_from": with_ticket}, home.parent / "elsewhere")
    assert not (home.parent / "elsewhere").exists()
    with pytest.raises(ConfigError, match="reinit_from: run .* has no ticket"):
        check_references({"reinit_from": no_ticket}, home)
    # good references are queued
    assert main(["submit", "--preset", "digits", "--set", "method=random", "--set", f"random_from={with_ticket}",
                 *h]) == 0
    assert main(["submit", "--preset", "digits", "--set", f"warm_start={searched}", *h]) == 0
    assert len(store.list_runs()) == before + 2


def test_export_marks_a_damaged_ticket_and_list_shows_a_missing_folder(home, tmp_path, capsys):
    """Issue 13: `export` verifies each .pt it exports loads safely (a truncated ticket.pt is
    exported as ticket.pt.damaged, listed in DAMAGED.json, exit 1); a run whose folder was
    deleted shows `damaged: run folder missing` in list and show."""
    import shutil
    store = Store(home)
    cfg = RunConfig.from_dict(TINY)
    good, truncated, gone = (store.create_run(cfg.to_dict(), cfg.content_hash(), status="done") for _ in range(3))
    for rid in (good, truncated, gone):
        store.save_array(rid, "ticket", {"mask": {"w": torch.ones(50, 50, dtype=torch.bool)}})
    t = store.run_dir(truncated) / "ticket.pt"
    t.write_bytes(t.read_bytes()[:300])
    h = ["--home", str(home)]
    assert main(["export", good, "--out", str(tmp_path / "good"), *h]) == 0
    assert {p.name for p in (tmp_path / "good").iterdir()} == {"config.json", "ticket.pt"}
    assert torch_load(tmp_path / "good" / "ticket.pt")["mask"]["w"].all()
    capsys.readouterr()
    assert main(["export", truncated, "--out", str(tmp_path / "bad"), *h]) == 1
    err = capsys.readouterr().err
    assert "ticket.pt is not a readable Lottery Lab checkpoint" in err and "weights_only" not in err
    assert {p.name for p in (tmp_path / "bad").iterdir()} == {"config.json", "ticket.pt.damaged", "DAMAGED.json"}
    assert "ticket.pt" in json.loads((tmp_path / "bad" / "DAMAGED.json").read_text())
    import io
    import zipfile

    from ui.data import export_zip  # the app's "Everything (.zip)" does the same
    names = set(zipfile.ZipFile(io.BytesIO(export_zip(store, truncated))).namelist())
    assert {f"{truncated}/ticket.pt.damaged", f"{truncated}/DAMAGED.json"} <= names
    assert f"{truncated}/ticket.pt" not in names

    shutil.rmtree(store.run_dir(gone))
    assert main(["list", *h]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()}
    assert lines[gone].endswith("damaged: run folder missing") and "damaged" not in lines[good]
    assert main(["show", gone, "--json", *h]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["status"] == "done" and view["reason"] == "damaged: run folder missing"
    assert view["damaged"] == "run folder missing"
