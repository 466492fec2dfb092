"""Command line: python -m engine {run,submit,show,list,cancel,resume,sweep,export,presets,worker} ...

Bad input prints one line on stderr and exits 2, before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from .config import PRESETS, ConfigError, RunConfig, without_unused
from .text import for_terminal as tty  # stored text printed raw could rewrite the terminal


class UsageError(Exception):
    pass


def _home(args) -> Path:
    from .runner import default_home
    return Path(args.home) if args.home else default_home()


def _open_store(args, must_exist: bool = True, reconcile: bool = False):
    from .store import Store
    home = _home(args)
    if must_exist and not (home / "lottery.db").exists():
        raise UsageError(f"no store at {home} (run something first, or pass --home DIR)")
    store = Store(home)
    if reconcile:  # show dead workers' runs as interrupted, not as running forever
        from . import jobs
        jobs.reconcile(home)       # (does nothing on a full disk, where nothing can be marked)
    return store


def _load_config(args) -> RunConfig:
    if bool(args.config) == bool(args.preset):
        raise UsageError("give exactly one of --config FILE.json or --preset NAME")
    if args.preset:
        if args.preset not in PRESETS:
            raise UsageError(f"unknown preset {args.preset!r}; known: {', '.join(PRESETS)}")
        d = dict(PRESETS[args.preset])
    else:
        path = Path(args.config)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise UsageError(f"cannot read config file {path}: {e.strerror}") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"config file {path} is not valid JSON: {e}") from None
    sets = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            sets[key] = json.loads(value)
        except json.JSONDecodeError:
            sets[key] = value
    if args.preset and sets.get("method", d.get("method")) != d.get("method"):
        # `--preset digits --set method=imp`: the preset's concave keys are not the user's to answer for
        d = without_unused({k: v for k, v in {**d, "method": sets["method"]}.items() if k != "rounds"})
    return RunConfig.from_dict({**d, **sets})


# ------------------------------------------------------------------ commands

def cmd_run(args) -> int:
    from . import jobs, runner
    from .data import default_data_dir
    from .refs import check_references
    from .store import StaleWriter, Store
    from .train import Cancelled
    cfg = _load_config(args)
    check_references(cfg, _home(args))
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    if not args.again and (_home(args) / "lottery.db").exists():
        done = jobs.find_done(cfg, _home(args))
        if done is not None:
            _say_reused(done["id"], "finished")
            print(done["id"])
            return 0
    store = Store(_home(args))
    store.require_space("starting a run")
    run_id = runner.create(store, cfg, status="running")
    print(f"run {run_id}: {cfg.method} on {cfg.model}/{cfg.dataset}", file=sys.stderr)
    bar = _progress_bar(args.quiet)
    # Liveness like a worker's (pid + start time + heartbeat thread), and `cancel RUN_ID`
    # from another terminal reaches this process through the run's cancel marker.
    me = os.getpid()
    store.update_run(run_id, pid=me, pid_start=jobs.proc_start_time(me))
    beat = jobs.Heartbeat(store, run_id, me).start()
    should_stop = jobs.StopCheck(threading.Event(), store.run_dir(run_id) / jobs.CANCEL_MARKER)
    try:
        summary = runner.execute(store, run_id, data_dir, progress=bar, should_stop=should_stop)
    except StaleWriter as e:   # stopped (Ctrl-Z, SIGSTOP) while the run was resumed elsewhere
        print(f"error: {e}", file=sys.stderr)
        print(run_id)
        return jobs.EXIT_STALE
    except Cancelled:
        print(f"run {run_id} cancelled; `python -m engine resume {run_id}` continues it", file=sys.stderr)
        print(run_id)
        return 3
    except KeyboardInterrupt:
        try:
            store.update_run(run_id, status="cancelled", reason="interrupted from the keyboard",
                             finished=time.time())
        except StaleWriter as e:
            print(f"error: {e}", file=sys.stderr)
            print(run_id)
            return jobs.EXIT_STALE
        print(f"run {run_id} cancelled", file=sys.stderr)
        print(run_id)
        return 130
    except Exception as e:  # the runner already marked it failed, with failure_reason's line
        why = jobs.failure_reason(e)
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"run {run_id} failed: {tty(why or f'{type(e).__name__}: {first}')}", file=sys.stderr)
        print(f"(traceback in {store.run_dir(run_id) / 'error.txt'})", file=sys.stderr)
        print(run_id)
        return 1
    finally:
        beat.stop()
        bar(None, None)
    print(f"done: test accuracy {summary['test_accuracy']:.4f}, remaining {summary['remaining']:.4f} "
          f"({summary['kept']}/{summary['total']} weights), {summary['wall_seconds']:.1f} s", file=sys.stderr)
    print(run_id)
    return 0


def _progress_bar(quiet: bool):
    """A tqdm bar on stderr driven by the run's progress callback; call with None to close."""
    from tqdm import tqdm
    state = {"bar": None}

    def update(frac, label):
        if quiet:
            return
        if frac is None:
            if state["bar"] is not None:
                state["bar"].close()
            return
        if state["bar"] is None:
            state["bar"] = tqdm(total=1000, file=sys.stderr, unit="‰", dynamic_ncols=True,
                                bar_format="{l_bar}{bar}| {elapsed}<{remaining}")
        b = state["bar"]
        b.set_description(label)
        b.update(int(frac * 1000) - b.n)

    return update


