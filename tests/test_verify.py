from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import conv_model
from onnx import numpy_helper

from onnxcomp import io
from onnxcomp.data import open_data
from onnxcomp.errors import InvalidInputError
from onnxcomp.metrics import FidelityAccumulator
from onnxcomp.verification import Gates, VerifyConfig, verify


def _perturbed(path: Path, out: Path, eps: float) -> Path:
    m = onnx.load(path)
    init = m.graph.initializer[0]
    w = numpy_helper.to_array(init)
    noise = np.random.default_rng(5).standard_normal(w.shape).astype(np.float32)
    init.CopyFrom(numpy_helper.from_array(w + eps * noise * np.abs(w).mean(), init.name))
    onnx.save(m, out)
    return out


def _data(path: Path, n: int = 24, labels: bool = False):
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((n, 3, 16, 16)).astype(np.float32)}
    if labels:
        arrays["label"] = np.arange(n) % 10
    p = path.parent / "data.npz"
    np.savez(p, **arrays)
    return open_data(p, io.load(path))


def test_self_verification_is_exact(conv_path: Path) -> None:
    report = verify(conv_path, conv_path, _data(conv_path), VerifyConfig(batch_size=5, latency_repeats=3))
    (o,) = report.outputs
    assert o.samples == 24
    assert o.cosine == 1.0 and o.max_abs_error == 0.0 and math.isinf(o.sqnr_db)
    assert o.top1_agreement == 1.0
    assert report.size_ratio == 1.0 and report.passed
    assert report.reference_latency is not None and report.reference_latency.median_ms > 0


def test_perturbed_copy_fails_gate(conv_path: Path, tmp_path: Path) -> None:
    cand = _perturbed(conv_path, tmp_path / "p.onnx", 1.0)
    cfg = VerifyConfig(latency_repeats=0, gates=Gates(min_cosine=0.9999, min_top1=0.99))
    report = verify(conv_path, cand, _data(conv_path, labels=True), cfg)
    assert not report.passed
    assert {g.name for g in report.gates if not g.passed} >= {"min_cosine"}
    assert report.outputs[0].cosine < 0.9999
    assert report.reference_accuracy is not None and report.candidate_accuracy is not None


def test_metrics_match_direct_numpy() -> None:
    rng = np.random.default_rng(7)
    ref = rng.standard_normal((10, 5)).astype(np.float32)
    cand = ref + 0.1 * rng.standard_normal((10, 5)).astype(np.float32)
    acc = FidelityAccumulator("y")
    for i in range(0, 10, 3):
        acc.update(ref[i : i + 3], cand[i : i + 3], batch=len(ref[i : i + 3]))
    r = acc.result()
    r64, c64 = ref.astype(np.float64).ravel(), cand.astype(np.float64).ravel()
    assert r.max_abs_error == pytest.approx(np.abs(r64 - c64).max())
    assert r.mean_abs_error == pytest.approx(np.abs(r64 - c64).mean())
    assert r.cosine == pytest.approx(r64 @ c64 / np.linalg.norm(r64) / np.linalg.norm(c64))
    assert r.sqnr_db == pytest.approx(10 * np.log10((r64**2).sum() / ((r64 - c64) ** 2).sum()))
    assert r.top1_agreement == pytest.approx((ref.argmax(1) == cand.argmax(1)).mean())
    per = [
        float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
        for a, b in zip(ref.astype(np.float64), cand.astype(np.float64))
    ]
    assert r.min_sample_cosine == pytest.approx(min(per))


def test_nonfinite_candidate_is_infinite_error() -> None:
    acc = FidelityAccumulator("y")
    acc.update(np.ones((1, 3), np.float32), np.array([[1, np.nan, 1]], np.float32))
    r = acc.result()
    assert math.isinf(r.max_abs_error) and r.cosine == 0.0


def test_gate_without_classifier_output_is_an_error(tmp_path: Path) -> None:
    text_model = conv_model()
    # make output non-classifier-like: [N, 10] -> reshape to [N, 10, 1]
    node = onnx.helper.make_node("Unsqueeze", ["y", "ax"], ["y3"])
    text_model.graph.node.append(node)
    text_model.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "ax"))
    del text_model.graph.output[:]
    text_model.graph.output.append(onnx.helper.make_tensor_value_info("y3", onnx.TensorProto.FLOAT, ["N", 10, 1]))
    p = tmp_path / "u.onnx"
    onnx.save(text_model, p)
    with pytest.raises(InvalidInputError, match="classifier-like"):
        verify(p, p, _data(p), VerifyConfig(latency_repeats=0, gates=Gates(min_top1=0.5)))


def test_gate_values_are_validated() -> None:
    with pytest.raises(InvalidInputError, match="min-cosine"):
        Gates(min_cosine=2.0)
