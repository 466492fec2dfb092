"""What every method shares: starting a retrain from the rewind point, the
invariant checks (measured, stored per run) and the final summary."""

from __future__ import annotations

import math
import time
import warnings

import torch

from .. import masking
from ..train import PhaseResult, RunContext


def start_retrain(ctx: RunContext, binary: dict[str, torch.Tensor], kind: str, round: int,
                  soft: dict[str, torch.Tensor] | None = None, phase: str = "train") -> None:
    """Set the weights retraining starts from, then fix the binary mask.

    init / epoch:K / iter:K  restore the saved rewind weights bit for bit;
    finetune                 keep the trained weights, folding a soft mask in (m⊙θ);
                             (finetune and reinit save their start as the run's rewind weights)
    reinit                   fresh random weights (the sanity check: a real ticket beats it;
                             method=reinit is the same control for any ticket, round by round)."""
    model = ctx.model
    if kind in ("init", "epoch", "iter"):
        if ctx.rewind_state is None:
            raise RuntimeError("no rewind weights were saved before retraining")
        masking.load_weights_state(model, ctx.rewind_state)
        masking.set_binary(model, binary)
    elif kind in ("finetune", "reinit"):
        if kind == "reinit":
            redraw_weights(ctx, ctx.cfg.seed + 10_007 * (round + 1))
        elif soft is not None:
            with torch.no_grad():
                for n, layer in masking.prunable_layers(model):
                    layer.weight.mul_(soft[n].to(layer.weight.device))
        ctx.save_rewind(round, phase, 0)  # the ticket records the weights its retrain starts from
        masking.set_binary(model, binary)
    else:
        raise ValueError(f"unknown rewind kind {kind!r}")

    # the round's ticket: a snapshot and its per-layer statistics, before `phase` trains it
    ctx.store.save_masks(ctx.run_id, f"r{round}-ticket", binary, binary=True)
    ctx.record_mask_stats({n: b.float() for n, b in binary.items()}, round, phase, 0, snapshot=False)


def redraw_weights(ctx: RunContext, seed: int) -> None:
    """θ drawn afresh from the model's own init distribution, seeded (masks untouched)."""
    from ..models import build_model
    torch.manual_seed(seed)
    fresh = build_model(ctx.cfg.model, ctx.splits.in_shape, ctx.splits.num_classes)
    masking.load_weights_state(ctx.model, masking.weights_state(fresh.to(ctx.device)))


# ---------------------------------------------------------------- controls of another run's ticket

# What a control must share with its source so it trains like the source's retrain.
TRAINING_KEYS = ("model", "dataset", "classes", "data_params", "val_fraction", "batch_size", "lr", "optimizer",
                 "momentum", "weight_decay", "lr_schedule")


def source_ticket(ctx: RunContext, key: str, rewind: bool) -> tuple[dict, dict]:
    """(source config, source ticket) of the run named by `key` (random_from / reinit_from),
    after checking that this control trains exactly like the source's retrain: same training
    settings, `epochs` equal to the source's retrain length and (when `rewind`) the same rewind
    point. Anything else is refused with one line naming the key, so a control never silently
    trains longer, shorter or from other weights than the ticket it is compared with."""
    from ..config import RunConfig
    from ..store import UnknownRun
    cfg, run_id = ctx.cfg, getattr(ctx.cfg, key)
    try:
        row = ctx.store.get_run(run_id)
    except UnknownRun:
        raise ValueError(f"{key} run {run_id!r} is not in this store") from None
    src = {**RunConfig().to_dict(), **(row["config"] or {})}
    if row["status"] != "done" or src["method"] not in ("concave", "imp"):
        raise ValueError(f"{key} run {run_id!r} must be a finished concave or imp run "
                         f"(it is a {row['status']} {src['method']} run)")
    ticket = ctx.store.load_array(run_id, "ticket")
    shapes = {n: layer.weight.shape for n, layer in ctx.layers}
    if set(ticket["mask"]) != set(shapes) or any(ticket["mask"][n].shape != shapes[n] for n in shapes):
        raise ValueError(f"{key} run {run_id} has a ticket for a different architecture")
    retrain = source_retrain_epochs(src)
    mismatch = [(k, src[k], getattr(cfg, k)) for k in TRAINING_KEYS if src[k] != getattr(cfg, k)]
    if cfg.epochs != retrain:
        mismatch.append(("epochs", retrain, cfg.epochs))
    if rewind and cfg.rewind != src["rewind"]:
        mismatch.append(("rewind", src["rewind"], cfg.rewind))
    if mismatch:
        k, want, got = mismatch[0]
        raise ValueError(f"{key} run {run_id} retrained with {k}={want!r} but this control has {k}={got!r}: "
                         f"a control trains like its source's retrain (set {k}={want!r})")
    return src, ticket


