"""What the class pack holds: the runs, by stable key, with their configs.

Each entry is {"key", "group", "config", "refs"}; `refs` names config keys whose value is
another entry's run id (warm_start, random_from, reinit_from), filled in when that entry
has run. Configs come from the engine's presets and the app's own default grids, so a
pack run is the run the page's button would queue (the default pack shortens the LeNet
runs; see the README).

    pixel   MNIST 0-vs-1 logistic regression, ℓ1 and log at the Pixel masks page's λ grid
            (the paper's Fig. 3/4), from the mnist-8-pixel preset, and its dense reference
    planted the Theory page's default planted problem: ℓ1, log from m = 1, and log
            warm-started from each ℓ1 run, at its default λ grid
    lenet   LeNet-300-100 on MNIST: IMP round by round (its trade-off points), a concave log
            ticket at 95 % sparsity, and that ticket's random-pruning and reinit controls
    digits  the offline digits preset (LeNet-300-100 on 8×8 digits)
"""

from __future__ import annotations

import numpy as np

from ..config import PRESETS

PIXEL_LAMS = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0]          # Pixel masks' λ sweep button uses it too
# Theory's default problem; the Lesson's live planted run is one log run of it
PLANTED_BASE = dict(model="logreg", dataset="planted", method="concave", epochs=30, retrain_epochs=5,
                    batch_size=64, lr=0.01, data_params={"dim": 100, "k": 10, "n_train": 400})
GROUPS = ("pixel", "planted", "lenet", "digits")


def planted_lams() -> list[float]:
    """The Theory page's default grid: 7 log-spaced λ from 0.2 to 5, 3 significant digits."""
    return [float(f"{v:.3g}") for v in np.geomspace(0.2, 5.0, 7)]


def _lam_key(lam: float) -> str:
    return f"{lam:g}"


def entries(full: bool = False, groups: tuple[str, ...] = GROUPS) -> list[dict]:
    """The pack's runs in the order they must run (a run's refs come before it).
    full: three seeds of the convex runs and the LeNet runs at their presets' length."""
    seeds = (0, 1, 2) if full else (0,)
    out: list[dict] = []

    def add(key, group, cfg, refs=None):
        if group in groups:
            out.append({"key": key, "group": group, "config": cfg, "refs": refs or {}})

    for seed in seeds:
        sfx = f"-s{seed}" if seed else ""
        add(f"pixel-dense{sfx}", "pixel", {**PRESETS["mnist-8-pixel"], "method": "dense", "seed": seed})
        # the preset itself (log, λ = 10: the ~8-pixel mask) last, so it is the newest pixel run,
        # the one the Pixel masks page opens on
        preset = (PRESETS["mnist-8-pixel"]["regularizer"], PRESETS["mnist-8-pixel"]["lam"])
        for reg, lam in sorted(((r, x) for r in ("l1", "log") for x in PIXEL_LAMS), key=lambda p: p == preset):
            add(f"pixel-{reg}-{_lam_key(lam)}{sfx}", "pixel",
                {**PRESETS["mnist-8-pixel"], "regularizer": reg, "lam": lam, "seed": seed})
        for lam in planted_lams():
            l1 = f"planted-l1-{_lam_key(lam)}{sfx}"
            add(l1, "planted", {**PLANTED_BASE, "regularizer": "l1", "lam": lam, "seed": seed})
            add(f"planted-log-{_lam_key(lam)}{sfx}", "planted",
                {**PLANTED_BASE, "regularizer": "log", "lam": lam, "seed": seed})
            add(f"planted-logwarm-{_lam_key(lam)}{sfx}", "planted",
                {**PLANTED_BASE, "regularizer": "log", "lam": lam, "seed": seed}, {"warm_start": l1})

    # LeNet-300-100: the default pack shortens the presets (2 epochs per phase) so it builds in
    # minutes on 2 CPU cores; IMP prunes 45 % a round so 5 rounds reach the concave ticket's ~5 %.
    if full:
        imp = dict(PRESETS["lenet300-imp"])
        concave = dict(PRESETS["lenet300-concave"])
    else:
        imp = {**PRESETS["lenet300-imp"], "rounds": 5, "prune_fraction": 0.45, "epochs": 2}
        concave = {**PRESETS["lenet300-concave"], "epochs": 2, "retrain_epochs": 2}
    add("lenet-imp", "lenet", imp)
    add("lenet-concave", "lenet", concave)
    control = {k: concave[k] for k in ("model", "dataset", "batch_size")}
    control["epochs"] = concave.get("retrain_epochs") or concave["epochs"]   # trained like the ticket's retrain
    add("lenet-random", "lenet", {**control, "method": "random"}, {"random_from": "lenet-concave"})
    add("lenet-reinit", "lenet", {**control, "method": "reinit"}, {"reinit_from": "lenet-concave"})
    add("digits-ticket", "digits", dict(PRESETS["digits"]))
    return out
