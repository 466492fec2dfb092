"""Honest estimates (issue 15, item 6): the runs ahead in the queue and the machine's load
count, the estimate is recorded at launch and compared with the actual time on Runs.
Also the Launch page's side of deduplication (item 5)."""

import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from test_app import routed_by_app_py, torch_threads_restored  # noqa: F401 - autouse fixtures

from engine import jobs
from engine.config import PRESETS, RunConfig
from engine.store import Store
from ui import estimate
from ui.estimate import Machine

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
TINY = {"model": "logreg", "dataset": "digits", "method": "dense", "epochs": 1, "batch_size": 256}
IDLE = Machine(cores=2, load1=0.0, cap=1, threads=1)


# ------------------------------------------------------------------ the pure parts

def test_queue_finish_times_first_come_first_served():
    # one slot: 10 s left of the running run, a 20 s run queued ahead, then ours (5 s each)
    assert estimate.queue_finish_times([10.0], [20.0], [5.0, 5.0], cap=1) == [35.0, 40.0]
    # two slots: the queued run takes the free one at once (ends at 20 s); ours starts when the
    # running run ends (10 s) and the second after it (15 s), before the queued run is over
    assert estimate.queue_finish_times([10.0], [20.0], [5.0, 5.0], cap=2) == [15.0, 20.0]
    assert estimate.queue_finish_times([], [], [7.0], cap=1) == [7.0]                 # nothing ahead
    assert estimate.queue_finish_times([30.0, 40.0], [], [5.0], cap=1) == [45.0]     # more running than the cap
    assert estimate.queue_finish_times([10.0], [], [5.0], cap=0) is None             # queue paused


def test_slowdown_from_load_and_the_runs_sharing_the_machine():
    assert estimate.slowdown(IDLE, running=0, concurrent=1) == 1.0
    busy = Machine(cores=2, load1=3.0, cap=1, threads=1)
    # one of the 3 runnable processes is our own worker (it will have finished): 2 others + our run on 2 cores
    assert estimate.slowdown(busy, running=1, concurrent=1) == pytest.approx(1.5)
    assert estimate.slowdown(busy, running=0, concurrent=1) == pytest.approx(2.0)
    two = Machine(cores=2, load1=0.0, cap=2, threads=1)
    assert estimate.slowdown(two, running=0, concurrent=2) == pytest.approx(1.0)
    four = Machine(cores=4, load1=0.0, cap=2, threads=4)                              # torch threads = cores
    assert estimate.slowdown(four, running=0, concurrent=2) == pytest.approx(2.0)
    assert estimate.slowdown(Machine(cores=1, load1=100.0, cap=1, threads=1), 0, 1) == estimate.SLOWDOWN_MAX
    # autogroup: the CPU is shared by sessions. 4 busy ones, one of them our running worker:
    # 3 others + our new run's on 2 cores → half a core for a 1-thread worker
    sessions = Machine(cores=2, load1=9.0, cap=1, threads=1, sessions=4.0)
    assert estimate.slowdown(sessions, running=1, concurrent=1) == pytest.approx(2.0)
    assert estimate.slowdown(Machine(cores=2, load1=9.0, cap=1, threads=1, sessions=1.0), 1, 1) == 1.0
    eight = Machine(cores=8, load1=0.0, cap=2, threads=8, sessions=2.0)        # 2 other sessions, 2 runs
    assert estimate.slowdown(eight, running=0, concurrent=2) == pytest.approx(4.0)


def test_launch_estimate_counts_the_runs_ahead_and_the_load():
    now = 1000.0
    alone = estimate.launch_estimate([TINY], [], IDLE, now=now)
    per_run = estimate.estimate(TINY).seconds
    assert alone.per_run == [pytest.approx(per_run)] and alone.until == [pytest.approx(per_run)]
    assert alone.wait == 0.0 and alone.slowdown == 1.0
    running = {"id": "r", "status": "running", "started": now - 2.0, "progress": 0.5, "config": TINY}
    queued = {"id": "q", "status": "queued", "created": now - 5.0, "config": TINY, "executor": "jobs"}
    other_sweep = {"id": "s", "status": "queued", "created": now - 5.0, "config": TINY, "executor": "sweep"}
    ahead = estimate.launch_estimate([TINY], [running, queued, other_sweep], IDLE, now=now)
    # the running run is half done in 2 s: its pace (4 s for what the model gives per_run less
    # the worker's start) slows the others; 2 s more for it, then the queued run, then ours, on one slot
    pace = 4.0 / (per_run - estimate.WORKER_START_S)
    assert ahead.paced and 1 < pace < estimate.SLOWDOWN_MAX and ahead.slowdown == pytest.approx(pace)
    assert ahead.until == [pytest.approx(2.0 + 2 * per_run * pace)] and (ahead.running, ahead.queued) == (1, 1)
    assert ahead.wait == pytest.approx(2.0 + per_run * pace)
    loaded = estimate.launch_estimate([TINY], [], Machine(cores=2, load1=3.0, cap=1, threads=1), now=now)
    assert loaded.slowdown == pytest.approx(2.0) and loaded.until == [pytest.approx(2 * per_run)]
    paused = estimate.launch_estimate([TINY], [], Machine(cores=2, load1=0.0, cap=0, threads=1), now=now)
    assert paused.until is None and paused.wait is None


