"""The Lesson page's steps as data: the text, the prompts, which runs each step's figure
draws and the one small run its "Run it live" button queues. No Streamlit here, so the
tests iterate the steps and check what the page does with each.

Runs are chosen by config (model, dataset, classes, method, regularizer), never by id:
the figure draws the class pack's example runs (`example = 1`) until the student has a
finished run of the same kind, which then replaces the pack's run(s) it stands for
(`replaces`: the config fields that say which pack run a student's run stands in for)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.classpack import spec
from engine.config import PRESETS, RunConfig
from ui import data

ANY = object()      # a match value: the field may be anything


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    text: str                   # Markdown, a short paragraph or three
    notice: str                 # "what to notice"
    question: str               # a question for the class
    figure: str                 # which figure the page draws (lesson.py: FIGURES)
    match: dict                 # config field -> a value or a tuple of allowed values
    live: dict                  # the small version of the step's experiment (RunConfig fields)
    live_label: str
    replaces: tuple[str, ...] = ()


PIXEL_LIVE = dict(PRESETS["mnist-8-pixel"])
PLANTED_LIVE = dict(spec.PLANTED_BASE, regularizer="log", lam=1.0)     # the pack's planted problem, one log run

STEPS: tuple[Step, ...] = (
    Step("ticket", "What a winning ticket is",
         "A trained network can lose most of its weights and still work. A **winning ticket** is such a sparse "
         "subnetwork: a binary **mask** that says which weights stay, together with the weights they had at "
         "the start. Trained alone, from that start, the ticket reaches the accuracy of the full network.\n\n"
         "Here the mask is learned: LeNet-300-100 (an MLP with 784→300→100→10 weights) trains its weights "
         "*and* a mask m ∈ [0, 1] per weight, with a penalty λ·R(m) that pushes m towards 0 (the **search**). "
         "Entries with m > 0.5 survive; the survivors are rewound to their start and trained again "
         "(the **retrain**).",
         "How few weights are left, and the accuracy after the retrain (the right-hand band).",
         "If most of the weights can go, why do we train big networks at all?",
         "ticket", dict(model="lenet300", dataset=("digits", "mnist"), method="concave", classes=None),
         dict(PRESETS["digits"]), "LeNet-300-100 on the offline digits, log penalty (about 10 s)"),
    Step("pixels", "The 8-pixel mask",
         "With logistic regression every weight belongs to one input pixel, so the mask is a picture: the pixels "
         "the classifier is allowed to look at. On MNIST 0-vs-1 the log penalty keeps only a handful of them.",
         "Where the kept pixels sit on the digits: a 0 has ink where a 1 is blank, and the reverse.",
         "Which pixels would you keep to tell a 0 from a 1, if you could keep only 8?",
         "pixels", dict(model="logreg", dataset=("mnist", "digits"), classes=[0, 1], method="concave",
                        regularizer="log"),
         PIXEL_LIVE, "logistic regression on MNIST 0-vs-1, log penalty (seconds)"),
    Step("fair", "ℓ1 vs log on one fair axis",
         "Two penalties at the same λ prune at different rates, so comparing them at equal λ is unfair. Compare "
         "them at **equal size** instead: test accuracy against the number of kept pixels. Every dot is a run; "
         "each line is a penalty's frontier, the best accuracy it reached with at most that many pixels.",
         "Which line is higher at the left, where only a few pixels are kept, and how far apart the lines are.",
         "0-vs-1 is an easy task: would you expect the gap between the penalties to grow or shrink on a harder "
         "one, and why?",
         "pareto", dict(model="logreg", dataset=("mnist", "digits"), classes=[0, 1], method="concave",
                        regularizer=("l1", "log")),
         {**PIXEL_LIVE, "regularizer": "l1"}, "the same run with the ℓ1 penalty (seconds)",
         replaces=("regularizer", "lam")),
    Step("concave", "Does concavity help? A problem with a known answer",
         "The argument for a concave penalty: ℓ1 charges every mask entry the same price per unit (a straight "
         "line), so shrinking the useless entries also shrinks the useful ones. The log penalty is steep near 0 "
         "and flat near 1, so useless entries should go to exactly 0 while useful ones stay near 1 almost for "
         "free.\n\n"
         "The **planted problem** tests the argument where the answer is known: synthetic data that depends on "
         "only k of d features. Does the learned mask find exactly those k — and more often with log than ℓ1?\n\n"
         "Measured over 10 seeds and 3 problem sizes (docs/RESULTS.md, \"The paper's concavity claim, measured\"): "
         "log's mask ends closer to m* than ℓ1's, but it finds the exact support not measurably more often, and "
         "from m = 1 over a narrower λ range; started from ℓ1's solution it finds it over a wider one (every seed "
         "with more samples than features) and, with fewer, is the only one that ever finds it.",
         "Where each penalty's support errors reach 0 (★: exact recovery), and how often each one gets there.",
         "What does a concave penalty give up in exchange (hint: convexity), and how does a warm start from ℓ1 "
         "change that?",
         "planted", dict(dataset="planted", method="concave", regularizer=("l1", "log")),
         PLANTED_LIVE, "one log run on the planted problem (about 10 s)",
         replaces=("regularizer", "lam", "warm_start")),
    Step("imp", "IMP vs concave on LeNet: cost and accuracy",
         "Iterative magnitude pruning (IMP), the classic way to find tickets, trains the network, removes a "
         "fixed share of the smallest weights (20 % by default), rewinds and trains again, round after round. "
         "The concave mask finds a ticket of the same size in one search and one retrain.",
         "The time each method spent to reach its sparsity, and the accuracy it kept.",
         "When would you still choose IMP?",
         "cost", dict(model="lenet300", dataset=("mnist", "digits"), method=("concave", "imp"), classes=None),
         {**PRESETS["lenet300-concave"], "epochs": 2, "retrain_epochs": 3},
         "a short concave LeNet-300-100 run on MNIST (a minute or two)", replaces=("method",)),
    Step("controls", "Controls: random pruning and reinit",
         "Is the ticket special, or would any mask of that size do? Two controls answer it. **Random pruning** "
         "keeps as many weights per layer as the ticket, chosen at random. **Reinit** keeps the ticket's exact "
         "mask but redraws its starting weights. Both train exactly as long as the ticket's retrain.",
         "How far each control falls below the ticket.",
         "What does the reinit control tell us that random pruning does not?",
         "controls", dict(model="lenet300", dataset=("mnist", "digits"), method=("concave", "random", "reinit"),
                          classes=None),
         dict(method="random"), "a random-pruning control of the ticket (seconds); then a reinit control",
         replaces=("method",)),
)

BY_KEY = {s.key: s for s in STEPS}


def _ok(want, got) -> bool:
    if want is ANY:
        return True
    if isinstance(want, tuple):
        return got in want
    return got == want


def matches(step: Step, cfg: dict) -> bool:
    """Does a run with this config belong in the step's figure? (Unset keys read as
    RunConfig's defaults: `classes` None means all classes.)"""
    if not cfg:
        return False
    if step.figure == "controls" and cfg.get("method") in ("random", "reinit") and \
            not (cfg.get("random_from") or cfg.get("reinit_from")):
        return False        # a control of a fixed density is not a control of a ticket
    if step.figure in ("pixels", "pareto", "cost") and cfg.get("target_sparsity") is not None \
            and cfg.get("model") == "logreg":
        return False
    return all(_ok(v, cfg.get(k)) for k, v in step.match.items())


