"""The Lesson page (pages/lesson.py, steps in ui/lesson_steps.py) with AppTest, and its
handout (ui/handout.py).

The "pack" store holds tiny real runs of every step's kind (offline digits and the planted
problem), all marked as class-pack examples (`example = 1`), and nothing else: every step
must draw its figure from them alone. In an empty store every step says "no run yet".
The jobs API is the recorder of test_app.py: "Run it live" must queue exactly one run,
the step's own config."""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
import pytest
from test_app import (  # noqa: F401
    charts,
    no_traceback,
    open_page,
    plain,
    routed_by_app_py,
    texts,
    torch_threads_restored,  # noqa: F401
)

from engine import runner
from engine.classpack import DEFAULT_PACK
from engine.config import RunConfig
from engine.data import default_data_dir, mnist_available
from engine.store import Store
from tests.conftest import DATA
from ui import handout
from ui import lesson_steps as ls

PAGE = "pages/lesson.py"
TINY = dict(epochs=1, retrain_epochs=1, batch_size=128)


def _run(store: Store, **cfg) -> str:
    rid = runner.create(store, RunConfig.from_dict(cfg), status="running")
    runner.execute(store, rid, DATA)
    return rid


def examples_store(home) -> dict[str, str]:
    """One tiny real run of each step's kind, all marked as class-pack examples."""
    store = Store(home)
    ids = {"ticket": _run(store, model="lenet300", dataset="digits", method="concave", regularizer="log", lam=5.0,
                          **TINY)}
    ids["imp"] = _run(store, model="lenet300", dataset="digits", method="imp", rounds=1, epochs=1, batch_size=128)
    ids["random"] = _run(store, model="lenet300", dataset="digits", method="random", random_from=ids["ticket"],
                         epochs=1, batch_size=128)
    pix = dict(model="logreg", dataset="digits", classes=[0, 1], method="concave", epochs=2, retrain_epochs=1,
               batch_size=64, lr=0.01)
    ids["pix_l1"] = _run(store, **pix, regularizer="l1", lam=10.0)
    ids["pix_log"] = _run(store, **pix, regularizer="log", lam=10.0)
    planted = dict(model="logreg", dataset="planted", method="concave", epochs=1, retrain_epochs=1, batch_size=64,
                   lr=0.01)
    ids["planted_l1"] = _run(store, **planted, regularizer="l1", lam=1.0)
    ids["planted_log"] = _run(store, **planted, regularizer="log", lam=1.0)
    with store.transaction() as db:
        db.execute("UPDATE runs SET example = 1")
    return ids


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    home = tmp_path_factory.mktemp("lesson-pack")
    return home, examples_store(home)


def open_step(monkeypatch, home, i: int, **query):
    return open_page(monkeypatch, home, PAGE, {"step": str(i), **query})


def header(at) -> str:
    return plain(at.header[0].value)


# ---------------------------------------------------------------- every step, from the examples alone

@pytest.mark.parametrize("i", range(1, len(ls.STEPS) + 1))
def test_every_step_renders_from_the_examples_alone(i, monkeypatch, pack, jobs):
    home, ids = pack
    at = open_step(monkeypatch, home, i)
    no_traceback(at)
    step = ls.STEPS[i - 1]
    assert header(at) == f"{i}. {step.title}"
    assert not at.error, [plain(e.value) for e in at.error]
    assert charts(at) >= 1
    t = texts(at)
    assert "From the class pack" in t
    assert "No run of this kind yet" not in t
    assert step.notice in t and step.question in t
    assert len(at.metric) >= 1 and all(m.value not in ("", "—") for m in at.metric[:1])
    assert at.button(key=f"lesson.live.{step.key}").disabled is False


@pytest.fixture(scope="module")
def class_pack_home(tmp_path_factory):
    return tmp_path_factory.mktemp("class-pack-only")


