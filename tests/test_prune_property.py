"""Property tests: random conv / residual / concat / grouped graphs prune to valid models
that equal their masked reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from onnxcomp import io
from onnxcomp.prune import PruneConfig, masked_reference, prune
from onnxcomp.runtime import create_session

BLOCKS = ("conv", "residual", "concat", "grouped", "depthwise", "split", "shuffle")


def build(blocks: list[tuple[str, int]], seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    k = [0]

    def name(p: str) -> str:
        k[0] += 1
        return f"{p}{k[0]}"

    def const(arr: np.ndarray) -> str:
        n = name("w")
        inits.append(numpy_helper.from_array(arr.astype(np.float32), n))
        return n

    def conv(x: str, cin: int, cout: int, group: int = 1, bn: bool = False) -> str:
        y = name("c")
        nodes.append(helper.make_node("Conv", [x, const(rng.standard_normal((cout, cin // group, 3, 3))), const(rng.standard_normal(cout))], [y], pads=[1, 1, 1, 1], group=group, name=y))
        if bn:
            b = name("bn")
            nodes.append(helper.make_node("BatchNormalization", [y, const(rng.standard_normal(cout)), const(rng.standard_normal(cout)), const(rng.standard_normal(cout)), const(np.abs(rng.standard_normal(cout)) + 0.5)], [b], name=b))
            y = b
        r = name("r")
        nodes.append(helper.make_node("Relu", [y], [r], name=r))
        return r

    x, c = "x", 3
    for kind, width in blocks:
        if kind == "conv":
            x, c = conv(x, c, width, bn=True), width
        elif kind == "residual":
            a = conv(x, c, width)
            b = conv(a, width, width, bn=True)
            s = name("add")
            nodes.append(helper.make_node("Add", [a, b], [s], name=s))
            x, c = s, width
        elif kind == "concat":
            a = conv(x, c, width)
            b = conv(x, c, width + 2)
            s = name("cat")
            nodes.append(helper.make_node("Concat", [a, b, x], [s], axis=1, name=s))
            x, c = s, 2 * width + 2 + c
        elif kind == "grouped":
            g = 2
            a = conv(x, c, 2 * width)
            x, c = conv(a, 2 * width, 2 * width, group=g, bn=True), 2 * width
        elif kind == "depthwise":
            a = conv(x, c, width)
            x, c = conv(a, width, 2 * width, group=width), 2 * width
        elif kind == "split":
            a = conv(x, c, 2 * width)
            s1, s2 = name("s"), name("s")
            nodes.append(helper.make_node("Split", [a], [s1, s2], axis=1, name=name("split")))
            m = name("mul")
            nodes.append(helper.make_node("Mul", [s1, s2], [m], name=m))
            x, c = m, width
        elif kind == "shuffle":  # ShuffleNet unit: grouped -> shuffle -> depthwise -> grouped, residual
            g = 2 + width % 2
            mid = g * width
            a = conv(x, c, mid, group=g if c % g == 0 else 1)
            s1, t, s2 = name("s"), name("t"), name("s")
            shp1 = name("shape")
            inits.append(numpy_helper.from_array(np.array([0, g, width, 8, 8], np.int64), shp1))
            shp2 = name("shape")
            inits.append(numpy_helper.from_array(np.array([0, -1, 8, 8], np.int64), shp2))
            nodes.append(helper.make_node("Reshape", [a, shp1], [s1], name=s1))
            nodes.append(helper.make_node("Transpose", [s1], [t], perm=[0, 2, 1, 3, 4], name=t))
            nodes.append(helper.make_node("Reshape", [t, shp2], [s2], name=s2))
            d = conv(s2, mid, mid, group=mid)
            e = conv(d, mid, mid, group=g, bn=True)
            s = name("add")
            nodes.append(helper.make_node("Add", [e, a], [s], name=s))
            x, c = s, mid
    p = name("gap")
    nodes.append(helper.make_node("GlobalAveragePool", [x], [p], name=p))
    f = name("flat")
    nodes.append(helper.make_node("Flatten", [p], [f], name=f))
    nodes.append(helper.make_node("Gemm", [f, const(rng.standard_normal((5, c))), const(rng.standard_normal(5))], ["y"], transB=1, name="head"))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 5])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    blocks=st.lists(st.tuples(st.sampled_from(BLOCKS), st.integers(2, 9)), min_size=1, max_size=4),
    ratio=st.floats(0.0, 0.95),
    round_to=st.sampled_from([1, 1, 2, 4]),
    glob=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_random_graphs_prune_to_masked_reference(blocks, ratio, round_to, glob, seed) -> None:
    model = ir.serde.deserialize_model(build(blocks, seed))
    cfg = PruneConfig(ratio=ratio, round_to=round_to, global_ranking=glob, latency_repeats=0)
    result = prune(model, cfg)
    onnx.checker.check_model(io.to_proto(result.model), full_check=True)
    plan = result.plan
    for g in plan.groups:
        assert g.kept >= 1
        if g.pruned:
            assert g.kept <= g.channels
    if plan.removed_channels:
        assert plan.macs_after < plan.macs_before
        ref = masked_reference(model, plan)
        feed = {"x": np.random.default_rng(seed).standard_normal((2, 3, 8, 8)).astype(np.float32)}
        a = create_session(ref).run(None, feed)[0]
        b = create_session(result.model).run(None, feed)[0]
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * max(1.0, float(np.abs(a).max())))
