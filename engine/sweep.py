"""Sweeps: a grid of configs × seeds, executed through joblib.

    configs = expand({"model": "lenet300", "dataset": "digits"},
                     {"lam": [0.5, 2.0], "regularizer": ["l1", "log"]}, seeds=[0, 1, 2])
    sweep_id, run_ids = run_sweep(configs, n_jobs=2)                        # local processes (loky)
    sweep_id, run_ids = run_sweep(configs, scheduler="tcp://10.0.0.5:8786")  # a dask.distributed cluster
    sweep_id, run_ids = submit_sweep(configs)                               # background workers (jobs queue)

Every point is validated before anything is written. The runs are created
`queued` under one sweep id (the store's `sweep_id`), then each joblib task
claims its run and executes it with `runner.execute`, writing straight into the
store like any other run: live metrics, heartbeat, cancel (`jobs.cancel`
reaches tasks through a marker file in the run folder), resume (through the
jobs queue). A failed point never stops the others. A point equal to a finished
run (same content hash) is skipped and that run's id stands for it; `again=True`
trains it anyway.

joblib picks the backend: local loky processes by default, whatever an
enclosing `joblib.parallel_config(...)` names (e.g. ray), and a dask.distributed
cluster when `scheduler` is given. On a cluster, every worker must import this
`engine` package (same code on its PYTHONPATH) and see the store and the data
folder at the same absolute paths (a shared filesystem). SQLite in WAL mode
needs the machines that write the store to share memory-mapped files, which
network filesystems do not provide reliably: with workers on several machines,
put the store on a filesystem that supports it or keep one writer machine.

The process running the sweep holds its queued runs (their pid); if it dies,
`jobs.reconcile` marks the runs it never started `interrupted`, and
`jobs.resume` runs them through the jobs queue.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable

from .config import ConfigError, RunConfig, without_unused
from .store import Store

SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://", "ws://", "wss://")


def parse_values(text: str) -> list:
    """'1e-4,1e-3,log' → [0.0001, 0.001, 'log']: JSON where it parses, else text.
    Commas inside [...] or {...} do not split ('classes=[0,1],[2,3]')."""
    items, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    out = []
    for item in items:
        item = item.strip()
        if not item:
            raise ValueError(f"empty value in {text!r}")
        try:
            out.append(json.loads(item))
        except json.JSONDecodeError:
            out.append(item)
    return out


def _label(point: dict) -> str:
    return " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in point.items())


def expand(base: dict | RunConfig, grid: dict[str, list], seeds: Iterable[int] | None = None) -> list[RunConfig]:
    """One validated RunConfig per grid point × seed (seeds innermost). Raises
    ConfigError naming the key (and the point) before anything is written."""
    base = base.to_dict() if isinstance(base, RunConfig) else dict(base)
    if not isinstance(grid, dict):
        raise ConfigError("grid", f"grid must map config keys to lists of values, got {type(grid).__name__}")
    known = set(RunConfig.__dataclass_fields__)
    for key, values in grid.items():
        if key not in known:
            raise ConfigError(key, f"unknown config key {key!r} in the grid; known keys: {', '.join(sorted(known))}")
        if key == "name":
            raise ConfigError(key, "name cannot be swept: each run is named after its grid point")
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(key, f"grid {key} needs a non-empty list of values, got {values!r}")
    seeds = list(seeds) if seeds is not None else None
    if seeds is not None:
        if "seed" in grid:
            raise ConfigError("seed", "give seeds either in the grid or as seeds, not both")
        if not seeds:
            raise ConfigError("seed", "seeds must not be empty")
    prefix = (base.get("name") or "").strip()
    configs = []
    for combo in itertools.product(*grid.values()):
        for seed in (seeds if seeds is not None else [None]):
            point = dict(zip(grid, combo))
            if seed is not None:
                point["seed"] = seed
            label = _label(point)
            name = f"{prefix} · {label}" if prefix and label else (prefix or label)
            if isinstance(name, str) and len(name) > 200:
                name = name[:199] + "…"
            if point.get("method", base.get("method")) != base.get("method"):   # a grid over methods:
                # the base's keys of another method go back to their defaults (rounds: the method's own)
                d = {**without_unused({k: v for k, v in {**base, "method": point["method"]}.items()
                                       if k != "rounds"}), **point, "name": name}
            else:
                d = {**base, **point, "name": name}
            try:
                configs.append(RunConfig.from_dict(d))
            except ConfigError as e:
                raise ConfigError(e.key, f"{e} (at sweep point {label})") from None
            except TypeError as e:      # e.g. a value of a type the dataclass cannot take
                raise ConfigError("grid", f"bad value at sweep point {label}: {e}") from None
    return configs


def new_sweep_id() -> str:
    return f"sw-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def _validated(configs, home) -> list[RunConfig]:
    """Every point validated, referenced runs included, before anything is written."""
    from . import jobs
    from .refs import check_references
    out = [RunConfig.from_dict(c) if isinstance(c, dict) else RunConfig.from_dict(c.to_dict(), unused="keep")
           for c in configs]
    if not out:
        raise ConfigError("grid", "the sweep has no runs")
    for c in out:
        check_references(c, jobs.resolve_home(home))
    return out


def run_one(home: str, run_id: str, data_dir: str | None = None, launcher: tuple | None = None) -> dict:
    """One joblib task: claim the sweep's queued run and execute it here (a loky
    process, a dask worker, maybe another machine). Never raises: the outcome is
    the run's status and reason, also returned."""
    from . import jobs
    if launcher is not None and tuple(launcher) != (jobs.hostname(), os.getpid()):
        jobs._lower_priority()      # a task process, like a queue worker (never the process that launched it)
    store = Store(home)
    me = os.getpid()
    attempt = store.claim(run_id, {"status": "queued", "executor": "sweep"}, status="running", pid=me,
                          pid_start=jobs.proc_start_time(me), host=jobs.hostname(), heartbeat=time.time(),
                          slot=None, reason=None)
    if attempt is None:                  # cancelled (or resumed elsewhere) before its turn
        r = store.get_run(run_id)
        return {"run_id": run_id, "status": r["status"], "reason": r["reason"]}
    result = jobs.execute_here(store, run_id, data_dir, resume=False, stop=threading.Event(), attempt=attempt)
    # This process goes on to other points: a run it failed or cancelled itself is no longer
    # held (so `resume` need not wait for the whole sweep); a done run keeps where it ran.
    with contextlib.suppress(Exception):
        store.update_run_if(run_id, {"pid": me, "attempt": attempt, "status": ("failed", "cancelled")},
                            pid=None, pid_start=None)
    return result


