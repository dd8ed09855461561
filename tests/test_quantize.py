"""End-to-end static/dynamic quantization, pitfalls and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import conv_model, model_from_text
from models import GRAPHS

from onnxcomp import io
from onnxcomp.cli import main
from onnxcomp.errors import CalibrationError, DataError
from onnxcomp.quantize import QuantizeConfig, calibrate, load_ranges, quantize, save_ranges
from onnxcomp.quantize._prepare import fold_batchnorm

FAST = QuantizeConfig(latency_repeats=0)


def _samples(
    shape: tuple[int, ...], n: int = 16, seed: int = 0, name: str = "x"
) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(n)]


def _to_ir(proto: onnx.ModelProto) -> ir.Model:
    return ir.serde.deserialize_model(proto)


def _check(model: ir.Model) -> ort.InferenceSession:
    proto = io.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def _run(model: ir.Model | onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    proto = model if isinstance(model, onnx.ModelProto) else io.to_proto(model)
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feed)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------ calibration


def test_calibration_ranges_equal_numpy() -> None:
    m = model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,4] x) => (float[N,4] y) {
            h = Mul (x, two)
            y = Relu (h)
        }
        """,
        {"two": np.full(4, 2.0, dtype=np.float32)},
    )
    samples = _samples((1, 4), 37, name="x")
    model = _to_ir(m)
    from onnxcomp.data import open_data

    res = calibrate(model, open_data(samples, model), method="minmax", batch_size=5)
    allx = np.concatenate([s["x"] for s in samples])
    assert res.samples == 37
    assert res.ranges["x"].lo == pytest.approx(allx.min())
    assert res.ranges["h"].hi == pytest.approx(2 * allx.max())
    assert res.ranges["y"].lo == 0.0


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_calibration_in_groups_under_a_memory_budget_equals_one_group(method: str) -> None:
    model = _to_ir(conv_model())
    from onnxcomp.data import open_data
    from onnxcomp.quantize import _calibrate

    data = open_data(_samples((1, 3, 16, 16), 12), model)
    passes: list[int] = []
    real = _calibrate.expose_outputs

    def spy(m: ir.Model, names: list[str]) -> ir.Model:
        passes.append(len(names))
        return real(m, names)

    _calibrate.expose_outputs = spy  # type: ignore[assignment]
    try:
        one = calibrate(model, data, method=method, batch_size=4, memory_budget=2**30)
        n_one = len(passes)
        passes.clear()
        # one tensor per pass: a 16x16 activation of 4 samples is > 1 byte
        many = calibrate(model, data, method=method, batch_size=4, memory_budget=1)
    finally:
        _calibrate.expose_outputs = real  # type: ignore[assignment]
    assert many.ranges == one.ranges
    assert many.samples == one.samples == 12
    if method == "minmax":
        # min/max are reduced in the graph: the pass exposes nothing
        assert passes == [0] and n_one == 1
    else:
        # r1 = Relu(c1): its histogram is derived from c1's, never exposed
        assert len(passes) == 1 + len(one.ranges) - 1 and n_one == 2
    # same ranges as exposing every activation and reducing it in numpy
    names = list(one.ranges)
    from onnxcomp.runtime import ModelRunner, expose_outputs

    r = ModelRunner(expose_outputs(model, names))
    outs = [dict(r.run(s.feed), **s.feed) for s in data.samples()]
    for n in names:
        allv = np.concatenate([o[n].ravel() for o in outs])
        if method == "minmax":
            assert one.ranges[n].lo == pytest.approx(float(allv.min()))
            assert one.ranges[n].hi == pytest.approx(float(allv.max()))