def _key(step: Step, run: dict) -> tuple:
    c = data.cfg_of(run)
    return tuple(c.get(k) for k in step.replaces)


def is_mine(run: dict, user: str | None, launched=frozenset()) -> bool:
    """A student's own run: not a class-pack example and, when people are told apart,
    theirs (without an identity, every non-example run counts as the student's), or one
    their "Run it live" was given: an equal run is reused, whoever launched it first."""
    if run.get("example"):
        return False
    return run.get("id") in launched or user is None or run.get("owner") in (None, user)


def figure_runs(step: Step, runs: list[dict], user: str | None = None,
                launched=frozenset()) -> tuple[list[dict], str]:
    """The finished runs the step's figure draws, newest first, and where they come from:
    "yours" (only the student's), "mixed" (the student's replace some of the pack's),
    "pack" (only the class pack's) or "none". One dataset per figure: the student's newest
    run's, else the first of the step's datasets (in the order `match` lists them) the pack has."""
    done = [r for r in runs if r.get("status") == "done" and matches(step, data.cfg_of(r))]
    mine = [r for r in done if is_mine(r, user, launched)]
    pack = [r for r in done if r.get("example")]
    if not mine and not pack:
        return [], "none"
    if mine:
        dataset = data.cfg_of(mine[0]).get("dataset")
    else:
        want = step.match.get("dataset")
        have = [data.cfg_of(r).get("dataset") for r in pack]
        dataset = next((d for d in want if d in have), have[0]) if isinstance(want, tuple) else have[0]
    mine = [r for r in mine if data.cfg_of(r).get("dataset") == dataset]
    pack = [r for r in pack if data.cfg_of(r).get("dataset") == dataset]
    taken = {_key(step, r) for r in mine}
    kept = [r for r in pack if _key(step, r) not in taken]
    chosen = mine + kept
    return chosen, ("pack" if not mine else "yours" if not kept else "mixed")


