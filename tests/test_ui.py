"""The app's plain-Python parts: store → DataFrame readers, figure builders, the
cost estimate and the form's parsers (no Streamlit runtime needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from app_stores import comparable_store, synthetic_store

from engine.config import ConfigError
from engine.store import Store
from ui import data, estimate, figures, names, widgets


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    home = tmp_path_factory.mktemp("synth")
    ids = synthetic_store(home, n=12, running=2)
    return Store(home), ids


def test_readers_on_a_synthetic_store(synth):
    store, ids = synth
    runs = store.list_runs()
    df = data.runs_frame(runs)
    assert len(df) == 12 and set(df["status"]) == {"done", "running"}
    assert df.loc[df["status"] == "running", "eta_s"].notna().all()
    m = data.metrics_frame(data.metrics_rows(store, ids[:3]))
    assert set(m["run_id"]) == set(ids[:3]) and m["t"].notna().all()
    assert (m.groupby("run_id")["t"].max() == 3).all()            # 3 search epochs, counted from 0
    st_ = data.mask_stats_frame(data.mask_stats_rows(store, ids[:1]))
    h = data.hist_over_time(st_)
    assert np.allclose(h.groupby("when")["fraction"].sum(), 1.0)
    pts = data.tradeoff_points(runs)
    assert len(pts) == 10                                            # only finished runs
    agg = data.aggregate_seeds(pts)
    assert agg["n"].sum() == 10


def test_runs_frame_created_and_where_columns():
    """The created column is one datetime column (NaT where a run has no time) and the "where"
    line is status_line of each row, made from the rows as built (not re-read from the frame)."""
    runs = [{"id": "q2", "status": "queued", "created": 200.0}, {"id": "q1", "status": "queued", "created": 100.0},
            {"id": "r1", "status": "running", "created": None, "started": 50.0, "progress": 0.5,
             "phase": "search"},
            {"id": "d1", "status": "done", "created": 1.5e9}, {"id": "x1", "status": "done", "created": "garbage"}]
    df = data.runs_frame(runs, now=150.0)
    assert str(df["created"].dtype).startswith("datetime64")
    assert df["created"].tolist()[:2] == [pd.Timestamp(200, unit="s"), pd.Timestamp(100, unit="s")]
    assert pd.isna(df["created"].iloc[2]) and df["created"].iloc[3] == pd.Timestamp(1.5e9, unit="s")
    assert pd.isna(df["created"].iloc[4])                    # a damaged row's time: no date, no error
    assert df["where"].tolist() == ["queued (2nd)", "queued (1st)",
                                    "running · 50% · " + names.phase_label("search") + " · about 1 min 40 s left",
                                    "done", "done"]
    assert df["where"].tolist() == [data.status_line(row) for _, row in df.iterrows()]


def test_metrics_tail_reads_on_from_the_last_row_and_notices_a_cut(tmp_path, monkeypatch):
    """A live run's rows are read again only from the last one read; after a resume's cut (the
    new rows reuse the cut rows' numbers) the whole run is read again: every read equals a full one."""
    home = tmp_path / "h"
    rid = synthetic_store(home, 1, running=1)[0]
    store = Store(home)
    asked = []
    full_read = data.metrics_rows

    def spy(store_, ids, kind=None, from_seq=None):
        rows = full_read(store_, ids, kind, from_seq)
        asked.append((from_seq, len(rows)))
        return rows
    monkeypatch.setattr(data, "metrics_rows", spy)
    tail = data.MetricsTail()

    def step(i, wall):
        return {"kind": "step", "round": 0, "phase": "search", "epoch": 3 + i / 10, "step": 100 + i, "wall": wall,
                "loss_task": 1.0 / (i + 1), "beta": 2.0 + i}

    n0 = len(full_read(store, [rid]))
    assert tail.rows(store, rid) == full_read(store, [rid]) and asked[-1] == (None, n0)
    marks = store.tail_marks(rid)
    for i in range(3):
        store.add_metrics(rid, [step(i, 50.0 + i)])
        assert tail.rows(store, rid) == full_read(store, [rid])
        assert asked[-1] == (n0 - 1 + i, 2)                  # the last row read and the new one
    store.truncate_after(rid, marks)                        # a resume from the checkpoint at `marks`
    store.add_metrics(rid, [step(i, 90.0 + i) for i in range(3)])     # the same numbers, other rows
    got = tail.rows(store, rid)
    assert got == full_read(store, [rid]) and [r["wall"] for r in got[-3:]] == [90.0, 91.0, 92.0]
    assert asked[-1] == (None, n0 + 3)                      # read whole again
    store.truncate_after(rid, marks)                        # cut, nothing new
    assert tail.rows(store, rid) == full_read(store, [rid]) and len(full_read(store, [rid])) == n0
    got = tail.rows(store, rid)
    got[0]["loss"] = "changed by a caller"
    assert tail.rows(store, rid) == full_read(store, [rid])  # callers get their own rows


def test_time_axis_orders_rounds_and_phases():
    rows = [{"run_id": "a", "kind": "epoch", "round": r, "phase": p, "epoch": e}
            for r in (0, 1) for p in ("search", "retrain") for e in (1, 2)]
    m = data.metrics_frame(rows)
    assert m["t"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]


def _time_axis_by_definition(df: pd.DataFrame) -> np.ndarray:
    """t as the time axis defines it, segment by segment (the frame's first, per-selection code)."""
    rounds, phases = df["round"].fillna(0).astype(int), df["phase"].fillna("train")
    t = np.full(len(df), np.nan)
    for rid in dict.fromkeys(df["run_id"]):
        mine = (df["run_id"] == rid).to_numpy()
        order = list(dict.fromkeys(zip(rounds[mine], phases[mine])))
        order.sort(key=lambda k: (k[0], data.PHASE_ORDER.get(k[1], 2)))
        offset = 0.0
        for r, p in order:
            sel = mine & (rounds == r).to_numpy() & (phases == p).to_numpy()
            ep = df.loc[sel, "epoch"].astype(float)
            t[sel] = offset + ep.fillna(ep.max() if ep.notna().any() else 0).to_numpy()
            offset += float(ep.max()) if ep.notna().any() else 0.0
    return t


def test_time_axis_of_rows_without_a_run_id_counts_them_as_one_run():
    rows = [{"kind": "epoch", "round": 0, "phase": p, "epoch": e} for p, e in (("search", 1.0), ("search", 2.0),
                                                                               ("retrain", 1.0))]
    assert data.metrics_frame(rows)["t"].tolist() == [1.0, 2.0, 3.0]


def test_time_axis_matches_its_definition_on_random_runs():
    rng = np.random.default_rng(0)
    for trial in range(30):
        rows = []
        for rid in rng.choice(["a", "b", "c"], size=rng.integers(1, 4), replace=False):
            for _ in range(rng.integers(1, 40)):
                rows.append({"run_id": str(rid), "kind": str(rng.choice(["step", "epoch"])),
                             "round": None if rng.random() < 0.1 else int(rng.integers(0, 3)),
                             "phase": None if rng.random() < 0.1 else str(rng.choice(["search", "retrain", "train",
                                                                                      "odd"])),
                             "epoch": None if rng.random() < 0.2 else float(rng.integers(0, 6)) + rng.random()})
        rng.shuffle(rows)
        m = data.metrics_frame(rows)
        assert np.allclose(m["t"].to_numpy(), _time_axis_by_definition(pd.DataFrame(rows)), equal_nan=True), trial


def _metrics_frame_by_definition(rows: list[dict], columns=data.METRIC_COLUMNS, drop=("seq",)) -> pd.DataFrame:
    """The metrics frame as pandas makes it from the row dicts (the frame's first code)."""
    df = pd.DataFrame(rows)
    for c in columns:
        if c not in df:
            df[c] = pd.Series(dtype=float)
    df = df[[c for c in df.columns if c not in drop]]
    t = _time_axis_by_definition(df.assign(run_id=df["run_id"].astype(object).where(df["run_id"].notna(), "")))
    df["round"] = df["round"].fillna(0).astype(int)
    df["phase"] = df["phase"].fillna("train")
    df["segment"] = "r" + df["round"].astype(str) + " " + df["phase"]
    df["t"] = t
    return df


def test_metrics_frame_is_the_frame_pandas_makes_from_the_rows():
    """metrics_frame builds its columns from lists (≈ 4× faster at a live run's every row); the
    frame must be the one pandas makes from the row dicts: values, column order and dtypes, also
    for keys some rows lack, columns with no value and rows with no phase, round or run id."""
    rng = np.random.default_rng(1)
    for trial in range(120):
        rows = []
        for rid in rng.choice(["a", "b", "c"], size=rng.integers(1, 4), replace=False):
            for _ in range(rng.integers(1, 30)):
                r = {"seq": 1, "run_id": str(rid), "kind": str(rng.choice(["step", "epoch"])),
                     "round": None if rng.random() < 0.1 else int(rng.integers(0, 3)),
                     "phase": None if rng.random() < 0.1 else str(rng.choice(["search", "retrain", "odd"])),
                     "epoch": None if rng.random() < 0.2 else float(rng.integers(0, 6)) + rng.random()}
                if rng.random() < 0.5:
                    r["loss"] = None if trial % 5 == 0 or rng.random() < 0.3 else float(rng.random())
                if trial % 7 == 0:
                    r.pop("run_id")
                if trial % 11 == 0:
                    r["phase"] = None
                if trial % 13 == 0:
                    r.pop("epoch")
                rows.append(r)
        pd.testing.assert_frame_equal(data.metrics_frame([dict(r) for r in rows]),
                                      _metrics_frame_by_definition([dict(r) for r in rows]), obj=str(trial))
    empty = data.metrics_frame([])
    assert empty.empty and list(empty.columns) == data.METRIC_COLUMNS + ["t", "segment"]
    # the mask statistics take the same path (their own columns; `hist` holds lists, or nothing)
    for trial in range(40):
        rows = [{"run_id": "a", "round": None if rng.random() < 0.2 else int(rng.integers(0, 3)),
                 "phase": None if trial % 4 == 0 or rng.random() < 0.2 else "search",
                 "epoch": None if rng.random() < 0.2 else float(rng.integers(0, 4)), "layer": "fc1",
                 "mean": float(rng.random()), "hist": None if trial % 3 == 0 else [1, 2]}
                for _ in range(rng.integers(1, 20))]
        got = data.mask_stats_frame([dict(r) for r in rows]).drop(columns=["when", "order"])
        pd.testing.assert_frame_equal(got, _metrics_frame_by_definition([dict(r) for r in rows],
                                                                        data.MASK_STATS_COLUMNS, ()), obj=str(trial))


def test_parse_ids_drops_junk():
    assert data.parse_ids("abc-1, ../x,ABC,abc-1,,x" + "y" * 70) == ["abc-1"]
    assert data.parse_ids(["a1,b2", "c3"]) == ["a1", "b2", "c3"]


def test_damaged_runs_are_listed_with_a_reason():
    run = {"id": "x1", "status": "garbage", "config": None, "summary": None, "reason": "config is not valid JSON"}
    df = data.runs_frame([run])
    assert df.iloc[0]["status"] == "unknown" and "not valid JSON" in df.iloc[0]["note"]
    assert "unreadable" in data.run_label(run)
    assert data.tradeoff_points([run]).empty


def test_mask_iou_and_pixel_map():
    a = {"l": np.array([[1, 1, 0, 0]], dtype=float)}
    b = {"l": np.array([[1, 0, 1, 0]], dtype=float)}
    iou = data.mask_iou(a, b)
    assert iou.iloc[-1]["iou"] == pytest.approx(1 / 3)
    img = data.pixel_map({"l": np.arange(16, dtype=float).reshape(1, 16) / 16}, (1, 4, 4))
    assert img.shape == (4, 4) and img.iloc[1, 0] == pytest.approx(4 / 16)
    with pytest.raises(ValueError):
        data.pixel_map({"l": np.zeros((3, 5))}, (1, 4, 4))


def test_planted_recovery():
    t = np.array([1, 1, 0, 0, 0.0])
    rec = data.planted_recovery(t, np.array([0.9, 0.8, 0.1, 0, 0]), np.array([1, 1, 0, 0, 0]))
    assert rec["exact"] and rec["false_pos"] == rec["false_neg"] == 0
    rec = data.planted_recovery(t, np.array([0.9, 0.2, 0.7, 0, 0]), None)
    assert (rec["false_pos"], rec["false_neg"]) == (1, 1)


EMPTY = pd.DataFrame()


@pytest.mark.parametrize("build", [
    lambda: figures.loss_figure(data.metrics_frame([]).assign(run=[])),
    lambda: figures.accuracy_figure(data.metrics_frame([]).assign(run=[])),
    lambda: figures.remaining_figure(data.metrics_frame([]).assign(run=[])),
    lambda: figures.layer_heatmap(data.mask_stats_frame([])),
    lambda: figures.hist_heatmap(data.hist_over_time(data.mask_stats_frame([])), 0.5),
    lambda: figures.allocation_figure(data.layer_allocation([])),
    lambda: figures.tradeoff_figure(data.aggregate_seeds(data.tradeoff_points([])),
                                    pd.DataFrame(columns=["round"]), None, 0.01),
    lambda: figures.pixel_animation([], "x"),
    lambda: figures.lam_sweep_figure(data.tradeoff_points([])),
    lambda: figures.pareto_figure(data.tradeoff_points([])),
    lambda: figures.theory_figure(EMPTY),
])
def test_figures_accept_empty_frames(build):
    fig = build()
    assert isinstance(fig, go.Figure) and fig.layout.annotations      # a note instead of a blank plot


def test_pareto_figure_draws_each_penalty_frontier():
    """Accuracy against kept pixels: every run a dot, each penalty's frontier the runs that
    no run of the same penalty beats (as few or fewer kept and more accurate)."""
    pts = pd.DataFrame({
        "run_id": list("abcdefg"), "regularizer": ["log"] * 4 + ["l1"] * 3,
        "lam": [1, 2, 5, 10, 1, 2, 5], "kept": [20, 9, 9, 3, 21, 8, 5],
        "test_accuracy": [0.998, 0.997, 0.995, 0.985, 0.999, 0.996, 0.997]})
    front = figures.pareto_frontier(pts[pts["regularizer"] == "log"])
    assert front["kept"].tolist() == [3, 9, 20] and front["test_accuracy"].tolist() == [0.985, 0.997, 0.998]
    front = figures.pareto_frontier(pts[pts["regularizer"] == "l1"])
    assert front["kept"].tolist() == [5, 21]            # 8 pixels at 99.6% is beaten by 5 at 99.7%
    fig = figures.pareto_figure(pts)
    by_name = {t.name: t for t in fig.data if t.showlegend}   # the left panel; the right one zooms
    assert set(by_name) == {"log runs", "log frontier", "ℓ1 runs", "ℓ1 frontier"}
    assert list(by_name["ℓ1 frontier"].x) == [5, 21] and list(by_name["log runs"].x) == [20, 9, 9, 3]
    assert len(fig.data) == 8
    assert fig.layout.xaxis.type == "log" and "kept pixels" in fig.layout.xaxis.title.text


def test_figures_from_a_store(synth):
    store, ids = synth
    runs = store.list_runs()
    m = pd.concat([data.metrics_frame(data.metrics_rows(store, [r["id"]])).assign(run=data.run_label(r))
                   for r in runs[:2]])
    loss, acc, rem, lam = (f(m) for f in (figures.loss_figure, figures.accuracy_figure, figures.remaining_figure,
                                          figures.lam_figure))
    for r in runs[:2]:         # each run's curves carry that run's own recorded values
        label = data.run_label(r)
        name = figures.short(label)
        g = m[m["run"] == label]
        steps, epochs = g[g["kind"] == "step"], g[g["kind"] == "epoch"]
        lam_steps = steps[steps["lam"].notna()]

        def trace(fig, trace_name):
            (t,) = [t for t in fig.data if t.name == trace_name]
            return t
        assert list(trace(loss, name).y) == steps["loss_task"].tolist()
        assert list(trace(loss, name).x) == steps["t"].tolist()
        assert list(trace(acc, f"{name} · test").y) == epochs["test_acc"].tolist()
        assert list(trace(acc, f"{name} · validation").y) == epochs["val_acc"].tolist()
        assert list(trace(rem, name).y) == epochs["remaining"].tolist()
        assert len(lam_steps) > 0 and list(trace(lam, name).y) == lam_steps["lam"].tolist()
    pts = data.tradeoff_points(runs)
    fig = figures.tradeoff_figure(data.aggregate_seeds(pts), data.imp_rounds(store, runs), 0.95, 0.01)
    assert len(fig.data) >= 1 and fig.layout.xaxis.type == "log"
    stats = data.mask_stats_frame(data.mask_stats_rows(store, ids[:1]))
    assert figures.layer_heatmap(stats).data[0].z.shape == (3, 3)
    curves = figures.regularizer_curves(pd.DataFrame({"x": [0, 0.5, 1, 0, 0.5, 1], "y": [0, 0.5, 1, 0, 0.8, 1],
                                                       "name": ["l1"] * 3 + ["log"] * 3,
                                                       "reference": [True] * 3 + [False] * 3}))
    assert [(t.name, list(t.y), t.line.dash) for t in curves.data] == [("l1", [0, 0.5, 1], "dash"),
                                                                      ("log", [0, 0.8, 1], "solid")]
    assert "digraph" in figures.pipeline_dot()


def test_estimate_prefers_measurements():
    cfg = {"model": "lenet300", "dataset": "mnist", "method": "concave", "epochs": 6, "retrain_epochs": 10,
           "batch_size": 128}
    guess = estimate.estimate(cfg)
    assert "throughput" in guess.basis and 10 < guess.seconds < 600 and guess.low < guess.seconds < guess.high
    hist = [{"status": "done", "config": cfg, "summary": {"wall_seconds": 40.0}}]
    measured = estimate.estimate(cfg, history=hist)
    assert "earlier runs" in measured.basis and measured.seconds == pytest.approx(40 + estimate.STARTUP_S, rel=0.05)
    # A run's own set-up (data loading) is not spread over its epochs: a short run
    # that spent 6 of its 10 s loading data predicts 4 s of training for the same
    # epochs, and twice the epochs cost twice the training, not twice the set-up.
    short = {**cfg, "epochs": 3, "retrain_epochs": 3}
    hist = [{"status": "done", "config": short, "summary": {"wall_seconds": 10.0, "setup_seconds": 6.0}}]
    same = estimate.estimate(short, history=hist)
    assert same.seconds == pytest.approx(estimate.WORKER_START_S + 10.0, rel=1e-6)
    double = estimate.estimate({**short, "epochs": 6, "retrain_epochs": 6}, history=hist)
    assert double.seconds == pytest.approx(estimate.WORKER_START_S + 6.0 + 8.0, rel=1e-6)
    gpu = estimate.estimate({**cfg, "model": "resnet20", "dataset": "cifar10"}, gpu_available=True)
    cpu = estimate.estimate({**cfg, "model": "resnet20", "dataset": "cifar10", "device": "cpu"}, gpu_available=True)
    assert gpu.device == "gpu" and cpu.seconds > 20 * gpu.seconds


def test_form_parsers_name_the_field():
    assert widgets.parse_seeds("0, 2-4") == [0, 2, 3, 4]
    assert widgets.parse_numbers("0.5 1,2", "lam") == [0.5, 1.0, 2.0]
    assert widgets.log_space(1, 100, 3) == [1.0, 10.0, 100.0]
    for fn, key in ((lambda: widgets.parse_seeds("x"), "seed"), (lambda: widgets.parse_numbers("1,a", "lam"), "lam"),
                    (lambda: widgets.log_space(0, 1, 3), "lam"), (lambda: widgets.parse_seeds("5-1"), "seed")):
        with pytest.raises(ConfigError) as e:
            fn()
        assert e.value.key == key


def test_every_config_field_has_help_for_students():
    from dataclasses import fields

    from engine.config import RunConfig
    for f in fields(RunConfig):
        assert widgets.help_for(f.name), f.name
    back = widgets.config_to_form({"model": "logreg", "dataset": "mnist", "classes": [0, 1], "lam": 2,
                                   "rewind": "epoch:3", "seed": 4})
    assert back["lam"] == "2"                     # λ is typed as text (validated by the engine)
    assert (back["rewind_kind"], back["rewind_k"], back["seeds"]) == ("epoch:K", 3, "4")


def test_export_zip_holds_what_export_writes(synth):
    import io
    import zipfile
    store, ids = synth
    z = zipfile.ZipFile(io.BytesIO(data.export_zip(store, ids[0])))
    assert {f"{ids[0]}/{n}" for n in ("config.json", "metrics.csv", "summary.json", "checks.json",
                                      "curves.html")} <= set(z.namelist())
    html = z.read(f"{ids[0]}/curves.html").decode()
    assert "<script src=" not in html                   # opens offline: plotly.js is inside, not fetched
    assert html.count('class="plotly-graph-div"') == 3 and len(html) > 1_000_000


def test_a_run_keeps_its_colour_in_every_monitor_figure():
    """λ has rows only for the concave run; it must still get the colour that run has
    in the loss, accuracy and sparsity figures (and a legend saying which run it is)."""
    def rows(with_lam):
        out = []
        for e in (1, 2):
            out.append({"kind": "step", "round": 0, "phase": "search", "epoch": e - 0.5, "step": e, "wall": e,
                        "loss_task": 1.0 / e, "loss_reg": 0.1 if with_lam else None,
                        "lam": 5.0 if with_lam else None})
            out.append({"kind": "epoch", "round": 0, "phase": "search", "epoch": e, "step": e, "wall": e,
                        "loss_task": 1.0 / e, "val_acc": 0.9, "test_acc": 0.9, "remaining": 1.0 / e})
        return out
    imp, concave = "IMP 3×20% · lenet300/digits · seed 0 · a", "ℓ1 mask λ=5 · lenet300/digits · seed 0 · b"
    df = pd.concat([data.metrics_frame(rows(False)).assign(run=imp),
                    data.metrics_frame(rows(True)).assign(run=concave)], ignore_index=True)
    colour = {}
    for f in (figures.loss_figure, figures.accuracy_figure, figures.remaining_figure, figures.lam_figure):
        for tr in f(df).data:
            run = imp if tr.name.startswith("IMP") else concave
            assert colour.setdefault(run, tr.line.color) == tr.line.color, (f.__name__, tr.name)
    assert colour[concave] == figures.REG_COLORS["l1"] and colour[imp] == figures.METHOD_COLORS["imp"]
    lam = figures.lam_figure(df)
    assert [tr.name for tr in lam.data] == [figures.short(concave)] and lam.layout.showlegend
    # Legends sit at the figure's bottom edge (the margin grows), never over the x-axis title.
    assert figures.accuracy_figure(df).layout.legend.yref == "container"


# ---------------------------------------------------------------- issue 12: plots that read right

def _acc_frame(lo: float, hi: float, n: int = 8) -> pd.DataFrame:
    rows = [{"run_id": "a", "kind": "epoch", "round": 0, "phase": "search", "epoch": e, "step": e,
             "test_acc": lo + (hi - lo) * (e % 3) / 2, "val_acc": lo + (hi - lo) * ((e + 1) % 3) / 2,
             "remaining": lo + (hi - lo) * e / n}
            for e in range(1, n + 1)]
    return data.metrics_frame(rows).assign(run="log mask λ=2 · logreg/mnist · seed 0 · a")


@pytest.mark.parametrize("lo, hi", [(0.995, 0.9995), (0.9999, 1.0), (0.955, 0.99), (0.0, 1.0), (0.62, 0.64),
                                    (0.004, 0.03)])
def test_percent_axes_never_repeat_a_label(lo, hi):
    """The 8-pixel run's accuracy (99.5–100 %) printed "100%" on every tick. Each percent axis
    gets a step and as many decimals as the range needs: adjacent labels always differ."""
    df = _acc_frame(lo, hi)
    for fig in (figures.accuracy_figure(df), figures.remaining_figure(df)):
        axis = fig.layout.yaxis
        assert axis.dtick is not None and axis.tickformat, "ticks left to plotly's automatic choice"
        labels = figures.linear_tick_labels({"range": list(axis.range), "dtick": axis.dtick,
                                             "tickformat": axis.tickformat})
        assert len(labels) >= 3, labels
        assert all(a != b for a, b in zip(labels, labels[1:])), labels
        # the drawn data lies inside the axis
        assert axis.range[0] <= min(lo, hi) and axis.range[1] >= max(lo, hi) * (1 if hi < 1 else 0.999)


@pytest.mark.parametrize("lo, hi, percent, max_ticks", [(0.012, 1.05, True, 8), (3.1, 480.0, False, 8),
                                                        (9.0, 100.0, False, 6), (1e-4, 1.0, True, 5),
                                                        (0.55, 1.05, True, 6), (4.0, 9.0, False, 4)])
def test_log_ticks_are_1_2_5_and_fewer_on_short_axes(lo, hi, percent, max_ticks):
    """Trade-offs' "seconds spent" axis printed "9 100 2 3 4 5 6 7 8" and a remaining axis
    "100%90%80%70%": explicit 1-2-5 × 10^k ticks, at most max_ticks, labels distinct."""
    t = figures.log_ticks(lo, hi, percent=percent, max_ticks=max_ticks)
    vals, text = t["tickvals"], t["ticktext"]
    assert 2 <= len(vals) <= max_ticks and vals == sorted(vals)
    assert all(lo * 0.999 <= v <= hi * 1.001 for v in vals)
    assert len(set(text)) == len(text)
    if hi / lo >= 10:   # a decade or more: only round values
        assert all(float(f"{v:.1e}".split("e")[0]) in (1.0, 2.0, 3.0, 5.0) for v in vals), vals
    if percent:
        assert all(x.endswith("%") for x in text)


def test_log_axes_of_the_trade_off_figures_use_explicit_ticks():
    pts = pd.DataFrame({"group": ["log mask"] * 3, "setting": ["a", "b", "c"], "lam": [1.0, 2.0, 5.0],
                        "n": [1, 1, 1], "remaining": [0.5, 0.1, 0.02], "remaining_std": [0.0] * 3,
                        "test_accuracy": [0.98, 0.975, 0.96], "acc_std": [0.0] * 3,
                        "wall_seconds": [9.0, 30.0, 120.0], "epochs_spent": [10, 20, 40], "seeds": ["0"] * 3,
                        "label": ["x"] * 3})
    imp = pd.DataFrame({"run_id": ["i"] * 3, "round": [0, 1, 2], "remaining": [1.0, 0.8, 0.64],
                        "test_accuracy": [0.98, 0.98, 0.97], "epochs_spent": [10, 20, 30],
                        "wall_seconds": [10.0, 20.0, 30.0]})
    for x in ("remaining", "wall_seconds", "epochs_spent"):
        ax = figures.tradeoff_figure(pts, imp, 0.98, 0.005, x=x).layout.xaxis
        assert ax.type == "log" and ax.tickvals and len(set(ax.ticktext)) == len(ax.ticktext) <= 8
    ax = figures.tradeoff_figure(pts, imp, 0.98, 0.005, x="wall_seconds").layout.xaxis
    assert list(ax.ticktext) == ["10", "20", "50", "100"]
    fig = figures.cost_figure(pts, imp, "wall_seconds")
    assert list(fig.layout.xaxis.ticktext) == ["10", "20", "50", "100"]
    assert fig.layout.yaxis.ticktext and all(t.endswith("%") for t in fig.layout.yaxis.ticktext)


def test_trade_offs_table_and_caption_come_from_the_runs():
    """The caption said IMP prunes "20 %" whatever the run's prune_fraction; the table
    below the plot had no row for the IMP run."""
    runs = [{"id": "imp50", "status": "done", "config": {"method": "imp", "prune_fraction": 0.5, "rounds": 2}},
            {"id": "cc", "status": "done", "config": {"method": "concave", "regularizer": "log", "lam": 2.0}}]
    assert data.imp_prune_text(runs) == "50 %"
    assert data.imp_prune_text(runs + [{"id": "x", "config": {"method": "imp", "prune_fraction": 0.2}}]) \
        == "20 % or 50 %"
    assert data.imp_prune_text(runs[1:]) is None
    agg = pd.DataFrame({"group": ["log mask"], "setting": ["s"], "lam": [2.0], "n": [1], "remaining": [0.05],
                        "remaining_std": [0.0], "test_accuracy": [0.97], "acc_std": [0.0], "acc_min": [0.97],
                        "acc_max": [0.97], "wall_seconds": [5.0], "epochs_spent": [20], "seeds": ["0"],
                        "run_ids": ["cc"]})
    imp = pd.DataFrame({"run_id": ["imp50"] * 3, "label": ["l"] * 3, "seed": [0] * 3, "round": [0, 1, 2],
                        "remaining": [1.0, 0.5, 0.25], "test_accuracy": [0.98, 0.97, 0.96],
                        "epochs_spent": [10, 20, 30], "wall_seconds": [3.0, 6.0, 9.0]})
    table = data.tradeoff_table(agg, imp, runs)
    assert len(table) == 4 and set(",".join(table["run_ids"]).split(",")) == {"cc", "imp50"}
    assert table.loc[table["run_ids"] == "imp50", "remaining"].tolist() == [1.0, 0.5, 0.25]
    assert table["group"].iloc[-1] == "IMP (global, 50% a round)"


# ---------------------------------------------------------------- issue 12: names people understand

def test_run_labels_say_what_the_run_is():
    from ui import names
    lab = lambda **c: data.run_label({"id": "r1", "config": {"model": "lenet300", "dataset": "mnist", **c}})  # noqa: E731
    assert lab(method="concave", regularizer="l1", lam=2.0).startswith("ℓ1 mask λ=2 · lenet300/mnist")
    assert lab(method="concave", regularizer="log", lam=2.0).startswith("log mask λ=2 ·")
    assert lab(method="imp", rounds=7, prune_fraction=0.2).startswith("IMP 7×20% ·")
    assert lab(method="dense").startswith("dense ·")
    assert lab(method="random", target_sparsity=0.9).startswith("random 90% pruned ·")
    assert lab(method="cs", lam=2.0, rounds=3).startswith("CS λ=2 ×3 ·")
    assert lab(method="pai", scorer="synflow", target_sparsity=0.98).startswith("PaI · SynFlow 98% pruned ·")
    assert lab(method="newfam").startswith("newfam ·")            # a new method: its name, until it registers one
    names.METHOD_LABELS["newfam"] = lambda c: f"NF β={c.get('beta', 1)}"
    try:
        assert lab(method="newfam", beta=3).startswith("NF β=3 ·")
    finally:
        del names.METHOD_LABELS["newfam"]
    # colours follow the labels: ℓ1 and log masks keep their penalty's colour, IMP its own
    assert figures.color_for("ℓ1 mask λ=2 · x") == figures.REG_COLORS["l1"]
    assert figures.color_for("log mask") == figures.REG_COLORS["log"]
    assert figures.color_for("IMP 7×20% · x") == figures.METHOD_COLORS["imp"]


def test_layers_are_named_by_what_they_are():
    from ui import names
    assert names.layer_names_for({"model": "lenet300", "dataset": "mnist"}) == {
        "classifier.0": "fc1 784→300", "classifier.2": "fc2 300→100", "classifier.4": "out 100→10"}
    assert names.layer_names({"features.0": (16, 3, 3, 3), "features.3": (32, 16, 3, 3), "fc": (10, 32)}) == {
        "features.0": "conv1 3→16 3×3", "features.3": "conv2 16→32 3×3", "fc": "out 32→10"}
    stats = pd.DataFrame({"layer": ["classifier.0", "classifier.4"], "x": [1, 2]})
    named = data.name_layers(stats, {"model": "lenet300", "dataset": "digits"})
    assert named["layer"].tolist() == ["fc1 64→300", "out 100→10"]
    assert named["module"].tolist() == ["classifier.0", "classifier.4"]       # the path, for the tooltip
    assert data.name_layers(stats, {"model": "nosuch", "dataset": "digits"})["layer"].tolist() == \
        ["classifier.0", "classifier.4"]


def test_snapshots_are_named_by_when_they_were_taken():
    from ui import names
    assert names.snapshot_label("r0-search-e0003") == "round 1 · search · epoch 3"
    assert names.snapshot_label("r1-retrain-end") == "round 2 · retrain · end"
    assert names.snapshot_label("r0-ticket") == "round 1 · ticket"
    assert names.snapshot_label("weird") == "weird"
    st_ = data.mask_stats_frame([{"run_id": "a", "round": 0, "phase": "search", "epoch": 3, "layer": "l"}])
    assert st_["when"].tolist() == ["round 1 · search · epoch 3"]


def test_mask_overlap_partner_is_the_newest_compatible_run():
    mk = lambda i, model, classes=None: {"id": i, "config": {"model": model, "dataset": "digits",  # noqa: E731
                                                             "classes": classes}}
    a = mk("a", "lenet300")
    cands = [mk("pix", "logreg", [0, 1]), mk("a", "lenet300"), mk("new", "lenet300"), mk("old", "lenet300")]
    assert data.overlap_partner(a, cands) == "new"
    assert data.overlap_partner(a, cands[:2]) is None


def test_kept_pixels_are_large_high_contrast_marks():
    """"Digits through the mask" drew 8 kept pixels as 2–4 px dots: each is now a mark at
    least KEPT_MARK_PX across, red where the digit has ink, a blue ring where it is blank."""
    mask = np.zeros((28, 28))
    kept = [(10, 14), (12, 14), (14, 10), (20, 20), (5, 5), (14, 14), (16, 12), (8, 20)]
    for r, c in kept:
        mask[r, c] = 1
    digit = np.zeros((28, 28))
    digit[8:20, 12:16] = 1.0                              # a "1": ink in a vertical band
    fig = figures.masked_samples_figure([(str(i), pd.DataFrame(digit)) for i in range(8)], pd.DataFrame(mask))
    marks = [tr for tr in fig.data if tr.type == "scatter"]
    assert len(marks) == 8                                 # one layer of marks per sample, over the faded digit
    for tr in marks:
        assert sorted(zip(tr.y, tr.x)) == sorted(kept)
        assert tr.marker.size >= figures.KEPT_MARK_PX >= 10
        colours = list(tr.marker.color)
        assert colours.count("#d62728") == 4 and colours.count("rgba(0,0,0,0)") == 4   # ink / blank


def test_log_ticks_stay_inside_a_short_axis():
    """A trade-off axis from 100 % to 50 % showed only "100%": a tick exactly at the range's edge
    is dropped by plotly, so ticks lie strictly inside, at least two of them."""
    from ui.figures import log_ticks
    for lo, hi in ((0.5, 1.05), (0.2, 1.0), (1.0, 1000.0), (0.01, 1.05), (0.9, 1.0), (0.995, 1.0)):
        t = log_ticks(lo, hi, percent=True)
        assert len(t["tickvals"]) >= 2 and all(lo < v < hi for v in t["tickvals"]), (lo, hi, t)
        assert len(set(t["ticktext"])) == len(t["ticktext"])


def test_an_example_runs_badge_does_not_change_its_colour():
    """Class-pack runs are labelled "📦 example · log mask …": they keep their method's colour."""
    from ui import data, figures
    run = {"id": "ex-1", "example": 1, "config": {"model": "logreg", "dataset": "mnist", "method": "concave",
                                                   "regularizer": "log", "lam": 10.0}}
    label = data.run_label(run)
    assert label.startswith(data.EXAMPLE_BADGE)
    assert figures.color_for(label) == figures.color_for(data.run_label({**run, "example": 0})) \
        == figures.REG_COLORS["log"]


def test_a_second_group_wanting_a_taken_colour_does_not_take_another_methods():
    """Trade-offs drew "log mask (warm start)" in ℓ1's blue and pushed ℓ1 to IMP's green:
    each penalty and method keeps its own colour on every page; the extra group gets a spare."""
    from ui import figures
    m = figures.color_map(["log mask", "log mask (warm start)", "ℓ1 mask", "imp"])
    assert m["log mask"] == figures.REG_COLORS["log"] and m["ℓ1 mask"] == figures.REG_COLORS["l1"]
    assert m["imp"] == figures.METHOD_COLORS["imp"]
    owned = set(figures.REG_COLORS.values()) | set(figures.METHOD_COLORS.values())
    assert m["log mask (warm start)"] not in owned and len(set(m.values())) == 4


def test_mask_evolution_x_ticks_are_phase_starts_short_and_flat():
    """Every epoch written out ("round 3 · retrain · epoch 1") stood on end under the half-width
    churn and binary charts at 1024×768 and left them a plot ~15 px tall. Ticks now mark each
    round's phases ("r2 search"), short enough to lie nearly flat; every epoch stays a category."""
    from ui import names
    order = [names.when_label(r, p, e) for r in range(3) for p, es in (("search", (1, 2)), ("retrain", (0, 1)))
             for e in es]
    t = figures.when_ticks(order)
    assert t["ticktext"] == ["r1 search", "r1 retrain", "r2 search", "r2 retrain", "r3 search", "r3 retrain"]
    assert t["tickvals"] == [order[i] for i in (0, 2, 4, 6, 8, 10)] and t["categoryarray"] == order
    assert t["tickangle"] == -30 and max(len(x) for x in t["ticktext"]) <= 10
    one = figures.when_ticks(order[:4])
    assert one["ticktext"] == ["search", "retrain"] and one["tickangle"] == 0
    stats = pd.DataFrame({"layer": "fc1", "module": "classifier.0", "when": order, "order": range(len(order)),
                          "churn": 0.1})
    fig = figures.layer_lines(stats, "churn", "Churn", "share of entries")
    assert list(fig.layout.xaxis.ticktext) == t["ticktext"] and fig.layout.xaxis.title.text == figures.WHEN_AXIS
    assert list(fig.data[0].x) == order                                  # every epoch is still a point


# ---------------------------------------------------------------- issue 20: compare like with like

def test_trade_offs_average_only_runs_equal_but_for_the_seed(tmp_path):
    """Three IMP runs on digits with 1 and 2 epochs per round were one point ("seeds 0,0,0")
    and a 1-round run was merged into the 2-round line; examples were averaged with the user's."""
    ids = comparable_store(tmp_path)
    store = Store(tmp_path)
    runs = store.list_runs()
    pts = data.tradeoff_points(runs)
    agg = data.aggregate_seeds(pts[pts["method"] != "imp"])
    imp = data.imp_rounds(store, runs)
    table = data.tradeoff_table(agg, imp, runs)
    setting = dict(zip(pts["run_id"], pts["setting"]))
    for row in table.itertuples():        # every row averages runs of one setting only
        assert len({setting[i] for i in row.run_ids.split(",")}) == 1, row
    by_run = dict(zip(pts["run_id"], pts["group"]))
    lines = {role: {by_run[i] for i in rids} for role, rids in ids.items()}
    assert all(len(v) == 1 for v in lines.values())                       # seeds share their line
    imp_lines = [next(iter(lines[r])) for r in ("imp_2ep", "imp_1ep", "imp_1round", "imp_example")]
    assert len(set(imp_lines)) == 4, imp_lines                            # each setting is its own line
    assert "2 epochs" in imp_lines[0] and "1 epoch" in imp_lines[1] and "1 round" in imp_lines[2]
    assert "example" in imp_lines[3] and "example" not in imp_lines[0]
    two_seeds = table[[set(r.split(",")) == set(ids["imp_2ep"]) for r in table["run_ids"]]]
    assert len(two_seeds) == 3 and (two_seeds["n"] == 2).all() and set(two_seeds["seeds"]) == {"0,1"}
    assert two_seeds["remaining"].tolist() == [1.0, 0.8, 0.64]            # rounds no single run lacks
    # the dense reference: one setting at a time, never 0.95 and 0.97 averaged
    cands = data.dense_candidates(pts, imp)
    dense = cands[cands["source"] == "dense"]
    assert sorted(dense["accuracy"]) == [0.95, 0.97] and (dense["n"] == 1).all()
    assert data.dense_reference(pts, imp) in (0.95, 0.97)
    ex = cands[cands["run_ids"] == ids["imp_example"][0]]
    assert len(ex) == 1 and ex["accuracy"].iloc[0] == 0.82 and bool(ex["example"].iloc[0])


def test_one_meaning_per_number_rounds_times_and_lambda(tmp_path):
    """Issue 20: Runs said "round 6", Mask evolution r1–r6 and Trade-offs r0–r5 for one IMP run;
    the Lesson said 1 min 16 s and Trade-offs 72.1 s; "log mask λ=1" showed a solved run's start."""
    from ui import names
    assert names.phase_label("round 5 train epoch 2/2").startswith("round 6 ·")
    assert names.snapshot_label("r5-train-e0002").startswith("round 6 ·")
    assert figures.round_label(5) == "r6" and figures.round_label(0) == "r1"
    ids = comparable_store(tmp_path)
    store = Store(tmp_path)
    runs = store.list_runs()
    imp = data.imp_rounds(store, runs)
    rows = imp[imp["run_id"] == ids["imp_2ep"][0]].sort_values("round")
    assert rows["wall_seconds"].tolist() == [2.5, 4.5, 76.0]             # set-up + rounds; the last: the run's
    assert data.fmt_duration(rows["wall_seconds"].iloc[-1]) == "1 min 16 s"
    frame = data.runs_frame([store.get_run(ids["imp_2ep"][0]) | {"started": 0.0}])
    assert data.fmt_duration(frame["elapsed_s"].iloc[0]) == "1 min 16 s"          # Runs' "elapsed" too
    run = {"id": "t1", "status": "done", "config": {"method": "concave", "regularizer": "log", "lam": 1.0,
                                                     "target_sparsity": 0.95, "model": "lenet300", "dataset": "mnist"},
           "summary": {"lam_final": 12.34, "remaining": 0.05, "test_accuracy": 0.97}}
    label = data.run_label(run)
    assert "→ 95% pruned, λ solved 12.3" in label and "λ=1" not in label
    assert data.tradeoff_points([run])["lam"].iloc[0] == 12.34


def test_every_figure_carries_the_white_template_whatever_the_default():
    """Figures take plotly_white as plotly's default template (cheap) rather than template=… per
    figure; Streamlit sets its own default when imported: the figures must not follow it."""
    import json

    import plotly.io as pio

    white = json.loads(go.Figure(layout={"template": "plotly_white"}).to_json())["layout"]["template"]
    for other in ("streamlit", "plotly", None):
        if other == "streamlit":
            import streamlit  # noqa: F401 - registers (and makes default) its template
        pio.templates.default = other
        iou = pd.DataFrame({"layer": ["fc1", "all layers"], "iou": [0.5, 0.4]})
        for _ in range(2):                  # the first after the switch, and the next
            fig = figures.iou_figure(iou, "a", "b")          # a figure finished by _base
            assert json.loads(fig.to_json())["layout"]["template"] == white, other
        pio.templates.default = other       # the live charts, built from plain dicts (_spec_figure)
        df = _live_frame()
        for build in (figures.loss_figure, figures.accuracy_figure, figures.remaining_figure, figures.lam_figure,
                      lambda _df: figures.empty_figure("no data")):
            ours = json.loads(build(df).to_json())["layout"]["template"]    # the white one, cut to scatter charts
            assert ours == {"data": {"scatter": white["data"]["scatter"]},
                            "layout": {k: v for k, v in white["layout"].items() if k in ours["layout"]}}, \
                (other, build)
            assert len(ours["layout"]) >= 10, (other, build)


def _live_frame() -> pd.DataFrame:
    """One run's metric rows: a search (λ rising, β set as CS does) then a retrain, two epochs each."""
    rows, step = [], 0
    for phase in ("search", "retrain"):
        for epoch in (1, 2):
            for i in range(5):
                step += 1
                rows.append(dict(run_id="r1", kind="step", round=0, phase=phase, epoch=epoch - 1 + (i + 1) / 5,
                                 step=step, wall=step / 10, lr=1e-3, loss_task=1 / step,
                                 lam=step * 3.0 if phase == "search" else None,
                                 beta=1.0 + step if phase == "search" else None,
                                 loss_reg=0.1 / step if phase == "search" else None))
            rows.append(dict(run_id="r1", kind="epoch", round=0, phase=phase, epoch=epoch, step=step, wall=step / 10,
                             val_acc=0.8 + epoch / 100, test_acc=0.81 + epoch / 100, remaining=0.5))
    return data.metrics_frame(rows).assign(run="log mask λ=1 · lenet300 · digits")


def test_live_figures_are_what_plotlys_validation_makes():
    """The live charts skip plotly's validation (made from our own dicts, once per new row): each
    must be exactly the figure a validated construction of the same spec gives, arrays included."""
    import json

    import plotly.io as pio

    df = _live_frame()
    for make in (figures.loss_figure, figures.accuracy_figure, figures.remaining_figure, figures.lam_figure):
        fig = make(df)
        checked = go.Figure(json.loads(pio.to_json(fig)))        # validated: raises on anything invalid
        assert json.loads(pio.to_json(fig)) == json.loads(pio.to_json(checked)), make.__name__
        # the template, cut to what scatter charts use, draws them as the whole one does
        full, ours = pio.templates[figures.TEMPLATE].to_plotly_json(), fig.layout.template.to_plotly_json()
        assert {t["type"] for t in fig.to_dict()["data"]} == {"scatter"}
        assert ours["data"] == {"scatter": full["data"]["scatter"]}
        assert {k: v for k, v in full["layout"].items() if k in ours["layout"]} == ours["layout"]
        assert {"xaxis", "yaxis", "colorway", "font", "paper_bgcolor", "plot_bgcolor"} <= set(ours["layout"])
        assert all(not isinstance(v, (pd.Series, pd.Index)) for trace in fig.to_dict()["data"] for v in trace.values())


def test_an_empty_chart_is_what_plotlys_validation_makes_and_says_why():
    import json

    import plotly.io as pio

    fig = figures.empty_figure("no finished epoch <b>yet</b>", height=260)
    checked = go.Figure(json.loads(pio.to_json(fig)))        # validated: raises on anything invalid
    assert json.loads(pio.to_json(fig)) == json.loads(pio.to_json(checked))
    layout = fig.to_dict()["layout"]
    assert fig.to_dict()["data"] == [] and layout["height"] == 260
    assert [a["text"] for a in layout["annotations"]] == ["no finished epoch <b>yet</b>"]
    assert layout["xaxis"]["visible"] is False and layout["yaxis"]["visible"] is False


def test_a_shared_live_chart_is_sent_as_made_and_its_dict_made_once():
    import json

    import plotly.io as pio

    df = _live_frame()
    for make in (figures.loss_figure, figures.accuracy_figure, figures.remaining_figure, figures.lam_figure):
        plain = make(df)
        shared = figures.shared_figure(make(df))
        assert isinstance(shared, go.Figure) and type(plain) is go.Figure
        assert json.loads(pio.to_json(shared)) == json.loads(pio.to_json(plain)), make.__name__
        assert shared.to_dict() is shared.to_dict()                # made once, for every session
        assert shared.to_dict() == plain.to_dict()


def test_live_figures_lay_out_as_plotlys_subplots_and_bands():
    """The live charts are made from plain dicts (no make_subplots / add_vrect per tick): their
    subplot axes and phase bands must be exactly what plotly's own calls make."""
    from plotly.subplots import make_subplots

    df = _live_frame()
    steps = df[df["kind"] == "step"]
    loss = figures.loss_figure(df).to_dict()["layout"]
    ref = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.62, 0.38])
    for seg, g in steps.groupby("segment", sort=False):
        ref.add_vrect(x0=max(float(g["t"].min()) - g["epoch"].min(), 0), x1=float(g["t"].max()), line_width=0,
                      fillcolor=figures.PHASE_FILL[seg.split()[-1]], layer="below", row="all", col=1,
                      exclude_empty_subplots=False)
    ref = ref.to_dict()["layout"]
    for axis in ("xaxis", "xaxis2", "yaxis", "yaxis2"):
        for key in ("anchor", "domain", "matches", "showticklabels"):
            assert loss[axis].get(key) == ref[axis].get(key), (axis, key)
    assert [dict(s) for s in loss["shapes"]] == [dict(s) for s in ref["shapes"]]
    assert len(loss["shapes"]) == 4 and loss["yaxis"]["type"] == "log"          # 2 phases × 2 subplots
    lam = figures.lam_figure(df).to_dict()
    ref = make_subplots(specs=[[{"secondary_y": True}]]).to_dict()["layout"]
    assert lam["layout"]["yaxis2"]["overlaying"] == ref["yaxis2"]["overlaying"] == "y"
    assert lam["layout"]["xaxis"]["domain"] == ref["xaxis"]["domain"]
    assert [t.get("yaxis") for t in lam["data"]] == [None, "y2"]              # λ left, β on its own axis
    # the shared axes they start from are never changed by a build: the next build lays out the same
    assert figures.loss_figure(df).to_dict()["layout"] == loss
    assert figures.lam_figure(df).to_dict()["layout"] == lam["layout"]