def _dask_backend(client):
    """joblib's dask backend that always runs tasks on the cluster: the stock one
    reports the cluster's core count as n_jobs, and with a single core joblib would
    run every task in this process instead."""
    from joblib._dask import DaskDistributedBackend

    class ClusterBackend(DaskDistributedBackend):
        def effective_n_jobs(self, n_jobs):
            return max(2, super().effective_n_jobs(n_jobs))

    return ClusterBackend(client=client, wait_for_workers_timeout=60)


def run_sweep(configs: Iterable[RunConfig | dict], home=None, data_dir=None, scheduler: str | None = None,
              n_jobs: int = 1, on_start: Callable[[str, list[str]], None] | None = None,
              results: list | None = None, again: bool = False) -> tuple[str, list[str]]:
    """Create the sweep's runs and execute them through joblib; returns when all
    have ended (each done, failed or cancelled, with its reason in the store).
    `scheduler` ("tcp://HOST:PORT") runs them on that dask.distributed cluster;
    `on_start(sweep_id, run_ids)` is called once the runs exist; `results`, when
    given, receives each task's outcome (run_id, status, reason; status "stale" for
    a task whose run was taken over by a resume elsewhere). A point equal to a finished
    run is not trained again (unless `again`): its id comes back as a `jobs.Reused`."""
    import joblib

    from . import jobs
    configs = _validated(configs, home)
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.startswith(SCHEMES)):
        raise ValueError(f"scheduler must be a dask address such as tcp://HOST:PORT, got {scheduler!r}")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be a positive integer or -1, got {n_jobs!r}")

    with _backend(scheduler):            # connect first: an unreachable cluster writes nothing
        store, home = jobs._open(home)
        dd = jobs._data_dir(data_dir)
        sweep_id = new_sweep_id()
        me = os.getpid()
        holder = {"executor": "sweep", "pid": me, "pid_start": jobs.proc_start_time(me), "host": jobs.hostname(),
                  "data_dir": dd}
        run_ids = []
        for c in configs:
            done = None if again else jobs.find_done(c, store=store)
            run_ids.append(jobs.Reused(done["id"]) if done else store.create_run(
                c.to_dict(), c.content_hash(), name=c.name, status="queued", sweep_id=sweep_id, extra=holder))
        new = [rid for rid in run_ids if not isinstance(rid, jobs.Reused)]
        if on_start:
            on_start(sweep_id, run_ids)
        try:
            # (with dask the cluster's size sets the parallelism and n_jobs is not used)
            launcher = (jobs.hostname(), me)
            out = joblib.Parallel(n_jobs=n_jobs, batch_size=1)(joblib.delayed(run_one)(str(home), rid, dd, launcher)
                                                               for rid in new) if new else []
            if results is not None:
                results.extend(out)
        finally:
            for rid in new:               # what an error or Ctrl-C kept from starting
                store.update_run_if(rid, {"status": "queued", "executor": "sweep"}, status="cancelled",
                                    finished=time.time(), reason="the sweep stopped before this run started")
    return sweep_id, run_ids


@contextlib.contextmanager
def _backend(scheduler: str | None):
    """Nothing for local joblib; a dask Client and the dask joblib backend for a scheduler."""
    if not scheduler:
        yield
        return
    import joblib
    from dask.distributed import Client
    with Client(scheduler, timeout="30s", set_as_default=False) as client, \
            joblib.parallel_config(backend=_dask_backend(client)):
        yield


def submit_sweep(configs: Iterable[RunConfig | dict], home=None, data_dir=None,
                 again: bool = False) -> tuple[str, list[str]]:
    """Queue the sweep's runs for background workers (the jobs queue: cap, device
    slots, survives the caller); returns at once. Points equal to a done, running or
    queued run are not queued again (unless `again`): their ids come back as `jobs.Reused`."""
    from . import jobs
    configs = _validated(configs, home)
    sweep_id = new_sweep_id()
    run_ids = [jobs.submit(c, home, data_dir, sweep_id=sweep_id, start=False, again=again) for c in configs]
    jobs.pump(home)
    return sweep_id, run_ids


def reused_count(run_ids: list[str]) -> int:
    """How many of a sweep's points reused an equal run instead of training."""
    from .jobs import Reused
    return sum(isinstance(rid, Reused) for rid in run_ids)


def sweep_runs(sweep_id: str, home=None) -> list[dict]:
    """The runs of one sweep, oldest first."""
    from . import jobs
    store, _ = jobs._open(home)
    return [r for r in reversed(store.list_runs()) if r["sweep_id"] == sweep_id]
