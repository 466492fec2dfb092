"""Dense training: no pruning. The reference accuracy tickets are compared with."""

from __future__ import annotations

from .. import masking
from ..train import RunContext
from .common import summary


def run(ctx: RunContext) -> dict:
    ctx.epochs_planned = ctx.cfg.epochs
    if ctx.stage("train"):
        masking.set_dense(ctx.model)
        res = ctx.train_phase(round=0, phase="train", epochs=ctx.cfg.epochs)
        ctx.state["last"] = ctx.result_dict(res)
        ctx.end_stage()
    return summary(ctx, None, ctx.state["last"])
