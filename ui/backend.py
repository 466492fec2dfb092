"""The engine's jobs API as the pages use it, plus what Home shows about the machine.

Pages never train: Launch hands validated configs to `engine.jobs.submit`,
which queues them for background worker processes. Every call here turns a
missing API or an engine error into a `BackendError` with a readable message.
No Streamlit import; no CUDA initialisation (the GPU is probed with nvidia-smi).
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import subprocess
from pathlib import Path

from engine.config import RunConfig


class BackendError(RuntimeError):
    pass


def jobs_module():
    try:
        from engine import jobs
    except ImportError as e:
        raise BackendError(f"background runs are not available in this installation ({e}); "
                           "use `python -m engine run --config FILE.json` meanwhile") from None
    return jobs


def _call(name: str, *args, **kwargs):
    fn = getattr(jobs_module(), name, None)
    if fn is None:
        raise BackendError(f"engine.jobs has no {name}()")
    try:
        return fn(*args, **kwargs)
    except BackendError:
        raise
    except Exception as e:  # the engine's message is meant for people
        raise BackendError(f"{name} failed: {e}") from e


def new_sweep_id() -> str:
    try:
        from engine.sweep import new_sweep_id as engine_sweep_id
        return engine_sweep_id()
    except ImportError:
        return f"sw-{secrets.token_hex(4)}"


class Submitted(list):
    """The run ids of one launch, in order; `reused` lists those that an equal run (same
    content hash: done, or already queued or running) stood in for, so nothing trained."""

    def __init__(self, ids=(), reused=()):
        super().__init__(ids)
        self.reused = list(reused)


def submit(cfgs: list[RunConfig], home: Path, sweep_id: str | None = None, *, owner: str | None = None,
           again: bool = False, estimates: list[float | None] | None = None) -> Submitted:
    """Queue every config; several configs share one sweep id. A config equal to an earlier
    run is not queued again unless `again` (its id stands in: see Submitted.reused).
    `estimates`: seconds until each run's result as the page showed it, recorded with the run."""
    if len(cfgs) > 1 and sweep_id is None:
        sweep_id = new_sweep_id()
    if owner is not None and len(cfgs) > 1:       # a sweep is queued whole or not at all
        new = cfgs if again else [c for c in cfgs if find_equal(c, home) is None]   # reused points cost nothing
        if len(new) > 1:
            _call("check_room", home, owner, len(new))
    reused_type = getattr(jobs_module(), "Reused", ())
    out = Submitted()
    for i, cfg in enumerate(cfgs):
        kw = {}                       # only what is asked for, so an engine without it still works
        if again:
            kw["again"] = True
        if owner is not None:
            kw["owner"] = owner
        if estimates is not None and i < len(estimates) and estimates[i] is not None:
            kw["estimate"] = float(estimates[i])
        rid = _call("submit", cfg, home=home, sweep_id=sweep_id, **kw)
        out.append(rid)
        if reused_type and isinstance(rid, reused_type):
            out.reused.append(rid)
    return out


def room(home: Path, owner: str | None) -> int | None:
    """How many more runs `owner` may queue now (None: no per-person cap applies to them)."""
    return None if owner is None else _call("room", home, owner)


def find_equal(cfg: RunConfig, home: Path, store=None) -> dict | None:
    """The run a launch of `cfg` would reuse (a finished one first, else one queued or
    running), or None; None as well on an engine without deduplication. `store`: the
    page's open store (ui.state.store()), so a rerun does not open one per config."""
    fn = getattr(jobs_module(), "find_equal", None)
    if fn is None:
        return None
    try:
        return fn(cfg, home, store=store) if store is not None else fn(cfg, home)
    except Exception:     # noqa: BLE001 - a hint only; the launch itself still reuses or reports
        return None


# `actor`: who asks (ui.identity.current_user()); engine.jobs refuses another person's run
# unless the actor is a teacher. None acts unrestricted, as the CLI does.

def cancel(run_id: str, home: Path, *, actor: str | None = None):
    # wait=False: a page must not block for the grace period; the next pump records the outcome.
    return _call("cancel", run_id, home=home, wait=False, actor=actor)


def resume(run_id: str, home: Path, *, actor: str | None = None):
    return _call("resume", run_id, home=home, actor=actor)


def delete(run_id: str, home: Path, *, actor: str | None = None) -> None:
    return _call("delete", run_id, home=home, actor=actor)


def pump(home: Path) -> str | None:
    """Start queued runs when slots are free and mark dead workers interrupted.
    Returns a message when that could not be done, else None."""
    try:
        _call("pump", home=home)
    except BackendError as e:
        return str(e)
    return None


def expand(base: dict, grid: dict[str, list], seeds: list[int]) -> list[RunConfig]:
    """Every combination of the grid values and seeds, validated (ConfigError names the key)."""
    if not any(len(v) > 1 for v in grid.values()) and len(seeds) == 1:     # one run: no sweep labels
        return [RunConfig.from_dict({**base, **{k: v[0] for k, v in grid.items()}, "seed": seeds[0]})]
    try:
        from engine import sweep
        fn = getattr(sweep, "expand", None)
    except ImportError:
        fn = None
    if fn is not None:
        return list(fn(base, grid, seeds))
    keys = list(grid)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        for seed in seeds:
            out.append(RunConfig.from_dict({**base, **dict(zip(keys, combo)), "seed": seed}))
    return out


# ------------------------------------------------------------------ the machine

def gpus() -> list[str]:
    """GPU names from nvidia-smi (never initialises CUDA in this process)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=3)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def disk_free(path: Path) -> tuple[int, int]:
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    u = shutil.disk_usage(p)
    return u.free, u.total


def cpu_count() -> int:
    import os
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
