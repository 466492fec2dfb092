"""Command line: python -m engine {run,show,list,export,presets} ...

Bad input prints one line on stderr and exits 2, before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path

from .config import PRESETS, ConfigError, RunConfig


class UsageError(Exception):
    pass


def _home(args) -> Path:
    from .runner import default_home
    return Path(args.home) if args.home else default_home()


def _open_store(args, must_exist: bool = True):
    from .store import Store
    home = _home(args)
    if must_exist and not (home / "lottery.db").exists():
        raise UsageError(f"no store at {home} (run something first, or pass --home DIR)")
    return Store(home)


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
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            d[key] = json.loads(value)
        except json.JSONDecodeError:
            d[key] = value
    return RunConfig.from_dict(d)


# ------------------------------------------------------------------ commands

def cmd_run(args) -> int:
    from . import runner
    from .data import default_data_dir
    from .store import Store

    cfg = _load_config(args)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    store = Store(_home(args))
    run_id = runner.create(store, cfg, status="running")
    print(f"run {run_id}: {cfg.method} on {cfg.model}/{cfg.dataset}", file=sys.stderr)
    bar = _progress_bar(args.quiet)
    try:
        summary = runner.execute(store, run_id, data_dir, progress=bar)
    except KeyboardInterrupt:
        store.update_run(run_id, status="cancelled", reason="interrupted from the keyboard", finished=time.time())
        print(f"run {run_id} cancelled", file=sys.stderr)
        print(run_id)
        return 130
    except Exception as e:  # the run is already marked failed with its reason
        print(f"run {run_id} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        print(f"(traceback in {store.run_dir(run_id) / 'error.txt'})", file=sys.stderr)
        print(run_id)
        return 1
    finally:
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
    if run["status"] == "running":
        out["pid"] = run["pid"]
        out["heartbeat"] = None if run["heartbeat"] is None else round(time.time() - run["heartbeat"], 3)
    if run["summary"] is not None:
        out["summary"] = run["summary"]
    out["checks"] = store.checks(run["id"])
    return out


def cmd_show(args) -> int:
    from .store import UnknownRun
    store = _open_store(args)
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
                print(f"{k:>10}: {v}")
        if "summary" in view:
            s = view["summary"]
            print(f"   summary: test acc {s['test_accuracy']:.4f}, remaining {s['remaining']:.4f} "
                  f"({s['kept']}/{s['total']}), {s['wall_seconds']:.1f} s")
        for c in view["checks"]:
            print(f"     check: {'PASS' if c['passed'] else 'FAIL'} {c['name']} = {c['value']} ({c['detail']})")
    return 0


def cmd_list(args) -> int:
    home = _home(args)
    if not (home / "lottery.db").exists():
        print("[]" if args.json else "no runs yet")
        return 0
    store = _open_store(args)
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
        print(f"{r['id']}  {r['status']:<11} {cfg.get('method', '?'):<8} {cfg.get('model', '?')}/"
              f"{cfg.get('dataset', '?'):<14} acc {acc}  remaining {rem}  {r['name'] or ''}")
    return 0


def cmd_export(args) -> int:
    from .store import UnknownRun
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
    ticket = store.run_dir(run["id"]) / "ticket.pt"
    if ticket.exists():
        shutil.copyfile(ticket, out / "ticket.pt")
    print(out)
    return 0


def cmd_presets(args) -> int:
    for name, d in PRESETS.items():
        print(f"{name:<18} {json.dumps(d)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description="Lottery Lab engine")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--home", help="store root (env LOTTERY_HOME; default cache/ in the project)")

    sp = sub.add_parser("run", help="run one config in the foreground; prints the run id last")
    sp.add_argument("--config", help="a RunConfig JSON file")
    sp.add_argument("--preset", help=f"a built-in preset: {', '.join(PRESETS)}")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config key")
    sp.add_argument("--data-dir", help="dataset folder (env LOTTERY_DATA; default cache/data)")
    sp.add_argument("--quiet", action="store_true", help="no progress bar")
    common(sp)
    sp.set_defaults(func=cmd_run)

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

    sp = sub.add_parser("presets", help="list the built-in presets")
    sp.set_defaults(func=cmd_presets)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"error: invalid config: {e}", file=sys.stderr)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
