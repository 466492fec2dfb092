"""Ship a finished ticket: a compact sparse safetensors file, a dense ONNX file,
an inference-only loader, and measurements of what the sparsity saves.

    deploy(store, run_id, out_dir)  writes out_dir/model.safetensors (sparse),
                                    out_dir/model.onnx (dense, zeros in place) and
                                    out_dir/deploy.json (header, sizes, parity)
    load_deployed(path)             safetensors + JSON only (never unpickles) -> nn.Module
    file_sizes / measure_latency    what bench/deploy.py, the CLI's --bench and the app report

Compact file layout (safetensors; the JSON header sits in its metadata under "lottery"):
    dense/<state key>               biases, BatchNorm weights and buffers, as trained (fp32)
    sparse/<layer>/values           the kept weights of a pruned layer, row-major (fp32 or fp16)
    sparse/<layer>/crow, /col       CSR row pointers (int32) and column indices (int16 when they fit)
    sparse/<layer>/bitmask          or: one bit per weight (numpy packbits, little bit order)
    sparse/<layer>/values           alone: a nearly dense layer (above ~97% density), stored whole
Tamper evidence: the header holds a SHA-256 of every tensor's bytes ("sha256"), and the metadata a
SHA-256 of the header itself ("lottery.sha256"); the loader refuses a file whose data or header does
not match them, naming the tensor. (A checksum, not a signature: it catches damage and edits made
without re-signing, not a forger who recomputes the sums.)
Honesty: "failed_checks" lists the run's self-checks that failed (deployed only with --force).
A layer takes whichever costs fewer bytes (CSR below ~6% density, the bitmask above, no index when
the zeros cost less than any index).
Conv weights are stored the same way, flattened to (out, in·kh·kw).

At load, each linear layer times its dense and its CSR product at batch 1 and at batch 128 under
the current thread count, and uses CSR only at the batch sizes where it measured faster: the
density crossover is measured on the machine that runs the model. Convs run dense.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import shutil
import statistics
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FORMAT = "lottery-lab/deploy"
FORMAT_VERSION = 2                       # 2: SHA-256 checksums of every tensor and of the header
META_KEY = "lottery"
HEADER_SHA_KEY = "lottery.sha256"
# Parity: the worst image's max |Δlogit| / max(its largest |logit|, 1), deployed vs masked model.
# fp32 files hold the trained weights exactly, so only summation order differs (measured ≤ 1e-6).
# fp16 rounds each kept weight by up to 2⁻¹¹ ≈ 4.9e-4 of itself; through a whole network this
# measured 3e-4–1.5e-3 (LeNet-300-100, Conv-2, ResNet-20); the stated bound leaves room for depth.
PARITY_RTOL = {"float32": 1e-5, "float16": 1e-2}
COMPACT_NAME, ONNX_NAME, REPORT_NAME = "model.safetensors", "model.onnx", "deploy.json"
LATENCY_NAME = "latency.json"            # written by measure_folder (`engine deploy --latency-only`)
DEFAULT_CALLS = {1: 200, 128: 50}        # timed calls per batch size (`deploy --bench`, bench/deploy.py)
QUICK_CALLS = {1: 100, 128: 20}          # the app's latency bars: seconds, not bench/deploy.py's statistics
MAX_INPUT_NUMEL = 1 << 22       # a header asking for a larger input is refused before anything is built
MAX_PARAMS = 1 << 31
SMALL_BATCH, LARGE_BATCH = 1, 128
BATCH_SPLIT = 16                # batches below it use the choice measured at batch 1, others the one at 128
SPARSE_MARGIN = 0.9             # CSR must measure at least 10% faster to be used (timing noise)
BLOCK = 5                       # latency: calls in a row per implementation before the next takes its turn


PRUNED_METHODS = ("concave", "imp", "random", "cs", "pai", "reinit")      # the methods that save a ticket


class DeployError(ValueError):
    """A run that cannot be deployed, or an output folder that cannot be written."""


class DeployFormatError(DeployError):
    """A compact file that is not one this module wrote (or is damaged)."""


# ---------------------------------------------------------------- the trained, masked model

def check_run(store, run_id: str) -> dict:
    """The run, when it can be deployed: finished, with a ticket and final weights; else DeployError."""
    from .store import UnknownRun
    try:
        run = store.get_run(run_id)
    except UnknownRun as e:
        raise DeployError(str(e).strip("'\"")) from None
    if run["status"] != "done":
        raise DeployError(f"run {run_id} is {run['status']}, not done: only finished runs can be deployed")
    folder = store.run_dir(run_id)
    method = (run["config"] or {}).get("method")
    if run.get("example"):
        raise DeployError(f"run {run_id} is a class-pack example: example runs carry their metrics and masks but "
                          f"no weights, so they cannot be deployed; run its config yourself and deploy that run")
    if method not in PRUNED_METHODS:
        raise DeployError(f"run {run_id} ({method}) has no ticket: only runs that prune "
                          f"({', '.join(PRUNED_METHODS)}) can be deployed")
    if not (folder / "ticket.pt").exists():
        raise DeployError(f"run {run_id} ({method}) has no ticket: ticket.pt is missing from its folder")
    if not (folder / "ckpt.pt").exists():
        raise DeployError(f"run {run_id} has no final weights (ckpt.pt is missing)")
    return run


def trained_model(store, run_id: str, in_shape, num_classes: int):
    """(masked model in eval mode on the CPU, binary masks) of a deployable run. The weights are
    the retrained ones: the run's last checkpoint, written at the end of its last stage."""
    from . import masking
    from .models import build_model
    run = check_run(store, run_id)
    ticket = store.load_array(run_id, "ticket")["mask"]
    ck = store.load_array(run_id, "ckpt")
    model = build_model(run["config"]["model"], in_shape, num_classes)
    model.load_state_dict(ck["model"])
    masking.set_binary(model, ticket)          # zero pruned weights (already zero: check_zeros)
    return model.eval(), ticket


