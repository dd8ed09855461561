"""scikit-learn style models: ai.onnx.ml operators and ZipMap's sequence-of-map output,
a type onnx_ir cannot hold (it is kept aside and written back)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from onnxcomp import io
from onnxcomp.analysis import inspect_model
from onnxcomp.cli import main
from onnxcomp.data import open_data
from onnxcomp.errors import UnsupportedModelError
from onnxcomp.prune import PruneConfig, prune
from onnxcomp.quantize import QuantizeConfig, quantize
from onnxcomp.verification import VerifyConfig, verify

COEF = np.random.default_rng(0).standard_normal(12)


def _map_to_float(key: int) -> onnx.TypeProto:
    return helper.make_map_type_proto(key, helper.make_tensor_type_proto(TensorProto.FLOAT, []))


def _ml_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    """A model of the ai.onnx.ml domain as skl2onnx writes them (IR 8)."""
    m = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("ai.onnx.ml", 1)]
    )
    m.ir_version = 8
    return m


def _linear_classifier(path: Path) -> Path:
    """What skl2onnx writes for a LogisticRegression: label + ZipMap probabilities."""
    probs_type = helper.make_sequence_type_proto(_map_to_float(TensorProto.INT64))
    g = helper.make_graph(
        [
            helper.make_node(
                "LinearClassifier",
                ["X"],
                ["label", "probs"],
                domain="ai.onnx.ml",
                name="clf",
                classlabels_ints=[0, 1, 2],
                coefficients=[float(c) for c in COEF],
                intercepts=[0.1, 0.2, 0.3],
                post_transform="SOFTMAX",
                multi_class=1,
            ),
            helper.make_node(
                "ZipMap",
                ["probs"],
                ["probabilities"],
                domain="ai.onnx.ml",
                classlabels_int64s=[0, 1, 2],
                name="zipmap",
            ),
        ],
        "skl",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 4])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_value_info("probabilities", probs_type),
        ],
    )
    m = _ml_model(g)
    m.metadata_props.add(key="classes", value="cat,dog,bird")
    onnx.checker.check_model(m, full_check=True)
    p = path / "skl.onnx"
    onnx.save(m, p)
    return p


@pytest.fixture
def skl(tmp_path: Path) -> tuple[Path, Path]:
    model = _linear_classifier(tmp_path)
    data = tmp_path / "x.npz"
    np.savez(data, X=np.random.default_rng(1).standard_normal((12, 4)).astype(np.float32))
    return model, data


def test_round_trip_keeps_the_map_type_and_nothing_else(
    skl: tuple[Path, Path], tmp_path: Path
) -> None:
    src, _ = skl
    m = io.load(src)
    out = io.save(m, tmp_path / "copy.onnx")
    a, b = onnx.load(src), onnx.load(out)
    onnx.checker.check_model(b, full_check=True)
    assert b.graph.output[1].type == a.graph.output[1].type
    assert {p.key: p.value for p in b.metadata_props} == {"classes": "cat,dog,bird"}
    assert io.to_proto(m).graph.output[1].type == a.graph.output[1].type


def test_inspect_counts_attribute_weights_and_names_the_map_type(skl: tuple[Path, Path]) -> None:
    info = inspect_model(io.load(skl[0]))
    assert info.params == 12 + 3  # coefficients + intercepts
    assert {t.name: t.dtype for t in info.outputs} == {
        "label": "int64",
        "probabilities": "seq(map(int64,tensor(float)))",
    }
    assert info.metadata == {"classes": "cat,dog,bird"}


def test_verify_compares_zipmap_probabilities_as_arrays(skl: tuple[Path, Path]) -> None:
    src, data = skl
    m = io.load(src)
    rep = verify(m, m, open_data(data, m), VerifyConfig(latency_repeats=0))
    outs = {o.name: o for o in rep.outputs}
    assert set(outs) == {"label", "probabilities"}
    assert (
        outs["probabilities"].cosine == pytest.approx(1.0)
        and outs["probabilities"].max_abs_error == 0.0
    )


def test_prune_leaves_it_valid(skl: tuple[Path, Path]) -> None:
    m = io.load(skl[0])
    r = prune(m, PruneConfig(ratio=0.5, latency_repeats=0))
    proto = io.to_proto(r.model)
    onnx.checker.check_model(proto, full_check=True)
    assert not any(g.pruned for g in r.plan.groups)


def test_quantize_says_there_is_nothing_to_quantize(skl: tuple[Path, Path], tmp_path: Path) -> None:
    src, data = skl
    m = io.load(src)
    with pytest.raises(UnsupportedModelError, match="nothing to quantize: .*LinearClassifier"):
        quantize(m, open_data(data, m), QuantizeConfig(latency_repeats=0))
    out = tmp_path / "q.onnx"
    r = CliRunner().invoke(main, ["quantize", str(src), "--data", str(data), "-o", str(out)])
    assert r.exit_code == 2 and not out.exists()
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and "nothing to quantize" in lines[0] and "Traceback" not in r.output


def test_distill_reads_the_probabilities_behind_zipmap(
    skl: tuple[Path, Path], tmp_path: Path
) -> None:
    """No --output needed: the ZipMap output is the class scores; its input tensor is read."""
    import onnxruntime as ort

    from onnxcomp.distill import label, open_store

    src, data = skl
    rep = label(str(src), str(data), tmp_path / "store")
    store = open_store(tmp_path / "store")
    x = np.load(data)["X"]
    probs = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"X": x}
    )[0]
    expected = np.log(np.asarray([[d[k] for k in sorted(d)] for d in probs], dtype=np.float64))
    got = store.log_probs(np.arange(len(x)))
    d = rep.to_dict()
    assert store.classes == 3 and d["tapped"] == "probs" and d["tap"] == "probabilities"
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_map_typed_input_does_not_crash(tmp_path: Path) -> None:
    """A DictVectorizer takes a map input: onnx's shape inference segfaults on the untyped
    input, so it is skipped (run in a subprocess: a crash must fail the test, not pytest)."""
    import subprocess
    import sys

    dict_in = helper.make_value_info("dict_in", _map_to_float(TensorProto.STRING))
    g = helper.make_graph(
        [
            helper.make_node(
                "DictVectorizer",
                ["dict_in"],
                ["v"],
                domain="ai.onnx.ml",
                string_vocabulary=["a", "b", "c"],
                name="dv",
            ),
            helper.make_node(
                "Normalizer", ["v"], ["y"], domain="ai.onnx.ml", norm="L2", name="norm"
            ),
        ],
        "dv",
        [dict_in],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    m = _ml_model(g)
    p = tmp_path / "dv.onnx"
    onnx.save(m, p)
    cli = [sys.executable, "-m", "onnxcomp.cli"]
    r = subprocess.run([*cli, "inspect", str(p)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "map(string,tensor(float))" in r.stdout
    r = subprocess.run(
        [*cli, "prune", str(p), "-o", str(tmp_path / "p.onnx")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "dict_in" in r.stderr