def test_recent_pace_and_history_take_the_place_of_the_load_average():
    now = 10_000.0
    model = estimate.estimate(TINY).seconds - estimate.WORKER_START_S

    def done(took, ago=60.0, **kw):
        return {"status": "done", "config": TINY, "started": now - ago - took, "finished": now - ago, **kw}
    assert estimate.recent_pace([], now) is None
    assert estimate.recent_pace([done(2 * model), done(3 * model), done(9 * model)], now) == pytest.approx(3.0)
    assert estimate.recent_pace([done(2 * model, ago=2 * estimate.PACE_WINDOW_S)], now) is None   # too old
    assert estimate.recent_pace([done(2 * model, example=1)], now) is None                          # class pack
    busy = Machine(cores=2, load1=9.0, cap=1, threads=1)
    # a recent run went 3× the model: that, not the load average's ×5, slows a run of another kind
    other = {**TINY, "model": "lenet300"}
    paced = estimate.launch_estimate([other], [done(3 * model)], busy, now=now)
    assert paced.paced and paced.slowdown == pytest.approx(3.0)
    assert paced.per_run == [pytest.approx(3.0 * estimate.estimate(other).seconds)]
    # a run of the same kind: its measured time already carries the load
    same = estimate.launch_estimate([TINY], [done(3 * model, summary={"wall_seconds": 3 * model})], busy, now=now)
    assert same.per_run == [pytest.approx(estimate.estimate(TINY, history=[
        done(3 * model, summary={"wall_seconds": 3 * model})]).seconds)]
    unpaced = estimate.launch_estimate([other], [], busy, now=now)
    assert not unpaced.paced and unpaced.slowdown == pytest.approx(5.0)


def test_a_burst_counts_worker_start_from_history_weighted_epochs_and_no_examples():
    """Issue 22, item 4: what a burst of launches got wrong. History is per weighted epoch
    whatever the method (a dense run's epochs are plain ones); class-pack examples (measured
    elsewhere) are no history; the worker's start-up is measured (claimed → started)."""
    dense = {**TINY, "epochs": 10}
    hist = [{"status": "done", "config": dense, "summary": {"wall_seconds": 14.0}}]
    setup = estimate.SETUP_BY_DATASET["digits"]
    base = estimate.WORKER_START_S + setup
    assert estimate.weighted_epochs(dense) == 10
    assert estimate.weighted_epochs({**TINY, "method": "concave", "epochs": 5, "retrain_epochs": 5}) == \
        pytest.approx(5 * estimate.SEARCH_FACTOR + 5)
    assert estimate.estimate(dense, history=hist).seconds == pytest.approx(base + 14.0)
    concave = {**TINY, "method": "concave", "lam": 1.0, "epochs": 5, "retrain_epochs": 5}
    assert estimate.estimate(concave, history=hist).seconds == pytest.approx(base + 1.4 * (5 * 1.4 + 5))
    example = [{**hist[0], "example": 1}]
    assert estimate.from_history(dense, example) is None
    assert "throughput" in estimate.estimate(dense, history=example).basis
    # worker start-up: the median of the recent runs' claimed → started, else the constant
    started = [{"status": "done", "config": TINY, "claimed": 100.0 + i, "started": 100.0 + i + t}
               for i, t in enumerate([9.0, 11.0, 10.0])]
    assert estimate.worker_start(started) == pytest.approx(10.0)
    assert estimate.worker_start([{**r, "example": 1} for r in started]) is None
    assert estimate.worker_start([]) is None
    assert estimate.estimate(dense, history=hist + started).seconds == pytest.approx(10.0 + setup + 14.0)


