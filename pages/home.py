"""Home: what the method is, the pipeline, presets one click away, the machine's state."""

import streamlit as st

from engine.config import ConfigError
from engine.data import default_data_dir, mnist_available
from ui import backend, data, estimate, figures, identity, md, state, widgets

state.intro("🎟️ Lottery Lab",
            "Find <b>lottery tickets</b> — sparse subnetworks that train as well as the full network — by "
            "learning a mask with a <b>concave penalty</b>, and compare them with iterative magnitude pruning.")

home = state.home()
problem = backend.pump(home)          # start queued runs, notice dead workers
all_runs = state.runs()
df = data.runs_frame(all_runs)

left, right = st.columns([3, 2], gap="large")
with left:
    st.markdown(
        "Each weight θ of the network gets a mask entry m ∈ [0, 1]. The **search** trains θ and m together on "
        "the task loss plus **λ·R(m)**: R penalises masks that keep many weights. With ℓ1 every entry shrinks at "
        "the same rate; a **strictly concave** R such as log(m + ε) pushes small entries to 0 much harder than "
        "large ones, so the mask comes out nearly binary. We then **threshold** it (keep m > τ), **rewind** the "
        "surviving weights to their initial values and **retrain** them with the mask fixed. The result — "
        "mask plus initial weights — is a ticket; a good one matches the dense network with a few % of the weights.")
gpu_names = backend.gpus()


@st.fragment(run_every=state.LIVE_SECONDS * 2)
@state.guard("The machine's state could not be read")
def machine():
    snap = state.live()                   # shared by every session
    runs_now = snap.runs if state.show_examples() else [r for r in snap.runs if not r.get("example")]
    df = state.monitor_frame([r["id"] for r in runs_now], snap)
    st.markdown("##### This machine")
    free, total = backend.disk_free(home)
    # Plain lines, not big metrics: side by side in this column they were cut off ("CP…", "77.…").
    device = (f"{len(gpu_names)} GPU" + ("s" if len(gpu_names) != 1 else "") + f" ({', '.join(gpu_names)})"
              if gpu_names else f"CPU × {backend.cpu_count()} (no NVIDIA GPU found)")
    st.markdown(f"**Device:** {md.esc(device)}  \n**Free disk:** {estimate.fmt_bytes(free)} of "
                f"{estimate.fmt_bytes(total)}")
    counts = df["status"].value_counts() if not df.empty else {}
    c1, c2, c3 = st.columns(3)
    c1.metric("Running", int(counts.get("running", 0)))
    c2.metric("Queued", int(counts.get("queued", 0)))
    c3.metric("Done", int(counts.get("done", 0)))
    if problem:
        st.warning(md.esc(problem))
    active = df[df["status"].isin(data.ACTIVE)] if not df.empty else df
    if not active.empty:
        for _, r in active.head(5).iterrows():
            st.progress(min(1.0, float(r["progress"])), text=f"{md.esc(r['label'])} · {md.esc(data.status_line(r))}")
        st.page_link("pages/runs.py", label="Watch on Runs", icon=":material/monitoring:")
    elif not runs_now:
        st.info("No runs yet. Pick a preset below — the digits one finishes in about 10 seconds on a laptop CPU.")
    else:
        st.caption(f"{len(runs_now)} runs in the store, none running.")
        st.page_link("pages/runs.py", label="Open Runs", icon=":material/monitoring:")


with right:
    machine()
st.html(figures.pipeline_html())

