"""The training loop and the per-run context every method builds on.

`RunContext` owns what a run needs (config, data on the device, model, store
writer, RNG) and offers `train_phase`, one short loop used by every method:
search (θ and m trained jointly on L + λR(m)), retrain (binary mask fixed) and
plain training. Evaluation, logging, mask statistics, snapshots and
checkpoints happen at epoch ends; the rest of the step stays lean.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import lam_control, masking, regularizers
from .config import RunConfig
from .data import Batches, DataSplits, load_dataset
from .models import build_model
from .settings import env_fraction
from .store import Store

# Models up to this many prunable weights get a mask snapshot every epoch
# (pixel masks, LeNet-sized); bigger ones only at phase ends.
SNAPSHOT_EVERY_EPOCH_MAX = 300_000
STEP_ROWS_PER_EPOCH = 20      # step-level metric rows kept per epoch
FLUSH_SECONDS = 1.0           # how stale live metrics may get in the store


def _constant(t: int, total: int) -> float:
    return 1.0


def _cosine(t: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))


# lr_schedule → the factor on every group's base rate at step t of a `total`-step phase. A pure
# function of the step, so the λ controller can plan with the same rates the optimizer will get.
LR_SCHEDULES: dict[str, Callable[[int, int], float]] = {"constant": _constant, "cosine": _cosine}


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, phase: str):
        super().__init__(f"non-finite loss at step {step} of the {phase} phase")
        self.step = step


class Cancelled(RuntimeError):
    pass


def worker_device_name(name: str) -> str:
    """A worker's CUDA_VISIBLE_DEVICES holds only the slot the queue gave it ($LOTTERY_SLOT), so the
    config's `cuda:N` (the machine's N-th GPU, which the queue placed it on) is this process's cuda:0."""
    if os.environ.get("LOTTERY_SLOT") is not None and name.startswith("cuda:"):
        return "cuda:0"
    return name


def pick_device(name: str) -> torch.device:
    name = worker_device_name(name)
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine")
    else:
        device = torch.device(name)
    if device.type == "cuda":
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {name!r} requested but this process sees {torch.cuda.device_count()} "
                               f"GPU(s) (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
        # Workers sharing one GPU (LOTTERY_MAX_RUNS above the GPU count) can each be held to a share of
        # its memory; past it PyTorch raises OutOfMemoryError, recorded as "CUDA out of memory: …".
        fraction = env_fraction("LOTTERY_CUDA_MEMORY_FRACTION")
        if fraction is not None:
            torch.cuda.set_per_process_memory_fraction(fraction, device.index or 0)
    return device


# `precision: auto` uses bf16 autocast only for these models. On an H200 the small ones ran
# slower under it (bench/gpu.py, docs/RESULTS.md: ResNet-20 2.79 s vs 2.10 s an epoch, LeNet-300-100
# 0.89 vs 0.65 s): they are bound by kernel launches, and autocast adds a cast per layer. The large
# convolutional nets are where tensor cores pay (not yet measured here).
AUTO_BF16_MODELS = frozenset({"vgg16", "wrn16_8", "resnet18"})


def autocast_dtype(precision: str, model: str, bf16_supported: bool) -> torch.dtype | None:
    """The autocast dtype of a run (None: plain fp32)."""
    if precision == "bf16" or (precision == "auto" and bf16_supported and model in AUTO_BF16_MODELS):
        return torch.bfloat16
    return None


@dataclass
class PhaseResult:
    val_acc: float
    test_acc: float
    val_loss: float
    steps: int
    seconds: float               # the whole phase, evaluation and records included
    train_seconds: float = 0.0   # the optimizer-step loop only: what throughput ratios compare


