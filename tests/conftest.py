import os
from pathlib import Path

import pytest

from engine.data import mnist_available

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LOTTERY_DATA") or ROOT / "cache" / "data")
# The app imports the class pack's example runs into its store; tests see only the runs they
# make, unless they point LOTTERY_CLASSPACK at a pack (tests/test_classpack.py does).
os.environ["LOTTERY_CLASSPACK"] = "off"
# `make test` runs two pytest processes (pytest-xdist): each trains in-process on its
# share of the cores, so together they do not oversubscribe the machine.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    import torch
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

# CI (`.ci/run`) sets LOTTERY_CI_STRICT=1. It installs Chromium and nginx and points at the real MNIST
# files on purpose, so there a test that skips for want of one of them (the browser, proxy and
# full-disk tests, the Chromium benches, real MNIST) fails, naming what is missing: a green run
# never means "tested less". A plain local `make test` still skips such tests, saying why.
CI_STRICT_FLAG = "LOTTERY_CI_STRICT"


def fail_skip_in_ci(report) -> None:
    """Under LOTTERY_CI_STRICT=1 turn a skipped test (or a skipped module) into a failure
    that names the skip's reason; xfail is not a skip and is left alone."""
    if os.environ.get(CI_STRICT_FLAG) != "1" or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"skipped in CI ({CI_STRICT_FLAG}=1), where every test must run: {reason}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    fail_skip_in_ci(outcome.get_result())


needs_mnist = pytest.mark.skipif(not mnist_available(DATA),
                                 reason=f"real MNIST files not found in {DATA}/MNIST/raw (set LOTTERY_DATA)")


@pytest.fixture
def store(tmp_path):
    from engine.store import Store
    return Store(tmp_path / "home")


@pytest.fixture
def jobs(monkeypatch):
    """engine.jobs replaced by a fake that records the pages' calls (tests/app_fakes.py)."""
    import sys

    from app_fakes import FakeJobs

    import engine
    fake = FakeJobs()
    monkeypatch.setitem(sys.modules, "engine.jobs", fake)
    monkeypatch.setattr(engine, "jobs", fake, raising=False)
    return fake


def at_once(target, home, n: int = 4):
    """Run target(home, barrier, queue) in n forked processes released together by the barrier
    (what two launches at the same instant look like); each must exit 0. Returns the queue."""
    import multiprocessing as mp
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(str(home), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    return out
