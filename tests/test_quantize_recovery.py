"""Accuracy recovery: fallback to float, cross-layer equalization, bias correction, sensitivity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from conftest import model_from_text

from onnxcomp import io
from onnxcomp.cli import main
from onnxcomp.quantize import QuantizeConfig, quantize
from onnxcomp.quantize._recovery import equalize


def _ir(m: onnx.ModelProto) -> ir.Model:
    return ir.serde.deserialize_model(m)


def _run(model: ir.Model | onnx.ModelProto, feed: dict[str, np.ndarray]) -> np.ndarray:
    proto = model if isinstance(model, onnx.ModelProto) else io.to_proto(model)
    onnx.checker.check_model(proto, full_check=True)
    s = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feed)[0]


def sensitive_model() -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """One deliberately sensitive layer: channel 0 of h2 is 2000x the others and unused
    downstream, so one per-tensor scale for h2 erases every channel the output depends on."""
    rng = np.random.default_rng(0)
    scale = np.ones(16, np.float32)
    scale[0] = 2000.0
    w2 = rng.standard_normal((16, 4)).astype(np.float32)
    w2[0] = 0.0
    m = model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,16] x) => (float[N,4] y) {
            h = MatMul (x, W1)
            h2 = Mul (h, s)
            z = MatMul (h2, W2)
            y = Relu (z)
        }
        """,
        {"W1": rng.standard_normal((16, 16)).astype(np.float32), "s": scale, "W2": w2},
    )
    data = [{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(32)]
    return m, data


def test_fallback_meets_target_and_reports_nodes() -> None:
    m, data = sensitive_model()
    plain = quantize(_ir(m), data, QuantizeConfig(latency_repeats=0, float_affine=False))
    assert plain.report.verify.min_cosine < 0.5
    r = quantize(
        _ir(m),
        data,
        QuantizeConfig(latency_repeats=0, float_affine=False, target_cosine=0.97, sensitivity=True),
    )
    assert r.report.target_met is True
    assert r.report.verify.min_cosine >= 0.97
    # the sensitive tensor h2 stays float: its producer (Mul) and consumer (MatMul) are reported
    mul = next(n.name for n in r.model.graph if n.op_type == "Mul")
    assert mul in r.report.fallback
    assert len(r.report.fallback) <= 3
    assert (
        r.report.sensitivity and r.report.sensitivity[0].sqnr_db <= r.report.sensitivity[-1].sqnr_db
    )
    feed = {"x": np.concatenate([d["x"] for d in data])}
    ref, out = _run(m, feed), _run(r.model, feed)
    cos = float((ref * out).sum() / np.linalg.norm(ref) / np.linalg.norm(out))
    assert cos >= 0.97


def test_fallback_on_accuracy_drop() -> None:
    m, data = sensitive_model()
    ref = _run(m, {"x": np.concatenate([d["x"] for d in data])})
    labelled = [{"x": d["x"], "label": np.int64(ref[i].argmax())} for i, d in enumerate(data)]
    r = quantize(_ir(m), data, QuantizeConfig(latency_repeats=0, max_drop=0.05), eval_data=labelled)
    assert r.report.target_met is True
    v = r.report.verify
    assert v.reference_accuracy == 1.0 and v.reference_accuracy - v.candidate_accuracy <= 0.05


def _cle_model() -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """Conv -> Relu -> depthwise -> Relu -> pointwise, with channel ranges spanning 1000x."""
    rng = np.random.default_rng(0)
    sc = (10.0 ** np.linspace(-2, 1, 8)).astype(np.float32)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * sc.reshape(8, 1, 1, 1)
    w2 = rng.standard_normal((8, 1, 3, 3)).astype(np.float32) / sc.reshape(8, 1, 1, 1)
    m = model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,3,16,16] x) => (float[N,6,16,16] y) {
            a = Conv <pads = [1,1,1,1], kernel_shape = [3,3]> (x, W1, B1)
            ar = Relu (a)
            d = Conv <pads = [1,1,1,1], kernel_shape = [3,3], group = 8> (ar, W2)
            dr = Relu (d)
            y = Conv <kernel_shape = [1,1]> (dr, W3)
        }
        """,
        {
            "W1": w1,
            "B1": (rng.standard_normal(8) * 0.1).astype(np.float32),
            "W2": w2,
            "W3": rng.standard_normal((6, 8, 1, 1)).astype(np.float32),
        },
    )
    data = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(16)]
    return m, data


def test_equalization_is_exact_in_float_and_rescues_int8() -> None:
    m, data = _cle_model()
    eq = _ir(m)
    pairs = equalize(eq)
    assert len(pairs) == 2
    x = data[0]
    ref = _run(m, x)
    np.testing.assert_allclose(_run(eq, x), ref, atol=1e-4 * np.abs(ref).max())
    # channel ranges of conv 1 weights are equalized
    w1 = next(n for n in eq.graph if n.op_type == "Conv").inputs[1].const_value.numpy()
    r = np.abs(w1).reshape(8, -1).max(axis=1)
    assert r.max() / r.min() < 30  # was 1000
    base = quantize(_ir(m), data, QuantizeConfig(latency_repeats=0, per_channel=False))
    cle = quantize(
        _ir(m), data, QuantizeConfig(latency_repeats=0, per_channel=False, equalize=True)
    )
    assert base.report.verify.min_cosine < 0.9
    assert cle.report.verify.min_cosine > 0.99
    assert cle.report.equalized


def test_equalization_skips_relu6() -> None:
    """Clip (ReLU6) is not positively homogeneous: that pair must not be rescaled."""
    from onnxcomp.quantize._plan import name_nodes

    m, _ = _cle_model()
    g = _ir(m)
    name_nodes(g)
    relu = next(n for n in g.graph if n.op_type == "Relu")
    relu.op_type = "Clip"
    first = next(n for n in g.graph if n.op_type == "Conv")
    pairs = equalize(g)
    assert pairs and not any(p.startswith(first.name + "->") for p in pairs)


def test_bias_correction_reduces_mean_shift() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32) * 0.05
    w[0, 0, 0, 0] = 3.0  # one huge weight: coarse per-tensor step for all others
    m = model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,16,8,8] x) => (float[N,8,6,6] y) {
            y = Conv <kernel_shape = [3,3]> (x, W, B)
        }
        """,
        {"W": w, "B": np.zeros(8, np.float32)},
    )
    data = [{"x": (rng.standard_normal((1, 16, 8, 8)) + 4.0).astype(np.float32)} for _ in range(32)]
    feed = {"x": np.concatenate([d["x"] for d in data])}
    ref = _run(m, feed)
    shifts = {}
    for bc in (False, True):
        r = quantize(
            _ir(m), data, QuantizeConfig(latency_repeats=0, per_channel=False, bias_correction=bc)
        )
        out = _run(r.model, feed)
        shifts[bc] = np.abs((out - ref).mean(axis=(0, 2, 3))).mean()
        if bc:
            assert r.report.bias_corrected
    assert shifts[True] < 0.5 * shifts[False]