def run_view(store, run: dict) -> dict:
    """What `show --json` prints (also used by the app)."""
    out = {k: run[k] for k in ("id", "name", "status", "reason", "config", "progress", "phase", "created",
                               "started", "finished", "sweep_id")}
    if run.get("damaged"):
        out["damaged"] = run["damaged"]
    if run.get("example"):           # a class-pack example run (read-only)
        out["example"] = True
    if run.get("estimate") is not None:      # seconds to the result, as estimated at launch
        out["estimate"] = run["estimate"]
    if run.get("slot") is not None:          # the GPU the queue gave the run's worker
        out["slot"] = run["slot"]
    if run["status"] == "running":
        out["pid"] = run["pid"]
        out["heartbeat"] = None if run["heartbeat"] is None else round(time.time() - run["heartbeat"], 3)
    if run["summary"] is not None:
        out["summary"] = run["summary"]
    out["checks"] = store.checks(run["id"])
    return out


def cmd_show(args) -> int:
    from .store import UnknownRun
    store = _open_store(args, reconcile=True)
    try:
        run = store.get_run(args.run_id)
    except UnknownRun as e:
        raise UsageError(str(e)) from None
    view = run_view(store, run)
    if args.json:
        print(json.dumps(view, indent=2, default=str))
    else:
        for k, v in view.items():
            if k not in ("config", "summary", "checks"):
                print(f"{k:>10}: {tty(v)}")
        if "summary" in view:
            s = view["summary"]
            print(f"   summary: test acc {s['test_accuracy']:.4f}, remaining {s['remaining']:.4f} "
                  f"({s['kept']}/{s['total']}), {s['wall_seconds']:.1f} s")
        for c in view["checks"]:
            print(f"     check: {'PASS' if c['passed'] else 'FAIL'} {tty(c['name'])} = {c['value']} "
                  f"({tty(c['detail'])})")
    return 0


def cmd_list(args) -> int:
    home = _home(args)
    if not (home / "lottery.db").exists():
        print("[]" if args.json else "no runs yet")
        return 0
    store = _open_store(args, reconcile=True)
    runs = store.list_runs()
    if args.json:
        print(json.dumps([run_view(store, r) for r in runs], default=str))
        return 0
    if not runs:
        print("no runs yet")
    for r in runs:
        cfg = r["config"] or {}
        s = r["summary"] or {}
        acc = f"{s['test_accuracy']:.4f}" if "test_accuracy" in s else "-"
        rem = f"{s['remaining']:.4f}" if "remaining" in s else "-"
        damaged = f"  damaged: {tty(r['damaged'])}" if r.get("damaged") else ""
        print(f"{tty(r['id'])}  {tty(r['status']):<11} {tty(cfg.get('method', '?')):<8} "
              f"{tty(cfg.get('model', '?'))}/{tty(cfg.get('dataset', '?')):<14} acc {acc}  remaining {rem}  "
              f"{tty(r['name'] or '')}{damaged}{'  (class-pack example)' if r.get('example') else ''}")
    return 0