def source_retrain_epochs(src: dict) -> int:
    """Epochs of one retrain of a concave or imp run (IMP trains `epochs` every round)."""
    if src["method"] == "concave":
        return src["retrain_epochs"] if src["retrain_epochs"] is not None else src["epochs"]
    return src["epochs"]


def check_rewind(ctx: RunContext, binary: dict[str, torch.Tensor], round: int) -> float:
    """The weights a retrain starts from (read just before its first step) against the saved rewind
    checkpoint rewind.pt, which must still hash to the sha256 taken when it was saved: max |start − saved|
    over every kept weight, bias and buffer, which must be exactly 0. (Comparing right after the
    restore would only check the copy; this sees a rewind point that changed since it was captured,
    or weights moved between the restore and the retrain.)"""
    saved = ctx.store.load_array(ctx.run_id, "rewind")
    state, recorded = saved["state"], saved.get("sha256")
    file_intact = recorded is None or recorded == masking.state_sha256(state)   # files older than the hash
    own = ctx.model.state_dict()
    worst = 0.0
    for k, want in state.items():
        cur = own[k].detach().cpu()
        if k.endswith(".weight") and k[: -len(".weight")] in binary:
            keep = binary[k[: -len(".weight")]].cpu().bool()
            diff = (cur[keep].float() - want[keep].float()) if keep.any() else cur.new_zeros(1)
        else:
            diff = cur.float() - want.float()
        if diff.numel():
            worst = max(worst, float(diff.abs().max()))
    prev = _check(ctx, "rewind_exact")
    earlier_ok = prev is None or prev["passed"]     # a failure in an earlier round stays a failure
    if prev is not None:
        worst = max(worst, prev["value"] if prev["value"] is not None else math.inf)
    detail = f"max |retrain start − saved rewind weights| over kept weights and buffers, through round {round}"
    if not file_intact:
        detail += "; rewind.pt no longer matches the sha256 taken when it was saved"
    elif not earlier_ok:
        detail += "; failed in an earlier round"
    ctx.store.set_check(ctx.run_id, "rewind_exact", worst, 0.0, worst == 0.0 and file_intact and earlier_ok, detail)
    return worst


def check_zeros(ctx: RunContext, round: int) -> float:
    """Max |θ| over pruned entries after retraining (must be exactly 0)."""
    worst = 0.0
    for _, layer in masking.prunable_layers(ctx.model):
        pruned = layer.mask == 0
        if pruned.any():
            worst = max(worst, float(layer.weight.detach()[pruned].abs().max()))
    prev = _check_value(ctx, "zeros_stay_zero")
    worst = max(worst, prev or 0.0)
    ctx.store.set_check(ctx.run_id, "zeros_stay_zero", worst, 0.0, worst == 0.0,
                        f"max |θ| over pruned weights after training, through round {round}")
    return worst


def check_nested(ctx: RunContext, prev: dict[str, torch.Tensor] | None, new: dict[str, torch.Tensor]) -> int:
    """Entries kept now but pruned in the previous round (must be 0)."""
    if prev is None:
        return 0
    revived = sum(int((new[n].bool() & ~prev[n].bool()).sum()) for n in new)
    old = _check_value(ctx, "masks_nested") or 0
    revived = max(revived, int(old))
    ctx.store.set_check(ctx.run_id, "masks_nested", revived, 0, revived == 0,
                        "entries kept in a round that were pruned in an earlier round")
    return revived


