"""Lottery Lab app (minimal until the full UI lands): lists the runs in the store.

Start with `make run`. The engine trains; this page only reads the store."""

import pandas as pd
import streamlit as st

from engine.runner import default_home
from engine.store import Store

st.set_page_config(page_title="Lottery Lab", layout="wide")
st.title("Lottery Lab")
st.caption("Sparse trainable subnetworks with concave mask regularization, compared with iterative "
           "magnitude pruning. Start runs with `python -m engine run --preset digits`; they appear here.")

store = Store(default_home())
runs = store.list_runs()
if not runs:
    st.info("No runs yet. Try `python -m engine run --preset digits` (about 10 s on a laptop CPU), "
            "then reload this page.")
    st.stop()

rows = []
for r in runs:
    cfg = r["config"] or {}
    s = r["summary"] or {}
    rows.append({"id": r["id"], "status": r["status"], "method": cfg.get("method"), "model": cfg.get("model"),
                 "dataset": cfg.get("dataset"), "regularizer": cfg.get("regularizer"), "λ": cfg.get("lam"),
                 "remaining": s.get("remaining"), "test accuracy": s.get("test_accuracy"),
                 "seconds": s.get("wall_seconds"), "reason": r["reason"]})
st.dataframe(pd.DataFrame(rows), hide_index=True, use_container_width=True)

chosen = st.selectbox("Checks for run", [r["id"] for r in runs])
checks = store.checks(chosen)
if checks:
    st.dataframe(pd.DataFrame(checks).drop(columns=["run_id"]), hide_index=True)
else:
    st.write("No invariant checks recorded for this run (yet).")