# Step 5 compares one concave ticket with one IMP run of the same setting: the same model,
# data and epochs per training phase, and IMP's last round within this factor of the ticket's
# remaining weights (an IMP run stopped at 80 % says nothing about the cost of 5 %).
COST_PAIR_KEYS = ("model", "dataset", "classes", "epochs", "batch_size")
COST_PAIR_SPARSITY_FACTOR = 2.0


def _pair_ok(conc: dict, imp: dict) -> bool:
    a, b = data.cfg_of(conc), data.cfg_of(imp)
    if any(a.get(k) != b.get(k) for k in COST_PAIR_KEYS):
        return False
    ra, rb = data.summary_of(conc).get("remaining"), data.summary_of(imp).get("remaining")
    if not ra or not rb:
        return False
    return max(ra, rb) / min(ra, rb) <= COST_PAIR_SPARSITY_FACTOR


def cost_pair(step: Step, runs: list[dict], user: str | None = None,
              launched=frozenset()) -> tuple[dict | None, dict | None, str]:
    """(concave run, IMP run, source) that step 5 compares: the newest comparable pair, the
    student's own runs first, then theirs with the pack's, then the pack's alone."""
    done = [r for r in runs if r.get("status") == "done" and matches(step, data.cfg_of(r))]
    mine = [r for r in done if is_mine(r, user, launched)]
    pack = [r for r in done if r.get("example")]

    def of(rs, m):
        return [r for r in rs if data.cfg_of(r).get("method") == m]
    for cs, imps in ((of(mine, "concave"), of(mine, "imp")), (of(mine, "concave"), of(pack, "imp")),
                     (of(pack, "concave"), of(mine, "imp")), (of(pack, "concave"), of(pack, "imp"))):
        for c in cs:
            i = next((i for i in imps if _pair_ok(c, i)), None)
            if i is not None:
                source = "pack" if c.get("example") and i.get("example") else \
                    "yours" if not (c.get("example") or i.get("example")) else "mixed"
                return c, i, source
    return None, None, "none"


def pixels_verdict(fewest: dict[str, int | None], acc: float) -> str:
    """What step 3's figure shows, in words: the fewest pixels each penalty needed for `acc`;
    a question where the data does not favour the concave penalty."""
    lg, l1 = fewest.get("log"), fewest.get("l1")
    if lg is None or l1 is None:
        return ""
    said = f"Here ℓ1 reaches {acc:.0%} with {l1} pixel{'s' if l1 != 1 else ''} and log with {lg}."
    if lg < l1:
        return said + " Log needs fewer: the concave penalty wins on this axis."
    if lg == l1:
        return said + " A tie: on this easy task the penalty hardly matters. Would a harder one separate them?"
    return said + (" ℓ1 needs fewer, so on this run the concave penalty does not win: is that the task (0 vs 1 is "
                   "easy), the λ grid, or a poorer local minimum of the non-convex log?")


