"""Launch: configure a run (or a sweep over λ and seeds), see what it will cost, queue it."""

import json

import streamlit as st

from engine.config import PRESETS
from engine.data import dataset_info
from ui import backend, data, estimate, state, widgets

state.intro("🚀 Launch",
            "Set up a run — or a sweep over λ values and seeds — and queue it. Every value is checked by the same "
            "validation as the command line before anything starts; the runs then train in the background, so you "
            "can close the browser.")

home = state.home()
all_runs = state.runs()
qp = st.query_params
form = widgets.ConfigForm("cfg")


@st.cache_data(show_spinner=False, max_entries=64)
def prunable_weights(model: str, dataset: str, n_classes: int | None) -> int | None:
    """Number of prunable weights (built on the meta device: no memory, no training)."""
    import torch

    from engine import masking
    from engine.models import build_model
    info = dataset_info(dataset)
    with torch.device("meta"):
        m = build_model(model, info.in_shape, n_classes or info.num_classes)
    return sum(layer.weight.numel() for _, layer in masking.prunable_layers(m))


# ---- where the form starts from: a run to duplicate, a preset, or the offline default
source_note = None
if "from" in qp:
    src = state.get_run(qp["from"])
    cfg = data.duplicate_config(src) if src else None
    if cfg is None:
        st.warning(f"Run `{qp['from']}` is not in the store or its config cannot be read; starting from the "
                   f"digits preset instead.")
        form.load(PRESETS["digits"], "preset:digits")
    else:
        form.load(cfg, f"run:{src['id']}")
        source_note = f"Duplicating **{data.run_label(src)}** — change what you want, then launch a new run."
elif qp.get("preset") in PRESETS:
    form.load(PRESETS[qp["preset"]], f"preset:{qp['preset']}")
else:
    if "preset" in qp:
        st.warning(f"No preset called `{qp['preset']}`; known: {', '.join(PRESETS)}.")
    if st.session_state.get("cfg._source") is None:
        form.load(PRESETS["digits"], "preset:digits")


def _start_from():
    choice = st.session_state["launch.start"]
    if choice:
        st.query_params.clear()
        st.query_params["preset"] = choice
        st.session_state["cfg._source"] = None   # reload even if it is the preset loaded before


c1, c2 = st.columns([1, 2])
with c1:
    st.selectbox("Start from a preset", [""] + list(PRESETS), key="launch.start", on_change=_start_from,
                 format_func=lambda p: "— keep the form as it is" if not p else p,
                 help="Fill the whole form from one of the built-in presets (you can still change everything).")
with c2:
    if source_note:
        st.info(source_note)
    else:
        st.caption(f"Form loaded from: `{(st.session_state.get('cfg._source') or 'preset:digits').split(':', 1)[1]}`")

done_runs = [r for r in all_runs if r.get("status") == "done" and r.get("config")]
gpu_names = backend.gpus()
res = form.render(done_runs=done_runs, gpu_names=gpu_names)

st.subheader("4 · Cost and launch", divider="gray")
if res.ok:
    first = res.configs[0].to_dict()
    n = len(res.configs)
    try:
        prunable = prunable_weights(first["model"], first["dataset"], len(first["classes"]) if first["classes"]
                                    else None)
    except Exception:  # noqa: BLE001 - the count is informative only
        prunable = None
    est = estimate.estimate(first, bool(gpu_names), all_runs, prunable=prunable)
    slots = max(1, len(gpu_names)) if est.device == "gpu" else 1
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("Runs", n, help="One run per combination of λ values and seeds.")
    c2.metric("Time per run", f"≈ {data.fmt_duration(est.seconds)}",
              help=f"Between {data.fmt_duration(est.low)} and {data.fmt_duration(est.high)}: {est.basis}.")
    c3.metric("All runs", f"≈ {data.fmt_duration(est.seconds * n / slots)}",
              help=f"{slots} run{'s' if slots > 1 else ''} at a time on this machine; the rest wait in the queue.")
    c4.metric(f"{'GPU' if est.device == 'gpu' else 'CPU'} time", f"{est.device_hours(n):.2g} h",
              help=f"Device-hours in total ({est.epochs} epochs of training per run).")
    bits = [f"{est.epochs} epochs of training per run", f"estimated from {est.basis}"]
    if prunable:
        bits.insert(0, f"{prunable:,} prunable weights")
        bits.append(f"≈ {estimate.fmt_bytes(est.disk_bytes * n)} of mask snapshots and checkpoints")
    st.caption(" · ".join(bits))
    if est.device == "cpu" and est.seconds > 3600:
        st.warning("This will take hours on a CPU. Consider a GPU machine, or fewer epochs to try things out.")
    with st.expander(f"The config{'s' if n > 1 else ''} as JSON (what `python -m engine run --config` takes)"):
        st.code(json.dumps([c.to_dict() for c in res.configs[:20]] if n > 1 else first, indent=2), language="json")
        if n > 20:
            st.caption(f"… and {n - 20} more.")
else:
    keys = list(dict.fromkeys(e.key for e in res.errors)) or [res.error_key]
    st.error(f"Cannot launch yet — fix {'this value' if len(keys) == 1 else f'these {len(keys)} values'} "
             f"(each message sits next to its field): **{', '.join(keys)}**. First: "
             f"{widgets.md_escape(res.error)}", icon="✋")

label = f"Launch {len(res.configs)} runs" if len(res.configs) > 1 else "Launch run"
if st.button(label, type="primary", disabled=not res.ok, key="launch.go",
             help="Queue the run(s) for a background worker and open the monitor."):
    try:
        ids = backend.submit(res.configs, home)
    except backend.BackendError as e:
        st.error(str(e))
    else:
        state.set_selection(ids)
        st.switch_page("pages/runs.py", query_params={"runs": ",".join(ids)})
