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
import importlib.machinery
import importlib.util
import os
import sys
import types
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

# onnx_ir imports sympy at module level (and its _symbolic_shapes module touches it
# at import time) but needs it only for symbolic-dimension arithmetic, which onnxcomp
# never does. Both names are bound to placeholders that import the real module on
# first attribute access: ~0.35 s saved on every command. (importlib's LazyLoader
# does not survive a plain ``import`` statement on Python 3.11.)
_DEFERRED = ("sympy", "onnx_ir._symbolic_shapes")


class _Deferred(types.ModuleType):
    """Placeholder in ``sys.modules`` that imports the real module when first used."""

    def __init__(self, name: str, spec: importlib.machinery.ModuleSpec) -> None:
        super().__init__(name)
        self.__spec__ = spec
        self.__file__ = spec.origin
        object.__setattr__(self, "_real", None)

    def __getattr__(self, attr: str) -> Any:
        real = self.__dict__.get("_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
            self.__dict__["_real"] = real
        return getattr(real, attr)


def _defer(name: str) -> None:
    top, _, rest = name.partition(".")
    if name in sys.modules or (rest and top in sys.modules):
        return
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: imports nothing
        if spec is not None and rest:  # a submodule, located without importing its package
            dirs = list(spec.submodule_search_locations or [])
            files = [os.path.join(d, *rest.split(".")) + ".py" for d in dirs]
            files = [f for f in files if os.path.isfile(f)]
            spec = importlib.util.spec_from_file_location(name, files[0]) if files else None
    except (ImportError, ValueError):
        return
    if spec is not None:
        sys.modules[name] = _Deferred(name, spec)


for _name in _DEFERRED:
    _defer(_name)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxcomp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