@pytest.mark.parametrize("i", range(1, len(ls.STEPS) + 1))
def test_every_step_renders_from_the_class_pack_alone(i, monkeypatch, class_pack_home, jobs):
    """An empty store with the repository's class pack (imported by the app): every step has
    its figure and its key numbers, from the pack's example runs."""
    monkeypatch.setenv("LOTTERY_CLASSPACK", str(DEFAULT_PACK))
    at = open_step(monkeypatch, class_pack_home, i)
    no_traceback(at)
    assert not at.error, [plain(e.value) for e in at.error]
    runs = Store(class_pack_home).list_runs()
    assert runs and all(r["example"] for r in runs)
    step = ls.STEPS[i - 1]
    assert charts(at) >= 1 and len(at.metric) >= 1
    t = texts(at)
    assert "From the class pack" in t and "No run of this kind yet" not in t
    assert all(m.value and m.value != "—" for m in at.metric), [(m.label, m.value) for m in at.metric]
    chosen, source = ls.figure_runs(step, runs)
    assert source == "pack" and chosen
    # the headline numbers are the pack runs' own (what test_classpack rebuilds), as shown
    first, by_method = chosen[0]["summary"], {r["config"]["method"]: r["summary"] for r in chosen}

    def acc(s):
        return f"{s['test_accuracy']:.1%}"
    want = {
        "ticket": lambda: {"Weights kept": f"{first['remaining']:.1%}", "Test accuracy": acc(first)},
        "pixels": lambda: {"Pixels kept": f"{first['kept']} of {first['total']}", "Test accuracy": acc(first)},
        "cost": lambda: {"Concave: accuracy": acc(by_method["concave"]), "IMP: accuracy": acc(by_method["imp"])},
        "controls": lambda: {"The ticket": acc(by_method["concave"]), "Random pruning": acc(by_method["random"]),
                             "Reinit": acc(by_method["reinit"])},
    }.get(step.figure, dict)()
    shown = {m.label: m.value for m in at.metric}
    assert {k: shown.get(k) for k in want} == want
    if step.figure == "controls":                   # the pack's LeNet ticket and both its controls
        assert {m.label for m in at.metric} == {"The ticket", "Random pruning", "Reinit"}
        # the pack ships no weights (and its ticket is MNIST's): a control of it cannot be run here,
        # and the page says why
        assert at.button(key="lesson.live.controls").disabled
        why = "no saved weights to rewind to" if mnist_available(default_data_dir()) else "MNIST files"
        assert "Not available:" in t and why in t


@pytest.mark.parametrize("i", range(1, len(ls.STEPS) + 1))
def test_every_step_in_an_empty_store_says_run_it_live(i, monkeypatch, tmp_path, jobs):
    at = open_step(monkeypatch, tmp_path / "empty", i)
    no_traceback(at)
    assert not at.error, [plain(e.value) for e in at.error]
    assert any("No run of this kind yet" in plain(x.value) and "Run it live" in plain(x.value) for x in at.info)
    step = ls.STEPS[i - 1]
    if step.figure == "planted":
        assert charts(at) == 1              # the penalty shapes need no run
    # every step but the controls (which need a ticket first) can be run live from nothing
    assert at.button(key=f"lesson.live.{step.key}").disabled is (step.figure == "controls")


def test_next_and_back_follow_the_url(monkeypatch, pack, jobs):
    home, _ = pack
    at = open_step(monkeypatch, home, 1)
    assert at.button(key="lesson.back.top").disabled
    at.button(key="lesson.next.top").click().run()
    no_traceback(at)
    assert at.query_params["step"] == ["2"] or at.query_params["step"] == "2"
    assert header(at).startswith("2. ")
    at.button(key="lesson.next.bottom").click().run()
    assert header(at).startswith("3. ")
    at.button(key="lesson.back.top").click().run()
    assert header(at).startswith("2. ")
    last = open_step(monkeypatch, home, len(ls.STEPS))
    assert last.button(key="lesson.next.top").disabled and not last.button(key="lesson.back.top").disabled


