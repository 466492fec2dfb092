"""The Runs page's Deploy tab for a finished pruned run: build the compact sparse file and the
ONNX file (engine.deploy), show sizes, parity and CPU latency, offer both files for download.

What is built is kept in the run's folder (runs/<id>/deploy/), so it is measured once and shown
on every later visit. Building and timing run `python -m engine deploy` in a process of their own,
under a spinner: an ONNX export and a timing loop hold a Python interpreter for seconds, and the
app's process serves every session of a class at once. One build or timing of a run at a time
(a lock in its folder): a second session's click waits for the first, then does its own."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from engine import deploy as dp
from ui import figures, md, state

ROOT = Path(__file__).resolve().parent.parent
FOLDER = "deploy"
CALLS = dp.QUICK_CALLS           # fewer calls than bench/deploy.py (200 / 50): the app answers in seconds
TIMEOUT_S = 900                  # a build or timing that takes longer is stopped, and the tab says so


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


def run_engine_deploy(run: dict, *options: str) -> str | None:
    """`python -m engine deploy <run> --out <its deploy folder> *options` in its own process.
    None when it did its work (exit 0, or 1: parity failed, the model files removed, deploy.json says why),
    else the engine's one-line reason."""
    rid, store = run["id"], state.store()
    cmd = [sys.executable, "-m", "engine", "deploy", rid, "--out", str(folder_of(rid)), "--home", str(store.home),
           *options]
    if run.get("data_dir"):
        cmd += ["--data-dir", str(run["data_dir"])]
    try:
        with open(store.run_dir(rid) / ".deploy.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)              # released when the file closes
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return (f"stopped after {TIMEOUT_S // 60} min without finishing; run `python -m engine deploy {rid} "
                f"--out {folder_of(rid)}` in a shell instead")
    except OSError as e:
        return f"could not start the deploy command: {e}"
    if done.returncode in (0, 1):
        return None
    lines = [ln.removeprefix("error: ") for ln in done.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else f"the deploy command exited with status {done.returncode}"


def size_text(n: float) -> str:
    """Bytes in three significant digits and a binary unit ("198 KB", "1.02 MB"): four such
    metrics share a row, and at 1024 px each column holds about 7 characters."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 999.5 or unit == "GB":
            break
        n /= 1024
    if unit == "B":
        return f"{n:.0f} B"
    return f"{n:.{0 if n >= 99.95 else 1 if n >= 9.995 else 2}f} {unit}"


def _ratio(size: int, dense: int) -> str:
    return f"1/{dense / size:.1f} of dense" if size < dense else f"{size / dense:.2f}× dense"


def failed_checks(run_id: str) -> list[str]:
    return [c["name"] for c in state.store().checks(run_id) if not c["passed"]]


def parity_text(par: dict) -> str:
    lg = par.get("logits") or {}
    logits = (f"logits within {lg['deployed']:.1e} (loader) and {lg['onnx']:.1e} (onnxruntime) of the masked "
              f"model's, bound {lg['tolerance']:g} relative; " if "tolerance" in lg else "")
    return (f"Parity on {par['n']:,} test images: {logits}{par['differ_deployed']} prediction(s) of the compact "
            f"file's loader and {par['differ_onnx']} of onnxruntime differ from the masked model's "
            f"(accuracy {par['accuracy']['masked']:.2%} masked, {par['accuracy']['deployed']:.2%} loader, "
            f"{par['accuracy']['onnx']:.2%} onnxruntime).")


def panel(run: dict) -> None:
    rid = run["id"]
    out = folder_of(rid)
    report = read_json(out / dp.REPORT_NAME)
    st.markdown("Write this ticket for inference: a **compact sparse file** (safetensors: kept weights plus a "
                "CSR or bitmask index, biases and BatchNorm dense, a JSON header with a SHA-256 of every tensor) "
                "and a **dense ONNX file**, then check on the whole test set that both give the masked model's "
                "logits within a stated bound (1e-5 relative in fp32, 1e-2 in fp16).")
    failed = failed_checks(rid)
    if failed:
        st.warning(f"This run failed its self-checks ({', '.join(failed)}). Building deploys it anyway "
                   f"(`--force`), and the file's header records the failed checks.", icon="⚠️")
    c1, c2, _ = st.columns([1, 1, 1])
    fp16 = c1.toggle("fp16 values", key=f"deploy.fp16.{rid}", value=bool(report and report["header"].get(
        "values_dtype") == "float16"), help="Store the kept weights as float16: half the bytes; the loader "
                                            "computes in float32.")
    # short labels: at 1024 px a third of the main column holds about 14 characters beside an icon
    label = "Rebuild" if report else "Build files"
    if c2.button(label, key=f"deploy.build.{rid}", icon=":material/package_2:", type="secondary" if report
                 else "primary", width="stretch",
                 help="Writes the compact file and the ONNX file to runs/<id>/deploy/ (takes a few seconds: "
                      "ONNX export and a parity check on the test set)."):
        with st.spinner("Writing the compact file and the ONNX file, checking parity on the test set…"):
            failed = run_engine_deploy(run, "--force", *(["--fp16"] if fp16 else []))
        if failed:
            st.error(md.esc(failed))
            return
        st.rerun()          # draw the tab again from the files just written ("Rebuild", figures)
    if report is None:
        st.info("Nothing built yet for this run.", icon="📦")
        return

    par = report["parity"]
    ok = par["passed"]
    (st.success if ok else st.error)(parity_text(par), icon="✅" if ok else "⚠️")
    if not report.get("deployed", True):
        st.error("Parity is outside its bound, so the model files were removed (deploy.json in the run's "
                 "deploy folder keeps the measurements). Rebuild in fp32, or keep the dense model.", icon="🗑️")
        return
    if report["header"].get("failed_checks"):
        st.warning("Deployed with `--force` although these self-checks failed; the file's header records them: "
                   + ", ".join(c["name"] for c in report["header"]["failed_checks"]) + ".", icon="⚠️")
    s = report["sizes"]
    m = st.columns(4)
    m[0].metric("Dense fp32", size_text(s["dense_fp32"]))
    m[1].metric("Sparse fp32", size_text(s["sparse_fp32"]), _ratio(s["sparse_fp32"], s["dense_fp32"]),
                delta_color="off", delta_arrow="off")
    m[2].metric("Sparse fp16", size_text(s["sparse_fp16"]), _ratio(s["sparse_fp16"], s["dense_fp32"]),
                delta_color="off", delta_arrow="off")
    m[3].metric("This file", size_text(report["files"]["compact_bytes"]),
                report["header"].get("values_dtype"), delta_color="off", delta_arrow="off")

    left, right = st.columns(2)
    left.plotly_chart(figures.deploy_size_figure(sizes_frame(report)), key=f"deploy.sizes.{rid}",
                      config={"displaylogo": False})
    with right:
        lat = read_json(out / dp.LATENCY_NAME)
        if st.button("Measure CPU latency" if lat is None else "Measure again", key=f"deploy.bench.{rid}",
                     icon=":material/timer:", help=f"Median per call of dense PyTorch, the sparse loader and "
                                                   f"onnxruntime: batch 1 ({CALLS[1]} calls) and 128 "
                                                   f"({CALLS[128]} calls), one thread and all threads."):
            with st.spinner("Timing dense PyTorch, the sparse loader and onnxruntime…"):
                failed = run_engine_deploy(run, "--latency-only", "--calls", f"{CALLS[1]},{CALLS[128]}")
            if failed:
                st.error(md.esc(failed))
            lat = read_json(out / dp.LATENCY_NAME)
        st.plotly_chart(figures.deploy_latency_figure(latency_frame(lat)), key=f"deploy.latency.{rid}",
                        config={"displaylogo": False})
        if lat is not None:
            st.caption(f"Measured side by side, in a process of their own, in {lat['seconds']} s; load average "
                       f"{lat['load_average']} (a busy machine slows every bar; compare bars, not absolutes). "
                       f"`python bench/deploy.py` uses more calls.")

    d = st.columns(3)
    compact, onnx_file = out / dp.COMPACT_NAME, out / dp.ONNX_NAME
    d[0].download_button("Compact file", data=lambda: compact.read_bytes(),
                         file_name=f"{rid}.safetensors", mime="application/octet-stream", key=f"deploy.dl.{rid}",
                         on_click="ignore", icon=":material/download:", width="stretch",
                         help=f"{rid}.safetensors. Load with engine.deploy.load_deployed(path): safetensors + "
                              f"JSON, never unpickled; it refuses a file whose SHA-256 checksums do not match.")
    d[1].download_button("ONNX file", data=lambda: onnx_file.read_bytes(), file_name=f"{rid}.onnx",
                         mime="application/octet-stream", key=f"deploy.dl_onnx.{rid}", on_click="ignore",
                         icon=":material/download:", width="stretch",
                         help=f"{rid}.onnx: dense, zeros in place; input 'input' (N, C, H, W) normalised as in "
                              f"training.")
    with d[2].popover("In Python", icon=":material/code:", width="stretch"):
        st.code("from engine.deploy import load_deployed\n"
                f"model = load_deployed('{rid}.safetensors')\n"
                "print(model.classify(image))   # image: H×W or C×H×W array as the dataset stores it",
                language="python")
