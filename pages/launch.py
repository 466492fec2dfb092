"""Launch: configure a run (or a sweep over λ and seeds), see what it will cost, queue it."""

import json

import streamlit as st

from engine.config import PRESETS
from engine.data import dataset_info
from ui import backend, data, estimate, identity, md, state, widgets

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


# ---- where the form starts from: a run to duplicate, a preset (or a preset pair such as
# "IMP vs concave": one form per run, one after the other), or the offline default
source_note = None
wanted = [p for p in str(qp.get("preset", "")).split(",") if p]
if "from" in qp:
    src = state.get_run(qp["from"])
    cfg = data.duplicate_config(src) if src else None
    if cfg is None:
        st.warning(f"Run {md.code(qp['from'])} is not in the store or its config cannot be read; starting from the "
                   f"digits preset instead.")
        form.load(PRESETS["digits"], "preset:digits")
    else:
        form.load(cfg, f"run:{src['id']}")
        source_note = f"Duplicating **{md.esc(data.run_label(src))}** — change what you want, then launch a new run."
    wanted = []
elif wanted and all(p in PRESETS for p in wanted):
    form.load(PRESETS[wanted[0]], f"preset:{wanted[0]}")
else:
    if wanted:
        st.warning(f"No preset called {md.code(','.join(wanted))}; known: {md.esc(', '.join(PRESETS))}.")
        wanted = []
    if st.session_state.get("cfg._source") is None:
        form.load(PRESETS["digits"], "preset:digits")
forms = [form]
for i, name in enumerate(wanted[1:], start=2):
    extra = widgets.ConfigForm(f"cfg{i}")
    extra.load(PRESETS[name], f"preset:{name}")
    forms.append(extra)


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
    elif len(forms) > 1:
        st.info(f"This preset is {len(forms)} runs: {', '.join(md.code(n) for n in wanted)}. Each has its own form "
                f"below, one after the other; Launch queues all of them.")
    else:
        source = (st.session_state.get('cfg._source') or 'preset:digits').split(':', 1)[1]
        st.caption(f"Form loaded from: {md.code(source)}")

# sources for random_from / warm_start / reinit_from: class-pack examples keep no weights
done_runs = [r for r in all_runs if r.get("status") == "done" and r.get("config") and not r.get("example")]
gpu_names = backend.gpus()
results = []
for i, f in enumerate(forms):
    if len(forms) > 1:
        st.header(f"Run {i + 1} of {len(forms)}: {wanted[i]}", divider="blue")
    results.append(f.render(done_runs=done_runs, gpu_names=gpu_names))
configs = [c for r in results for c in r.configs]
ok = all(r.ok for r in results)

st.subheader("4 · Cost and launch", divider="gray")
equal: list[dict | None] = [backend.find_equal(c, home, state.store()) for c in configs] if ok else []
machine = estimate.machine_now()


def until_results(cfgs: list) -> estimate.LaunchEstimate:
    """When each of `cfgs` would have its result if launched now: the runs ahead, the load."""
    return estimate.launch_estimate([c.to_dict() for c in cfgs], all_runs, machine, bool(gpu_names))


if ok:
    n = len(configs)
    ests = []
    for r in results:
        first = r.configs[0].to_dict()
        try:
            prunable = prunable_weights(first["model"], first["dataset"], len(first["classes"]) if first["classes"]
                                        else None)
        except Exception:  # noqa: BLE001 - the count is informative only
            prunable = None
        ests.append((estimate.estimate(first, bool(gpu_names), all_runs, prunable=prunable), len(r.configs),
                     prunable))
    est = ests[0][0]
    todo = [c for c, e in zip(configs, equal) if e is None]      # what a launch would really queue
    launch = until_results(todo or configs)
    seconds = sum(launch.per_run) / len(launch.per_run)          # per run, under the current load
    c1, c2 = st.columns(2)
    c3, c4 = st.columns(2)          # two a row: "≈ 1 min 05 s" fits at 1024×768
    c1.metric("Runs", len(todo) if len(todo) != n else n,
              help="One run per combination of λ values and seeds" + (", per form." if len(forms) > 1 else ".")
              + (f" {n - len(todo)} of the {n} equal earlier runs and are not queued again." if len(todo) != n
                 else ""))
    if launch.paced:
        load_note = (f"this store's recent runs went ×{launch.slowdown:.1f} the time the throughput model "
                     f"gives an idle machine, so a run without earlier runs of its kind is counted that much slower")
    elif launch.slowdown > 1.05:
        load_note = (f"no run went lately, and the load average is {machine.load1:.1f} on {machine.cores} cores: "
                     f"counted ×{launch.slowdown:.1f} slower than idle")
    else:
        load_note = f"the machine is idle enough (load {machine.load1:.1f} on {machine.cores} cores)"
    c2.metric("Time per run", f"≈ {data.fmt_duration(seconds)}",
              help=f"{md.esc(est.basis).capitalize()}, and {md.esc(load_note)}. Between "
                   f"{data.fmt_duration(min(e.low for e, _, _ in ests) * launch.slowdown)} and "
                   f"{data.fmt_duration(max(e.high for e, _, _ in ests) * launch.slowdown)}.")
    ahead = (f"{launch.running} running and {launch.queued} queued ahead, {machine.cap} at a time"
             if launch.running or launch.queued else "nothing ahead in the queue")
    if not todo:
        c3.metric("Results in", "already done" if all(e["status"] == "done" for e in equal) else "on their way",
                  help="Every config equals an earlier run (below); launching shows it instead of training again.")
    elif launch.until is None:
        c3.metric("Results in", "queue paused", help="LOTTERY_MAX_RUNS is 0: nothing starts until it is raised.")
    else:
        c3.metric("Results in", f"≈ {data.fmt_duration(max(launch.until))}",
                  help=f"From now until the last result, counting {ahead}; the estimate is recorded with each "
                       f"run and compared with the actual time on the Runs page.")
    c4.metric(f"{'GPU' if est.device == 'gpu' else 'CPU'} time", f"{seconds * len(todo) / 3600:.2g} h",
              help="Device-hours in total.")
    for e, k, prunable in ests:
        bits = [f"{e.epochs} epochs of training per run", f"estimated from {e.basis}"]
        if prunable:
            bits.insert(0, f"{prunable:,} prunable weights")
            bits.append(f"≈ {estimate.fmt_bytes(e.disk_bytes * k)} of mask snapshots and checkpoints")
        st.caption(" · ".join(md.esc(b) for b in bits))
    if est.device == "cpu" and seconds > 3600:
        st.warning("This will take hours on a CPU. Consider a GPU machine, or fewer epochs to try things out.")
    with st.expander(f"The config{'s' if n > 1 else ''} as JSON (what `python -m engine run --config` takes)"):
        st.code(json.dumps([c.to_dict() for c in configs[:20]] if n > 1 else configs[0].to_dict(), indent=2),
                language="json")
        if n > 20:
            st.caption(f"… and {n - 20} more.")
