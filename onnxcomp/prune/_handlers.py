"""Per-op handlers: how channels flow through each op and what must be sliced.

A handler ``h(ctx, node)`` reads its inputs' layouts, calls ``ctx.accept(i)``
for every input whose channels it handles, sets its outputs' layouts, records
parameter slices / edits, and raises ``stop(reason)`` when the node cannot
carry pruned channels. Inputs carrying channels that a handler does not accept
are blocked by the caller; ops without a handler block everything they touch.

Weight layouts (the axis that is sliced):

* Conv ``W[Cout, Cin/g, k...]``: out channels axis 0, in channels axis 1
  (per group block of axis 0 when ``1 < g``); depthwise (``g = Cin``, ``W[m*Cin, 1, ...]``)
  keeps the input's channels with multiplier ``m`` and rewrites ``group``.
* ConvTranspose ``W[Cin, Cout/g, k...]``: in axis 0, out axis 1.
* Gemm ``B[K, N]`` (``transB=1``: ``[N, K]``), bias ``C`` broadcast to ``[M, N]``.
* MatMul with a constant 2-D ``B[K, N]``: contraction over the last axis of ``A``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxcomp.prune._graph import Context, Layout, Segment, stop

__all__ = ["HANDLERS", "register"]

Handler = Callable[[Context, ir.Node], None]
HANDLERS: dict[str, Handler] = {}


def register(*ops: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = fn
        return fn

    return deco


def _ints(node: ir.Node, name: str, default: list[int] | None = None) -> list[int] | None:
    attr = node.attributes.get(name)
    if attr is None:
        return default
    return list(attr.as_ints())


def _int(node: ir.Node, name: str, default: int) -> int:
    return node.attributes.get_int(name, default)


def _norm_axis(axis: int, rank: int) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise stop(f"axis {axis} out of range for rank {rank}")
    return a


def _rank_of(ctx: Context, v: ir.Value | None) -> int:
    r = ctx.rank(v)
    if r is None:
        raise stop(f"rank of {v.name if v is not None else '?'} unknown")
    return r


def _input_layouts(ctx: Context, node: ir.Node) -> dict[int, Layout]:
    return {i: lay for i, v in enumerate(node.inputs) if (lay := ctx.layout(v)) is not None}


# ------------------------------------------------------------------ sources


@register("Conv")
def conv(ctx: Context, node: ir.Node) -> None:
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    wa = ctx.const(w)
    if wa is None or (b is not None and ctx.const(b) is None):
        raise stop("weight or bias is not a constant")
    g = _int(node, "group", 1)
    cout, cin_g = wa.shape[0], wa.shape[1]
    cin = cin_g * g
    lay = ctx.layout(x)
    if lay is not None and lay.axis != 1:
        raise stop("channels not on axis 1")
    if lay is not None and lay.size != cin:
        raise stop("input channel count does not match the weight")
    if g > 1 and cin_g == 1 and lay is not None and cout % cin == 0:
        # depthwise (with channel multiplier m): output channel o belongs to input o // m
        ctx.accept(0)
        out = lay.scaled(cout // cin)
        ctx.set_layout(y, out)
        ctx.slice(node, 1, 0, y, "param", "dw_weight")
        if b is not None:
            ctx.slice(node, 2, 0, y, "param", "bias")
        ctx.edit("group", node, value=str(x.name))
        return
    if lay is not None:
        if g == 1:
            ctx.accept(0)
            ctx.slice(node, 1, 1, x, "in")
        else:
            seg = lay.segments
            sp = ctx.spaces[seg[0].space]
            if len(seg) == 1 and seg[0].start == 0 and seg[0].count == sp.size and seg[0].rep == 1 and sp.size % g == 0:
                sp.partition = math.lcm(sp.partition, g)
                ctx.accept(0)
                ctx.slice(node, 1, 1, x, "in", groups=g, group_axis=0)
            elif lay.size % g == 0:
                # permuted or composed channels (channel shuffle, concat): balanced per group block
                ctx.balance(x, g, f"Conv {node.name!r} (group={g})")
                ctx.accept(0)
                ctx.slice(node, 1, 1, x, "in", groups=g, group_axis=0)
            # else: not accepted -> the input channels are blocked
    ctx.new_space(y, node, cout, 1, partition=g)
    ctx.slice(node, 1, 0, y, "out")
    if b is not None:
        ctx.slice(node, 2, 0, y, "out", "bias")


@register("ConvTranspose")
def conv_transpose(ctx: Context, node: ir.Node) -> None:
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    wa = ctx.const(w)
    if wa is None or (b is not None and ctx.const(b) is None):
        raise stop("weight or bias is not a constant")
    if node.attributes.get("output_shape") is not None and ctx.rank(y) is None:
        raise stop("output_shape without known output rank")
    g = _int(node, "group", 1)
    cin, cout_g = wa.shape[0], wa.shape[1]
    cout = cout_g * g
    lay = ctx.layout(x)
    if lay is not None and (lay.axis != 1 or lay.size != cin):
        raise stop("input channels do not match the weight")
    if g > 1 and g == cin and lay is not None:
        ctx.accept(0)
        ctx.set_layout(y, lay.scaled(cout_g))
        ctx.slice(node, 1, 0, x, "param", "dw_weight")
        if b is not None:
            ctx.slice(node, 2, 0, y, "param", "bias")
        ctx.edit("group", node, value=str(x.name))
        return
    if lay is not None:
        seg = lay.segments
        sp = ctx.spaces[seg[0].space]
        if g == 1:
            ctx.accept(0)
            ctx.slice(node, 1, 0, x, "in")
        elif len(seg) == 1 and seg[0].start == 0 and seg[0].count == sp.size and seg[0].rep == 1 and sp.size % g == 0:
            sp.partition = math.lcm(sp.partition, g)
            ctx.accept(0)
            ctx.slice(node, 1, 0, x, "in")
    ctx.new_space(y, node, cout, 1, partition=g)
    if g == 1:
        ctx.slice(node, 1, 1, y, "out")
    else:
        ctx.slice(node, 1, 1, y, "out", groups=g, group_axis=0)
    if b is not None:
        ctx.slice(node, 2, 0, y, "out", "bias")


@register("Gemm")
def gemm(ctx: Context, node: ir.Node) -> None:
    a, bw = node.inputs[0], node.inputs[1]
    c = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    ba = ctx.const(bw)
    if ba is None or ba.ndim != 2:
        raise stop("B is not a constant matrix")
    trans_a, trans_b = _int(node, "transA", 0), _int(node, "transB", 0)
    k_axis, n_axis = (1, 0) if trans_b else (0, 1)
    n = ba.shape[n_axis]
    lay = ctx.layout(a)
    if lay is not None:
        if lay.axis != (0 if trans_a else 1):
            raise stop("channels are not on the contraction axis of A")
        ctx.accept(0)
        ctx.slice(node, 1, k_axis, a, "in")
    if ctx.layout(bw) is not None:
        raise stop("B carries channels")
    ca = None
    if c is not None:
        ca = ctx.const(c)
        if ca is None:
            return  # a non-constant bias: the output channels stay
    ctx.new_space(y, node, n, 1)
    ctx.slice(node, 1, n_axis, y, "out")
    if ca is not None and ca.ndim >= 1 and ca.shape[-1] == n and n > 1:
        ctx.slice(node, 2, ca.ndim - 1, y, "out", "bias")


@register("MatMul")
def matmul(ctx: Context, node: ir.Node) -> None:
    a, bw = node.inputs[0], node.inputs[1]
    y = node.outputs[0]
    ba = ctx.const(bw)
    lay = ctx.layout(a)
    if ba is None or ba.ndim != 2:
        if lay is not None or ctx.layout(bw) is not None:
            raise stop("second input is not a constant matrix")
        return
    ra = _rank_of(ctx, a)
    if lay is not None:
        if ra < 2 or lay.axis != ra - 1:
            raise stop("channels are not on the contraction (last) axis")
        ctx.accept(0)
        ctx.slice(node, 1, 0, a, "in")
    ry = _rank_of(ctx, y)
    ctx.new_space(y, node, ba.shape[1], ry - 1)
    ctx.slice(node, 1, 1, y, "out")


# ------------------------------------------------------------ per-channel ops


@register("BatchNormalization", "InstanceNormalization")
def norm(ctx: Context, node: ir.Node) -> None:
    lay = ctx.layout(node.inputs[0])
    if lay is None:
        return
    if lay.axis != 1:
        raise stop("channels not on axis 1")
    params = [1, 2, 3, 4] if node.op_type == "BatchNormalization" else [1, 2]
    for i in params:
        if i >= len(node.inputs) or ctx.const(node.inputs[i]) is None:
            raise stop(f"parameter {i} is not a constant")
    if any(len(v.uses()) for v in node.outputs[1:]):
        raise stop("training-mode outputs are used")
    ctx.accept(0)
    for i in params:
        tag = "bn_scale" if i == 1 else "param"
        ctx.slice(node, i, 0, node.outputs[0], "param", tag)
    ctx.set_layout(node.outputs[0], lay)


_UNARY = (
    "Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Cast",
    "Identity", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Softplus", "Softsign", "Elu",
    "Selu", "Celu", "Mish", "ThresholdedRelu", "Shrink", "Floor", "Ceil", "Round", "Sign", "Sin",
    "Cos", "Swish", "IsNaN", "IsInf", "Not",
)


@register(*_UNARY)
def unary(ctx: Context, node: ir.Node) -> None:
    lay = ctx.layout(node.inputs[0])
    if lay is None:
        return
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], lay)


@register("Clip")
def clip(ctx: Context, node: ir.Node) -> None:
    lay = ctx.layout(node.inputs[0])
    if lay is None:
        return
    for v in node.inputs[1:]:
        if v is not None and ctx.layout(v) is not None:
            raise stop("min/max carry channels")
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], lay)


@register("Dropout")
def dropout(ctx: Context, node: ir.Node) -> None:
    lay = ctx.layout(node.inputs[0])
    if lay is None:
        return
    ctx.accept(0)
    for v in node.outputs:
        ctx.set_layout(v, lay)


@register("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
def pool(ctx: Context, node: ir.Node) -> None:
    lay = ctx.layout(node.inputs[0])
    if lay is None:
        return
    if lay.axis != 1:
        raise stop("channels not on axis 1")
    if len(node.outputs) > 1 and node.outputs[1].uses():
        raise stop("pooling indices are used")
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], lay)


@register("Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "PRelu", "Sum", "Mean")
def elementwise(ctx: Context, node: ir.Node) -> None:
    """Broadcasting elementwise ops: tie the channels of every input carrying them."""
    lays = _input_layouts(ctx, node)
    if not lays:
        return
    y = node.outputs[0]
    ry = _rank_of(ctx, y)
    aligned: dict[int, Layout] = {}
    for i, lay in lays.items():
        ri = _rank_of(ctx, node.inputs[i])
        aligned[i] = lay.with_axis(lay.axis + ry - ri)
    first_i = next(iter(aligned))
    out = aligned[first_i]
    if node.op_type == "Pow" and 1 in aligned:
        raise stop("exponent carries channels")
    for i, lay in aligned.items():
        if lay.axis != out.axis:
            raise stop("inputs carry channels on different axes")
    for i, lay in aligned.items():
        if i != first_i:
            if not ctx.union(out, lay, f"{node.op_type} {node.name!r} ties tensors"):
                raise stop("inputs' channel layouts differ")
    axis = out.axis
    for i, v in enumerate(node.inputs):
        if v is None or i in aligned:
            continue
        shape = ctx.shape(v)
        if shape is None:
            raise stop(f"shape of input {i} unknown")
        ia = axis - (ry - len(shape))
        dim = shape[ia] if 0 <= ia < len(shape) else 1
        if dim == 1:
            continue
        if ctx.const(v) is not None and dim == out.size:
            tag = "slope" if node.op_type == "PRelu" else "param"
            ctx.slice(node, i, ia, y, "param", tag)
            continue
        # a computed tensor with as many channels but of another origin: tie it as opaque
        raise stop(f"input {i} ({v.name!r}) has {dim} entries on the channel axis of another origin")
    for i in aligned:
        ctx.accept(i)
    ctx.set_layout(y, out)


# ------------------------------------------------------------- layout changes


def _reshape_layout(lay: Layout, in_shape: tuple[int | None, ...], out_shape: tuple[int | None, ...]) -> tuple[Layout, int]:
    """Layout after a reshape that keeps each channel one contiguous block (Flatten-like)."""
    a = lay.axis
    tail_in = in_shape[a + 1 :]
    if any(d is None for d in tail_in) or in_shape[a] is None:
        raise stop("dims after the channel axis are not static")
    inner = math.prod(tail_in)  # elements per channel-axis entry
    total = in_shape[a] * inner
    # find the output axis a' with prod(out[a':]) == total
    prod = 1
    for ap in range(len(out_shape) - 1, -1, -1):
        d = out_shape[ap]
        if d is None:
            break
        prod *= d
        if prod == total:
            rest = math.prod(out_shape[ap + 1 :])  # type: ignore[arg-type]
            dim = out_shape[ap]
            assert dim is not None
            if dim % in_shape[a] == 0 and inner == (dim // in_shape[a]) * rest:
                # drop leading size-1 axes that prod matched too early
                return Layout(ap, lay.scaled(dim // in_shape[a]).segments), ap
            break
        if prod > total:
            break
    raise stop(f"reshape {list(in_shape)} -> {list(out_shape)} mixes channels")


def _shuffle_pattern(
    ctx: Context, node: ir.Node, axis: int, in_shape: tuple[int | None, ...], out_shape: tuple[int | None, ...]
) -> tuple[ir.Node, ir.Node, int, int] | None:
    """``(transpose, reshape_back, g, m)`` when ``node`` starts a channel shuffle.

    The pattern: this Reshape splits the channel axis into ``(g, m)``, a Transpose
    swaps the two axes (and nothing else), a Reshape merges them back into the
    original shape. Intermediate tensors feed nothing else.
    """
    if node.op_type != "Reshape" or len(out_shape) != len(in_shape) + 1:
        return None
    if out_shape[:axis] != in_shape[:axis] or out_shape[axis + 2 :] != in_shape[axis + 1 :]:
        return None
    g, m = out_shape[axis], out_shape[axis + 1]
    if g is None or m is None or g * m != in_shape[axis]:
        return None
    mid = node.outputs[0]
    users = mid.consumers()
    if len(users) != 1 or users[0].op_type != "Transpose" or mid.is_graph_output():
        return None
    tr = users[0]
    perm = _ints(tr, "perm")
    want = list(range(len(out_shape)))
    want[axis], want[axis + 1] = axis + 1, axis
    if perm != want:
        return None
    t_out = tr.outputs[0]
    users = t_out.consumers()
    if len(users) != 1 or users[0].op_type != "Reshape" or t_out.is_graph_output():
        return None
    back = users[0]
    if back.inputs[0] is not t_out or ctx.shape(back.outputs[0]) != in_shape:
        return None
    return tr, back, int(g), int(m)


def _shuffle(ctx: Context, node: ir.Node, lay: Layout, pattern: tuple[ir.Node, ir.Node, int, int]) -> None:
    """Channel shuffle: element ``i*m + j`` moves to ``j*g + i``; ``{i*m + j : i}`` are tied."""
    _tr, back, g, m = pattern
    a = lay.axis
    s1, s2 = ctx.const(node.inputs[1]), ctx.const(back.inputs[1])
    if s1 is None or s2 is None:
        raise stop("channel shuffle: target shapes are not constants")
    s1, s2 = [int(d) for d in s1], [int(d) for d in s2]
    for n, s in ((node, s1), (back, s2)):
        if _int(n, "allowzero", 0) and 0 in s:
            raise stop("channel shuffle: allowzero with zeros in the shape")
    rank = _rank_of(ctx, node.inputs[0])
    if len(s1) != rank + 1 or len(s2) != rank:
        raise stop("channel shuffle: target shape rank mismatch")
    if s1[a] not in (g, -1) or s1[a + 1] not in (m, -1) or s2[a] not in (g * m, -1):
        raise stop(f"channel shuffle: shape entries {s1[a]}, {s1[a + 1]}, {s2[a]} on the channel axes (0 copies)")
    owners = [(s.space, s.start + k) for s in lay.segments for k in range(s.count) for _ in range(s.rep)]
    for j in range(m):
        ctx.tie_elements(lay, [i * m + j for i in range(g)])
    moved = [owners[i * m + j] for j in range(m) for i in range(g)]
    segs: list[Segment] = []
    for sid, ch in moved:  # run-length: channel blocks, then consecutive channels
        if segs and segs[-1].space == sid and segs[-1].count == 1 and segs[-1].start == ch:
            last = segs[-1]
            segs[-1] = Segment(sid, ch, 1, last.rep + 1)
        else:
            segs.append(Segment(sid, ch, 1, 1))
    merged: list[Segment] = []
    for seg in segs:
        if merged and merged[-1].space == seg.space and merged[-1].rep == seg.rep and merged[-1].start + merged[-1].count == seg.start:
            last = merged[-1]
            merged[-1] = Segment(seg.space, last.start, last.count + 1, last.rep)
        else:
            merged.append(seg)
    ctx.accept(0)
    ctx.set_layout(back.outputs[0], Layout(a, tuple(merged)))
    if s1[a + 1] > 0:
        ctx.edit("reshape_split", node, axis=a + 1, parts=g, value=str(node.inputs[0].name))
    if s2[a] > 0:
        ctx.edit("reshape", back, axis=a, value=str(back.outputs[0].name))


@register("Flatten", "Reshape")
def reshape(ctx: Context, node: ir.Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    lay = ctx.layout(x)
    if lay is None:
        return
    in_shape, out_shape = ctx.shape(x), ctx.shape(y)
    if in_shape is None or out_shape is None:
        raise stop("shapes unknown")
    if lay.axis == 0 and in_shape[0] is None:
        raise stop("channels on a dynamic axis 0")
    if in_shape[lay.axis] != lay.size:
        raise stop("channel axis size does not match")
    pattern = _shuffle_pattern(ctx, node, lay.axis, in_shape, out_shape)
    if pattern is not None:
        _shuffle(ctx, node, lay, pattern)
        return
    out, ap = _reshape_layout(lay, in_shape, out_shape)
    if node.op_type == "Reshape":
        shape = ctx.const(node.inputs[1])
        if shape is None:
            raise stop("target shape is not a constant (shape-computing subgraph)")
        if _int(node, "allowzero", 0) and 0 in shape.tolist():
            raise stop("allowzero with zeros in the shape")
        if len(shape) != len(out_shape):
            raise stop("target shape rank mismatch")
        s = int(shape[ap])
        if s == 0 and not (ap == lay.axis and out.segments == lay.segments):
            raise stop("0 (copy) on the channel axis changes meaning")
        if s > 0:
            ctx.edit("reshape", node, axis=ap, value=str(y.name))
    ctx.accept(0)
    ctx.set_layout(y, out)


@register("Transpose")
def transpose(ctx: Context, node: ir.Node) -> None:
    lay = ctx.layout(node.inputs[0])
    if lay is None:
        return
    r = _rank_of(ctx, node.inputs[0])
    perm = _ints(node, "perm") or list(range(r))[::-1]
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], lay.with_axis(perm.index(lay.axis)))


def _axes(ctx: Context, node: ir.Node, idx: int) -> list[int] | None:
    attr = _ints(node, "axes")
    if attr is not None:
        return attr
    if len(node.inputs) > idx and node.inputs[idx] is not None:
        c = ctx.const(node.inputs[idx])
        if c is None:
            raise stop("axes are not constant")
        return [int(a) for a in np.ravel(c)]
    return None


@register("Squeeze")
def squeeze(ctx: Context, node: ir.Node) -> None:
    x = node.inputs[0]
    lay = ctx.layout(x)
    if lay is None:
        return
    shape = ctx.shape(x)
    if shape is None:
        raise stop("shape unknown")
    axes = _axes(ctx, node, 1)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
        if any(d is None for d in shape):
            raise stop("squeeze without axes on a partially unknown shape")
    axes = [_norm_axis(a, len(shape)) for a in axes]
    if lay.axis in axes:
        raise stop("squeezes the channel axis")
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], lay.with_axis(lay.axis - sum(a < lay.axis for a in axes)))


@register("Unsqueeze")
def unsqueeze(ctx: Context, node: ir.Node) -> None:
    x = node.inputs[0]
    lay = ctx.layout(x)
    if lay is None:
        return
    axes = _axes(ctx, node, 1)
    if axes is None:
        raise stop("axes unknown")
    r_out = _rank_of(ctx, x) + len(axes)
    axes = sorted(_norm_axis(a, r_out) for a in axes)
    pos = [i for i in range(r_out) if i not in axes]
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], lay.with_axis(pos[lay.axis]))


@register("Concat")
def concat(ctx: Context, node: ir.Node) -> None:
    lays = _input_layouts(ctx, node)
    if not lays:
        return
    y = node.outputs[0]
    r = _rank_of(ctx, y)
    axis = _norm_axis(_int(node, "axis", 0), r)
    if any(lay.axis != axis for lay in lays.values()):
        if any(lay.axis == axis for lay in lays.values()):
            raise stop("inputs carry channels on different axes")
        # concatenation along another axis: all inputs share the channels
        if len(lays) != len([v for v in node.inputs if v is not None]):
            raise stop("an input of unknown origin shares the channel axis")
        items = list(lays.values())
        for other in items[1:]:
            if not ctx.union(items[0], other, f"Concat {node.name!r}"):
                raise stop("channel layouts differ")
        for i in lays:
            ctx.accept(i)
        ctx.set_layout(y, items[0])
        return
    segs = []
    for i, v in enumerate(node.inputs):
        if v is None:
            continue
        lay = lays.get(i)
        if lay is None:
            shape = ctx.shape(v)
            if shape is None or shape[axis] is None:
                raise stop(f"input {i} size on the concat axis unknown")
            if shape[axis] == 0:
                continue
            lay = ctx.opaque(int(shape[axis]), axis, f"Concat {node.name!r} input {i} ({v.name!r}) of unknown origin")
        segs.extend(lay.segments)
    for i in lays:
        ctx.accept(i)
    ctx.set_layout(y, Layout(axis, tuple(segs)))


@register("Split")
def split(ctx: Context, node: ir.Node) -> None:
    x = node.inputs[0]
    lay = ctx.layout(x)
    if lay is None:
        return
    r = _rank_of(ctx, x)
    axis = _norm_axis(_int(node, "axis", 0), r)
    if axis != lay.axis:
        ctx.accept(0)
        for v in node.outputs:
            ctx.set_layout(v, lay)
        return
    sizes = []
    for v in node.outputs:
        s = ctx.shape(v)
        if s is None or s[axis] is None:
            raise stop("output sizes unknown")
        sizes.append(int(s[axis]))
    if sum(sizes) != lay.size:
        raise stop("split sizes do not add up")
    pos = 0
    outs = []
    for v, size in zip(node.outputs, sizes):
        part = lay.cut(pos, pos + size)
        if part is None:
            raise stop("split cuts through a channel block")
        outs.append(part)
        pos += size
    ctx.accept(0)
    for v, part in zip(node.outputs, outs):
        ctx.set_layout(v, part)
    ctx.edit("split", node, outputs=tuple(str(v.name) for v in node.outputs))


@register("Slice")
def slice_op(ctx: Context, node: ir.Node) -> None:
    x = node.inputs[0]
    lay = ctx.layout(x)
    if lay is None:
        return
    if ctx.opset < 10:
        raise stop("opset < 10 Slice")
    consts = [ctx.const(node.inputs[i]) if len(node.inputs) > i and node.inputs[i] is not None else None for i in range(1, 5)]
    starts, ends = consts[0], consts[1]
    if starts is None or ends is None:
        raise stop("starts/ends are not constant")
    r = _rank_of(ctx, x)
    axes = [int(a) for a in consts[2]] if consts[2] is not None else list(range(len(starts)))
    if len(node.inputs) > 3 and node.inputs[3] is not None and consts[2] is None:
        raise stop("axes are not constant")
    if len(node.inputs) > 4 and node.inputs[4] is not None and consts[3] is None:
        raise stop("steps are not constant")
    steps = [int(s) for s in consts[3]] if consts[3] is not None else [1] * len(axes)
    axes = [_norm_axis(a, r) for a in axes]
    if lay.axis not in axes:
        ctx.accept(0)
        ctx.set_layout(node.outputs[0], lay)
        return
    k = axes.index(lay.axis)
    if steps[k] != 1:
        raise stop("strided slice on the channel axis")
    n = lay.size
    b, e = int(starts[k]), int(ends[k])
    b = max(0, min(n, b + n if b < 0 else b))
    e = max(0, min(n, e + n if e < 0 else e))
    part = lay.cut(b, max(b, e))
    if part is None or not part.segments:
        raise stop("slice cuts through a channel block")
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], part)
    ctx.edit("slice", node, index=k, begin=b, end=max(b, e), value=str(x.name))


@register("Pad")
def pad(ctx: Context, node: ir.Node) -> None:
    x = node.inputs[0]
    lay = ctx.layout(x)
    if lay is None:
        return
    r = _rank_of(ctx, x)
    if ctx.opset < 11:
        pads = _ints(node, "pads") or [0] * (2 * r)
        axes = list(range(r))
    else:
        pads_c = ctx.const(node.inputs[1]) if len(node.inputs) > 1 else None
        if pads_c is None:
            raise stop("pads are not constant")
        pads = [int(p) for p in pads_c]
        axes = list(range(r))
        if len(node.inputs) > 3 and node.inputs[3] is not None:
            ax = ctx.const(node.inputs[3])
            if ax is None:
                raise stop("axes are not constant")
            axes = [_norm_axis(int(a), r) for a in ax]
    for v in node.inputs[1:]:
        if v is not None and ctx.layout(v) is not None:
            raise stop("pad parameters carry channels")
    n = len(axes)
    if lay.axis in axes:
        k = axes.index(lay.axis)
        if pads[k] != 0 or pads[k + n] != 0:
            raise stop("pads the channel axis")
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], lay)


@register("Resize", "Upsample")
def resize(ctx: Context, node: ir.Node) -> None:
    x = node.inputs[0]
    lay = ctx.layout(x)
    if lay is None:
        return
    r = _rank_of(ctx, x)
    if _ints(node, "axes") is not None:
        raise stop("Resize with axes")
    for i, v in enumerate(node.inputs[1:], start=1):
        if v is None or not v.name:
            continue
        if ctx.layout(v) is not None:
            raise stop("parameters carry channels")
        c = ctx.const(v)
        if c is None:
            if ctx.shape(v) == (0,):
                continue
            raise stop(f"input {i} is not a constant")
        if c.size == 0:
            continue
        is_sizes = node.op_type == "Resize" and i == 3
        is_scales = (node.op_type == "Resize" and i == 2) or (node.op_type == "Upsample" and i == 1)
        if is_scales and c.size == r and float(c[lay.axis]) != 1.0:
            raise stop("scales the channel axis")
        if is_sizes:
            ctx.edit("resize_sizes", node, axis=lay.axis, value=str(x.name))
    if node.op_type == "Upsample":
        sc = _ints(node, "scales")
        if sc is not None:
            raise stop("Upsample scales attribute")
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], lay)


@register("Softmax", "LogSoftmax", "Hardmax")
def softmax(ctx: Context, node: ir.Node) -> None:
    x = node.inputs[0]
    lay = ctx.layout(x)
    if lay is None:
        return
    r = _rank_of(ctx, x)
    default = -1 if ctx.opset >= 13 else 1
    axis = _norm_axis(_int(node, "axis", default), r)
    if (ctx.opset >= 13 and lay.axis == axis) or (ctx.opset < 13 and lay.axis >= axis):
        raise stop("normalizes over the channel axis")
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], lay)


@register("LayerNormalization")
def layer_norm(ctx: Context, node: ir.Node) -> None:
    x = node.inputs[0]
    lay = ctx.layout(x)
    if lay is None:
        return
    r = _rank_of(ctx, x)
    axis = _norm_axis(_int(node, "axis", -1), r)
    if lay.axis >= axis:
        raise stop("normalizes over the channel axis")
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], lay)


@register(
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
)
def reduce(ctx: Context, node: ir.Node) -> None:
    x = node.inputs[0]
    lay = ctx.layout(x)
    if lay is None:
        return
    r = _rank_of(ctx, x)
    axes = _axes(ctx, node, 1)
    if not axes:
        if _int(node, "noop_with_empty_axes", 0):
            ctx.accept(0)
            ctx.set_layout(node.outputs[0], lay)
            return
        raise stop("reduces over all axes")
    axes = [_norm_axis(a, r) for a in axes]
    if lay.axis in axes:
        raise stop("reduces over the channel axis")
    keep = _int(node, "keepdims", 1)
    ctx.accept(0)
    ctx.set_layout(node.outputs[0], lay.with_axis(lay.axis if keep else lay.axis - sum(a < lay.axis for a in axes)))