def test_calibration_nan_tensors_get_finite_ranges_and_counts() -> None:
    m = model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,4] x) => (float[N,4] y) {
            s = Sqrt (x)
            y = Add (s, one)
        }
        """,
        {"one": np.ones(4, dtype=np.float32)},
    )
    model = _to_ir(m)
    from onnxcomp.data import open_data

    samples = [{"x": np.array([[4.0, -1.0, 9.0, 1.0]], np.float32)}]
    res = calibrate(model, open_data(samples, model, check_finite=False), method="minmax")
    assert res.nonfinite == {"s": 1, "y": 1}
    assert (res.ranges["s"].lo, res.ranges["s"].hi) == (1.0, 3.0)
    assert (res.ranges["x"].lo, res.ranges["x"].hi) == (-1.0, 9.0)


def test_ranges_round_trip(tmp_path: Path) -> None:
    model = _to_ir(conv_model())
    from onnxcomp.data import open_data

    res = calibrate(model, open_data(_samples((1, 3, 16, 16), 8), model), method="percentile")
    p = save_ranges(res, tmp_path / "r.json")
    back = load_ranges(p)
    assert back.ranges == res.ranges and back.method == "percentile"


# ------------------------------------------------------------------ end to end


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_conv_model_quantizes_and_runs(fmt: str, method: str) -> None:
    m = conv_model()
    data = _samples((1, 3, 16, 16), 16)
    r = quantize(_to_ir(m), data, QuantizeConfig(format=fmt, method=method, latency_repeats=0))
    sess = _check(r.model)
    ops = _ops(r.model)
    if fmt == "qdq":
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    else:
        assert "QLinearConv" in ops
    feed = data[0]
    ref = _run(m, feed)[0]
    out = sess.run(None, feed)[0]
    assert _cos(ref, out) > 0.98
    assert r.report.verify.min_cosine > 0.98
    assert r.report.quantized_nodes >= 3


def test_per_channel_weights_and_symmetry_options() -> None:
    m = _to_ir(conv_model())
    data = _samples((1, 3, 16, 16), 8)
    r = quantize(m, data, FAST)
    dq = [
        n
        for n in r.model.graph
        if n.op_type == "DequantizeLinear"
        and n.inputs[0].const_value is not None
        and n.inputs[0].const_value.dtype == ir.DataType.INT8
    ]
    assert any(n.inputs[1].const_value.numpy().size > 1 for n in dq)  # per-channel scales
    r2 = quantize(
        m, data, QuantizeConfig(per_channel=False, activation_symmetric=True, latency_repeats=0)
    )
    _check(r2.model)
    dq2 = [n for n in r2.model.graph if n.op_type == "DequantizeLinear"]
    assert all(n.inputs[1].const_value.numpy().size == 1 for n in dq2)
    # symmetric u8 activations: zero point 128
    zps = [
        int(n.inputs[2].const_value.numpy())
        for n in dq2
        if n.inputs[2].const_value.dtype == ir.DataType.UINT8
    ]
    assert zps and all(z == 128 for z in zps)


def test_exclude_and_op_types() -> None:
    m = _to_ir(conv_model())
    data = _samples((1, 3, 16, 16), 8)
    names = [n.name for n in m.graph]
    r = quantize(m, data, QuantizeConfig(exclude=("Gemm",), latency_repeats=0))
    _check(r.model)
    assert any(e.op_type == "Gemm" for e in r.report.excluded)
    gemm = next(n for n in r.model.graph if n.op_type == "Gemm")
    assert gemm.inputs[1].const_value is not None  # float weight, no DQ
    r2 = quantize(m, data, QuantizeConfig(op_types=("Gemm",), latency_repeats=0))
    conv = [n for n in r2.model.graph if n.op_type == "Conv"]
    assert all(n.inputs[1].const_value is not None for n in conv)
    assert names  # unnamed nodes get names; patterns apply to them
    r3 = quantize(m, data, QuantizeConfig(exclude=("Conv_*",), latency_repeats=0))
    assert {e.op_type for e in r3.report.excluded} == {"Conv"}


def test_save_and_reuse_ranges(tmp_path: Path) -> None:
    m = _to_ir(conv_model())
    data = _samples((1, 3, 16, 16), 8)
    rpath = tmp_path / "ranges.json"
    a = quantize(m, data, QuantizeConfig(save_ranges=str(rpath), verify=False, latency_guard=False))
    assert json.loads(rpath.read_text())["format"] == "onnxcomp.ranges/1"
    b = quantize(m, None, QuantizeConfig(ranges=str(rpath), verify=False))
    pa = io.to_proto(a.model).graph.initializer
    pb = io.to_proto(b.model).graph.initializer
    assert {t.name: t.raw_data for t in pa} == {t.name: t.raw_data for t in pb}


def test_dynamic_mode_on_mlp() -> None:
    mlp = next(p for p in GRAPHS if p.stem == "mlp")
    r = quantize(str(mlp), None, QuantizeConfig(mode="dynamic", verify=False))
    _check(r.model)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & set(_ops(r.model))


def _gemm(w: np.ndarray) -> ir.Model:
    from onnx import TensorProto, helper, numpy_helper

    n, k = w.shape
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1, name="fc")],
        "fc",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [numpy_helper.from_array(w.astype(np.float32), "w")],
    )
    return _to_ir(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))


def _int_weights(model: ir.Model) -> np.ndarray:
    return next(
        v.const_value.numpy()
        for v in model.graph.initializers.values()
        if v.const_value is not None
        and v.const_value.dtype == ir.DataType.INT8
        and v.shape.rank() == 2
    )


def _cpu_saturates() -> bool:
    from onnxcomp.quantize._ort import cpu_needs_reduce_range

    return cpu_needs_reduce_range()


@pytest.mark.parametrize("pairs", ["same-sign", "alternating"])
def test_automatic_weight_bits_keep_the_more_faithful(
    monkeypatch: pytest.MonkeyPatch, pairs: str
) -> None:
    """Without VNNI, u8 x s8 pair sums saturate int16 with 8-bit weights of equal sign.

    Same-sign weight pairs against activations near 255 saturate (7 bits win);
    alternating signs cannot (the kernel pairs neighbours along K), so 8 bits win.
    """
    if pairs == "same-sign" and not _cpu_saturates():
        pytest.skip("this CPU has VNNI: its u8 x s8 kernels do not saturate")
    monkeypatch.setattr("onnxcomp.quantize.cpu_needs_reduce_range", lambda: True)
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 1.0, (16, 64))
    if pairs == "alternating":
        w[:, 1::2] *= -1
    data = [{"x": rng.uniform(0.0, 1.0, (1, 64)).astype(np.float32)} for _ in range(32)]
    r = quantize(_gemm(w), data, FAST)
    _check(r.model)
    bits = r.report.weight_bits
    assert bits is not None and set(bits) == {"bits", "sqnr_db_7bit", "sqnr_db_8bit"}
    q = _int_weights(r.model)
    if pairs == "same-sign":
        assert bits["sqnr_db_7bit"] > bits["sqnr_db_8bit"] + 10  # saturation is gross
        assert bits["bits"] == 7 and r.report.reduce_range
        assert np.abs(q).max() <= 64  # ORT's 7-bit symmetric range: 255 * (64 + 64) < 2**15
    else:
        assert bits["sqnr_db_8bit"] > bits["sqnr_db_7bit"]
        assert bits["bits"] == 8 and not r.report.reduce_range
        assert np.abs(q).max() == 127
    assert any(f"{bits['bits']}-bit weights kept" in w for w in r.report.warnings)
    assert {"prepare", "calibrate", "weight_bits", "quantize"} <= set(r.report.seconds)
    assert all(v >= 0 for v in r.report.seconds.values())
    # forcing either choice skips the comparison
    forced = quantize(_gemm(w), data, QuantizeConfig(latency_repeats=0, reduce_range=False))
    assert forced.report.weight_bits is None and np.abs(_int_weights(forced.model)).max() == 127


@pytest.mark.parametrize("path", GRAPHS, ids=[p.stem for p in GRAPHS])
def test_every_graph_fixture(path: Path) -> None:
    m = io.load(path)
    from onnxcomp.data import SyntheticSource, input_specs

    specs = input_specs(m)
    src = SyntheticSource(specs, 8, 0)
    r = quantize(m, list(src), FAST)
    _check(r.model)
    assert r.report.verify.min_cosine > 0.9


# --------------------------------------------------------------------- pitfalls


def test_pitfall1_old_opset_per_channel_upgrades() -> None:
    m = conv_model()
    m.opset_import[0].version = 11
    onnx.checker.check_model(m, full_check=True)
    r = quantize(_to_ir(m), _samples((1, 3, 16, 16), 8), FAST)
    _check(r.model)
    assert r.report.opset == (11, 13) and r.report.per_channel


def test_pitfall4_attention_mask_stays_float() -> None:
    path = next(p for p in GRAPHS if p.stem == "attention")
    m = io.load(path)
    data = _samples((1, 16, 32), 8, name="input")
    r = quantize(m, data, FAST)
    _check(r.model)
    kept = {e.op_type for e in r.report.excluded}
    assert "Softmax" in kept and "Add" in kept
    for n in r.model.graph:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert float(np.max(n.inputs[1].const_value.numpy())) < 1e3
    assert r.report.verify.min_cosine > 0.99


def _yolo_head() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,16] x) => (float[N,10] out) {
            h = MatMul (x, W1)
            hr = Relu (h)
            b = MatMul (hr, Wb)
            boxes = Mul (b, px)
            s = MatMul (hr, Ws)
            scores = Sigmoid (s)
            out = Concat <axis = 1> (boxes, scores)
        }
        """,
        {
            "W1": rng.standard_normal((16, 32)).astype(np.float32),
            "Wb": rng.standard_normal((32, 4)).astype(np.float32) * 0.1,
            "px": np.full(4, 320.0, dtype=np.float32),
            "Ws": rng.standard_normal((32, 6)).astype(np.float32) * 0.1,
        },
    )


