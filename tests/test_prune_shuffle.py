"""Channel shuffle (Reshape -> Transpose -> Reshape) between grouped convolutions, as in ShuffleNet."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper
from test_prune import check_pruned

from onnxcomp.prune import PruneConfig, plan_pruning


def shuffle_net(g: int, m: int, style: str = "explicit", seed: int = 0) -> onnx.ModelProto:
    """Two ShuffleNet units: grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1, closed by a
    residual Add (unit 1) and a Concat with an average-pooled shortcut (unit 2).

    ``style`` picks the shuffle's shape constants: ``explicit`` ([0, g, m, 8, 8] / [0, g*m, 8, 8]),
    ``m_inferred`` ([0, g, -1, 8, 8] / [0, -1, 8, 8]) or ``g_inferred`` ([0, -1, m, 8, 8] / [0, g*m, 8, 8]).
    """
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    big_c, mid = 2 * g, g * m

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def conv(
        name: str,
        x: str,
        cin: int,
        cout: int,
        k: int,
        group: int = 1,
        bn: bool = True,
        relu: bool = False,
    ) -> str:
        w = const(
            f"{name}_w",
            (
                rng.standard_normal((cout, cin // group, k, k)) / np.sqrt(cin // group * k * k)
            ).astype(np.float32),
        )
        nodes.append(
            helper.make_node(
                "Conv",
                [x, w],
                [name],
                kernel_shape=[k, k],
                pads=[k // 2] * 4,
                group=group,
                name=name,
            )
        )
        y = name
        if bn:
            p = [
                rng.standard_normal(cout) * 0.5 + 1,
                rng.standard_normal(cout) * 0.1,
                rng.standard_normal(cout) * 0.1,
                rng.random(cout) + 0.5,
            ]
            ins = [const(f"{name}_bn{i}", a.astype(np.float32)) for i, a in enumerate(p)]
            nodes.append(
                helper.make_node("BatchNormalization", [y, *ins], [f"{name}_bn"], name=f"{name}_bn")
            )
            y = f"{name}_bn"
        if relu:
            nodes.append(helper.make_node("Relu", [y], [f"{y}_r"], name=f"{y}_r"))
            y = f"{y}_r"
        return y

    def shuffle(name: str, x: str) -> str:
        s1 = {
            "explicit": [0, g, m, 8, 8],
            "m_inferred": [0, g, -1, 8, 8],
            "g_inferred": [0, -1, m, 8, 8],
        }[style]
        s2 = [0, -1, 8, 8] if style == "m_inferred" else [0, mid, 8, 8]
        nodes.append(
            helper.make_node(
                "Reshape",
                [x, const(f"{name}_s1", np.array(s1, np.int64))],
                [f"{name}_a"],
                name=f"{name}_a",
            )
        )
        nodes.append(
            helper.make_node(
                "Transpose", [f"{name}_a"], [f"{name}_t"], perm=[0, 2, 1, 3, 4], name=f"{name}_t"
            )
        )
        nodes.append(
            helper.make_node(
                "Reshape",
                [f"{name}_t", const(f"{name}_s2", np.array(s2, np.int64))],
                [name],
                name=name,
            )
        )
        return name

    def unit(k: int, x: str, cin: int) -> str:
        a = conv(f"g1_{k}", x, cin, mid, 1, group=g, relu=True)
        s = shuffle(f"shuf{k}", a)
        d = conv(f"dw{k}", s, mid, mid, 3, group=mid)
        return conv(f"g2_{k}", d, mid, big_c, 1, group=g)

    r = conv("stem", "x", 3, big_c, 3, relu=True)
    e = unit(1, r, big_c)
    nodes.append(helper.make_node("Add", [e, r], ["res"], name="res"))
    nodes.append(helper.make_node("Relu", ["res"], ["u"], name="u"))
    e2 = unit(2, "u", big_c)
    nodes.append(
        helper.make_node(
            "AveragePool", ["u"], ["pool"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="pool"
        )
    )
    nodes.append(helper.make_node("Concat", [e2, "pool"], ["cat"], axis=1, name="cat"))
    nodes.append(helper.make_node("Relu", ["cat"], ["cr"], name="cr"))
    nodes.append(helper.make_node("GlobalAveragePool", ["cr"], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat"))
    w = const("head_w", rng.standard_normal((5, 2 * big_c)).astype(np.float32))
    nodes.append(
        helper.make_node(
            "Gemm",
            ["flat", w, const("head_b", np.zeros(5, np.float32))],
            ["y"],
            transB=1,
            name="head",
        )
    )
    graph = helper.make_graph(
        nodes,
        "shufflenet",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def _const(model: ir.Model, node: str, index: int) -> np.ndarray:
    n = next(n for n in model.graph if n.name == node)
    v = n.inputs[index]
    assert v is not None and v.const_value is not None
    return v.const_value.numpy()


@pytest.mark.parametrize(
    ("g", "m", "style", "m_after"),
    [
        (2, 6, "explicit", 4),  # units j in 2 whole blocks of the consumer: 2 of 3 kept per block
        (2, 5, "m_inferred", 3),  # j = 2 straddles both blocks evenly (a free unit)
        (3, 6, "g_inferred", 3),
        (4, 6, "explicit", 4),  # j = 1 and j = 4 straddle; tied together they are balanced
    ],
)
def test_shufflenet_units_prune_through_the_shuffle(
    g: int, m: int, style: str, m_after: int
) -> None:
    model = ir.serde.deserialize_model(shuffle_net(g, m, style))
    pruned, plan = check_pruned(model, PruneConfig(ratio=0.5, latency_repeats=0))
    for k in (1, 2):
        gp = next(gp for gp in plan.groups if f"g1_{k}" in gp.spaces)
        assert gp.pruned, gp.reasons
        removed = np.array(gp.removed[f"g1_{k}"])
        # a removed channel i*m + j takes every i with it (same j in each of the g blocks)
        js = sorted(set((removed % m).tolist()))
        assert sorted(removed.tolist()) == sorted(i * m + j for i in range(g) for j in js)
        assert m - len(js) == m_after
        mid = g * m_after
        s1, s2 = _const(pruned, f"shuf{k}_a", 1), _const(pruned, f"shuf{k}", 1)
        assert s1[1] in (g, -1) and s1[2] in (m_after, -1) and s2[1] in (mid, -1)
        dw = next(n for n in pruned.graph if n.name == f"dw{k}")
        assert dw.attributes["group"].as_int() == mid
        assert _const(pruned, f"dw{k}", 1).shape == (mid, 1, 3, 3)
        assert _const(pruned, f"g1_{k}", 1).shape[0] == mid
        g2 = _const(pruned, f"g2_{k}", 1)
        assert g2.shape[1] == mid // g
    assert plan.macs_after < 0.8 * plan.macs_before


def test_unbalanced_shuffle_is_left_alone_with_reason() -> None:
    # g = 3, m = 4: units j = 1 and j = 2 straddle the consumer's groups unevenly: no common J
    # other than all of them keeps the grouped conv after the shuffle balanced
    model = ir.serde.deserialize_model(shuffle_net(3, 4))
    pruned, plan = check_pruned(model, PruneConfig(ratio=0.5, latency_repeats=0))
    gp = next(gp for gp in plan.groups if "g1_1" in gp.spaces)
    assert not gp.pruned and "straddle" in gp.reasons[0]
    assert any(g.pruned for g in plan.groups)  # the residual channels still are


@pytest.mark.parametrize("ratio", [0.25, 0.75])
def test_shuffle_plan_is_plain_data_and_keeps_min_channels(ratio: float) -> None:
    model = ir.serde.deserialize_model(shuffle_net(2, 6))
    plan = plan_pruning(model, PruneConfig(ratio=ratio, min_channels=4))
    for gp in plan.groups:
        if gp.pruned:
            assert gp.kept >= 1
    check_pruned(model, PruneConfig(ratio=ratio, latency_repeats=0, global_ranking=True))


def test_plan_breaking_group_balance_is_rejected() -> None:
    from onnxcomp.errors import InvalidInputError
    from onnxcomp.prune import PrunePlan, apply_plan

    model = ir.serde.deserialize_model(shuffle_net(2, 6))
    plan = plan_pruning(model, PruneConfig(ratio=0.5))
    gp = next(gp for gp in plan.groups if "g1_1" in gp.spaces)
    d = plan.to_dict()
    g = next(x for x in d["groups"] if x["id"] == gp.id)
    g["removed"]["g1_1"] = [0, 6]  # j = 0 of both halves: tied, but unbalances the consumer's groups
    with pytest.raises(InvalidInputError, match="unequal channel counts"):
        apply_plan(model, PrunePlan.from_dict(d))
