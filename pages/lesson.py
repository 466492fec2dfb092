"""Lesson: a guided path through lottery tickets in six steps (ui/lesson_steps.py). Each
step has a short text, one figure drawn from the class pack's example runs (or the
student's own finished run of the same kind, which replaces the pack's), a "what to
notice" prompt, a question for the class and a "Run it live" button that queues the
step's small experiment. The step is in the URL (?step=3); Back/Next move along."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from engine.data import dataset_info, default_data_dir, mnist_available
from engine.regularizers import REGULARIZERS
from ui import backend, data, figures, handout, identity, md, names, present, state
from ui import lesson_steps as ls

STEPS = ls.STEPS
home = state.home()
user = identity.current_user()
# ids "Run it live" gave this session, and every run of someone else's a launch of this person's reused
launched = frozenset(st.session_state.get("lesson.launched", ())) | frozenset(
    state.store().adopted(user) if user else ())

# On a projector the line would repeat on every step and push the figure below the fold.
state.intro("🎓 Lesson", "" if present.active() else
            "Lottery tickets in six steps: read, look at the figure, notice, discuss, then run it live. The figures "
            "start from the class pack's ready-made results; your own finished run takes their place.")


def step_index() -> int:
    raw = st.query_params.get("step", "1")
    try:
        i = int(raw)
    except ValueError:
        i = 1
    i = min(max(i, 1), len(STEPS))
    if st.query_params.get("step") != str(i):
        st.query_params["step"] = str(i)
    return i


def go(i: int) -> None:
    st.query_params["step"] = str(i)


def nav(i: int, where: str) -> None:
    c1, c2, c3 = st.columns([1, 4, 1], vertical_alignment="center")
    c1.button("← Back", key=f"lesson.back.{where}", disabled=i <= 1, on_click=go, args=(i - 1,),
              width="stretch")
    c2.progress(i / len(STEPS), text=f"Step {i} of {len(STEPS)}")
    c3.button("Next →", key=f"lesson.next.{where}", disabled=i >= len(STEPS), on_click=go, args=(i + 1,),
              type="primary", width="stretch")


# ---------------------------------------------------------------- what each step draws
# Each returns (figures as (name, fig), key numbers as (label, value, help)). A step with
# no run of its kind returns no figure; the page then says "no run yet: Run it live".

def pct(v) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{float(v):.1%}"


def fig_ticket(step, runs):
    run = runs[0]
    s = data.summary_of(run)
    fig = figures.accuracy_figure(state.metrics_of(run))
    return [("Accuracy during the search and the retrain", fig)], [
        ("Weights kept", pct(s.get("remaining")), f"{s.get('kept', 0):,} of {s.get('total', 0):,} weights"),
        ("Test accuracy", pct(s.get("test_accuracy")), "of the retrained ticket")]


def pixel_mask(run):
    """(binary pixel map, pixels used, pixels in all) of a finished pixel run's ticket."""
    tag = data.final_ticket_tag(state.snapshots_of(run))
    if tag is None:
        return None
    masks = state.masks_of(run["id"], tag)
    c = data.cfg_of(run)
    return (data.pixel_map(masks, dataset_info(c["dataset"]).in_shape), *data.pixels_used(masks))


def fig_pixels(step, runs):
    lam = step.live.get("lam")
    run = next((r for r in runs if data.cfg_of(r).get("lam") == lam), runs[0])
    c, s = data.cfg_of(run), data.summary_of(run)
    got = pixel_mask(run)
    if got is None:
        return [], [("Test accuracy", pct(s.get("test_accuracy")), None)]
    img, used, total = got
    big = present.active()
    try:
        pics = state.sample_images(c["dataset"], c.get("classes"), 4 if big else 6)
        fig = figures.masked_samples_figure(pics, img, height=560 if big else 360, mark_px=22 if big else 13,
                                            plot_px=900 if big else 560)
        fig.layout.meta = "sized"           # drawn for the view already: the presentation view keeps its height
        name = "Digits through the mask"
    except Exception:  # noqa: BLE001 - no image files on this machine: the mask alone
        fig = figures.pixel_figure(img, "The ticket's pixels (yellow: kept)", height=560 if big else 420,
                                   colorbar=False)
        fig.layout.meta = "sized"
        name = "The mask"
    how = f"λ = {c.get('lam'):g}, {names.reg_name(c.get('regularizer'))} penalty"
    return [(name, fig)], [("Pixels kept", f"{used} of {total}", how),
                           ("Test accuracy", pct(s.get("test_accuracy")), None)]


