"""Continuous sparsification and pruning at init in the app (AppTest): the Launch
form, the Home preset, Runs (checklist, β on the λ chart), Mask evolution and
Trade-offs, on a store of tiny real digits runs."""

from __future__ import annotations

import json

import pytest
from test_app import no_traceback, open_page, plain, routed_by_app_py, texts  # noqa: F401

from engine import runner
from engine.config import RunConfig, without_unused
from engine.store import Store
from tests.conftest import DATA

TINY = dict(model="lenet300", dataset="digits", epochs=1, retrain_epochs=1, batch_size=128)


def trace_names(at) -> set[str]:
    return {str(t.get("name")) for c in at.get("plotly_chart") for t in json.loads(c.proto.spec).get("data", [])}


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    home = tmp_path_factory.mktemp("families")
    store = Store(home)
    ids = {}
    for role, cfg in {"cs": dict(method="cs", lam=5.0), "snip": dict(method="pai", target_sparsity=0.9),
                      "synflow": dict(method="pai", scorer="synflow", synflow_iters=5, target_sparsity=0.9),
                      "imp": dict(method="imp", rounds=1)}.items():
        rid = runner.create(store, RunConfig.from_dict({**without_unused({**TINY, **cfg}), **cfg}), status="running")
        runner.execute(store, rid, DATA)
        ids[role] = rid
    return home, ids


def submitted(jobs):
    return [c[1] for c in jobs.calls if c[0] == "submit"]


@pytest.mark.parametrize("preset", ["lenet300-cs", "lenet300-synflow"])
def test_launch_form_for_cs_and_pai(preset, monkeypatch, tmp_path, jobs):
    at = open_page(monkeypatch, tmp_path / "h", "pages/launch.py", {"preset": preset})
    no_traceback(at)
    if preset == "lenet300-cs":
        assert at.number_input(key="cfg.beta_final").value == 200.0
        at.number_input(key="cfg.s0").set_value(-0.1).run()
    else:
        assert at.selectbox(key="cfg.scorer").value == "synflow"
        assert at.number_input(key="cfg.synflow_iters").value == 100
    no_traceback(at)
    assert not at.error
    at.button(key="launch.go").click().run()
    no_traceback(at)
    (cfg,) = submitted(jobs)
    if preset == "lenet300-cs":
        assert (cfg.method, cfg.s0, cfg.beta_final, cfg.rounds, cfg.target_sparsity) == ("cs", -0.1, 200.0, 3, 0.95)
    else:
        assert (cfg.method, cfg.scorer, cfg.synflow_iters, cfg.target_sparsity) == ("pai", "synflow", 100, 0.95)


def test_launch_blocks_beta_final_at_most_one(monkeypatch, tmp_path, jobs):
    at = open_page(monkeypatch, tmp_path / "h", "pages/launch.py", {"preset": "lenet300-cs"})
    at.number_input(key="cfg.beta_final").set_value(1.0).run()
    no_traceback(at)
    assert any("**Final temperature β**" in plain(e.value) for e in at.error)    # the field's label
    assert at.button(key="launch.go").disabled and not submitted(jobs)


def test_home_four_families_preset(monkeypatch, tmp_path, jobs):
    at = open_page(monkeypatch, tmp_path / "h", "pages/home.py")
    no_traceback(at)
    at.button(key="preset_families").click().run()
    no_traceback(at)
    assert [c.method for c in submitted(jobs)] == ["imp", "concave", "cs", "pai"]


def test_runs_page_shows_checklist_and_beta(monkeypatch, families, jobs):
    home, ids = families
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": f"{ids['cs']},{ids['synflow']}"})
    no_traceback(at)
    t = texts(at)
    assert "Pruned weights stay exactly zero" in t and "Sparsity as targeted" in t
    assert any(n.startswith("β · CS") for n in trace_names(at))     # the CS temperature on the λ chart


def test_masks_page_allocation_by_method(monkeypatch, families, jobs):
    home, ids = families
    at = open_page(monkeypatch, home, "pages/masks.py", {"runs": f"{ids['snip']},{ids['synflow']},{ids['cs']}"})
    no_traceback(at)
    names = trace_names(at)
    assert any(n.startswith("PaI · SynFlow") for n in names) and any(n.startswith("PaI · SNIP") for n in names)


def test_tradeoffs_page_groups_each_method(monkeypatch, families, jobs):
    home, _ = families
    at = open_page(monkeypatch, home, "pages/tradeoffs.py")
    no_traceback(at)
    groups = set(at.dataframe[0].value["group"])
    assert {"CS (continuous sparsification)", "PaI · snip", "PaI · synflow"} <= groups