def load_moments(opts, states: list[dict]) -> None:
    """Continue optimizers from saved states (moments, step counts) while keeping the rates
    this phase's schedule set: a state dict also carries the old phase's (e.g. decayed) lr."""
    if len(states) != len(opts):
        raise RuntimeError("the saved optimizer state holds another optimizer layout")
    for o, sd in zip(opts, states):
        rates = [{k: gr[k] for k in ("lr", "initial_lr") if k in gr} for gr in o.param_groups]
        o.load_state_dict(sd)
        for gr, rate in zip(o.param_groups, rates):
            gr.update(rate)


class RunContext:
    sync_free_nan_check: bool | None = None  # None: on for GPUs; tests force it on the CPU
    def __init__(self, cfg: RunConfig, store: Store, run_id: str, data_dir,
                 progress: Callable[[float, str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, resume: bool = False):
        self.cfg = cfg
        self.store = store
        self.run_id = run_id
        self.t0 = time.time()
        self.device = pick_device(cfg.device)
        self.progress_cb = progress
        self.should_stop = should_stop or (lambda: False)

        self.splits: DataSplits = load_dataset(cfg.dataset, data_dir, classes=cfg.classes,
                                               val_fraction=cfg.val_fraction, split_seed=0,
                                               device=self.device, params=cfg.data_params)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, self.splits.in_shape, self.splits.num_classes).to(self.device)
        self.layers = masking.prunable_layers(self.model)  # fixed for the model's life; walked every step
        self.binary_logit = self.splits.num_classes == 2 and self._out_features() == 1
        # GPU path: data already lives on the device (load_dataset); conv nets go
        # channels_last and the forward pass runs under bf16 autocast where that pays
        # (autocast_dtype). The loss, R(m) and the optimizer stay in fp32.
        cuda = self.device.type == "cuda"
        if cuda:   # a run's shapes are fixed: let cuDNN time its convolution algorithms once and keep the fastest
            torch.backends.cudnn.benchmark = True
        self.amp_dtype = autocast_dtype(cfg.precision, cfg.model, cuda and torch.cuda.is_bf16_supported())
        self.memory_format = torch.channels_last if cuda and any(
            isinstance(m, torch.nn.Conv2d) for m in self.model.modules()) else torch.contiguous_format
        if self.memory_format is torch.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if cfg.compile else self.model
        self.join_reg_masks = self.device.type != "cpu"   # how add_reg_grad batches R'(m): see there
        self.setup_seconds = time.time() - self.t0  # loading the data and building the model
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.total_prunable = sum(layer.weight.numel() for _, layer in self.layers)
        self.snapshot_every_epoch = self.total_prunable <= SNAPSHOT_EVERY_EPOCH_MAX
        self.global_step = 0
        self.lam = float(cfg.lam)
        self.lam_history: list[tuple[int, float]] = []
        self.last_optimizer_state: list[dict] | None = None
        self.rewind_state: dict[str, torch.Tensor] | None = None
        self._pending: list[dict] = []
        self._last_flush = time.time()
        self._prev_snapshot: dict[str, torch.Tensor] | None = None
        self.epochs_planned = 1
        self.epochs_done = 0
        # Resumable structure: methods run named stages; completed ones are skipped on resume.
        self.state: dict = {}               # method-local values that must survive a resume
        self.done_stages: list[str] = []
        self.current_stage: str | None = None
        self._resume: dict | None = None    # the checkpoint while a stage is being resumed
        self.wall_offset = 0.0
        nan_at = os.environ.get("LOTTERY_INJECT_NAN_STEP", "")  # fault injection for tests
        self._inject_nan_at = int(nan_at) if nan_at.strip().isdigit() else None
        if resume:
            self._load_checkpoint()

    def _out_features(self) -> int:
        return self.layers[-1][1].weight.shape[0]

    # ------------------------------------------------------------------ loss / eval
    def task_loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.binary_logit:
            return F.binary_cross_entropy_with_logits(out.squeeze(1), y.float())
        return F.cross_entropy(out, y)

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pred = (out.squeeze(1) > 0).long() if self.binary_logit else out.argmax(1)
        return (pred == y).sum()

    @torch.no_grad()
    def evaluate(self, split: str) -> tuple[float, float]:
        """(loss, accuracy) on 'train', 'val' or 'test'."""
        x = getattr(self.splits, f"{split}_x")
        y = getattr(self.splits, f"{split}_y")
        if len(y) == 0:
            return math.nan, math.nan
        was = self.model.training
        self.model.eval()
        loss = 0.0
        correct = 0
        for xb, yb in Batches(x, y, max(self.cfg.batch_size, 1024), shuffle=False):
            out = self.run_model(self.model, xb)
            loss += float(self.task_loss(out, yb)) * len(yb)
            correct += int(self.correct(out, yb))
        self.model.train(was)
        return loss / len(y), correct / len(y)

    def run_model(self, model, xb: torch.Tensor) -> torch.Tensor:
        if self.memory_format is torch.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            return model(xb).float()

    def reg_value(self, reg: regularizers.Regularizer, params: dict) -> torch.Tensor:
        """R(m) summed over entries, or averaged per entry (reg_scale=mean)."""
        total = None
        for _, layer in self.layers:
            r = reg.fn(layer.mask_value(), **params).sum()
            total = r if total is None else total + r
        if self.cfg.reg_scale == "mean":
            total = total / self.total_prunable
        return total

    @torch.no_grad()
    def add_reg_grad(self, reg: regularizers.Regularizer, params: dict) -> None:
        """Add the gradient of λR(m) to every mask's gradient, from R's closed-form
        derivative. Same result as backpropagating through `reg_value`, but one
        elementwise pass instead of a graph: on LeNet-300-100 that graph cost more
        than the masked forward pass itself. The layers' masks are joined into one
        flat tensor first on a GPU, so R' costs a few kernels whatever the depth (per layer,
        ResNet-20's 21 layers made it ~90 small kernels a step). On a CPU, where a kernel call
        is cheap and memory traffic is not, each layer is done in place: joining them copied
        every mask once more and made a new tensor of the model's size every step (≈ 0.15 ms
        of LeNet-300-100's ≈ 0.6 ms of mask work a step). The numbers are the same either way.
        A penalty with its own in-place form (`Regularizer.add_grad`: l1, log, log_raw) on clipped
        masks skips both: l1 is one scalar add, log one m+ε and one addcdiv per mask."""
        coef = self.lam / self.total_prunable if self.cfg.reg_scale == "mean" else self.lam
        masks = [layer.mask for _, layer in self.layers]
        for p in masks:
            if p.grad is None:   # e.g. the λ probe, before any backward pass
                p.grad = torch.zeros_like(p)
        if reg.add_grad is not None and all(layer.mask_param == "clip" for _, layer in self.layers):
            # R's own in-place form: no join and fewer passes over the masks, on any device
            reg.add_grad([p.grad for p in masks], masks, coef, **params)
            return
        first = self.layers[0][1]
        if not self.join_reg_masks or any(layer.mask_param != first.mask_param or layer.beta != first.beta
                                          for _, layer in self.layers):
            groups = [[layer] for _, layer in self.layers]   # a CPU, or mixed parametrisations: layer by layer
        else:
            groups = [[layer for _, layer in self.layers]]
        for group in groups:
            x = group[0].mask if len(group) == 1 else torch.cat([layer.mask.reshape(-1) for layer in group])
            m = torch.sigmoid(x if group[0].beta == 1.0 else group[0].beta * x) \
                if group[0].mode == "soft" and group[0].mask_param == "sigmoid" else x
            d = reg.grad(m, **params)
            if group[0].mask_param == "sigmoid":  # chain rule through m = sigmoid(β·s)
                d.mul_(m * (1.0 - m) * group[0].beta)
            parts = [d] if len(group) == 1 else [v.view_as(layer.mask) for v, layer in
                                                 zip(d.split([layer.mask.numel() for layer in group]), group)]
            torch._foreach_add_([layer.mask.grad for layer in group], parts, alpha=coef)

    # ------------------------------------------------------------------ optimizers
    def make_optimizers(self, train_masks: bool, epochs: int, steps_per_epoch: int):
        cfg = self.cfg
        params = [p for p in masking.weight_parameters(self.model) if p.requires_grad]
        # Fused kernels (one pass per tensor instead of ~10 ops) exist on CPU and CUDA
        # for fp32; on LeNet-300-100 they save ~0.65 ms of a ~4 ms Adam step on 2 CPU cores.
        fused = {"fused": True} if self.device.type in ("cpu", "cuda") else {}
        # Masks use Adam (unless mask_optimizer=sgd, continuous sparsification's reference): their
        # loss gradient θ·∂L/∂w is tiny and varies by layer, so a per-coordinate step size is what
        # lets λ mean the same everywhere. When the weights use Adam(W) too, the masks are a second
        # parameter group of the same optimizer (own lr, no weight decay): one fused step instead of two.
        masks = masking.mask_parameters(self.model) if train_masks else []
        mask_sgd = bool(masks) and cfg.mask_optimizer == "sgd"
        mask_opt = None          # the masks' own optimizer, where they cannot share the weights'
        if mask_sgd:             # the reference's: SGD, momentum 0.9, Nesterov, no weight decay
            mask_opt = torch.optim.SGD(masks, lr=cfg.mask_lr, momentum=0.9, nesterov=True, **fused)
        elif masks and cfg.optimizer == "sgd":
            mask_opt = torch.optim.Adam(masks, lr=cfg.mask_lr, **fused)
        if cfg.optimizer == "sgd":
            opts = [torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                    **fused)]
        else:
            groups = [{"params": params}]
            if masks and mask_opt is None:
                groups.append({"params": masks, "lr": cfg.mask_lr, "weight_decay": 0.0})
            cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
            opts = [cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)]
        if mask_opt is not None:
            opts.append(mask_opt)
        total = max(1, epochs * steps_per_epoch)
        factor = LR_SCHEDULES[cfg.lr_schedule]
        scheds = [] if cfg.lr_schedule == "constant" else \
            [torch.optim.lr_scheduler.LambdaLR(o, lambda t: factor(t, total)) for o in opts]
        return opts, scheds

    # ------------------------------------------------------------------ the loop
    def train_phase(self, *, round: int, phase: str, epochs: int, regularizer: str | None = None,
                    target_remaining: float | None = None,
                    capture: tuple[str, int] | None = None,
                    schedule: Callable[[int, int], dict] | None = None,
                    optimizer_state: list[dict] | None = None) -> PhaseResult:
        """Train for `epochs` within the current stage (see `stage`). With
        `regularizer`, masks must be soft (set_soft) and the loss adds λR(m);
        with `target_remaining`, λ adapts so the mask ends there.
        `capture=('iter'|'epoch', K)` saves the rewind weights at that point.
        `schedule(phase_step, total_steps)` runs before every step (e.g. to set a
        mask temperature) and returns scalars logged with the step and epoch rows.
        `optimizer_state` (a previous phase's `last_optimizer_state`) continues its
        moments and step counts; the rates restart on this phase's schedule.

        A checkpoint is written at every epoch end and when a stop is
        requested; on resume the phase continues from it step for step."""
        cfg = self.cfg
        t_start = time.time()
        batches = Batches(self.splits.train_x, self.splits.train_y, cfg.batch_size, shuffle=True,
                          augment=self.splits.augment, generator=self.gen)
        spe = len(batches)
        reg = regularizers.get(regularizer) if regularizer else None
        reg_params = reg.resolve({"eps": cfg.eps, **(cfg.reg_params or {})}) if reg else {}  # the phase's R
        opts, scheds = self.make_optimizers(reg is not None, epochs, spe)
        log_every = max(1, spe // STEP_ROWS_PER_EPOCH)
        # λ is re-solved about 10 times an epoch, and at least every 5 steps: within 5 steps
        # Adam moves a mask entry by ≤ 0.05, so a λ that is off cannot crash the mask before it is fixed
        adapt_every = max(1, min(spe // 10, 5))
        factor = LR_SCHEDULES[cfg.lr_schedule]
        controller = lam_control.LamController(
            target_remaining, self.total_prunable, [cfg.mask_lr * factor(t, epochs * spe) for t in range(epochs * spe)]
        ) if target_remaining is not None else None
        told = set()    # what the controller has said about reaching the target, said once a phase
        self.model.train()

        start_epoch, skip, step, correct, seen = 1, 0, 0, 0, 0
        pos = self._resume_position()
        if pos is not None:  # continue this phase from its checkpoint
            self.model.load_state_dict(self._resume["model"])
            if len(pos["opts"]) != len(opts) or any(len(o.param_groups) != len(sd["param_groups"])
                                                    for o, sd in zip(opts, pos["opts"])):
                raise RuntimeError("this checkpoint holds another optimizer layout (written by an older "
                                   "engine); it cannot be resumed step for step — start the run again")
            for o, sd in zip(opts, pos["opts"]):
                o.load_state_dict(sd)
            for sc, sd in zip(scheds, pos["scheds"]):
                sc.load_state_dict(sd)
            if controller is not None and pos["controller"]:
                controller.load_state(pos["controller"])
            self.gen.set_state(pos["gen"])
            start_epoch, skip, step = pos["epoch"], pos["batch"], pos["phase_step"]
            correct, seen = pos["correct"], pos["seen"]
            self._resume = None
        else:
            if optimizer_state is not None:
                load_moments(opts, optimizer_state)
            if capture == ("iter", 0) or capture == ("epoch", 0):
                self.save_rewind(round, phase, 0)
            if controller is not None:  # the probe: λ from the masks' gradient statistics, whatever λ₀
                self.lam = lam_control.calibrated_lam(self, controller, reg, reg_params, opts)
                self.lam_history.append((self.global_step, self.lam))
                self._tell_reach(controller, round, 0, epochs, told)

        def position(epoch, batch, gen_state):
            return {"epoch": epoch, "batch": batch, "gen": gen_state, "phase_step": step,
                    "correct": correct, "seen": seen, "opts": [o.state_dict() for o in opts],
                    "scheds": [sc.state_dict() for sc in scheds],
                    "controller": controller.state() if controller is not None else None}

        val_loss = val_acc = test_acc = math.nan
        train_seconds = 0.0
        sched_vals: dict = {}
        # On a GPU a per-step finiteness check would sync every step; there the first
        # non-finite step is recorded on the device and checked at the next sync point.
        sync_free = self.device.type != "cpu" if self.sync_free_nan_check is None else self.sync_free_nan_check
        bad_at = torch.zeros((), dtype=torch.long, device=self.device) if sync_free else None
        for epoch in range(start_epoch, epochs + 1):
            gen_at_epoch_start = self.gen.get_state()
            t_epoch = time.time()
            if epoch != start_epoch or skip == 0:
                correct = seen = 0
            for i, (xb, yb) in enumerate(batches):
                if epoch == start_epoch and i < skip:
                    continue  # already trained before the checkpoint (the batch still draws its randomness)
                sched_vals = schedule(step, epochs * spe) if schedule is not None else {}
                out = self.run_model(self.forward, xb)
                loss_task = self.task_loss(out, yb)
                if self._inject_nan_at == self.global_step + 1:
                    loss_task = loss_task * math.nan
                # λR(m) enters through its gradient (add_reg_grad), not the autograd graph.
                log_row = (step + 1) % log_every == 0 or step == 0
                rv = None
                if reg is not None and log_row:  # R(m) itself is only needed for the logged rows
                    with torch.no_grad():
                        rv = float(self.reg_value(reg, reg_params))
                if sync_free:  # GPU: remember the first bad step on the device, look at it when we sync anyway
                    ok = torch.isfinite(loss_task.detach()) | (bad_at > 0)
                    bad_at = torch.where(ok, bad_at, self.global_step + 1)
                elif not torch.isfinite(loss_task.detach()):
                    # Stop before the step so weights and the last checkpoint stay good.
                    raise NonFiniteLoss(self.global_step + 1, phase)
                for o in opts:
                    o.zero_grad(set_to_none=True)
                loss_task.backward()
                if reg is not None:
                    self.add_reg_grad(reg, reg_params)
                for o in opts:
                    o.step()
                for sc in scheds:
                    sc.step()
                masking.apply_masks_(self.model, self.layers)
                step += 1
                self.global_step += 1
                if log_row:
                    self._raise_if_bad(bad_at, phase)
                    batch_correct = int(self.correct(out, yb))
                    correct += batch_correct
                    seen += len(yb)
                    self._pending.append({
                        "kind": "step", "round": round, "phase": phase, "epoch": (epoch - 1) + (i + 1) / spe,
                        "step": self.global_step, "wall": self.elapsed(), "lr": opts[0].param_groups[0]["lr"],
                        "lam": self.lam if reg else None,
                        "loss": float(loss_task.detach()) + (self.lam * rv if rv is not None else 0.0),
                        "loss_task": float(loss_task.detach()),
                        "loss_reg": self.lam * rv if rv is not None else None,
                        "train_acc": batch_correct / len(yb), **sched_vals})
                if capture == ("iter", step):
                    self.save_rewind(round, phase, step)
                if controller is not None and step % adapt_every == 0 and \
                        controller.active(step, lam_control.mask_group_lr(self, opts)):
                    x, g, sd, r, x_tau, lr, frozen = lam_control.mask_moments(self, opts, reg, reg_params)
                    wanted = controller.solve(x, g, sd, r, x_tau, controller.travel(step, lr), frozen)
                    self.lam = controller.step_to(self.lam, wanted)
                    self.lam_history.append((self.global_step, self.lam))
                    self._tell_reach(controller, round, step, epochs, told)
                if self.should_stop():
                    self._raise_if_bad(bad_at, phase)
                    self.flush()
                    self.write_checkpoint(position(epoch, i + 1, gen_at_epoch_start))
                    raise Cancelled(f"cancelled at step {self.global_step}")
                self._maybe_flush()
            # ---- epoch end
            self._raise_if_bad(bad_at, phase)  # before anything of this epoch is checkpointed
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            train_seconds += time.time() - t_epoch
            if capture == ("epoch", epoch):
                self.save_rewind(round, phase, step)
            val_loss, val_acc = self.evaluate("val")
            _, test_acc = self.evaluate("test")
            masks = masking.get_masks(self.model)
            remaining = self.measured_remaining(masks, soft=reg is not None)
            self._pending.append({
                "kind": "epoch", "round": round, "phase": phase, "epoch": epoch, "step": self.global_step,
                "wall": self.elapsed(), "lr": opts[0].param_groups[0]["lr"],
                "lam": self.lam if reg else None, "loss_task": val_loss,
                "train_acc": correct / seen if seen else None, "val_acc": val_acc, "test_acc": test_acc,
                "remaining": remaining, **sched_vals})
            self.flush()
            self.record_mask_stats(masks, round, phase, epoch, snapshot=self.snapshot_every_epoch)
            self.epochs_done += 1
            self.report_progress(f"round {round} {phase} epoch {epoch}/{epochs}")
            self.write_checkpoint(position(epoch + 1, 0, self.gen.get_state()))
        if capture is not None and capture[0] == "iter" and capture[1] > step:
            raise ValueError(f"rewind iter:{capture[1]} lies beyond the {step} iterations of the {phase} phase "
                             f"it rewinds into; use a smaller K or more epochs")
        if math.isnan(val_acc):  # resumed after the last epoch had already finished
            val_loss, val_acc = self.evaluate("val")
            _, test_acc = self.evaluate("test")
        self.last_optimizer_state = [o.state_dict() for o in opts]
        return PhaseResult(val_acc=val_acc, test_acc=test_acc, val_loss=val_loss, steps=step,
                           seconds=time.time() - t_start, train_seconds=train_seconds)

    @property
    def target_notes(self) -> list[str]:
        """The λ controller's early word on an unreachable target (kept in the resumable state)."""
        return self.state.setdefault("target_notes", [])

    @property
    def keep_threshold(self) -> float:
        """The mask value above which the search's own ticket rule keeps an entry: τ, except for
        continuous sparsification, whose ticket is s > 0, i.e. m = sigmoid(β·s) > 0.5 at any β."""
        return 0.5 if self.cfg.method == "cs" else self.cfg.threshold

    def _tell_reach(self, controller, round: int, step: int, epochs: int, told: set) -> None:
        """When the controller finds the target out of reach, say why as soon as it does: one
        warning line (the worker's log) and the sparsity_vs_target check, marked as projected
        (the method's final check replaces it, keeping the reason)."""
        if self.cfg.threshold_mode == "topk":    # top-k keeps exactly the target whatever crosses τ
            return
        cut = "s > 0" if self.cfg.method == "cs" else f"τ = {self.keep_threshold:g}"
        why = controller.verdict(cut, self.cfg.mask_lr, epochs)
        kind = "too_dense" if (controller.reach or {}).get("too_dense") else "too_sparse"
        if why is None or kind in told:
            return
        told.add(kind)
        total = controller.total
        note = (f"round {round} search, step {step} of {total}: the target ({controller.target_remaining:.2%} "
                f"remaining) cannot be reached: {why}")
        self.target_notes.append(note)
        warnings.warn(note, stacklevel=2)
        if self.cfg.target_sparsity is not None:
            self.store.set_check(self.run_id, "sparsity_vs_target", controller.best_sparsity(),
                                 self.cfg.target_sparsity, False,
                                 f"projected during the search (the final check replaces this): {note}")

    @staticmethod
    def _raise_if_bad(bad_at, phase: str) -> None:
        if bad_at is not None and int(bad_at) > 0:
            raise NonFiniteLoss(int(bad_at), phase)

    def measured_remaining(self, masks: dict[str, torch.Tensor], soft: bool) -> float:
        kept = sum(int(((m > self.keep_threshold) if soft else (m != 0)).sum()) for m in masks.values())
        return kept / self.total_prunable

    # ------------------------------------------------------------------ records
    def save_rewind(self, round: int, phase: str, step: int) -> None:
        self.rewind_state = masking.weights_state(self.model)
        # the hash taken now lets the rewind_exact check tell a changed rewind.pt from the one saved here
        self.store.save_array(self.run_id, "rewind", {"state": self.rewind_state,
                                                      "sha256": masking.state_sha256(self.rewind_state),
                                                      "round": round, "phase": phase, "step": step})

    def record_mask_stats(self, masks, round: int, phase: str, epoch: int, snapshot: bool,
                          tag: str | None = None, binary: bool = False) -> None:
        rows = masking.mask_layer_stats(masks, self.keep_threshold, self._prev_snapshot)
        if snapshot or tag:  # the file first: the stats row is what tells live views to look for it
            self.store.save_masks(self.run_id, tag or f"r{round}-{phase}-e{epoch:04d}", masks, binary=binary)
        self.store.add_mask_stats(self.run_id, {"round": round, "phase": phase, "epoch": epoch,
                                                "step": self.global_step}, rows)
        self._prev_snapshot = masks

    def log_row(self, **row) -> None:
        self._pending.append({"wall": self.elapsed(), "step": self.global_step, **row})
        self.flush()

    def _maybe_flush(self) -> None:
        # Liveness heartbeats come from a thread of the process that runs us
        # (jobs.Heartbeat: workers, sweep tasks, foreground `run`), not from this loop.
        if time.time() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        rows, self._pending = self._pending, []
        self.store.add_metrics(self.run_id, rows)
        self._last_flush = time.time()

    def report_progress(self, label: str) -> None:
        frac = min(1.0, self.epochs_done / max(1, self.epochs_planned))
        self.store.update_run(self.run_id, progress=frac, heartbeat=time.time(), phase=label)
        if self.progress_cb:
            self.progress_cb(frac, label)

    def elapsed(self) -> float:
        return self.wall_offset + time.time() - self.t0

    # ------------------------------------------------------------------ stages and checkpoints
    def stage(self, name: str) -> bool:
        """True when stage `name` still has to run; on resume, finished stages are skipped."""
        if name in self.done_stages:
            return False
        self.current_stage = name
        return True

    def end_stage(self) -> None:
        self.done_stages.append(self.current_stage)
        self.current_stage = None
        self.flush()
        self.write_checkpoint(None)

    def write_checkpoint(self, position: dict | None) -> None:
        """Everything needed to continue: model (with masks and their modes),
        method state, λ, RNG states, and where in the current stage we are.
        Saved atomically, so a kill mid-write leaves the previous one intact."""
        ck = {
            "version": 1,
            "done_stages": list(self.done_stages),
            "in_stage": None if position is None else {"name": self.current_stage, **position},
            "model": self.model.state_dict(),
            "modes": {n: [layer.mode, layer.mask_param] for n, layer in self.layers},
            "frozen": {n: layer._frozen_keep.cpu() for n, layer in self.layers
                       if getattr(layer, "_frozen_keep", None) is not None},
            "state": self.state,
            "lam": self.lam, "lam_history": [list(x) for x in self.lam_history],
            "global_step": self.global_step, "epochs_done": self.epochs_done,
            "gen": self.gen.get_state(), "torch_rng": torch.get_rng_state(),
            "wall": self.elapsed(),
            "marks": self.store.tail_marks(self.run_id),
        }
        self.store.save_array(self.run_id, "ckpt", ck)

    def _load_checkpoint(self) -> None:
        path = self.store.run_dir(self.run_id) / "ckpt.pt"
        if not path.exists():  # nothing saved yet: start over, dropping partial records
            self.store.truncate_after(self.run_id, {"metrics_seq": -1, "mask_rowid": -1})
            return
        ck = self.store.load_array(self.run_id, "ckpt")
        if not isinstance(ck, dict) or ck.get("version") != 1:
            raise ValueError("checkpoint ckpt.pt has an unknown format")
        self.done_stages = list(ck["done_stages"])
        self.state = ck["state"]
        self.lam = float(ck["lam"])
        self.lam_history = [tuple(x) for x in ck["lam_history"]]
        self.global_step, self.epochs_done = int(ck["global_step"]), int(ck["epochs_done"])
        self.gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        self.wall_offset = float(ck["wall"])
        for n, layer in self.layers:
            layer.mode, layer.mask_param = ck["modes"][n]
            layer.mask.requires_grad_(layer.mode == "soft")
            keep = ck["frozen"].get(n)
            layer._frozen_keep = keep.to(self.device) if keep is not None else None
        self.model.load_state_dict(ck["model"])
        if (self.store.run_dir(self.run_id) / "rewind.pt").exists():
            self.rewind_state = {k: v.to(self.device) for k, v in
                                 self.store.load_array(self.run_id, "rewind")["state"].items()}
        self._resume = ck if ck["in_stage"] else None
        self.store.truncate_after(self.run_id, ck["marks"])

    def resuming_stage(self) -> bool:
        """True while the current stage continues from a checkpoint taken inside it."""
        return self._resume_position() is not None

    def _resume_position(self) -> dict | None:
        if self._resume is not None and self._resume["in_stage"]["name"] == self.current_stage:
            return self._resume["in_stage"]
        return None

    @staticmethod
    def result_dict(res: PhaseResult) -> dict:
        return dataclasses.asdict(res)
