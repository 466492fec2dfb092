"""Trade-offs: test accuracy against the remaining fraction, per method and penalty,
with seeds as bands, IMP round by round, the dense line and the matching region."""

import pandas as pd
import streamlit as st

from ui import data, figures, present, state

state.intro("⚖️ Trade-offs",
            "How much accuracy each method keeps as it removes weights. Every finished run is a point; runs whose "
            "settings are equal but for the seed are averaged (with a band), and runs that differ in anything else "
            "(epochs, rounds, …; the class pack's examples and your runs) are lines of their own, named by what "
            "differs. IMP is drawn round by round. A ticket <b>matches</b> when it is within the tolerance of the "
            "dense network's accuracy — the green region.")

all_runs = state.runs()
points = data.tradeoff_points(all_runs)
if points.empty:
    st.info("No finished runs yet. Trade-offs need a few finished runs of one model and dataset — for example "
            "the “IMP vs concave on LeNet-300-100” preset on Home, or a λ sweep from Launch.", icon="⚖️")
    st.page_link("pages/launch.py", label="Launch a sweep", icon=":material/rocket_launch:")
    st.stop()

points["setting_key"] = points["model"] + " on " + points["dataset"] + points["classes"].map(
    lambda c: f" (classes {c})" if c else "")
counts = points["setting_key"].value_counts()
selected = set(state.selected_ids())
preferred = points[points["run_id"].isin(selected)]["setting_key"]
# Unless a selected run says which: the setting comparing the most methods (this page compares
# methods), then the most runs: a store with the class pack opened on its one-method planted sweep.
methods = points.groupby("setting_key")["method"].nunique()
ranked = sorted(counts.index, key=lambda k: (-methods[k], -counts[k]))
default = preferred.iloc[0] if not preferred.empty else ranked[0]
options = list(counts.index)
c1, c2, c3 = st.columns([2, 1, 1])
setting = c1.selectbox("Model and dataset", options, index=options.index(default), key="trade.setting",
                       format_func=lambda s: f"{s} — {counts[s]} finished run{'s' if counts[s] > 1 else ''}",
                       help="Runs are only comparable on the same model and data.")
tol_pp = c2.slider("Matching tolerance", 0.0, 5.0, 0.5, step=0.1, format="%.1f pp", key="trade.tol",
                   help="A ticket matches when its test accuracy is at least the dense accuracy minus this many "
                        "percentage points (pp).")
tol = tol_pp / 100
xaxis = c3.radio("Horizontal axis", ["remaining", "epochs_spent", "wall_seconds"], key="trade.x",
                 format_func={"remaining": "remaining weights", "epochs_spent": "epochs spent",
                              "wall_seconds": "seconds spent"}.get,
                 help="Remaining weights (the usual lottery-ticket plot), or what it cost to find the ticket.")

in_setting = set(points.loc[points["setting_key"] == setting, "run_id"])
chosen = state.pick_runs(all_runs, "Runs (empty: all finished runs of this model and dataset)", key="trade.runs",
                         filter_fn=lambda r: r["id"] in in_setting, placeholder="all finished runs",
                         help="Narrow the plot to some runs. The choice is kept in the page address.")
ids = [r["id"] for r in chosen] or sorted(in_setting)
pts = data.label_lines(points[points["run_id"].isin(ids)])     # lines named among the runs shown
runs_used = [r for r in all_runs if r["id"] in set(ids)]
state.examples_note(runs_used, "runs")


