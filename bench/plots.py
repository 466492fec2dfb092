"""Draw docs/*.png from bench/results/*.json with the app's own figure builders
(ui/figures.py), so the documented figures and the pages are the same code.

    python bench/plots.py

PNG export uses kaleido, which drives a Chrome/Chromium: set BROWSER_PATH
(e.g. /usr/bin/chromium) if it is not found on its own."""

from __future__ import annotations

import argparse
import json
import os

import pandas as pd
from common import RESULTS, ROOT

from ui import figures

DOCS = ROOT / "docs"


def save(fig, name: str, width: int = 900, height: int | None = None) -> None:
    DOCS.mkdir(parents=True, exist_ok=True)
    fig.write_image(DOCS / name, width=width, height=height or fig.layout.height or 400, scale=1)
    print(f"wrote {(DOCS / name).relative_to(ROOT)}")


def convex(data: dict) -> None:
    sweep = pd.DataFrame(data["pixel_sweep"])
    save(figures.lam_sweep_figure(sweep, "pixels"), "fig3_pixels_vs_lambda.png")
    save(figures.pareto_figure(sweep, "pixels"), "fig3_pareto_accuracy_vs_pixels.png", height=420)
    f4 = data["fig4"]
    side = int(len(f4["mask"]) ** 0.5)
    mask = pd.DataFrame([f4["mask"][i * side:(i + 1) * side] for i in range(side)])
    save(figures.pixel_figure(mask, f"log mask: {f4['kept']} pixels, test accuracy {f4['test_accuracy']:.2%}"),
         "fig4_mask.png", width=480)
    try:
        from engine.data import default_data_dir, load_dataset
        splits = load_dataset("mnist" if side == 28 else "digits", default_data_dir(), classes=[0, 1])
        samples = []
        for label in (0, 1):
            idx = (splits.test_y == label).nonzero().flatten()[:4]
            for i in idx.tolist():
                img = splits.test_x[i, 0]
                samples.append((str(label), pd.DataFrame((img - img.min()).numpy())))
        save(figures.masked_samples_figure(samples, mask), "fig4_digits_through_mask.png")
    except Exception as e:  # the data may be absent where the plots are drawn
        print(f"skipped fig4 digits: {e}")
    planted = pd.DataFrame(data["planted"])
    if not planted.empty:
        planted = planted.assign(dist=planted["distance"], false_pos=planted["kept"] - planted["hits"],
                                 false_neg=planted["support_size"] - planted["hits"],
                                 exact=planted["exact"].astype(float), run_id=range(len(planted)))
        save(figures.theory_figure(planted), "theory_planted_recovery.png")


def tradeoff(data: dict) -> None:
    rows = pd.DataFrame(data["rows"])
    dense = rows.loc[rows["method"] == "dense", "test_accuracy"].mean()
    pts = rows[rows["method"] != "dense"]
    agg = pts.groupby(["method", "level"]).agg(
        remaining=("remaining", "mean"), test_accuracy=("test_accuracy", "mean"), acc_std=("test_accuracy", "std"),
        n=("seed", "count"), seeds=("seed", lambda s: ",".join(map(str, sorted(s))))).reset_index()
    agg = agg.assign(group=agg["method"], acc_std=agg["acc_std"].fillna(0.0), lam=None)
    save(figures.tradeoff_figure(agg, pd.DataFrame(), dense, 0.003), "tradeoff_lenet300_mnist.png")


def families(data: dict, png: str = "families_lenet300_mnist.png") -> None:
    """The four families' trade-off (bench/families.py): mean ± std over seeds per method and level."""
    rows = pd.DataFrame(data["rows"])
    agg = rows.groupby(["method", "level"]).agg(
        remaining=("remaining", "mean"), test_accuracy=("test_accuracy", "mean"), acc_std=("test_accuracy", "std"),
        n=("seed", "count"), seeds=("seed", lambda s: ",".join(map(str, sorted(s))))).reset_index()
    names = {"imp-init": "IMP (rewind to init)", "concave-log": "concave-log", "cs": "CS",
             "snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow", "magnitude": "magnitude at init",
             "random": "random"}
    agg = agg.assign(group=agg["method"].map(lambda m: names.get(m, m)),
                     acc_std=agg["acc_std"].fillna(0.0), lam=None)
    save(figures.tradeoff_figure(agg, pd.DataFrame(), None, 0.0), png, height=480)


def main():
    global DOCS
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="draw the *_quick.json results into bench/results/quick_png")
    args = ap.parse_args()
    if args.quick:
        DOCS = RESULTS / "quick_png"
    if os.path.exists("/usr/bin/chromium"):
        os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    for name, draw in (("convex", convex), ("tradeoff", tradeoff), ("families_e3", families),
                       ("families_e10", lambda d: families(d, "families_lenet300_mnist_e10.png"))):
        path = RESULTS / (f"{name}_quick.json" if args.quick else f"{name}.json")
        if path.exists():
            draw(json.loads(path.read_text()))
        else:
            print(f"no {path.relative_to(ROOT)} yet: run bench/{name}.py first")


if __name__ == "__main__":
    main()