def test_cli_target_cosine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m, data = sensitive_model()
    src = tmp_path / "s.onnx"
    onnx.save(m, src)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=np.stack([d["x"] for d in data]))
    res = CliRunner().invoke(
        main,
        [
            "quantize",
            str(src),
            "-o",
            str(tmp_path / "q.onnx"),
            "--data",
            str(npz),
            "--target-cosine",
            "0.97",
            "--repeats",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "fallback" in res.output and "target met" in res.output


# ---------------------------------------------------------------- latency guard


def _dw_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    return model_from_text(
        """
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[N,4,8,8] x) => (float[N,8,8,8] y) {
            a = Conv <group: int = 1, pads: ints = [1, 1, 1, 1]> (x, w1, b1)
            h = HardSwish (a)
            d = Conv <group: int = 8, pads: ints = [1, 1, 1, 1]> (h, wd, bd)
            s = Sigmoid (d)
            y = Conv <group: int = 1> (s, w2, b2)
        }
        """,
        {
            "w1": rng.standard_normal((8, 4, 3, 3)).astype(np.float32) * 0.3,
            "b1": rng.standard_normal(8).astype(np.float32) * 0.1,
            "wd": rng.standard_normal((8, 1, 3, 3)).astype(np.float32) * 0.3,
            "bd": rng.standard_normal(8).astype(np.float32) * 0.1,
            "w2": rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.3,
            "b2": rng.standard_normal(8).astype(np.float32) * 0.1,
        },
    )


def _quantized_depthwise(m: ir.Model) -> int:
    n = 0
    for node in m.graph:
        if node.op_type == "Conv" and node.attributes.get("group") is not None:
            if node.attributes["group"].as_int() > 1:
                w = node.inputs[1].producer()
                n += int(w is not None and w.op_type == "DequantizeLinear")
    return n


def test_latency_guard_keeps_the_slow_depthwise_conv_float() -> None:
    calls: list[int] = []

    def fake(models: list[ir.Model]) -> list[float]:
        # float 10 ms; int8 5 ms, plus 10 ms per quantized depthwise conv
        calls.append(len(models))
        return [10.0] + [5.0 + 10.0 * _quantized_depthwise(m) for m in models[1:]]

    m = _dw_model()
    data = [
        {"x": np.random.default_rng(i).standard_normal((1, 4, 8, 8)).astype(np.float32)}
        for i in range(8)
    ]
    r = quantize(
        ir.serde.deserialize_model(m), data, QuantizeConfig(latency_repeats=0), latency_fn=fake
    )
    g = r.report.latency_guard
    assert g is not None and calls[0] == 2 and calls[-1] == 3 and len(calls) == 3
    assert g.base_ratio == pytest.approx(1.5)
    assert g.chosen == "depthwise" and g.ratio == pytest.approx(0.5) and g.pays
    assert [t.name for t in g.tried][0] == "depthwise"
    assert len(g.float_nodes) == 1 and _quantized_depthwise(r.model) == 0
    assert any("latency guard" in w for w in r.report.warnings)
    assert not any("consider not quantizing" in w for w in r.report.warnings)
    proto = io.to_proto(r.model)
    onnx.checker.check_model(proto, full_check=True)
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    a, b = ref.run(None, data[0])[0].ravel(), got.run(None, data[0])[0].ravel()
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99
    assert r.report.to_dict()["latency_guard"]["chosen"] == "depthwise"


def test_latency_guard_says_when_nothing_pays() -> None:
    def fake(models: list[ir.Model]) -> list[float]:
        return [1.0] + [2.0] * (len(models) - 1)

    data = [
        {"x": np.random.default_rng(i).standard_normal((1, 4, 8, 8)).astype(np.float32)}
        for i in range(4)
    ]
    r = quantize(
        ir.serde.deserialize_model(_dw_model()),
        data,
        QuantizeConfig(latency_repeats=0),
        latency_fn=fake,
    )
    g = r.report.latency_guard
    assert g.chosen == "base" and not g.pays and g.ratio == pytest.approx(2.0)
    assert {t.name for t in g.tried} >= {"depthwise", "mac-only"}
    assert any("int8 is slower than float on this machine" in w for w in r.report.warnings)
    assert _quantized_depthwise(r.model) == 1


def test_latency_guard_does_nothing_when_int8_is_faster() -> None:
    def fake(models: list[ir.Model]) -> list[float]:
        return [2.0] + [1.0] * (len(models) - 1)

    data = [{"x": np.ones((1, 4, 8, 8), np.float32)}]
    r = quantize(
        ir.serde.deserialize_model(_dw_model()),
        data,
        QuantizeConfig(latency_repeats=0),
        latency_fn=fake,
    )
    assert r.report.latency_guard.tried == [] and r.report.latency_guard.pays


def test_guard_variants_are_cumulative_and_deduplicated() -> None:
    from onnxcomp.quantize._latency import variants

    model = ir.serde.deserialize_model(_dw_model())
    from onnxcomp.quantize._plan import name_nodes

    name_nodes(model)
    vs = dict(variants(model, set()))
    ops = {n.name: n.op_type for n in model.graph}
    assert [ops[n] for n in vs["depthwise"]] == ["Conv"]
    # the 1x1 conv of 8 inputs (8 MACs per output) and the 4x3x3 conv (36) are tiny too
    assert len(vs["tiny"]) == 3
    assert sorted(ops[n] for n in vs["mac-only"]) == ["HardSwish", "Sigmoid"]


def test_guard_evaluates_fidelity_of_faster_variants_only_fastest_first() -> None:
    """Variants no faster than the base get no evaluation run; the fastest that meets wins."""
    from onnxcomp.quantize._latency import guard, variants
    from onnxcomp.quantize._plan import name_nodes

    model = ir.serde.deserialize_model(_dw_model())
    name_nodes(model)
    cands = dict(variants(model, set()))
    built: dict[int, str] = {}

    def build(extra: Sequence[str]) -> ir.Model:
        m = model.clone()
        name = next((k for k, v in cands.items() if list(v) == list(extra)), "base")
        built[id(m)] = name
        return m

    # ms: float 10, base int8 15; "tiny" fastest but unfaithful, "depthwise" next, rest slow
    speed = {"base": 15.0, "tiny": 6.0, "depthwise": 8.0}
    evaluated: list[str] = []

    def latency(models: Sequence[ir.Model]) -> list[float]:
        return [10.0] + [speed.get(built.get(id(m), "base"), 20.0) for m in models[1:]]

    def fidelity(m: ir.Model) -> tuple[bool, float]:
        evaluated.append(built[id(m)])
        return built[id(m)] != "tiny", 0.9

    res = guard(
        float_model=model,
        qmodel=build(()),
        build=build,
        kept=(),
        skip=set(),
        latency=latency,
        fidelity=fidelity,
    )
    assert evaluated == ["tiny", "depthwise"]
    assert res.chosen == "depthwise" and res.ratio == pytest.approx(0.8)
    by_name = {t.name: t for t in res.tried}
    assert set(by_name) == set(cands)
    assert by_name["tiny"].meets_target is False and by_name["depthwise"].meets_target
    assert all(by_name[n].cosine is None for n in cands if n not in ("tiny", "depthwise"))


def test_guard_leaves_a_ratio_within_the_noise_margin() -> None:
    from onnxcomp.quantize._latency import guard

    model = ir.serde.deserialize_model(_dw_model())
    calls: list[int] = []

    def latency(models: Sequence[ir.Model]) -> list[float]:
        calls.append(len(models))
        return [10.0, 10.2]

    res = guard(
        float_model=model,
        qmodel=model,
        build=lambda extra: model,
        kept=(),
        skip=set(),
        latency=latency,
        fidelity=lambda m: (True, 1.0),
    )
    assert calls == [2] and res.tried == [] and res.chosen == "base" and not res.pays
