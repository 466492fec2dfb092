"""Fakes for the app's tests: engine.jobs stood in for, so AppTest pages queue nothing real
(the `jobs` fixture in conftest.py installs it)."""

from __future__ import annotations

import types

from engine import runner
from engine.config import RunConfig
from engine.store import Store


class Reused(str):
    """As engine.jobs.Reused: the id of an equal earlier run that a submit stood in with."""


class FakeJobs(types.ModuleType):
    """Stands in for engine.jobs: records calls; submit writes a queued run like the real one
    (or, with `reuse` set to a run id, answers with that run as the real one does for an equal run)."""

    Reused = Reused

    def __init__(self):
        super().__init__("engine.jobs")
        self.calls: list[tuple] = []
        self.submit_kw: list[dict] = []
        self.fail: str | None = None
        self.reuse: str | None = None

    def submit(self, cfg, home=None, data_dir=None, sweep_id=None, **kw):
        self.calls.append(("submit", cfg, sweep_id))
        self.submit_kw.append(kw)           # again, estimate (and owner) when the page passes them
        if self.fail:
            raise RuntimeError(self.fail)
        if self.reuse:             # as the real one: someone else's run is adopted by the launcher
            store = Store(home)
            if kw.get("owner") and store.get_run(self.reuse).get("owner") != kw["owner"]:
                store.adopt(self.reuse, kw["owner"])
            return Reused(self.reuse)
        return runner.create(Store(home), RunConfig.from_dict(cfg.to_dict()), status="queued", sweep_id=sweep_id)

    def cancel(self, run_id, home=None, wait=True, *, actor=None):
        assert wait is False, "a page must not block on a cancel's grace period"
        self.calls.append(("cancel", run_id))

    def resume(self, run_id, home=None, *, actor=None):
        self.calls.append(("resume", run_id))

    def check_room(self, home, owner, n):
        pass

    def room(self, home, owner):
        return None

    def delete(self, run_id, home=None, *, actor=None):
        self.calls.append(("delete", run_id))
        Store(home).delete_run(run_id)

    def pump(self, home=None):
        self.calls.append(("pump",))
        return []
