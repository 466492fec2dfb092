"""Per-person runs on a shared server (issue 15, item 4): owners, the per-person cap, who
may cancel, resume or delete, and names that are refused. Nothing trains here: runs are
queued with start=False or written by hand."""

from __future__ import annotations

import time

import pytest

from engine import jobs, owners, runner
from engine.config import RunConfig
from engine.store import Store
from tests.conftest import at_once

TINY = {"model": "logreg", "dataset": "digits", "method": "dense", "epochs": 1, "batch_size": 256}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A shared server's store (a teacher is named, so the default cap of 3 applies)."""
    for k in ("LOTTERY_MAX_PER_PERSON", "LOTTERY_TRUST_USER_HEADER"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LOTTERY_TEACHERS", "tess")
    h = tmp_path / "home"
    Store(h)
    return h


def _run(store: Store, owner: str | None, status: str = "done", seed: int = 0) -> str:
    rid = runner.create(store, RunConfig.from_dict({**TINY, "seed": seed}), status="queued")
    store.update_run(rid, status=status, owner=owner)
    return rid


# ------------------------------------------------------------------ names

@pytest.mark.parametrize("raw", ["<script>alert(1)</script>", "<b>bob</b>", "a&amp;b", "../../etc/passwd",
                                 "alice/../bob", "C:\\Users\\bob", "bob\x1b[2J", "bob\nmallory", "bob\x00",
                                 "x" * 5000, "bob\u202egnp.exe", "", "   "])
def test_bad_names_are_refused_with_a_message(raw):
    with pytest.raises(owners.OwnerError) as e:
        owners.check_name(raw)
    msg = str(e.value)
    assert msg.startswith("name ") and "\n" not in msg and len(msg) < 200
    if len(raw) == 5000:
        assert "5,000 characters" in msg and "at most 64" in msg
    elif raw.strip():
        assert "letters, digits, spaces and . _ - @ '" in msg


def test_good_names_are_kept_tidied():
    assert owners.check_name("  Ana   María ") == "Ana María"
    assert owners.check_name("o'brien.k-2@uni.example") == "o'brien.k-2@uni.example"
    assert owners.check_name("x" * 64) == "x" * 64
    assert owners.check_name("Ame\u0301lie") == "Amélie"        # NFC: one way to write the same name


def test_teacher_and_cap_settings(monkeypatch):
    monkeypatch.setenv("LOTTERY_TEACHERS", " alice , bob,")
    assert owners.teachers() == {"alice", "bob"}
    assert owners.is_teacher("alice") and not owners.is_teacher("carol") and not owners.is_teacher(None)
    assert owners.is_teacher("carol", teacher=True) and not owners.is_teacher("alice", teacher={"bob"})
    monkeypatch.setenv("LOTTERY_TEACHERS", "alice,<b>x</b>")
    with pytest.raises(owners.OwnerError, match="LOTTERY_TEACHERS"):
        owners.teachers()
    assert owners.max_per_person() == 3
    for bad in ("-1", "three", "2.5"):
        monkeypatch.setenv("LOTTERY_MAX_PER_PERSON", bad)
        with pytest.raises(owners.OwnerError, match=r"LOTTERY_MAX_PER_PERSON must be an integer ≥ 0"):
            owners.max_per_person()


# ------------------------------------------------------------------ submit and the cap

def test_submit_stores_the_owner_and_refuses_a_bad_one(home):
    rid = jobs.submit(TINY, home, start=False, again=True, owner="  alice ")
    assert Store(home).get_run(rid)["owner"] == "alice"
    assert Store(home).get_run(jobs.submit(TINY, home, start=False, again=True))["owner"] is None
    with pytest.raises(jobs.JobError, match="owner may only hold"):
        jobs.submit(TINY, home, start=False, again=True, owner="../bob")
    assert len(Store(home).list_runs()) == 2
    assert sorted(p.name for p in (home / "runs").iterdir()) == sorted(r["id"] for r in Store(home).list_runs())


def test_per_person_cap_counts_queued_and_running_and_says_so(home, monkeypatch):
    store = Store(home)
    _run(store, "alice", "running")
    _run(store, "alice", "done", seed=1)          # finished runs do not count
    _run(store, "bob", "queued", seed=2)          # nor other people's
    jobs.submit(TINY, home, start=False, again=True, owner="alice")
    jobs.submit(TINY, home, start=False, again=True, owner="alice")
    before = {r["id"] for r in store.list_runs()}
    with pytest.raises(jobs.JobError) as e:
        jobs.submit(TINY, home, start=False, again=True, owner="alice")
    assert str(e.value) == ("you already have 3 runs queued or running (the limit per person is 3, "
                            "LOTTERY_MAX_PER_PERSON); wait for one to finish or cancel one")
    assert {r["id"] for r in store.list_runs()} == before                     # nothing stored
    assert {p.name for p in (home / "runs").iterdir()} == before                # no stray folder
    assert jobs.active_count(home, "alice") == 3
    jobs.submit(TINY, home, start=False, again=True)                                        # the CLI: no owner, no cap
    monkeypatch.setenv("LOTTERY_TEACHERS", "alice")                             # teachers have no cap
    jobs.submit(TINY, home, start=False, again=True, owner="alice")
    monkeypatch.setenv("LOTTERY_TEACHERS", "tess")
    monkeypatch.setenv("LOTTERY_MAX_PER_PERSON", "5")
    jobs.submit(TINY, home, start=False, again=True, owner="alice")
    assert jobs.active_count(home, "alice") == 5
    monkeypatch.setenv("LOTTERY_MAX_PER_PERSON", "0")                           # 0 = no limit
    jobs.submit(TINY, home, start=False, again=True, owner="alice")
    monkeypatch.setenv("LOTTERY_MAX_PER_PERSON", "many")
    with pytest.raises(jobs.JobError, match="LOTTERY_MAX_PER_PERSON must be an integer"):
        jobs.submit(TINY, home, start=False, again=True, owner="alice")


def test_on_a_personal_machine_a_typed_name_only_labels_runs(home, monkeypatch):
    """No teachers, no login proxy, no LOTTERY_MAX_PER_PERSON: a personal machine. A name typed
    in the sidebar labels the runs but sets no cap (3 kept its one user from the 14-run sweeps of
    Pixel masks and Theory); an explicit LOTTERY_MAX_PER_PERSON still applies."""
    from ui import backend
    monkeypatch.delenv("LOTTERY_TEACHERS")
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "0")
    assert owners.max_per_person() == 0 and jobs.room(home, "ana") is None
    cfgs = [RunConfig.from_dict({**TINY, "seed": s}) for s in range(20)]
    assert len(backend.submit(cfgs, home, owner="ana")) == 20
    assert jobs.active_count(home, "ana") == 20
    monkeypatch.setenv("LOTTERY_MAX_PER_PERSON", "3")
    assert jobs.room(home, "ana") == 0
    with pytest.raises(jobs.JobError, match="limit per person is 3"):
        jobs.submit(TINY, home, start=False, again=True, owner="ana")
    monkeypatch.delenv("LOTTERY_MAX_PER_PERSON")
    monkeypatch.setenv("LOTTERY_TRUST_USER_HEADER", "X-Remote-User")      # a login proxy: shared
    assert owners.max_per_person() == 3


