"""Benchmark: onnxcomp quantize vs onnxruntime.quantization.quantize_static.

Both tools quantize the same models with the same calibration samples, each run
in its own subprocess (so peak RSS is that run's own). Printed tables:

1. memory/time: peak RSS and calibration wall time at 32/256/1024 samples for
   minmax/percentile/entropy on a constructed 10-conv model (ONNX Runtime's
   histogram runs are skipped where they would need more RAM than is safe);
2. quality: for every graph fixture, zoo model and MNIST model, fidelity (min
   output cosine against float), int8/float latency ratio (float, onnxcomp and
   ORT models measured interleaved in one process) and MNIST accuracy.

Usage::

    python tools/bench/quantize.py                 # everything (a few minutes)
    python tools/bench/quantize.py --only memory   # or: quality
    python tools/bench/quantize.py --quick         # fewer sizes / models
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ZOO_KEYS = ("orientation", "ocr_det", "ocr_rec", "wakeword", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")


# ------------------------------------------------------------------ workers


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _iter_npz(path: str, n: int, input_names: list[str]):  # type: ignore[no-untyped-def]
    """Samples of an npz (samples on axis 0), cycled to n, each with a batch axis of 1."""
    with np.load(path) as z:
        keys = [k for k in z.files if k not in ("label", "labels")]
        d = {k: z[k] for k in keys}  # read once: every z[k] would read the whole array again
    total = d[keys[0]].shape[0]
    for i in range(n):
        # a copy: a view of one sample would keep the whole array alive
        yield {k: d[k][i % total][None].copy() for k in keys}


def worker(args: argparse.Namespace) -> None:
    """Quantize in this process; print one JSON line with time and peak RSS."""
    import onnx

    t0 = time.perf_counter()
    if args.tool == "onnxcomp":
        from onnxcomp import io
        from onnxcomp.quantize import QuantizeConfig, quantize

        m = io.load(args.model)
        names = [v.name for v in io.graph_inputs(m)]
        # the memory/time table compares calibration: no latency guard there
        cfg = QuantizeConfig(method=args.method, verify=False, latency_guard=args.guard == "on")
        r = quantize(m, list(_iter_npz(args.data, args.n, names)) if args.n <= 64 else _Gen(args, names), cfg)
        io.save(r.model, args.out)
        extra = {"state_bytes": r.report.calibration_state_bytes, "excluded": len(r.report.excluded),
                 "calib_seconds": r.report.seconds.get("calibrate"), "stages": r.report.seconds}
    else:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        # the package's ``quantize`` attribute is a function: take the module itself
        ort_q = sys.modules["onnxruntime.quantization.quantize"]
        names = [i.name for i in onnx.load(args.model).graph.input]
        calib_time = [0.0]
        make_calibrator = ort_q.create_calibrator

        def timed(fn):  # type: ignore[no-untyped-def]
            def run(*a, **k):  # type: ignore[no-untyped-def]
                t = time.perf_counter()
                try:
                    return fn(*a, **k)
                finally:
                    calib_time[0] += time.perf_counter() - t
            return run

        def create_calibrator(*a, **k):  # type: ignore[no-untyped-def]
            c = timed(make_calibrator)(*a, **k)
            c.collect_data, c.compute_data = timed(c.collect_data), timed(c.compute_data)
            return c

        ort_q.create_calibrator = create_calibrator  # times ORT's own calibration phase

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = _iter_npz(args.data, args.n, names)

            def get_next(self):  # type: ignore[no-untyped-def]
                return next(self.it, None)

        method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[args.method]
        quantize_static(args.model, args.out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method)
        extra = {"calib_seconds": calib_time[0]}
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(), **extra}))


class _Gen:
    """Re-iterable generator of samples (streamed, never all in memory)."""

    def __init__(self, args: argparse.Namespace, names: list[str]) -> None:
        self.args, self.names = args, names

    def __iter__(self):  # type: ignore[no-untyped-def]
        return _iter_npz(self.args.data, self.args.n, self.names)


def run_worker(tool: str, model: Path, data: Path, n: int, method: str, out: Path, timeout: int = 900,
               guard: bool = True) -> dict:
    cmd = [sys.executable, __file__, "_worker", "--tool", tool, "--model", str(model), "--data", str(data),
           "--n", str(n), "--method", method, "--out", str(out), "--guard", "on" if guard else "off"]
    env = dict(os.environ, OMP_NUM_THREADS="2")
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout {timeout}s"}
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
        return {"error": (lines[-1] if lines else f"exit {p.returncode}")[:160]}
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ models


def conv_stack(path: Path, convs: int = 10, ch: int = 64, hw: int = 64) -> None:
    """The issue's memory model: 10 convs of 64 channels at 64x64 (Relu between)."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits = [], []
    prev, cin = "x", 3
    for i in range(convs):
        w = (rng.standard_normal((ch, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        b = (rng.standard_normal(ch) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        prev, cin = f"r{i}", ch
    g = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", 1, ["N", 3, hw, hw])],
                          [helper.make_tensor_value_info(prev, 1, ["N", ch, hw, hw])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, path)


# ------------------------------------------------------------------ tables


def table(rows: list[list[str]], headers: list[str]) -> str:
    cells = [headers] + rows
    w = [max(len(str(r[i])) for r in cells) for i in range(len(headers))]
    out = ["  ".join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i]) for i, c in enumerate(r)) for r in cells]
    out.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(out)


def bench_memory(tmp: Path, quick: bool, hw: int) -> None:
    model = tmp / "stack.onnx"
    conv_stack(model, hw=hw)
    data = tmp / "stack.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((64, 3, hw, hw)).astype(np.float32))
    sizes = (32, 256) if quick else (32, 256, 1024)
    per_sample_mb = 10 * 2 * 64 * hw * hw * 4 / 2**20  # conv + relu outputs kept by ORT's histogram calibrators
    rows = []
    results: dict[tuple[str, str, int], dict] = {}
    for method in ("minmax", "percentile", "entropy"):
        for n in sizes:
            for tool in ("onnxcomp", "ort"):
                if tool == "ort" and method != "minmax" and n * per_sample_mb > 6000:
                    r = {"error": f"skipped (needs ~{n * per_sample_mb / 1024:.0f} GB)"}
                else:
                    r = run_worker(tool, model, data, n, method, tmp / f"{tool}_{method}_{n}.onnx", guard=False)
                results[(tool, method, n)] = r
                rows.append([method, str(n), tool,
                             f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else r.get("error", "?"),
                             f"{r['seconds']:.1f}" if "seconds" in r else "-",
                             f"{r['calib_seconds']:.1f}" if r.get("calib_seconds") else "-"])
                print(f"  {method} n={n} {tool}: {r}", file=sys.stderr, flush=True)
    print(f"\n## Calibration memory and time (10 convs x 64 ch at {hw}x{hw}, batch 1 samples)\n")
    print(table(rows, ["method", "samples", "tool", "peak RSS MB", "wall s", "calibration s"]))
    print("\nonnxcomp RSS(max samples)/RSS(32):", ", ".join(
        f"{m} {results[('onnxcomp', m, sizes[-1])].get('peak_rss_mb', float('nan')) / results[('onnxcomp', m, 32)].get('peak_rss_mb', float('nan')):.3f}"
        for m in ("minmax", "percentile", "entropy")))
    for method in ("minmax", "percentile", "entropy"):
        for n in sizes:
            a, b = results[("onnxcomp", method, n)], results[("ort", method, n)]
            if a.get("seconds") and b.get("seconds"):
                print(f"{method} at {n} samples: calibration onnxcomp {a['calib_seconds']:.1f}s vs ORT "
                      f"{b['calib_seconds']:.1f}s ({a['calib_seconds'] / b['calib_seconds']:.2f}x); whole run "
                      f"{a['seconds']:.1f}s vs {b['seconds']:.1f}s ({a['seconds'] / b['seconds']:.2f}x)")


def _quality_models(quick: bool) -> list[tuple[str, Path, Path, Path | None]]:
    """(label, model, calibration npz, evaluation npz with labels or None)."""
    from onnxcomp import io
    from onnxcomp.data import SyntheticSource, input_specs

    out: list[tuple[str, Path, Path, Path | None]] = []
    mnist = ROOT / "fixtures" / "mnist"
    for p in sorted(mnist.glob("*.onnx")):
        out.append((f"mnist/{p.stem}", p, mnist / "calib.npz", mnist / "eval.npz"))
    zoo = ROOT / "fixtures" / "zoo"
    for k in ZOO_KEYS:
        if (zoo / f"{k}.onnx").exists():
            ev = zoo / f"{k}.npz"
            out.append((f"zoo/{k}", zoo / f"{k}.onnx", ev, ev if "label" in np.load(ev).files else None))
    if not quick:
        tmp = Path(tempfile.mkdtemp(prefix="qbench-"))
        for p in sorted((ROOT / "fixtures" / "graphs").glob("*.onnx")):
            m = io.load(p)
            specs = input_specs(m)
            arrs = {s.name: [] for s in specs}
            for smp in SyntheticSource(specs, 32, 0):
                for k, v in smp.items():
                    arrs[k].append(np.asarray(v).reshape(np.asarray(v).shape[1:]) if np.asarray(v).shape[0] == 1 else v)
            npz = tmp / f"{p.stem}.npz"
            np.savez(npz, **{k: np.stack(v) for k, v in arrs.items()})
            out.append((f"graphs/{p.stem} (synthetic)", p, npz, None))
    return out


def bench_quality(tmp: Path, quick: bool, n: int) -> None:
    from onnxcomp import io
    from onnxcomp.data import open_data
    from onnxcomp.metrics import FidelityAccumulator, top1
    from onnxcomp.runtime import ModelRunner, iter_batches, measure_latency

    rows = []
    for label, model, calib, evalp in _quality_models(quick):
        outs = {}
        for tool in ("onnxcomp", "ort"):
            out = tmp / f"{label.replace('/', '_').split(' ')[0]}_{tool}.onnx"
            r = run_worker(tool, model, calib, n, "minmax", out)
            outs[tool] = (out, r)
            print(f"  {label} {tool}: {r}", file=sys.stderr, flush=True)
        m = io.load(model)
        data = open_data(str(evalp or calib), m)
        runners = {"float": ModelRunner(str(model), name="float")}
        for tool, (out, r) in outs.items():
            if "error" not in r:
                try:
                    runners[tool] = ModelRunner(str(out), name=tool)
                except Exception as e:  # the model written does not load (pitfall 1)
                    outs[tool] = (out, {"error": f"does not load: {str(e)[:80]}"})
        fid = {t: {o: FidelityAccumulator(o) for o in runners["float"].output_names} for t in runners if t != "float"}
        correct = {t: 0 for t in runners}
        labelled = 0
        first = None
        for batch in iter_batches(data.samples(), data.specs, 1):
            if first is None:
                first = batch.feed
            ref = runners["float"].run(batch.feed)
            for t, rn in runners.items():
                res = ref if t == "float" else rn.run(batch.feed)
                if t != "float":
                    for o in ref:
                        fid[t][o].update(ref[o], res[o], batch.size)
                if batch.labels[0] is not None:
                    o0 = runners["float"].output_names[0]
                    correct[t] += int(top1(res[o0])[0] == int(np.asarray(batch.labels[0]).reshape(-1)[0]))
            if batch.labels[0] is not None:
                labelled += 1
        # about 2 s of timed runs per model (at least 15): tiny models need many repeats
        t0 = time.perf_counter()
        for _ in range(5):
            runners["float"].session.run(None, first)
        per_run = (time.perf_counter() - t0) / 5
        repeats = int(min(1000, max(15, 2.0 / max(per_run, 1e-5) / 2)))
        lat = dict(zip(runners, measure_latency(list(runners.values()), first, warmup=3, repeats=repeats)))
        for tool in ("onnxcomp", "ort"):
            out, r = outs[tool]
            if tool not in runners:
                rows.append([label, tool, "-", "-", "-", "-", r.get("error", "?")[:70]])
                continue
            cos = min(a.result().cosine for a in fid[tool].values())
            sq = min(a.result().sqnr_db for a in fid[tool].values())
            acc = (f"{100 * correct['float'] / labelled:.2f} -> {100 * correct[tool] / labelled:.2f}"
                   if labelled else "-")
            rows.append([label, tool, f"{cos:.5f}", f"{sq:.2f}",
                         f"{lat[tool].median_ms / lat['float'].median_ms:.2f}", acc, f"{r['seconds']:.1f}s"])
    print(f"\n## Quality (MinMax, QDQ, per-channel, u8/s8; {n} calibration samples; same-run latency)\n")
    print(table(rows, ["model", "tool", "min cosine", "min SQNR dB", "int8/float lat", "accuracy % (float -> int8)", "quantize time / error"]))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        ap = argparse.ArgumentParser()
        for k in ("tool", "model", "data", "method", "out"):
            ap.add_argument(f"--{k}", required=True)
        ap.add_argument("--n", type=int, required=True)
        ap.add_argument("--guard", default="on")
        worker(ap.parse_args(sys.argv[2:]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["memory", "quality"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--hw", type=int, default=64, help="Spatial size of the memory model (the issue's: 64).")
    ap.add_argument("--samples", type=int, default=32, help="Calibration samples of the quality runs.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="qbench-") as d:
        tmp = Path(d)
        if args.only in (None, "memory"):
            bench_memory(tmp, args.quick, args.hw)
        if args.only in (None, "quality"):
            bench_quality(tmp, args.quick, args.samples)


if __name__ == "__main__":
    main()
