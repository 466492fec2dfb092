"""Shared bench plumbing: a scratch store, result files, machine description."""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def machine() -> str:
    import torch
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}, torch {torch.__version__}"


def run_timed(store, cfg) -> tuple[str, dict]:
    """Run one config to the end in this process; its summary gets `measured_seconds`."""
    import time

    from engine import runner
    from engine.data import default_data_dir
    run_id = runner.create(store, cfg, status="running")
    t = time.time()
    s = runner.execute(store, run_id, default_data_dir())
    s["measured_seconds"] = time.time() - t
    return run_id, s


def scratch_store():
    from engine.store import Store
    return Store(tempfile.mkdtemp(prefix="lottery-bench-"))


def write_result(name: str, data: dict, quick: bool) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / (f"{name}_quick.json" if quick else f"{name}.json")
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    print(f"wrote {path.relative_to(ROOT)}")
    return path