def test_shows_the_clock_says_which_rows_of_runs_frame_move_with_the_clock():
    """state.live makes its snapshot again each second only while some run shows the clock:
    every other row must be the same whatever `now` is, and a row that does show it must move."""
    from ui import data

    t = 1_700_000_000.0
    done = {"wall_seconds": 12.5}
    runs = [
        {"id": "a", "status": "done", "started": t - 90, "finished": t - 60, "summary": done},
        {"id": "b", "status": "done", "started": t - 90, "finished": None, "summary": done},
        {"id": "c", "status": "done", "started": t - 90, "finished": None, "summary": {}},
        {"id": "d", "status": "running", "started": t - 90, "heartbeat": t - 1, "progress": 0.5},
        {"id": "e", "status": "running", "started": None, "heartbeat": t - 1, "progress": 0.0},
        {"id": "f", "status": "queued", "created": t - 5},
        {"id": "g", "status": "interrupted", "started": t - 90, "finished": None},
        {"id": "h", "status": "failed", "started": t - 90, "finished": t - 80, "reason": "boom"},
        {"id": "i", "status": "cancelled", "started": None, "finished": None},
    ]
    for r in runs:
        r.setdefault("config", {"method": "dense", "model": "lenet300", "dataset": "digits"})
    rows = [data.runs_frame(runs, now=now).drop(columns=["created"]) for now in (t, t + 37.0)]
    for i, r in enumerate(runs):
        same = rows[0].iloc[i].equals(rows[1].iloc[i])
        assert same is not data.shows_the_clock(r), r["id"]
    assert [r["id"] for r in runs if data.shows_the_clock(r)] == ["c", "d", "e", "g"]