def test_a_claimed_run_counts_its_time_from_its_claim_and_burst_launches_queue_in_order():
    now = 1000.0
    per_run = estimate.estimate(TINY).seconds
    # launched 100 s ago, claimed 2 s ago, its worker still importing torch: most of it is still ahead
    claimed = {"id": "c", "status": "running", "created": now - 100, "claimed": now - 2.0, "started": None,
               "progress": 0.0, "config": TINY}
    est = estimate.launch_estimate([TINY], [claimed], IDLE, now=now)
    assert est.until == [pytest.approx(per_run - 2.0 + per_run)]
    # several launches arriving together: each its own place; over the per-person cap: refused
    queued = {"id": "q", "status": "queued", "created": now - 1, "config": TINY, "owner": "ann"}
    launches = [("bob", TINY), ("ann", TINY), ("cat", TINY), ("bob", TINY)]
    assert estimate.launch_estimates(launches, [queued], IDLE, per_person=1, now=now) == [
        pytest.approx(2 * per_run), None, pytest.approx(3 * per_run), None]
    two = Machine(cores=2, load1=0.0, cap=2, threads=1)
    got = estimate.launch_estimates(launches, [queued], two, now=now)
    assert got == [pytest.approx(per_run), pytest.approx(2 * per_run), pytest.approx(2 * per_run),
                   pytest.approx(3 * per_run)]
    paused = Machine(cores=2, load1=0.0, cap=0, threads=1)
    assert estimate.launch_estimates(launches, [], paused, now=now) == [None] * 4


def test_estimate_vs_actual():
    run = {"status": "done", "estimate": 40.0, "created": 100.0, "finished": 160.0}
    assert estimate.estimate_vs_actual(run) == {"estimate": 40.0, "actual": 60.0, "ratio": 1.5}
    assert estimate.estimate_vs_actual({**run, "estimate": None}) is None
    assert estimate.estimate_vs_actual({**run, "status": "failed"}) is None


# ------------------------------------------------------------------ the pages

@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    for k, v in {"LOTTERY_HOME": str(h), "LOTTERY_GPUS": "", "LOTTERY_MAX_RUNS": "0"}.items():
        monkeypatch.setenv(k, v)
    return h


def open_page(page: str, query: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page(page)
    if query:
        at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def launch_digits(at: AppTest) -> AppTest:
    at.number_input(key="cfg.epochs").set_value(1).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_launch_same_config_twice_gives_one_run_and_run_again_gives_two(home):
    """The real jobs queue (paused, so nothing trains): Launch queues a run with its estimate;
    launching the same config again shows that run instead of queueing one; once it is done,
    too; 'Run again anyway' queues a second."""
    at = launch_digits(open_page("pages/launch.py", {"preset": "digits"}))
    shown = next(m for m in at.metric if m.label == "Results in")
    assert shown.value == "queue paused"                       # LOTTERY_MAX_RUNS=0: nothing starts
    at.button(key="launch.go").click().run()
    assert not at.exception
    store = Store(home)
    (first,) = store.list_runs()
    assert first["status"] == "queued" and first["config"]["epochs"] == 1
    # the same config again: the page says so before the click, and the click queues nothing
    at = launch_digits(open_page("pages/launch.py", {"preset": "digits"}))
    info = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", " ".join(i.value for i in at.info))     # Markdown escapes off
    assert first["id"] in info and "is queued" in info
    at.button(key="launch.go").click().run()
    assert [r["id"] for r in store.list_runs()] == [first["id"]]
    assert at.query_params.get("runs") in (first["id"], [first["id"]])
    store.update_run(first["id"], status="done", finished=time.time(), summary={
        "test_accuracy": 0.9, "remaining": 1.0, "sparsity": 0.0, "kept": 1, "total": 1, "wall_seconds": 1.0})
    at = launch_digits(open_page("pages/launch.py", {"preset": "digits"}))
    assert "which finished" in " ".join(i.value for i in at.info)
    at.button(key="launch.go").click().run()
    assert len(store.list_runs()) == 1
    at = launch_digits(open_page("pages/launch.py", {"preset": "digits"}))
    at.button(key="launch.again").click().run()
    assert not at.exception
    runs = store.list_runs()
    assert len(runs) == 2 and runs[0]["status"] == "queued" and runs[0]["id"] != first["id"]


def test_launch_records_the_estimate_it_shows(home, monkeypatch):
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "1")
    monkeypatch.setattr(jobs, "pump", lambda *a, **k: [])      # a slot, but nothing is started here
    busy = Machine(cores=2, load1=3.0, cap=1, threads=1)      # the same load at render and at the click
    monkeypatch.setattr(estimate, "machine_now", lambda: busy)
    at = launch_digits(open_page("pages/launch.py", {"preset": "digits"}))
    shown = next(m for m in at.metric if m.label == "Results in").value
    at.button(key="launch.go").click().run()
    assert not at.exception
    (run,) = Store(home).list_runs()
    from ui.data import fmt_duration
    assert run["estimate"] > 0 and shown == f"≈ {fmt_duration(run['estimate'])}"
    alone = estimate.launch_estimate([run["config"]], [], busy)
    assert run["estimate"] == pytest.approx(alone.until[0]) and alone.slowdown == pytest.approx(2.0)


