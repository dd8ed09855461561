"""inspect and verify on every committed fixture; trained fixtures keep their accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from models import FIXTURES, GRAPHS, MNIST, ids

from onnxcomp import io
from onnxcomp.analysis import inspect_model
from onnxcomp.cli import main
from onnxcomp.data import open_data
from onnxcomp.verification import VerifyConfig, verify


@pytest.mark.parametrize("path", GRAPHS + MNIST, ids=ids(GRAPHS + MNIST))
def test_inspect_and_self_verify(path: Path) -> None:
    onnx.checker.check_model(onnx.load(path), full_check=True)
    info = inspect_model(io.load(path, lift_constants=False))
    assert info.params > 0 and info.macs > 0 and not info.unknown_mac_nodes
    r = CliRunner().invoke(main, ["verify", str(path), str(path), "--synthetic", "4", "--json", "--repeats", "2"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output[r.output.index("{") :])
    assert rep["synthetic"] is True
    assert all(o["cosine"] == 1.0 and o["max_abs_error"] == 0.0 for o in rep["outputs"])


def test_graph_fixture_set_is_complete() -> None:
    names = {p.stem for p in GRAPHS}
    assert names >= {
        "conv_bn_relu", "residual", "concat", "depthwise", "grouped", "se",
        "flatten_gemm", "mlp", "attention", "convtranspose",
    }


@pytest.mark.skipif(not MNIST, reason="MNIST fixtures not generated")
@pytest.mark.parametrize("path", MNIST, ids=ids(MNIST))
def test_mnist_accuracy_matches_record(path: Path) -> None:
    record = json.loads((FIXTURES / "mnist" / "accuracy.json").read_text())
    expected = record["models"][path.name]["eval_accuracy"]
    model = io.load(path)
    data = open_data(FIXTURES / "mnist" / "eval.npz", model)
    rep = verify(model, model, data, VerifyConfig(batch_size=256, latency_repeats=0))
    assert rep.samples == 2000
    assert rep.reference_accuracy == pytest.approx(expected, abs=1e-4)
    assert rep.reference_accuracy > 0.97
