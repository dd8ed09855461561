from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from conftest import conv_model, model_from_text

from onnxcomp import io
from onnxcomp.analysis import inspect_model


def _load(proto: onnx.ModelProto, tmp_path: Path, **kw) -> object:
    p = tmp_path / "m.onnx"
    onnx.save(proto, p)
    return io.load(p, lift_constants=False, **kw)


def test_conv_stack_macs_match_hand_computation(tmp_path: Path) -> None:
    m = _load(conv_model(cin=3, c1=8, c2=6, hw=16), tmp_path)
    info = inspect_model(m)
    conv1 = 16 * 16 * 8 * (3 * 3 * 3)  # output 8x16x16, each 3*3*3 MACs
    conv2 = 7 * 7 * 6 * (8 * 3 * 3)  # stride 2, no pad: (16-3)//2+1 = 7
    gemm = 10 * 6
    assert info.macs_by_op == {"Conv": conv1 + conv2, "Gemm": gemm}
    assert info.macs == conv1 + conv2 + gemm
    assert info.params == 8 * 27 + 8 + 6 * 72 + 60 + 10
    assert info.assumptions and "taken as 1" in info.assumptions[0]
    assert info.op_histogram == {"Conv": 2, "Relu": 1, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1}
    big = inspect_model(m, shapes={"x": (4, 3, 16, 16)})
    assert big.macs == 4 * (conv1 + conv2 + gemm)
    assert info.largest_layers[0].op_type == "Conv" and info.largest_layers[0].macs == conv1


def test_grouped_transpose_matmul_and_constant_params(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,4,5,5] x, float[2,3,8] a) => (float[1,2,10,10] y, float[2,3,6] z) {
        d = Conv <group = 4, kernel_shape = [3,3], pads = [1,1,1,1]> (x, Wd)
        y = ConvTranspose <strides = [2,2], kernel_shape = [2,2], group = 2> (d, Wt)
        w = Constant <value = float[8,6] {0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0}> ()
        z = MatMul (a, w)
    }
    """
    proto = model_from_text(
        text,
        {
            "Wd": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
            "Wt": rng.standard_normal((4, 1, 2, 2)).astype(np.float32),
        },
    )
    info = inspect_model(_load(proto, tmp_path))
    depthwise = 4 * 5 * 5 * 9
    transpose = (4 * 5 * 5) * (1 * 2 * 2)
    matmul = 2 * 3 * 6 * 8
    assert info.macs_by_op == {"Conv": depthwise, "ConvTranspose": transpose, "MatMul": matmul}
    assert info.constant_node_params == 48
    assert info.params == 36 + 16 + 48
    assert not info.assumptions


def test_unknown_shapes_are_reported_not_guessed(tmp_path: Path) -> None:
    proto = conv_model()
    proto.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    proto.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    m = _load(proto, tmp_path)
    info = inspect_model(m)
    assert info.unknown_mac_nodes
    fixed = inspect_model(m, shapes={"x": (1, 3, 16, 16)})
    assert not fixed.unknown_mac_nodes and fixed.macs == inspect_model(_load(conv_model(), tmp_path)).macs