def recovery_verdict(exact: dict[str, tuple[int, int]]) -> str:
    """What the planted runs show: exact recoveries per penalty ("ℓ1 2 of 7, log 1 of 7, …"), said
    plainly, and as a question for the class where the concave penalty does not come out ahead."""
    if not exact:
        return ""
    nice = {"l1": "ℓ1", "log": "log", "log (warm start)": "log warm-started from ℓ1"}
    said = "Exact recovery here: " + ", ".join(f"{nice.get(p, p)} {h} of {n}" for p, (h, n) in exact.items()) + "."
    if "l1" not in exact or "log" not in exact:
        return said
    rate = {p: h / n for p, (h, n) in exact.items() if n}
    warm = rate.get("log (warm start)")
    if rate["log"] > rate["l1"]:
        return said + " Log recovers the planted support more often than ℓ1, as the argument says."
    if warm is not None and warm > rate["l1"]:
        return said + (" Log alone does no better than ℓ1, but started from ℓ1's solution it does: what does "
                       "that say about concave penalties and where they start?")
    return said + (" The data is mixed: log does not recover the support more often than ℓ1 on these runs. Why "
                   "might that be (λ range, too few samples, a poor local minimum)?")


def controls_source(runs: list[dict]) -> dict | None:
    """The ticket the controls step compares with: the newest finished concave run among them
    that has a control, else the newest one."""
    tickets = [r for r in runs if data.cfg_of(r).get("method") == "concave"]
    sources = {data.cfg_of(r).get(k) for r in runs for k in ("random_from", "reinit_from")}
    return next((r for r in tickets if r["id"] in sources), tickets[0] if tickets else None)


CONTROL_KEYS = ("model", "dataset", "classes", "data_params", "val_fraction", "batch_size", "lr", "optimizer",
                "momentum", "weight_decay", "lr_schedule", "rewind")


def control_config(source: dict, kind: str) -> RunConfig:
    """A random-pruning (`kind` "random") or reinit control of a finished ticket, training
    exactly like its retrain (the engine refuses anything else)."""
    c = {**RunConfig().to_dict(), **data.cfg_of(source)}
    retrain = c["retrain_epochs"] if c.get("retrain_epochs") is not None else c["epochs"]
    cfg = {k: c[k] for k in CONTROL_KEYS if k in c}
    cfg.update(method=kind, epochs=retrain, seed=int(c.get("seed") or 0))
    cfg[f"{kind}_from"] = source["id"]
    if kind == "reinit":
        cfg["rewind"] = "init"
    return RunConfig.from_dict(cfg)


def live_config(step: Step, runs: list[dict], mnist: bool, user: str | None = None,
                launched=frozenset()) -> RunConfig | None:
    """The one run the step's "Run it live" button queues. MNIST steps fall back to the offline
    digits when this server has no MNIST files. The controls step makes a random control of the
    figure's ticket, then (once that one exists) a reinit control; None while there is no ticket."""
    if step.figure == "controls":
        chosen, _ = figure_runs(step, runs, user, launched)     # the ticket the figure shows
        src = controls_source(chosen)
        if src is None or (data.cfg_of(src).get("dataset") == "mnist" and not mnist):
            return None
        kinds = {data.cfg_of(r).get("method") for r in runs if src["id"] in
                 (data.cfg_of(r).get("random_from"), data.cfg_of(r).get("reinit_from"))
                 and r.get("status") in ("queued", "running", "done")}
        return control_config(src, "reinit" if "random" in kinds else "random")
    cfg = dict(step.live)
    if cfg.get("dataset") == "mnist" and not mnist:
        if cfg.get("model") == "lenet300":
            cfg = dict(PRESETS["digits"])
        else:
            cfg["dataset"] = "digits"
    return RunConfig.from_dict(cfg)