@pytest.mark.parametrize("raw, shown", [("0", 1), ("99", len(ls.STEPS)), ("x", 1)])
def test_a_bad_step_in_the_url_is_clamped(raw, shown, monkeypatch, pack, jobs):
    home, _ = pack
    at = open_page(monkeypatch, home, PAGE, {"step": raw})
    no_traceback(at)
    assert header(at).startswith(f"{shown}. ")


@pytest.mark.parametrize("i", range(1, len(ls.STEPS) + 1))
def test_run_it_live_queues_exactly_one_run_with_the_steps_config(i, monkeypatch, pack, jobs):
    home, ids = pack
    step = ls.STEPS[i - 1]
    at = open_step(monkeypatch, home, i)
    at.button(key=f"lesson.live.{step.key}").click().run()
    no_traceback(at)
    subs = [c[1] for c in jobs.calls if c[0] == "submit"]
    assert len(subs) == 1
    mnist = mnist_available(default_data_dir())          # as the page sees this machine
    want = ls.live_config(step, Store(home).list_runs(), mnist=mnist)
    if step.figure == "controls":
        # the examples hold the ticket's random control already: the live run is its reinit control,
        # trained like the ticket's retrain; without a random control it would be that one
        assert subs[0].method == "reinit" and subs[0].reinit_from == ids["ticket"]
        assert subs[0].epochs == 1 and subs[0].model == "lenet300" and subs[0].dataset == "digits"
        no_random = [r for r in Store(home).list_runs() if r["id"] != ids["random"]]
        first = ls.live_config(step, no_random, mnist=mnist)
        assert first.method == "random" and first.random_from == ids["ticket"] and first.epochs == 1
    else:
        assert subs[0].to_dict() == want.to_dict()
        expected = dict(step.live)
        if expected.get("dataset") == "mnist" and not mnist:     # no MNIST files here: the offline digits
            assert subs[0].dataset == "digits"
        else:
            assert subs[0].to_dict() == RunConfig.from_dict(expected).to_dict()
    with Store(home).transaction() as db:          # leave the module's store as it was
        db.execute("DELETE FROM runs WHERE example = 0")


def test_a_students_finished_run_replaces_the_packs(monkeypatch, pack, jobs, tmp_path):
    home, ids = pack
    store = Store(home)
    mine = _run(store, model="logreg", dataset="digits", classes=[0, 1], method="concave", regularizer="l1",
                lam=10.0, epochs=1, retrain_epochs=1, batch_size=64, lr=0.01)
    try:
        runs = store.list_runs()
        chosen, source = ls.figure_runs(ls.BY_KEY["fair"], runs)
        got = {r["id"] for r in chosen}
        assert source == "mixed" and mine in got and ids["pix_l1"] not in got and ids["pix_log"] in got
        chosen, source = ls.figure_runs(ls.BY_KEY["pixels"], runs)   # log only: the pack's stays
        assert source == "pack" and [r["id"] for r in chosen] == [ids["pix_log"]]
        at = open_step(monkeypatch, home, 3)
        no_traceback(at)
        assert "Your finished run(s) in place of the class pack's" in texts(at)
    finally:
        with store.transaction() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (mine,))


