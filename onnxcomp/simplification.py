"""Model preparation: fixed shapes, constants lifted, onnxsim simplification.

onnxsim folds constant subgraphs (shape computations, ``ConstantOfShape``
weights of old exports), removes identities and fuses trivial patterns. The
result is checked numerically by the caller (``onnxcomp simplify`` verifies
it). Metadata, producer and doc strings of the input are put back on the
simplified model, since onnxsim does not promise to keep them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx_ir as ir

from onnxcomp import io
from onnxcomp.errors import UnsupportedModelError

__all__ = ["SimplifyConfig", "simplify"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimplifyConfig:
    """Options of :func:`simplify`.

    Attributes:
        shapes: Fixed input dims applied before simplification.
        onnxsim: Run onnxsim (otherwise only lift constants and fix shapes).
        skip_fuse_bn: Keep Conv+BatchNormalization separate (pruning wants BN scales).
    """

    shapes: Mapping[str, Sequence[int]] | None = None
    onnxsim: bool = True
    skip_fuse_bn: bool = True


def simplify(model: ir.Model, config: SimplifyConfig | None = None) -> ir.Model:
    """A simplified copy of ``model``.

    Raises:
        UnsupportedModelError: onnxsim fails or the model exceeds 2 GB.
    """
    cfg = config or SimplifyConfig()
    out = model.clone()
    io.lift_constant_tensors(out)
    if cfg.shapes:
        io.fix_input_shapes(out, cfg.shapes)
    if not cfg.onnxsim:
        return out
    if io.model_nbytes(out) > io.PROTOBUF_LIMIT:
        raise UnsupportedModelError("onnxsim cannot simplify models above 2 GB; use --no-onnxsim")
    import onnxsim

    proto = io.to_proto(out)
    try:
        simplified, ok = onnxsim.simplify(
            proto, skip_fuse_bn=cfg.skip_fuse_bn, check_n=0, skip_shape_inference=False
        )
    except Exception as e:
        msg = " ".join(str(e).split())[:300]
        raise UnsupportedModelError(f"onnxsim failed: {msg}") from e
    if not ok:
        raise UnsupportedModelError("onnxsim could not validate the simplified model")
    result = io.from_proto(simplified)
    result.metadata_props.clear()
    result.metadata_props.update(model.metadata_props)
    result.producer_name = model.producer_name
    result.producer_version = model.producer_version
    result.doc_string = model.doc_string
    result.model_version = model.model_version
    result.domain = model.domain
    return result
