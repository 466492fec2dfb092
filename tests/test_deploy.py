"""Deploying a ticket (engine/deploy.py): the compact file round-trips, ONNX agrees, the file is
small, damaged or foreign files are refused without executing anything, and the CLI's bad input."""

import errno
import json
import pickle

import pytest
import torch

from engine import deploy as dp
from engine import masking
from engine.models import build_model

HEADER = {"architecture": None, "input_shape": None, "num_classes": 10, "class_names": [str(i) for i in range(10)],
          "binary_logit": False, "normalisation": {"scale": 255.0, "mean": [0.5], "std": [0.25]}, "accuracy": {}}


def pruned(arch, shape, density, seed=0):
    """A model of `arch` with random weights, random BN statistics and a random mask at `density`."""
    torch.manual_seed(seed)
    model = build_model(arch, shape, 10)
    masks = {n: torch.rand(layer.weight.shape) < density for n, layer in masking.prunable_layers(model)}
    masks = {n: m if m.any() else torch.ones_like(m) for n, m in masks.items()}
    masking.set_binary(model, masks)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    header = {**HEADER, "architecture": arch, "input_shape": list(shape)}
    return model.eval(), masks, header


def write(tmp_path, model, masks, header, fp16=False, name="m.safetensors"):
    path = tmp_path / name
    path.write_bytes(dp.encode(model, masks, header, fp16=fp16))
    return path


@pytest.mark.parametrize("arch, shape, density, onnx", [("lenet300", (1, 28, 28), 0.02, True),
                                                        ("conv2", (3, 8, 8), 0.05, True),
                                                        ("resnet20", (3, 32, 32), 0.05, False),
                                                        ("lenet300", (1, 28, 28), 0.99, False)])
def test_round_trip_identical_predictions_and_onnx(tmp_path, arch, shape, density, onnx):
    model, masks, header = pruned(arch, shape, density)
    path = write(tmp_path, model, masks, header)
    x = torch.randn(64 if arch == "lenet300" else 16, *shape)
    with torch.no_grad():
        ref = model(x)
    for how in ("never", "always", "auto"):
        got = dp.load_deployed(path, sparse=how)
        with torch.no_grad():
            out = got(x)
        assert torch.equal(out.argmax(1), ref.argmax(1)), how
        assert torch.allclose(out, ref, atol=1e-4, rtol=1e-4), how
    # the sparse path really is CSR where asked, and the dense model is plain torch
    always = dp.load_deployed(path, sparse="always")
    lin = [m for m in always.modules() if isinstance(m, dp.DeployedLinear)]
    assert lin and all(m.csr.layout == torch.sparse_csr for m in lin)
    assert not any(isinstance(m, dp.DeployedLinear) for m in dp.load_deployed(path, sparse="never").modules())
    assert always.meta["architecture"] == arch and always.meta["layers"]
    encodings = {e["encoding"] for e in always.meta["layers"].values()}
    assert encodings == ({"dense"} if density > 0.97 else {"csr"} if density < 0.03 else encodings - {"dense"})
    assert path.stat().st_size < len(dp.dense_bytes(model)) + 4096     # never much above the dense file

    if not onnx:     # ResNet-20's ONNX export takes ~25 s here; Conv-2 covers convs in ONNX
        return
    onnx_path = tmp_path / "m.onnx"
    dp.export_onnx(dp.load_deployed(path, sparse="never").net, shape, onnx_path)
    out = dp.onnx_session(onnx_path).run(None, {"input": x.numpy()})[0]
    assert torch.equal(torch.from_numpy(out).argmax(1), ref.argmax(1))
    assert torch.allclose(torch.from_numpy(out), ref, atol=1e-4, rtol=1e-4)