def test_pitfall5_mixed_concat_output_stays_float() -> None:
    m = _yolo_head()
    data = _samples((1, 16), 32)
    r = quantize(_to_ir(m), data, FAST)
    sess = _check(r.model)
    assert any(e.op_type == "Concat" for e in r.report.excluded)
    feed = {"x": np.concatenate([d["x"] for d in data])}
    ref = _run(m, feed)[0]
    out = sess.run(None, feed)[0]
    assert _cos(ref[:, 4:], out[:, 4:]) > 0.99  # the scores slice survives


def test_pitfall8_dynamic_dims_shared_names() -> None:
    rng = np.random.default_rng(0)
    m = model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,3,H,W] a, float[N,3,H,W] b) => (float[N,4,H,W] y) {
            s = Add (a, b)
            c = Conv <pads = [1,1,1,1], kernel_shape = [3,3]> (s, Wc)
            y = Relu (c)
        }
        """,
        {"Wc": rng.standard_normal((4, 3, 3, 3)).astype(np.float32)},
    )
    data = [
        {
            "a": rng.standard_normal((1, 3, 20, 24)).astype(np.float32),
            "b": rng.standard_normal((1, 3, 20, 24)).astype(np.float32),
        }
        for _ in range(6)
    ]
    r = quantize(_to_ir(m), data, FAST)
    sess = _check(r.model)
    feed = {
        "a": rng.standard_normal((2, 3, 9, 13)).astype(np.float32),
        "b": rng.standard_normal((2, 3, 9, 13)).astype(np.float32),
    }
    assert sess.run(None, feed)[0].shape == (2, 4, 9, 13)  # still dynamic
    r2 = quantize(_to_ir(m), data, QuantizeConfig(fix_shapes_from_data=True, latency_repeats=0))
    _check(r2.model)
    assert [d for d in r2.model.graph.inputs[0].shape] == [1, 3, 20, 24]


def test_bn_folding_exact() -> None:
    path = next(p for p in GRAPHS if p.stem == "conv_bn_relu")
    m = io.load(path)
    folded = m.clone()
    names = fold_batchnorm(folded)
    assert len(names) == 3 and "BatchNormalization" not in _ops(folded)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    a = _run(m, {"input": x})[0]
    b = _run(folded, {"input": x})[0]
    np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(a).max())


# --------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "bad, match",
    [
        ([{"nope": np.zeros((1, 3, 16, 16), np.float32)}], "unknown input"),
        ([{"x": np.zeros((1, 3, 15, 16), np.float32)}], "shape"),
        ([{"x": np.zeros((1, 3, 16, 16), np.int64)}], "dtype|type"),
        ([{"x": np.full((1, 3, 16, 16), np.nan, np.float32)}], "NaN"),
        ([], "no samples|no calibration"),
    ],
)
def test_bad_calibration_data(bad: list[dict[str, np.ndarray]], match: str) -> None:
    with pytest.raises(DataError, match=match):
        quantize(_to_ir(conv_model()), bad, FAST)


def test_no_data_for_static() -> None:
    with pytest.raises(CalibrationError):
        quantize(_to_ir(conv_model()), None, FAST)


# ------------------------------------------------------------------------ CLI


def test_cli_quantize(tmp_path: Path, conv_path: Path) -> None:
    data = tmp_path / "cal.npz"
    np.savez(
        data, x=np.random.default_rng(0).standard_normal((12, 1, 3, 16, 16)).astype(np.float32)
    )
    out = tmp_path / "q.onnx"
    res = CliRunner().invoke(
        main,
        [
            "quantize",
            str(conv_path),
            "-o",
            str(out),
            "--data",
            str(data),
            "--repeats",
            "2",
            "--report",
            "sensitivity",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "latency" in res.output and "cosine" in res.output and "sensitivity" in res.output
    _check(io.load(out))
    res = CliRunner().invoke(
        main,
        [
            "quantize",
            str(conv_path),
            "-o",
            str(out),
            "--data",
            str(data),
            "--repeats",
            "0",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)
    assert d["verify"]["outputs"][0]["cosine"] > 0.98


def test_cli_synthetic_warns(tmp_path: Path, conv_path: Path) -> None:
    res = CliRunner().invoke(
        main,
        [
            "quantize",
            str(conv_path),
            "-o",
            str(tmp_path / "q.onnx"),
            "--synthetic",
            "4",
            "--repeats",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "SYNTHETIC" in res.output


@pytest.mark.parametrize("kind", ["names", "shape", "dtype", "nan", "empty", "missing"])
def test_cli_bad_data_exit_2(tmp_path: Path, conv_path: Path, kind: str) -> None:
    data = tmp_path / "cal.npz"
    x = np.zeros((3, 1, 3, 16, 16), np.float32)
    if kind == "names":
        np.savez(data, foo=x)
    elif kind == "shape":
        np.savez(data, x=np.zeros((3, 1, 3, 8, 16), np.float32))
    elif kind == "dtype":
        np.savez(data, x=x.astype(np.int32))
    elif kind == "nan":
        x[1, 0, 0, 0, 0] = np.inf
        np.savez(data, x=x)
    elif kind == "empty":
        np.savez(data, x=np.zeros((0, 1, 3, 16, 16), np.float32))
    res = CliRunner().invoke(
        main, ["quantize", str(conv_path), "-o", str(tmp_path / "q.onnx"), "--data", str(data)]
    )
    assert res.exit_code == 2, res.output
    assert res.output.strip().startswith("error:") or "error:" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "q.onnx").exists()


def test_plan_keeps_final_softmax_attention_and_affine_float() -> None:
    from onnxcomp.quantize._plan import name_nodes, plan_exclusions

    m = model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,4,8] x) => (float[N,4,8] y) {
            q = MatMul (x, wq)
            k = MatMul (x, wk)
            kt = Transpose <perm: ints = [0, 2, 1]> (k)
            s = MatMul (q, kt)
            a = Softmax <axis: int = -1> (s)
            o = MatMul (a, x)
            o2 = Mul (o, scale)
            y = Softmax <axis: int = -1> (o2)
        }
        """,
        {
            "wq": np.eye(8, dtype=np.float32),
            "wk": np.eye(8, dtype=np.float32),
            "scale": np.full(8, 0.5, np.float32),
        },
    )
    model = _to_ir(m)
    name_nodes(model)
    plan = {e.node: e for e in plan_exclusions(model, {})}
    ops = {n.name: n.op_type for n in model.graph}
    kept = sorted(ops[n] for n in plan)
    # s = q k^T, o = a x, the attention Softmax, the final Softmax and the affine Mul
    assert kept == ["MatMul", "MatMul", "Mul", "Softmax", "Softmax"]
    assert "wq" not in plan and not any(ops[n] == "Transpose" for n in plan)
    plan2 = plan_exclusions(model, {}, float_affine=False)
    assert "Mul" not in {ops[e.node] for e in plan2}
    r = quantize(
        model, [{"x": np.random.default_rng(0).standard_normal((1, 4, 8)).astype(np.float32)}], FAST
    )
    _check(r.model)


