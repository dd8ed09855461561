"""The label graph: log-softmax / top-k / tail mass computed by ONNX Runtime."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import array_shapes as st_shapes
from hypothesis.extra.numpy import arrays as st_arrays
from hypothesis.strategies import integers as st_integers

from onnxcomp.distill import LabelConfig, label, open_store
from onnxcomp.distill._graph import build_label_graph, supports_label_graph
from onnxcomp.runtime import create_session
from conftest import model_from_text

sys.path.insert(0, str(Path(__file__).parent))
from test_distill import make_data, make_teacher, ref_logp, tree_digest  # noqa: E402

_SESSIONS: dict[tuple[str, int, int | None], tuple[object, list[str]]] = {}


def _identity(dtype: str, classes: int | None, opset: int = 17) -> ir.Model:
    c = "C" if classes is None else str(classes)
    decl = f"{dtype}[N,{c}] z" if classes is not None else f"{dtype}[N,{c}] z"
    text = f"""
    <ir_version: 8, opset_import: ["" : {opset}]>
    g ({decl}) => ({dtype}[N,{c}] y) {{
        h = Identity (z)
        y = Softmax <axis = -1> (h)
    }}
    """
    return ir.from_proto(model_from_text(text, {}))


def _session(dtype: str, classes: int | None, k: int | None) -> tuple[object, list[str]]:
    key = (dtype, -1 if classes is None else classes, k)
    if key not in _SESSIONS:
        g = build_label_graph(_identity(dtype, classes), "h", k)
        _SESSIONS[key] = (create_session(g.model, threads=1), g.outputs)
    return _SESSIONS[key]


def test_label_graph_structure() -> None:
    m = _identity("float", 7)
    g = build_label_graph(m, "h", 3)
    proto = ir.serde.serialize_model(g.model)
    onnx.checker.check_model(onnx.shape_inference.infer_shapes(proto), full_check=True)
    ops = [n.op_type for n in g.model.graph]
    assert "Softmax" not in ops  # the teacher's own head is not computed
    assert ops.count("TopK") == 1 and "Reshape" not in ops  # [N, 7] declared: no reshape
    assert [str(v.name) for v in g.model.graph.outputs][:1] == ["h"]
    assert [n.op_type for n in m.graph] == ["Identity", "Softmax"]  # teacher untouched
    assert not supports_label_graph(_identity("float", 7, opset=12))


@settings(max_examples=50, deadline=None)
@given(
    st_arrays(
        np.int8,
        st_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
        elements=st_integers(-6, 6),
    ),
    st_integers(1, 45),
)
def test_graph_topk_matches_brute_force(z: np.ndarray, k: int) -> None:
    # many ties (small integers): TopK must pick the lower index, like the numpy path
    zf = z.astype(np.float32) * 1.5
    sess, names = _session("float", None, k)  # undeclared class count: K = min(k, C) in-graph
    shape, logp, idx, tail = sess.run(names, {"z": zf})  # type: ignore[attr-defined]
    kk = min(k, z.shape[1])
    assert list(shape) == list(z.shape)
    ref = ref_logp(zf)
    order = np.argsort(-ref, axis=1, kind="stable")[:, :kk]
    np.testing.assert_array_equal(idx, order)
    assert logp.dtype == np.float16 and tail.dtype == np.float32
    np.testing.assert_allclose(logp, np.take_along_axis(ref, order, axis=1), rtol=1e-3, atol=1e-3)
    p = np.exp(ref)
    np.put_along_axis(p, order, 0.0, axis=1)
    np.testing.assert_allclose(tail.reshape(-1), p.sum(1), rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("dtype", ["float16", "double"])
def test_graph_other_logit_dtypes(dtype: str) -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((9, 30)).astype(np.float16 if dtype == "float16" else np.float64)
    sess, names = _session(dtype, 30, 4)
    _, logp, idx, tail = sess.run(names, {"z": z})  # type: ignore[attr-defined]
    ref = ref_logp(z.astype(np.float64))
    order = np.argsort(-ref, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(logp, np.take_along_axis(ref, order, axis=1), rtol=1e-3, atol=1e-3)
    p = np.exp(ref)
    np.put_along_axis(p, order, 0.0, axis=1)
    np.testing.assert_allclose(tail.reshape(-1), p.sum(1), rtol=1e-6)
    dsess, dnames = _session(dtype, 30, None)
    _, dense = dsess.run(dnames, {"z": z})  # type: ignore[attr-defined]
    assert dense.dtype == np.float32
    np.testing.assert_allclose(dense, ref, rtol=1e-6, atol=1e-5)


def _opset12(src: Path, dst: Path) -> Path:
    m = onnx.load(src)
    m.opset_import[0].version = 12
    onnx.save(m, dst)
    return dst


@pytest.mark.parametrize("k", [None, 3])
def test_graph_store_equals_numpy_store(tmp_path: Path, k: int | None) -> None:
    teacher = make_teacher(tmp_path / "t.onnx")
    old = _opset12(teacher, tmp_path / "t12.onnx")  # too old for the label graph: numpy path
    data, x = make_data(tmp_path / "d.npz", n=40)
    cfg = LabelConfig(top_k=k, shard_size=16, batch_size=6)
    a = label(teacher, data, tmp_path / "a", cfg)
    b = label(old, data, tmp_path / "b", cfg)
    assert a.postprocess == "onnxruntime" and b.postprocess == "numpy"
    sa, sb = open_store(tmp_path / "a"), open_store(tmp_path / "b")
    rows = np.arange(40)
    if k is None:
        np.testing.assert_allclose(sa.log_probs(rows), sb.log_probs(rows), rtol=1e-6, atol=1e-5)
        return
    ia, la, ta = sa.topk(rows)
    ib, lb, tb = sb.topk(rows)
    np.testing.assert_array_equal(ia, ib)
    assert ia.dtype == ib.dtype == np.uint8
    np.testing.assert_allclose(la.astype(np.float64), lb.astype(np.float64), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ta, tb, rtol=2e-6)


def test_graph_workers_identical_with_default_threads(tmp_path: Path) -> None:
    # uint16 indices (300 classes), ORT's own thread count in each process
    teacher = make_teacher(tmp_path / "t.onnx", classes=300)
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((48, 16)).astype(np.float32))
    base = dict(top_k=7, shard_size=12, batch_size=5)
    r1 = label(teacher, tmp_path / "d.npz", tmp_path / "w1", LabelConfig(**base))  # type: ignore[arg-type]
    label(teacher, tmp_path / "d.npz", tmp_path / "w2", LabelConfig(workers=2, **base))  # type: ignore[arg-type]
    assert r1.postprocess == "onnxruntime"
    assert tree_digest(tmp_path / "w1") == tree_digest(tmp_path / "w2")