def test_fp16_values_and_classify(tmp_path):
    model, masks, header = pruned("lenet300", (1, 28, 28), 0.05)
    p32, p16 = write(tmp_path, model, masks, header), write(tmp_path, model, masks, header, fp16=True, name="h")
    assert p16.stat().st_size < p32.stat().st_size
    m16 = dp.load_deployed(p16)
    for name, layer in masking.prunable_layers(model):
        w = m16.net.get_submodule(name).weight
        assert torch.equal(w, layer.weight.detach().half().float())       # values rounded to fp16, zeros kept
    img = (torch.rand(28, 28) * 255).to(torch.uint8)
    x = (img.float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        want = str(int(model(x.view(1, 1, 28, 28)).argmax()))
    assert dp.load_deployed(p32).classify(img.numpy()) == [want]


@pytest.mark.parametrize("arch, shape", [("lenet300", (1, 28, 28)), ("resnet20", (3, 32, 32))])
def test_compact_smaller_than_dense_below_half(arch, shape):
    model, masks, header = pruned(arch, shape, 0.5)
    dense = len(dp.dense_bytes(model))
    for density in (0.01, 0.05, 0.2, 0.49):
        keep = {n: torch.rand(m.shape) < density for n, m in masks.items()}   # weights stay; the mask changes
        fp32, fp16 = len(dp.encode(model, keep, header)), len(dp.encode(model, keep, header, fp16=True))
        assert fp16 < fp32 < dense, density
        if density <= 0.05 and arch == "lenet300":   # the target: fp16 ≤ 1/15 of dense fp32 at ≤ 5%
            assert fp16 * 15 <= dense


class _Boom:
    """Unpickling this would create a marker file: a crafted 'model' must never get that far."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_files_are_refused_and_execute_nothing(tmp_path):
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"w": _Boom(marker)}))
    with pytest.raises(dp.DeployFormatError, match="not a valid safetensors file"):
        dp.load_deployed(evil)
    torch.save({"w": _Boom(marker)}, tmp_path / "evil2.safetensors")     # a torch .pt renamed
    with pytest.raises(dp.DeployFormatError, match="not a valid safetensors file"):
        dp.load_deployed(tmp_path / "evil2.safetensors")
    assert not marker.exists()

    model, masks, header = pruned("lenet300", (1, 28, 28), 0.05)
    good = write(tmp_path, model, masks, header).read_bytes()
    for cut in (7, len(good) // 2, len(good) - 1):
        (tmp_path / "t.safetensors").write_bytes(good[:cut])
        with pytest.raises(dp.DeployFormatError):
            dp.load_deployed(tmp_path / "t.safetensors")

    from safetensors.torch import load
    tensors = load(good)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        meta = f.metadata()

    def crafted(change, match):
        """A file changed by `change` and then signed again (checksums recomputed): the
        structural checks behind the checksums must still refuse it."""
        t = dict(tensors)
        m = json.loads(meta[dp.META_KEY])
        change(t, m)
        p = tmp_path / "c.safetensors"
        p.write_bytes(dp.pack(t, {k: v for k, v in m.items() if k != "sha256"}))
        with pytest.raises(dp.DeployFormatError, match=match):
            dp.load_deployed(p)

    crafted(lambda t, m: t.update({"dense/classifier.0.bias": torch.zeros(299)}), "classifier.0.bias")
    crafted(lambda t, m: m["layers"]["classifier.0"].update(shape=[300, 785]), "header shape")
    crafted(lambda t, m: m.update(input_shape=[1, 28, 29]), "header shape")
    crafted(lambda t, m: m.update(input_shape=[1, 100000, 100000]), "input_shape")
    crafted(lambda t, m: m.update(architecture="os.system"), "unknown architecture")
    crafted(lambda t, m: m.update(version=99), "version")
    crafted(lambda t, m: t.pop("dense/classifier.2.bias"), "missing tensors")
    crafted(lambda t, m: t.update({"sparse/classifier.0/values": t["sparse/classifier.0/values"][:-1]}),
            "CSR sizes|set bits")
    col = tensors["sparse/classifier.0/col"].clone()
    col[0] = 784
    crafted(lambda t, m: t.update({"sparse/classifier.0/col": col}), "column index")
    crafted(lambda t, m: t.update({"extra/x": torch.zeros(1)}), "unexpected tensor")
    assert not marker.exists()


# ---------------------------------------------------------------- deploy() and the CLI, on a trained run

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short concave LeNet-300-100 run on digits at 90% sparsity, in its own store."""
    from engine import runner
    from engine.config import RunConfig
    from engine.store import Store
    home = tmp_path_factory.mktemp("deployhome")
    store = Store(home)
    cfg = RunConfig.from_dict({"model": "lenet300", "dataset": "digits", "method": "concave", "lam": 1.0,
                               "target_sparsity": 0.9, "threshold_mode": "topk", "epochs": 1,
                               "retrain_epochs": 1, "batch_size": 128})
    run_id = runner.create(store, cfg, status="running")
    runner.execute(store, run_id)
    return store, run_id


def test_deploy_writes_checked_files_with_parity(trained, tmp_path):
    store, run_id = trained
    out = tmp_path / "out"
    rep = dp.deploy(store, run_id, out)
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json", "model.onnx", "model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]    # no temp folder left
    par = rep["parity"]
    assert par["n"] == 360 and par["differ_deployed"] == 0 and par["differ_onnx"] == 0 and par["passed"]
    summary = store.get_run(run_id)["summary"]
    assert par["accuracy"]["masked"] == pytest.approx(summary["test_accuracy"], abs=1e-6)  # the retrained weights
    assert rep["sizes"]["sparse_fp32"] == (out / "model.safetensors").stat().st_size < rep["sizes"]["dense_fp32"]
    head = dp.read_header(out / "model.safetensors")
    assert head["class_names"] == [str(i) for i in range(10)] and head["input_shape"] == [1, 8, 8]
    kept = sum(layer["nnz"] for layer in head["layers"].values())
    assert kept == summary["kept"]
    assert json.loads((out / "deploy.json").read_text())["parity"] == par