def test_figure_runs_by_config_not_by_id():
    """Selection is by config: another person's run, a queued run and a run of another kind
    are not the student's result; one dataset per figure."""
    def run(i, example=0, owner=None, status="done", **cfg):
        return {"id": f"r{i}", "status": status, "example": example, "owner": owner,
                "config": {"model": "logreg", "dataset": "mnist", "classes": [0, 1], "method": "concave",
                           "regularizer": "log", "lam": 10.0, **cfg}}
    step = ls.BY_KEY["pixels"]
    runs = [run(1, owner="bob"), run(2, status="queued"), run(3, regularizer="l1"), run(4, dataset="digits"),
            run(5, example=1), run(6, example=1, dataset="digits")]
    chosen, source = ls.figure_runs(step, runs, user="alice")
    assert source == "yours" and [r["id"] for r in chosen] == ["r4"]       # the newest own run: digits
    chosen, source = ls.figure_runs(step, runs[:3] + runs[4:], user="alice")
    assert source == "pack" and [r["id"] for r in chosen] == ["r5"]       # mnist listed first for the pack
    assert ls.figure_runs(step, [], user="alice") == ([], "none")
    # Run it live reused bob's equal run for alice (dedup): it is her result now
    chosen, source = ls.figure_runs(step, runs[:3] + runs[4:], user="alice", launched={"r1"})
    assert source == "yours" and [r["id"] for r in chosen] == ["r1"]


def test_charts_keep_their_camera_button(monkeypatch, pack, jobs):
    home, _ = pack
    at = open_step(monkeypatch, home, 2)
    els = at.get("plotly_chart")
    assert els
    for el in els:
        cfg = json.loads(el.proto.config or "{}")
        assert cfg.get("displayModeBar", True) is not False
        assert "toImage" not in cfg.get("modeBarButtonsToRemove", [])


def test_presentation_flag_is_kept_across_pages(monkeypatch, pack, jobs):
    home, _ = pack
    at = open_step(monkeypatch, home, 2, present="1")
    no_traceback(at)
    assert at.session_state["_present"] is True
    assert any(b.key == "present.exit" for b in at.button)
    at.switch_page("pages/pixels.py").run()
    no_traceback(at)
    assert at.session_state["_present"] is True
    assert at.query_params["present"] in ("1", ["1"])
    at.button(key="present.exit").click().run()
    assert at.session_state["_present"] is False and "present" not in at.query_params


# ---------------------------------------------------------------- handout

def _figure():
    import plotly.graph_objects as go
    return go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]), layout=dict(height=300))


def test_handout_zip_holds_pngs_and_one_html_page():
    sec = handout.Section("ℓ1 vs log", "Some **bold** text.", "notice this", "a question?",
                          [("accuracy", _figure())])
    blob, notes = handout.build([sec])
    z = zipfile.ZipFile(io.BytesIO(blob))
    names = sorted(z.namelist())
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 1 and "handout.html" in names, (names, notes)
    assert not notes
    for n in pngs:
        assert z.read(n)[:8] == b"\x89PNG\r\n\x1a\n"
    page = z.read("handout.html").decode()
    assert page.count("src='data:image/png;base64,") == 1
    assert "<b>bold</b>" in page and "notice this" in page and "a question?" in page and "ℓ1 vs log" in page


def test_handout_says_so_when_pngs_cannot_be_made(monkeypatch):
    def broken(fig, width=0):
        raise RuntimeError("no Chrome found")
    monkeypatch.setattr(handout, "png", broken)
    blob, notes = handout.build([handout.Section("step", "text", figures=[("f", _figure())])])
    z = zipfile.ZipFile(io.BytesIO(blob))
    assert z.namelist() == ["handout.html"]
    page = z.read("handout.html").decode()
    assert "no Chrome found" in notes[0] and "no Chrome found" in page
    assert "plotly" in page.lower() and "src='data:image/png" not in page


def test_lesson_offers_the_handout_download(monkeypatch, pack, jobs):
    home, _ = pack
    at = open_step(monkeypatch, home, 3)
    assert at.multiselect(key="lesson.handout.steps").value == ["fair"]
    assert len(at.get("download_button")) == 1


@pytest.fixture
def downloads(monkeypatch):
    """The callables that download buttons defer (what a click would run), newest last."""
    from streamlit.runtime.media_file_manager import MediaFileManager
    seen, add = [], MediaFileManager.add_deferred

    def record(self, data_callable, *a, **kw):
        seen.append(data_callable)
        return add(self, data_callable, *a, **kw)
    monkeypatch.setattr(MediaFileManager, "add_deferred", record)
    return seen