else:
    errs = [e for r in results for e in (r.errors or [])]
    labels = {k: v for r in results for k, v in (r.labels or {}).items()}
    keys = list(dict.fromkeys(labels.get(e.key, e.key) for e in errs)) or \
        [labels.get(r.error_key, r.error_key) for r in results if r.error_key]
    first_err = next((r.error for r in results if r.error), "")
    st.error(f"Cannot launch yet — fix {'this value' if len(keys) == 1 else f'these {len(keys)} values'} "
             f"(each message sits next to its field): **{md.esc(', '.join(k for k in keys if k))}**. First: "
             f"{md.esc(first_err)}", icon="✋")


def launch(again: bool) -> None:
    """Queue the configs (an equal earlier run stands in for its config unless `again`),
    with the estimate shown here recorded per run, and open them on Runs."""
    todo = [i for i, e in enumerate(equal) if again or e is None]
    estimates: list[float | None] = [None] * len(configs)
    for i, t in zip(todo, (until_results([configs[i] for i in todo]).until or []) if todo else []):
        estimates[i] = t
    try:
        ids = backend.submit(configs, home, owner=identity.current_user(), again=again, estimates=estimates)
    except backend.BackendError as e:
        st.error(md.esc(e))
        return
    widgets.note_reused(ids)
    state.set_selection(ids)
    st.switch_page("pages/runs.py", query_params={"runs": ",".join(ids)})


found = [e for e in equal if e is not None]
if found:
    word = {"done": "finished", "running": "is running", "queued": "is queued"}
    with st.container(border=True, key="launch.equal"):
        if len(configs) == 1:
            r = found[0]
            label_ = data.run_label(r)
            id_ = "" if r["id"] in label_ else f" ({md.code(r['id'])})"      # the label may end with it
            whose = (f"{md.esc(r['owner'])}'s run" if r.get("owner") and r["owner"] != identity.current_user()
                     else "run")
            st.info(f"This config equals {whose} **{md.esc(label_)}**{id_}, which "
                    f"{word.get(r['status'], r['status'])}: launching shows that run instead of training it again "
                    f"(name, device and precision are not part of a run's identity; the seed is).",
                    icon=":material/content_copy:")
        else:
            done = sum(r["status"] == "done" for r in found)
            st.info(f"{len(found)} of these {len(configs)} runs equal earlier runs ({done} finished, "
                    f"{len(found) - done} queued or running): launching queues only the other "
                    f"{len(configs) - len(found)} and shows all {len(configs)}.", icon=":material/content_copy:")
        b1, b2 = st.columns(2)
        if b1.button("Open it on Runs" if len(found) == 1 else f"Open the {len(found)} on Runs", key="launch.open",
                     icon=":material/visibility:", width="stretch"):
            ids = [r["id"] for r in found]
            state.set_selection(ids)
            st.switch_page("pages/runs.py", query_params={"runs": ",".join(ids)})
        if b2.button("Run again anyway", key="launch.again", icon=":material/replay:", width="stretch",
                     help="Train a new run of every config even where an equal one exists (e.g. to measure "
                          "run-to-run noise on the same seed)."):
            launch(again=True)

label = f"Launch {len(configs)} runs" if len(configs) > 1 else "Launch run"
if ok and configs and all(e is not None for e in equal):        # nothing to train: say what the click does
    label = "Open the earlier run" + ("s" if len(configs) > 1 else "") + " (nothing to train)"
too_many = widgets.over_room(home, configs, equal) if ok else None     # a class server's per-person cap, said first
if too_many:
    st.warning(md.esc(too_many), icon="✋")
if st.button(label, type="primary", disabled=not ok or bool(too_many), key="launch.go",
             help="Queue the run(s) for a background worker and open the monitor."):
    launch(again=False)
