"""Shared test helpers: small models built from ONNX text, file fixtures."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"


def model_from_text(text: str, weights: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """Parse ONNX text and attach initializers; the result passes the full checker."""
    model = onnx.parser.parse_model(text)
    for name, arr in (weights or {}).items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_model(cin: int = 3, c1: int = 8, c2: int = 6, hw: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Conv(3x3, pad 1) -> Relu -> Conv(3x3, stride 2) -> GAP -> Flatten -> Gemm(10)."""
    rng = np.random.default_rng(seed)
    text = f"""
    <ir_version: 8, opset_import: ["" : 17], producer_name: "tests">
    g (float[N,{cin},{hw},{hw}] x) => (float[N,10] y) {{
        c1 = Conv <pads = [1,1,1,1], kernel_shape = [3,3]> (x, W1, B1)
        r1 = Relu (c1)
        c2 = Conv <strides = [2,2], kernel_shape = [3,3]> (r1, W2)
        p = GlobalAveragePool (c2)
        f = Flatten (p)
        y = Gemm <transB = 1> (f, W3, B3)
    }}
    """
    weights = {
        "W1": rng.standard_normal((c1, cin, 3, 3)).astype(np.float32),
        "B1": rng.standard_normal(c1).astype(np.float32),
        "W2": rng.standard_normal((c2, c1, 3, 3)).astype(np.float32),
        "W3": rng.standard_normal((10, c2)).astype(np.float32),
        "B3": rng.standard_normal(10).astype(np.float32),
    }
    return model_from_text(text, weights)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def conv_path(tmp_path: Path) -> Path:
    p = tmp_path / "conv.onnx"
    m = conv_model()
    onnx.helper.set_model_props(m, {"labels": "a,b,c", "author": "tests"})
    onnx.save(m, p)
    return p
