"""Runs: every run with its status and progress, live; curves, checks and actions for the selected ones."""


import pandas as pd
import streamlit as st

from engine.store import STATUSES
from ui import backend, data, deploy_panel, estimate, figures, identity, md, names, state, widgets

state.intro("📈 Runs",
            "Every run in the store, updated live while they train. Select runs to compare their curves and see "
            "their correctness checks; the selection is kept in the address bar, so a reload or a shared link "
            "shows the same view.")

home = state.home()
problem = backend.pump(home)
all_runs = state.runs()
if problem:
    st.caption(f"⚠️ {md.esc(problem)}")
if not all_runs:
    st.info("No runs yet. Launch one — the offline digits preset takes about 10 seconds on a CPU — and it will "
            "appear here while it trains.", icon="🎟️")
    c1, c2, _ = st.columns([1, 1, 3])
    c1.page_link("pages/launch.py", label="Configure a run", icon=":material/rocket_launch:")
    c2.page_link("pages/home.py", label="Presets on Home", icon=":material/home:")
    st.stop()

user = identity.current_user()
mine_only = False
if user:        # "My runs" first: on a shared server a person's own runs are what they came for
    rights = "as a teacher you may manage any" if identity.is_teacher(user) else "you may manage only your own"
    mine_only = st.radio("Whose runs", ["My runs", "Everyone's"], key="runs.whose", horizontal=True,
                         help=f"My runs: the runs you launched. Everyone's: every run in the store ({rights}).",
                         ) == "My runs"


def visible(runs: list[dict]) -> list[dict]:
    return [r for r in runs if mine(r)] if mine_only else runs


asked = set(state.selected_ids())     # runs a link asked for (e.g. a classmate's run that a launch reused)
# what this person's launches were given, reused or not: this session's "Run it live", and every equal
# run of someone else's that a launch of theirs reused (recorded in the store: jobs.submit)
adopted = set(st.session_state.get("lesson.launched", ())) | (set(state.store().adopted(user)) if user else set())
for said in st.session_state.pop("runs.reused", []):       # set by Launch and Home when a launch reused a run
    st.info(f"♻️ {md.esc(said)}")


def mine(r: dict) -> bool:
    # The class pack's examples are nobody's (read-only; "Everyone's" lists them); an equal run of
    # someone else's that this person's launch reused is theirs too.
    if not mine_only:
        return True
    if r.get("example"):
        return False
    return r.get("owner") == user or r["id"] in asked or r["id"] in adopted


signature = data.status_signature(visible(all_runs))
owned = any(r.get("owner") for r in all_runs)      # an owner column once anyone owns a run

f1, f2, f3 = st.columns([2, 2, 3])
with f1:
    show = st.multiselect("Show statuses", list(STATUSES), default=[], key="runs.status", placeholder="all statuses",
                          help="Filter the table by status. Empty shows every run.")
with f2:
    methods = sorted({data.cfg_of(r).get("method") for r in all_runs if data.cfg_of(r).get("method")})
    only = st.multiselect("Methods", methods, default=[], key="runs.methods", placeholder="all methods",
                          help="Filter the table by method.")
with f3:
    needle = st.text_input("Search", key="runs.search", placeholder="id, model, dataset, λ, name…",
                           help="Show only runs whose description contains this text.")


