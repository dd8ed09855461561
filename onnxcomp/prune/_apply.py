"""Applying a channel selection: slice parameters, rewrite attributes and shape constants.

Given the kept channels of every space, the kept *elements* of a tensor's
channel axis follow from its layout (each kept channel contributes its ``rep``
consecutive elements). Every recorded :class:`ParamSlice` then becomes
``np.take(W, kept, axis)`` (grouped slices take the kept elements of each group
block separately), and every :class:`Edit` rewrites the attribute or constant
from the new sizes.

Masking (the verification reference) instead zeroes, in the *original* model,
the entries of every contraction (``role == "in"``) that read a removed
element. Everything else stays: removed channels are still computed but no
longer reach any output, so the masked model and the pruned model compute the
same function.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx_ir as ir

from onnxcomp.prune._graph import Analysis, Layout, ParamSlice

logger = logging.getLogger(__name__)

__all__ = ["apply_selection", "kept_elements", "mask_selection"]

Keep = Mapping[int, np.ndarray]  # space id -> bool mask of kept channels


def kept_elements(layout: Layout, keep: Keep) -> np.ndarray:
    """Indices along the channel axis that stay, for a layout and kept channels."""
    parts = []
    pos = 0
    for s in layout.segments:
        mask = keep.get(s.space)
        if mask is None:
            parts.append(np.arange(pos, pos + s.size))
        else:
            ch = np.nonzero(mask[s.start : s.start + s.count])[0]
            idx = (pos + ch[:, None] * s.rep + np.arange(s.rep)[None, :]).reshape(-1)
            parts.append(idx)
        pos += s.size
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _slice_array(arr: np.ndarray, sl: ParamSlice, kept: np.ndarray, full: int) -> np.ndarray:
    if sl.groups <= 1:
        if arr.shape[sl.axis] == 1 and full != 1:
            return arr  # broadcast
        return np.take(arr, kept, axis=sl.axis)
    per = full // sl.groups
    blocks_in = arr.shape[sl.group_axis] // sl.groups
    out_blocks = []
    for g in range(sl.groups):
        local = kept[(kept >= g * per) & (kept < (g + 1) * per)] - g * per
        part = np.take(arr, np.arange(g * blocks_in, (g + 1) * blocks_in), axis=sl.group_axis)
        local = local if sl.axis != sl.group_axis else local
        out_blocks.append(np.take(part, local, axis=sl.axis))
    return np.concatenate(out_blocks, axis=sl.group_axis)


def _mask_array(arr: np.ndarray, sl: ParamSlice, kept: np.ndarray, full: int) -> np.ndarray:
    removed = np.setdiff1d(np.arange(full), kept)
    if removed.size == 0:
        return arr
    out = arr.copy()
    if sl.groups <= 1:
        idx = [slice(None)] * arr.ndim
        idx[sl.axis] = removed  # type: ignore[call-overload]
        out[tuple(idx)] = 0
        return out
    per = full // sl.groups
    blocks_in = arr.shape[sl.group_axis] // sl.groups
    for r in removed:
        g, local = divmod(int(r), per)
        idx = [slice(None)] * arr.ndim
        idx[sl.group_axis] = slice(g * blocks_in, (g + 1) * blocks_in)  # type: ignore[call-overload]
        idx[sl.axis] = local  # type: ignore[call-overload]
        out[tuple(idx)] = 0
    return out


def set_const_input(graph: ir.Graph, node: ir.Node, index: int, arr: np.ndarray) -> None:
    """Give ``node`` input ``index`` the constant ``arr`` (a private copy when shared)."""
    old = node.inputs[index]
    assert old is not None
    if len(old.uses()) == 1 and old.is_initializer() and not old.is_graph_input():
        old.const_value = ir.tensor(arr, name=old.name)
        old.shape = ir.Shape(arr.shape)
        return
    base = f"{old.name}_{node.name}"
    name = base
    k = 0
    while name in graph.initializers:
        k += 1
        name = f"{base}_{k}"
    new = ir.Value(name=name, shape=ir.Shape(arr.shape), type=ir.TensorType(ir.DataType.from_numpy(arr.dtype)), const_value=ir.tensor(arr, name=name))
    graph.register_initializer(new)
    node.replace_input_with(index, new)
    if not old.uses() and old.is_initializer() and not old.is_graph_input() and not old.is_graph_output():
        graph.initializers.pop(str(old.name), None)


def _grouped_slices(an: Analysis) -> dict[tuple[str, int], list[ParamSlice]]:
    out: dict[tuple[str, int], list[ParamSlice]] = {}
    for sl in an.slices:
        out.setdefault((sl.node, sl.input), []).append(sl)
    for v in out.values():
        v.sort(key=lambda s: 0 if s.groups > 1 else 1)  # grouped first, on the original block structure
    return out


def _keep_for(an: Analysis, value: str, keep: Keep, cache: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
    if value not in cache:
        cache[value] = kept_elements(an.layouts[value], keep)
    return cache[value], an.layouts[value].size


def apply_selection(an: Analysis, keep: Keep) -> None:
    """Slice ``an.model`` in place so that only the kept channels remain."""
    graph = an.model.graph
    cache: dict[str, np.ndarray] = {}
    for (node_name, index), slices in _grouped_slices(an).items():
        if not any(_touched(an, sl.value, keep) for sl in slices):
            continue
        node = an.nodes[node_name]
        v = node.inputs[index]
        assert v is not None and v.const_value is not None
        arr = v.const_value.numpy()
        for sl in slices:
            kept, full = _keep_for(an, sl.value, keep, cache)
            arr = _slice_array(arr, sl, kept, full)
        set_const_input(graph, node, index, np.ascontiguousarray(arr))
    for ed in an.edits:
        node = an.nodes[ed.node]
        _apply_edit(an, node, ed, keep, cache)


def _touched(an: Analysis, value: str, keep: Keep) -> bool:
    return any(s.space in keep and not keep[s.space].all() for s in an.layouts[value].segments)


def _apply_edit(an: Analysis, node: ir.Node, ed: object, keep: Keep, cache: dict[str, np.ndarray]) -> None:
    from onnxcomp.prune._graph import Edit

    assert isinstance(ed, Edit)
    graph = an.model.graph
    if ed.kind == "group":
        kept, _ = _keep_for(an, ed.get("value"), keep, cache)
        node.attributes["group"] = ir.AttrInt64("group", int(kept.size))
    elif ed.kind == "reshape":
        out_name = str(node.outputs[0].name)
        kept, _ = _keep_for(an, out_name, keep, cache)
        shape_v = node.inputs[1]
        assert shape_v is not None and shape_v.const_value is not None
        shape = shape_v.const_value.numpy().copy()
        shape[ed.get("axis")] = kept.size
        set_const_input(graph, node, 1, shape)
    elif ed.kind == "reshape_split":  # channel shuffle: [.., C, ..] -> [.., g, C/g, ..]
        kept, _ = _keep_for(an, ed.get("value"), keep, cache)
        shape_v = node.inputs[1]
        assert shape_v is not None and shape_v.const_value is not None
        shape = shape_v.const_value.numpy().copy()
        shape[ed.get("axis")] = kept.size // ed.get("parts")
        set_const_input(graph, node, 1, shape)
    elif ed.kind == "split":
        sizes = [int(_keep_for(an, name, keep, cache)[0].size) for name in ed.get("outputs")]
        arr = np.asarray(sizes, dtype=np.int64)
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            set_const_input(graph, node, 1, arr)
        elif node.attributes.get("split") is not None:
            node.attributes["split"] = ir.AttrInt64s("split", sizes)
        elif len(set(sizes)) != 1:
            if an.model.opset_imports.get("", 13) >= 13:
                node.resize_inputs(2)
                new = ir.Value(name=f"{node.name}_split", const_value=ir.tensor(arr), shape=ir.Shape(arr.shape), type=ir.TensorType(ir.DataType.INT64))
                graph.register_initializer(new)
                node.replace_input_with(1, new)
            else:
                node.attributes["split"] = ir.AttrInt64s("split", sizes)
    elif ed.kind == "slice":
        kept, _ = _keep_for(an, ed.get("value"), keep, cache)
        b, e, k = ed.get("begin"), ed.get("end"), ed.get("index")
        nb = int((kept < b).sum())
        ne = int((kept < e).sum())
        for idx, val in ((1, nb), (2, ne)):
            v = node.inputs[idx]
            assert v is not None and v.const_value is not None
            arr = v.const_value.numpy().copy()
            arr[k] = val
            set_const_input(graph, node, idx, arr)
    elif ed.kind == "resize_sizes":
        kept, _ = _keep_for(an, ed.get("value"), keep, cache)
        v = node.inputs[3]
        assert v is not None and v.const_value is not None
        arr = v.const_value.numpy().copy()
        arr[ed.get("axis")] = kept.size
        set_const_input(graph, node, 3, arr)
    else:  # pragma: no cover - handlers only record the kinds above
        raise AssertionError(f"unknown edit {ed.kind}")


def mask_selection(an: Analysis, keep: Keep) -> None:
    """Zero, in ``an.model``, every contraction weight that reads a removed channel."""
    graph = an.model.graph
    cache: dict[str, np.ndarray] = {}
    for (node_name, index), slices in _grouped_slices(an).items():
        ins = [sl for sl in slices if sl.role == "in" and _touched(an, sl.value, keep)]
        if not ins:
            continue
        node = an.nodes[node_name]
        v = node.inputs[index]
        assert v is not None and v.const_value is not None
        arr = v.const_value.numpy()
        for sl in ins:
            kept, full = _keep_for(an, sl.value, keep, cache)
            arr = _mask_array(arr, sl, kept, full)
        set_const_input(graph, node, index, arr)
