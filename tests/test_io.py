from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from conftest import conv_model, model_from_text, sha256

from onnxcomp import io
from onnxcomp.errors import InvalidInputError


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_round_trip_keeps_metadata_producer_opsets(conv_path: Path, tmp_path: Path) -> None:
    before = sha256(conv_path)
    m = io.load(conv_path)
    out = io.save(m, tmp_path / "out" / "copy.onnx")
    assert sha256(conv_path) == before
    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    assert {p.key: p.value for p in proto.metadata_props} == {"labels": "a,b,c", "author": "tests"}
    assert proto.producer_name == "tests"
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(_run(conv_path, x), _run(out, x))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".onnxcomp-")]


def test_save_refuses_to_overwrite_input(conv_path: Path) -> None:
    before = sha256(conv_path)
    m = io.load(conv_path)
    with pytest.raises(InvalidInputError, match="refusing to overwrite the input"):
        io.save(m, conv_path)
    link = conv_path.parent / "alias.onnx"
    os.symlink(conv_path, link)
    with pytest.raises(InvalidInputError, match="refusing"):
        io.save(m, link)
    assert sha256(conv_path) == before


def test_constant_node_weights_are_lifted(tmp_path: Path) -> None:
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,3] x) => (float[N,4] y) {
        w = Constant <value = float[3,4] {0,1,2,3,4,5,6,7,8,9,10,11}> ()
        s = Constant <value_float = 2.0> ()
        m = MatMul (x, w)
        y = Mul (m, s)
    }
    """
    proto = model_from_text(text)
    p = tmp_path / "c.onnx"
    onnx.save(proto, p)
    m = io.load(p)
    assert [n.op_type for n in m.graph] == ["MatMul", "Mul"]
    np.testing.assert_array_equal(m.graph.initializers["w"].const_value.numpy(), w)
    out = io.save(m, tmp_path / "lifted.onnx")
    onnx.checker.check_model(onnx.load(out), full_check=True)
    x = np.ones((2, 3), np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], 2 * x @ w)


def test_external_data_round_trip(conv_path: Path, tmp_path: Path) -> None:
    m = io.load(conv_path)
    ext = io.save(m, tmp_path / "ext" / "model.onnx", external_data=True)
    assert (ext.parent / "model.onnx.data").exists()
    assert io.file_size(ext) > ext.stat().st_size
    m2 = io.load(ext)
    assert any(isinstance(v.const_value, ir.ExternalTensor) for v in m2.graph.initializers.values())
    # a model loaded with external data keeps it by default
    again = io.save(m2, tmp_path / "ext2" / "model.onnx")
    assert (again.parent / "model.onnx.data").exists()
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(_run(conv_path, x), _run(again, x))
    with pytest.raises(InvalidInputError, match="external data of the input"):
        io.save(m2, ext.parent / "model.onnx.data")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "file is empty"),
        (b"\x08\x07\x12\x03abc\xff\xff\xff", "not a valid ONNX model"),
        (b"hello world, not a model", "not"),
    ],
)
def test_bad_files(tmp_path: Path, content: bytes, message: str) -> None:
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        io.load(p)


def test_truncated_and_missing(conv_path: Path, tmp_path: Path) -> None:
    data = conv_path.read_bytes()
    t = tmp_path / "trunc.onnx"
    t.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match="trunc.onnx"):
        io.load(t)
    with pytest.raises(InvalidInputError, match="no such file"):
        io.load(tmp_path / "missing.onnx")
    with pytest.raises(InvalidInputError, match="is a directory"):
        io.load(tmp_path)


def test_fix_input_shapes(conv_path: Path) -> None:
    m = io.load(conv_path, shapes={"x": (4, 3, 16, 16)})
    assert list(m.graph.inputs[0].shape) == [4, 3, 16, 16]
    m = io.load(conv_path, shapes=io.parse_shape_spec(["2x3x16x16"]))
    assert list(m.graph.inputs[0].shape) == [2, 3, 16, 16]
    with pytest.raises(InvalidInputError, match="no input 'y'"):
        io.load(conv_path, shapes={"y": (1, 3, 16, 16)})
    with pytest.raises(InvalidInputError, match="rank 3 given"):
        io.load(conv_path, shapes={"x": (1, 16, 16)})
    with pytest.raises(InvalidInputError, match="axis 2 is fixed to 16"):
        io.load(conv_path, shapes={"x": (1, 3, 32, 32)})
    with pytest.raises(InvalidInputError, match="integer dims"):
        io.parse_shape_spec(["x=1xAx3"])


def test_checker_rejection_names_file(tmp_path: Path) -> None:
    proto = conv_model()
    proto.graph.node[0].input[1] = "does_not_exist"
    p = tmp_path / "broken.onnx"
    onnx.save(proto, p)
    with pytest.raises(InvalidInputError, match="broken.onnx"):
        io.load(p)


@pytest.mark.slow
def test_model_above_2gb_external_data(tmp_path: Path) -> None:
    """A 2.24 GB model: load lazily, inspect, save (external data), run in ORT."""
    import shutil

    from click.testing import CliRunner

    from onnxcomp.cli import main

    if shutil.disk_usage(tmp_path).free < 8 * 2**30:
        pytest.skip("needs 8 GB of free disk")
    n = 560_000_000
    w = np.ones(n, dtype=np.float32)
    w[:10] = np.arange(10)
    wv = ir.Value(name="W", const_value=ir.tensor(w, name="W"))
    wv.shape, wv.type = ir.Shape([n]), ir.TensorType(ir.DataType.FLOAT)
    idx = ir.Value(name="idx", type=ir.TensorType(ir.DataType.INT64), shape=ir.Shape([1, 3]))
    node = ir.Node("", "Gather", [wv, idx], attributes=[ir.AttrInt64("axis", 0)], name="gather")
    y = node.outputs[0]
    y.name, y.type, y.shape = "y", ir.TensorType(ir.DataType.FLOAT), ir.Shape([1, 3])
    graph = ir.Graph([idx], [y], nodes=[node], initializers=[wv], opset_imports={"": 17}, name="big")
    model = ir.Model(graph, ir_version=8, producer_name="tests")
    model.metadata_props["k"] = "v"
    src = io.save(model, tmp_path / "big.onnx")  # above the protobuf limit: external data
    del w, wv, model, graph
    assert (tmp_path / "big.onnx.data").stat().st_size == 4 * n
    loaded = io.load(src)
    assert io.model_nbytes(loaded) == 4 * n
    r = CliRunner().invoke(main, ["inspect", str(src), "--json"])
    assert r.exit_code == 0, r.output
    assert '"params": 560000000' in r.output
    np.savez(tmp_path / "idx.npz", idx=np.array([[0, 5, 9]], np.int64))
    out = tmp_path / "out" / "big2.onnx"
    args = ["simplify", str(src), "-o", str(out), "--no-onnxsim", "--data", str(tmp_path / "idx.npz")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert (out.parent / "big2.onnx.data").stat().st_size == 4 * n
    assert onnx.load(out, load_external_data=False).metadata_props[0].value == "v"
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"idx": np.array([[0, 5, 9]], np.int64)})[0], [[0, 5, 9]])
