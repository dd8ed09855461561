"""One exception hierarchy for onnxcomp.

Library code raises these; the CLI turns every :class:`OnnxcompError` into a
one-line message and the exit code of its class (``exit_code``).
"""

from __future__ import annotations

__all__ = [
    "CalibrationError",
    "DataError",
    "GateFailedError",
    "InvalidInputError",
    "OnnxcompError",
    "UnsupportedModelError",
]


class OnnxcompError(Exception):
    """Base class of every error onnxcomp raises on purpose."""

    exit_code = 1


class InvalidInputError(OnnxcompError):
    """A file, option or argument given by the user is missing or invalid."""

    exit_code = 2


class DataError(InvalidInputError):
    """Input samples do not match the model (names, dtypes, shapes, values)."""


class CalibrationError(DataError):
    """Calibration data cannot be used (empty, non-finite, mismatched)."""


class UnsupportedModelError(InvalidInputError):
    """The model is valid ONNX but uses something onnxcomp cannot handle."""


class GateFailedError(OnnxcompError):
    """A quality gate (threshold) was not met."""

    exit_code = 3