def cmd_export(args) -> int:
    from .store import UnknownRun, damage_of
    store = _open_store(args)
    try:
        run = store.get_run(args.run_id)
    except UnknownRun as e:
        raise UsageError(str(e)) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(run["config"], indent=2, sort_keys=True))
    rows = store.metrics(run["id"])
    if rows:
        keys = sorted({k for r in rows for k in r})
        with open(out / "metrics.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    if run["summary"] is not None:
        (out / "summary.json").write_text(json.dumps(run["summary"], indent=2))
    damaged = {}
    for name in ("ticket.pt",):
        src = store.run_dir(run["id"]) / name
        if not src.exists():
            continue
        shutil.copyfile(src, out / name)
        why = damage_of(out / name)    # what was exported must load safely, or be marked damaged
        if why:
            os.replace(out / name, out / f"{name}.damaged")
            damaged[name] = why
            print(f"warning: {why} Exported as {name}.damaged", file=sys.stderr)
    if damaged:
        (out / "DAMAGED.json").write_text(json.dumps(damaged, indent=2))
    print(out)
    return 1 if damaged else 0


def cmd_deploy(args) -> int:
    from .deploy import DeployError, deploy, measure_folder, parse_calls
    store = _open_store(args)
    try:
        reps = parse_calls(args.calls) if args.calls else None
        if args.latency_only:
            lat = measure_folder(args.out, reps)
            for r in lat["rows"]:
                print(f"  {r['impl']:<12} batch {r['batch']:>3}  {r['threads']} thread(s)  "
                      f"{r['median_ms']:.3f} ms", file=sys.stderr)
            print(args.out)
            return 0
        rep = deploy(store, args.run_id, args.out, fp16=args.fp16, force=args.force, data_dir=args.data_dir,
                     bench=args.bench, bench_reps=reps)
    except DeployError as e:
        raise UsageError(str(e)) from None
    s, p = rep["sizes"], rep["parity"]
    lg = p["logits"]
    print(f"compact {rep['files']['compact_bytes']} bytes (dense fp32 {s['dense_fp32']}, sparse fp16 "
          f"{s['sparse_fp16']}); parity on {p['n']} test images: logits within {lg['deployed']:.2g} (loader), "
          f"{lg['onnx']:.2g} (onnxruntime) of the masked model's, bound {lg['tolerance']:g} relative; "
          f"{p['differ_deployed']} predictions differ (loader), {p['differ_onnx']} (onnxruntime): "
          f"{'PASS' if p['passed'] else 'FAIL'}", file=sys.stderr)
    if rep["header"].get("failed_checks"):
        print(f"deployed with --force although its self-checks failed: "
              f"{', '.join(c['name'] for c in rep['header']['failed_checks'])} (recorded in the file's header)",
              file=sys.stderr)
    if not rep.get("deployed", True):
        print(f"FAIL: parity outside its bound, so the model files were removed; {args.out}/deploy.json says "
              f"why", file=sys.stderr)
    for r in rep.get("latency", []):
        print(f"  {r['impl']:<12} batch {r['batch']:>3}  {r['threads']} thread(s)  {r['median_ms']:.3f} ms",
              file=sys.stderr)
    print(args.out)
    return 0 if p["passed"] else 1


def cmd_presets(args) -> int:
    for name, d in PRESETS.items():
        print(f"{name:<18} {json.dumps(d)}")
    return 0


# ------------------------------------------------------------------ background runs and sweeps

def _jobs_call(fn, *a, **kw):
    from .jobs import JobError
    try:
        return fn(*a, **kw)
    except JobError as e:
        raise UsageError(str(e)) from None


def _say_reused(run_id: str, status: str) -> None:
    what = "finished" if status in ("done", "finished") else status
    print(f"reusing {what} run {run_id} with the same config; --again trains a new one", file=sys.stderr)


def cmd_submit(args) -> int:
    from . import jobs
    from .store import Store
    cfg = _load_config(args)
    run_id = _jobs_call(jobs.submit, cfg, _home(args), args.data_dir, again=args.again)
    status = Store(_home(args)).get_run(run_id)["status"]
    if isinstance(run_id, jobs.Reused):
        _say_reused(run_id, status)
        print(run_id)
        return 0
    print(f"run {run_id}: {cfg.method} on {cfg.model}/{cfg.dataset} "
          f"{'started' if status == 'running' else status} (show with: python -m engine show {run_id})",
          file=sys.stderr)
    print(run_id)
    return 0


def cmd_cancel(args) -> int:
    from . import jobs
    if not args.grace >= 0:
        raise UsageError(f"--grace must be ≥ 0 seconds, got {args.grace}")
    _open_store(args)          # an existing store, or one line and exit 2 (nothing created)
    run = _jobs_call(jobs.cancel, args.run_id, _home(args), grace=args.grace)
    print(f"run {run['id']} {run['status']}{': ' + tty(run['reason']) if run['reason'] else ''}", file=sys.stderr)
    print(run["status"])
    return 0 if run["status"] == "cancelled" else 1


def cmd_resume(args) -> int:
    from . import jobs
    _open_store(args)
    run = _jobs_call(jobs.resume, args.run_id, _home(args), force=args.force)
    print(f"run {run['id']} {'resumed' if run['status'] == 'running' else run['status'] + ' to resume'}",
          file=sys.stderr)
    print(run["id"])
    return 0


def cmd_classpack(args) -> int:
    """build / import / status of the class pack; a damaged or missing pack: one line, exit 2."""
    from . import classpack
    from .store import Store
    try:
        if args.action == "build":
            if args.pack:
                raise UsageError("classpack build writes to --out DIR (no positional folder)")
            only = [k for k in (args.only or "").split(",") if k] or None
            out = Path(args.out) if args.out else None
            if args.full and out is None:     # never over the committed (small) pack by accident
                out = _home(args) / "classpack-full"
            path = classpack.build(out, full=args.full, home=args.home, data_dir=args.data_dir, keys=only,
                                   say=lambda m: print(m, file=sys.stderr, flush=True))
            if args.full:
                print(f"use it in a store with: python -m engine classpack import {path} [--home DIR]",
                      file=sys.stderr)
            print(path)
            return 0
        store = Store(_home(args))
        pack = Path(args.pack) if args.pack else classpack.pack_dir_for(store)
        if pack is None:
            raise UsageError("LOTTERY_CLASSPACK is off: name a pack folder, e.g. classpack import DIR")
        if args.action == "import":
            ids = classpack.import_pack(store, pack, remember=bool(args.pack))
            print(f"class pack {pack}: {len(ids)} example runs in the store at {store.home}", file=sys.stderr)
            for i in ids:
                print(i)
            return 0
        m = classpack.read_manifest(pack)           # status
        have = classpack.example_ids(store)
        groups: dict[str, int] = {}
        for r in m["runs"]:
            groups[r.get("group", "?")] = groups.get(r.get("group", "?"), 0) + 1
        print(f"class pack {pack} ({m.get('kind', '?')}): {len(m['runs'])} runs, "
              f"{classpack.pack_size(pack) / 1e6:.2f} MB; " + ", ".join(f"{g} {n}" for g, n in groups.items()))
        print(f"store {store.home}: {sum(r['id'] in have for r in m['runs'])} of them imported as examples")
        return 0
    except classpack.PackError as e:
        print(f"error: {tty(e)}", file=sys.stderr)
        return 2


def cmd_worker(args) -> int:
    # The handler first, before the heavy imports. While still starting there is
    # nothing to save, so SIGTERM exits at once (`cancel` sees the process gone and
    # records it); once the run is set up it only raises the flag the training loop
    # polls: the run finishes its step, checkpoints and records `cancelled`.
    import signal
    import threading
    stop = threading.Event()
    starting = [True]

    def on_sigterm(signum, frame):
        stop.set()
        if starting[0]:
            raise SystemExit(3)

    signal.signal(signal.SIGTERM, on_sigterm)
    from . import jobs
    home = _home(args)
    starting[0] = False
    return _jobs_call(jobs.work, args.run_id, home, args.data_dir, stop=stop, attempt=args.attempt)


def cmd_sweep(args) -> int:
    from . import sweep
    from .store import Store
    base = _load_config(args).to_dict()
    grid: dict[str, list] = {}
    for item in args.grid or []:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--grid expects KEY=V1,V2,..., got {item!r}")
        if key in grid:
            raise UsageError(f"--grid {key} given twice")
        try:
            grid[key] = sweep.parse_values(values)
        except ValueError as e:
            raise UsageError(f"--grid {key}: {e}") from None
    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise UsageError(f"--seeds expects integers separated by commas, got {args.seeds!r}") from None
    if args.scheduler is not None and not args.scheduler.startswith(sweep.SCHEMES):
        raise UsageError(f"--scheduler must be a dask address such as tcp://HOST:PORT, got {args.scheduler!r}")
    if args.scheduler and args.background:
        raise UsageError("give --scheduler or --background, not both")
    if args.jobs == 0 or args.jobs < -1:
        raise UsageError(f"--jobs must be a positive integer or -1 (all cores), got {args.jobs}")
    configs = sweep.expand(base, grid, seeds)     # every point validated before anything is written

    def started(sweep_id, run_ids):
        print(sweep_id, flush=True)
        for rid in run_ids:
            print(rid, flush=True)
        where = f"on {args.scheduler}" if args.scheduler else f"with {args.jobs} local job(s)"
        skipped = sweep.reused_count(run_ids)
        note = (f"; {skipped} point(s) equal to an earlier run reuse it and are not trained again (--again "
                f"trains them)" if skipped else "")
        print(f"sweep {sweep_id}: {len(run_ids) - skipped} runs {where}{note}", file=sys.stderr, flush=True)

    if args.background:
        sweep_id, run_ids = _jobs_call(sweep.submit_sweep, configs, _home(args), args.data_dir, again=args.again)
        started(sweep_id, run_ids)
        print("queued for background workers; follow with: python -m engine list", file=sys.stderr)
        return 0
    results: list[dict] = []
    try:
        sweep_id, run_ids = sweep.run_sweep(configs, _home(args), args.data_dir, scheduler=args.scheduler,
                                            n_jobs=args.jobs, on_start=started, results=results,
                                            again=args.again)
    except OSError as e:          # e.g. the scheduler cannot be reached (nothing was written)
        print(f"error: sweep failed: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        return 1
    runs = {r["id"]: r for r in Store(_home(args)).list_runs() if r["id"] in set(run_ids)}   # reused ones too
    for rid in run_ids:
        r = runs.get(rid) or {"status": "?", "summary": None, "reason": None, "name": ""}
        s = r["summary"] or {}
        acc = f"acc {s['test_accuracy']:.4f} remaining {s['remaining']:.4f}" if "test_accuracy" in s else \
            (r["reason"] or "")
        print(f"{rid}  {r['status']:<10} {tty(acc)}  {tty(r['name'])}", file=sys.stderr)
    stale = [r for r in results if r["status"] == "stale"]
    for r in stale:
        print(f"error: {tty(r['reason'])}", file=sys.stderr)
    if stale:
        from .jobs import EXIT_STALE
        return EXIT_STALE
    return 0 if all(runs.get(rid, {}).get("status") == "done" for rid in run_ids) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description="Lottery Lab engine")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--home", help="store root (env LOTTERY_HOME; default cache/ in the project)")

    def config_source(sp, what: str = "config"):
        """Where a config comes from (run, submit, sweep share these) and the dataset folder."""
        sp.add_argument("--config", help=f"the {what} as a RunConfig JSON file")
        sp.add_argument("--preset", help=f"or a built-in preset as the {what}: {', '.join(PRESETS)}")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help=f"override one {what} key")
        sp.add_argument("--data-dir", help="dataset folder (env LOTTERY_DATA; default cache/data)")

    def again(sp, what: str = "a config equal to a finished run's"):
        sp.add_argument("--again", action="store_true",
                        help=f"train {what} anyway (by default its run id is printed and nothing is trained)")

    sp = sub.add_parser("run", help="run one config in the foreground; prints the run id last")
    config_source(sp)
    again(sp)
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    common(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("submit", help="queue a run for a background worker; prints its id")
    config_source(sp)
    again(sp, "a config equal to a finished, running or queued run's")
    common(sp)
    sp.set_defaults(func=cmd_submit)

    sp = sub.add_parser("cancel", help="cancel a queued or running run (SIGTERM, then SIGKILL after --grace)")
    sp.add_argument("run_id")
    sp.add_argument("--grace", type=float, default=10.0, help="seconds to wait before SIGKILL (default 10)")
    common(sp)
    sp.set_defaults(func=cmd_cancel)

    sp = sub.add_parser("resume", help="continue an interrupted, cancelled or failed run from its last checkpoint")
    sp.add_argument("run_id")
    sp.add_argument("--force", action="store_true",
                    help="kill the run's recorded process first if it is still alive (e.g. stopped with Ctrl-Z)")
    common(sp)
    sp.set_defaults(func=cmd_resume)

    sp = sub.add_parser("sweep", help="run a grid of configs × seeds through joblib (or a dask cluster)")
    config_source(sp, "base config")
    sp.add_argument("--grid", action="append", metavar="KEY=V1,V2,...",
                    help="values of one key (JSON where it parses, else text); repeat for a product")
    sp.add_argument("--seeds", metavar="S1,S2,...", help="seeds for every grid point")
    sp.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run on this dask.distributed cluster")
    sp.add_argument("--jobs", type=int, default=1, help="local parallel runs (joblib n_jobs; -1 = all cores)")
    sp.add_argument("--background", action="store_true",
                    help="queue the runs for background workers (the jobs queue) and return at once")
    again(sp, "grid points equal to finished runs (with --background, also to queued or running ones)")
    common(sp)
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser("worker", help="(internal) execute one claimed run; started by the jobs queue")
    sp.add_argument("run_id")
    sp.add_argument("--data-dir")
    sp.add_argument("--attempt", type=int, help="the attempt the jobs queue claimed the run as")
    common(sp)
    sp.set_defaults(func=cmd_worker)

    sp = sub.add_parser("show", help="one run's status, config, summary and checks")
    sp.add_argument("run_id")
    sp.add_argument("--json", action="store_true")
    common(sp)
    sp.set_defaults(func=cmd_show)

    sp = sub.add_parser("list", help="every run in the store")
    sp.add_argument("--json", action="store_true")
    common(sp)
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("export", help="write config.json, metrics.csv, summary.json and ticket.pt to a folder")
    sp.add_argument("run_id")
    sp.add_argument("--out", required=True)
    common(sp)
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("deploy", help="write a finished ticket as a compact sparse safetensors file + dense "
                                       "ONNX, and check their predictions against the masked model")
    sp.add_argument("run_id")
    sp.add_argument("--out", required=True, help="folder for model.safetensors, model.onnx, deploy.json")
    sp.add_argument("--fp16", action="store_true", help="store the kept weights as float16 (half the bytes)")
    sp.add_argument("--force", action="store_true", help="replace an output folder that is not empty, and deploy "
                                                         "a run whose self-checks failed (its header records them)")
    sp.add_argument("--bench", action="store_true", help="also measure CPU latency (dense, sparse, onnxruntime)")
    sp.add_argument("--latency-only", action="store_true",
                    help="build nothing: time the files already in --out and write latency.json there")
    sp.add_argument("--calls", metavar="N1,N128",
                    help="with --bench or --latency-only: timed calls at batch 1 and 128 (default 200,50)")
    sp.add_argument("--data-dir", help="dataset folder for the parity check (env LOTTERY_DATA)")
    common(sp)
    sp.set_defaults(func=cmd_deploy)

    sp = sub.add_parser("classpack", help="the class pack of ready-made example runs: build, import, status")
    sp.add_argument("action", choices=("build", "import", "status"))
    sp.add_argument("pack", nargs="?", help="import/status: the pack folder (default: $LOTTERY_CLASSPACK, the "
                                            "store's chosen pack, else the one in the repository)")
    sp.add_argument("--out", help="build: where to write the pack (default: engine/classpack/pack; with --full, "
                                  "classpack-full/ in the store)")
    sp.add_argument("--full", action="store_true", help="build: the bigger pack (3 seeds, full-length LeNet runs), "
                                                        "trained by the background queue of --home")
    sp.add_argument("--only", metavar="KEY,...", help="build: only these runs (and the runs they refer to)")
    sp.add_argument("--data-dir", help="dataset folder (env LOTTERY_DATA; default cache/data)")
    common(sp)
    sp.set_defaults(func=cmd_classpack)

    sp = sub.add_parser("presets", help="list the built-in presets")
    sp.set_defaults(func=cmd_presets)
    return p


def main(argv=None) -> int:
    from .store import DiskFull
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"error: invalid config: {tty(e)}", file=sys.stderr)
    except (UsageError, DiskFull) as e:
        print(f"error: {tty(e)}", file=sys.stderr)
    return 2


def _main_quiet_on_broken_pipe() -> int:
    """main(); when the reader of stdout has gone (`list | head`), end quietly with
    128 + SIGPIPE, as Unix tools do, instead of printing a BrokenPipeError traceback."""
    try:
        rc = main()
        sys.stdout.flush()          # a closed pipe shows up here rather than at exit
        return rc
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # so the flush at exit is silent
        return 141


if __name__ == "__main__":
    sys.exit(_main_quiet_on_broken_pipe())
