import tempfile, time, os
from pathlib import Path
from engine import runner, deploy as dp
from engine.config import RunConfig
from engine.store import Store
home = Path(tempfile.mkdtemp()); store = Store(home)
data = os.environ["LOTTERY_DATA"]
cfg = RunConfig.from_dict({"model": "lenet300", "dataset": "mnist", "method": "concave", "lam": 1.0,
    "target_sparsity": 0.95, "threshold_mode": "topk", "epochs": 2, "retrain_epochs": 2, "batch_size": 128})
rid = runner.create(store, cfg, status="running"); s = runner.execute(store, rid, data)
print("ticket remaining", s["remaining"], "acc", s["test_accuracy"])
for fp16 in (False, True):
    rep = dp.deploy(store, rid, home / f"o{fp16}", fp16=fp16, data_dir=data)
    p = rep["parity"]
    print("fp16" if fp16 else "fp32", p["logits"], "differ", p["differ_deployed"], p["differ_onnx"], "of", p["n"], "passed", p["passed"])
    path = home / f"o{fp16}" / "model.safetensors"
    t = time.perf_counter(); [dp.load_deployed(path, sparse="never") for _ in range(5)]; print("load never x5", time.perf_counter()-t)
import torch
from engine.models import build_model
from engine import masking
m = build_model("resnet20", (3,32,32), 10); masks = {n: torch.rand(l.weight.shape) < 0.05 for n, l in masking.prunable_layers(m)}
masking.set_binary(m, masks)
b = dp.encode(m, masks, {"architecture": "resnet20", "input_shape": [3,32,32], "num_classes": 10, "class_names": [str(i) for i in range(10)], "binary_logit": False, "normalisation": {"scale": 255.0}, "accuracy": {}})
(home/"r.safetensors").write_bytes(b)
ts = {k: v for k, v in __import__("safetensors.torch", fromlist=["load"]).load(b).items()}
t = time.perf_counter(); [dp.tensor_sha256(v) for v in ts.values()]; print("resnet20 sha all tensors", time.perf_counter()-t, len(b))