def test_the_handout_keeps_the_apps_step_numbers_and_key_numbers(monkeypatch, pack, jobs, downloads):
    """Issue 20, item 10: a handout of steps 2 and 5 titles them "Step 2" and "Step 5" (not 1 and 2)
    and says each step's key numbers as the app shows them (e.g. "7 of 784" pixels and the accuracy)."""
    import html as html_
    home, _ = pack
    shown = {}
    for i in (2, 5):
        at = open_step(monkeypatch, home, i)
        no_traceback(at)
        shown[i] = [(m.label, m.value) for m in at.metric]
        assert shown[i], f"step {i} shows no key numbers"
    at.multiselect(key="lesson.handout.steps").set_value([ls.STEPS[1].key, ls.STEPS[4].key]).run()
    no_traceback(at)
    blob = downloads[-1]()                  # the zip the handout button sends
    page = html_.unescape(zipfile.ZipFile(io.BytesIO(blob)).read("handout.html").decode())
    assert f"Step 2. {ls.STEPS[1].title}" in page and f"Step 5. {ls.STEPS[4].title}" in page
    assert "<h2>1. " not in page
    for i, nums in shown.items():
        for label, value in nums:
            assert f"{label}: <b>{value}</b>" in page, (i, label, value)


def test_step_definitions_are_complete():
    assert 5 <= len(ls.STEPS) <= 7 and len(ls.BY_KEY) == len(ls.STEPS)
    for s in ls.STEPS:
        assert s.text and s.notice and s.question.endswith("?") and s.live_label
        if s.figure != "controls":
            RunConfig.from_dict(dict(s.live))       # every live run is a valid config
    assert pd.Series([s.figure for s in ls.STEPS]).is_unique


def test_the_controls_button_follows_the_ticket_the_figure_shows():
    """A concave ticket that "Run it live" was given by dedup (a classmate's equal run) is the
    figure's ticket, so the controls step's button makes its control, not the pack's."""
    ticket = {"id": "t1", "status": "done", "example": 0, "owner": "bob",
              "config": {"model": "lenet300", "dataset": "digits", "method": "concave", "regularizer": "log",
                         "lam": 1.0, "epochs": 1, "retrain_epochs": 1}}
    step = ls.BY_KEY["controls"]
    assert ls.live_config(step, [ticket], mnist=False, user="alice") is None            # not hers
    cfg = ls.live_config(step, [ticket], mnist=False, user="alice", launched={"t1"})
    assert cfg is not None and cfg.method == "random" and cfg.random_from == "t1"


def test_step5_compares_only_a_comparable_pair_and_falls_back_to_the_pack():
    """After one stray 1-round IMP run (80 % remaining), step 5 told the class "IMP 96.5 %, 3 s"
    against a concave ticket at 5 % (issue 20): a pair must share model, data and epochs per
    phase, with IMP's sparsity within 2× of the ticket's."""
    def run(i, method, remaining, example=0, **cfg):
        return {"id": f"r{i}", "status": "done", "example": example, "owner": None,
                "summary": {"remaining": remaining, "test_accuracy": 0.97, "wall_seconds": 10.0},
                "config": {"model": "lenet300", "dataset": "mnist", "method": method, "epochs": 2,
                           "batch_size": 128, **cfg}}
    step = ls.BY_KEY["imp"]
    pack = [run(1, "concave", 0.05, example=1, target_sparsity=0.95), run(2, "imp", 0.05, example=1, rounds=5)]
    stray = run(3, "imp", 0.80, rounds=1)
    assert ls.cost_pair(step, [stray, *pack]) == (pack[0], pack[1], "pack")
    mine = run(4, "concave", 0.06, target_sparsity=0.95)
    assert ls.cost_pair(step, [mine, stray, *pack]) == (mine, pack[1], "mixed")
    my_imp = run(5, "imp", 0.04, rounds=5)
    assert ls.cost_pair(step, [my_imp, mine, stray, *pack]) == (mine, my_imp, "yours")
    other_length = run(6, "imp", 0.05, rounds=5, epochs=10)
    assert ls.cost_pair(step, [other_length, mine]) == (None, None, "none")


