"""Pixel masks: the learned mask of logistic regression (or LeNet's first layer) as a
picture, live; digits seen through it (the paper's Fig. 4); kept pixels and accuracy
against λ for ℓ1 and log (the paper's Fig. 3)."""


import streamlit as st

from engine.classpack import spec
from engine.config import PRESETS, RunConfig
from engine.data import dataset_info
from ui import backend, data, figures, identity, md, names, present, state, widgets

state.intro("🖼️ Pixel masks",
            "In logistic regression every weight belongs to one input pixel, so the learned mask is a picture of "
            "where the classifier is allowed to look. Watch it form epoch by epoch, see digits through it (the "
            "paper's Fig. 4) and compare ℓ1 with log across λ (Fig. 3). For LeNet the picture shows, for each "
            "pixel, the share of first-layer units still connected to it.")

home = state.home()
all_runs = state.runs()
capable = [r for r in all_runs if data.pixel_capable(r)]
if not capable:
    st.info("No pixel-mask run yet. Pixel masks exist for logistic regression and LeNet-300-100 on MNIST, "
            "Fashion-MNIST or digits. The 8-pixel MNIST preset takes a few seconds.", icon="🖼️")
    c1, c2, _ = st.columns([1, 1, 2])
    for col, name, label in ((c1, "mnist-8-pixel", "Launch the 8-pixel MNIST preset"),
                             (c2, "digits", "Launch the offline digits preset")):
        if col.button(label, key=f"pix.launch.{name}", type="primary" if name == "digits" else "secondary"):
            try:
                ids = backend.submit([RunConfig.from_dict(dict(PRESETS[name]))], home, owner=identity.current_user())
            except backend.BackendError as e:
                st.error(md.esc(e))
            else:
                state.set_selection(ids)
                st.rerun()
    st.stop()

EIGHT_PIXEL = {k: PRESETS["mnist-8-pixel"][k] for k in ("model", "dataset", "classes", "method", "regularizer", "lam")}


def eight_pixel(r: dict) -> bool:
    c = data.cfg_of(r)
    return r.get("status") == "done" and all(c.get(k) == v for k, v in EIGHT_PIXEL.items())


# With nothing selected, open on the newest logistic-regression run: its mask is the picture. The
# presentation view opens on the 8-pixel mask the class talks about (the student's own, else the pack's).
eight = sorted((r for r in capable if eight_pixel(r)), key=lambda r: bool(r.get("example")))
if present.active() and eight:
    prefer = lambda r: r["id"] == eight[0]["id"]  # noqa: E731
else:
    prefer = lambda r: data.cfg_of(r).get("model") == "logreg"  # noqa: E731
run = state.pick_run(all_runs, "Run", key="pix.run", filter_fn=data.pixel_capable, prefer_fn=prefer,
                     help="A logistic-regression or LeNet run on MNIST, Fashion-MNIST or digits.")
cfg = data.cfg_of(run)
in_shape = dataset_info(cfg["dataset"]).in_shape
tau = float(cfg.get("threshold", 0.5))
what = "pixels" if cfg["model"] == "logreg" else "first-layer weights"


@st.fragment(run_every=state.LIVE_SECONDS if run.get("status") in data.ACTIVE else None)
@state.guard("The pixel mask could not be drawn")
def mask_view(run_id: str):
    fresh = state.reread(run_id)
    if fresh is None:
        return
    tags = state.snapshots_of(fresh)
    per_epoch = data.ordered_tags(tags, phases=("search", "train"))
    ticket = data.final_ticket_tag(tags)
    if not per_epoch and not ticket:
        st.info("No mask snapshot yet: the first one is written when the first epoch ends."
                if fresh.get("status") in data.ACTIVE else "This run saved no mask snapshots.")
        return
    big = present.active()
    frames = [(names.snapshot_label(t), data.pixel_map(state.masks_of(run_id, t), in_shape)) for t in per_epoch]
    if ticket:
        masks = state.masks_of(run_id, ticket)
        binary = data.pixel_map(masks, in_shape)
        first = next(iter(masks.values()))
        used, total = data.pixels_used(masks)
        s = data.summary_of(fresh)
        # Each metric half the page's width, above the pictures: at 1024×768 in a narrow column they
        # were cut off ("4 o…", "99.…"); the page CSS also wraps rather than cuts.
        c1, c2 = st.columns(2)
        c1.metric(f"Pixels used (of {total:,})", f"{used:,}",
                  help="Input pixels with at least one kept weight (first layer). "
                       f"{int((first != 0).sum()):,} of {first.size:,} first-layer weights are kept.")
        if s.get("test_accuracy") is not None:
            c2.metric("Test accuracy", f"{s['test_accuracy']:.2%}")
    left, right = st.columns(2, gap="medium")
    with left:
        if ticket:
            # No colour bar (the ticket is binary: yellow kept, dark pruned), so the square takes the
            # column's whole width: at least 250 px at 1024×768.
            fig = figures.pixel_figure(binary, f"The ticket ({md.plotly(names.snapshot_label(ticket))})",
                                       height=560 if big else 380, colorbar=False)
            present.chart(fig, "pix.ticket", grow=False)
            st.caption("Yellow: a kept pixel. Dark: a pruned one.")
        else:
            st.info("The binary ticket appears here once the search ends and the mask is thresholded.")
    with right:
        if frames:
            fig = figures.pixel_animation(frames, f"Mask while it is learned ({len(frames)} snapshots)",
                                          height=600 if big else 420)
            present.chart(fig, "pix.anim", grow=False)
            st.caption("Press ▶ to play the search epoch by epoch, or drag the slider. Yellow: m near 1 (the "
                       "pixel is used), dark: m near 0 (ignored).")
    mask_img = binary if ticket else (frames[-1][1] > tau).astype(float)
    st.markdown("##### Digits through the mask")
    try:
        samples = state.sample_images(cfg["dataset"], cfg.get("classes"), 8)    # else the class pack's few
    except Exception as e:  # noqa: BLE001 - e.g. MNIST files missing here, and no pack samples
        st.info(f"Sample images are not available here: {md.esc(e)}")
        return
    fig = figures.masked_samples_figure(samples[: 4 if big else 6], mask_img, height=560 if big else 360,
                                        mark_px=22 if big else 13, plot_px=900 if big else 560)
    present.chart(fig, "pix.samples", grow=False)
    st.caption("Top: test images. Bottom: the same image faded, with every pixel the mask keeps marked — red: a "
               "kept pixel with ink in this image, blue ring: a kept pixel that is blank here. The classifier sees "
               "only the marked pixels. On MNIST 0-vs-1 a handful of well-placed pixels is enough to tell 0 from 1.")


