"""Loading and saving ONNX models.

Every model enters onnxcomp through :func:`load` and leaves through :func:`save`.

* ``load`` validates the file (missing, empty, truncated, not ONNX, checker
  errors) and raises :class:`~onnxcomp.errors.InvalidInputError` naming the
  file; external data is mapped lazily, so models above 2 GB work. It can lift
  ``Constant``-node tensors into initializers (PaddlePaddle exports keep weights
  there) and fix dynamic input dimensions.
* ``save`` writes atomically (a temporary folder beside the target, then
  ``os.replace``), never over the model's own source file, and switches to
  external data when the tensors do not fit a 2 GB protobuf or the model was
  loaded with external data.

``metadata_props``, producer, doc strings and opset imports are carried by the
onnx_ir model object and therefore survive a load/save round trip.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from onnxcomp.errors import InvalidInputError, UnsupportedModelError

__all__ = [
    "PROTOBUF_LIMIT",
    "fix_input_shapes",
    "graph_inputs",
    "external_files",
    "file_size",
    "lift_constant_tensors",
    "load",
    "model_nbytes",
    "parse_shape_spec",
    "save",
    "source_path",
    "to_proto",
]

logger = logging.getLogger(__name__)

#: Protobuf refuses messages of 2 GiB; stay clear of it.
PROTOBUF_LIMIT = 2**31 - 64 * 2**20
_SOURCE_KEY = "onnxcomp.source_path"
OPAQUE_TYPES_KEY = "onnxcomp.opaque_types"
"""metadata_props key holding graph input/output types onnx_ir cannot represent (maps)."""


def load(
    path: str | os.PathLike[str],
    *,
    lift_constants: bool = True,
    shapes: Mapping[str, Sequence[int]] | None = None,
    check: bool = True,
) -> ir.Model:
    """Load and validate an ONNX model.

    Args:
        path: The ``.onnx`` file. External data files are resolved relative to it.
        lift_constants: Turn tensors held in ``Constant`` nodes into initializers.
        shapes: Fixed dimensions for inputs, ``{"input": (1, 3, 224, 224)}``.
        check: Run ``onnx.checker`` on the file.

    Raises:
        InvalidInputError: The file is missing, empty, truncated or not valid ONNX.
    """
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"{p}: no such file")
    if p.is_dir():
        raise InvalidInputError(f"{p}: is a directory, expected an .onnx file")
    if p.stat().st_size == 0:
        raise InvalidInputError(f"{p}: file is empty, not an ONNX model")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError, onnx raises various
        raise InvalidInputError(
            f"{p}: not a valid ONNX model (cannot parse: {_first_line(e)})"
        ) from e
    _check_structure(proto, p)
    if check:
        try:
            # The parsed proto is checked directly; only external data needs the path
            # (the checker resolves and validates the data files next to the model).
            has_external = any(
                t.data_location == onnx.TensorProto.EXTERNAL for t in _all_tensors(proto.graph)
            )
            onnx.checker.check_model(str(p) if has_external else proto)
        except Exception as e:
            raise InvalidInputError(f"{p}: ONNX checker rejects the model: {_first_line(e)}") from e
    _stash_opaque_types(proto)
    try:
        model = ir.serde.deserialize_model(proto)
    except Exception as e:
        raise UnsupportedModelError(f"{p}: cannot read the graph: {_first_line(e)}") from e
    ir.external_data.set_base_dir(model.graph, str(p.parent))
    model.meta[_SOURCE_KEY] = str(p.resolve())
    if lift_constants:
        lift_constant_tensors(model)
    if shapes:
        fix_input_shapes(model, shapes)
    return model


def _has_map(t: onnx.TypeProto) -> bool:
    kind = t.WhichOneof("value")
    if kind == "map_type":
        return True
    if kind == "sequence_type":
        return _has_map(t.sequence_type.elem_type)
    if kind == "optional_type":
        return _has_map(t.optional_type.elem_type)
    return False


def _stash_opaque_types(proto: onnx.ModelProto) -> None:
    """Move map types (scikit-learn's ZipMap outputs) out of the graph's signature.

    onnx_ir cannot represent map types. ONNX Runtime infers them from the node
    schemas, so the values stay untyped in memory; the types are kept in
    ``metadata_props`` and put back by :func:`to_proto` and :func:`save`.
    """
    g = proto.graph
    stash: dict[str, str] = {}
    for v in list(g.input) + list(g.output):
        if v.HasField("type") and _has_map(v.type):
            stash[v.name] = base64.b64encode(v.type.SerializeToString()).decode("ascii")
            v.ClearField("type")
    keep = [v for v in g.value_info if not (v.HasField("type") and _has_map(v.type))]
    if len(keep) != len(g.value_info):
        del g.value_info[:]
        g.value_info.extend(keep)
    if stash:
        old = _pop_opaque_types(proto)
        merged = {**(json.loads(old) if old else {}), **stash}
        proto.metadata_props.add(key=OPAQUE_TYPES_KEY, value=json.dumps(merged, sort_keys=True))


def _pop_opaque_types(proto: onnx.ModelProto) -> str | None:
    """Remove the stash entry from ``metadata_props``; its value, or None."""
    entries = [p.value for p in proto.metadata_props if p.key == OPAQUE_TYPES_KEY]
    if not entries:
        return None
    keep = [p for p in proto.metadata_props if p.key != OPAQUE_TYPES_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    return entries[-1]


def _type_text(t: onnx.TypeProto) -> str:
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        return f"tensor({onnx.TensorProto.DataType.Name(t.tensor_type.elem_type).lower()})"
    if kind == "sequence_type":
        return f"seq({_type_text(t.sequence_type.elem_type)})"
    if kind == "map_type":
        key = onnx.TensorProto.DataType.Name(t.map_type.key_type).lower()
        return f"map({key},{_type_text(t.map_type.value_type)})"
    if kind == "optional_type":
        return f"optional({_type_text(t.optional_type.elem_type)})"
    return "?"


def opaque_types(model: ir.Model) -> dict[str, str]:
    """``{value name: type}`` of the graph inputs/outputs whose map types are kept aside."""
    raw = model.metadata_props.get(OPAQUE_TYPES_KEY)
    if not raw:
        return {}
    out = {}
    for name, b64 in json.loads(raw).items():
        t = onnx.TypeProto()
        t.ParseFromString(base64.b64decode(b64))
        out[name] = _type_text(t)
    return out


def infer_shapes(model: ir.Model, *, data_prop: bool = False) -> ir.Model:
    """Best-effort ONNX shape inference on ``model`` (onnx_ir's pass, non-strict).

    Returns the model with the shapes found, or unchanged when inference fails
    (shapes then stay partial; every caller copes with unknown shapes). Skipped
    when a graph input has no type (a map type kept aside at load): onnx's C++
    inference crashes the process on those (segmentation fault, onnx 1.23).
    """
    from onnx_ir.passes.common import ShapeInferencePass

    if any(v.type is None for v in model.graph.inputs):
        logger.info("shape inference skipped: a graph input has no tensor type")
        return model
    try:
        return ShapeInferencePass(strict_mode=False, data_prop=data_prop)(model).model
    except Exception as e:  # e.g. inferred types onnx_ir cannot hold (ZipMap's maps)
        logger.info("shape inference failed, shapes stay partial: %s", _first_line(e))
        return model


def from_proto(proto: onnx.ModelProto) -> ir.Model:
    """Deserialize a model produced by an ONNX tool (map types kept aside, see above)."""
    _stash_opaque_types(proto)
    return ir.serde.deserialize_model(proto)


def restore_opaque_types(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Put the stashed map types back on the graph's inputs/outputs (in place)."""
    raw = _pop_opaque_types(proto)
    if raw is None:
        return proto
    stash = json.loads(raw)
    for v in list(proto.graph.input) + list(proto.graph.output):
        if v.name in stash and not v.HasField("type"):
            v.type.ParseFromString(base64.b64decode(stash[v.name]))
    return proto


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _check_structure(proto: onnx.ModelProto, path: Path) -> None:
    """Reject files that parse as protobuf but are not ONNX models."""
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise InvalidInputError(f"{path}: not an ONNX model (no graph or IR version)")
    if not proto.opset_import:
        raise InvalidInputError(f"{path}: not an ONNX model (no opset imports)")
    if not proto.graph.output:
        raise InvalidInputError(f"{path}: the graph has no outputs")
    for i, node in enumerate(proto.graph.node):
        if not node.op_type:
            raise InvalidInputError(f"{path}: node #{i} ({node.name!r}) has no op_type")


def lift_constant_tensors(model: ir.Model) -> int:
    """Move every tensor held by a ``Constant`` node into an initializer.

    Returns:
        The number of constants lifted.
    """
    before = sum(
        1 for n in ir.traversal.RecursiveGraphIterator(model.graph) if n.op_type == "Constant"
    )
    LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    after = sum(
        1 for n in ir.traversal.RecursiveGraphIterator(model.graph) if n.op_type == "Constant"
    )
    lifted = before - after
    if lifted and model.ir_version < 4:
        # IR < 4 requires every initializer to be a graph input as well.
        model.ir_version = 4
    if lifted:
        logger.debug("lifted %d Constant nodes into initializers", lifted)
    return lifted


def graph_inputs(model: ir.Model) -> list[ir.Value]:
    """The real inputs of the main graph (initializers listed as inputs excluded)."""
    return [v for v in model.graph.inputs if not v.is_initializer()]


def parse_shape_spec(specs: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Parse ``name=1x3x224x224`` strings (``name=1,3,224,224`` also accepted).

    A spec without ``name=`` applies to the single input of the model and is
    stored under the key ``""``.
    """
    out: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = spec.rpartition("=")
        if not sep:
            name, dims = "", spec
        parts = [d for d in dims.replace(",", "x").split("x") if d.strip()]
        try:
            shape = tuple(int(d) for d in parts)
        except ValueError as e:
            raise InvalidInputError(
                f"--shape {spec!r}: expected NAME=D1xD2x... with integer dims"
            ) from e
        if not shape or any(d <= 0 for d in shape):
            raise InvalidInputError(f"--shape {spec!r}: dims must be positive integers")
        out[name.strip()] = shape
    return out


def fix_input_shapes(model: ir.Model, shapes: Mapping[str, Sequence[int]]) -> None:
    """Replace the dims of graph inputs by fixed sizes, checking consistency.

    Raises:
        InvalidInputError: Unknown input name, wrong rank, or a static dim that
            disagrees with the requested size.
    """
    inputs = {v.name: v for v in graph_inputs(model)}
    resolved = dict(shapes)
    if "" in resolved:
        if len(inputs) != 1:
            raise InvalidInputError(
                f"--shape without a name needs a single-input model; inputs are "
                f"{', '.join(map(str, inputs))}"
            )
        resolved[next(iter(inputs))] = resolved.pop("")  # type: ignore[index]
    for name, dims in resolved.items():
        value = inputs.get(name)
        if value is None:
            raise InvalidInputError(
                f"--shape: model has no input {name!r}; inputs are {', '.join(map(str, inputs))}"
            )
        old = value.shape
        if old is not None and len(old) != len(dims):
            raise InvalidInputError(
                f"--shape {name}: rank {len(dims)} given, input has rank {len(old)} ({_fmt_shape(old)})"
            )
        if old is not None:
            for axis, (o, d) in enumerate(zip(old, dims)):
                if isinstance(o, int) and o != d:
                    raise InvalidInputError(
                        f"--shape {name}: axis {axis} is fixed to {o} in the model, {d} given"
                    )
        value.shape = ir.Shape(list(dims))


def _fmt_shape(shape: ir.Shape | None) -> str:
    if shape is None:
        return "?"
    return "x".join(str(d) if isinstance(d, int) else str(d.value or "?") for d in shape)


def source_path(model: ir.Model) -> Path | None:
    """The file the model was loaded from, if any."""
    src = model.meta.get(_SOURCE_KEY)
    return Path(src) if src else None


def model_nbytes(model: ir.Model) -> int:
    """Bytes of all initializer tensors (subgraphs included)."""
    total = 0
    for graph in model.graphs():
        for value in graph.initializers.values():
            if value.const_value is not None:
                total += value.const_value.nbytes
    return total


def _uses_external_data(model: ir.Model) -> bool:
    for graph in model.graphs():
        for value in graph.initializers.values():
            if isinstance(value.const_value, ir.ExternalTensor):
                return True
    return False


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """Serialize to a protobuf (only for models below 2 GB)."""
    if model_nbytes(model) > PROTOBUF_LIMIT:
        raise UnsupportedModelError(
            "model tensors exceed 2 GB; save it with external data instead of serializing"
        )
    return restore_opaque_types(ir.serde.serialize_model(model))


def save(
    model: ir.Model,
    path: str | os.PathLike[str],
    *,
    external_data: bool | None = None,
    protect: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write a model atomically.

    Args:
        model: The model to write. It is not modified.
        path: Target ``.onnx`` file; parent folders are created.
        external_data: Force (True) or forbid (False) external data; by default
            it is used above the protobuf limit or when the model already has it.
            The data file is ``<name>.data`` beside the model.
        protect: More files that must never be overwritten (e.g. CLI inputs).

    Returns:
        The path written.
    """
    target = Path(path)
    if target.is_dir():
        raise InvalidInputError(f"{target}: is a directory, expected a file name for the output")
    protected = [Path(p) for p in protect]
    src = source_path(model)
    if src is not None:
        protected.append(src)
    for prot in protected:
        if prot.exists() and target.exists() and os.path.samefile(prot, target):
            raise InvalidInputError(
                f"{target}: refusing to overwrite the input model; choose another output path"
            )
        if target.exists() and any(
            f.exists() and os.path.samefile(f, target) for f in external_files(prot)
        ):
            raise InvalidInputError(
                f"{target}: refusing to overwrite the external data of the input"
            )
    if external_data is None:
        external_data = model_nbytes(model) > PROTOBUF_LIMIT or _uses_external_data(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    data_name = target.name + ".data"
    if external_data:
        data_file = target.parent / data_name
        if data_file.exists():
            for prot in protected:
                if any(f.exists() and os.path.samefile(f, data_file) for f in external_files(prot)):
                    raise InvalidInputError(
                        f"{data_file}: refusing to overwrite the external data of the input model"
                    )
    tmpdir = Path(tempfile.mkdtemp(prefix=".onnxcomp-", dir=target.parent))
    try:
        tmp_model = tmpdir / target.name
        try:
            if external_data:
                ir.save(model, tmp_model, external_data=data_name)
            else:
                ir.save(model, tmp_model)
        except ValueError as e:
            raise UnsupportedModelError(
                f"{target}: cannot serialize model: {_first_line(e)}"
            ) from e
        if OPAQUE_TYPES_KEY in model.metadata_props:
            written = onnx.load(str(tmp_model), load_external_data=False)
            onnx.save(restore_opaque_types(written), str(tmp_model))
        if external_data and (tmpdir / data_name).exists():
            os.replace(tmpdir / data_name, target.parent / data_name)
        os.replace(tmp_model, target)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return target


def external_files(path: str | os.PathLike[str]) -> list[Path]:
    """The external data files a model file references (existing or not)."""
    p = Path(path)
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception:  # informative only; a bad file is rejected by load()
        return []
    names: dict[str, None] = {}
    for tensor in _all_tensors(proto.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    names[entry.value] = None
    return [p.parent / n for n in names]


def file_size(path: str | os.PathLike[str]) -> int:
    """Size of a model file plus the external data files it references."""
    p = Path(path)
    return p.stat().st_size + sum(f.stat().st_size for f in external_files(p) if f.exists())


def _all_tensors(graph: onnx.GraphProto) -> Iterable[onnx.TensorProto]:
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)