# The page's live parts — the run table, the selected runs' curves and each live run's status line
# — are drawn by ONE fragment that ticks every second (live_views, at the end), each into its own
# place on the page (a container made where it belongs). Three fragments made three script runs a
# second for every watching session, and most of a run's cost is Streamlit's own, whatever it draws.
@state.guard("The run table could not be drawn")
def run_table():
    state.pump_every(5.0)
    snap = state.live()                    # shared by every session: read it, never modify it
    everyone = snap.runs if state.show_examples() else [r for r in snap.runs if not r.get("example")]
    now = visible(everyone)
    df = state.monitor_frame([r["id"] for r in now], snap)
    counts = snap.counts if df is snap.frame else df["status"].value_counts()
    cols = [c for _ in range(2) for c in st.columns(3)]      # 3 a row: labels fit at 1024×768
    for c, s in zip(cols, ("running", "queued", "done", "failed", "cancelled", "interrupted")):
        c.metric(f"{data.STATUS_ICON[s]} {s}", int(counts.get(s, 0)))
    shown = {k: v for k, v in state.TABLE_COLUMNS.items() if owned or k != "owner"}
    reused = {r["id"]: data.owner_text(r, user, adopted) for r in now if r["id"] in adopted} \
        if owned and user and adopted else {}
    if df is snap.frame and not (show or only or needle or reused):
        view = snap.tables[owned]                  # the common case: nothing of this person's to apply
        table = snap.table_arrow(owned)            # made once for every session
    else:
        view = df[[*shown, "id", "status", "method", "note"]]
        if show:
            view = view[view["status"].isin(show)]
        if only:
            view = view[view["method"].isin(only)]
        if needle:
            view = view[view["label"].str.contains(needle, case=False, regex=False)
                        | view["note"].str.contains(needle, case=False, regex=False)]
        if reused:                             # per person: "bob (reused by you)" where this person reused it
            view = view.assign(owner=[reused.get(i, o) for i, o in zip(view["id"], view["owner"])])
        table = view[list(shown)].set_axis(list(shown.values()), axis=1)
    if mine_only:
        n_ex = sum(bool(r.get("example")) for r in everyone)
        st.caption(f"Your runs ({md.esc(user)}): {len(df)} of {len(everyone)} in the store"
                   + (f" ({n_ex} of them the class pack's examples, which are nobody's)" if n_ex else "")
                   + ". Choose “Everyone's” above to see the others.")
    st.dataframe(
        table,
        hide_index=True, width="stretch", height=min(38 + 35 * max(len(view), 1), 420),
        column_config={
            "state": st.column_config.TextColumn("status", width="small"),
            "label": st.column_config.TextColumn("run", width="large"),
            "owner": st.column_config.TextColumn("owner", width="small", help="Who launched the run"),
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent",
                                                        width="small"),
            "where": st.column_config.TextColumn("where it is", width="medium",
                                                 help="Queued: its place in the queue. Running: progress, phase "
                                                      "and time left (the same line as in the run's panel)."),
            "eta": st.column_config.TextColumn("ETA"),
            "elapsed": st.column_config.TextColumn("elapsed"),
            "remaining": st.column_config.TextColumn("remaining", help="Fraction of prunable weights in the ticket"),
            "test_accuracy": st.column_config.TextColumn("test acc"),
            "note": st.column_config.TextColumn("reason / note", width="medium"),
        })
    if len(view) < len(df):
        st.caption(f"Showing {len(view)} of {len(df)} runs.")
    if data.status_signature(now) != signature:
        # A run appeared, vanished or changed status. The table above already shows it;
        # now refresh the rest of the page (pickers, actions) around it.
        st.rerun()


table_slot = st.container()       # the run table, drawn (and redrawn every second) by live_views

st.subheader("Inspect runs", divider="gray")
chosen = state.pick_runs(all_runs, "Runs to inspect", key="runs.sel", max_selections=8, filter_fn=mine,
                         help="Pick one run to see its details, or several to compare their curves. The choice is "
                              "written into the page address (?runs=…), so you can reload or share it.",
                         placeholder="choose up to 8 runs")
head_slots: dict[str, object] = {}     # a live run's id → where its status line goes (_details fills it)


@st.fragment(run_every=state.LIVE_SECONDS)     # the table is cheap (one shared snapshot), so always on
def live_views(table_slot, curves_slot=None, head_slots=None) -> None:
    """The page's one live fragment: the run table (new runs show within ~1 s), the curves while a
    selected run is active, and the status line of each active selected run, each in its place."""
    with table_slot:
        run_table()
    if curves_slot is not None:
        with curves_slot:
            curves()
    for rid, slot in (head_slots or {}).items():
        with slot:
            _head(rid)


if not chosen:
    st.info("Select one or more runs above to see live loss, accuracy and sparsity curves, the correctness "
            "checklist and actions (cancel, resume, duplicate, delete, export).")
    live_views(table_slot)
    st.stop()
chosen_ids = [r["id"] for r in chosen]


chosen_active = any(r.get("status") in data.ACTIVE for r in chosen)


