"""The GPU path, end to end, as one prepared script for a short lease of a GPU machine.

    python bench/gpu.py --device cuda [--budget 480] [--out DIR]
    python bench/gpu.py --quick             # the same steps on tiny settings (CPU; the test suite runs this)

What it measures and checks, in order of importance, each step written to
bench/results/gpu_gpu.json (gpu_quick.json with --quick) as soon as it ends, so a
lease that runs out still leaves every finished step behind:

1. speed: masked-search / dense / binary-retrain epoch times and ratios (bench/speed.py's
   measure) for ResNet-20 on a CIFAR-10-sized synthetic set and LeNet-300-100 on MNIST
   (synthetic when the MNIST files are absent), in fp32 and bf16 autocast, then with
   torch.compile while the budget lasts;
2. run: a short concave ResNet-20 run from the `resnet20-cifar10` preset (its cosine
   schedule, a target sparsity) through `python -m engine run`, in its own process:
   exit code, the run's self-checks, the ticket file;
3. workers: two runs submitted together through `python -m engine submit` with a cap of
   two, so two background workers train at once, each on its device slot (one per GPU;
   both on the one GPU of a one-GPU machine, which the result says);
4. resume: a background run cancelled mid-search, resumed from its checkpoint, ends done;
5. oom: a run that cannot fit in the memory it is allowed (torch's per-process memory
   fraction, set through LOTTERY_CUDA_MEMORY_FRACTION) fails with the documented reason
   "CUDA out of memory: …".

The device machine has PyTorch and torchvision but no Streamlit: only the engine runs here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import RESULTS, ROOT, machine

from engine.data import default_data_dir, mnist_available

ENGINE = [sys.executable, "-m", "engine"]


class Report:
    """The result file, rewritten after every step (and copied to --out)."""

    def __init__(self, name: str, out: Path | None, budget: float):
        self.path = RESULTS / name
        self.out = out
        self.t0 = time.time()
        self.budget = budget
        self.data: dict = {"machine": machine(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "gpus": _gpus(), "steps": {}}

    def left(self) -> float:
        return self.budget - (time.time() - self.t0)

    def put(self, key: str, value) -> None:
        self.data["steps"][key] = value
        self.data["elapsed_s"] = round(time.time() - self.t0, 1)
        RESULTS.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.data, indent=2, default=str)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)
        if self.out:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / self.path.name).write_text(text)
        print(f"[{self.data['elapsed_s']:6.1f}s] {key}: {json.dumps(value, default=str)[:400]}", flush=True)


def _gpus() -> list[dict]:
    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                    "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
    return out


def device_label(device: str) -> str:
    """'cuda:0 (NVIDIA H200)' for a GPU, 'cpu' otherwise: the rows say which device they timed."""
    if device.startswith("cuda") and torch.cuda.is_available():
        i = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        return f"cuda:{i} ({torch.cuda.get_device_name(i)})"
    return "cpu"


def speed_rows(rep: Report, device: str, quick: bool, repeats: int, only_rows: str = "") -> None:
    import speed
    # (model, precision, compile, rough seconds on an H200 — to skip what the budget cannot hold)
    plan = [("resnet20", "fp32", False, 60), ("resnet20", "bf16", False, 50),
            ("lenet300", "fp32", False, 25), ("lenet300", "bf16", False, 25),
            ("lenet300", "bf16", True, 90), ("resnet20", "bf16", True, 180),
            ("lenet300", "fp32", True, 90), ("resnet20", "fp32", True, 180)]
    if only_rows:
        wanted = only_rows.split(",")
        plan = sorted((r for r in plan if f"{r[0]}/{r[1]}/{'compile' if r[2] else 'eager'}" in wanted),
                      key=lambda r: wanted.index(f"{r[0]}/{r[1]}/{'compile' if r[2] else 'eager'}"))
    if quick:
        plan = [(m, p, c, 0) for m, p, c, _ in plan[:2]]
    rows = []
    for model, precision, compile_, cost in plan:
        key = f"{model}/{precision}/{'compile' if compile_ else 'eager'}"
        # the later steps (run, workers, oom) need about 150 s; compile rows only if they fit besides
        reserve = 150 if not quick else 0
        if compile_ and rep.left() < cost + reserve:
            rows.append({"key": key, "skipped": f"budget: {rep.left():.0f} s left, ~{cost} s needed"})
            rep.put("speed", rows)
            continue
        t = time.time()
        try:
            r = speed.measure(model, repeats, device, quick, precision if precision != "fp32" else "fp32",
                              compile_)
            r.pop("all_seconds", None)
            r.update(key=key, device=device_label(device), wall_s=round(time.time() - t, 1),
                     cudnn_benchmark=torch.backends.cudnn.benchmark)
            sps = r["samples_per_second"]
            # a CIFAR-10-sized epoch: 50,000 training images at the measured rate
            r["epoch_50k_seconds"] = {k: 50_000 / v for k, v in sps.items()}
        except Exception as e:  # a step that breaks is a finding, not the end of the lease
            r = {"key": key, "error": f"{type(e).__name__}: {e}"[:800]}
        rows.append(r)
        rep.put("speed", rows)


def _engine(args: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(ENGINE + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _sets(values: dict) -> list[str]:
    """`--set key=value` for each entry (JSON for anything but a string)."""
    return [a for k, v in values.items() for a in ("--set", f"{k}={v if isinstance(v, str) else json.dumps(v)}")]


ENDED = ("done", "failed", "cancelled", "interrupted")


def _show(run_id: str, env: dict) -> dict:
    r = _engine(["show", run_id, "--json"], env, 60)
    return json.loads(r.stdout) if r.returncode == 0 else {"show_error": r.stderr[-500:]}


def end_to_end_run(rep: Report, device: str, quick: bool, home: Path, env: dict) -> None:
    """The ResNet-20 preset, shortened, through the CLI: cosine schedule, target sparsity, ticket."""
    sets = {"dataset": "synthetic_cifar", "epochs": 5, "retrain_epochs": 2, "target_sparsity": 0.9,
            "device": device}
    if quick:
        sets.update(model="conv2", data_params={"n_train": 64, "n_test": 32}, epochs=1, retrain_epochs=1,
                    batch_size=16)
    args = ["run", "--preset", "resnet20-cifar10", "--quiet", "--home", str(home)] + _sets(sets)
    t = time.time()
    r = _engine(args, env, max(60.0, rep.left() - 60))
    shown_args = [a for a in args if a not in ("--home", str(home))]
    out = {"command": " ".join(["python -m engine"] + shown_args), "exit_code": r.returncode,
           "wall_s": round(time.time() - t, 1), "stderr_tail": r.stderr[-1500:]}
    if r.returncode == 0:
        run_id = r.stdout.strip().splitlines()[-1]
        shown = _show(run_id, env)
        summary = shown.get("summary") or {}
        run_dir = home / "runs" / run_id
        checks = shown.get("checks") or []
        out.update(run_id=run_id, status=shown.get("status"), device=summary.get("device"),
                   sparsity=summary.get("sparsity"), test_accuracy=summary.get("test_accuracy"),
                   lam_final=summary.get("lam_final"), search_remaining=summary.get("search_remaining"),
                   checks={c["name"]: {"passed": c["passed"], "value": c["value"], "detail": c["detail"]}
                           for c in checks},
                   checks_passed=bool(checks) and all(c["passed"] for c in checks),
                   ticket_files=sorted(p.name for p in run_dir.glob("ticket*")),
                   wall_seconds=summary.get("wall_seconds"), setup_seconds=summary.get("setup_seconds"))
    rep.put("run", out)


def _wait(ids: list[str], env: dict, statuses: tuple[str, ...], seconds: float, progress: float | None = None) -> dict:
    deadline, shown = time.time() + seconds, {}
    while time.time() < deadline:
        shown = {i: _show(i, env) for i in ids}
        if all(s.get("status") in statuses and (progress is None or (s.get("progress") or 0) >= progress)
               for s in shown.values()):
            break
        time.sleep(0.5)
    return shown


def two_workers(rep: Report, device: str, quick: bool, home: Path, env: dict) -> None:
    """Two runs submitted at once with a cap of two: each gets a worker and a device slot."""
    env = dict(env, LOTTERY_MAX_RUNS="2", LOTTERY_WORKER_NICE="0")
    ids, slots_expected = [], max(1, len(_gpus()))
    for seed in (1, 2):
        sets = _sets({"dataset": "digits", "epochs": 2, "retrain_epochs": 2, "seed": seed, "device": device})
        r = _engine(["submit", "--preset", "digits", "--home", str(home)] + sets, env, 120)
        if r.returncode != 0:
            rep.put("workers", {"error": r.stderr[-800:]})
            return
        ids.append(r.stdout.strip().splitlines()[-1])
    shown = _wait(ids, env, ENDED, min(180.0, max(30.0, rep.left() - 40)))
    runs = []
    for i, s in shown.items():
        summ = s.get("summary") or {}
        runs.append({"id": i, "status": s.get("status"), "reason": s.get("reason"), "slot": s.get("slot"),
                     "started": s.get("started"), "finished": s.get("finished"), "device": summ.get("device")})
    overlap = None
    if all(r["started"] and r["finished"] for r in runs):
        overlap = min(r["finished"] for r in runs) - max(r["started"] for r in runs)
    rep.put("workers", {"gpus": len(_gpus()), "slots": slots_expected, "runs": runs,
                        "ran_at_the_same_time_s": overlap,
                        "note": ("one GPU: both workers shared device slot 0" if len(_gpus()) == 1 else
                                 "no GPU: CPU workers" if not _gpus() else f"{len(_gpus())} GPUs")})




def cancel_and_resume(rep: Report, device: str, quick: bool, home: Path, env: dict) -> None:
    """A background GPU run cancelled mid-search and resumed from its checkpoint ends done, checks passing."""
    sets = {"dataset": "synthetic_cifar", "epochs": 3, "retrain_epochs": 1, "device": device, "seed": 11}
    if quick:
        sets.update(model="conv2", data_params={"n_train": 256, "n_test": 32}, batch_size=16)
    args = ["submit", "--preset", "resnet20-cifar10", "--home", str(home)] + _sets(sets)
    r = _engine(args, env, 120)
    if r.returncode != 0:
        rep.put("resume", {"error": r.stderr[-800:]})
        return
    run_id = r.stdout.strip().splitlines()[-1]
    out: dict = {"run_id": run_id}
    shown = _wait([run_id], env, ("running", "done", "failed"), 120, progress=0.2)[run_id]
    out["progress_at_cancel"] = shown.get("progress")
    c = _engine(["cancel", run_id, "--home", str(home)], env, 120)
    out["cancel_exit"] = c.returncode
    shown = _wait([run_id], env, ENDED, 120)[run_id]
    out["after_cancel"] = shown.get("status")
    deadline = time.time() + 30
    while True:   # the worker writes `cancelled`, then queues the next run and exits: resume waits for that
        r = _engine(["resume", run_id, "--home", str(home)], env, 120)
        if r.returncode == 0 or "still alive" not in r.stderr or time.time() > deadline:
            break
        time.sleep(0.5)
    out["resume_exit"], out["resume_stderr"] = r.returncode, r.stderr[-400:]
    shown = _wait([run_id], env, ENDED, max(30.0, rep.left() - 60))[run_id]
    checks = shown.get("checks") or []
    out.update(status=shown.get("status"), reason=shown.get("reason"),
               device=(shown.get("summary") or {}).get("device"),
               checks_passed=bool(checks) and all(c["passed"] for c in checks),
               failed_checks=[c["name"] for c in checks if not c["passed"]])
    rep.put("resume", out)


def out_of_memory(rep: Report, device: str, quick: bool, home: Path, env: dict) -> None:
    """A run that is allowed too little GPU memory fails with the documented reason."""
    if not device.startswith("cuda"):
        rep.put("oom", {"skipped": "no CUDA device"})
        return
    env = dict(env, LOTTERY_CUDA_MEMORY_FRACTION="0.0005")  # ~70 MB of an H200: the data set alone is 614 MB
    args = ["run", "--preset", "resnet20-cifar10", "--quiet", "--home", str(home)] + _sets(
        {"dataset": "synthetic_cifar", "epochs": 1, "retrain_epochs": 1, "device": device, "seed": 7})
    r = _engine(args, env, 180)
    shown = {}
    listed = _engine(["list", "--json", "--home", str(home)], env, 60)
    if listed.returncode == 0:
        runs = [x for x in json.loads(listed.stdout) if (x.get("config") or {}).get("seed") == 7]
        shown = _show(runs[0]["id"], env) if runs else {}
    rep.put("oom", {"exit_code": r.returncode, "stderr_tail": r.stderr[-600:], "status": shown.get("status"),
                    "reason": shown.get("reason"),
                    "documented_reason": str(shown.get("reason") or "").startswith("CUDA out of memory")})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny settings on whatever device (the test suite)")
    ap.add_argument("--budget", type=float, default=480.0, help="seconds this script may take in all")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="also copy the result file here (e.g. $OUT)")
    ap.add_argument("--only", default="speed,run,workers,resume,oom")
    ap.add_argument("--rows", default="", help="speed rows to measure, e.g. resnet20/bf16/compile (default: all)")
    args = ap.parse_args()
    device = "cpu" if args.quick and not torch.cuda.is_available() else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: --device cuda but CUDA is not available here (use --quick on a CPU)")
    rep = Report("gpu_quick.json" if args.quick else "gpu_gpu.json", args.out, args.budget)
    rep.data.update(device=device_label(device), mnist=mnist_available(default_data_dir()))
    home = Path(tempfile.mkdtemp(prefix="lottery-gpu-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", LOTTERY_HOME=str(home), LOTTERY_CLASSPACK="off")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    steps = args.only.split(",")
    try:
        if "speed" in steps:
            speed_rows(rep, device, args.quick, 1 if args.quick else args.repeats, args.rows)
        for name, step in (("run", end_to_end_run), ("workers", two_workers), ("resume", cancel_and_resume),
                           ("oom", out_of_memory)):
            if name in steps:
                try:
                    step(rep, device, args.quick, home, env)
                except Exception as e:
                    rep.put(name, {"error": f"{type(e).__name__}: {e}"[:800]})
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"wrote {rep.path.relative_to(ROOT)} in {time.time() - rep.t0:.0f} s")


if __name__ == "__main__":
    main()