# ---------------------------------------------------------------- encoding

def _pack_layer(w: torch.Tensor, keep: torch.Tensor, fp16: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """Sparse tensors of one pruned weight (kept entries only) and its header entry."""
    rows = w.shape[0]
    mat = (w * keep).reshape(rows, -1)
    k = keep.reshape(rows, -1).bool()
    cols = mat.shape[1]
    values = mat[k].to(torch.float16 if fp16 else torch.float32).contiguous()
    nnz = int(k.sum())
    col_dtype = torch.int16 if cols <= 32767 else torch.int32
    csr_bytes = 4 * (rows + 1) + nnz * (2 if col_dtype is torch.int16 else 4)
    bitmask_bytes = math.ceil(k.numel() / 8)
    entry = {"shape": list(w.shape), "nnz": nnz, "density": nnz / max(1, k.numel())}
    if values.element_size() * (k.numel() - nnz) <= min(csr_bytes, bitmask_bytes):   # nearly dense: no index
        entry["encoding"] = "dense"
        return {"values": mat.flatten().to(values.dtype).contiguous()}, entry
    if csr_bytes <= bitmask_bytes:
        crow = torch.zeros(rows + 1, dtype=torch.int32)
        crow[1:] = torch.cumsum(k.sum(1), 0).to(torch.int32)
        col = k.nonzero()[:, 1].to(col_dtype)
        entry["encoding"] = "csr"
        return {"values": values, "crow": crow, "col": col.contiguous()}, entry
    bits = np.packbits(k.flatten().numpy(), bitorder="little")
    entry["encoding"] = "bitmask"
    return {"values": values, "bitmask": torch.from_numpy(bits)}, entry


def encode(model: nn.Module, masks: dict[str, torch.Tensor], header: dict, fp16: bool = False) -> bytes:
    """The compact file's bytes: pruned weights sparse, everything else dense, header in the metadata."""
    from .masking import prunable_layers
    tensors: dict[str, torch.Tensor] = {}
    layers = {}
    pruned = {f"{n}.weight" for n, _ in prunable_layers(model)}
    for name, layer in prunable_layers(model):
        parts, entry = _pack_layer(layer.weight.detach().cpu(), masks[name].cpu().bool(), fp16)
        layers[name] = entry
        for part, t in parts.items():
            tensors[f"sparse/{name}/{part}"] = t
    for key, t in model.state_dict().items():
        if key.endswith(".mask") or key in pruned:
            continue
        tensors[f"dense/{key}"] = t.detach().cpu().contiguous()
    head = {**header, "format": FORMAT, "version": FORMAT_VERSION, "values_dtype": "float16" if fp16 else "float32",
            "layers": layers}
    return pack(tensors, head)


def tensor_sha256(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes as safetensors stores them (row-major, little-endian)."""
    raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(raw).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pack(tensors: dict[str, torch.Tensor], head: dict) -> bytes:
    """safetensors bytes of `tensors` with `head` as the JSON header, signed: a SHA-256 of every
    tensor in the header, and one of the header in the metadata."""
    from safetensors.torch import save
    head = {**head, "sha256": {k: tensor_sha256(t) for k, t in sorted(tensors.items())}}
    text = json.dumps(head)
    return save(tensors, metadata={META_KEY: text, HEADER_SHA_KEY: sha256_text(text)})


def dense_bytes(model: nn.Module) -> bytes:
    """The dense fp32 safetensors of the same model (masks left out): the size the compact file is compared to."""
    from safetensors.torch import save
    return save({k: v.detach().cpu().float().contiguous() if v.is_floating_point() else v.detach().cpu()
                 for k, v in model.state_dict().items() if not k.endswith(".mask")})


def _zipped_size(data: bytes, name: str) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr(name, data)
    return len(buf.getvalue())


def file_sizes(model: nn.Module, masks: dict[str, torch.Tensor], header: dict) -> dict:
    """Bytes of the dense fp32, sparse fp32 and sparse fp16 files, each also zipped (deflate)."""
    out = {}
    for kind, data in (("dense_fp32", dense_bytes(model)), ("sparse_fp32", encode(model, masks, header)),
                       ("sparse_fp16", encode(model, masks, header, fp16=True))):
        out[kind] = len(data)
        out[kind + "_zip"] = _zipped_size(data, f"{kind}.safetensors")
    return out


# ---------------------------------------------------------------- loading

class DeployedLinear(nn.Module):
    """A pruned linear layer for inference: y = x Wᵀ + b with W in CSR at the batch sizes where
    CSR measured faster than the dense product (`calibrate`), the dense W elsewhere."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = weight                            # dense, zeros in place
        with warnings.catch_warnings():             # "sparse CSR support is in beta": known, and tested here
            warnings.simplefilter("ignore")
            self.csr = weight.to_sparse_csr()
        self.bias = bias
        self.bias_col = (bias if bias is not None else weight.new_zeros(self.out_features)).unsqueeze(1)
        self.density = float((weight != 0).sum()) / max(1, weight.numel())
        self.sparse_small = self.sparse_large = False   # set by calibrate()
        self.timings: dict = {}

    def dense_forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def sparse_forward(self, x):
        # (W xᵀ + b)ᵀ: CSR times a contiguous dense block is the fast CSR kernel on the CPU. The result
        # is returned transposed (no copy), so a following sparse layer gets its xᵀ contiguous for free.
        xt = x.t()
        return torch.addmm(self.bias_col, self.csr, xt if xt.is_contiguous() else xt.contiguous()).t()

    def forward(self, x):
        use = self.sparse_small if x.shape[0] < BATCH_SPLIT else self.sparse_large
        return self.sparse_forward(x) if use else self.dense_forward(x)

    @torch.inference_mode()
    def calibrate(self, reps: int = 25) -> None:
        """Time both products at batch 1 and 128 (interleaved, `reps` calls each) and keep the faster.
        CSR must win on the fastest call (what the kernel costs; a burst of load on a shared machine
        can hit one side's median only) and on the median (a multi-threaded CSR kernel whose threads
        wait for busy cores loses there although its fastest call looks good)."""
        for batch, attr in ((SMALL_BATCH, "sparse_small"), (LARGE_BATCH, "sparse_large")):
            x = torch.randn(batch, self.in_features)
            times: dict[str, list[float]] = {"dense": [], "sparse": []}
            pair = [("dense", self.dense_forward), ("sparse", self.sparse_forward)]
            for i in range(reps + 2):
                for kind, fn in (pair if i % 2 else pair[::-1]):
                    t = time.perf_counter()
                    fn(x)
                    if i >= 2:                          # two warm-up rounds
                        times[kind].append(time.perf_counter() - t)
            d, s = min(times["dense"]), min(times["sparse"])
            dm, sm = statistics.median(times["dense"]), statistics.median(times["sparse"])
            setattr(self, attr, s < SPARSE_MARGIN * d and sm < SPARSE_MARGIN * dm)
            self.timings[batch] = {"dense_us": d * 1e6, "sparse_us": s * 1e6,
                                   "dense_median_us": dm * 1e6, "sparse_median_us": sm * 1e6}

    def extra_repr(self):
        return (f"in={self.in_features}, out={self.out_features}, density={self.density:.4f}, "
                f"csr at batch<{BATCH_SPLIT}: {self.sparse_small}, at batch≥{BATCH_SPLIT}: {self.sparse_large}")


class Deployed(nn.Module):
    """The loaded model. forward takes normalised inputs, as in training; `preprocess` makes them
    from raw images and `classify` returns class names. `meta` is the file's JSON header."""

    def __init__(self, net: nn.Module, meta: dict):
        super().__init__()
        self.net = net
        self.meta = meta

    def forward(self, x):
        return self.net(x)

    def preprocess(self, images) -> torch.Tensor:
        """Raw images (H×W, C×H×W or N×C×H×W; integers as the dataset stores them, e.g. MNIST's
        0..255, or floats already divided by its scale) -> the normalised float batch the network takes."""
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))   # a copy
        scale = self.meta["normalisation"]["scale"]
        x = x.float() / scale if not x.is_floating_point() else x.float()
        shape = tuple(self.meta["input_shape"])
        while x.dim() < 4:
            x = x.unsqueeze(0)
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"images have shape {tuple(x.shape[1:])}; this model takes {shape} (C, H, W)")
        norm = self.meta["normalisation"]
        if norm.get("mean") is not None:
            c = shape[0]
            x = (x - torch.tensor(norm["mean"]).view(1, c, 1, 1)) / torch.tensor(norm["std"]).view(1, c, 1, 1)
        return x.contiguous()

    @torch.inference_mode()
    def classify(self, images) -> list[str]:
        out = self(self.preprocess(images))
        pred = predicted(out, self.meta["binary_logit"])
        return [self.meta["class_names"][int(i)] for i in pred]


