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


def offline(tmp_path: Path) -> dict:
    """The environment a bench's quick mode runs in: no data folder, one thread, a scratch HOME."""
    return {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "LOTTERY_DATA": str(tmp_path / "nodata"),
            "HOME": str(tmp_path)}


def run_bench(script: str, *args: str, env: dict | None = None, cwd: Path = ROOT) -> None:
    """bench/<script> with `args`, which must exit 0 (its stderr's end shown if not)."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]


BENCHES = ["speed.py", "peer_imp.py", "convex.py", "tradeoff.py", "engine_core.py", "controller.py", "families.py",
           "search_floor.py"]


@pytest.mark.parametrize("script", BENCHES)
def test_bench_runs_quick(script, tmp_path):
    """Each benchmark's --quick mode runs offline on tiny settings and writes its results file."""
    out = fresh(Path(script).stem + "_quick.json")
    run_bench(script, "--quick", env=offline(tmp_path))
    data = json.loads(out.read_text())
    assert "machine" in data and len(data) > 1


def test_speed_times_the_step_before_and_after_in_one_run(tmp_path):
    """--before adds the search step as it was before 2026-12-06 beside today's, in one process."""
    out = fresh("speed_quick.json")
    run_bench("speed.py", "--quick", "--models", "lenet300", "--before", env=offline(tmp_path))
    (row,) = json.loads(out.read_text())["rows"]
    assert len(row["all_seconds"]["search_before"]) == len(row["all_seconds"]["search"]) == 1
    assert row["search_before_over_dense"] > 0 and row["search_over_dense"] > 0