def fewest(points: pd.DataFrame, reg: str, acc: float):
    g = points[(points["regularizer"] == reg) & (points["test_accuracy"] >= acc)]
    return None if g.empty else int(g["kept"].min())


def fig_pareto(step, runs):
    pts = data.tradeoff_points(runs)
    pts = pts[pts["regularizer"].isin(["l1", "log"])]
    fig = figures.pareto_figure(pts, "pixels")
    if pts.empty:
        return [("Accuracy against kept pixels", fig)], []
    target = 0.99 if (pts["test_accuracy"] >= 0.99).any() else float(pts["test_accuracy"].max()) - 0.01
    nums, found = [], {}
    for reg in ("log", "l1"):
        n = found[reg] = fewest(pts, reg, target)
        nums.append((f"{names.reg_name(reg)}: pixels for {target:.0%}", "—" if n is None else f"{n}",
                     f"the fewest kept pixels of any {names.reg_name(reg)} run with test accuracy ≥ {target:.1%}"))
    return [("Accuracy against kept pixels", fig)], nums, ls.pixels_verdict(found, target)


def fig_planted(step, runs):
    rows = []
    for r in runs:
        rec = data.recorded_recovery(data.summary_of(r))
        if rec is None:
            continue
        c = data.cfg_of(r)
        rows.append({"run_id": r["id"], "lam": float(c.get("lam", 0)), "regularizer": c.get("regularizer"),
                     "penalty": c.get("regularizer", "?") + (" (warm start)" if c.get("warm_start") else ""), **rec})
    df = pd.DataFrame(rows)
    curves = []
    for reg in ("l1", "log"):
        x, y = REGULARIZERS.get(reg).curve()
        curves.append(pd.DataFrame({"x": x, "y": y, "name": names.reg_name(reg), "reference": reg == "l1"}))
    shapes = figures.regularizer_curves(pd.concat(curves), "The penalties: ℓ1 (dashed) and log")
    out = [("Penalty shapes", shapes)]
    nums = []
    exact = {}
    if not df.empty:
        out.append(("Planted problem: recovery against λ", figures.theory_figure(df)))
        for pen, g in df.groupby("penalty", sort=True):
            exact[pen] = (int(g["exact"].sum()), len(g))
            nums.append((f"{pen.replace('l1', 'ℓ1')}: exact", f"{int(g['exact'].sum())} of {len(g)}",
                         "runs that found exactly the planted features"))
    return out, nums, ls.recovery_verdict(exact)


def fig_cost(step, every):
    """IMP against concave: one comparable pair (ls.cost_pair), named under the figure."""
    conc, imp_run, source = ls.cost_pair(step, every, user, launched)
    if conc is None:
        return [], [], "none", ("No concave ticket and IMP run of one setting (model, data, epochs per phase, "
                                "sparsity within 2×) yet.")
    pair = [conc, imp_run]
    pts = data.tradeoff_points(pair)
    imp = data.imp_rounds(state.store(), pair)
    agg = data.aggregate_seeds(pts[pts["method"] == "concave"])
    dense = data.dense_reference(pts, imp)          # IMP's round 1 (r1): the dense network of this setting
    fig = figures.tradeoff_figure(agg, imp, dense, 0.005, x="wall_seconds")
    nums = []
    for run, label in ((conc, "Concave"), (imp_run, "IMP")):
        s = data.summary_of(run)
        nums.append((f"{label}: accuracy", pct(s.get("test_accuracy")), f"with {s.get('remaining', 0):.1%} of "
                     "the weights"))
        nums.append((f"{label}: time", data.fmt_duration(s.get("wall_seconds")), "wall-clock time of the whole run"))
    c = data.cfg_of(conc)
    note = (f"Compared: {data.run_label(conc)} and {data.run_label(imp_run)} — the same model and data, "
            f"{c.get('epochs')} epochs per training phase, {data.summary_of(conc).get('remaining', 0):.1%} vs "
            f"{data.summary_of(imp_run).get('remaining', 0):.1%} of the weights left.")
    return [("Accuracy against the time spent finding the ticket", fig)], nums, source, note