# ------------------------------------------------------------------ calibration batching


def _batch_spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the sizes of the batches every calibration pass runs."""
    from onnxcomp.quantize import _calibrate

    sizes: list[int] = []
    real = _calibrate.iter_batches

    def spy(samples, specs, batch_size):  # type: ignore[no-untyped-def]
        for b in real(samples, specs, batch_size):
            sizes.append(b.size)
            yield b

    monkeypatch.setattr(_calibrate, "iter_batches", spy)
    return sizes


def test_auto_batch_is_the_largest_power_of_two_that_fits_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from onnxcomp.data import open_data
    from onnxcomp.quantize._calibrate import _auto_batch

    model = _to_ir(conv_model())
    data = open_data(_samples((1, 3, 16, 16), 40), model)
    # two batches are alive at once: 2 * b * per_sample <= budget
    assert _auto_batch(data, 1000, 2**30) == 32
    assert _auto_batch(data, 1000, 2 * 8 * 1000) == 8
    assert _auto_batch(data, 1000, 2 * 8 * 1000 - 1) == 4
    assert _auto_batch(data, 1000, 10) == 1
    fixed = _to_ir(
        model_from_text(
            """
            <ir_version: 8, opset_import: ["" : 17]>
            g (float[1,4] x) => (float[1,4] y) { y = Relu (x) }
            """
        )
    )
    assert _auto_batch(open_data(_samples((1, 4), 4), fixed), 1, 2**30) == 1
    sizes = _batch_spy(monkeypatch)
    res = calibrate(model, data, method="entropy")
    assert res.samples == 40
    assert max(sizes) == 32 and sum(sizes) == 1 + 40  # the probe sample, then 32 + 8


def test_auto_batch_falls_back_to_one_when_the_model_rejects_stacked_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # declared batch axis dynamic, but a Reshape hard-codes batch 1
    m = model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,4] x) => (float[1,4] y) {
            h = Reshape (x, shape)
            y = Relu (h)
        }
        """,
        {"shape": np.array([1, 4], dtype=np.int64)},
    )
    from onnxcomp.data import open_data

    model = _to_ir(m)
    samples = _samples((1, 4), 13, name="x")
    allx = np.concatenate([s["x"] for s in samples])
    for method in ("minmax", "percentile"):
        res = calibrate(model, open_data(samples, model), method=method)
        one = calibrate(model, open_data(samples, model), method=method, batch_size=1)
        assert res.samples == one.samples == 13
        assert res.ranges == one.ranges
    assert res.ranges["x"].lo >= allx.min() and res.ranges["h"].hi <= allx.max()
    with pytest.raises(DataError):  # an explicit batch size is not second-guessed
        calibrate(model, open_data(samples, model), method="minmax", batch_size=4)


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
def test_one_pass_growing_histograms_match_two_pass_fixed_grid(method: str) -> None:
    """One pass (grids grow as the range grows) vs min/max first (grid fixed): same ranges
    up to the bin width of the coarser grid."""
    from onnxcomp.data import open_data

    model = _to_ir(conv_model())
    rng = np.random.default_rng(3)
    # growing scale: later samples widen the range, so the one-pass grids re-bin
    samples = [
        {"x": (rng.standard_normal((1, 3, 16, 16)) * (1 + i)).astype(np.float32)} for i in range(24)
    ]
    data = open_data(samples, model)
    one = calibrate(model, data, method=method, batch_size=4, memory_budget=2**30)
    per_tensor = 3 * 16 * 16 * 4 * 4  # bytes of the smallest activation at batch 4
    two = calibrate(model, data, method=method, batch_size=4, memory_budget=2 * per_tensor)
    assert one.ranges.keys() == two.ranges.keys()
    for n, r in one.ranges.items():
        t = two.ranges[n]
        # the one-pass grid is at most 2x coarser (alignment), both grids are power-of-two
        span = max(abs(t.lo), abs(t.hi), abs(r.lo), abs(r.hi))
        tol = 4 * 2.0 ** np.ceil(np.log2(2 * span / 2046)) + 1e-6
        assert abs(r.lo - t.lo) <= tol and abs(r.hi - t.hi) <= tol, (n, r, t)