def predicted(out: torch.Tensor, binary_logit: bool) -> torch.Tensor:
    return (out.squeeze(1) > 0).long() if binary_logit else out.argmax(1)


def _fail(path, why: str):
    raise DeployFormatError(f"{path}: not a usable deployed model: {why}")


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a compact file (safetensors metadata only; nothing is unpickled)."""
    from safetensors import safe_open
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise DeployFormatError(f"{path}: no such file") from None
    except Exception as e:           # SafetensorError and friends: a pickle, a truncated or damaged file
        _fail(path, f"not a valid safetensors file ({str(e).splitlines()[0][:160]})")
    if META_KEY not in meta:
        _fail(path, f"no '{META_KEY}' header in its metadata (written by something else)")
    try:
        head = json.loads(meta[META_KEY])
    except json.JSONDecodeError as e:
        _fail(path, f"header is not JSON ({e})")
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        _fail(path, f"header format is not {FORMAT!r}")
    if head.get("version") == 1:
        _fail(path, f"format version 1, written before files carried checksums; this loader reads version "
                    f"{FORMAT_VERSION}: deploy the run again")
    if head.get("version") != FORMAT_VERSION:
        _fail(path, f"format version {head.get('version')!r}; this loader reads version {FORMAT_VERSION}")
    if meta.get(HEADER_SHA_KEY) != sha256_text(meta[META_KEY]):
        _fail(path, "its header does not match its SHA-256 (changed or damaged after it was written)")
    if not isinstance(head.get("sha256"), dict):
        _fail(path, "no SHA-256 checksums of its tensors in the header")
    return head


def verify_tensors(path, head: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Every tensor's bytes against the SHA-256 the header holds for it; DeployFormatError naming
    the first tensor that has none or does not match, or a checksum whose tensor is missing."""
    sums = head["sha256"]
    for name in sorted(tensors):
        if name not in sums:
            _fail(path, f"tensor {name} has no SHA-256 in the header")
        if tensor_sha256(tensors[name]) != sums[name]:
            _fail(path, f"tensor {name}: its data does not match its SHA-256 in the header (changed or "
                        f"damaged after it was written)")
    missing = sorted(set(sums) - set(tensors))
    if missing:
        _fail(path, f"missing tensors {missing[:3]}")


