"""The class pack (issue 15 §1): the committed pack imports into an empty store as read-only
example runs, fits in 5 MB, fills every page that needs runs, says clearly when a file of it is
damaged (and the app still starts), and `classpack build` reproduces it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import test_app
from conftest import DATA, needs_mnist
from streamlit.testing.v1 import AppTest

from engine import classpack, jobs
from engine.classpack import spec
from engine.config import RunConfig
from engine.store import ExampleRun, Store

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PACK = classpack.DEFAULT_PACK


def counts(store: Store) -> dict:
    with store.connect() as db:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                for t in ("runs", "metrics", "mask_stats", "checks")}


@pytest.fixture(scope="module")
def manifest():
    return classpack.read_manifest(PACK)


@pytest.fixture(scope="module")
def pack_home(tmp_path_factory):
    """An empty store with the committed pack imported (shared by the page tests)."""
    home = tmp_path_factory.mktemp("packhome")
    classpack.import_pack(Store(home), PACK)
    return home


def test_pack_is_small_and_holds_what_the_issue_lists(manifest):
    size = classpack.pack_size(PACK)
    assert size <= 5_000_000, f"class pack is {size / 1e6:.2f} MB"
    names = [p.name for p in PACK.rglob("*") if p.is_file()]
    assert not [n for n in names if n.endswith(".pt")], "no checkpoints, rewind weights or tickets in the pack"
    groups = {}
    for r in manifest["runs"]:
        groups.setdefault(r["group"], []).append(r)
    cfgs = {g: [r["config"] for r in rs] for g, rs in groups.items()}
    # the MNIST 0-vs-1 λ sweep, ℓ1 and log at 7 λ each (Fig. 3/4)
    assert sorted((c["regularizer"], c["lam"]) for c in cfgs["pixel"] if c["method"] == "concave") == \
        sorted((reg, lam) for reg in ("l1", "log") for lam in spec.PIXEL_LAMS)
    assert [c["method"] for c in cfgs["pixel"]].count("dense") == 1       # the dense reference
    assert all(c["model"] == "logreg" and c["dataset"] == "mnist" and c["classes"] == [0, 1] for c in cfgs["pixel"])
    # the planted-recovery runs, each with recovery figures the Theory page reads
    assert {c["dataset"] for c in cfgs["planted"]} == {"planted"} and len(cfgs["planted"]) == 21
    assert all("recovery" in r["summary"] for r in groups["planted"])
    # IMP and concave on LeNet-300-100 (+ the ticket's controls), and a digits ticket
    assert {c["method"] for c in cfgs["lenet"]} == {"imp", "concave", "random", "reinit"}
    assert all(c["model"] == "lenet300" and c["dataset"] == "mnist" for c in cfgs["lenet"])
    assert [c["dataset"] for c in cfgs["digits"]] == ["digits"]
    # the 8-pixel result the pack exists to show: a log mask with ≤ 10 pixels above 99 %
    assert any(r["config"]["regularizer"] == "log" and r["summary"]["kept"] <= 10
               and r["summary"]["test_accuracy"] > 0.99 for r in groups["pixel"])


def test_imports_into_an_empty_store_once(tmp_path, manifest):
    store = Store(tmp_path / "home")
    ids = classpack.import_pack(store, PACK)
    assert ids == [r["id"] for r in manifest["runs"]]
    runs = {r["id"]: r for r in store.list_runs()}
    assert set(runs) == set(ids)
    assert all(r["example"] == 1 and r["status"] == "done" for r in runs.values())
    first = counts(store)
    assert first["runs"] == len(ids) and first["metrics"] > 1000 and first["mask_stats"] > 100
    # what the pages read is there: summaries, metrics, mask snapshots as the store saves them
    imp = next(r for r in manifest["runs"] if r["key"] == "lenet-imp")
    rounds = store.metrics(imp["id"], "round")
    assert [m["round"] for m in rounds] == list(range(imp["config"]["rounds"] + 1))
    pixel = next(r for r in manifest["runs"] if r["key"] == "pixel-log-10")
    ticket = store.load_masks(pixel["id"], "r0-ticket")
    assert int(sum(int(m.sum()) for m in ticket.values())) == pixel["summary"]["kept"]
    assert sum(t.endswith(("-e0001", "-e0005")) for t in store.mask_snapshots(pixel["id"])) >= 2
    assert store.get_run(pixel["id"])["summary"] == pixel["summary"]
    # a second import (another app process) adds nothing and keeps the ids
    assert classpack.import_pack(store, PACK) == ids
    assert counts(store) == first


def test_example_runs_cannot_be_deleted_cancelled_or_resumed(pack_home, manifest):
    store = Store(pack_home)
    rid = manifest["runs"][0]["id"]
    with pytest.raises(ExampleRun, match="class-pack example"):
        store.delete_run(rid)
    with pytest.raises(ExampleRun):                   # what the Runs page calls, even for a teacher
        jobs.delete(rid, pack_home, actor="teacher", teacher=True)
    assert store.get_run(rid)["status"] == "done" and store.run_dir(rid).exists()
    with pytest.raises(jobs.JobError):
        jobs.cancel(rid, pack_home, wait=False)
    with pytest.raises(jobs.JobError):
        jobs.resume(rid, pack_home)
    assert store.get_run(rid)["status"] == "done"


def _damaged_copy(tmp_path, how: str) -> Path:
    pack = tmp_path / "pack"
    shutil.copytree(PACK, pack)
    if how == "manifest":
        text = (pack / "manifest.json").read_text()
        (pack / "manifest.json").write_text(text[: len(text) // 2])
    else:
        victim = sorted((pack / "runs").glob("*.masks.gz"))[3]
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    return pack


@pytest.mark.parametrize("how", ["manifest", "array"])
def test_a_damaged_pack_is_one_clear_line_and_writes_nothing(tmp_path, how):
    pack = _damaged_copy(tmp_path, how)
    store = Store(tmp_path / "home")
    with pytest.raises(classpack.PackError) as e:
        classpack.import_pack(store, pack)
    msg = str(e.value)
    assert "\n" not in msg and "damaged" in msg
    assert ("manifest.json" in msg) if how == "manifest" else (".masks.gz" in msg and "checksum" in msg)
    assert counts(store)["runs"] == 0
    cli = subprocess.run([sys.executable, "-m", "engine", "classpack", "import", str(pack),
                          "--home", str(tmp_path / "home")], capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 2
    assert cli.stderr.count("\n") == 1 and cli.stderr.startswith("error: class pack:") and "damaged" in cli.stderr
    assert counts(store)["runs"] == 0


def test_the_app_starts_with_a_damaged_pack(tmp_path, monkeypatch):
    monkeypatch.setenv("LOTTERY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOTTERY_CLASSPACK", str(_damaged_copy(tmp_path, "manifest")))
    at = AppTest.from_file(APP, default_timeout=90).run()
    assert not at.exception, [e.value for e in at.exception]
    warn = " ".join(w.value for w in at.warning)
    assert "class pack" in warn and "damaged" in warn and "The app works without it" in warn
    assert "Lottery Lab" in " ".join(t.value for t in at.title)


def open_page(monkeypatch, home, page, session=None) -> AppTest:
    """test_app's open_page with the repository's class pack imported into the store."""
    monkeypatch.setenv("LOTTERY_CLASSPACK", str(PACK))
    at = test_app.open_page(monkeypatch, home, page, session=session, timeout=120)
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "metric", "subheader"):
        parts += [str(getattr(e, "value", "")) + " " + str(getattr(e, "label", "")) for e in getattr(at, kind)]
    return "\n".join(parts)


def test_the_app_imports_the_pack_into_an_empty_store(tmp_path, monkeypatch, manifest):
    at = open_page(monkeypatch, tmp_path / "home", "pages/runs.py")
    store = Store(tmp_path / "home")
    assert classpack.example_ids(store) == {r["id"] for r in manifest["runs"]}
    assert "No runs yet" not in shown(at)
    labels = at.multiselect(key="runs.sel").options
    assert labels and all(o.startswith("📦 example · ") for o in labels)
    rid = manifest["runs"][-1]["id"]                  # its panel: badged, and Delete is disabled
    at = open_page(monkeypatch, tmp_path / "home", "pages/runs.py", session={"_selection": [rid]})
    assert at.button(key=f"delete.{rid}").disabled
    assert at.button(key=f"cancel.{rid}").disabled and at.button(key=f"resume.{rid}").disabled
    assert any("class pack" in c.value and "Read-only" in c.value for c in at.caption)


@pytest.mark.parametrize("page, expect", [
    ("pages/theory.py", "Fewest support errors"),    # the planted recovery plot's per-penalty metrics
    ("pages/pixels.py", "Pixels used"),               # the ticket of the 8-pixel run
    ("pages/tradeoffs.py", "Dense accuracy"),          # a dense line (see below)
    ("pages/masks.py", "IoU of kept weights"),         # mask history and two tickets compared
])
def test_every_page_renders_from_the_pack_alone(pack_home, monkeypatch, page, expect):
    at = open_page(monkeypatch, pack_home, page)
    text = shown(at)
    if page == "pages/tradeoffs.py":     # it opens on the setting comparing the most methods (LeNet:
        # IMP, concave, random, reinit), not on the planted sweep, which has the most runs but one method
        assert at.selectbox(key="trade.setting").value == "lenet300 on mnist"
        # MNIST 0-vs-1: the dense run; LeNet: IMP round by round
        at.selectbox(key="trade.setting").set_value("logreg on mnist (classes 0,1)").run()
        text = shown(at)
        assert "dense accuracy" in text.lower() and "from dense (" in text.lower()
        at.selectbox(key="trade.setting").set_value("lenet300 on mnist").run()
        text = shown(at)
        assert "imp rounds" in text.lower() and "round 1 (dense training)" in text.lower()
    assert expect in text, text[:2000]
    assert not at.error, [e.value for e in at.error]
    figs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    # every chart draws the pack's data: each has a trace with points in it, not just axes
    assert figs and all(any(len(t.get("x") or t.get("z") or t.get("y") or []) for t in f.get("data", []))
                        for f in figs), page
    if page != "pages/masks.py":          # says where the runs come from
        assert "come from the class pack" in text
    if page == "pages/pixels.py":     # it opens on the 8-pixel preset's example: a handful of 784 pixels
        used = next(m for m in at.metric if m.label.startswith("Pixels used"))
        assert 1 <= int(used.value) <= 12


def test_show_examples_off_hides_them(pack_home, monkeypatch):
    at = open_page(monkeypatch, pack_home, "pages/theory.py", session={"show_examples": False})
    assert "No planted run yet" in shown(at)
    at = open_page(monkeypatch, pack_home, "pages/runs.py", session={"show_examples": False})
    assert "No runs yet" in shown(at)


def _rebuild_and_compare(tmp_path, manifest, keys: list[str]) -> None:
    """Rebuild `keys` with the engine: the same configs, accuracies and sparsities within 0.01."""
    out = classpack.build(tmp_path / "pack", keys=keys, data_dir=DATA, say=lambda m: None)
    rebuilt = {r["key"]: r for r in classpack.read_manifest(out)["runs"]}
    committed = {r["key"]: r for r in manifest["runs"]}
    assert set(keys) <= set(rebuilt)
    ids = {r["id"]: r["key"] for r in list(rebuilt.values()) + list(committed.values())}
    for k in keys:
        # as today's engine reads them: keys added after the pack was written read as unset
        a, b = (RunConfig.from_dict(c, unused="keep").to_dict() for c in (rebuilt[k]["config"],
                                                                          committed[k]["config"]))
        # references name the referenced run's own id in each pack: compare what they point at
        for ref in ("warm_start", "random_from", "reinit_from"):
            if a.get(ref):
                assert ids[a[ref]] == ids[b[ref]]
                a, b = {**a, ref: None}, {**b, ref: None}
        assert a == b, k
        sa, sb = rebuilt[k]["summary"], committed[k]["summary"]
        assert abs(sa["test_accuracy"] - sb["test_accuracy"]) <= 0.01, (k, sa["test_accuracy"], sb["test_accuracy"])
        assert abs(sa["remaining"] - sb["remaining"]) <= 0.01, (k, sa["remaining"], sb["remaining"])


def test_build_reproduces_the_committed_pack(tmp_path, manifest):
    """The offline groups (digits, planted): a run of each rebuilt."""
    _rebuild_and_compare(tmp_path, manifest, ["digits-ticket", "planted-l1-1", "planted-logwarm-1"])


@needs_mnist
def test_build_reproduces_the_committed_mnist_groups(tmp_path, manifest):
    """Issue 23, item 6: the MNIST groups too (pixel and lenet), whose numbers the Lesson's
    headline quotes: a pixel ticket and the LeNet concave ticket rebuilt."""
    assert {r["group"] for r in manifest["runs"]} == {"digits", "planted", "pixel", "lenet"}   # every group here
    _rebuild_and_compare(tmp_path, manifest, ["pixel-log-10", "lenet-concave"])


def test_cli_build_only_and_import(tmp_path, monkeypatch):
    out = tmp_path / "mine"
    r = subprocess.run([sys.executable, "-m", "engine", "classpack", "build", "--out", str(out), "--only",
                        "planted-log-5", "--data-dir", str(DATA)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    home = tmp_path / "home"
    other = tmp_path / "other"                       # another pack (two of the default pack's runs) first...
    m = classpack.read_manifest(PACK)
    m["runs"] = m["runs"][:2]
    (other / "runs").mkdir(parents=True)
    (other / "manifest.json").write_text(json.dumps(m))
    for r in m["runs"]:
        for f in r["files"].values():
            shutil.copy(PACK / f["file"], other / f["file"])
    assert len(classpack.import_pack(Store(home), other)) == 2
    r = subprocess.run([sys.executable, "-m", "engine", "classpack", "import", str(out), "--home", str(home)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    ids = r.stdout.split()
    assert len(ids) == 1 and classpack.example_ids(Store(home)) == set(ids)    # ...replaced by the teacher's
    assert json.loads((home / "classpack.json").read_text())["pack"] == str(out.resolve())
    monkeypatch.delenv("LOTTERY_CLASSPACK")
    assert classpack.pack_dir_for(Store(home)) == out.resolve()


def test_full_build_goes_through_the_background_queue(tmp_path):
    """`build --full` submits to the store's queue (a real worker process; the runs show on the
    Runs page with their progress), prints progress, and writes the pack when they finish."""
    home, lines = tmp_path / "home", []
    out = classpack.build(tmp_path / "full", full=True, home=home, keys=["planted-log-5"], data_dir=DATA,
                          say=lines.append, poll=0.2)
    (run,) = Store(home).list_runs()
    assert run["executor"] == "jobs" and run["status"] == "done" and not run["example"]
    assert any("0/1 done" in m for m in lines) and any("1/1 done" in m for m in lines)
    (entry,) = classpack.read_manifest(out)["runs"]
    assert classpack.read_manifest(out)["kind"] == "full"
    assert entry["key"] == "planted-log-5" and entry["summary"]["test_accuracy"] == run["summary"]["test_accuracy"]


def test_every_pack_config_is_what_build_would_run(manifest):
    """All 41 configs (not only the rebuilt subset) are spec.entries() as the builder resolves them:
    nothing in the committed pack was configured by hand."""
    by_key = {r["key"]: r for r in manifest["runs"]}
    entries = spec.entries()
    assert [e["key"] for e in entries] == [r["key"] for r in manifest["runs"]]
    for e in entries:
        want = {**e["config"], **{k: by_key[src]["id"] for k, src in e["refs"].items()}}
        # the pack was written before some optional keys existed: read both as today's engine does
        # (a key added later reads as unset)
        have = RunConfig.from_dict(by_key[e["key"]]["config"], unused="keep")
        assert have.to_dict() == RunConfig.from_dict(want, unused="keep").to_dict(), e["key"]


def test_pixel_masks_show_digits_from_the_pack_without_the_dataset(pack_home, monkeypatch, tmp_path):
    """A classroom laptop without MNIST still sees digits through the mask: 8 test images ship in the pack."""
    monkeypatch.setenv("LOTTERY_DATA", str(tmp_path / "no-data"))
    at = open_page(monkeypatch, pack_home, "pages/pixels.py")
    text = shown(at)
    assert "Sample images are not available" not in text and "Top: test images" in text
    found = classpack.samples(PACK, "mnist", [0, 1])
    assert sorted(lbl for lbl, _ in found) == ["0"] * 4 + ["1"] * 4 and all(img.shape == (28, 28) for _, img in found)
