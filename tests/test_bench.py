"""Smoke test: every benchmark runs end to end on a tiny setting (--quick)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def fresh(name: str) -> Path:
    """The results file a bench is about to write, removed first: a stale one from an
    earlier run must not pass for this run's output."""
    path = RESULTS / name
    path.unlink(missing_ok=True)
    return path


BENCHES = ["speed.py", "peer_imp.py", "convex.py", "tradeoff.py", "engine_core.py", "controller.py", "families.py"]


@pytest.mark.parametrize("script", BENCHES)
def test_bench_runs_quick(script, tmp_path):
    """Each benchmark's --quick mode runs offline on tiny settings and writes its results file."""
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "LOTTERY_DATA": str(tmp_path / "nodata"),
           "HOME": str(tmp_path)}
    out = fresh(Path(script).stem + "_quick.json")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    assert "machine" in data and len(data) > 1


def test_app_responsiveness_quick(tmp_path):
    """Server-side page renders with a small synthetic store."""
    out = fresh("app_responsiveness_quick.json")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "app_responsiveness.py"), "--quick", "--runs", "12"],
                       cwd=ROOT, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["runs_in_store"] == 12 and all(c["median_s"] > 0 for c in data["cases"])


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium (apt-get install -y "
                                                                   "chromium) to drive the app in a browser")
def test_app_live_quick(tmp_path):
    """A real `streamlit run` and Chromium: start-up time and row-to-browser latency are measured."""
    out = fresh("app_live_quick.json")
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "app_live.py"), "--quick"], cwd=ROOT,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    data = json.loads(out.read_text())
    (row,) = data["stores"]
    assert row["startup_to_first_page_s"] > 0 and len(row["row_to_browser_s"]["all"]) == 3
    assert 0 < row["row_to_browser_s"]["max"] < 30


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="PNG export (kaleido) needs /usr/bin/chromium")
def test_plots_draw_pngs_from_quick_results():
    """Runs after the benches above (pytest keeps file order): the figures are drawn by ui/figures."""
    import shutil
    shutil.rmtree(RESULTS / "quick_png", ignore_errors=True)     # no stale figure passes for a new one
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "plots.py"), "--quick"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    pngs = list((RESULTS / "quick_png").glob("*.png"))
    assert len(pngs) >= 4 and all(p.stat().st_size > 5000 for p in pngs)


def test_families_interpolates_imp_at_the_exact_level():
    """The families benchmark compares other methods with IMP at exactly their level: IMP's
    accuracy is interpolated (linear in log remaining) between the rounds around it, and its
    epochs are those through the first round at or below the level."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from families import imp_at
    finally:
        sys.path.remove(str(ROOT / "bench"))
    rounds = [{"remaining": 0.08, "test_acc": 0.98, "epochs": 3}, {"remaining": 0.02, "test_acc": 0.96, "epochs": 6}]
    acc, epochs = imp_at(rounds, 0.04)          # halfway in log between 8 % and 2 %
    assert acc == pytest.approx(0.97) and epochs == 6
    acc, epochs = imp_at(rounds, 0.08)          # exactly on a round: that round's accuracy and epochs
    assert acc == pytest.approx(0.98) and epochs == 3
    assert imp_at(rounds, 0.01) is None and imp_at(rounds, 0.2) is None