def test_app_responsiveness_quick(tmp_path):
    """Server-side page renders with a small synthetic store."""
    out = fresh("app_responsiveness_quick.json")
    run_bench("app_responsiveness.py", "--quick", "--runs", "12", env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    data = json.loads(out.read_text())
    assert data["runs_in_store"] == 12 and all(c["median_s"] > 0 for c in data["cases"])


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs /usr/bin/chromium (apt-get install -y "
                                                                   "chromium) to drive the app in a browser")
def test_app_live_quick(tmp_path):
    """A real `streamlit run` and Chromium: start-up time and row-to-browser latency are measured."""
    out = fresh("app_live_quick.json")
    run_bench("app_live.py", "--quick", env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    data = json.loads(out.read_text())
    (row,) = data["stores"]
    assert row["startup_to_first_page_s"] > 0 and len(row["row_to_browser_s"]["all"]) == 3
    assert 0 < row["row_to_browser_s"]["max"] < 30


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="PNG export (kaleido) needs /usr/bin/chromium")
def test_plots_draw_pngs_from_quick_results():
    """Runs after the benches above (pytest keeps file order): the figures are drawn by ui/figures."""
    import shutil
    shutil.rmtree(RESULTS / "quick_png", ignore_errors=True)     # no stale figure passes for a new one
    run_bench("plots.py", "--quick")
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


def _concavity():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import concavity
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return concavity


def test_concavity_quick_writes_its_figures(tmp_path):
    """bench/concavity.py --quick runs offline and writes, per problem size, every penalty's
    figures at the λ chosen on validation loss, the oracle, the exact-recovery range, and the
    paired comparisons with ℓ1 (a stale file from an earlier run is removed first)."""
    out = ROOT / "bench" / "results" / "concavity_quick.json"
    out.unlink(missing_ok=True)
    run_bench("concavity.py", "--quick", env=offline(tmp_path))
    data = json.loads(out.read_text())
    assert data["complete"] is True and data["settings"]["seeds"] == [0, 1]
    pens = ["l1", "log", "log warm-started from l1", "log warm-started from chosen l1"]
    summary = data["summary"]["tiny"]
    assert sorted(summary["penalties"]) == sorted(pens)
    for pen in pens:
        s = summary["penalties"][pen]
        assert s["seeds"] == 2 and s["selected"]["errors"]["n"] == 2
        assert s["selected"]["errors"]["lo"] <= s["selected"]["errors"]["mean"] <= s["selected"]["errors"]["hi"]
        assert 0 <= s["selected"]["exact"]["rate"] <= 1 and s["oracle"]["errors"]["mean"] <= \
            s["selected"]["errors"]["mean"]
        assert 0 <= s["exact_range"]["points"]["mean"] <= 2
    assert set(summary["paired"]) == {f"{p} vs l1" for p in pens[1:]}
    cmp = summary["paired"]["log vs l1"]["selected_errors"]
    assert cmp["a_wins"] + cmp["b_wins"] + cmp["ties"] == 2
    table = _concavity().report(data)                # what docs/RESULTS.md quotes
    assert "**tiny**: d = 20, k = 3, n = 120 (2 seeds)" in table and "| log vs l1 |" in table
    runs = _concavity().run_rows(data)
    assert len(runs) == 2 * 2 * 4                    # seeds × λ × penalties
    chosen = [r for r in runs if r["penalty"] == "log warm-started from chosen l1"]
    assert all(r["source_lam"] == data["per_seed"]["tiny"]["l1"][str(r["seed"])]["selected_lam"] for r in chosen)
    assert all(r["errors"] == r["fp"] + r["fn"] and r["val_loss"] > 0 for r in runs)


def test_concavity_selection_and_intervals_on_hand_made_numbers():
    """λ is chosen on validation loss (never on recovery), ties go to the larger λ; the exact range
    counts grid points and their λ ratio; intervals and paired counts on known numbers."""
    c = _concavity()
    rows = [{"lam": 0.1, "val_loss": 0.30, "exact": False}, {"lam": 0.2, "val_loss": 0.20, "exact": True},
            {"lam": 0.4, "val_loss": 0.20, "exact": True}, {"lam": 0.8, "val_loss": 0.50, "exact": False},
            {"lam": 1.6, "val_loss": 0.90, "exact": True}]
    assert c.select_on_validation(rows)["lam"] == 0.4          # tie at 0.20: the larger λ
    rng = c.exact_range(rows)
    assert rng["points"] == 3 and rng["of"] == 5 and rng["lam_min"] == 0.1 * 2 and rng["lam_max"] == 1.6
    assert rng["ratio"] == pytest.approx(8.0) and rng["contiguous"] is False
    assert c.exact_range(rows[:3])["contiguous"] is True
    assert c.exact_range([{"lam": 1.0, "exact": False}])["ratio"] is None
    with pytest.raises(ValueError, match="at least one row"):
        c.select_on_validation([])

    ci = c.mean_ci([1.0, 2.0, 3.0, 4.0])
    assert ci["mean"] == 2.5 and 1.0 <= ci["lo"] < 2.5 < ci["hi"] <= 4.0 and ci["n"] == 4
    assert c.mean_ci([2.0, 2.0, 2.0]) == {"mean": 2.0, "lo": 2.0, "hi": 2.0, "n": 3}
    w = c.wilson(0, 10)                                         # 0 of 10: the interval still reaches 0.28
    assert w["rate"] == 0 and w["lo"] == 0 and w["hi"] == pytest.approx(0.2775, abs=1e-3)
    w = c.wilson(5, 10)
    assert w["lo"] == pytest.approx(0.2366, abs=1e-3) and w["hi"] == pytest.approx(0.7634, abs=1e-3)

    p = c.paired([0, 1, 2, 5], [1, 1, 3, 4])                     # fewer errors wins
    assert (p["a_wins"], p["ties"], p["b_wins"]) == (2, 1, 1) and p["mean_diff"]["mean"] == pytest.approx(-0.25)
    p = c.paired([3, 1], [2, 2], lower_is_better=False)          # more exact points wins
    assert (p["a_wins"], p["ties"], p["b_wins"]) == (1, 0, 1)
    with pytest.raises(ValueError, match="one figure per seed"):
        c.paired([1], [1, 2])


def test_the_pages_quote_the_measured_concavity_figures():
    """The Theory page and the Lesson's step 4 quote bench/results/concavity.json as measured."""
    data = json.loads((ROOT / "bench" / "results" / "concavity.json").read_text())
    assert data["complete"] and len(data["settings"]["seeds"]) == 10 and len(data["summary"]) == 3
    pairs = [s["paired"]["log vs l1"]["selected_distance"] for s in data["summary"].values()]
    closer = sum(p["a_wins"] for p in pairs)
    default = data["summary"]["default"]["penalties"]
    widened = [s["paired"]["log warm-started from l1 vs l1"]["exact_points"] for name, s in data["summary"].items()
               if data["settings"]["sizes"][name]["n_train"] > data["settings"]["sizes"][name]["dim"]]
    under = data["summary"]["under"]["penalties"]
    theory = (ROOT / "pages" / "theory.py").read_text()
    assert f"in {closer} of 30 seed-and-size pairs" in theory and closer == 28
    assert (f"{default['log']['exact_range']['points']['mean']:.1f} grid points against ℓ1's "
            f"{default['l1']['exact_range']['points']['mean']:.1f} of {len(data['settings']['lams'])}") in theory
    assert all(w["a_wins"] == 10 for w in widened) and "in all\n  20 seeds" in theory
    assert under["l1"]["oracle"]["exact_somewhere"]["k"] == under["log"]["oracle"]["exact_somewhere"]["k"] == 0
    assert f"({under['log warm-started from l1']['oracle']['exact_somewhere']['k']} of 10 seeds)" in theory
    from ui import lesson_steps
    step = next(s for s in lesson_steps.STEPS if s.figure == "planted")
    assert "The paper's concavity claim, measured" in step.text and "narrower λ range" in step.text


def test_burst_quick_launches_as_students_do_and_reports_estimate_over_actual(tmp_path):
    """bench/burst.py --quick: 4 launches by 4 students within seconds, real workers; each
    launch's recorded estimate is compared with its actual time (issue 22, item 4)."""
    out = fresh("burst_quick.json")
    run_bench("burst.py", "--quick", env=offline(tmp_path))
    data = json.loads(out.read_text())
    s, rows = data["summary"], data["rows"]
    assert s["launches"] == len(rows) == 4 and s["done"] == 4
    assert len({row["owner"] for row in rows}) == 4 and all(row["estimate_s"] > 0 for row in rows)
    ratios = [row["estimate_over_actual"] for row in rows]
    assert s["min_ratio"] == min(ratios) <= s["median_ratio"] <= max(ratios) == s["max_ratio"]
    assert len(s["load_at_start"]) == len(s["load_at_end"]) == 3
    assert all(row["worker_start_s"] is not None and row["worker_start_s"] >= 0 for row in rows)


@pytest.mark.parametrize("processes", [1, 2], ids=["one app process", "class server: 2 processes behind nginx"])
def test_class_load_quick_watches_a_live_run_from_real_sessions(tmp_path, processes):
    """bench/class_load.py --quick (issue 22): real server sessions over Streamlit's WebSocket
    protocol watch a live run; every session draws the loss chart, rows reach it, the server's
    CPU is measured (both app processes and nginx in the class-server mode)."""
    import os
    import shutil
    if processes > 1 and not (shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK)):
        pytest.skip("nginx is not installed (apt-get install -y nginx-light)")
    name = "class_load_quick.json" if processes == 1 else f"class_load_{processes}proc_quick.json"
    out = fresh(name)
    args = ["--quick", "--processes", str(processes)] + (["--sessions", "2"] if processes > 1 else [])
    run_bench("class_load.py", *args, cwd=ROOT / "bench",
              env={**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/sbin"})
    data = json.loads(out.read_text())
    assert data["app_processes"] == processes and data["baseline_server_cores"] >= 0
    counts = [1, 2] if processes == 1 else [2]
    assert sorted(int(n) for n in data["protocol"]) == counts
    for row in data["protocol"].values():
        assert row["sessions_without_a_chart"] == [] and row["page_errors"] == [], row
        assert row["server_cores"] > 0 and row["row_to_chart_s"]["n"] > 0, row
        assert 0 < row["row_to_chart_s"]["median"] < 10, row
