"""Benchmark of onnxcomp distill: labelling throughput, store size, memory, students.

Run from the repository root::

    python tools/bench/distill.py                       # everything (the example takes minutes)
    python tools/bench/distill.py --skip-example
    python tools/bench/distill.py --example-json out.json   # reuse distill_example.py --json

Prints four tables, every ratio measured in this run:

1. label throughput vs a bare ONNX Runtime loop (same teacher, data file, batch
   size and session options; the bare loop holds the whole array in memory and does
   nothing with the outputs), best of ``--repeats`` interleaved runs;
2. store bytes per sample, dense vs top-k, for 10 and 1000 classes;
3. peak resident memory of a labelling process at 10k vs 50k samples (a child
   process per size, ``VmHWM``; 1000-class MLP teacher, top-10);
4. the example's student accuracies (``tools/distill_example.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from onnxcomp.clikit import table  # noqa: E402

MNIST_TEACHER = ROOT / "fixtures" / "mnist" / "resnet.onnx"


def mlp_teacher(path: Path, d_in: int, hidden: int, classes: int, seed: int = 0) -> Path:
    """A small MLP classifier ``[N, d_in] -> [N, classes]`` ending in Softmax."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal((d_in, hidden)) / np.sqrt(d_in)).astype(np.float32), "W1"
        ),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "B1"),
        numpy_helper.from_array(
            (rng.standard_normal((hidden, classes)) * 3 / np.sqrt(hidden)).astype(np.float32), "W2"
        ),
        numpy_helper.from_array(np.zeros(classes, np.float32), "B2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "B1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "W2", "B2"], ["z"]),
        helper.make_node("Softmax", ["z"], ["prob"], axis=-1),
    ]
    g = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d_in])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    return path


def bare_loop(teacher: Path, npz: Path, batch: int) -> float:
    """Samples/s of session.run over the in-memory array, nothing else."""
    import onnxruntime as ort

    t0 = time.perf_counter()  # end to end, session creation included (as in label)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(teacher), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.load(npz)[name]
    for lo in range(0, len(x), batch):
        sess.run(None, {name: x[lo : lo + batch]})
    return len(x) / (time.perf_counter() - t0)


def onnxcomp_label(
    teacher: Path, npz: Path, batch: int, top_k: int | None, store: Path, numpy_post: bool = False
) -> tuple[float, int, float]:
    """End-to-end samples/s of onnxcomp.distill.label (fresh store), store bytes, and the
    samples/s of its shard loop alone (the report's throughput). ``numpy_post``: the
    per-batch log-softmax / top-k / tail in numpy (the path before the label graph)."""
    import shutil

    from onnxcomp.distill import LabelConfig, _label, label

    if store.exists():
        shutil.rmtree(store)
    saved = _label._label_graph
    if numpy_post:
        _label._label_graph = lambda *a, **k: None  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        cfg = LabelConfig(top_k=top_k, batch_size=batch, shard_size=4096)
        rep = label(teacher, npz, store, cfg)
    finally:
        _label._label_graph = saved  # type: ignore[assignment]
    assert rep.postprocess == ("numpy" if numpy_post else "onnxruntime"), rep.postprocess
    return rep.samples / (time.perf_counter() - t0), rep.store_bytes, rep.throughput


def throughput(work: Path, n: int, batch: int, repeats: int) -> list[list[str]]:
    rows = []
    teachers = []
    if MNIST_TEACHER.exists():
        x = np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32)
        np.savez(work / "mnist_synth.npz", input=x)
        for k in (None, 3):
            teachers.append(("mnist resnet (10 cl.)", MNIST_TEACHER, work / "mnist_synth.npz", k))
    mlp = mlp_teacher(work / "mlp1000.onnx", 256, 512, 1000)
    np.savez(
        work / "mlp_synth.npz",
        x=np.random.default_rng(1).standard_normal((n, 256)).astype(np.float32),
    )
    for k in (None, 10):
        teachers.append(("MLP 256-512-1000", mlp, work / "mlp_synth.npz", k))
    for name, teacher, npz, k in teachers:
        bare: list[float] = []
        ours: list[float] = []
        steady: list[float] = []
        numpy_post: list[float] = []
        for _ in range(repeats):  # interleaved, best of each
            bare.append(bare_loop(teacher, npz, batch))
            o, _, st = onnxcomp_label(teacher, npz, batch, k, work / "tp_store")
            ours.append(o)
            steady.append(st)
            numpy_post.append(onnxcomp_label(teacher, npz, batch, k, work / "tp_np", True)[0])
        b, o = max(bare), max(ours)
        rows.append(
            [
                name,
                n,
                batch,
                "dense" if k is None else f"top-{k}",
                f"{b:,.0f}",
                f"{o:,.0f}",
                f"{o / b:.2f}x",
                f"{max(steady):,.0f}",
                f"{max(numpy_post) / b:.2f}x",
            ]
        )
    return rows