def _curve_figures(home_str: str, versions: tuple) -> tuple[bool, list, pd.DataFrame]:
    """(any metrics, the four figures, the round-by-round table) of these runs at these versions."""
    df = state.metrics_of_versions(home_str, versions)
    figs = [figures.shared_figure(f) if f is not None else None
            for f in (figures.loss_figure(df), figures.accuracy_figure(df), figures.remaining_figure(df),
                      figures.lam_figure(df) if not df.empty and df["lam"].notna().any() else None)]
    rounds = df[df["kind"] == "round"] if not df.empty else df
    if not rounds.empty:
        cols = (["run"] if len(versions) > 1 else []) + ["round", "remaining", "test_acc", "val_acc"]
        rounds = rounds[cols].assign(round=rounds["round"].map(names.round_number))   # from 1, as every page
    return not df.empty, figs, rounds


@state.guard("The curves could not be drawn")
def curves():
    snap = state.live()
    fresh = [r for r in (state.live_run(i, snap) for i in chosen_ids) if r is not None]
    # built once per data version for every session watching these runs (a class on one link)
    any_rows, figs, rounds = state.shared("runs.curves", _curve_figures, state.versions(fresh))
    c1, c2 = st.columns(2)
    c1.plotly_chart(figs[0], key="runs.loss", config={"displaylogo": False})
    c2.plotly_chart(figs[1], key="runs.acc", config={"displaylogo": False})
    c1, c2 = st.columns(2)
    c1.plotly_chart(figs[2], key="runs.rem", config={"displaylogo": False})
    if figs[3] is not None:
        c2.plotly_chart(figs[3], key="runs.lam", config={"displaylogo": False})
    if not rounds.empty:
        with c2:
            st.markdown("**Round by round** (after each round's training)")
            st.dataframe(rounds, hide_index=True,
                         width="stretch", height=min(38 + 35 * len(rounds), 250),
                         column_config={"run": st.column_config.TextColumn("run", width="medium"),
                                        "remaining": st.column_config.NumberColumn(format="percent"),
                                        "test_acc": st.column_config.NumberColumn("test acc", format="percent"),
                                        "val_acc": st.column_config.NumberColumn("val acc", format="percent")})
    if len(fresh) == 1 and any_rows:
        st.caption("Shaded bands: red = search (mask and weights trained with λ·R(m)), blue = retrain (binary "
                   "mask fixed), green = plain training (IMP rounds, dense).")


curves_slot = st.container()      # the curves: drawn by live_views every second while a selected run is active
if not chosen_active:
    with curves_slot:
        curves()                  # finished runs: drawn once


@state.guard("The run's status could not be read")
def _head(rid: str) -> None:
    """The run's status line, re-read from the store every second while it is active:
    the same line (status_line) and the same progress as the table above."""
    snap = state.live()
    run = state.live_run(rid, snap)
    if run is None:
        st.warning("This run was deleted.")
        return
    status = run.get("status")
    row = state.monitor_row(rid, snap) or data.runs_frame([run], cancelling=state.cancelling_ids([run])).iloc[0]
    st.markdown(f"{row['state'].split(' ')[0]} **{md.esc(data.status_line(row))}**")
    if status == "running":
        st.progress(min(1.0, float(row["progress"])))
    if row["cancelling"]:
        st.info("Cancelling… The worker finishes the step it is on, saves a checkpoint and then records the run "
                "as cancelled — usually within seconds, longer for a slow step. What it recorded is kept and "
                "Resume can continue from the checkpoint.", icon="⏹️")
    if run.get("reason"):
        err = state.store().run_dir(rid) / "error.txt"
        text = err.read_text(errors="replace") if status == "failed" and err.exists() else None
        (st.error if status == "failed" else st.warning)(md.esc(data.full_reason(run, text)))
    if status == "interrupted":
        st.caption("Its worker stopped without finishing (killed, out of memory, machine restarted). Resume "
                   "continues from the last complete checkpoint.")


