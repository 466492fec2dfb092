"""The app, page by page, with Streamlit's AppTest (no browser, no server).

Every page is run against an empty store, a store with done, running, queued,
failed, cancelled, interrupted and damaged runs, and with invalid input; it
must never raise (a traceback), and must say something useful. The jobs API
is replaced by a recorder: no worker process is started here (the browser
test, tests/test_browser.py, launches a real one)."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from app_stores import mixed_store, synthetic_store
from streamlit.testing.v1 import AppTest

from engine import runner
from engine.config import RunConfig
from engine.store import Store

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
DATA = ROOT / "cache" / "data"
PAGES = ["pages/home.py", "pages/launch.py", "pages/runs.py", "pages/masks.py", "pages/tradeoffs.py",
         "pages/pixels.py", "pages/theory.py"]
TITLES = {"pages/home.py": "Lottery Lab", "pages/launch.py": "Launch", "pages/runs.py": "Runs",
          "pages/masks.py": "Mask evolution", "pages/tradeoffs.py": "Trade-offs", "pages/pixels.py": "Pixel masks",
          "pages/theory.py": "Theory"}


@pytest.fixture(autouse=True)
def routed_by_app_py(monkeypatch):
    """AppTest resets Streamlit's legacy "pages/ folder" switch before every run (a
    server flips it once, the first time app.py calls st.navigation). Keep it off,
    so every run goes through app.py's st.navigation as in the browser."""
    from streamlit.runtime.pages_manager import PagesManager
    init = PagesManager.__init__

    def patched(self, *a, **kw):
        init(self, *a, **kw)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", patched)


@pytest.fixture(autouse=True)
def torch_threads_restored():
    """The app keeps torch to one thread (ui/state.py); AppTest runs it in this process,
    so the suite's later tests get their threads back."""
    import torch
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    home = tmp_path_factory.mktemp("mixed")
    return home, mixed_store(home, DATA)


@pytest.fixture
def empty_home(tmp_path):
    return tmp_path / "empty"