def test_calibration_reduction_error_in_the_worker_thread_propagates() -> None:
    from onnxcomp.data import open_data
    from onnxcomp.quantize._calibrate import _Pass
    from onnxcomp.runtime import ModelRunner

    model = _to_ir(conv_model())
    data = open_data(_samples((1, 3, 16, 16), 6), model)
    seen: list[int] = []

    def visit(values: dict, size: int) -> None:  # type: ignore[type-arg]
        seen.append(size)
        if len(seen) == 2:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _Pass(data, 2, None, [0, 0]).run(ModelRunner(model), visit)
    assert seen == [2, 2]


def test_double_buffered_calibration_equals_plain_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs written into two alternating buffer sets give the ranges of plain runs
    (and a bound run that fails falls back to plain runs)."""
    from onnxcomp.data import open_data
    from onnxcomp.quantize import _calibrate

    model = _to_ir(conv_model())
    rng = np.random.default_rng(5)
    samples = [
        {"x": (rng.standard_normal((1, 3, 16, 16)) * (1 + i % 5)).astype(np.float32)}
        for i in range(23)  # 5 full batches of 4 and a partial one (plain run)
    ]
    real = _calibrate._StatsRunner.run_bound
    bound: list[int] = []

    def spy(self, feed, buffers):  # type: ignore[no-untyped-def]
        bound.append(next(iter(feed.values())).shape[0])
        return real(self, feed, buffers)

    monkeypatch.setattr(_calibrate._StatsRunner, "run_bound", spy)
    with_binding = {
        m: calibrate(model, open_data(samples, model), method=m, batch_size=4)
        for m in ("minmax", "entropy")
    }
    assert bound and set(bound) == {4}

    def fail(self, feed, buffers):  # type: ignore[no-untyped-def]
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(_calibrate._StatsRunner, "run_bound", fail)
    for m, res in with_binding.items():
        plain = calibrate(model, open_data(samples, model), method=m, batch_size=4)
        assert plain.ranges == res.ranges and plain.samples == res.samples == 23


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_faster_ort_helpers_write_byte_identical_models(
    monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """The same-result replacements of ORT's quadratic helpers change nothing written."""
    import contextlib

    from onnxruntime.quantization import onnx_model, quant_utils

    from onnxcomp.quantize import _ort

    model = _to_ir(conv_model())
    data = _samples((1, 3, 16, 16), 4)
    from onnxcomp.data import open_data

    cal = calibrate(model, open_data(data, model), method="minmax")
    opts = _ort.OrtOptions(format=fmt, per_channel=True)
    fast = io.to_proto(_ort.quantize_static_ort(model, cal.ranges, opts, cal.dtypes))
    # restored afterwards
    assert quant_utils.find_by_name.__module__ == "onnxruntime.quantization.quant_utils"
    assert onnx_model.ONNXModel.replace_input_of_all_nodes.__module__.startswith("onnxruntime")
    monkeypatch.setattr(_ort, "_linear_time_helpers", contextlib.nullcontext)
    plain = io.to_proto(_ort.quantize_static_ort(model, cal.ranges, opts, cal.dtypes))
    assert fast.SerializeToString() == plain.SerializeToString()


