"""Where the committed fixtures and the fetched real models live."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
GRAPHS = sorted((FIXTURES / "graphs").glob("*.onnx"))
MNIST = sorted((FIXTURES / "mnist").glob("*.onnx"))
ZOO_DIR = Path(os.environ.get("ONNXCOMP_ZOO_DIR", FIXTURES / "zoo"))
ZOO_KEYS = ("orientation", "ocr_det", "ocr_rec", "wakeword", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")
LIGHT_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT = sorted(LIGHT_DIR.glob("light_*.onnx"))


def ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]