st.subheader("Presets, one click away", divider="gray")
have_mnist = mnist_available(default_data_dir())
CARDS = [
    ("digits", ["digits"], "Offline digits ticket",
     "LeNet-300-100 on scikit-learn's 8×8 digits with the log penalty. Works offline; about 10 s on a CPU.", None),
    ("mnist-8-pixel", ["mnist-8-pixel"], "8-pixel MNIST mask",
     "Logistic regression on MNIST 0-vs-1 learns to look at about 8 pixels and keeps > 99.5 % accuracy "
     "(the paper's Fig. 3–4). A few seconds.",
     None if have_mnist else f"needs MNIST: downloaded on first use, or put the files in "
                             f"{default_data_dir()}/MNIST/raw"),
    ("lenet", ["lenet300-imp", "lenet300-concave"], "IMP vs concave on LeNet-300-100",
     "Two runs on MNIST: IMP (7 rounds × 20 %) and one concave search aimed at 95 % sparsity. Compare them on "
     "Trade-offs: similar accuracy, the concave one at a fraction of the time.",
     None if have_mnist else "needs MNIST (see above)"),
    ("families", ["lenet300-imp", "lenet300-concave", "lenet300-cs", "lenet300-synflow"],
     "Four families on LeNet-300-100",
     "IMP, concave-log, continuous sparsification and SynFlow (pruning at init), all near 95 % sparsity on "
     "MNIST. Compare accuracy and cost on Trade-offs, and where each keeps its weights on Mask evolution.",
     None if have_mnist else "needs MNIST (see above)"),
    ("resnet", ["resnet20-cifar10"], "ResNet-20 on CIFAR-10 (GPU)",
     "The paper's convolutional setting: 30 search + 60 retrain epochs with SGD and a cosine schedule.",
     None if gpu_names else "no GPU on this machine: this takes many hours on a CPU"),
]
machine = estimate.machine_now()       # once for every card: it reads the load of the whole machine
cols = [c for _ in range(0, len(CARDS), 2) for c in st.columns(2)]     # two a row: buttons fit at 1024×768
for col, (key, names, title, text, warn) in zip(cols, CARDS):
    with col, st.container(border=True):
        st.markdown(f"**{title}**")
        st.caption(text)
        try:
            cfgs = [widgets.preset_config(n) for n in names]
        except ConfigError as e:
            st.error(f"Preset is invalid: {md.esc(e)}")
            continue
        # until the last result: the runs ahead in the queue and the load counted (ui/estimate.py)
        soon = estimate.launch_estimate([c.to_dict() for c in cfgs], all_runs, machine, bool(gpu_names))
        where = "this GPU" if estimate.estimate(cfgs[0].to_dict(), bool(gpu_names)).device == "gpu" else "this CPU"
        st.caption(f"queue paused ({where})" if soon.until is None else
                   f"results in ≈ {data.fmt_duration(max(soon.until))} on {where}")
        if warn:
            st.caption(f"⚠️ {md.esc(warn)}")
        too_many = widgets.over_room(home, cfgs)     # a class server's per-person cap, said before the click
        if too_many:
            st.caption(f"⚠️ {md.esc(too_many)} Customise picks fewer.")
        b1, b2 = st.columns(2)
        if b1.button("Launch", key=f"preset_{key}", type="primary", width="stretch", disabled=bool(too_many),
                     help=f"Queue {len(cfgs)} run{'s' if len(cfgs) > 1 else ''} now and open the monitor."):
            try:
                ids = backend.submit(cfgs, home, owner=identity.current_user(),
                                     estimates=widgets.launch_estimates(cfgs, home))
            except backend.BackendError as e:
                st.error(md.esc(e))
            else:
                widgets.note_reused(ids)
                state.set_selection(ids)
                st.switch_page("pages/runs.py", query_params={"runs": ",".join(ids)})
        if b2.button("Customise", key=f"custom_{key}", width="stretch",
                     help="Open this preset in the Launch form to change it first."):
            st.switch_page("pages/launch.py", query_params={"preset": ",".join(names)})   # every run of it

if all_runs:
    st.subheader("Latest runs", divider="gray")
    recent = df.head(5).assign(remaining=lambda d: d["remaining"].map(data.fmt_pct_or_missing),
                               test_accuracy=lambda d: d["test_accuracy"].map(data.fmt_pct_or_missing))
    st.dataframe(recent[["state", "label", "progress", "remaining", "test_accuracy"]], hide_index=True,
                 width="stretch",
                 column_config={"state": "status", "label": st.column_config.TextColumn("run", width="medium"),
                                "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1),
                                "remaining": st.column_config.TextColumn("remaining"),
                                "test_accuracy": st.column_config.TextColumn("test acc")})
