"""Mask evolution: per-layer sparsity over epochs, the distribution of m with τ, churn;
per-layer allocation across runs and the overlap of two tickets."""

import pandas as pd
import streamlit as st

from ui import data, figures, state

state.intro("🧩 Mask evolution",
            "How a mask is learned: which layers keep their weights, how the mask values m drift towards 0 or 1 "
            "(and where the threshold τ cuts), and how many entries still cross τ each epoch. Below, compare where "
            "different methods leave their surviving weights, and how much two tickets overlap.")

all_runs = state.runs()
readable = [r for r in all_runs if data.cfg_of(r)]
if not readable:
    st.info("No runs to show yet. Mask statistics are recorded at the end of every epoch, so a run appears here "
            "as soon as its first epoch ends.", icon="🧩")
    st.page_link("pages/launch.py", label="Launch a run", icon=":material/rocket_launch:")
    st.stop()

run = state.pick_run(readable, "Run", key="masks.run",
                     help="The run whose mask history is drawn. Live while it trains.")
live = run.get("status") in data.ACTIVE


def _evolution_figures(home_str: str, version: tuple, run: dict) -> tuple[pd.DataFrame, dict]:
    """The run's mask statistics and the figures drawn from them alone: built once per data
    version for every session watching this run (state.shared)."""
    stats = state.mask_stats_of(run)
    if stats.empty:
        return stats, {}
    return stats, {
        "heat": figures.layer_heatmap(stats),
        "churn": figures.layer_lines(stats[stats["churn"].notna()], "churn", "Churn: entries that crossed τ "
                                     "since the previous epoch", "share of entries"),
        "binary": figures.layer_lines(stats, "near_binary", "How binary the mask is: entries within 0.05 of 0 "
                                      "or 1", "share of entries"),
        "dead": figures.layer_lines(stats, "dead_units", "Dead units: outputs whose every weight is pruned",
                                    "share of units") if stats["dead_units"].fillna(0).gt(0).any() else None}


def _hist_figure(home_str: str, version: tuple, which: str, tau: float, stats: pd.DataFrame):
    hist = data.hist_over_time(stats, which)
    return hist, figures.hist_heatmap(hist, tau)


@st.fragment(run_every=state.LIVE_SECONDS if live else None)
@state.guard("The mask history could not be drawn")
def evolution(run_id: str):
    fresh = state.reread(run_id)
    if fresh is None:
        return
    version = state.versions([fresh])
    stats, figs = state.shared("masks.evolution", _evolution_figures, version, run=fresh)
    if stats.empty:
        st.info("No mask statistics yet: they are written at the end of each epoch." if fresh.get("status") in
                data.ACTIVE else "This run recorded no mask statistics.")
        return
    tau = float(data.cfg_of(fresh).get("threshold", 0.5))
    st.plotly_chart(figs["heat"], key="masks.heat")
    st.caption("Each row is a prunable layer (fc = fully connected, in→out units; hover for its module path), each "
               "column an epoch (search epochs train the mask, a retrain's epoch 0 is the binary ticket). Dark "
               "cells: layers that lost most of their weights.")
    layers = ["all layers"] + list(dict.fromkeys(stats["layer"]))
    c1, c2 = st.columns([3, 2])
    with c1:
        paths = dict(zip(stats["layer"], stats["module"]))
        which = st.selectbox("Histogram of", layers, key="masks.layer",
                             format_func=lambda la: la if la not in paths else f"{la}  ({paths[la]})",
                             help="Pool the mask values of every layer, or look at one layer (module path in "
                                  "brackets).")
        hist, hist_fig = state.shared("masks.hist", _hist_figure, version, which, tau, stats=stats)
        st.plotly_chart(hist_fig, key="masks.hist")
    with c2:
        whens = hist.drop_duplicates("when").sort_values("order")["when"].tolist()
        if whens:
            at = st.select_slider("Epoch", whens, value=whens[-1], key=f"masks.at.{run_id}.{which}",
                                  help="Pick an epoch to see its histogram of m. Red bars are pruned at τ.")
            st.plotly_chart(figures.hist_bars(hist[hist["when"] == at], tau, f"m at {at}"), key="masks.bars")
    c1, c2 = st.columns(2)
    c1.plotly_chart(figs["churn"], key="masks.churn")
    c2.plotly_chart(figs["binary"], key="masks.binary")
    st.caption("Churn falling to 0 means the mask has settled. ℓ1 masks typically stay far from binary "
               "(many entries between 0 and 1), concave ones become binary — so thresholding costs ℓ1 more.")
    if figs["dead"] is not None:
        st.plotly_chart(figs["dead"], key="masks.dead")


