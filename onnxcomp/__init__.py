"""onnxcomp: a framework-agnostic compressor for ONNX models.

The public API is imported lazily (so that ``onnxcomp --help`` stays fast)::

    import onnxcomp
    model = onnxcomp.load("model.onnx")
    info = onnxcomp.inspect_model(model)
    data = onnxcomp.open_data("samples.npz", model)
    report = onnxcomp.verify("model.onnx", "small.onnx", data)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "onnxcomp.io",
    "save": "onnxcomp.io",
    "parse_shape_spec": "onnxcomp.io",
    "inspect_model": "onnxcomp.analysis",
    "ModelInfo": "onnxcomp.analysis",
    "Dataset": "onnxcomp.data",
    "ImagePreprocess": "onnxcomp.data",
    "open_data": "onnxcomp.data",
    "verify": "onnxcomp.verification",
    "VerifyConfig": "onnxcomp.verification",
    "VerifyReport": "onnxcomp.verification",
    "Gates": "onnxcomp.verification",
    "simplify": "onnxcomp.simplification",
    "SimplifyConfig": "onnxcomp.simplification",
    "OnnxcompError": "onnxcomp.errors",
    "InvalidInputError": "onnxcomp.errors",
    "DataError": "onnxcomp.errors",
    "UnsupportedModelError": "onnxcomp.errors",
    "CalibrationError": "onnxcomp.errors",
    "GateFailedError": "onnxcomp.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxcomp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