def open_page(monkeypatch, home, page, query=None, session=None, timeout: float = 90) -> AppTest:
    monkeypatch.setenv("LOTTERY_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=timeout)
    for k, v in (session or {}).items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page(page)
    if query:
        at.query_params.update(query)
    return at.run()


def no_traceback(at: AppTest) -> None:
    assert not at.exception, "\n".join(str(e.value) for e in at.exception)


def plain(markdown: str) -> str:
    """Markdown as the reader sees the text: ui.md's escapes and invisible word joiners removed."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")


def texts(at: AppTest) -> str:
    """The text of the page's Markdown elements as the reader sees it."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "metric", "subheader", "title"):
        for el in getattr(at, kind):
            parts.append(str(getattr(el, "value", "")) + " " + str(getattr(el, "label", "")))
    return plain("\n".join(parts))


def plotly_values(v) -> list:
    """A plotly array as sent to the browser: a list, or {"dtype", "bdata"} (base64 of the raw array)."""
    if isinstance(v, dict) and "bdata" in v:
        import base64

        import numpy as np
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"])).tolist()
    return list(v)


def charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


# ---------------------------------------------------------------- empty store

@pytest.mark.parametrize("page", PAGES)
def test_empty_store(page, monkeypatch, empty_home, jobs):
    at = open_page(monkeypatch, empty_home, page)
    no_traceback(at)
    assert TITLES[page] in at.title[0].value
    assert not at.error, [plain(e.value) for e in at.error]
    if page != "pages/launch.py":   # every other page explains what to do first
        assert at.info, f"{page} shows no empty-state message"
    else:
        assert at.button(key="launch.go").disabled is False


# ---------------------------------------------------------------- mixed store

def test_home_mixed(monkeypatch, mixed, jobs):
    import torch
    home, ids = mixed
    torch.set_num_threads(2)
    at = open_page(monkeypatch, home, "pages/home.py")
    no_traceback(at)
    # The app process never computes on a torch thread pool: torch's default for every thread
    # (a page's script and fragment threads) is one thread. (This test thread keeps its own.)
    seen = []
    t = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    t.start()
    t.join()
    assert seen == [1]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Running"] == "1" and metrics["Queued"] == "1"
    assert ("pump",) in jobs.calls
    assert len(at.button) >= 8     # four presets: launch + customise


def test_runs_mixed_lists_every_run(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/runs.py")
    no_traceback(at)
    table = at.dataframe[0].value
    assert len(table) == len(ids)
    assert "❓ unknown" in set(table["state"])          # the garbage status is listed, not hidden
    assert any("not valid JSON" in n for n in table["note"])
    assert sum("damaged: run folder missing" in n for n in table["note"]) == 1    # issue 13
    assert at.info                                     # nothing selected yet: says what selecting shows


def test_runs_mixed_selection_details(monkeypatch, mixed, jobs):
    home, ids = mixed
    chosen = [ids[k] for k in ("concave", "running", "failed", "bad_config", "no_folder", "interrupted")]
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": ",".join(chosen)})
    no_traceback(at)
    assert at.multiselect(key="runs.sel").value == chosen
    assert at.query_params["runs"] == ",".join(chosen)
    assert charts(at) >= 3                              # loss, accuracy, sparsity
    assert len([t for t in at.tabs if t.label not in ("Details", "🚀 Deploy")]) == len(chosen)
    t = texts(at)
    assert "non-finite loss at step 7" in t             # the failure reason, as a message
    assert "Pruned weights stay exactly zero" in t and "Rewind restores the saved weights exactly" in t
    # cancel is offered for the running run only, resume for the failed/interrupted ones
    assert at.button(key=f"cancel.{ids['running']}").disabled is False
    assert at.button(key=f"cancel.{ids['concave']}").disabled is True
    assert at.button(key=f"resume.{ids['failed']}").disabled is False
    at.button(key=f"cancel.{ids['running']}").click().run()
    no_traceback(at)
    assert ("cancel", ids["running"]) in jobs.calls


def test_runs_progress_reads_the_same_everywhere(monkeypatch, mixed, jobs):
    """The run panel said "running · 0%" while the table said 40 %, and queued rows
    printed "None": one status line (data.status_line) for table, panel and Home, and
    "queued (1st)" / "—" instead of None."""
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": f"{ids['running']},{ids['queued']}"})
    no_traceback(at)
    table = at.dataframe[0].value
    running = table[table["state"] == "🔄 running"].iloc[0]
    assert running["where"].startswith("running · 40% · round 1 · search · epoch 1/1 · about"), running["where"]
    queued = table[table["state"] == "⏳ queued"].iloc[0]
    assert queued["where"] == "queued (1st)"
    cells = table[["where", "eta", "remaining", "test_accuracy", "elapsed", "note"]].astype(str).to_numpy().ravel()
    assert "None" not in cells and "nan" not in cells
    assert queued["remaining"] == "—" and queued["eta"] == "—"
    heads = [plain(m.value) for m in at.markdown if "running ·" in plain(m.value) or "queued (" in plain(m.value)]
    assert any("running · 40% · round 1 · search · epoch 1/1" in h for h in heads), heads
    assert any("queued (1st)" in h for h in heads), heads
    home_at = open_page(monkeypatch, home, "pages/home.py")
    bars = [plain(p.text or "") for p in home_at.get("progress")]
    assert any("running · 40%" in (b or "") for b in bars) and any("queued (1st)" in (b or "") for b in bars), bars


def test_runs_cancel_says_cancelling_at_once(monkeypatch, tmp_path, jobs):
    """Cancel looked dead until the worker recorded `cancelled` (22 s). The panel says
    "cancelling…" at once and what happens next; the button cannot be pressed twice."""
    home = tmp_path / "h"
    store = Store(home)
    rid = runner.create(store, RunConfig.from_dict({"dataset": "digits", "epochs": 1}), status="queued")
    store.update_run(rid, status="running", started=time.time() - 5, heartbeat=time.time(), progress=0.3,
                     phase="round 0 search epoch 1/1")
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": rid})
    at.button(key=f"cancel.{rid}").click().run()
    no_traceback(at)
    assert ("cancel", rid) in jobs.calls
    info = " ".join(plain(i.value) for i in at.info)
    assert "Cancelling…" in info and "finishes the step it is on" in info and "checkpoint" in info
    assert at.button(key=f"cancel.{rid}").disabled and at.button(key=f"cancel.{rid}").label == "Cancelling…"
    assert at.dataframe[0].value.iloc[0]["state"] == "⏹️ cancelling…"
    # another tab (a new session) sees it too, from the engine's cancel marker
    (store.run_dir(rid) / "cancel").write_text("10\n")
    store.touch(rid)                     # as engine.jobs.cancel does after writing the marker
    other = open_page(monkeypatch, home, "pages/runs.py", {"runs": rid})
    assert other.dataframe[0].value.iloc[0]["state"] == "⏹️ cancelling…"


def test_runs_failure_reason_is_whole(monkeypatch, tmp_path, jobs):
    """A missing dataset's reason was cut mid-word ("at a fo") in the run panel: the
    store keeps 500 characters; the panel shows the whole message, download hint included."""
    home = tmp_path / "h"
    store = Store(home)
    rid = runner.create(store, RunConfig.from_dict({"dataset": "mnist", "epochs": 1}), status="queued")
    full = ("dataset 'mnist' is not available: its files are not in /data/MNIST/raw/ and downloading failed "
            "(URLError: <urlopen error [Errno -3] Temporary failure in name resolution>" + " x" * 120 + "). "
            "Put the four files train-images-idx3-ubyte, ... there; they can be downloaded (as .gz, then gunzip) "
            "from https://ossci-datasets.s3.amazonaws.com/mnist/ on a machine with internet. Or point "
            "$LOTTERY_DATA (or data_dir) at a folder that already has them.")
    store.update_run(rid, status="failed", started=time.time() - 5, finished=time.time(), reason=full[:500])
    (store.run_dir(rid) / "error.txt").write_text("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                                                  "    load()\nengine.data.DatasetUnavailable: " + full + "\n")
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": rid})
    no_traceback(at)
    shown = " ".join(plain(e.value) for e in at.error)
    assert "at a folder that already has them." in shown.replace("\\", "")
    assert "on a machine with internet" in shown


def test_runs_deploy_tab_builds_measures_and_offers_downloads(monkeypatch, mixed, jobs):
    """A finished ticket gets a Deploy tab: building writes the files and shows parity and sizes,
    measuring shows latency bars, and both files can be downloaded. Unfinished runs get no tab.
    Building and timing run in a process of their own, never in the app's (which serves every
    session): here the app process's own deploy functions would fail if called."""
    import engine.deploy
    import ui.deploy_panel

    def not_here(*a, **k):
        raise AssertionError("the app's process built or timed the ticket itself")
    monkeypatch.setattr(engine.deploy, "deploy", not_here)
    monkeypatch.setattr(engine.deploy, "bench_deployed", not_here)
    monkeypatch.setattr(ui.deploy_panel, "CALLS", {1: 10, 128: 3})    # the bars, not the statistics
    home, ids = mixed
    rid = ids["imp"]
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": ",".join([rid, ids["failed"]])})
    no_traceback(at)
    assert [t.label for t in at.tabs].count("🚀 Deploy") == 1          # the failed run has none
    assert any("Nothing built yet" in i.value for i in at.info)
    at.button(key=f"deploy.build.{rid}").click().run()
    no_traceback(at)
    ok = [s.value for s in at.success if "Parity on 360 test images" in s.value]
    assert ok and "0 prediction(s)" in ok[0] and "and 0 of onnxruntime" in ok[0]
    assert (Path(home) / "runs" / rid / "deploy" / "model.safetensors").exists()
    assert {m.label for m in at.metric} >= {"Dense fp32", "Sparse fp32", "Sparse fp16"}
    at.button(key=f"deploy.bench.{rid}").click().run()
    no_traceback(at)
    assert any("load average" in c.value for c in at.caption)
    lat = json.loads((Path(home) / "runs" / rid / "deploy" / "latency.json").read_text())
    assert {r["impl"] for r in lat["rows"]} == {"dense", "sparse", "onnxruntime"}
    assert lat["calls"] == {"1": 10, "128": 3}
    assert all(r["calls"] >= (10 if r["batch"] == 1 else 3) for r in lat["rows"])
    assert {r["batch"] for r in lat["rows"]} == {1, 128}
    # a fresh session shows what was built, without building again
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": rid})
    no_traceback(at)
    assert any("Parity on 360" in s.value for s in at.success) and not at.info
    assert len(at.get("download_button")) >= 6                           # 4 of the run + compact + ONNX


def test_runs_delete_asks_first(monkeypatch, tmp_path, jobs):
    home = tmp_path / "h"
    store = Store(home)
    rid = runner.create(store, RunConfig.from_dict({"dataset": "digits", "epochs": 1}), status="queued")
    store.update_run(rid, status="failed", reason="boom")
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": rid})
    at.button(key=f"delete.{rid}").click().run()
    no_traceback(at)
    assert any("cannot be undone" in plain(w.value) for w in at.warning)
    assert store.list_runs()                            # not yet
    at.button(key=f"delete_yes.{rid}").click().run()
    no_traceback(at)
    assert store.list_runs() == []


def test_runs_page_shows_a_missed_target_as_a_failed_check(monkeypatch, tmp_path, jobs):
    """A λ controller that missed its target: the Runs page says so in red above the checklist."""
    home = tmp_path / "h"
    store = Store(home)
    rid = runner.create(store, RunConfig.from_dict({"dataset": "digits", "epochs": 1, "target_sparsity": 0.9}),
                        status="queued")
    store.update_run(rid, status="done", summary={"remaining": 0.4, "test_accuracy": 0.9, "kept": 4, "total": 10,
                                                  "sparsity": 0.6, "wall_seconds": 1.0})
    store.set_check(rid, "sparsity_vs_target", 0.6, 0.9, False,
                    "measured sparsity vs target_sparsity (tolerance 0.01); MISSED by -0.3000: the search is too short")
    store.set_check(rid, "zeros_stay_zero", 0.0, 0.0, True, "max |θ| over pruned weights")
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": rid})
    no_traceback(at)
    errors = [e.value for e in at.error]
    assert any("Failed check" in e and "Sparsity as targeted" in e and "MISSED by -0.3000" in e for e in errors), errors
    assert not any("stay exactly zero" in e for e in errors)
    assert any("❌ **Sparsity as targeted**" in m.value for m in at.markdown)


def test_runs_duplicate_opens_launch_filled(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": ids["pixel"]})
    at.button(key=f"dup.{ids['pixel']}").click().run()
    no_traceback(at)
    assert "Launch" in at.title[0].value
    assert at.selectbox(key="cfg.model").value == "logreg"
    assert at.multiselect(key="cfg.classes").value == [0, 1]
    assert at.text_input(key="cfg.lam").value == "2"


def test_masks_mixed(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/masks.py", {"runs": ids["concave"]})
    no_traceback(at)
    assert charts(at) >= 5        # heatmap, histogram over time, histogram at an epoch, churn, binary, allocation
    # one run chosen: ticket B opens on the finished run of the same model and data (the IMP run),
    # and the IoU shown is the one of their two saved tickets
    assert at.selectbox(key="masks.b").value == ids["imp"]
    store = Store(home)
    ta, tb = (store.load_array(ids[k], "ticket")["mask"] for k in ("concave", "imp"))
    both = sum(int((ta[n] & tb[n]).sum()) for n in ta)
    either = sum(int((ta[n] | tb[n]).sum()) for n in ta)
    (iou,) = [m.value for m in at.metric if m.label == "IoU of kept weights"]
    assert iou == f"{both / either:.1%}"


def test_masks_iou_between_concave_and_imp(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/masks.py", {"runs": f"{ids['concave']},{ids['imp']}"})
    no_traceback(at)
    at.selectbox(key="masks.a").set_value(ids["concave"])
    at.selectbox(key="masks.b").set_value(ids["imp"]).run()
    no_traceback(at)
    iou = [m for m in at.metric if m.label == "IoU of kept weights"]
    assert iou and iou[0].value.endswith("%")


def test_masks_overlap_opens_on_a_compatible_ticket(monkeypatch, mixed, jobs):
    """Ticket B defaulted to a run with no layer in common with A (the logreg pixel run
    picked second) and the section opened on a warning."""
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/masks.py", {"runs": f"{ids['concave']},{ids['pixel']}"})
    no_traceback(at)
    assert at.selectbox(key="masks.a").value == ids["concave"]
    assert at.selectbox(key="masks.b").value == ids["imp"]        # the newest finished LeNet-on-digits run
    assert not any("no layer in common" in plain(w.value) for w in at.warning)
    assert any(m.label == "IoU of kept weights" for m in at.metric)


def test_pages_name_layers_runs_and_snapshots(monkeypatch, mixed, jobs):
    """Layers were "classifier.0/2/4", runs "concave·l1", snapshots "r0-search-e0003"."""
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": ids["concave"]})
    no_traceback(at)
    per_layer = next(d.value for d in at.dataframe if "module" in d.value.columns)
    assert per_layer["layer"].tolist() == ["fc1 64→300", "fc2 300→100", "out 100→10"]
    assert per_layer["module"].tolist() == ["classifier.0", "classifier.2", "classifier.4"]
    assert at.multiselect(key="runs.sel").format_func(ids["concave"]).startswith("log mask λ=5 · lenet300/digits")
    at = open_page(monkeypatch, home, "pages/masks.py", {"runs": ids["concave"]})
    heat = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert heat["data"][0]["y"] == ["fc1 64→300", "fc2 300→100", "out 100→10"]
    assert "round 1 · search · epoch 1" in heat["data"][0]["x"]
    at = open_page(monkeypatch, home, "pages/pixels.py", {"runs": ids["pixel"]})
    specs = " ".join(json.dumps(json.loads(c.proto.spec), ensure_ascii=False) for c in at.get("plotly_chart"))
    assert "round 1 · search · epoch 2" in specs and "r0-search-e" not in specs
    assert "The ticket (round 1 · ticket)" in specs


def test_tradeoffs_table_has_a_row_for_every_plotted_run(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/tradeoffs.py")
    no_traceback(at)
    table = at.dataframe[0].value
    listed = set(",".join(table["run_ids"].astype(str)).split(","))
    assert {ids["imp"], ids["concave"]} <= listed
    assert any("each later round prunes 20 % of the weights still in" in plain(c.value) for c in at.caption)
    # only IMP rows have a round; the others read "—" (a null cell is drawn as "None")
    assert set(table["round"]) >= {"—", "r1", "r2"} and table["round"].notna().all()   # from 1, as on Runs
    assert "r0" not in set(table["round"])
    assert "—" in set(table["lam"]) and table["lam"].notna().all()          # only concave rows have a λ


def test_tradeoffs_mixed(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/tradeoffs.py")
    no_traceback(at)
    # accuracy against remaining, and the cost figure; IMP's points are its rounds' tickets
    acc, cost = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    assert (acc["layout"]["xaxis"]["title"]["text"], acc["layout"]["yaxis"]["title"]["text"]) == \
        ("weights remaining (log scale; sparser to the right)", "test accuracy")
    assert cost["layout"]["xaxis"]["title"]["text"] == "epochs of training spent"
    imp_name = "IMP (global, 20% a round)"
    assert [t["name"] for t in acc["data"]] == [t["name"] for t in cost["data"]] == ["log mask", imp_name]
    imp = next(t for t in acc["data"] if t["name"] == imp_name)
    rounds = Store(home).metrics(ids["imp"], kind="round")
    assert sorted(plotly_values(imp["x"])) == pytest.approx(sorted(r["remaining"] for r in rounds))
    assert sorted(plotly_values(imp["y"])) == pytest.approx(sorted(r["test_acc"] for r in rounds))
    assert at.get("download_button")
    table = at.dataframe[0].value
    assert {"group", "test_accuracy", "remaining"} <= set(table.columns)


def test_pixels_mixed(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/pixels.py", {"runs": ids["pixel"]})
    no_traceback(at)
    assert at.selectbox(key="pix.run").value == ids["pixel"]
    assert charts(at) >= 5       # animation, the ticket, digits through the mask, λ sweep, accuracy vs kept
    assert any(m.label.startswith("Pixels used") for m in at.metric)
    assert any("accuracy against kept pixels" in plain(m.value) for m in at.markdown)   # the Pareto view


def test_pixels_opens_on_the_newest_logreg_run(monkeypatch, tmp_path, jobs):
    """With nothing selected, Pixel masks shows the newest logistic-regression run,
    though a LeNet run on digits (which it can also show) is newer."""
    home = tmp_path / "h"
    store = Store(home)
    older = runner.create(store, RunConfig.from_dict(dict(model="logreg", dataset="digits", classes=[0, 1],
                                                          method="concave", lam=2.0)), status="queued")
    time.sleep(0.01)
    newer = runner.create(store, RunConfig.from_dict(dict(model="lenet300", dataset="digits", method="concave",
                                                          lam=2.0)), status="queued")
    assert [r["id"] for r in store.list_runs()] == [newer, older]
    at = open_page(monkeypatch, home, "pages/pixels.py")
    no_traceback(at)
    assert at.selectbox(key="pix.run").value == older


def test_theory_mixed(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/theory.py")
    no_traceback(at)
    assert charts(at) >= 1
    assert "support errors" in texts(at)
    at.button(key="theory.go").click().run()
    no_traceback(at)
    submitted = [c[1] for c in jobs.calls if c[0] == "submit"]
    assert len(submitted) == 14 and {c.regularizer for c in submitted} == {"l1", "log"}
    assert all(c.dataset == "planted" for c in submitted)


def test_launch_mixed_submits_and_opens_monitor(monkeypatch, tmp_path, jobs):
    home = tmp_path / "h"
    at = open_page(monkeypatch, home, "pages/launch.py", {"preset": "digits"})
    no_traceback(at)
    assert at.selectbox(key="cfg.dataset").value == "digits"
    at.number_input(key="cfg.epochs").set_value(2)
    at.text_input(key="cfg.seeds").set_value("0,1").run()
    no_traceback(at)
    assert not at.error
    at.button(key="launch.go").click().run()
    no_traceback(at)
    cfgs = [c[1] for c in jobs.calls if c[0] == "submit"]
    assert [c.seed for c in cfgs] == [0, 1] and all(c.epochs == 2 for c in cfgs)
    assert len({c[2] for c in jobs.calls if c[0] == "submit"}) == 1      # one sweep id for both
    assert "Runs" in at.title[0].value
    ids = [r["id"] for r in Store(home).list_runs()]
    assert sorted(at.query_params["runs"].split(",")) == sorted(ids)


def test_launch_lam_sweep_counts_runs(monkeypatch, empty_home, jobs):
    at = open_page(monkeypatch, empty_home, "pages/launch.py")
    at.radio(key="cfg.lam_mode").set_value("sweep").run()
    at.number_input(key="cfg.lam_count").set_value(4)
    at.text_input(key="cfg.seeds").set_value("0-2").run()
    no_traceback(at)
    assert at.button(key="launch.go").label == "Launch 12 runs"


# ---------------------------------------------------------------- invalid input

@pytest.mark.parametrize("change, field", [
    (lambda at: at.radio(key="cfg.lam_mode").set_value("list").run()
     .text_input(key="cfg.lam_list").set_value("1, abc"), "lam"),
    (lambda at: at.text_input(key="cfg.lam").set_value("-1"), "lam"),
    (lambda at: at.number_input(key="cfg.epochs").set_value(0), "epochs"),
    (lambda at: at.number_input(key="cfg.lr").set_value(0.0), "lr"),
    (lambda at: at.text_input(key="cfg.seeds").set_value("zero"), "seed"),
    (lambda at: at.selectbox(key="cfg.model").set_value("resnet20"), "model"),          # needs 32×32 inputs
    (lambda at: at.radio(key="cfg.threshold_mode").set_value("topk"), "target_sparsity"),
])
def test_launch_invalid_input_is_blocked_naming_the_field(change, field, monkeypatch, empty_home, jobs):
    """Messages name the field by the label it shows ("λ"), not its config key ("lam") (issue 20)."""
    at = open_page(monkeypatch, empty_home, "pages/launch.py")
    change(at).run()
    no_traceback(at)
    errors = [plain(e.value) for e in at.error]
    assert any(f"**{label}**" in e for e in errors for label in LABELS[field]), errors
    assert not any(f"**{field}**" in e or e.split("— ")[-1].startswith(f"{field} ") for e in errors
                   if LABELS[field] != (field,)), errors
    assert at.button(key="launch.go").disabled
    assert not [c for c in jobs.calls if c[0] == "submit"]


# the labels the Launch form shows for these config keys (its messages use them)
LABELS = {"lam": ("λ", "λ values"), "epochs": ("Epochs per search",), "lr": ("Learning rate",), "seed": ("Seeds",),
          "model": ("Architecture",), "batch_size": ("Batch size",), "target_sparsity": ("Target sparsity",)}

INVALID = {   # field: (how to type it, what the message must quote)
    "epochs": (lambda at: at.number_input(key="cfg.epochs").set_value(1000000), "got 1000000"),
    "lr": (lambda at: at.number_input(key="cfg.lr").set_value(-1.0), "got -1"),
    "batch_size": (lambda at: at.number_input(key="cfg.batch_size").set_value(0), "got 0"),
    "lam": (lambda at: at.text_input(key="cfg.lam").set_value("abc"), "got 'abc'"),
}


@pytest.mark.parametrize("field", list(INVALID))
def test_launch_invalid_value_is_named_next_to_its_field(field, monkeypatch, empty_home, jobs):
    """1000000 epochs or lr −1 only outlined the field in red and kept the old value (Launch
    enabled, the estimate unchanged). Each invalid value now shows the engine's one-line
    message quoting the typed value, Launch is disabled and no estimate is shown."""
    at = open_page(monkeypatch, empty_home, "pages/launch.py")
    assert any(m.label == "Time per run" for m in at.metric)
    INVALID[field][0](at).run()
    no_traceback(at)
    errors = [plain(e.value) for e in at.error]
    assert any(f"**{label}**" in e and INVALID[field][1] in e for e in errors for label in LABELS[field]), errors
    assert at.button(key="launch.go").disabled
    assert not any(m.label == "Time per run" for m in at.metric)      # no estimate of another value
    assert not [c for c in jobs.calls if c[0] == "submit"]


def test_launch_shows_every_invalid_value_at_once(monkeypatch, empty_home, jobs):
    at = open_page(monkeypatch, empty_home, "pages/launch.py")
    for typed, _ in INVALID.values():
        typed(at)
    at.run()
    no_traceback(at)
    shown = "\n".join(plain(e.value) for e in at.error)
    for field, (_, quote) in INVALID.items():
        assert any(f"**{label}**" in shown for label in LABELS[field]) and quote in shown, (field, shown)
    assert at.button(key="launch.go").disabled
    # fixed again: the estimate describes the values now shown
    at.number_input(key="cfg.epochs").set_value(3)
    at.number_input(key="cfg.retrain_epochs").set_value(4)
    at.number_input(key="cfg.lr").set_value(0.01)
    at.number_input(key="cfg.batch_size").set_value(64)
    at.text_input(key="cfg.lam").set_value("2").run()
    assert not at.error and not at.button(key="launch.go").disabled
    assert any("7 epochs of training per run" in plain(c.value) for c in at.caption)


def test_customise_imp_vs_concave_opens_and_launches_both(monkeypatch, empty_home, jobs):
    """"Customise" on the IMP vs concave preset loaded only the concave run."""
    at = open_page(monkeypatch, empty_home, "pages/home.py")
    at.button(key="custom_lenet").click().run()
    no_traceback(at)
    assert "Launch" in at.title[0].value
    assert at.number_input(key="cfg.rounds").value == 7               # the IMP run's form ...
    assert at.number_input(key="cfg2.retrain_epochs").value >= 1      # ... and the concave run's, below it
    assert at.query_params["preset"] == "lenet300-imp,lenet300-concave"
    at.switch_page("pages/launch.py")                                 # AppTest reruns the page it was on
    at.number_input(key="cfg2.epochs").set_value(3).run()             # change one of them
    no_traceback(at)
    assert at.button(key="launch.go").label == "Launch 2 runs"
    at.button(key="launch.go").click().run()
    no_traceback(at)
    cfgs = [c[1] for c in jobs.calls if c[0] == "submit"]
    assert sorted(c.method for c in cfgs) == ["concave", "imp"]
    assert next(c for c in cfgs if c.method == "concave").epochs == 3
    assert next(c for c in cfgs if c.method == "imp").rounds == 7


def test_sweep_from_a_page_queues_once_and_shows_its_progress(monkeypatch, tmp_path, jobs):
    """A sweep launched from a page: two clicks (here: the button in two tabs, both drawn
    before the first click) queue it once; then its progress and the button disabled."""
    home = tmp_path / "h"
    first = open_page(monkeypatch, home, "pages/theory.py")
    second = open_page(monkeypatch, home, "pages/theory.py")
    assert not first.button(key="theory.go").disabled and not second.button(key="theory.go").disabled
    first.button(key="theory.go").click().run()
    second.button(key="theory.go").click().run()
    no_traceback(first)
    no_traceback(second)
    subs = [c for c in jobs.calls if c[0] == "submit"]
    assert len(subs) == 14 and len({c[2] for c in subs}) == 1, len(subs)       # one sweep, once
    assert len(Store(home).list_runs()) == 14
    for at in (first, second):
        at.run()
        assert at.button(key="theory.go").disabled
        bars = [p.text for p in at.get("progress")]
        assert any("planted experiment: 0 of 14 done · 0 running · 14 queued · about" in (b or "")
                   for b in bars), bars                                    # with an ETA
    # when it is over, the button is enabled again and the progress bar gone
    store = Store(home)
    for r in store.list_runs():
        store.update_run(r["id"], status="done", summary={"wall_seconds": 2.0})
    first.run()
    assert not first.button(key="theory.go").disabled and not first.get("progress")


def test_launch_unknown_sources_fall_back(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/launch.py", {"from": ids["bad_config"]})
    no_traceback(at)
    assert any("cannot be read" in plain(w.value) for w in at.warning)
    at = open_page(monkeypatch, home, "pages/launch.py", {"preset": "nope"})
    no_traceback(at)
    assert any("No preset called" in plain(w.value) for w in at.warning)


def test_home_launch_without_jobs_api_is_a_message(monkeypatch, empty_home, jobs):
    jobs.fail = "the queue is paused"
    at = open_page(monkeypatch, empty_home, "pages/home.py")
    at.button(key="preset_digits").click().run()
    no_traceback(at)
    assert any("the queue is paused" in plain(e.value) for e in at.error)


@pytest.mark.parametrize("page", ["pages/runs.py", "pages/masks.py", "pages/tradeoffs.py", "pages/pixels.py"])
def test_bad_ids_in_the_url(page, monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, page, {"runs": "../../etc/passwd,nosuchrun-000000," + ids["pixel"]})
    no_traceback(at)
    t = texts(at)
    assert "nosuchrun-000000" in t and "passwd" not in t     # unknown ids reported, junk dropped


def test_pixels_damaged_snapshots_are_a_message(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/pixels.py", {"runs": ids["bad_snapshots"]})
    no_traceback(at)
    assert at.selectbox(key="pix.run").value == ids["bad_snapshots"]
    assert any("could not be drawn" in plain(e.value) for e in at.error)


def test_masks_same_run_twice(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/masks.py")
    at.selectbox(key="masks.b").set_value(at.selectbox(key="masks.a").value).run()
    no_traceback(at)
    assert any("two different runs" in plain(i.value) for i in at.info)


def test_tradeoffs_tolerance_and_axes(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/tradeoffs.py")
    at.radio(key="trade.x").set_value("wall_seconds").run()
    no_traceback(at)
    at.slider(key="trade.tol").set_value(0.05).run()
    no_traceback(at)
    # the figure follows the chosen axis, and still plots both methods' runs
    (fig,) = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    assert fig["layout"]["xaxis"]["title"]["text"] == "seconds spent finding the ticket"
    assert {t["name"] for t in fig["data"]} >= {"log mask", "IMP (global, 20% a round)"}


@pytest.mark.parametrize("change, field", [
    (lambda at: (at.number_input(key="theory.lo").set_value(10.0), at.number_input(key="theory.hi").set_value(1.0)),
     "lam"),
    (lambda at: at.number_input(key="theory.k").set_value(500), "data_params"),
    (lambda at: at.text_input(key="theory.seeds").set_value("a-b"), "seed"),
])
def test_theory_invalid_input(change, field, monkeypatch, empty_home, jobs):
    at = open_page(monkeypatch, empty_home, "pages/theory.py")
    change(at)
    at.run()
    no_traceback(at)
    assert any(f"**{field}**" in plain(e.value) for e in at.error), [plain(e.value) for e in at.error]
    assert at.button(key="theory.go").disabled


# ---------------------------------------------------------------- scale

def test_runs_page_with_200_runs(monkeypatch, tmp_path, jobs):
    """Functional only; bench/app_responsiveness.py measures the time."""
    home = tmp_path / "big"
    ids = synthetic_store(home, 200)
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": ",".join(ids[-3:])})
    no_traceback(at)
    assert len(at.dataframe[0].value) == 200
    assert charts(at) >= 3
    assert json.loads((home / "synthetic.json").read_text())["n"] == 200


def test_selection_follows_across_pages(monkeypatch, mixed, jobs):
    home, ids = mixed
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": ids["pixel"]})
    at.switch_page("pages/theory.py")
    at.query_params.clear()
    at.run()
    at.switch_page("pages/pixels.py").run()            # the sidebar drops the URL's query; the session keeps it
    no_traceback(at)
    assert at.selectbox(key="pix.run").value == ids["pixel"]
    assert at.query_params["runs"] == ids["pixel"]      # and it is written back into the URL
    at.switch_page("pages/runs.py").run()
    assert at.multiselect(key="runs.sel").value == [ids["pixel"]]


def test_runs_deploy_tab_says_when_parity_failed_or_checks_failed(monkeypatch, tmp_path, jobs):
    """Issue 20 / 19.5: a build whose parity failed left files that looked valid, and a run whose
    self-checks failed was deployed without a word. The tab says both, and offers no download of
    files that were removed. Its labels are short enough for a third of the column at 1024 px."""
    home = tmp_path / "h"
    store = Store(home)
    rid = runner.create(store, RunConfig.from_dict({"dataset": "digits", "epochs": 1}), status="queued")
    store.set_check(rid, "sparsity_vs_target", 0.61, 0.9, False, "MISSED by -0.29")
    store.update_run(rid, status="done", summary={"remaining": 0.1, "test_accuracy": 0.9, "kept": 10, "total": 100,
                                                  "sparsity": 0.9, "wall_seconds": 1.0})
    (store.run_dir(rid) / "ticket.pt").write_bytes(b"")
    folder = store.run_dir(rid) / "deploy"
    folder.mkdir()
    par = {"n": 360, "accuracy": {"masked": 0.9, "deployed": 0.9, "onnx": 0.9}, "differ_deployed": 1,
           "differ_onnx": 1, "logits": {"tolerance": 1e-2, "deployed": 0.03, "onnx": 0.03}, "passed": False}
    (folder / "deploy.json").write_text(json.dumps({
        "run_id": rid, "header": {"values_dtype": "float16", "failed_checks": []}, "parity": par,
        "files": {"compact": "model.safetensors", "onnx": "model.onnx", "compact_bytes": 10, "onnx_bytes": 20},
        "sizes": {"dense_fp32": 100, "sparse_fp32": 20, "sparse_fp16": 10}, "deployed": False,
        "removed": ["model.safetensors", "model.onnx"]}))
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": rid})
    no_traceback(at)
    errors = " ".join(plain(e.value) for e in at.error)
    assert "logits within 3.0e-02 (loader)" in errors and "bound 0.01 relative" in errors
    assert "model files were removed" in errors
    assert "failed its self-checks (sparsity_vs_target)" in " ".join(plain(w.value) for w in at.warning)
    assert not [b for b in at.get("download_button") if "Compact" in str(b.proto.label)]
    build = at.button(key=f"deploy.build.{rid}")
    assert build.label == "Rebuild" and len(build.label) <= 14


def test_tradeoffs_page_keeps_settings_apart_and_says_its_dense_reference(monkeypatch, tmp_path, jobs):
    """Issue 20: IMP runs of 1 and 2 epochs were one point; the dense line averaged dense runs
    of different lengths; the tolerance read "0.005"."""
    from app_stores import comparable_store
    ids = comparable_store(tmp_path)
    at = open_page(monkeypatch, tmp_path, "pages/tradeoffs.py")
    no_traceback(at)
    table = at.dataframe[0].value
    imp_rows = table[table["round"] != "—"]
    assert imp_rows["group"].nunique() == 4                     # 2 epochs, 1 epoch, 1 round, the example
    assert (imp_rows.groupby("group")["round"].apply(lambda r: len(set(r)) == len(r))).all()
    names = json.dumps([t.get("name") for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"]],
                       ensure_ascii=False)
    assert "1 epoch" in names and "2 epochs" in names and "📦 example" in names
    dense = at.selectbox(key="trade.dense")
    assert len(dense.options) >= 3                               # dense 2 ep, dense 6 ep, IMP r0s: never mixed
    cap = " ".join(plain(c.value) for c in at.caption)
    assert re.search(r"Dense accuracy 9\d\.\d\d% from dense", cap) and "within 0.5 pp" in cap
    assert "IMP rounds (dotted)" in cap
    assert at.slider(key="trade.tol").value == 0.5
    dense.set_value(1).run()
    no_traceback(at)
    assert len(ids["dense_2ep"]) == 1


def test_pixels_merges_the_students_runs_with_the_pack_and_presents_the_8_pixel_mask(monkeypatch, tmp_path, jobs):
    """Issue 20: after two rehearsal runs Pixel masks' Fig. 3 dropped from the pack's points to
    the student's 2; the presentation view opened on the newest run, not the 8-pixel mask."""
    from app_stores import pixel_sweep_store

    from engine.config import PRESETS
    ids = pixel_sweep_store(tmp_path)
    at = open_page(monkeypatch, tmp_path, "pages/pixels.py")
    no_traceback(at)
    assert "Your 2 run(s), with the class pack's 5" in texts(at)       # l1 λ=10 of the pack is replaced
    pareto = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    dots = sum(len(t.get("x") or []) for f in pareto for t in f["data"] if t.get("mode") == "markers")
    assert dots >= 7
    assert at.selectbox(key="pix.run").value == ids["mine"][-1]           # a researcher: the newest run
    at = open_page(monkeypatch, tmp_path, "pages/pixels.py", {"present": "1"})
    no_traceback(at)
    chosen = Store(tmp_path).get_run(at.selectbox(key="pix.run").value)
    c = chosen["config"]
    assert (c["regularizer"], c["lam"]) == (PRESETS["mnist-8-pixel"]["regularizer"], PRESETS["mnist-8-pixel"]["lam"])


def test_runs_round_table_counts_rounds_from_1(monkeypatch, tmp_path, jobs):
    """The Runs page's "Round by round" table showed the engine's index (round 0 for IMP's dense
    training) while every other page counts from 1 (names.round_number)."""
    from app_stores import comparable_store
    ids = comparable_store(tmp_path)
    rid = ids["imp_2ep"][0]
    stored = sorted({int(r["round"]) for r in Store(tmp_path).metrics(rid) if r["kind"] == "round"})
    at = open_page(monkeypatch, tmp_path, "pages/runs.py", {"runs": rid})
    no_traceback(at)
    table = next(d.value for d in at.dataframe if "test_acc" in d.value.columns)
    assert stored[0] == 0 and table["round"].tolist() == [r + 1 for r in stored]


def test_live_views_share_one_build_per_data_version_and_draw_what_a_session_alone_would(monkeypatch, tmp_path):
    """Issue 22: thirty sessions on one live run share its figures (state.shared), built once per
    data version. Two sessions get the same charts; they equal the figures built from the store
    directly; a new metric row gives both the new data."""
    from ui import data, figures

    home = tmp_path / "h"
    rid = synthetic_store(home, 1, running=1)[0]
    store = Store(home)

    def specs(at):
        return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]

    def direct():
        run = store.get_run(rid)
        df = data.metrics_frame(data.metrics_rows(store, [rid])).assign(run=data.run_label(run))
        return [json.loads(f.to_json()) for f in (figures.loss_figure(df), figures.accuracy_figure(df))]

    a = open_page(monkeypatch, home, "pages/runs.py", {"runs": rid})
    b = open_page(monkeypatch, home, "pages/runs.py", {"runs": rid})
    no_traceback(a)
    no_traceback(b)
    assert specs(a)[:2] == specs(b)[:2] == direct()
    last = max(r["step"] or 0 for r in store.metrics(rid))
    store.add_metrics(rid, [{"kind": "step", "round": 0, "phase": "search", "epoch": 9.5, "step": last + 1,
                             "wall": 99.0, "loss": 0.123, "loss_task": 0.111, "loss_reg": 0.012, "lam": 1.0}])
    a.run()
    b.run()
    assert specs(a)[:2] == specs(b)[:2] == direct()
    y = specs(a)[0]["data"][0]["y"]            # plotly's typed array: base64 of float64s
    import base64

    import numpy as np
    assert np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"])[-1] == pytest.approx(0.111)


def test_the_app_freezes_what_it_imported_once_per_process():
    """The server freezes the objects its first page run left (torch, pandas, plotly, Streamlit)
    out of the garbage collector, once: what later runs make stays collectable."""
    import gc

    from ui import state

    def collectable(obj) -> bool:          # frozen objects are outside every generation
        return any(o is obj for o in gc.get_objects())

    gc.unfreeze()
    state._frozen = False
    try:
        before = [["made before"]]
        assert collectable(before)
        state.freeze_imports()
        assert not collectable(before) and gc.get_freeze_count() > 10_000    # this process's objects
        later = [["made after"]]
        state.freeze_imports()                   # once per process: a second call freezes nothing
        assert collectable(later)
    finally:
        gc.unfreeze()
    assert "state.freeze_imports()" in (Path(__file__).parent.parent / "app.py").read_text()


def test_shared_builds_once_per_key():
    from ui import state

    calls = []

    def build(home_str, k, given=None):
        calls.append(k)
        return {"k": k}

    first = state.shared("test.once", build, 1, given="x")
    assert state.shared("test.once", build, 1, given="y") is first      # the key decides, not `given`
    assert state.shared("test.once", build, 2)["k"] == 2
    assert calls == [1, 2]


def test_the_live_snapshot_is_made_again_only_while_a_row_shows_the_clock(tmp_path, monkeypatch):
    """Issue 22: "a refresh in which nothing changed costs next to nothing". The Runs table's
    fragment ticks every second in every session; its snapshot was made again every second
    even with no run active. Now: the same snapshot until the store changes, unless a run's row
    shows the clock (a running run's elapsed time and ETA), then a new one each second."""
    from ui import state

    idle, busy = tmp_path / "idle", tmp_path / "busy"
    synthetic_store(idle, 4, running=0)
    rid = synthetic_store(busy, 4, running=1)[-1]
    clock = [time.time()]
    monkeypatch.setattr(state.time, "time", lambda: clock[0])

    monkeypatch.setenv("LOTTERY_HOME", str(idle))
    first = state.live()
    clock[0] += 7.0
    assert state.live() is first                 # nothing changed, no row shows the clock
    Store(idle).update_run(first.runs[0]["id"], name="renamed")
    moved = state.live()
    assert moved is not first and moved.frame["name"].tolist()[0] == "renamed"

    monkeypatch.setenv("LOTTERY_HOME", str(busy))
    a = state.live()
    assert state.live() is a                     # within the same second: shared
    clock[0] += 5.0
    b = state.live()
    assert b is not a
    elapsed = [s.frame.loc[s.at[rid], "elapsed_s"] for s in (a, b)]
    assert elapsed[1] - elapsed[0] == pytest.approx(5.0)


def test_a_snapshots_rows_and_arrow_table_are_made_once_and_are_what_streamlit_would_make(tmp_path, monkeypatch):
    """The Runs table is handed to st.dataframe as the Arrow table Streamlit itself would make of
    the frame (byte for byte the same message), made once per snapshot instead of once per session
    and tick; a run's row (the run panel's status line) likewise, and no caller can change it."""
    from streamlit import dataframe_util

    from ui import state

    monkeypatch.setenv("LOTTERY_HOME", str(tmp_path))
    ids = synthetic_store(tmp_path, 6, running=2)
    snap = state.live()
    for owned in (True, False):
        made = snap.table_arrow(owned)
        assert snap.table_arrow(owned) is made
        assert (dataframe_util.convert_arrow_table_to_arrow_bytes(made)
                == dataframe_util.convert_pandas_df_to_arrow_bytes(snap.tables[owned]))
    for rid in ids:
        row = state.monitor_row(rid, snap)
        assert repr(row) == repr(snap.frame.iloc[snap.at[rid]].to_dict())     # NaN ≠ NaN: compare as written
        row["where"] = "changed by a caller"
        assert state.monitor_row(rid, snap)["where"] != "changed by a caller"
    assert state.monitor_row("no-such-run", snap) is None


def test_a_runs_metrics_frame_is_shared_and_no_caller_can_change_it(tmp_path, monkeypatch):
    """metrics_of's frame is cached as one shared object (no pickling at every call): what a
    caller does to the frame it got must not reach the next caller."""
    from engine.store import Store
    from ui import state

    monkeypatch.setenv("LOTTERY_HOME", str(tmp_path))
    store = Store(tmp_path)
    rid = store.create_run({"method": "dense", "model": "lenet300", "dataset": "digits"}, "abcdef012345",
                           status="running")
    store.add_metrics(rid, [{"kind": "step", "round": 0, "phase": "train", "epoch": 0.5, "step": 1, "loss": 2.0}])
    run = store.get_run(rid)
    got = state.metrics_of(run)
    assert got["loss"].tolist() == [2.0]
    got.loc[0, "loss"] = -1.0                   # a page modifying its frame in place
    got["loss"] = got["loss"] * 10
    assert state.metrics_of(run)["loss"].tolist() == [2.0]
    key = state.versions([run])
    both = state.metrics_of_versions(str(tmp_path), key)
    both.loc[0, "t"] = 99.0
    assert state.metrics_of_versions(str(tmp_path), key)["t"].tolist() == [0.5]