def test_a_sweep_that_does_not_fit_is_refused_whole(home, monkeypatch):
    from ui import backend
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "0")                      # nothing starts
    jobs.submit(TINY, home, start=False, again=True, owner="alice")
    cfgs = [RunConfig.from_dict({**TINY, "seed": s}) for s in range(1, 4)]    # none equal to the queued run
    with pytest.raises(backend.BackendError) as e:
        backend.submit(cfgs, home, owner="alice")
    assert "this sweep has 3 runs, but you have 1 queued or running and the limit per person is 3 " \
           "(LOTTERY_MAX_PER_PERSON); nothing was queued" in str(e.value)
    assert len(Store(home).list_runs()) == 1
    assert len(backend.submit(cfgs[:2], home, owner="alice")) == 2  # 1 + 2 fits in 3
    monkeypatch.setenv("LOTTERY_TEACHERS", "tess")
    assert len(backend.submit(cfgs, home, owner="tess")) == 3       # teachers: no cap
    jobs.check_room(home, None, 50)                                 # the CLI: no cap


def test_a_reused_point_does_not_count_against_the_cap(home, monkeypatch):
    """Dedup first: a sweep point equal to a queued or done run queues nothing, so it costs no room."""
    from ui import backend
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "0")
    jobs.submit(TINY, home, start=False, again=True, owner="alice")
    jobs.submit({**TINY, "seed": 1}, home, start=False, again=True, owner="alice")
    cfgs = [RunConfig.from_dict({**TINY, "seed": s}) for s in range(3)]     # seeds 0 and 1 are queued already
    ids = backend.submit(cfgs, home, owner="alice")                         # 2 + 1 new fits in 3
    assert len(ids) == 3 and len(ids.reused) == 2 and len(Store(home).list_runs()) == 3