def test_runs_page_shows_estimate_against_actual(home):
    store = Store(home)
    cfg = RunConfig.from_dict({**PRESETS["digits"], "epochs": 1})
    rid = jobs.submit(cfg, home, estimate=40.0)
    with store.connect() as db:        # launched 60 s before it finished
        db.execute("UPDATE runs SET created=? WHERE id=?", (time.time() - 60.0, rid))
    store.update_run(rid, status="done", started=time.time() - 50, finished=time.time(), summary={
        "test_accuracy": 0.9, "remaining": 1.0, "sparsity": 0.0, "kept": 1, "total": 1, "wall_seconds": 50.0})
    at = open_page("pages/runs.py", {"runs": rid})
    caption = " ".join(c.value for c in at.caption)
    assert "Estimated at launch: ≈ 40 s" in caption and "1 min 00 s after launch" in caption
    assert "×1.50" in caption


def test_page_sweep_button_skips_done_points_and_says_so(home, monkeypatch):
    """Theory's sweep (ℓ1 and log × 2 λ = 4 runs) with 2 points done: the click queues 2."""
    from ui import backend, widgets
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "1")
    monkeypatch.setattr(jobs, "pump", lambda *a, **k: [])      # a slot (so an estimate), nothing started
    at = open_page("pages/theory.py")
    at.number_input(key="theory.count").set_value(2).run()
    base = dict(model="logreg", dataset="planted", method="concave", epochs=30, retrain_epochs=5, batch_size=64,
                lr=0.01, data_params={"dim": 100, "k": 10, "n_train": 400})
    cfgs = backend.expand(base, {"regularizer": ["l1", "log"], "lam": widgets.log_space(0.2, 5.0, 2)}, [0])
    assert len(cfgs) == 4
    store = Store(home)
    done = []
    for c in (cfgs[0], cfgs[3]):
        rid = store.create_run(c.to_dict(), c.content_hash(), name=c.name, status="queued")
        store.update_run(rid, status="done", started=time.time(), finished=time.time(),
                         summary={"test_accuracy": 0.9, "remaining": 0.1, "sparsity": 0.9, "kept": 10, "total": 100,
                                  "wall_seconds": 2.0})
        done.append(rid)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "2 of its 4 runs are done already" in " ".join(c.value for c in at.caption)
    at.button(key="theory.go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    runs = store.list_runs()
    queued = [r for r in runs if r["status"] == "queued"]
    assert len(runs) == 4 and len(queued) == 2
    assert {r["config_hash"] for r in queued} == {cfgs[1].content_hash(), cfgs[2].content_hash()}
    assert all(r["estimate"] and r["estimate"] > 0 for r in queued)            # recorded at launch
    toasts = " ".join(t.value for t in at.toast)
    assert "Queued 2 runs of the planted experiment; the other 2 equal earlier runs" in toasts


def test_home_presets_say_when_results_come_and_record_it(home, monkeypatch):
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "1")
    monkeypatch.setattr(jobs, "pump", lambda *a, **k: [])
    at = open_page("pages/home.py")
    assert any(c.value.startswith("results in ≈ ") for c in at.caption)
    at.button(key="preset_digits").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (run,) = Store(home).list_runs()
    assert run["status"] == "queued" and run["estimate"] > 0


def test_launch_that_reuses_a_classmates_run_says_whose_and_lists_it_as_theirs(home):
    """Issue 20, item 7 / issue 22, item 5: alice launches the config of bob's finished run: the
    Runs page it opens says "Reused bob's run from HH:MM", and lists it under her runs."""
    from ui import identity
    at = launch_digits(open_page("pages/launch.py", {"preset": "digits"}))
    cfg = RunConfig.from_dict({**PRESETS["digits"], "epochs": 1})
    store = Store(home)
    bobs = jobs.submit(cfg, home, owner="bob")
    store.update_run(bobs, status="done", finished=time.time(), summary={
        "test_accuracy": 0.9, "remaining": 1.0, "sparsity": 0.0, "kept": 1, "total": 1, "wall_seconds": 1.0})
    at.session_state[identity.NAME_KEY] = "alice"
    at.run()
    assert "equals bob's run" in " ".join(i.value for i in at.info)
    at.button(key="launch.go").click().run()
    assert not at.exception, [e.value for e in at.exception]
    when = time.strftime("%H:%M", time.localtime(store.get_run(bobs)["created"]))
    info = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", " ".join(i.value for i in at.info))
    assert f"Reused bob's run from {when} ({bobs}, finished)" in info and "listed under your runs" in info
    assert at.radio(key="runs.whose").value == "My runs"
    assert at.dataframe[0].value["owner"].tolist() == ["bob (reused by you)"]
    assert len(store.list_runs()) == 1 and set(store.adopted("alice")) == {bobs}