def fig_controls(step, runs, every):
    src = ls.controls_source(runs)
    if src is None:
        return [], []
    rows = [{"kind": "ticket", "label": "the ticket", **_acc(src)}]
    for kind, key, label in (("random", "random_from", "random pruning"), ("reinit", "reinit_from", "reinit")):
        ctl = [r for r in every if r.get("status") == "done" and data.cfg_of(r).get(key) == src["id"]]
        mine = [r for r in ctl if ls.is_mine(r, user, launched)]
        if mine or ctl:
            rows.append({"kind": kind, "label": label, **_acc((mine or ctl)[0])})
    df = pd.DataFrame(rows)
    nums = [(row["label"].capitalize(), pct(row["test_accuracy"]), f"{row['remaining']:.1%} of the weights kept")
            for _, row in df.iterrows()]
    return [("The ticket against its controls", figures.controls_figure(df))], nums


def _acc(run) -> dict:
    s = data.summary_of(run)
    return {"test_accuracy": float(s.get("test_accuracy") or 0.0), "remaining": float(s.get("remaining") or 0.0)}


def build(step, every: list[dict]):
    """(figures, key numbers, source of the runs, a note naming the runs used) of one step."""
    if step.figure == "cost":
        return fig_cost(step, every)
    runs, source = ls.figure_runs(step, every, user, launched)
    if not runs:
        if step.figure == "planted":            # the penalty shapes need no run
            figs, nums, _ = fig_planted(step, [])
            return figs, nums, source, ""
        return [], [], source, ""
    if step.figure == "controls":
        got = fig_controls(step, runs, every)
    else:
        got = FIGURES[step.figure](step, runs)
    figs, nums, shows = (*got, "")[:3]      # a step may say what its figure shows
    return figs, nums, source, shows


FIGURES = {"ticket": fig_ticket, "pixels": fig_pixels, "pareto": fig_pareto, "planted": fig_planted}
SOURCE_TEXT = {"pack": "From the class pack: ready-made example runs.",
               "yours": "From your own finished run(s).",
               "mixed": "Your finished run(s) in place of the class pack's; the rest from the pack.",
               "none": ""}


# ---------------------------------------------------------------- the page

i = step_index()
step = STEPS[i - 1]
nav(i, "top")
st.header(f"{i}. {step.title}", anchor=False)
every = state.store().list_runs()       # the pack's examples too, whatever the "show examples" switch says
st.markdown(step.text)


def active_mine(runs: list[dict]) -> list[dict]:
    """The student's runs of this step still queued or running."""
    return [r for r in runs if r.get("status") in data.ACTIVE and ls.is_mine(r, user, launched)
            and ls.matches(step, data.cfg_of(r))]


def built(runs: list[dict]):
    """build(), redone only when a run appears, goes or changes status: the fragment below
    polls every second while the student's run is on its way, and the figure costs more."""
    key = (step.key, data.status_signature(runs), present.active(), launched)
    cached = st.session_state.get("lesson.built")
    if cached is None or cached[0] != key:
        cached = (key, build(step, runs))
        st.session_state["lesson.built"] = cached
    return cached[1]


mine_active = active_mine(every)


# Status, figure and caption in one fragment: while the student's run is queued or running it
# re-reads the store every second, and the moment that run's state changes (it finished, or
# failed) the whole page reruns, so the figure, its caption, the status line and the button
# change together, within about a second, without a reload.
@st.fragment(run_every=state.LIVE_SECONDS if mine_active else None)
@state.guard("This step's figure could not be drawn")
def figure_view() -> None:
    fresh = state.all_runs()                 # one read per change of the store, for every session
    now_active = active_mine(fresh)
    if [r["id"] for r in now_active] != [r["id"] for r in mine_active]:
        st.rerun()
    reused = st.session_state.get("lesson.reused", {}).get(step.key)
    if reused:
        st.caption(f"♻️ {md.esc(reused)}")
    for r in now_active:
        st.caption(f"{data.STATUS_ICON.get(r['status'], '')} Your run {md.esc(r['id'])} is {r['status']}"
                   + (f" ({float(r.get('progress') or 0):.0%})" if r["status"] == "running" else "")
                   + ". The figure switches to it when it finishes.")
    figs, nums, source, note = built(fresh)
    per_row = len(nums) if len(nums) <= 3 else 2      # four in a row do not fit at 1024 px ("1 min 16 s")
    for i in range(0, len(nums), per_row or 1):
        for col, (label, value, help_) in zip(st.columns(per_row), nums[i:i + per_row]):
            col.metric(label, value, help=help_)
    if not figs or (step.figure == "planted" and source == "none"):
        st.info("No run of this kind yet: press **Run it live** below; the figure appears when it finishes.",
                icon="🎟️")
    cols = st.columns([1, 2], gap="medium") if len(figs) == 2 else [st.container() for _ in figs]
    for n, ((_name, fig), col) in enumerate(zip(figs, cols)):
        present.chart(fig, key=f"lesson.fig.{step.key}.{n}", container=col, grow=fig.layout.meta != "sized")
    if note and step.figure in ("pareto", "planted"):       # what the data shows, said where the class reads
        st.markdown(f"**What these runs show:** {md.esc(note)}")
    elif note:
        st.caption(md.esc(note))
    if SOURCE_TEXT[source]:
        st.caption(SOURCE_TEXT[source])