def searched_ticket(ctx: RunContext, scores: dict, kept: dict, remaining: float | None, round: int,
                    allowed: dict | None = None) -> dict:
    """The binary ticket of a mask search (concave, cs): with `threshold_mode: topk` the
    `remaining` fraction of the highest `scores`, else `kept`, what the search's own rule keeps
    (m > τ, s > 0), within `allowed` (an earlier round's ticket). No layer is emptied unless
    allow_empty_layers (its best-scored entry stays), and the every_layer_kept check says so."""
    keep_all, refilled = not ctx.cfg.allow_empty_layers, []
    if ctx.cfg.threshold_mode == "topk":
        binary = masking.topk_masks(scores, remaining, "global", allowed=allowed, keep_every_layer=keep_all,
                                    refilled=refilled)
    else:
        binary = kept if allowed is None else {n: b & allowed[n].bool() for n, b in kept.items()}
        if keep_all:
            binary, refilled = masking.ensure_every_layer(binary, scores, allowed=allowed)
    check_every_layer_kept(ctx, refilled, binary, round)
    return binary


def check_every_layer_kept(ctx: RunContext, refilled: list[str], binary: dict[str, torch.Tensor],
                           round: int) -> int:
    """Layers the selection (threshold, top-k, magnitude) would have emptied, through this round.
    They keep their best entry unless allow_empty_layers; either way it is a warning worth seeing."""
    names = set(refilled) | {n for n, b in binary.items() if not b.any()}
    old = _check_value(ctx, "every_layer_kept") or 0
    count = max(len(names), int(old))
    if names:
        what = "left empty (allow_empty_layers)" if ctx.cfg.allow_empty_layers else "kept only their best entry"
        warnings.warn(f"round {round}: the selection would have pruned every weight of {sorted(names)}; "
                      f"they {what}", stacklevel=2)
    ctx.store.set_check(ctx.run_id, "every_layer_kept", count, 0, count == 0,
                        "layers a threshold or global ranking would have pruned entirely "
                        + ("(left empty: allow_empty_layers)" if ctx.cfg.allow_empty_layers
                           else "(each kept its best-scored entry)") + f", through round {round}")
    return count


def train_ticket(ctx: RunContext, round: int, mask: dict[str, torch.Tensor], phase: str, epochs: int) -> dict:
    """Check the weights it starts from against the rewind point, train with the binary mask fixed,
    check pruned weights stayed 0, record the round;
    returns the phase's result as stored in the run's state."""
    t = time.time()
    if not ctx.resuming_stage():    # mid-stage the model holds a checkpoint's weights, not the start
        check_rewind(ctx, mask, round)
    res = ctx.train_phase(round=round, phase=phase, epochs=epochs)
    check_zeros(ctx, round)
    record_round(ctx, round, mask, res, phase, time.time() - t)
    return ctx.result_dict(res)


def check_target_sparsity(ctx: RunContext, binary: dict[str, torch.Tensor]) -> None:
    """A searched mask (concave, cs) against target_sparsity, when one was set: a miss is a failed check.
    The tolerance is relative to the fraction the target keeps (10 % of it when λ steers the search,
    1 % with top-k): an absolute tolerance on sparsity would pass 1.4 % kept for a 0.5 % target."""
    cfg = ctx.cfg
    if cfg.target_sparsity is None:
        return
    rel = 0.01 if cfg.threshold_mode == "topk" else 0.10
    want = 1 - cfg.target_sparsity
    rep = masking.sparsity_report(binary)
    tol = max(rel * want, 0.5 / rep["total"])      # never tighter than half a weight
    if rep["remaining"] > want:
        miss = ("the λ controller did not get there: the search is too short for the masks (Adam moves m "
                "by ~mask_lr per step) — give it more epochs or a larger mask_lr")
    elif cfg.method == "cs":     # λ only adds pruning: CS with s0 = 0 can prune past a high level on its own
        miss = ("the search pruned past the level on its own (λ can only prune more): start the logits higher, "
                "s0 > 0 (0.05 reached 20, 5 and 0.5 % on LeNet-300-100), or use threshold_mode topk")
    else:
        miss = "the search pruned past the level: give it fewer epochs, a smaller mask_lr or a larger mask_init"
    notes = getattr(ctx, "target_notes", None) or []
    if notes:       # what the λ controller found during the search, when it found it
        miss += "; the λ controller said so during the search: " + " | ".join(notes)
    check_sparsity(ctx, rep["sparsity"], cfg.target_sparsity, tol, "target_sparsity", miss=miss,
                   tol_text=f"remaining {rep['remaining']:.4%} vs {want:.4%} ± {rel:.0%} of it")