def _decode_layer(path, name: str, entry: dict, t: dict[str, torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """The dense weight of one pruned layer, after checking every index against `shape`."""
    if not isinstance(entry, dict) or list(entry.get("shape", [])) != list(shape):
        _fail(path, f"layer {name}: header shape {entry.get('shape') if isinstance(entry, dict) else entry} "
                    f"!= the architecture's {list(shape)}")
    rows = shape[0]
    cols = math.prod(shape[1:])
    values = t.get("values")
    if values is None or values.dim() != 1 or values.dtype not in (torch.float32, torch.float16):
        _fail(path, f"layer {name}: values missing or not a float32/float16 vector")
    nnz = values.numel()
    enc = entry.get("encoding")
    if enc == "csr":
        crow, col = t.get("crow"), t.get("col")
        if crow is None or col is None or crow.dtype != torch.int32 or col.dtype not in (torch.int16, torch.int32):
            _fail(path, f"layer {name}: CSR needs int32 crow and int16/int32 col")
        crow, col = crow.long(), col.long()
        if crow.shape != (rows + 1,) or col.shape != (nnz,):
            _fail(path, f"layer {name}: CSR sizes do not match {rows} rows and {nnz} values")
        if crow[0] != 0 or crow[-1] != nnz or bool((crow.diff() < 0).any()):
            _fail(path, f"layer {name}: CSR row pointers are not a non-decreasing 0..{nnz}")
        if nnz and (int(col.min()) < 0 or int(col.max()) >= cols):
            _fail(path, f"layer {name}: column index out of 0..{cols - 1}")
        row_of = torch.repeat_interleave(torch.arange(rows), crow.diff())
        flat = row_of * cols + col
        if nnz > 1 and bool((flat.diff() <= 0).any()):
            _fail(path, f"layer {name}: column indices not strictly increasing within a row")
    elif enc == "bitmask":
        bits = t.get("bitmask")
        if bits is None or bits.dtype != torch.uint8 or bits.shape != (math.ceil(rows * cols / 8),):
            _fail(path, f"layer {name}: bitmask must be {math.ceil(rows * cols / 8)} uint8 bytes")
        keep = np.unpackbits(bits.numpy(), count=rows * cols, bitorder="little").astype(bool)
        if int(keep.sum()) != nnz:
            _fail(path, f"layer {name}: bitmask has {int(keep.sum())} set bits for {nnz} values")
        flat = torch.from_numpy(np.flatnonzero(keep))
    elif enc == "dense":
        if nnz != rows * cols:
            _fail(path, f"layer {name}: dense encoding needs {rows * cols} values, has {nnz}")
        flat = torch.arange(nnz)
    else:
        _fail(path, f"layer {name}: unknown encoding {enc!r}")
    w = torch.zeros(rows * cols, dtype=torch.float32)
    w[flat] = values.float()
    return w.view(shape)


def load_deployed(path: str | os.PathLike, sparse: str = "auto") -> Deployed:
    """Rebuild a deployed model for CPU inference from the compact file alone.

    sparse="auto" measures, per linear layer, where CSR beats dense (see DeployedLinear.calibrate);
    "never" gives plain nn.Linear layers (the dense model, zeros in place); "always" uses CSR at
    every batch size. Raises DeployFormatError for anything that is not a well-formed file of ours."""
    from safetensors import safe_open

    from .masking import MaskedConv2d, prunable_layers
    from .models import MODELS, build_model, input_error

    if sparse not in ("auto", "never", "always"):
        raise ValueError(f"sparse must be auto, never or always, got {sparse!r}")
    path = Path(path)
    head = read_header(path)
    arch, shape, classes = head.get("architecture"), head.get("input_shape"), head.get("num_classes")
    if arch not in MODELS:
        _fail(path, f"unknown architecture {arch!r}")
    if (not isinstance(shape, list) or len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape)
            or math.prod(shape) > MAX_INPUT_NUMEL):
        _fail(path, f"input_shape {shape!r} is not a (C, H, W) of positive sizes (≤ {MAX_INPUT_NUMEL} values)")
    if not isinstance(classes, int) or not 2 <= classes <= 100_000:
        _fail(path, f"num_classes {classes!r} is not an integer in 2..100000")
    if input_error(arch, shape):
        _fail(path, input_error(arch, shape))
    with torch.device("meta"):                  # shapes only: nothing allocated before the file checks out
        net = build_model(arch, shape, classes)
    expected = {k: v for k, v in net.state_dict().items() if not k.endswith(".mask")}
    if sum(v.numel() for v in expected.values()) > MAX_PARAMS:
        _fail(path, "architecture too large")
    layers = dict(prunable_layers(net))
    if set(head.get("layers") or {}) != set(layers):
        _fail(path, f"pruned layers {sorted(head.get('layers') or {})} != the architecture's {sorted(layers)}")
    want_dense = {f"dense/{k}" for k in expected if not (k.endswith(".weight") and k[: -len(".weight")] in layers)}
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            for k in sorted(keys):          # names first: no data is read for a tensor we would not use
                if k not in head["sha256"]:
                    _fail(path, f"tensor {k} has no SHA-256 in the header")
                kind, _, rest = k.partition("/")
                if k not in want_dense and (kind != "sparse" or rest.rpartition("/")[0] not in layers):
                    _fail(path, f"unexpected tensor {k!r}")
            tensors = {k: f.get_tensor(k) for k in keys}
    except DeployFormatError:
        raise
    except Exception as e:
        _fail(path, f"cannot read its tensors ({str(e).splitlines()[0][:160]})")
    verify_tensors(path, head, tensors)             # before anything is built from the data
    missing = sorted(k for k in want_dense if k not in tensors)
    if missing:
        _fail(path, f"missing tensors {missing[:3]}")
    dense = {k[len("dense/"):]: tensors[k] for k in want_dense}
    parts: dict[str, dict[str, torch.Tensor]] = {n: {} for n in layers}
    for k in set(tensors) - want_dense:
        lname, _, part = k.partition("/")[2].rpartition("/")
        parts[lname][part] = tensors[k]
    for k, t in dense.items():
        if tuple(t.shape) != tuple(expected[k].shape) or t.dtype != expected[k].dtype:
            _fail(path, f"tensor {k}: {t.dtype} {tuple(t.shape)} != expected {expected[k].dtype} "
                        f"{tuple(expected[k].shape)}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            _fail(path, f"tensor {k} holds non-finite values")
    weights = {n: _decode_layer(path, n, head["layers"][n], parts[n], tuple(layer.weight.shape))
               for n, layer in layers.items()}
    if not all(bool(torch.isfinite(w).all()) for w in weights.values()):
        _fail(path, "a pruned layer holds non-finite values")

    for name, layer in layers.items():
        bias = dense.pop(f"{name}.bias", None)
        w = weights[name]
        if isinstance(layer, MaskedConv2d):
            new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                            layer.padding, layer.dilation, layer.groups, bias is not None, layer.padding_mode,
                            device="meta")
            new.weight = nn.Parameter(w, requires_grad=False)
            if bias is not None:
                new.bias = nn.Parameter(bias, requires_grad=False)
        elif sparse == "never":
            new = nn.Linear(w.shape[1], w.shape[0], bias is not None, device="meta")
            new.weight = nn.Parameter(w, requires_grad=False)
            if bias is not None:
                new.bias = nn.Parameter(bias, requires_grad=False)
        else:
            new = DeployedLinear(w, bias)
            if sparse == "always":
                new.sparse_small = new.sparse_large = True
            else:
                new.calibrate()
        parent, _, attr = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, attr, new)
    net.load_state_dict(dense, strict=False, assign=True)
    left = [n for n, t in list(net.named_parameters()) + list(net.named_buffers()) if t.is_meta]
    if left:
        _fail(path, f"tensors never filled: {left[:3]}")
    for p in net.parameters():
        p.requires_grad_(False)
    return Deployed(net.eval(), head).eval()