def test_run_it_live_says_whose_run_it_reused_and_lists_it_as_the_students(monkeypatch, pack, jobs):
    """Issue 20: on a shared server a student's "Run it live" reused bob's equal run without a word;
    "Your runs: 41 of 55" counted the class pack's examples as theirs."""
    import time as time_

    from ui import identity
    home, ids = pack
    monkeypatch.setenv("LOTTERY_TEACHERS", "tess")
    store = Store(home)
    live = ls.live_config(ls.STEPS[0], store.list_runs(), mnist_available(default_data_dir()))
    bobs = runner.create(store, live, status="done")
    store.update_run(bobs, owner="bob", summary=json.dumps({"remaining": 0.1, "test_accuracy": 0.9, "kept": 1,
                                                            "total": 10, "sparsity": 0.9, "wall_seconds": 9.0}))
    try:
        when = time_.strftime("%H:%M", time_.localtime(store.get_run(bobs)["created"]))
        jobs.reuse = bobs
        at = open_step(monkeypatch, home, 1)
        at.session_state[identity.NAME_KEY] = "alice"
        at.run()
        at.button(key="lesson.live.ticket").click().run()
        no_traceback(at)
        t = texts(at)
        assert f"Reused bob's run from {when} ({bobs}, finished)" in t and "listed under your runs" in t
        assert "From your own finished run(s)" in t                # the figure shows it
        at.switch_page("pages/runs.py").run()
        no_traceback(at)
        assert at.radio(key="runs.whose").value == "My runs"
        listed = at.dataframe[0].value["label"].astype(str).tolist()
        assert len(listed) == 1 and bobs in listed[0]
        n = len(store.list_runs())
        assert f"Your runs (alice): 1 of {n} in the store ({len(ids)} of them the class pack's examples" in texts(at)
        # recorded in the store, not only in this session: a new tab (a reload) lists it too, as bob's
        assert store.adopted("alice").keys() == {bobs} and store.adopted("bob") == {}
        at = open_page(monkeypatch, home, "pages/runs.py")
        at.session_state[identity.NAME_KEY] = "alice"
        at.run()
        no_traceback(at)
        table = at.dataframe[0].value
        assert table["owner"].tolist() == ["bob (reused by you)"] and bobs in str(table["label"].iloc[0])
    finally:
        with store.transaction() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (bobs,))


def test_the_narrative_follows_the_data():
    """Issue 20: step 3 showed ℓ1 reaching 99 % with 1 pixel and log needing 4, and step 4 / Theory
    showed exact recovery ℓ1 2 of 7, log 1 of 7, log warm-started 3 of 7, under "why concavity helps"."""
    said = ls.pixels_verdict({"l1": 1, "log": 4}, 0.99)
    assert "ℓ1 reaches 99% with 1 pixel and log with 4" in said and "?" in said and "wins" not in said
    assert "Log needs fewer" in ls.pixels_verdict({"l1": 9, "log": 4}, 0.99)
    said = ls.recovery_verdict({"l1": (2, 7), "log": (1, 7), "log (warm start)": (3, 7)})
    assert "ℓ1 2 of 7, log 1 of 7, log warm-started from ℓ1 3 of 7" in said and said.endswith("?")
    assert "as the argument says" in ls.recovery_verdict({"l1": (1, 7), "log": (5, 7)})
    assert "mixed" in ls.recovery_verdict({"l1": (3, 7), "log": (3, 7)})
    assert "helps" not in ls.BY_KEY["concave"].title.replace("Does concavity help?", "")