evolution(run["id"])

st.subheader("Compare runs", divider="gray")
done = [r for r in readable if r.get("status") == "done" and data.summary_of(r).get("layers")]
if len(done) < 1:
    st.info("Per-layer allocation and mask overlap compare finished runs; none has finished yet.")
    st.stop()
done_ids = {r["id"] for r in done}
compare = state.pick_runs(all_runs, "Finished runs to compare", key="masks.cmp", max_selections=8,
                          filter_fn=lambda r: r["id"] in done_ids,
                          help="Where does each method leave its surviving weights? Pick e.g. an IMP run and a "
                               "concave run on the same model.", placeholder="choose finished runs")
if not compare:
    same = [r for r in done if data.cfg_of(r).get("model") == data.cfg_of(run).get("model")]
    compare = same[:2] or done[:2]
    st.caption("Showing the latest finished runs of this model; pick others above.")
alloc = data.layer_allocation(compare)
st.plotly_chart(figures.allocation_figure(alloc), key="masks.alloc")
st.caption("Global sparsity hides where weights go: concave masks often empty the big first layer while the small "
           "output layer stays dense.")

st.markdown("##### Mask overlap")
c1, c2 = st.columns(2)
ids = [r["id"] for r in done]
by_id = {r["id"]: r for r in done}
a = c1.selectbox("Ticket A", ids, index=ids.index(compare[0]["id"]) if compare else 0, key="masks.a",
                 format_func=lambda i: data.run_label(by_id[i]), help="First ticket.")
b_default = data.overlap_partner(by_id[a], [by_id[r["id"]] for r in compare[1:] if r["id"] in by_id] + done)
if st.session_state.get("masks.b._for") != a:      # a new ticket A: B follows it to a compatible run
    st.session_state["masks.b"] = b_default or next((i for i in ids if i != a), a)
    st.session_state["masks.b._for"] = a
b = c2.selectbox("Ticket B", ids, key="masks.b", format_func=lambda i: data.run_label(by_id[i]),
                 help="Second ticket. It opens on the most recent finished run with the same model and dataset "
                      "as ticket A (a ticket's overlap with another network means nothing).")


@state.guard("The overlap could not be computed")
def overlap():
    if a == b:
        st.info("Pick two different runs to compare their tickets.")
        return
    ta = data.final_ticket_tag(state.snapshots_of(by_id[a]))
    tb = data.final_ticket_tag(state.snapshots_of(by_id[b]))
    if not ta or not tb:
        st.info("One of these runs saved no binary ticket.")
        return
    iou = data.mask_iou(state.masks_of(a, ta), state.masks_of(b, tb))
    iou = data.name_layers(iou, data.cfg_of(by_id[a]))
    if iou.empty:
        st.warning("These tickets have no layer in common (different models or datasets).")
        return
    total = iou[iou["layer"] == "all layers"].iloc[0]
    st.metric("IoU of kept weights", f"{total['iou']:.1%}",
              help=f"{total['both']:,} weights kept by both; A keeps {total['kept_a']:,}, B keeps {total['kept_b']:,}.")
    st.plotly_chart(figures.iou_figure(iou, data.run_label(by_id[a]), data.run_label(by_id[b])), key="masks.iou")
    st.caption("Two random masks at densities d₁ and d₂ overlap with IoU ≈ d₁d₂ / (d₁ + d₂ − d₁d₂); tickets found by "
               "different methods or seeds usually overlap far more than that in the layers that matter.")


overlap()