def store_sizes(work: Path) -> list[list[str]]:
    rows = []
    n = 2000
    cases = []
    if MNIST_TEACHER.exists():
        np.savez(
            work / "sz_mnist.npz",
            input=np.random.default_rng(0).random((n, 1, 28, 28), dtype=np.float32),
        )
        cases.append(("mnist resnet", MNIST_TEACHER, work / "sz_mnist.npz", 10, (None, 1, 3, 5)))
    mlp = work / "mlp1000.onnx"
    if not mlp.exists():
        mlp_teacher(mlp, 256, 512, 1000)
    np.savez(
        work / "sz_mlp.npz", x=np.random.default_rng(1).standard_normal((n, 256)).astype(np.float32)
    )
    cases.append(("MLP 1000 classes", mlp, work / "sz_mlp.npz", 1000, (None, 5, 10, 20)))
    for name, teacher, npz, classes, ks in cases:
        dense = None
        for k in ks:
            _, nbytes, _ = onnxcomp_label(teacher, npz, 64, k, work / "sz_store")
            per = nbytes / n
            dense = dense or per
            rows.append(
                [
                    name,
                    classes,
                    "dense" if k is None else f"top-{k}",
                    f"{per:,.1f}",
                    f"{100 * per / dense:.1f}%",
                ]
            )
    return rows


# VmHWM (peak RSS of this process image) rather than ru_maxrss, which Linux carries
# over from the forking parent across exec.
_CHILD = r"""
import sys, time
from onnxcomp.distill import LabelConfig, label
t0 = time.perf_counter()
cfg = LabelConfig(top_k=10, batch_size=64, shard_size=1024)
r = label(sys.argv[1], sys.argv[2], sys.argv[3], cfg)
hwm = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(hwm, r.samples, time.perf_counter() - t0, r.store_bytes)
"""


def peak_memory(work: Path, sizes: tuple[int, ...]) -> list[list[str]]:
    mlp = work / "mlp1000.onnx"
    if not mlp.exists():
        mlp_teacher(mlp, 256, 512, 1000)
    rows = []
    rng = np.random.default_rng(2)
    for n in sizes:
        npz = work / f"mem{n}.npz"
        np.savez(npz, x=rng.standard_normal((n, 256)).astype(np.float32))
        store = work / f"mem_store{n}"
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(mlp), str(npz), str(store)],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        rss_kb, samples, secs, nbytes = out.stdout.split()
        rows.append(
            [
                f"{int(samples):,}",
                f"{npz.stat().st_size / 2**20:.1f} MB",
                f"{int(nbytes) / 2**20:.2f} MB",
                f"{int(rss_kb) / 1024:.1f} MB",
                f"{float(secs):.1f} s",
            ]
        )
    return rows


def example_rows(args: argparse.Namespace) -> list[list[str]] | None:
    if args.skip_example:
        return None
    if args.example_json:
        out = json.loads(Path(args.example_json).read_text())
    else:
        sys.path.insert(0, str(ROOT / "tools"))
        import distill_example

        out = distill_example.run(distill_example.parse(["--seeds", str(args.seeds)]))
    rows = []
    s = out["settings"]
    for fw, m in out["summary"].items():
        h, k = m["hard"], m["kd"]
        rows.append(
            [
                fw,
                s["train"],
                s["epochs"],
                s["seeds"],
                f"{100 * h['mean']:.2f} ± {100 * h['std']:.2f}",
                f"{100 * k['mean']:.2f} ± {100 * k['std']:.2f}",
                f"{100 * (k['mean'] - h['mean']):+.2f}",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="onnxcomp distill benchmark")
    p.add_argument("--samples", type=int, default=4096, help="Samples of the throughput runs.")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--memory-sizes", default="10000,50000")
    p.add_argument("--skip-example", action="store_true")
    p.add_argument(
        "--example-json", default=None, help="Results of tools/distill_example.py --json."
    )
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as d:
        work = Path(d)
        print(f"machine: {os.cpu_count()} cores; onnxcomp distill benchmark\n")
        rows = throughput(work, args.samples, args.batch, args.repeats)
        print(
            "1. label throughput vs a bare ONNX Runtime loop (best of "
            f"{args.repeats}, same data file and batch size; both end to end with session "
            "creation; 'shard loop' excludes label's setup: load, hash, probe; 'numpy post': "
            "log-softmax/top-k/tail in numpy instead of the label graph, as before)"
        )
        print(
            table(
                rows,
                [
                    "teacher",
                    "samples",
                    "batch",
                    "store",
                    "bare ORT /s",
                    "distill label /s",
                    "ratio",
                    "shard loop /s",
                    "ratio, numpy post",
                ],
            )
        )
        print("\n2. store bytes per sample")
        print(table(store_sizes(work), ["teacher", "classes", "mode", "bytes/sample", "of dense"]))
        sizes = tuple(int(s) for s in args.memory_sizes.split(","))
        print("\n3. peak memory of a labelling process (MLP 256-512-1000, top-10)")
        print(
            table(peak_memory(work, sizes), ["samples", "data file", "store", "peak RSS", "time"])
        )
        ex = example_rows(args)
        if ex is not None:
            print(
                "\n4. students on MNIST (tools/distill_example.py; test accuracy %, "
                "mean ± std over seeds)"
            )
            print(
                table(
                    ex,
                    [
                        "student",
                        "train images",
                        "epochs",
                        "seeds",
                        "hard labels",
                        "KD (soft labels)",
                        "gain",
                    ],
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