def check_sparsity(ctx: RunContext, achieved: float, target: float, tol: float, what: str,
                   miss: str = "", tol_text: str = "") -> None:
    passed = abs(achieved - target) <= tol
    detail = f"measured sparsity vs {what} ({tol_text or f'tolerance {tol:g}'})"
    if not passed:
        detail += f"; MISSED by {achieved - target:+.4f}" + (f": {miss}" if miss else "")
    ctx.store.set_check(ctx.run_id, "sparsity_vs_target", achieved, target, passed, detail)


def _check(ctx: RunContext, name: str) -> dict | None:
    return next((c for c in ctx.store.checks(ctx.run_id) if c["name"] == name), None)


def _check_value(ctx: RunContext, name: str):
    c = _check(ctx, name)
    return None if c is None else c["value"]


def record_round(ctx: RunContext, round: int, binary: dict[str, torch.Tensor], res: PhaseResult,
                 phase: str, seconds: float) -> dict:
    rep = masking.sparsity_report(binary)
    ctx.log_row(kind="round", round=round, phase=phase, remaining=rep["remaining"], val_acc=res.val_acc,
                test_acc=res.test_acc, kept=rep["kept"], total=rep["total"], seconds=seconds)
    return rep


def summary(ctx: RunContext, binary: dict[str, torch.Tensor] | None, res: dict, **extra) -> dict:
    """The run's final summary, with sparsity measured from the masks in the model."""
    masks = binary if binary is not None else {n: l.mask.detach().cpu() for n, l in
                                               masking.prunable_layers(ctx.model)}
    rep = masking.sparsity_report(masks)
    if "target_mask" in ctx.splits.extras and len(masks) == 1:
        extra = {"recovery": recovery(ctx, next(iter(masks.values()))), **extra}
    return {
        "method": ctx.cfg.method,
        "sparsity": rep["sparsity"], "remaining": rep["remaining"], "kept": rep["kept"], "total": rep["total"],
        "test_accuracy": res["test_acc"], "val_accuracy": res["val_acc"],
        "wall_seconds": ctx.elapsed(),
        "setup_seconds": ctx.setup_seconds,
        "device": str(ctx.device),
        "layers": {n: {k: v for k, v in d.items()} for n, d in rep["layers"].items()},
        **extra,
    }


def save_ticket(ctx: RunContext, binary: dict[str, torch.Tensor], round: int) -> None:
    """The ticket: the binary mask plus the weights it rewinds to."""
    ctx.store.save_array(ctx.run_id, "ticket", {
        "mask": {n: m.bool().cpu() for n, m in binary.items()},
        "rewind": {k: v.cpu() for k, v in (ctx.rewind_state or {}).items()},
        "rewind_point": ctx.cfg.rewind, "round": round})


def recovery(ctx: RunContext, binary: torch.Tensor) -> dict:
    """For the planted problem: how well the learned mask recovers the known
    target m*. ‖m* − m̃‖₂ uses the relaxed mask at the end of the last search
    (the binary ticket for methods without one); support figures use the ticket."""
    target = ctx.splits.extras["target_mask"].detach().float().cpu().reshape(binary.shape)
    tags = [t for t in ctx.store.mask_snapshots(ctx.run_id) if t.endswith("-search-end")]
    soft = next(iter(ctx.store.load_masks(ctx.run_id, tags[-1]).values())) if tags else binary.float()
    b = binary.bool()
    t = target.bool()
    hits = int((b & t).sum())
    return {"distance": float((target - soft.float().reshape(target.shape)).norm()),
            "binary_distance": float((target - b.float()).norm()),
            "support_size": int(t.sum()), "kept": int(b.sum()), "hits": hits,
            "precision": hits / max(1, int(b.sum())), "recall": hits / max(1, int(t.sum())),
            "exact": bool(torch.equal(b, t))}