mask_view(run["id"])

st.subheader("Kept pixels and accuracy against λ: ℓ1 vs log", divider="gray")
same = lambda r: (data.cfg_of(r).get("model") == cfg["model"] and data.cfg_of(r).get("dataset") == cfg["dataset"]  # noqa: E731
                  and data.cfg_of(r).get("classes") == cfg.get("classes") and data.cfg_of(r).get("method") == "concave"
                  and data.cfg_of(r).get("target_sparsity") is None)


def sweep_key(r: dict) -> tuple:
    return data.cfg_of(r).get("regularizer"), data.cfg_of(r).get("lam")


# the student's runs, and the pack's at the (penalty, λ) points they have not run
family = data.merge_examples([r for r in all_runs if same(r)], sweep_key)
sweep_live = any(r.get("status") in data.ACTIVE for r in family)


@st.fragment(run_every=state.LIVE_SECONDS * 2 if sweep_live else None)
@state.guard("The λ sweep could not be drawn")
def sweep_view():
    shown = data.merge_examples([r for r in state.runs() if same(r)], sweep_key)
    state.examples_note(shown, "λ-sweep runs")
    n_pack = sum(bool(r.get("example")) for r in shown)
    if 0 < n_pack < len(shown):
        st.caption(f"Your {len(shown) - n_pack} run(s), with the class pack's {n_pack} at the penalties and λ "
                   f"values you have not run.")
    pts = data.tradeoff_points(shown)
    pts = pts[pts["regularizer"].isin(["l1", "log"])]
    present.chart(figures.lam_sweep_figure(pts, what), "pix.sweep")
    st.markdown("##### Which penalty is better: accuracy against kept " + what)
    present.chart(figures.pareto_figure(pts, what), "pix.pareto")
    st.caption("Equal λ is not a fair comparison (each penalty prunes at its own rate), equal size is: every "
               "dot is a finished run, the line is each penalty's frontier — the best test accuracy any of its "
               "runs reached with at most that many " + what + ". The higher line at the left wins.")
    if pts.empty or pts["regularizer"].nunique() < 2 or pts["lam"].nunique() < 3:
        st.caption("Fewer than three λ values for both penalties so far: run the sweep below to fill the plot.")
    else:
        st.caption("Read it as the paper's Fig. 3: how many pixels each penalty keeps at each λ, and where accuracy "
                   "starts to fall. The concave penalty's masks are binary before thresholding (see Mask "
                   "evolution); ℓ1's often are not, so its kept count depends more on τ.")


sweep_view()
LAMS = spec.PIXEL_LAMS          # the class pack's sweep is the one this button queues
c1, c2 = st.columns([2, 3])       # [1, 3] cut the button label off at 1024×768 ("Run the λ swee…")
base = {k: v for k, v in cfg.items() if k not in ("lam", "regularizer", "seed", "name", "target_sparsity")}
try:
    sweep_cfgs = backend.expand(base, {"regularizer": ["l1", "log"], "lam": LAMS}, [int(cfg.get("seed", 0))])
except Exception as e:  # noqa: BLE001 - a ConfigError, readable
    sweep_cfgs = []
    st.error(md.esc(e))
with c1:
    widgets.sweep_button(f"Run the λ sweep ({2 * len(LAMS)} runs)", sweep_cfgs, "pix.sweep.go", home,
                         what="λ sweep", per_run_s=data.summary_of(run).get("wall_seconds"),
                         help="ℓ1 and log at λ = 0.5 … 50 with this run's other settings, one seed. Runs queue in "
                              "the background; the plot fills in as they finish. Disabled while this sweep is "
                              "queued or running.")
c2.caption(f"Uses {cfg['model']} on {cfg['dataset']}" + (f" (classes {cfg['classes']})" if cfg.get("classes") else "")
           + f", {cfg.get('epochs')} search + {cfg.get('retrain_epochs') or cfg.get('epochs')} retrain epochs.")
