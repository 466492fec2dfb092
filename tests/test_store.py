"""The store: SQLite in WAL mode, run records, hostile ids and names, metrics
(DB + jsonl), atomic writes, safe torch loading, mask snapshots, corrupted
rows and checks."""

import json
import math
import os
import pickle
import sqlite3

import pytest
import torch

from engine import store as store_mod
from engine.store import (
    STATUSES,
    Store,
    UnknownRun,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    read_jsonl,
    torch_load,
)

CFG = {"model": "lenet300", "dataset": "digits", "lam": 1.0}
HASH = "0123456789ab"


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "home")


def _new(store, **kw):
    return store.create_run(dict(CFG), HASH, **kw)


# ---------------------------------------------------------------- sqlite setup

def test_wal_mode_and_busy_timeout(store):
    assert store.db_path.is_file()
    assert store.runs_dir.is_dir()
    with store.connect() as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] > 0
    # WAL is persistent: a plain connection sees it too
    raw = sqlite3.connect(store.db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        raw.close()
    assert {"runs", "metrics", "mask_stats", "checks"} <= tables


def test_reopening_store_keeps_runs(tmp_path):
    s1 = Store(tmp_path)
    rid = _new(s1)
    s2 = Store(tmp_path)
    assert s2.get_run(rid)["config"] == CFG


# ---------------------------------------------------------------- runs

def test_create_get_list_update_round_trip(store):
    a = _new(store, name="first")
    b = store.create_run({"x": 1}, "fedcba987654", name="second", status="running", sweep_id="sw1")
    assert a.startswith(HASH[:8] + "-") and b.startswith("fedcba98-")
    assert store_mod.RUN_ID_RE.match(a) and len(a) == 15
    assert a != b
    run = store.get_run(a)
    assert run["id"] == a and run["name"] == "first" and run["status"] == "queued"
    assert run["config"] == CFG and run["config_hash"] == HASH
    assert run["progress"] == 0 and run["reason"] is None and run["summary"] is None
    assert json.loads((store.run_dir(a) / "config.json").read_text()) == CFG
    rb = store.get_run(b)
    assert rb["status"] == "running" and rb["sweep_id"] == "sw1" and rb["config"] == {"x": 1}
    ids = [r["id"] for r in store.list_runs()]
    assert sorted(ids) == sorted([a, b])
    assert ids[0] == b  # newest first

    store.update_run(a, status="done", progress=1.0, phase="done", round=2, heartbeat=123.5,
                     summary={"sparsity": 0.9, "kept": 10})
    run = store.get_run(a)
    assert run["status"] == "done" and run["progress"] == 1.0 and run["phase"] == "done"
    assert run["round"] == 2 and run["heartbeat"] == 123.5
    assert run["summary"] == {"sparsity": 0.9, "kept": 10}
    assert "reason" not in run or run["reason"] is None


def test_list_runs_reuses_a_callers_parsed_json_and_still_reads_every_change(store, monkeypatch):
    """list_runs(parsed=cache): a config or summary whose text was parsed before is not parsed
    again (the live views list the runs every second); what it lists stays what the store holds."""
    a, b = _new(store), store.create_run({"x": 1}, "fedcba987654")
    store.update_run(a, summary={"sparsity": 0.9})
    cache: dict = {}
    first = store.list_runs(parsed=cache)
    assert first == store.list_runs() and len(cache) == 3          # two configs, one summary
    again = store.list_runs(parsed=cache)
    assert again == first and all(x["config"] is y["config"] for x, y in zip(again, first))
    store.update_run(a, summary={"sparsity": 0.95})                # a change: its new text is parsed
    now = {r["id"]: r for r in store.list_runs(parsed=cache)}
    assert now[a]["summary"] == {"sparsity": 0.95} and now[b]["config"] == {"x": 1}
    with store.connect() as db:                                    # damaged JSON: reported, never cached
        db.execute("UPDATE runs SET summary='{not json' WHERE id=?", (b,))
    for _ in range(2):
        bad = {r["id"]: r for r in store.list_runs(parsed=cache)}[b]
        assert bad["summary"] is None and "summary is not valid JSON" in bad["reason"]
    assert "{not json" not in cache
    monkeypatch.setattr(store_mod, "PARSED_KEEP", 2)                # bounded: starts again when full
    store.update_run(a, summary={"sparsity": 0.99})
    assert {r["id"]: r for r in store.list_runs(parsed=cache)}[a]["summary"] == {"sparsity": 0.99}
    assert len(cache) <= 2


@pytest.mark.parametrize("status", STATUSES)
def test_every_status_accepted(store, status):
    rid = _new(store)
    store.update_run(rid, status=status)
    assert store.get_run(rid)["status"] == status


def test_update_run_rejects_bad_status_and_fields(store):
    rid = _new(store)
    with pytest.raises(ValueError, match="status"):
        store.update_run(rid, status="exploded")
    with pytest.raises(ValueError, match="config"):
        store.update_run(rid, config="{}")
    with pytest.raises(ValueError):
        store.update_run(rid, **{"status=status; --": 1})
    assert store.get_run(rid)["status"] == "queued"


def test_unknown_run(store):
    with pytest.raises(UnknownRun) as info:
        store.get_run("deadbeef-000000")
    assert "deadbeef-000000" in str(info.value)
    with pytest.raises(UnknownRun):
        store.update_run("deadbeef-000000", status="done")
    assert isinstance(info.value, KeyError)


def test_delete_run(store):
    rid = _new(store)
    store.add_metrics(rid, [{"kind": "epoch", "loss": 1.0}])
    store.set_check(rid, "c", 0.0, 0.0, True)
    store.delete_run(rid)
    assert not store.run_dir(rid).exists()
    with pytest.raises(UnknownRun):
        store.get_run(rid)
    assert store.metrics(rid) == [] and store.checks(rid) == []


def test_version_moves_with_every_change_live_views_draw(store):
    """Store.version(): the one cheap number live views compare; it must move on every write that
    changes what a page shows (a run made, its status, its metrics, mask statistics, checks, deletion)."""
    seen = [store.version()]

    def moved():
        v = store.version()
        assert v > seen[-1], f"version stayed at {v}"
        seen.append(v)

    rid = _new(store)
    moved()
    store.update_run(rid, status="running")
    moved()
    store.add_metrics(rid, [{"kind": "epoch", "loss": 1.0}])
    moved()
    stat = {"layer": "fc1", "numel": 4, "mean": 0.5, "frac_above": 0.5, "near_binary": 0.0, "dead_units": 0,
            "hist": [1, 2]}
    store.add_mask_stats(rid, {"round": 0, "epoch": 1}, [stat])
    moved()
    store.set_check(rid, "c", 0.0, 0.0, True)
    moved()
    store.touch(rid)                                 # e.g. a cancel marker written beside the run
    moved()
    v = store.version()
    assert store.version() == v                      # reading does not move it
    assert Store(store.home).version() == v          # every process reads the same number
    store.delete_run(rid)
    moved()


def test_version_follows_other_writers_and_a_replaced_file(tmp_path):
    """version() keeps one reader open: it must still see every other writer's commit at once,
    and a store file replaced under it (restored from a backup) rather than the old file's number."""
    home = tmp_path / "home"
    reader, writer = Store(home), Store(home)
    v0 = reader.version()
    writer.create_run(dict(CFG), HASH)
    assert reader.version() == v0 + 1
    for f in home.glob("lottery.db*"):
        f.unlink()
    fresh = Store(home)                   # a new, empty store file at the same path
    assert reader.version() == fresh.version() == 0
    fresh.create_run(dict(CFG), HASH)
    assert reader.version() == 1


# ---------------------------------------------------------------- hostile ids and names

@pytest.mark.parametrize("bad", ["../x", "/etc", "a\x00b", "x" * 500, "", ".", "..", "A-upper",
                                 "a/b", "-lead", "a b", None, 12])
def test_hostile_run_ids_refused(store, bad):
    with pytest.raises(UnknownRun):
        store.run_dir(bad)


def test_run_id_with_trailing_newline_refused(store):
    """Regression (fixed): RUN_ID_RE is `^...$` used with re.match; `$` matches before a
    trailing newline, so run_dir('abc\\n') returns runs/'abc\\n' instead of raising."""
    with pytest.raises(UnknownRun):
        store.run_dir("abc\n")


@pytest.mark.parametrize("name", ["../x", "../../etc/passwd", "a\x00b", "n" * 500, "/abs/path"])
def test_hostile_name_is_metadata_only(store, name):
    rid = _new(store, name=name)
    run = store.get_run(rid)
    assert run["name"] == name
    d = store.run_dir(rid).resolve()
    assert d.parent == store.runs_dir.resolve()
    assert d.name == rid and name not in str(d)
    assert (d / "config.json").is_file()
    # nothing escaped the runs folder
    assert sorted(p.name for p in store.runs_dir.iterdir()) == [rid]
    store.update_run(rid, name=name + "2")
    assert store.get_run(rid)["name"] == name + "2"


def test_hostile_config_hash_cannot_make_a_path(store):
    with pytest.raises(UnknownRun):
        store.create_run(dict(CFG), "../../xyz")
    assert list(store.runs_dir.iterdir()) == []


# ---------------------------------------------------------------- metrics

def test_metrics_round_trip(store):
    rid = _new(store)
    rows = [
        {"kind": "step", "round": 0, "phase": "search", "epoch": 0.5, "step": 3, "loss": 1.25, "lam": 0.1,
         "train_acc": 0.5},
        {"kind": "epoch", "round": 0, "phase": "search", "epoch": 1, "step": 6, "loss": float("nan"),
         "val_acc": float("inf"), "test_acc": float("-inf"), "remaining": 0.75, "kept": 12, "note": "hi"},
    ]
    store.add_metrics(rid, rows)
    store.add_metrics(rid, [{"kind": "round", "round": 0, "test_acc": 0.9}])
    store.add_metrics(rid, [])
    got = store.metrics(rid)
    assert [g["seq"] for g in got] == [0, 1, 2]
    assert got[0]["loss"] == 1.25 and got[0]["lam"] == 0.1 and got[0]["step"] == 3
    assert got[0]["epoch"] == 0.5 and got[0]["train_acc"] == 0.5 and got[0]["val_acc"] is None
    assert got[1]["loss"] is None and got[1]["val_acc"] is None and got[1]["test_acc"] is None
    assert got[1]["remaining"] == 0.75
    assert got[1]["kept"] == 12 and got[1]["note"] == "hi"   # extra keys come back
    assert got[2]["test_acc"] == 0.9
    assert [g["kind"] for g in store.metrics(rid, kind="epoch")] == ["epoch"]
    assert len(store.metrics(rid, kind="step")) == 1
    # the run's own jsonl copy
    lines = read_jsonl(store.run_dir(rid) / "metrics.jsonl")
    assert len(lines) == 3
    assert lines[0]["loss"] == 1.25 and lines[1]["kept"] == 12 and lines[2]["kind"] == "round"


def test_metrics_sequence_is_per_run(store):
    a, b = _new(store), _new(store)
    store.add_metrics(a, [{"kind": "epoch", "loss": 1.0}] * 3)
    store.add_metrics(b, [{"kind": "epoch", "loss": 2.0}])
    assert [m["seq"] for m in store.metrics(b)] == [0]
    assert [m["loss"] for m in store.metrics(a)] == [1.0, 1.0, 1.0]


def test_read_jsonl_tolerates_truncated_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    append_jsonl(path, [{"a": 1}, {"a": 2, "b": [1, 2]}])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"a": 3, "b": [1, ')   # a crash mid-write
    assert read_jsonl(path) == [{"a": 1}, {"a": 2, "b": [1, 2]}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_store_metrics_jsonl_survives_truncation(store):
    rid = _new(store)
    store.add_metrics(rid, [{"kind": "epoch", "loss": 0.5}, {"kind": "epoch", "loss": 0.25}])
    path = store.run_dir(rid) / "metrics.jsonl"
    data = path.read_bytes()
    path.write_bytes(data + data[: len(data) // 3])   # half a line appended
    rows = read_jsonl(path)
    assert [r["loss"] for r in rows] == [0.5, 0.25]


# ---------------------------------------------------------------- atomic files

def test_atomic_write_bytes_writes_and_replaces(tmp_path):
    p = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two"
    assert sorted(x.name for x in p.parent.iterdir()) == ["f.bin"]
    atomic_write_json(tmp_path / "j.json", {"t": torch.tensor([1, 2]), "p": tmp_path})
    assert json.loads((tmp_path / "j.json").read_text()) == {"t": [1, 2], "p": str(tmp_path)}


def test_atomic_write_failure_leaves_original(tmp_path, monkeypatch):
    p = tmp_path / "f.json"
    p.write_bytes(b"original")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(p, b"new content that must not appear")
    monkeypatch.undo()
    assert p.read_bytes() == b"original"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.json"]


def test_atomic_write_failure_during_write(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    p.write_bytes(b"original")

    def boom(fd):
        raise OSError("fsync failed")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="fsync"):
        atomic_write_bytes(p, b"x" * 10_000)
    monkeypatch.undo()
    assert p.read_bytes() == b"original"
    assert [x.name for x in tmp_path.iterdir()] == ["f.bin"]


# ---------------------------------------------------------------- safe loading

def _write_marker(path):
    with open(path, "w") as f:
        f.write("pwned")
    return 0


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


def test_torch_load_refuses_crafted_pickle(tmp_path):
    marker = tmp_path / "marker.txt"
    bad = tmp_path / "evil.pt"
    torch.save({"w": torch.ones(2), "x": _Evil(marker)}, bad)
    assert not marker.exists()
    with pytest.raises(store_mod.DamagedFile):
        torch_load(bad)
    assert not marker.exists()
    # the payload is live (plain unpickling runs it), so the refusal above is what kept it from running
    pickle.loads(pickle.dumps(_Evil(marker)))
    assert marker.read_text() == "pwned"


SAFE_TEXT = "ckpt.pt is not a readable Lottery Lab checkpoint (it may be damaged or not ours); it was not loaded."


def test_bad_checkpoint_error_text_never_gives_pytorchs_advice(tmp_path):
    """Issue 13: PyTorch's message advises re-running torch.load with weights_only=False,
    which would run a hostile payload. Every kind of bad file gets our one sentence instead."""
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    data = good.read_bytes()
    kinds = {"hostile": None, "garbage": b"not a tensor file", "truncated": data[: len(data) // 2], "empty": b"",
             "plain pickle": pickle.dumps({"a": 1}, protocol=4)}
    for kind, content in kinds.items():
        path = tmp_path / kind / "ckpt.pt"
        path.parent.mkdir()
        if content is None:
            torch.save({"x": _Evil(tmp_path / "marker")}, path)
        else:
            path.write_bytes(content)
        with pytest.raises(store_mod.DamagedFile) as info:
            torch_load(path)
        assert str(info.value) == SAFE_TEXT, kind
        assert info.value.__cause__ is None and info.value.__suppress_context__    # no chained torch text
        shown = "".join(__import__("traceback").format_exception(info.value))
        assert "weights_only" not in shown and "Re-running" not in shown, kind
    assert not (tmp_path / "marker").exists()
    with pytest.raises(FileNotFoundError):
        torch_load(tmp_path / "missing.pt")


def test_torch_load_reads_plain_containers(tmp_path):
    p = tmp_path / "ok.pt"
    obj = {"state": {"w": torch.arange(6.0).view(2, 3)}, "round": 2, "phase": "search", "xs": [1.5, None]}
    store_mod.atomic_torch_save(p, obj)
    back = torch_load(p)
    assert torch.equal(back["state"]["w"], obj["state"]["w"])
    assert back["round"] == 2 and back["phase"] == "search" and back["xs"] == [1.5, None]


def test_load_array_refuses_crafted_pickle(store, tmp_path):
    rid = _new(store)
    marker = tmp_path / "marker2.txt"
    torch.save(_Evil(marker), store.run_dir(rid) / "ckpt.pt")
    with pytest.raises(store_mod.DamagedFile):
        store.load_array(rid, "ckpt")
    assert not marker.exists()


# ---------------------------------------------------------------- masks

def test_save_load_masks(store):
    rid = _new(store)
    g = torch.Generator().manual_seed(0)
    soft = {"a.w": torch.rand(30, 20, generator=g), "b.w": torch.rand(4, 3, 3, 3, generator=g)}
    binary = {k: v > 0.5 for k, v in soft.items()}
    p_bin = store.save_masks(rid, "r0-ticket", binary, binary=True)
    p_soft = store.save_masks(rid, "r0-search-end", soft, binary=False)
    assert p_bin.parent == store.run_dir(rid) / "masks"
    raw_bin = torch_load(p_bin)
    raw_soft = torch_load(p_soft)
    for k in soft:
        assert raw_bin[k].dtype == torch.bool and torch.equal(raw_bin[k], binary[k])
        assert raw_soft[k].dtype == torch.float16 and raw_soft[k].shape == soft[k].shape
    back_bin = store.load_masks(rid, "r0-ticket")
    back_soft = store.load_masks(rid, "r0-search-end")
    for k in soft:
        assert back_bin[k].dtype == torch.float32
        assert torch.equal(back_bin[k], binary[k].float())
        assert float((back_soft[k] - soft[k]).abs().max()) <= 1e-3
    # binary=True stores "non-zero" for float masks too
    store.save_masks(rid, "e0001", {"a.w": torch.tensor([0.0, 0.3, 1.0])}, binary=True)
    assert store.load_masks(rid, "e0001")["a.w"].tolist() == [0.0, 1.0, 1.0]
    assert store.mask_snapshots(rid) == ["e0001", "r0-search-end", "r0-ticket"]
    with pytest.raises(ValueError, match="tag"):
        store.save_masks(rid, "../evil", binary, binary=True)
    assert store.mask_snapshots(_new(store)) == []


def test_mask_stats_round_trip(store):
    rid = _new(store)
    rows = [{"layer": "fc", "numel": 10, "mean": 0.5, "frac_above": 0.4, "near_binary": 0.9, "churn": None,
             "dead_units": 0.0, "hist": [1, 2, 3]}]
    store.add_mask_stats(rid, {"round": 0, "phase": "search", "epoch": 1, "step": 5}, rows)
    got = store.mask_stats(rid)
    assert len(got) == 1
    assert got[0]["layer"] == "fc" and got[0]["hist"] == [1, 2, 3] and got[0]["churn"] is None
    assert got[0]["epoch"] == 1 and got[0]["step"] == 5 and got[0]["frac_above"] == 0.4


# ---------------------------------------------------------------- corrupted rows

def test_corrupted_config_and_status_do_not_break_listing(store):
    good = _new(store, name="good")
    bad_cfg = _new(store, name="bad config")
    bad_status = _new(store, name="bad status")
    bad_summary = _new(store, name="bad summary")
    with store.connect() as db:
        db.execute("UPDATE runs SET config='{bad' WHERE id=?", (bad_cfg,))
        db.execute("UPDATE runs SET status='zombie' WHERE id=?", (bad_status,))
        db.execute("UPDATE runs SET summary='[[[' WHERE id=?", (bad_summary,))
    runs = {r["id"]: r for r in store.list_runs()}
    assert set(runs) == {good, bad_cfg, bad_status, bad_summary}
    assert runs[good]["config"] == CFG and runs[good]["reason"] is None
    assert runs[bad_cfg]["config"] is None and "config" in runs[bad_cfg]["reason"]
    assert runs[bad_status]["status"] == "zombie"
    assert "status" in runs[bad_status]["reason"] and "zombie" in runs[bad_status]["reason"]
    assert runs[bad_summary]["summary"] is None and "summary" in runs[bad_summary]["reason"]
    # get_run reports the same
    assert "config" in store.get_run(bad_cfg)["reason"]


# ---------------------------------------------------------------- checks

def test_checks_round_trip(store):
    rid = _new(store)
    other = _new(store)
    store.set_check(rid, "zeros_stay_zero", 0.0, 0.0, True, "max |θ| over pruned")
    store.set_check(rid, "rewind_exact", 1e-3, 0.0, False)
    store.set_check(rid, "sparsity_vs_target", float("nan"), 0.9, False)
    store.set_check(rid, "rewind_exact", 0.0, 0.0, True, "replaced")   # same name replaces
    got = store.checks(rid)
    assert [c["name"] for c in got] == ["rewind_exact", "sparsity_vs_target", "zeros_stay_zero"]
    by = {c["name"]: c for c in got}
    assert by["rewind_exact"]["value"] == 0.0 and by["rewind_exact"]["passed"] is True
    assert by["rewind_exact"]["detail"] == "replaced"
    assert by["zeros_stay_zero"]["detail"] == "max |θ| over pruned" and by["zeros_stay_zero"]["target"] == 0.0
    assert by["sparsity_vs_target"]["value"] is None and by["sparsity_vs_target"]["passed"] is False
    assert by["sparsity_vs_target"]["target"] == 0.9
    assert store.checks(other) == []
    assert math.isfinite(by["zeros_stay_zero"]["value"])


# ---------------------------------------------------------------- change marker and old stores

def test_data_version_moves_with_every_write_and_cut_of_run_data(store):
    rid, other = _new(store), _new(store)
    version = lambda r: store.get_run(r)["data_version"]  # noqa: E731
    assert version(rid) == 0
    store.update_run(rid, progress=0.5, heartbeat=1.0)
    assert version(rid) == 0                                    # bookkeeping is not new data
    store.add_metrics(rid, [{"kind": "step", "step": 1}])
    assert version(rid) == 1
    marks = store.tail_marks(rid)
    store.add_metrics(rid, [{"kind": "step", "step": 2}, {"kind": "step", "step": 3}])
    assert version(rid) == 2
    row = {"layer": "fc", "numel": 1, "mean": 1.0, "frac_above": 1.0, "near_binary": 1.0, "dead_units": 0.0,
           "hist": [1]}
    store.add_mask_stats(rid, {"round": 0, "phase": "search", "epoch": 1, "step": 3}, [row])
    assert version(rid) == 3
    store.truncate_after(rid, marks)                            # a resume cuts rows: still a change
    assert version(rid) == 4 and len(store.metrics(rid)) == 1
    assert version(other) == 0                                  # per run


def test_a_store_made_before_the_added_columns_is_upgraded_in_place(tmp_path):
    home = tmp_path / "old"
    (home / "runs" / "0123abcd-a1b2c3").mkdir(parents=True)
    with sqlite3.connect(home / "lottery.db") as db:            # the first release's runs table
        db.executescript("""CREATE TABLE runs(
            id TEXT PRIMARY KEY, name TEXT NOT NULL DEFAULT '', sweep_id TEXT, config_hash TEXT,
            config TEXT NOT NULL, status TEXT NOT NULL, reason TEXT, created REAL NOT NULL, started REAL,
            finished REAL, pid INTEGER, pid_start REAL, heartbeat REAL, progress REAL NOT NULL DEFAULT 0,
            phase TEXT, round INTEGER, summary TEXT);""")
        db.execute("INSERT INTO runs(id, config, status, created) VALUES('0123abcd-a1b2c3', ?, 'done', 1.0)",
                   (json.dumps(CFG),))
    s = Store(home)
    run = s.get_run("0123abcd-a1b2c3")
    assert run["status"] == "done" and run["config"] == CFG
    assert run["data_version"] == 0 and run["resume"] == 0 and run["slot"] is None and run["claimed"] is None
    s.add_metrics("0123abcd-a1b2c3", [{"kind": "epoch", "epoch": 1}])
    assert Store(home).get_run("0123abcd-a1b2c3")["data_version"] == 1


def test_a_stale_writer_writes_nothing(store):
    """Issue 13: each attempt at a run holds a fencing token; once another process takes
    the run (a resume), every write of the old one raises StaleWriter and changes nothing:
    metrics (index and metrics.jsonl), mask statistics, checks, checkpoint files, status."""
    rid = _new(store)
    old, new = store_mod.Store(store.home), store_mod.Store(store.home)     # two processes' views
    assert old.take(rid, status="running", pid=111) == 1
    old.add_metrics(rid, [{"kind": "step", "step": 1}])
    old.save_array(rid, "ckpt", {"step": 1})
    assert new.take(rid, status="running", pid=222) == 2                       # resumed elsewhere
    d = store.run_dir(rid)
    before = (store.metrics(rid), store.mask_stats(rid), store.checks(rid), (d / "metrics.jsonl").read_bytes(),
              (d / "ckpt.pt").read_bytes(), store.get_run(rid))
    stats = [{"layer": "w", "numel": 1, "mean": 1.0, "frac_above": 1.0, "near_binary": 1.0, "dead_units": 0.0,
              "hist": [1]}]
    writes = [lambda: old.add_metrics(rid, [{"kind": "step", "step": 2}]),
              lambda: old.add_mask_stats(rid, {"epoch": 1}, stats),
              lambda: old.set_check(rid, "x", 1.0, 0.0, True),
              lambda: old.save_array(rid, "ckpt", {"step": 2}),
              lambda: old.save_masks(rid, "e1", {"w": torch.ones(3)}, binary=True),
              lambda: old.write_json(rid, "summary.json", {"done": True}),
              lambda: old.truncate_after(rid, {"metrics_seq": -1, "mask_rowid": -1}),
              lambda: old.update_run(rid, status="done", pid=111),
              lambda: old.update_run_if(rid, {"status": "running"}, heartbeat=1.0),
              lambda: old.take(rid, 1)]
    for w in writes:
        with pytest.raises(store_mod.StaleWriter, match=r"held attempt 1, but attempt 2 took it over"):
            w()
    after = (store.metrics(rid), store.mask_stats(rid), store.checks(rid), (d / "metrics.jsonl").read_bytes(),
             (d / "ckpt.pt").read_bytes(), store.get_run(rid))
    assert after == before
    assert not list(d.glob(".*.tmp")) and not (d / "summary.json").exists() and not (d / "masks" / "e1.pt").exists()
    new.add_metrics(rid, [{"kind": "step", "step": 2}])                        # the current writer writes
    assert [m["step"] for m in store.metrics(rid)] == [1, 2]


def test_delete_run_refuses_an_active_status_in_its_own_transaction(store):
    """jobs.delete asks the store to refuse queued/running runs inside the delete's transaction:
    a run resumed (queued again) between a separate check and the delete would be lost."""
    from engine.store import ActiveRun
    rid = _new(store)
    store.update_run(rid, status="queued")
    with pytest.raises(ActiveRun, match="is queued; cancel it before deleting it"):
        store.delete_run(rid, not_if=("queued", "running"))
    assert store.get_run(rid)["status"] == "queued" and store.run_dir(rid).exists()
    store.update_run(rid, status="done")
    store.delete_run(rid, not_if=("queued", "running"))
    assert not store.run_dir(rid).exists()