def _launch(home: str, barrier, results) -> None:
    barrier.wait()
    for _ in range(3):
        try:
            jobs.submit(TINY, home, start=False, again=True, owner="alice")
            results.put("ok")
        except jobs.JobError as e:
            results.put(str(e))


def test_per_person_cap_holds_under_parallel_launches(home):
    """Four processes launch 3 runs each for one person at the same instant: exactly 3 pass."""
    results = at_once(_launch, home, 4)
    out = [results.get(timeout=5) for _ in range(12)]
    assert out.count("ok") == 3, out
    assert all(o == "ok" or o.startswith("you already have 3 runs queued or running") for o in out)
    runs = Store(home).list_runs()
    assert len(runs) == 3 and all(r["owner"] == "alice" and r["status"] == "queued" for r in runs)
    assert len(list((home / "runs").iterdir())) == 3


# ------------------------------------------------------------------ who may manage a run

def test_a_student_cannot_cancel_resume_or_delete_anothers_run(home, monkeypatch):
    monkeypatch.setenv("LOTTERY_TEACHERS", "tess")
    store = Store(home)
    queued = jobs.submit(TINY, home, start=False, again=True, owner="alice")
    done = _run(store, "alice", "done", seed=1)
    failed = _run(store, "alice", "failed", seed=2)
    legacy = _run(store, None, "done", seed=3)
    snapshot = {r["id"]: (r["status"], r["owner"]) for r in store.list_runs()}

    for call, rid, verb in ((lambda r: jobs.cancel(r, home, wait=False, actor="bob"), queued, "cancel"),
                            (lambda r: jobs.resume(r, home, actor="bob"), failed, "resume"),
                            (lambda r: jobs.delete(r, home, actor="bob"), done, "delete"),
                            (lambda r: jobs.delete(r, home, actor="bob"), legacy, "delete")):
        with pytest.raises(jobs.JobError) as e:
            call(rid)
        assert str(e.value).startswith(f"bob may not {verb} run {rid}: it is ")
        assert "only its owner or a teacher may" in str(e.value)
    with pytest.raises(jobs.JobError, match="actor may only hold"):
        jobs.delete(done, home, actor="<b>alice</b>")
    assert {r["id"]: (r["status"], r["owner"]) for r in store.list_runs()} == snapshot    # nothing changed
    assert all(store.run_dir(r).exists() for r in snapshot)

    # the owner may
    assert jobs.cancel(queued, home, wait=False, actor="alice")["status"] == "cancelled"
    jobs.delete(done, home, actor="alice")
    assert done not in {r["id"] for r in store.list_runs()} and not store.run_dir(done).exists()
    # a teacher may, on anyone's run and on runs without an owner
    jobs.delete(legacy, home, actor="tess")
    jobs.delete(failed, home, actor="bob", teacher=True)
    assert {r["id"] for r in store.list_runs()} == {queued}
    # a run still queued or running is not deleted, whoever asks
    q2 = jobs.submit(TINY, home, start=False, again=True, owner="alice")
    with pytest.raises(jobs.JobError, match="is queued; cancel it before deleting it"):
        jobs.delete(q2, home)
    jobs.delete(queued, home)                                  # the CLI (actor None): unrestricted
    assert {r["id"] for r in store.list_runs()} == {q2}


def test_a_teacher_can_cancel_a_students_running_run(home):
    store = Store(home)
    rid = jobs.submit(TINY, home, start=False, again=True, owner="alice")
    store.update_run(rid, status="running", executor="sweep", pid=None, heartbeat=time.time())   # no process to signal
    with pytest.raises(jobs.JobError, match="bob may not cancel"):
        jobs.cancel(rid, home, wait=False, actor="bob", teacher={"tess"})
    assert not (store.run_dir(rid) / jobs.CANCEL_MARKER).exists()
    jobs.cancel(rid, home, wait=False, actor="tess", teacher={"tess"})
    assert (store.run_dir(rid) / jobs.CANCEL_MARKER).exists()     # asked: the sweep task stops on it
