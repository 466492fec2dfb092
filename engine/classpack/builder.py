"""Build the class pack by running its trainings through the engine, then exporting them.

Default pack: every run trains here, one after the other, in a scratch store (or `home`),
on one torch thread with the configs' seeds, so a rebuild reproduces it. `full`: the runs are
submitted to the background queue of `home` (the normal store by default), so they show on
the Runs page with their progress; this waits, printing progress, and writes the pack when
they have all finished. Either way a run whose config already finished in that store is
reused, so an interrupted build picks up where it stopped.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..config import RunConfig
from ..store import Store
from . import spec
from .load import DEFAULT_PACK
from .pack import PackError, export, pack_size

MAX_BYTES = 5_000_000        # the committed pack's budget


def _resolve(entry: dict, ids: dict[str, str]) -> RunConfig:
    cfg = dict(entry["config"])
    for k, key in entry["refs"].items():
        cfg[k] = ids[key]
    return RunConfig.from_dict(cfg, unused="keep")      # the committed pack's configs, ids and all


def build(out: str | os.PathLike | None = None, *, full: bool = False, home: str | os.PathLike | None = None,
          data_dir: str | os.PathLike | None = None, keys: list[str] | None = None,
          say: Callable[[str], None] = print, poll: float = 2.0) -> Path:
    """Train (or reuse) every pack run, then export them to `out`; returns the pack folder."""
    from ..data import default_data_dir
    out = Path(out) if out is not None else DEFAULT_PACK
    data_dir = str(data_dir or default_data_dir())
    entries = spec.entries(full=full)
    if keys:
        unknown = set(keys) - {e["key"] for e in entries}
        if unknown:
            raise PackError(f"classpack build --only: unknown run key(s) {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(e['key'] for e in entries)}")
        needed = set(keys)
        for e in reversed(entries):            # a run's refs come with it
            if e["key"] in needed:
                needed |= set(e["refs"].values())
        entries = [e for e in entries if e["key"] in needed]
    if home is None and not full:
        home = tempfile.mkdtemp(prefix="classpack-")
    if full:
        from ..runner import default_home
        home = home or default_home()
    store = Store(home)
    say(f"class pack: {len(entries)} runs ({'full' if full else 'default'}) in the store at {home}")
    ids = _run_queued(store, entries, data_dir, say, poll) if full else _run_here(store, entries, data_dir, say)
    items = [(e, ids[e["key"]]) for e in entries]
    import numpy
    import torch
    meta = {"kind": "full" if full else "default",
            "built_with": {"python": platform.python_version(), "torch": torch.__version__,
                           "numpy": numpy.__version__},
            "train_seconds": round(sum(float((store.get_run(rid)["summary"] or {}).get("wall_seconds") or 0)
                                       for _, rid in items), 1),
            "note": "Built by `python -m engine classpack build" + (" --full" if full else "") + "`; never edit "
                    "by hand. " + ("" if full else "The LeNet-300-100 runs are shortened (2 epochs per phase).")}
    path = export(store, items, out, meta, data_dir=data_dir)
    size = pack_size(path)
    say(f"class pack written to {path}: {len(items)} runs, {size / 1e6:.2f} MB")
    if not full and out == DEFAULT_PACK and size > MAX_BYTES:
        raise PackError(f"class pack: {size / 1e6:.2f} MB is over the {MAX_BYTES / 1e6:g} MB budget")
    return path


def _run_here(store: Store, entries: list[dict], data_dir: str, say) -> dict[str, str]:
    import torch

    from .. import jobs, runner
    torch.set_num_threads(1)                # the same arithmetic on every machine (and polite to others)
    ids: dict[str, str] = {}
    for i, e in enumerate(entries, 1):
        cfg = _resolve(e, ids)
        rid = (jobs.find_done(cfg, store=store) or {}).get("id")   # a done run, folder intact, not an example
        if rid is None:
            t = time.time()
            rid = runner.create(store, cfg, status="running")
            s = runner.execute(store, rid, data_dir)
            say(f"[{i}/{len(entries)}] {e['key']}: test accuracy {s['test_accuracy']:.4f}, "
                f"remaining {s['remaining']:.4f}, {time.time() - t:.1f} s")
        else:
            say(f"[{i}/{len(entries)}] {e['key']}: reused finished run {rid}")
        ids[e["key"]] = rid
    return ids


def _run_queued(store: Store, entries: list[dict], data_dir: str, say, poll: float) -> dict[str, str]:
    """Submit each run once its refs are done; wait for all, printing progress."""
    from .. import jobs
    ids: dict[str, str] = {}
    last = ""
    while True:
        for e in entries:
            ready = all(k in ids and store.get_run(ids[k])["status"] == "done" for k in e["refs"].values())
            if e["key"] in ids or not ready:
                continue
            cfg = _resolve(e, ids)
            ids[e["key"]] = jobs.submit(cfg, store.home, data_dir)     # reuses an equal done/queued/running run
        jobs.pump(store.home)
        status = {k: store.get_run(rid)["status"] for k, rid in ids.items()}
        bad = {k: s for k, s in status.items() if s in ("failed", "cancelled", "interrupted")}
        if bad:
            k, s = next(iter(bad.items()))
            raise PackError(f"class pack: run {ids[k]} ({k}) is {s}; resume it (`python -m engine resume "
                            f"{ids[k]}`) and build again: finished runs are reused")
        done = sum(s == "done" for s in status.values())
        line = (f"{done}/{len(entries)} done, {sum(s == 'running' for s in status.values())} running, "
                f"{sum(s == 'queued' for s in status.values())} queued, {len(entries) - len(ids)} waiting")
        if line != last:
            say(f"class pack: {line}")
            last = line
        if done == len(entries):
            return ids
        time.sleep(poll)