# ---------------------------------------------------------------- ONNX

def export_onnx(net: nn.Module, input_shape, path: Path) -> None:
    """Dense ONNX (zeros in place) with a dynamic batch axis, validated by onnx.checker."""
    import contextlib

    import onnx
    net = net.eval()
    x = torch.zeros(2, *input_shape)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},),
                          external_data=False, verbose=False)
    onnx.checker.check_model(str(path), full_check=True)


def onnx_session(path, threads: int | None = None):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- parity

@torch.inference_mode()
def _logits(fn, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    out = [torch.as_tensor(fn(x[i:i + batch])).float() for i in range(0, len(x), batch)]
    return torch.cat(out).reshape(len(x), -1) if out else torch.zeros(0, 1)


def logit_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """The worst image's max |Δlogit| relative to its largest |logit| (absolute below 1); NaN
    when either side is not finite (which then fails every tolerance)."""
    if not len(ref):
        return 0.0
    if not (bool(torch.isfinite(out).all()) and bool(torch.isfinite(ref).all())):
        return math.nan
    return float(((out - ref).abs().amax(1) / ref.abs().amax(1).clamp_min(1.0)).max())


def parity(reference: nn.Module, deployed: nn.Module, session, x: torch.Tensor, y: torch.Tensor,
           binary: bool, rtol: float = PARITY_RTOL["float32"]) -> dict:
    """Logits of the deployed model and of onnxruntime against the masked model's on (x, y): it
    passes when both stay within `rtol` (see logit_error). Predictions and accuracies are reported;
    a prediction can change only where the masked model's top two logits lie within 2·rtol."""
    ref = _logits(reference, x)
    dep = _logits(deployed, x)
    onx = _logits(lambda b: session.run(None, {"input": b.numpy()})[0], x)
    pred = {k: predicted(v, binary) for k, v in (("masked", ref), ("deployed", dep), ("onnx", onx))}
    n = len(y)
    acc = {k: float((p == y).float().mean()) if n else math.nan for k, p in pred.items()}
    err = {"deployed": logit_error(dep, ref), "onnx": logit_error(onx, ref)}
    return {"n": n, "accuracy": acc,
            "differ_deployed": int((pred["deployed"] != pred["masked"]).sum()),
            "differ_onnx": int((pred["onnx"] != pred["masked"]).sum()),
            "logits": {"tolerance": rtol, **err,
                       "measure": "worst image's max |Δlogit| / max(its largest |logit|, 1)"},
            "passed": all(e <= rtol for e in err.values())}         # NaN fails


# ---------------------------------------------------------------- latency

def measure_latency(models: dict, onnx_path, input_shape, threads=(1, None),
                    reps: dict | None = None, loader=None) -> list[dict]:
    """Median latency per call of each implementation, batch 1 and 128, at each thread count
    (None = all cores). Implementations take turns in short blocks of calls, so load drift hits
    all alike and their ratios are measured side by side. `models` maps a name to a callable
    taking a batch; `loader(threads)` may rebuild them after the thread count changes (the
    sparse loader calibrates under the current count)."""
    reps = reps or DEFAULT_CALLS
    before = torch.get_num_threads()
    rows = []
    try:
        for t in threads:
            n = t or os.cpu_count() or 1
            torch.set_num_threads(n)
            impls = dict(loader(n) if loader else models)
            if onnx_path is not None:
                sess = onnx_session(onnx_path, n)
                impls["onnxruntime"] = lambda b, s=sess: s.run(None, {"input": b.numpy()})[0]
            for batch, count in reps.items():
                x = torch.randn(batch, *input_shape)
                times: dict[str, list[float]] = {k: [] for k in impls}
                order = list(impls.items())
                with torch.inference_mode():
                    # Blocks of BLOCK back-to-back calls per implementation (the first of each block
                    # is a warm-up: a served model runs with its weights in cache), implementations
                    # taking turns block by block in rotating order, so load drift hits all alike.
                    i = 0
                    while min(len(v) for v in times.values()) < count:
                        for name, fn in order[i % len(order):] + order[:i % len(order)]:
                            for j in range(BLOCK + 1):
                                s = time.perf_counter()
                                fn(x)
                                if j:
                                    times[name].append(time.perf_counter() - s)
                        i += 1
                for name, ts in times.items():
                    rows.append({"impl": name, "batch": batch, "threads": torch.get_num_threads(),
                                 "threads_asked": "all" if t is None else t, "calls": len(ts),
                                 "median_ms": statistics.median(ts) * 1e3, "min_ms": min(ts) * 1e3,
                                 "csr_layers": _csr_layers(impls[name], batch)})
    finally:
        torch.set_num_threads(before)
    return rows


def _csr_layers(fn, batch: int) -> list[str] | None:
    """The linear layers a loaded model runs in CSR at this batch size (None: not a torch model)."""
    if not isinstance(fn, nn.Module):
        return None
    return [n for n, m in fn.named_modules() if isinstance(m, DeployedLinear)
            and (m.sparse_small if batch < BATCH_SPLIT else m.sparse_large)]


def bench_deployed(out_dir, threads=(1, None), reps=None) -> list[dict]:
    """Latency rows for a deployed folder: dense PyTorch, the sparse loader, onnxruntime."""
    out_dir = Path(out_dir)
    path = out_dir / COMPACT_NAME
    shape = read_header(path)["input_shape"]

    def build(n):
        return {"dense": load_deployed(path, sparse="never"), "sparse": load_deployed(path, sparse="auto")}
    return measure_latency({}, out_dir / ONNX_NAME, shape, threads=threads, reps=reps, loader=build)


def measure_folder(out_dir, reps: dict | None = None) -> dict:
    """Time the files already deployed in `out_dir` (bench_deployed) and write LATENCY_NAME there
    (atomically): rows, load average, seconds taken and the calls asked."""
    from .store import atomic_write_json
    out = Path(out_dir)
    if not (out / COMPACT_NAME).is_file() or not (out / ONNX_NAME).is_file():
        raise DeployError(f"{out} holds no deployed files ({COMPACT_NAME}, {ONNX_NAME}): build them first "
                          f"(engine deploy RUN_ID --out {out})")
    t = time.time()
    rows = bench_deployed(out, reps=reps)
    lat = {"rows": rows, "load_average": load_average(), "seconds": round(time.time() - t, 1),
           "calls": {str(b): n for b, n in (reps or DEFAULT_CALLS).items()}}
    atomic_write_json(out / LATENCY_NAME, lat)
    return lat


def parse_calls(text: str) -> dict[int, int]:
    """`--calls 100,20` → {1: 100, 128: 20}: timed calls at batch 1 and at batch 128."""
    parts = (text or "").split(",")
    try:
        n1, n128 = (int(p) for p in parts)
    except ValueError:
        raise DeployError(f"--calls must be two whole numbers, calls at batch 1 and at batch 128, e.g. 100,20; "
                          f"got {text!r}") from None
    if not (1 <= n1 <= 100_000 and 1 <= n128 <= 100_000):
        raise DeployError(f"--calls: each count must be in [1, 100000], got {text!r}")
    return {SMALL_BATCH: n1, LARGE_BATCH: n128}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------- deploy

def _check_out_dir(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DeployError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DeployError(f"--out {out} exists and is not empty (give --force to replace it)")


def deploy(store, run_id: str, out_dir, fp16: bool = False, force: bool = False, data_dir=None,
           bench: bool = False, bench_reps: dict | None = None) -> dict:
    """Write the compact file, the ONNX file and deploy.json for finished run `run_id` into
    `out_dir`, check parity on the whole test set, and return the report (deploy.json's content).
    A run whose self-checks failed is refused unless `force` (which also replaces a non-empty
    `out_dir`); its header then lists them. When parity fails, `out_dir` receives deploy.json
    alone (`deployed: false`): the model files are removed, not left looking valid.

    Everything is written into a temporary folder next to `out_dir` and renamed into place at the
    end, so a failure (a full disk included) leaves no partial files behind."""
    from .config import RunConfig
    from .data import DatasetUnavailable, default_data_dir, load_dataset, normalisation
    from .models import num_outputs

    out = Path(out_dir)
    _check_out_dir(out, force)                       # before any work
    run = check_run(store, run_id)
    failed_checks = [{k: c.get(k) for k in ("name", "value", "target", "detail")}
                     for c in store.checks(run_id) if not c["passed"]]
    if failed_checks and not force:
        names = ", ".join(f"{c['name']} ({c['detail'] or 'failed'})" for c in failed_checks)
        raise DeployError(f"run {run_id} failed its self-checks: {names}; not deployed. Give --force to deploy "
                          f"it anyway (the file's header then records the failed checks)")
    cfg = RunConfig.from_dict(run["config"], unused="keep")   # a stored config, as the engine wrote it
    data_dir = data_dir or default_data_dir()
    try:
        splits = load_dataset(cfg.dataset, data_dir, classes=cfg.classes, val_fraction=cfg.val_fraction,
                              split_seed=0, params=cfg.data_params)
        norm = normalisation(cfg.dataset, data_dir, cfg.data_params)
    except DatasetUnavailable as e:
        raise DeployError(f"the parity check needs run {run_id}'s test set: {e}".splitlines()[0]) from None
    model, masks = trained_model(store, run_id, splits.in_shape, splits.num_classes)
    binary = num_outputs(cfg.model, splits.num_classes) == 1
    summary = run["summary"] or {}
    header = {
        "architecture": cfg.model, "config": run["config"], "run_id": run_id,
        "input_shape": list(splits.in_shape), "num_classes": splits.num_classes,
        "class_names": list(splits.class_names), "binary_logit": bool(binary), "normalisation": norm,
        "accuracy": {"test_accuracy": summary.get("test_accuracy"), "dataset": cfg.dataset,
                     "remaining": summary.get("remaining")},
        "failed_checks": failed_checks,
    }
    sizes = file_sizes(model, masks, header)
    compact = encode(model, masks, header, fp16=fp16)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        (tmp / COMPACT_NAME).write_bytes(compact)
        deployed = load_deployed(tmp / COMPACT_NAME)
        plain = load_deployed(tmp / COMPACT_NAME, sparse="never")
        export_onnx(plain.net, splits.in_shape, tmp / ONNX_NAME)
        sess = onnx_session(tmp / ONNX_NAME)
        report = {
            "run_id": run_id, "header": read_header(tmp / COMPACT_NAME),
            "files": {"compact": COMPACT_NAME, "onnx": ONNX_NAME,
                      "compact_bytes": (tmp / COMPACT_NAME).stat().st_size,
                      "onnx_bytes": (tmp / ONNX_NAME).stat().st_size},
            "sizes": sizes,
            "parity": parity(model, deployed, sess, splits.test_x, splits.test_y, binary,
                             rtol=PARITY_RTOL["float16" if fp16 else "float32"]),
            "linear_paths": {n: {"density": m.density, "csr_batch_1": m.sparse_small,
                                 "csr_batch_128": m.sparse_large, "timings_us": m.timings}
                             for n, m in deployed.net.named_modules() if isinstance(m, DeployedLinear)},
        }
        report["deployed"] = report["parity"]["passed"]
        if not report["deployed"]:        # files that failed parity must not sit there looking valid
            (tmp / COMPACT_NAME).unlink()
            (tmp / ONNX_NAME).unlink()
            report["removed"] = [COMPACT_NAME, ONNX_NAME]
        elif bench:
            report["latency"] = bench_deployed(tmp, reps=bench_reps)
            report["load_average"] = load_average()
            report["cpu_count"] = os.cpu_count()
        data = json.dumps(report, indent=2, default=str)
        with open(tmp / REPORT_NAME, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        old = None
        if out.exists():                             # --force (or empty): swap the new folder in
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return report
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DeployError(f"disk full while writing to {out.parent}: nothing was written "
                              f"({os.strerror(e.errno)})") from None
        raise