def test_everything_excluded_is_an_error_not_a_bigger_copy() -> None:
    from onnxcomp.errors import UnsupportedModelError

    model = _to_ir(conv_model())
    data = _samples((1, 3, 16, 16), 4)
    with pytest.raises(UnsupportedModelError, match="every quantizable node stays float"):
        quantize(
            model,
            data,
            QuantizeConfig(
                latency_repeats=0, exclude=("Conv", "Gemm", "Relu", "GlobalAveragePool", "Flatten")
            ),
        )


def test_float16_model_quantizes_with_a_float16_interface() -> None:
    """int8 kernels need float32 scales: inside becomes float32, the interface stays float16."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float16)
    g = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("Cast", ["r"], ["h"], to=TensorProto.FLOAT16, name="cast"),
            helper.make_node("Mul", ["h", "k"], ["y"], name="mul"),
        ],
        "fp16",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 8, 16, 16])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.float16(2.0), "k")],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto, full_check=True)
    data = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float16)} for _ in range(8)]
    r = quantize(_to_ir(proto), data, FAST)
    sess = _check(r.model)
    out = io.to_proto(r.model)
    assert [i.type.tensor_type.elem_type for i in out.graph.input] == [TensorProto.FLOAT16]
    assert [o.type.tensor_type.elem_type for o in out.graph.output] == [TensorProto.FLOAT16]
    assert r.report.quantized_nodes > 0 and "QuantizeLinear" in _ops(r.model)
    assert any("float16 model" in w for w in r.report.warnings)
    ref = _run(proto, data[0])[0].astype(np.float32)
    got = sess.run(None, data[0])[0]
    assert got.dtype == np.float16 and _cos(ref, got.astype(np.float32)) > 0.999