figure_view()

st.success(f"**What to notice:** {md.esc(step.notice)}", icon="👀")
st.info(f"**Question for the class:** {md.esc(step.question)}", icon="🙋")

# ---------------------------------------------------------------- run it live

try:
    live = ls.live_config(step, every, mnist_available(default_data_dir()), user, launched)
    live_err = None if live is not None else ("this step needs a finished LeNet ticket (and, for the pack's, the "
                                              "MNIST files on this server)")
except Exception as e:  # noqa: BLE001 - a ConfigError, readable
    live, live_err = None, str(e)
src_id = live.random_from or live.reinit_from if live is not None else None
if src_id and not (state.store().run_dir(src_id) / "ticket.pt").is_file():
    # the class pack ships no weights, so a control of its ticket cannot rewind: make your own ticket first
    live, live_err = None, ("the class pack's ticket has no saved weights to rewind to; run step 5 live first, "
                            "and its ticket takes the pack's place here")
c1, c2 = st.columns([1, 3], vertical_alignment="center")
if c1.button("▶ Run it live", key=f"lesson.live.{step.key}", type="primary", disabled=live is None,
             help="Queues this step's small experiment in the background. When it finishes, the figure above "
                  "shows your run instead of the class pack's."):
    try:
        ids = backend.submit([live], home, owner=user)
    except backend.BackendError as e:
        st.error(md.esc(e))
    else:
        st.session_state["lesson.launched"] = [*launched, ids[0]]
        if ids.reused:
            said = data.reuse_text(state.store().get_run(ids[0]), user) + " The figure shows it."
            st.session_state.setdefault("lesson.reused", {})[step.key] = said
            st.toast(said)
        else:
            st.toast(f"Queued {ids[0]}: the figure switches to it when it finishes")
        st.rerun()
c2.caption(f"Queues one run: {md.esc(step.live_label)}." if live is not None else
           f"Not available: {md.esc(live_err)}.")

nav(i, "bottom")

# ---------------------------------------------------------------- handout

with st.expander("Handout: this step (or several) as PNGs and one HTML page"):
    chosen = st.multiselect("Steps in the handout", [s.key for s in STEPS], default=[step.key],
                            format_func=lambda k: f"{STEPS.index(ls.BY_KEY[k]) + 1}. {ls.BY_KEY[k].title}",
                            key="lesson.handout.steps")

    def handout_zip() -> bytes:
        """Built on the click only: drawing every chosen step's figures on each rerun was wasted."""
        return handout.build([section(ls.BY_KEY[k]) for k in chosen])[0]

    def section(s) -> handout.Section:
        """A step as the app shows it: its number, figures, key numbers and what its runs show."""
        figs, nums, _source, shows = build(s, every)
        return handout.Section(s.title, s.text, s.notice, s.question, figs, number=STEPS.index(s) + 1,
                               numbers=[(label, str(value), detail) for label, value, detail in nums], shows=shows)

    st.download_button("⬇ Download the handout (zip: PNGs + handout.html)",
                       data=handout_zip, file_name="lottery-lab-handout.zip",
                       mime="application/zip", key="lesson.handout", disabled=not chosen, on_click="ignore",
                       help="One PNG per figure (plotly's static export) and handout.html with the figures and "
                            "the step texts. Each chart's own camera button saves that chart alone.")
