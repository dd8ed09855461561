"""Benchmark of ``onnxcomp prune``: size/speed ratios and accuracy without fine-tuning.

    python tools/bench/prune.py [--repeats 50] [--quick]

For every graph fixture, the MNIST fixtures and the fetched ZOO models, at ratios
0.25 and 0.5 (l1): MACs ratio, params ratio, ORT latency ratio (pruned/original,
same run, interleaved medians) and prune wall time. For the trained MNIST fixtures:
accuracy on eval.npz without fine-tuning for l1, l2, bn and activation (each without /
with the mean-contribution bias fold), l1 with the data-free fold, and reconstruction.
Also: prune time of DenseNet-121 and the ShuffleNet MACs ratios through its channel
shuffles (onnx light models after onnxcomp.simplification).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from models import GRAPHS, LIGHT_DIR, MNIST, ZOO_DIR, ZOO_KEYS  # noqa: E402

from onnxcomp import io  # noqa: E402
from onnxcomp.clikit import table  # noqa: E402
from onnxcomp.data import Dataset, SyntheticSource, input_specs, open_data  # noqa: E402
from onnxcomp.prune import PruneConfig, prune  # noqa: E402
from onnxcomp.runtime import ModelRunner, create_session, measure_latency  # noqa: E402


def _first_feed(model, data):
    if data is None:
        specs = input_specs(model)
        data = Dataset(SyntheticSource(specs, 1, 0), specs)
    return next(iter(data))


def ratios_table(repeats: int) -> str:
    rows = []
    models = [(p.stem, p, None) for p in GRAPHS] + [(f"mnist/{p.stem}", p, ROOT / "fixtures/mnist/calib.npz") for p in MNIST]
    for key in ZOO_KEYS:
        p = ZOO_DIR / f"{key}.onnx"
        if p.exists():
            models.append((f"zoo/{key}", p, p.with_suffix(".npz") if p.with_suffix(".npz").exists() else None))
    for name, path, data_path in models:
        model = io.load(path)
        data = open_data(data_path, model, limit=4) if data_path else None
        feed = _first_feed(model, data)
        for ratio in (0.25, 0.5):
            t0 = time.perf_counter()
            res = prune(model, PruneConfig(ratio=ratio, latency_repeats=0, verify_samples=1), data)
            wall = time.perf_counter() - t0
            a, b = ModelRunner(model, name="orig"), ModelRunner(res.model, name="pruned")
            la, lb = measure_latency([a, b], feed, warmup=5, repeats=repeats)
            plan = res.plan
            ok = "ok" if (res.reference_check or {}).get("passed", True) else "FAIL"
            rows.append([name, ratio, f"{plan.macs_ratio:.3f}", f"{plan.params_ratio:.3f}",
                         f"{lb.median_ms / la.median_ms:.3f}", f"{la.median_ms:.3f}", f"{wall:.2f}", ok])
            print(f"  {name} {ratio} done", file=sys.stderr)
    return table(rows, ["model", "ratio", "MACs", "params", "latency", "orig ms", "prune s", "masked ref"])


def accuracy_table() -> str:
    """Top-1 on eval.npz without fine-tuning; each criterion with and without the bias fold.

    The fold uses calibration means (calib.npz is given to every run); ``data-free``
    runs l1 without data, i.e. with the BatchNormalization estimate of the means.
    """
    rows = []
    for path in MNIST:
        model = io.load(path)
        calib = open_data(ROOT / "fixtures/mnist/calib.npz", model)
        z = np.load(ROOT / "fixtures/mnist/eval.npz")
        x, y = z["input"], z["label"]

        def acc(m) -> float:
            s = create_session(m)
            return float((s.run(None, {s.get_inputs()[0].name: x})[0].argmax(1) == y).mean())

        base = acc(model)
        for ratio in (0.25, 0.5):
            row = [path.stem, f"{100 * base:.2f}", ratio]
            for crit in ("l1", "l2", "bn", "activation"):
                cells = []
                for fold in (False, True):
                    cfg = PruneConfig(ratio=ratio, criterion=crit, calib_samples=256, latency_repeats=0, bias_fold=fold)
                    cells.append(f"{100 * acc(prune(model, cfg, calib).model):.1f}")
                row.append(" / ".join(cells))
            cfg = PruneConfig(ratio=ratio, criterion="l1", latency_repeats=0, verify_samples=1)
            row.append(f"{100 * acc(prune(model, cfg).model):.1f}")
            t0 = time.perf_counter()
            res = prune(model, PruneConfig(ratio=ratio, criterion="reconstruction", calib_samples=256, latency_repeats=0), calib)
            row.append(f"{100 * acc(res.model):.1f} ({time.perf_counter() - t0:.1f}s)")
            rows.append(row)
            print(f"  {path.stem} {ratio} accuracy done", file=sys.stderr)
    head = ["mnist", "orig %", "ratio", "l1 %", "l2 %", "bn %", "activation %", "l1 data-free fold %", "reconstruction %"]
    return "(criterion cells: without / with bias fold from calibration means)\n" + table(rows, head)


def densenet_time() -> str:
    from onnxcomp.simplification import simplify

    path = LIGHT_DIR / "light_densenet121.onnx"
    model = simplify(io.load(path))
    out = []
    for verify in (False, True):
        t0 = time.perf_counter()
        res = prune(model, PruneConfig(ratio=0.5, verify=verify, verify_samples=1, latency_repeats=0))
        out.append(f"DenseNet-121 ratio 0.5 (verify={verify}): {time.perf_counter() - t0:.2f} s wall, "
                   f"MACs {res.plan.macs_ratio:.3f}x, params {res.plan.params_ratio:.3f}x")
    return "\n".join(out)


def shufflenet_table() -> str:
    from onnxcomp.simplification import simplify

    model = simplify(io.load(LIGHT_DIR / "light_shufflenet.onnx"))
    out = []
    for ratio in (0.25, 0.5):
        t0 = time.perf_counter()
        res = prune(model, PruneConfig(ratio=ratio, verify_samples=1, latency_repeats=0))
        plan = res.plan
        out.append(
            f"ShuffleNet ratio {ratio}: MACs {plan.macs_ratio:.3f}x, params {plan.params_ratio:.3f}x "
            f"(shared dummy weights get private copies), {sum(g.pruned for g in plan.groups)}/{len(plan.groups)} "
            f"groups pruned, {time.perf_counter() - t0:.2f} s wall, masked reference "
            f"{'passed' if res.reference_check and res.reference_check['passed'] else 'FAILED'}"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--accuracy-only", action="store_true")
    args = ap.parse_args()
    if args.accuracy_only:
        print(accuracy_table())
        return
    print(ratios_table(args.repeats))
    print()
    if not args.skip_accuracy:
        print(accuracy_table())
        print()
    print(densenet_time())
    print(shufflenet_table())


if __name__ == "__main__":
    main()