def test_cli_bad_input(trained, tmp_path, capsys, monkeypatch):
    from engine.__main__ import main
    store, run_id = trained
    home = str(store.home)
    queued = store.create_run({"model": "lenet300"}, "h1", status="queued")
    dense = store.create_run({"model": "lenet300", "method": "dense"}, "h2", status="done")

    def fails(*args, match):
        assert main(["deploy", *args, "--home", home]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err, err

    fails(queued, "--out", str(tmp_path / "a"), match="is queued, not done")
    fails(dense, "--out", str(tmp_path / "a"), match="has no ticket")
    fails("nope", "--out", str(tmp_path / "a"), match="nope")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    fails(run_id, "--out", str(busy), match="not empty (give --force")
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert not (tmp_path / "a").exists()

    # a full disk: one clear line, and nothing left behind (not even the temp folder)
    real = dp.export_onnx

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(dp, "export_onnx", full)
    fails(run_id, "--out", str(tmp_path / "full"), match="disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]
    monkeypatch.setattr(dp, "export_onnx", real)

    assert main(["deploy", run_id, "--out", str(busy), "--force", "--fp16", "--home", home]) == 0
    assert sorted(p.name for p in busy.iterdir()) == ["deploy.json", "model.onnx", "model.safetensors"]
    assert dp.read_header(busy / "model.safetensors")["values_dtype"] == "float16"

    # --latency-only times what is there (the app's Deploy tab runs this in its own process)
    capsys.readouterr()
    for bad in ("10", "10,x", "0,3", "10,3,1"):
        fails(run_id, "--out", str(busy), "--latency-only", "--calls", bad, match="--calls")
    fails(run_id, "--out", str(tmp_path / "empty"), "--latency-only", match="build them first")
    assert not (tmp_path / "empty").exists()
    built = sorted(p.name for p in busy.iterdir())
    assert main(["deploy", run_id, "--out", str(busy), "--latency-only", "--calls", "5,2", "--home", home]) == 0
    assert sorted(p.name for p in busy.iterdir()) == sorted([*built, "latency.json"])    # nothing rebuilt
    lat = json.loads((busy / "latency.json").read_text())
    assert lat["calls"] == {"1": 5, "128": 2}
    assert {(r["impl"], r["batch"]) for r in lat["rows"]} == {(i, b) for i in ("dense", "sparse", "onnxruntime")
                                                               for b in (1, 128)}
    assert all(r["calls"] >= (5 if r["batch"] == 1 else 2) and r["median_ms"] > 0 for r in lat["rows"])


def test_deploy_figures_from_frames():
    """The Deploy tab's figure builders: DataFrame in, Figure out; empty frames give a note."""
    import plotly.graph_objects as go

    from ui import deploy_panel, figures
    report = {"sizes": {"dense_fp32": 1000, "dense_fp32_zip": 300, "sparse_fp32": 200, "sparse_fp32_zip": 150,
                        "sparse_fp16": 100, "sparse_fp16_zip": 80}}
    sizes = deploy_panel.sizes_frame(report)
    assert len(sizes) == 6
    fig = figures.deploy_size_figure(sizes)
    assert [t.name for t in fig.data] == ["as written", "zipped"] and "1/10.0" in fig.data[0].text[2]
    rows = [{"impl": i, "batch": b, "threads": t, "median_ms": 1.0 + k, "calls": 5}
            for k, (i, b, t) in enumerate((i, b, t) for i in ("dense", "sparse", "onnxruntime")
                                          for b in (1, 128) for t in (1, 2))]
    fig = figures.deploy_latency_figure(deploy_panel.latency_frame({"rows": rows}))
    assert len(fig.data) == 6 and {t.name for t in fig.data} == {"dense", "sparse", "onnxruntime"}
    for empty in (figures.deploy_size_figure(deploy_panel.sizes_frame({})),
                  figures.deploy_latency_figure(deploy_panel.latency_frame(None))):
        assert isinstance(empty, go.Figure) and empty.layout.annotations


@pytest.mark.parametrize("n, shown", [(0, "0 B"), (900, "900 B"), (20_651, "20.2 KB"), (202_944, "198 KB"),
                                      (1_066_904, "1.02 MB"), (47_000_000, "44.8 MB"), (3 << 30, "3.00 GB")])
def test_deploy_sizes_fit_a_quarter_column_at_1024_px(n, shown):
    """The Deploy tab's four size metrics share a row: at 1024×768 a LeNet-300-100 on MNIST read
    "1,041.9 KB" and ran into its neighbour (157 px of text in a 129 px column). Three significant
    digits and a unit: never more than 7 characters."""
    from ui import deploy_panel
    assert deploy_panel.size_text(n) == shown and len(shown) <= 7


# ---------------------------------------------------------------- tamper-evident files (issue 19.5)

def _data_offsets(path):
    """{tensor name: (start, end)} byte ranges of each tensor's data in a safetensors file."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    head = json.loads(raw[8:8 + n])
    return {k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
            for k, v in head.items() if k != "__metadata__"}


def test_one_flipped_bit_in_a_deployed_file_is_refused_naming_the_tensor(trained, tmp_path):
    """Issue 19.5: one flipped bit in the compact file's values loaded silently and changed outputs."""
    store, run_id = trained
    out = tmp_path / "out"
    dp.deploy(store, run_id, out)
    path = out / "model.safetensors"
    head = dp.read_header(path)
    offsets = _data_offsets(path)
    assert set(head["sha256"]) == set(offsets) and all(len(h) == 64 for h in head["sha256"].values())
    good = path.read_bytes()
    index = next(k for k in sorted(offsets) if k.startswith("sparse/") and not k.endswith("/values"))
    for name in ("sparse/classifier.0/values", index, "dense/classifier.2.bias"):
        start, end = offsets[name]
        raw = bytearray(good)
        raw[(start + end) // 2] ^= 0x10                                     # one bit
        path.write_bytes(bytes(raw))
        with pytest.raises(dp.DeployFormatError, match=f"tensor {name}: its data does not match its SHA-256"):
            dp.load_deployed(path)
    path.write_bytes(good)
    assert dp.load_deployed(path).meta["run_id"] == run_id                 # the untouched file loads


def test_checksums_cover_every_tensor_and_the_header(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load, save
    model, masks, header = pruned("lenet300", (1, 28, 28), 0.05)
    path = write(tmp_path, model, masks, header)
    tensors = load(path.read_bytes())
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    head = json.loads(meta[dp.META_KEY])
    assert set(head["sha256"]) == set(tensors)
    assert head["sha256"]["dense/classifier.0.bias"] == dp.tensor_sha256(tensors["dense/classifier.0.bias"])

    def refused(tensors, metadata, match):
        p = tmp_path / "x.safetensors"
        p.write_bytes(save(tensors, metadata=metadata))
        with pytest.raises(dp.DeployFormatError, match=match):
            dp.load_deployed(p)
    # a value changed with the checksums left as they were
    t = dict(tensors)
    t["dense/classifier.0.bias"] = t["dense/classifier.0.bias"] + 1e-3
    refused(t, meta, "tensor dense/classifier.0.bias: its data does not match its SHA-256")
    # a tensor added without a checksum; the checksums taken out of the header
    refused({**tensors, "extra/x": torch.zeros(1)}, meta, "tensor extra/x has no SHA-256")
    bare = {k: v for k, v in head.items() if k != "sha256"}
    refused(tensors, {dp.META_KEY: json.dumps(bare),
                      dp.HEADER_SHA_KEY: dp.sha256_text(json.dumps(bare))}, "no SHA-256 checksums")
    # the header changed (a class renamed) without its own checksum
    renamed = {**head, "class_names": ["seven", *head["class_names"][1:]]}
    refused(tensors, {**meta, dp.META_KEY: json.dumps(renamed)}, "header does not match its SHA-256")
    # a version-1 file (written before checksums) is refused with what to do
    refused(tensors, {dp.META_KEY: json.dumps({**bare, "version": 1})}, "deploy the run again")


def test_parity_compares_logits_with_a_stated_tolerance(trained, tmp_path, monkeypatch):
    """Predictions alone hide a deployed model whose logits drift: scale them by 1 + 1e-4 (no
    prediction changes) and parity must fail in fp32, whose bound is 1e-5 relative."""
    store, run_id = trained
    rep = dp.deploy(store, run_id, tmp_path / "ok32")
    lg = rep["parity"]["logits"]
    assert lg["tolerance"] == 1e-5 and lg["deployed"] <= 1e-5 and lg["onnx"] <= 1e-5 and rep["parity"]["passed"]
    rep = dp.deploy(store, run_id, tmp_path / "ok16", fp16=True)
    lg = rep["parity"]["logits"]
    assert lg["tolerance"] == dp.PARITY_RTOL["float16"] == 1e-2
    assert 1e-5 < lg["deployed"] <= 1e-2 and 1e-5 < lg["onnx"] <= 1e-2 and rep["parity"]["passed"]

    real = dp.load_deployed

    def drifting(path, sparse="auto"):
        m = real(path, sparse)
        if sparse == "auto":                 # the loader under test; ONNX is exported from sparse="never"
            inner = m.net
            m.net = torch.nn.Sequential(inner, _Scale(1 + 1e-4))
        return m
    monkeypatch.setattr(dp, "load_deployed", drifting)
    rep = json.loads((tmp_path / "ok32" / "deploy.json").read_text())
    assert rep["parity"]["passed"]
    from engine.__main__ import main
    assert main(["deploy", run_id, "--out", str(tmp_path / "drift"), "--home", str(store.home)]) == 1
    rep = json.loads((tmp_path / "drift" / "deploy.json").read_text())
    par = rep["parity"]
    assert par["differ_deployed"] == 0 and not par["passed"]
    assert par["logits"]["deployed"] == pytest.approx(1e-4, rel=0.05)


class _Scale(torch.nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x * self.k


def test_failed_parity_keeps_no_model_files_and_says_so(trained, tmp_path, monkeypatch, capsys):
    """Issue 20: `deploy --fp16` that failed its parity check exited 1 but left files that looked valid."""
    from engine.__main__ import main
    store, run_id = trained
    out = tmp_path / "out"
    assert main(["deploy", run_id, "--out", str(out), "--home", str(store.home)]) == 0
    monkeypatch.setitem(dp.PARITY_RTOL, "float16", 1e-9)        # an fp16 rounding the bound does not allow
    capsys.readouterr()
    assert main(["deploy", run_id, "--out", str(out), "--fp16", "--force", "--home", str(store.home)]) == 1
    err = capsys.readouterr().err
    assert "FAIL" in err and "model files were removed" in err and "deploy.json" in err
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json"]      # the earlier good files are gone too
    rep = json.loads((out / "deploy.json").read_text())
    assert rep["deployed"] is False and rep["parity"]["passed"] is False
    assert rep["parity"]["logits"]["tolerance"] == 1e-9


def test_a_run_whose_checks_failed_is_deployed_only_with_force(trained, tmp_path, capsys):
    from engine.__main__ import main
    store, run_id = trained
    home = str(store.home)
    bad = store.create_run(store.get_run(run_id)["config"], "h-bad", status="running")
    for name in ("ticket.pt", "ckpt.pt"):
        (store.run_dir(bad) / name).write_bytes((store.run_dir(run_id) / name).read_bytes())
    store.set_check(bad, "sparsity_vs_target", 0.61, 0.9, False, "measured sparsity vs target; MISSED by -0.29")
    store.set_check(bad, "zeros_stay_zero", 0.0, 0.0, True, "")
    store.update_run(bad, status="done", summary=store.get_run(run_id)["summary"])
    capsys.readouterr()
    assert main(["deploy", bad, "--out", str(tmp_path / "a"), "--home", home]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "failed its self-checks" in err and "sparsity_vs_target" in err
    assert "--force" in err and not (tmp_path / "a").exists()
    assert main(["deploy", bad, "--out", str(tmp_path / "a"), "--force", "--home", home]) == 0
    head = dp.read_header(tmp_path / "a" / "model.safetensors")
    assert [c["name"] for c in head["failed_checks"]] == ["sparsity_vs_target"]
    assert head["failed_checks"][0]["detail"].endswith("MISSED by -0.29")
    assert dp.load_deployed(tmp_path / "a" / "model.safetensors").meta["failed_checks"] == head["failed_checks"]
    assert dp.read_header(dp.deploy(store, run_id, tmp_path / "b") and tmp_path / "b" / "model.safetensors")[
        "failed_checks"] == []


def test_an_example_run_says_it_carries_no_weights(trained, tmp_path, capsys):
    """Issue 20: deploying a class-pack example said "(concave) has no ticket: only … concave … can be
    deployed", which contradicts itself."""
    from engine.__main__ import main
    store, run_id = trained
    ex = store.create_run({"model": "lenet300", "method": "concave"}, "h-ex", status="done")
    with store.transaction() as db:
        db.execute("UPDATE runs SET example=1 WHERE id=?", (ex,))
    capsys.readouterr()
    assert main(["deploy", ex, "--out", str(tmp_path / "a"), "--home", str(store.home)]) == 2
    err = capsys.readouterr().err.strip()
    assert "class-pack example" in err and "no weights" in err and "only" not in err
    lost = store.create_run({"model": "lenet300", "method": "concave"}, "h-lost", status="done")
    assert main(["deploy", lost, "--out", str(tmp_path / "a"), "--home", str(store.home)]) == 2
    err = capsys.readouterr().err.strip()
    assert "ticket.pt is missing" in err and "only" not in err


def test_deploy_size_figure_reads_at_1024_px():
    """Issue 20: the size chart's log axis was crowded (2, 5 and every decade labelled) and its bar
    labels ("1,041.9 KB (1/10.0)", on top of vertical bars side by side) overlapped. One bar per row,
    labels to the right of each bar inside the plot, and ticks at the decades only."""
    import math

    from ui import deploy_panel, figures
    report = {"sizes": {"dense_fp32": 1_066_904, "dense_fp32_zip": 985_000, "sparse_fp32": 102_000,
                        "sparse_fp32_zip": 95_000, "sparse_fp16": 61_000, "sparse_fp16_zip": 52_000}}
    fig = figures.deploy_size_figure(deploy_panel.sizes_frame(report))
    assert all(t.orientation == "h" and t.textposition == "outside" for t in fig.data)
    ax = fig.layout.xaxis
    assert ax.type == "log" and 2 <= len(ax.tickvals) <= 4
    assert all(math.log10(v) == round(math.log10(v)) for v in ax.tickvals)        # decades only
    assert list(ax.ticktext) == [f"{v:,g} KB" for v in ax.tickvals]
    assert ax.range[0] <= math.log10(52_000 / 1024) and all(ax.range[0] <= math.log10(v) <= ax.range[1]
                                                            for v in ax.tickvals)
    # the longest bar's label fits: the axis runs well past the largest bar (log units)
    assert ax.range[1] >= math.log10(1_066_904 / 1024) + 0.5
    assert max(len(s) for t in fig.data for s in t.text) <= 16
    assert "1/10.5" in fig.data[0].text[1]                    # sparse fp32 as written: 1/10.5 of dense


# ---------------------------------------------------------------- the paper's pixel ticket: one logit

PIXEL = {"model": "logreg", "dataset": "digits", "classes": [0, 1], "method": "concave", "lam": 10.0,
         "target_sparsity": 0.875, "threshold_mode": "topk", "epochs": 3, "retrain_epochs": 2, "batch_size": 32,
         "lr": 1e-2}       # the mnist-8-pixel preset on the offline 8×8 digits: 8 of 64 pixels kept


@pytest.fixture(scope="module")
def pixel_ticket(tmp_path_factory):
    from engine import runner
    from engine.config import RunConfig
    from engine.store import Store
    store = Store(tmp_path_factory.mktemp("pixelhome"))
    run_id = runner.create(store, RunConfig.from_dict(PIXEL), status="running")
    runner.execute(store, run_id)
    return store, run_id


def test_the_one_logit_pixel_ticket_deploys_and_predicts_as_the_masked_model(pixel_ticket, tmp_path):
    """Logistic regression on two classes has one logit (class 1 when it is > 0, trained with BCE):
    the deployed file keeps that, and its logits equal the ticket's 8 pixels computed by hand."""
    from engine.data import default_data_dir, load_dataset
    store, run_id = pixel_ticket
    out = tmp_path / "out"
    rep = dp.deploy(store, run_id, out)
    head = rep["header"]
    assert head["binary_logit"] is True and head["num_classes"] == 2 and head["class_names"] == ["0", "1"]
    assert list(head["layers"]) == ["classifier.0"] and head["layers"]["classifier.0"]["shape"] == [1, 64]
    assert head["layers"]["classifier.0"]["nnz"] == 8

    # the independent reference: w·x + b over the ticket's pixels, from the run's own files
    weights = store.load_array(run_id, "ckpt")["model"]
    keep = store.load_array(run_id, "ticket")["mask"]["classifier.0"]
    assert int(keep.sum()) == 8
    w = weights["classifier.0.weight"] * keep
    splits = load_dataset("digits", default_data_dir(), classes=[0, 1], val_fraction=0.1, split_seed=0)
    x, y = splits.test_x, splits.test_y
    by_hand = x.flatten(1) @ w.T + weights["classifier.0.bias"]
    want = (by_hand.squeeze(1) > 0).long()
    assert 0 < int(want.sum()) < len(want)                       # both classes predicted: the sign matters
    masked, _ = dp.trained_model(store, run_id, splits.in_shape, 2)
    with torch.no_grad():
        assert torch.allclose(masked(x), by_hand, rtol=1e-6, atol=1e-6)
        for how in ("never", "always", "auto"):
            got = dp.load_deployed(out / "model.safetensors", sparse=how)(x)
            assert got.shape == (len(y), 1), how
            assert torch.equal(dp.predicted(got, True), want), how
            assert torch.allclose(got, by_hand, rtol=1e-6, atol=1e-6), how
    summary = store.get_run(run_id)["summary"]
    assert int((want == y).sum()) / len(y) == pytest.approx(summary["test_accuracy"], abs=1e-12)
    par = rep["parity"]
    assert par["n"] == len(y) and par["differ_deployed"] == 0 and par["differ_onnx"] == 0 and par["passed"]
    onnx_out = dp.onnx_session(out / "model.onnx").run(None, {"input": x.numpy()})[0]
    assert onnx_out.shape == (len(y), 1)
    assert torch.equal(dp.predicted(torch.from_numpy(onnx_out), True), want)
    # classify() takes raw images (digits' 0..16 scale, here as floats already divided by it)
    norm = head["normalisation"]
    raw = x * norm["std"][0] + norm["mean"][0]
    assert dp.load_deployed(out / "model.safetensors").classify(raw) == [str(int(p)) for p in want]


# ---------------------------------------------------------------- CSR or dense: what calibrate measured

class _FakeClock:
    """time.perf_counter for DeployedLinear.calibrate: each product advances it by the cost the
    test gives (µs, per batch size; a list is cycled call by call)."""

    def __init__(self, layer, costs):
        self.now, self.calls = 0.0, {"dense": 0, "sparse": 0}
        for kind in ("dense", "sparse"):
            real = getattr(layer, f"{kind}_forward")

            def timed(x, kind=kind, real=real):
                per_batch = costs[kind][x.shape[0]]
                cycle = per_batch if isinstance(per_batch, list) else [per_batch]
                self.now += cycle[self.calls[kind] % len(cycle)] * 1e-6
                self.calls[kind] += 1
                return real(x)
            setattr(layer, f"{kind}_forward", timed)

    def __call__(self):
        return self.now


@pytest.mark.parametrize("dense_us, sparse_us, csr_small, csr_large", [
    ({1: 10, 128: 100}, {1: 4, 128: 30}, True, True),          # CSR faster at both batch sizes
    ({1: 10, 128: 100}, {1: 20, 128: 300}, False, False),      # dense faster at both
    ({1: 10, 128: 100}, {1: 4, 128: 300}, True, False),        # CSR wins at batch 1 only
    ({1: 10, 128: 100}, {1: 20, 128: 30}, False, True),        # ... at batch 128 only
    ({1: 10, 128: 100}, {1: 9.5, 128: 95}, False, False),      # 5 % faster: inside the 10 % margin
    ({1: 10, 128: 100}, {1: [2, 30, 30], 128: [20, 300, 300]}, False, False),   # fast once, slow at the median
    ({1: [50, 10, 10], 128: [500, 100, 100]}, {1: 5, 128: 50}, True, True),     # dense's median is its own
])
def test_calibrate_uses_csr_exactly_where_it_measured_faster(monkeypatch, dense_us, sparse_us, csr_small, csr_large):
    torch.manual_seed(0)
    weight = torch.randn(30, 40) * (torch.rand(30, 40) < 0.05)
    layer = dp.DeployedLinear(weight, torch.randn(30))
    clock = _FakeClock(layer, {"dense": dense_us, "sparse": sparse_us})
    monkeypatch.setattr(dp.time, "perf_counter", clock)
    layer.calibrate(reps=9)
    assert (layer.sparse_small, layer.sparse_large) == (csr_small, csr_large)
    assert clock.calls == {"dense": 2 * 11, "sparse": 2 * 11}          # 9 timed + 2 warm-up, at each batch size
    fastest = {b: min(c if isinstance(c, list) else [c]) for b, c in dense_us.items()}
    assert layer.timings[1]["dense_us"] == pytest.approx(fastest[1])
    assert layer.timings[128]["dense_us"] == pytest.approx(fastest[128])
    # forward follows the choice: batches below BATCH_SPLIT as batch 1, the others as batch 128
    used = []
    monkeypatch.setattr(layer, "sparse_forward", lambda x: used.append(("sparse", len(x))) or x.new_zeros(len(x), 30))
    monkeypatch.setattr(layer, "dense_forward", lambda x: used.append(("dense", len(x))) or x.new_zeros(len(x), 30))
    layer(torch.randn(dp.BATCH_SPLIT - 1, 40))
    layer(torch.randn(dp.BATCH_SPLIT, 40))
    assert used == [("sparse" if csr_small else "dense", dp.BATCH_SPLIT - 1),
                    ("sparse" if csr_large else "dense", dp.BATCH_SPLIT)]
