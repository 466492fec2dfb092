"""The Runs page's Deploy tab for a finished pruned run: build the compact sparse file and the
ONNX file (engine.deploy), show sizes, parity and CPU latency, offer both files for download.

What is built is kept in the run's folder (runs/<id>/deploy/), so it is measured once and shown
on every later visit; building and timing run under a spinner, and the rest of the page stays."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from engine import deploy as dp
from engine.store import atomic_write_json
from ui import figures, md, state

FOLDER = "deploy"
LATENCY = "latency.json"
UI_REPS = {1: 100, 128: 20}      # fewer calls than bench/deploy.py (200 / 50): the app answers in seconds


def deployable(run: dict) -> bool:
    return run.get("status") == "done" and (state.store().run_dir(run["id"]) / "ticket.pt").exists()


def folder_of(run_id: str) -> Path:
    return state.store().run_dir(run_id) / FOLDER


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sizes_frame(report: dict) -> pd.DataFrame:
    s = report.get("sizes") or {}
    rows = [{"file": name.replace("_", " "), "form": form, "bytes": s[key]}
            for name in ("dense_fp32", "sparse_fp32", "sparse_fp16")
            for form, key in (("as written", name), ("zipped", name + "_zip")) if key in s]
    return pd.DataFrame(rows, columns=["file", "form", "bytes"])


def latency_frame(lat: dict | None) -> pd.DataFrame:
    return pd.DataFrame((lat or {}).get("rows") or [], columns=["impl", "batch", "threads", "median_ms", "calls"])


def _ratio(size: int, dense: int) -> str:
    return f"1/{dense / size:.1f} of dense" if size < dense else f"{size / dense:.2f}× dense"


def panel(run: dict) -> None:
    rid = run["id"]
    out = folder_of(rid)
    report = read_json(out / dp.REPORT_NAME)
    st.markdown("Write this ticket for inference: a **compact sparse file** (safetensors: kept weights plus a "
                "CSR or bitmask index, biases and BatchNorm dense, a JSON header) and a **dense ONNX file**, "
                "then check that both predict exactly what the masked model predicts on the whole test set.")
    c1, c2, _ = st.columns([1, 1, 2])
    fp16 = c1.toggle("fp16 values", key=f"deploy.fp16.{rid}", value=bool(report and report["header"].get(
        "values_dtype") == "float16"), help="Store the kept weights as float16: half the bytes; the loader "
                                            "computes in float32.")
    label = "Rebuild the files" if report else "Build the deployable files"
    if c2.button(label, key=f"deploy.build.{rid}", icon=":material/package_2:", type="secondary" if report
                 else "primary", help="Writes runs/<id>/deploy/ (takes a few seconds: ONNX export and a parity "
                                      "check on the test set)."):
        with st.spinner("Writing the compact file and the ONNX file, checking parity on the test set…"):
            try:
                report = dp.deploy(state.store(), rid, out, fp16=fp16, force=True, data_dir=run.get("data_dir"))
            except dp.DeployError as e:
                st.error(md.esc(e))
                return
        st.rerun()          # draw the tab again from the files just written ("Rebuild", figures)
    if report is None:
        st.info("Nothing built yet for this run.", icon="📦")
        return

    par = report["parity"]
    ok = par["passed"]
    (st.success if ok else st.error)(
        f"Parity on {par['n']:,} test images: {par['differ_deployed']} prediction(s) of the compact file's "
        f"loader and {par['differ_onnx']} of onnxruntime differ from the masked model's "
        f"(accuracy {par['accuracy']['masked']:.2%} masked, {par['accuracy']['deployed']:.2%} loader, "
        f"{par['accuracy']['onnx']:.2%} onnxruntime).", icon="✅" if ok else "⚠️")
    s = report["sizes"]
    m = st.columns(4)
    m[0].metric("Dense fp32", f"{s['dense_fp32'] / 1024:,.1f} KB")
    m[1].metric("Sparse fp32", f"{s['sparse_fp32'] / 1024:,.1f} KB", _ratio(s["sparse_fp32"], s["dense_fp32"]),
                delta_color="off", delta_arrow="off")
    m[2].metric("Sparse fp16", f"{s['sparse_fp16'] / 1024:,.1f} KB", _ratio(s["sparse_fp16"], s["dense_fp32"]),
                delta_color="off", delta_arrow="off")
    m[3].metric("This file", f"{report['files']['compact_bytes'] / 1024:,.1f} KB",
                report["header"].get("values_dtype"), delta_color="off", delta_arrow="off")

    left, right = st.columns(2)
    left.plotly_chart(figures.deploy_size_figure(sizes_frame(report)), key=f"deploy.sizes.{rid}",
                      config={"displaylogo": False})
    with right:
        lat = read_json(out / LATENCY)
        if st.button("Measure CPU latency" if lat is None else "Measure again", key=f"deploy.bench.{rid}",
                     icon=":material/timer:", help=f"Median per call of dense PyTorch, the sparse loader and "
                                                   f"onnxruntime: batch 1 ({UI_REPS[1]} calls) and 128 "
                                                   f"({UI_REPS[128]} calls), one thread and all threads."):
            with st.spinner("Timing dense PyTorch, the sparse loader and onnxruntime…"):
                t = time.time()
                rows = dp.bench_deployed(out, reps=UI_REPS)
                lat = {"rows": rows, "load_average": dp.load_average(), "seconds": round(time.time() - t, 1)}
                atomic_write_json(out / LATENCY, lat)
        st.plotly_chart(figures.deploy_latency_figure(latency_frame(lat)), key=f"deploy.latency.{rid}",
                        config={"displaylogo": False})
        if lat is not None:
            st.caption(f"Measured side by side in the app's process in {lat['seconds']} s; load average "
                       f"{lat['load_average']} (a busy machine slows every bar; compare bars, not absolutes). "
                       f"`python bench/deploy.py` uses more calls.")

    d = st.columns(3)
    compact, onnx_file = out / dp.COMPACT_NAME, out / dp.ONNX_NAME
    d[0].download_button("Compact file (.safetensors)", data=lambda: compact.read_bytes(),
                         file_name=f"{rid}.safetensors", mime="application/octet-stream", key=f"deploy.dl.{rid}",
                         on_click="ignore", icon=":material/download:", width="stretch",
                         help="Load with engine.deploy.load_deployed(path): safetensors + JSON, never unpickled.")
    d[1].download_button("Dense ONNX (.onnx)", data=lambda: onnx_file.read_bytes(), file_name=f"{rid}.onnx",
                         mime="application/octet-stream", key=f"deploy.dl_onnx.{rid}", on_click="ignore",
                         icon=":material/download:", width="stretch",
                         help="Zeros in place; input 'input' (N, C, H, W) normalised as in training.")
    with d[2].popover("Load it in Python", icon=":material/code:", width="stretch"):
        st.code("from engine.deploy import load_deployed\n"
                f"model = load_deployed('{rid}.safetensors')\n"
                "print(model.classify(image))   # image: H×W or C×H×W array as the dataset stores it",
                language="python")