@state.guard("The trade-off plot could not be drawn")
def plot():
    imp = data.imp_rounds(state.store(), runs_used)
    cands = data.dense_candidates(pts, imp)
    dense = ref = None
    if len(cands) > 1:      # several dense settings: never averaged together; the reader picks one
        pick = st.selectbox("Dense reference (the dashed line and the matching region)", range(len(cands)),
                            key="trade.dense", format_func=lambda i: f"{cands['label'][i]} — "
                            f"{cands['accuracy'][i]:.2%} ({cands['n'][i]} seed{'s' if cands['n'][i] > 1 else ''})",
                            help="Dense runs (or IMP's round 1, its dense training) of one setting, seeds "
                                 "averaged. Pick the one trained like the tickets you compare.")
        ref = cands.iloc[pick]
    elif len(cands) == 1:
        ref = cands.iloc[0]
    if ref is not None:
        dense = float(ref["accuracy"])
    final = pts[pts["method"] != "imp"] if not imp.empty else pts
    agg = data.aggregate_seeds(final)
    present.chart(figures.tradeoff_figure(agg, imp, dense, tol, x=xaxis), "trade.fig")
    notes = []
    if ref is None:
        notes.append("no dense run (or IMP round 1) here, so no dense line: launch method = dense for a reference")
    else:
        notes.append(f"dense accuracy {dense:.2%} from {ref['label']} ({ref['n']} "
                     f"seed{'s' if ref['n'] > 1 else ''}: {ref['run_ids']}); matching: within {tol_pp:.1f} pp of it")
    if not imp.empty:
        notes.append(f"IMP rounds (dotted): r1 is the dense network, each later round prunes "
                     f"{data.imp_prune_text(runs_used)} of the weights still in")
    text = " · ".join(notes)
    st.caption(text[:1].upper() + text[1:] + ".")        # not str.capitalize: it lowercases "IMP"

    if xaxis == "remaining":
        with st.expander("What it cost to find each ticket", expanded=False):
            cost = st.radio("Cost in", ["epochs_spent", "wall_seconds"], horizontal=True, key="trade.cost",
                            format_func={"epochs_spent": "epochs", "wall_seconds": "seconds"}.get)
            present.chart(figures.cost_figure(final, imp, cost), "trade.costfig")

    table = data.tradeoff_table(agg, imp, runs_used)
    if dense is not None:
        table["matches"] = table["test_accuracy"] >= dense - tol
    shown = table.drop(columns=["setting", "method"], errors="ignore")
    # only IMP rows have a round and only concave rows a λ: the others show "—", not "None"
    for col, fmt in (("round", figures.round_label), ("lam", lambda v: f"{v:g}"), ("wall_seconds", data.fmt_duration)):
        if col in shown:
            shown[col] = [fmt(v) if pd.notna(v) else "—" for v in shown[col]]
    st.dataframe(shown, hide_index=True, width="stretch",
                 column_config={"remaining": st.column_config.NumberColumn(format="percent"),
                                "remaining_std": st.column_config.NumberColumn("± remaining", format="percent"),
                                "test_accuracy": st.column_config.NumberColumn("test acc", format="percent"),
                                "acc_std": st.column_config.NumberColumn("± acc", format="percent"),
                                "acc_min": None, "acc_max": None,
                                "wall_seconds": st.column_config.TextColumn(
                                    "time", help="Wall-clock time to this point (the whole run for its last "
                                                 "point), written as on every page"),
                                "epochs_spent": st.column_config.NumberColumn("epochs", format="%d"),
                                "lam": st.column_config.TextColumn("λ"),
                                "round": st.column_config.TextColumn("IMP round"),
                                "run_ids": st.column_config.TextColumn("runs", help="The run ids of this row"),
                                "seeds": st.column_config.TextColumn("seeds", help="The seeds averaged in this row"),
                                "n": st.column_config.NumberColumn(
                                    "runs averaged", help="Runs equal but for the seed, averaged in this row")})
    csv = pts.drop(columns=["setting_key", "base", "line"], errors="ignore").to_csv(index=False)
    st.download_button("Download these points (CSV)", csv, file_name="tradeoffs.csv", mime="text/csv",
                       key="trade.csv", on_click="ignore", icon=":material/download:",
                       help="One row per run: config, remaining fraction, accuracy, cost.")


plot()