def _details(run: dict) -> None:
    rid = run["id"]
    status = run.get("status")
    s = data.summary_of(run)
    live = status in data.ACTIVE
    if live:
        head_slots[rid] = st.container()          # drawn by live_views every second
    else:
        _head(rid)
    cancelling = status == "running" and rid in state.cancelling_ids([run])
    allowed = identity.may_manage(run, user)       # engine.jobs checks it again

    def help_for(text: str, what: str) -> str:
        return text if allowed else identity.why_not(run, what)

    if run.get("example"):
        st.caption(f"{data.EXAMPLE_BADGE}: a finished run shipped with the app in the class pack (its metrics, "
                   "masks and summary; no checkpoints or weights). Read-only: it cannot be deleted, cancelled or "
                   "resumed. The sidebar's “Show examples” switch hides the examples.")
    # ---- actions
    a = [c for _ in range(2) for c in st.columns(2)]     # 2 a row: labels fit at 1024×768
    if a[0].button("Cancelling…" if cancelling else "Cancel", key=f"cancel.{rid}",
                   disabled=status not in data.ACTIVE or cancelling or not allowed, width="stretch",
                   icon=":material/stop_circle:",
                   help=help_for("Stop the run: it finishes its current step, saves a checkpoint and shows as "
                                 "cancelled; what it recorded so far is kept.", "cancel")):
        try:
            backend.cancel(rid, home, actor=user)       # returns at once; the worker stops on its own
            state.mark_cancelling(rid)
            st.toast(f"Cancelling {md.esc(rid)}: it finishes its current step and saves a checkpoint first")
            st.rerun()
        except backend.BackendError as e:
            st.error(md.esc(e))
    if a[1].button("Resume", key=f"resume.{rid}",
                   disabled=status not in ("interrupted", "cancelled", "failed") or not allowed,
                   width="stretch", icon=":material/play_circle:",
                   help=help_for("Queue it again; it continues from its last complete checkpoint.", "resume")):
        try:
            backend.resume(rid, home, actor=user)
            st.toast(f"Resuming {md.esc(rid)}")
            st.rerun()
        except backend.BackendError as e:
            st.error(md.esc(e))
    if a[2].button("Duplicate with changes", key=f"dup.{rid}", width="stretch", icon=":material/content_copy:",
                   disabled=not run.get("config"),
                   help="Open the Launch form filled with this run's config; change it and launch a new run."):
        st.switch_page("pages/launch.py", query_params={"from": rid})
    confirm_key = f"confirm_delete.{rid}"
    example = bool(run.get("example"))
    if a[3].button("Delete…", key=f"delete.{rid}", disabled=status in data.ACTIVE or not allowed or example,
                   width="stretch", icon=":material/delete:",
                   help="A class-pack example is read-only: hide the examples with the sidebar's “Show examples” "
                        "switch." if example else
                        help_for("Delete the run and its files (asks first). Cancel a running run before deleting "
                                 "it.", "delete")):
        st.session_state[confirm_key] = True
    if st.session_state.get(confirm_key):
        with st.container(border=True):
            st.warning(f"Delete run {md.code(rid)} and all its files (metrics, masks, ticket)? This cannot be undone.")
            y, n, _ = st.columns([1, 1, 4])
            if y.button("Yes, delete", key=f"delete_yes.{rid}", type="primary"):
                st.session_state.pop(confirm_key, None)
                try:
                    backend.delete(rid, home, actor=user)       # refuses another person's run
                except backend.BackendError as e:
                    st.error(md.esc(e))
                else:
                    state.clear_caches()
                    state.set_selection([i for i in state.selected_ids() if i != rid])
                    st.toast(f"Deleted {md.esc(rid)}")
                    st.rerun()
            if n.button("Keep it", key=f"delete_no.{rid}"):
                st.session_state.pop(confirm_key, None)
                st.rerun()
    d = [c for _ in range(2) for c in st.columns(2)]
    d[0].download_button("Config (JSON)", data=lambda: data.config_json(run), file_name=f"{rid}-config.json",
                         mime="application/json", key=f"dl_cfg.{rid}", width="stretch", on_click="ignore",
                         icon=":material/download:", help="The config, reusable with `python -m engine run --config`.")
    d[1].download_button("Metrics (CSV)", data=lambda: data.metrics_csv(state.store(), rid),
                         file_name=f"{rid}-metrics.csv", mime="text/csv", key=f"dl_csv.{rid}", width="stretch",
                         on_click="ignore", icon=":material/table:", help="Every recorded step, epoch and round.")
    ticket = state.store().run_dir(rid) / "ticket.pt"
    d[2].download_button("Ticket (.pt)", data=lambda: ticket.read_bytes() if ticket.exists() else b"",
                         file_name=f"{rid}-ticket.pt", mime="application/octet-stream", key=f"dl_ticket.{rid}",
                         width="stretch", on_click="ignore", disabled=not ticket.exists(),
                         icon=":material/confirmation_number:",
                         help="The binary mask with the weights it rewinds to; load with "
                              "torch.load(path, weights_only=True).")
    d[3].download_button("Everything (.zip)", data=lambda: data.export_zip(state.store(), rid),
                         file_name=f"{rid}.zip", mime="application/zip", key=f"dl_zip.{rid}", width="stretch",
                         on_click="ignore", icon=":material/folder_zip:",
                         help="config.json, metrics.csv, summary.json, checks.json, ticket.pt and curves.html.")

    # ---- results and checks
    if s:
        items = [("Test accuracy", f"{s.get('test_accuracy', float('nan')):.2%}", None),
                 ("Remaining", f"{s.get('remaining', float('nan')):.2%}",
                  f"{s['kept']:,} of {s['total']:,} prunable weights kept" if isinstance(s.get("kept"), int)
                  and isinstance(s.get("total"), int) else None)]
        if s.get("thresholded_test_accuracy") is not None:
            items.append(("Right after thresholding", f"{s['thresholded_test_accuracy']:.2%}",
                          "Test accuracy of the thresholded mask before retraining: what thresholding cost."))
        items.append(("Wall time", data.fmt_duration(s.get("wall_seconds")), None))
        if s.get("device"):
            items.append(("Device", md.esc(s["device"]), None))
        cols = [c for _ in range(0, len(items), 3) for c in st.columns(3)]     # 3 a row: values fit
        for col, (label, value, hlp) in zip(cols, items):
            col.metric(label, value, help=hlp)
        err = estimate.estimate_vs_actual(run)
        if err:
            st.caption(f"Estimated at launch: ≈ {data.fmt_duration(err['estimate'])} until the result; it came "
                       f"{data.fmt_duration(err['actual'])} after launch (queue wait included): "
                       f"**×{err['ratio']:.2f}** the estimate.")
    checks = data.checks_frame(state.store(), rid)
    failed = checks[~checks["passed"]] if not checks.empty else checks
    if not failed.empty:  # a missed target or a broken invariant must not hide in the list below
        st.error("**Failed check" + ("s" if len(failed) > 1 else "") + ":** " + "; ".join(
            f"{c['check']} — {c['detail']}" for _, c in failed.iterrows()), icon=":material/error:")
    left, right = st.columns([1, 1], gap="large")
    with left:
        st.markdown("**Correctness checklist** (measured by the engine)")
        widgets.checklist(checks)
    with right:
        layers = data.layer_allocation([run])
        if not layers.empty:
            st.markdown("**Per layer**")
            st.dataframe(layers[["layer", "kept", "total", "remaining", "dead_units", "module"]], hide_index=True,
                         width="stretch",
                         column_config={"layer": st.column_config.TextColumn(
                                            "layer", help="fc = fully connected (inputs→outputs), conv = "
                                                          "convolution (channels in→out, kernel); out = the output "
                                                          "layer"),
                                        "module": st.column_config.TextColumn(
                                            "module", help="The layer's path in the PyTorch model"),
                                        "remaining": st.column_config.NumberColumn(format="percent"),
                                        "dead_units": st.column_config.NumberColumn(
                                            "dead units", format="percent",
                                            help="Output units whose every incoming weight was pruned")})
        with st.expander("Config"):
            st.json(data.cfg_of(run) or {"error": run.get("reason") or "config unreadable"}, expanded=True)
        err = state.store().run_dir(rid) / "error.txt"
        if status == "failed" and err.exists():
            with st.expander("Worker's error log"):
                st.code("\n".join(err.read_text(errors="replace").splitlines()[-25:]), language="text")


tabs = st.tabs([f"{data.STATUS_ICON.get(r.get('status'), '❓')} {md.esc(r['id'])}" for r in chosen])
for tab, run in zip(tabs, chosen):
    with tab:
        deploy_tab = None
        where = st.container()
        if deploy_panel.deployable(run):           # a finished ticket: its details and a Deploy tab
            where, deploy_tab = where.tabs(["Details", "🚀 Deploy"])
        with where:
            state.guard(f"Run {run['id']} could not be shown")(_details)(run)
        if deploy_tab is not None:
            with deploy_tab:
                state.guard(f"Deploying run {run['id']} failed")(deploy_panel.panel)(run)

live_views(table_slot, curves_slot if chosen_active else None, head_slots)
