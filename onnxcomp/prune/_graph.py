"""Channel dependency analysis: which channels of which tensors must be pruned together.

Model
-----
Every *source* (an op that creates fresh output channels from a contraction:
Conv, ConvTranspose, Gemm, MatMul with a constant weight) opens a **space** of
``C`` channels. Every tensor that carries channels gets a **layout**: the
channel axis and a list of segments ``(space, start, count, rep)``, read left
to right along the axis; one channel covers ``rep`` consecutive elements
(``rep > 1`` after Flatten/Reshape, where one channel is a block of ``H*W``
features, or after a depthwise conv with channel multiplier ``m``).

Handlers (``_handlers.py``) propagate layouts from inputs to outputs in
topological order. Ops that combine tensors elementwise (residual Add, SE Mul,
...) **union** the channels element by element (a union-find over channels);
Concat composes segments, Split/Slice cut them. The equivalence classes of the
channel union-find are the pruning **units** (a unit is kept or removed as a
whole); the connected components of spaces are the **groups**.

Anything a handler does not explicitly accept **blocks** the spaces of the
layouts it touches (unknown ops, Softmax/Reduce over the channel axis, graph
outputs, shape computations, ...). A group with a blocked space is not pruned
and the reason is kept for the plan.

Handlers also record what must be rewritten when channels go away: parameter
slices (a constant input of a node, an axis, and the tensor whose layout gives
the kept elements) and edits of attributes/shape constants.

Grouped convolutions add **balance constraints** ``(layout, p)``: the kept
elements of the layout must fall equally into its ``p`` equal blocks (a grouped
conv's output channels; the input of a grouped conv, whose layout may be
permuted, e.g. by a channel shuffle). Per constraint every unit ``u`` has a
count vector ``v_u`` (its elements per block); the removed units must have a
uniform summed vector. After propagation, units whose vectors straddle blocks
(neither uniform nor one block) are tied together when their vectors sum to a
uniform one (ShuffleNet with ``C/g`` not a multiple of ``g``); the plan then
keeps equal counts per block (``_plan.py``).

A **channel shuffle** ``Reshape [N,C,...] -> [N,g,C/g,...]``, ``Transpose``
swapping the two, ``Reshape`` back, moves element ``i*(C/g) + j`` to
``j*g + i``. The elements ``{i*(C/g) + j : i < g}`` are tied (one unit per
``j``), so the kept set is ``{i*(C/g) + j : j in J}`` for a common ``J``:
the pruned tensor has ``C' = g*|J|`` channels, the pruned shuffle (shape
constants rewritten to ``|J|`` and ``g*|J|``) is still a shuffle, and it keeps
the relative order of the kept elements (``j_k*g + i`` sorts like ``k*g + i``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)

__all__ = ["Analysis", "Edit", "Layout", "ParamSlice", "Segment", "Space", "analyze"]


@dataclass(frozen=True)
class Segment:
    """``count`` channels of ``space`` starting at ``start``, each ``rep`` elements wide."""

    space: int
    start: int
    count: int
    rep: int = 1

    @property
    def size(self) -> int:
        return self.count * self.rep


@dataclass(frozen=True)
class Layout:
    """Where the channels of one tensor live: an axis and segments along it."""

    axis: int
    segments: tuple[Segment, ...]

    @property
    def size(self) -> int:
        return sum(s.size for s in self.segments)

    def with_axis(self, axis: int) -> Layout:
        return Layout(axis, self.segments)

    def scaled(self, factor: int) -> Layout:
        return Layout(self.axis, tuple(Segment(s.space, s.start, s.count, s.rep * factor) for s in self.segments))

    def cut(self, begin: int, end: int) -> Layout | None:
        """Elements ``[begin, end)`` as a layout; None when the cut splits a channel."""
        out: list[Segment] = []
        pos = 0
        for s in self.segments:
            lo, hi = max(begin, pos), min(end, pos + s.size)
            if lo < hi:
                if (lo - pos) % s.rep or (hi - pos) % s.rep:
                    return None
                out.append(Segment(s.space, s.start + (lo - pos) // s.rep, (hi - lo) // s.rep, s.rep))
            pos += s.size
        return Layout(self.axis, tuple(out))

    def element_channels(self) -> Iterable[tuple[int, int, int, int]]:
        """``(element_begin, element_end, space, channel)`` for every channel."""
        pos = 0
        for s in self.segments:
            for k in range(s.count):
                yield pos, pos + s.rep, s.space, s.start + k
                pos += s.rep


@dataclass
class Space:
    """Fresh channels created by one source node (or opaque channels of unknown origin)."""

    id: int
    key: str  # name of the tensor whose channel axis defines the space
    node: str  # producer node name ("" for opaque spaces)
    op_type: str
    size: int
    offset: int  # first index of its channels in the union-find
    partition: int = 1  # grouped conv: channels form `partition` equal parts
    blocked: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ParamSlice:
    """Slice constant input ``input`` of ``node`` along ``axis`` as tensor ``value`` is pruned.

    ``role``: ``out`` (a source's output weights/bias), ``in`` (a contraction over
    the channels: masked in the reference model), ``param`` (per-channel
    parameter: BN, bias, PRelu slope, depthwise weights). ``groups > 1`` slices
    ``axis`` separately within each of ``groups`` blocks of ``group_axis``
    (grouped convolutions). ``tag`` says what the tensor is, for importance.
    """

    node: str
    input: int
    axis: int
    value: str
    role: str
    tag: str = "weight"
    groups: int = 1
    group_axis: int = 0


@dataclass(frozen=True)
class Constraint:
    """The kept elements of ``value``'s layout must fall equally into ``parts`` equal blocks."""

    value: str
    parts: int
    where: str


@dataclass(frozen=True)
class Edit:
    """An attribute or shape constant to rewrite (``kind`` names the rewrite)."""

    kind: str
    node: str
    data: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str) -> Any:
        return dict(self.data)[key]


class UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self, n: int) -> int:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        return start

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if ra < rb:
                self.parent[rb] = ra
            else:
                self.parent[ra] = rb


@dataclass
class Analysis:
    """Result of :func:`analyze` on one model."""

    model: ir.Model
    spaces: list[Space]
    layouts: dict[str, Layout]
    slices: list[ParamSlice]
    edits: list[Edit]
    channels: UnionFind
    space_sets: UnionFind
    nodes: dict[str, ir.Node]
    values: dict[str, ir.Value]
    constraints: list[Constraint] = field(default_factory=list)

    def group_of(self, space: int) -> int:
        return self.space_sets.find(space)

    def groups(self) -> dict[int, list[int]]:
        """Group root -> space ids (in creation order)."""
        out: dict[int, list[int]] = {}
        for s in self.spaces:
            out.setdefault(self.group_of(s.id), []).append(s.id)
        return out

    def unit(self, space: int, channel: int) -> int:
        return self.channels.find(self.spaces[space].offset + channel)

    def rebind(self, model: ir.Model) -> Analysis:
        """The same analysis for a clone of its model (node and value names are shared)."""
        nodes = {str(n.name): n for n in model.graph}
        values = ir.convenience.create_value_mapping(model.graph)
        return Analysis(
            model,
            self.spaces,
            self.layouts,
            self.slices,
            self.edits,
            self.channels,
            self.space_sets,
            nodes,
            values,
            self.constraints,
        )

    def balance_constraints(self) -> list[tuple[Layout, int, str]]:
        """Every balance constraint as ``(layout, parts, where)``."""
        out = []
        for s in self.spaces:
            if s.partition > 1 and s.node:
                out.append((Layout(1, (Segment(s.id, 0, s.size, 1),)), s.partition, f"{s.op_type} {s.node!r} output groups"))
        for c in self.constraints:
            lay = self.layouts.get(c.value)
            if lay is not None:
                out.append((lay, c.parts, c.where))
        return out

    def unit_vectors(self, layout: Layout, parts: int) -> dict[int, np.ndarray]:
        """Unit -> its number of elements in each of the ``parts`` blocks of ``layout``."""
        return unit_vectors(self.channels, self.spaces, layout, parts)

    def space_by_key(self) -> dict[str, Space]:
        return {s.key: s for s in self.spaces if s.node}


class Context:
    """Shared state of the propagation; handlers call its methods."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.graph = model.graph
        self.spaces: list[Space] = []
        self.layouts: dict[str, Layout] = {}
        self.slices: list[ParamSlice] = []
        self.edits: list[Edit] = []
        self.channels = UnionFind()
        self.space_sets = UnionFind()
        self.accepted: set[int] = set()
        self.constraints: list[Constraint] = []
        self.opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 13))

    # ----------------------------------------------------------- queries
    def layout(self, v: ir.Value | None) -> Layout | None:
        if v is None or not v.name:
            return None
        return self.layouts.get(v.name)

    @staticmethod
    def shape(v: ir.Value | None) -> tuple[int | None, ...] | None:
        if v is None:
            return None
        if v.const_value is not None:
            return tuple(int(d) for d in v.const_value.shape.numpy())
        if v.shape is None:
            return None
        return tuple(d if isinstance(d, int) else None for d in v.shape)

    def rank(self, v: ir.Value | None) -> int | None:
        s = self.shape(v)
        return None if s is None else len(s)

    @staticmethod
    def const(v: ir.Value | None) -> np.ndarray | None:
        if v is None or v.const_value is None or v.is_graph_input():
            return None
        try:
            return v.const_value.numpy()
        except Exception:  # e.g. unsupported dtype
            return None

    # ----------------------------------------------------------- building
    def new_space(
        self, value: ir.Value, node: ir.Node | None, size: int, axis: int, *, partition: int = 1
    ) -> Layout:
        sid = len(self.spaces)
        offset = self.channels.add(size)
        self.space_sets.add(1)
        self.spaces.append(
            Space(
                sid,
                str(value.name),
                str(node.name) if node is not None else "",
                node.op_type if node is not None else "",
                size,
                offset,
                partition,
            )
        )
        layout = Layout(axis, (Segment(sid, 0, size, 1),))
        self.layouts[str(value.name)] = layout
        return layout

    def opaque(self, size: int, axis: int, reason: str) -> Layout:
        """Channels of unknown origin (a graph input, a constant): never pruned."""
        sid = len(self.spaces)
        offset = self.channels.add(size)
        self.space_sets.add(1)
        self.spaces.append(Space(sid, f"<opaque {sid}>", "", "", size, offset, 1, [reason]))
        return Layout(axis, (Segment(sid, 0, size, 1),))

    def set_layout(self, v: ir.Value | None, layout: Layout | None) -> None:
        if v is not None and v.name and layout is not None:
            self.layouts[str(v.name)] = layout

    def accept(self, idx: int) -> None:
        self.accepted.add(idx)

    def block(self, layout: Layout | None, reason: str) -> None:
        if layout is None:
            return
        for seg in layout.segments:
            sp = self.spaces[seg.space]
            if reason not in sp.blocked:
                sp.blocked.append(reason)

    def union(self, a: Layout, b: Layout, reason: str) -> bool:
        """Tie the channels of two layouts element by element (same axis and size)."""
        if a.axis != b.axis or a.size != b.size:
            self.block(a, reason + " (channel layouts differ)")
            self.block(b, reason + " (channel layouts differ)")
            return False
        ea = list(_runs(a))
        eb = list(_runs(b))
        i = j = 0
        pos = 0
        while i < len(ea) and j < len(eb):
            sa, sb = ea[i], eb[j]
            lo = pos
            hi = min(sa[0] + sa[1].size, sb[0] + sb[1].size)
            step = math.gcd(sa[1].rep, sb[1].rep)
            for e in range(lo, hi, step):
                ca = self.spaces[sa[1].space].offset + sa[1].start + (e - sa[0]) // sa[1].rep
                cb = self.spaces[sb[1].space].offset + sb[1].start + (e - sb[0]) // sb[1].rep
                self.channels.union(ca, cb)
            self.space_sets.union(sa[1].space, sb[1].space)
            pos = hi
            if hi == sa[0] + sa[1].size:
                i += 1
            if hi == sb[0] + sb[1].size:
                j += 1
        return True

    def slice(
        self,
        node: ir.Node,
        idx: int,
        axis: int,
        value: ir.Value,
        role: str,
        tag: str = "weight",
        *,
        groups: int = 1,
        group_axis: int = 0,
    ) -> None:
        self.slices.append(
            ParamSlice(str(node.name), idx, axis, str(value.name), role, tag, groups, group_axis)
        )

    def edit(self, kind: str, node: ir.Node, **data: Any) -> None:
        self.edits.append(Edit(kind, str(node.name), tuple(sorted(data.items()))))

    def balance(self, value: ir.Value, parts: int, where: str) -> None:
        """Require the kept elements of ``value`` to fall equally into ``parts`` blocks."""
        self.constraints.append(Constraint(str(value.name), parts, where))

    def tie_elements(self, layout: Layout, positions: Sequence[int]) -> None:
        """Tie the channels at the given element positions of ``layout`` into one unit."""
        owners = list(_element_owners(layout))
        first = owners[positions[0]]
        for p in positions[1:]:
            o = owners[p]
            self.channels.union(self.spaces[first[0]].offset + first[1], self.spaces[o[0]].offset + o[1])
            self.space_sets.union(first[0], o[0])


def _element_owners(layout: Layout) -> Iterable[tuple[int, int]]:
    """``(space, channel)`` of every element along the channel axis."""
    for s in layout.segments:
        for k in range(s.count):
            for _ in range(s.rep):
                yield s.space, s.start + k


def unit_vectors(channels: UnionFind, spaces: list[Space], layout: Layout, parts: int) -> dict[int, np.ndarray]:
    """Unit -> number of its elements in each of the ``parts`` equal blocks of ``layout``."""
    block = layout.size // parts
    out: dict[int, np.ndarray] = {}
    for pos, (sid, ch) in enumerate(_element_owners(layout)):
        u = channels.find(spaces[sid].offset + ch)
        vec = out.get(u)
        if vec is None:
            vec = out[u] = np.zeros(parts, dtype=np.int64)
        vec[pos // block] += 1
    return out


def _space_of(an: Analysis, channel: int) -> int:
    import bisect

    offsets = [s.offset for s in an.spaces]
    return bisect.bisect_right(offsets, channel) - 1


def _tie_straddlers(an: Analysis) -> None:
    """Tie units straddling blocks of a balance constraint when together they are balanced."""
    for _ in range(8):
        changed = False
        for layout, parts, _where in an.balance_constraints():
            if layout.size % parts:
                continue
            vecs = an.unit_vectors(layout, parts)
            odd = [u for u, v in vecs.items() if v.min() != v.max() and np.count_nonzero(v) > 1]
            if len(odd) < 2:
                continue
            total = sum(vecs[u] for u in odd)
            if total.min() == total.max():
                for u in odd[1:]:
                    an.channels.union(odd[0], u)
                    an.space_sets.union(_space_of(an, odd[0]), _space_of(an, u))
                changed = True
        if not changed:
            return


def _runs(layout: Layout) -> Iterable[tuple[int, Segment]]:
    pos = 0
    for s in layout.segments:
        yield pos, s
        pos += s.size


def name_nodes(model: ir.Model) -> None:
    """Give every node and value a unique, deterministic name (needed to refer to them)."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)
    k = 0
    for node in model.graph:
        for v in node.outputs:
            if not v.name:
                v.name = f"_prune_v{k}"
                k += 1


def analyze(model: ir.Model, *, ignore: Sequence[str] = ()) -> Analysis:
    """Propagate channel layouts through ``model`` (shapes should be inferred).

    Args:
        model: The model; node names must be unique (see :func:`name_nodes`).
        ignore: fnmatch patterns of node names or op types whose output channels
            are not pruned.
    """
    from fnmatch import fnmatchcase

    from onnxcomp.prune._handlers import HANDLERS

    ctx = Context(model)
    nodes: dict[str, ir.Node] = {}
    main_nodes = set()
    for node in model.graph:
        nodes[str(node.name)] = node
        main_nodes.add(id(node))
        ctx.accepted = set()
        n_spaces = len(ctx.spaces)
        has_layout = any(ctx.layout(v) is not None for v in node.inputs)
        handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        where = f"{node.op_type} {node.name!r}"
        if handler is None:
            reason = f"unsupported op {where}" if has_layout else ""
        else:
            reason = ""
            try:
                handler(ctx, node)
            except _Stop as e:
                reason = f"{where}: {e}"
            except Exception as e:  # a handler bug must never produce a broken model
                logger.debug("handler %s failed", where, exc_info=True)
                reason = f"{where}: cannot analyze ({type(e).__name__}: {e})"
        if reason:
            for v in node.outputs:
                ctx.layouts.pop(str(v.name), None)
            ctx.accepted = set()
            for sp in ctx.spaces[n_spaces:]:
                sp.blocked.append(reason)
        for i, v in enumerate(node.inputs):
            if i not in ctx.accepted and ctx.layout(v) is not None:
                ctx.block(ctx.layout(v), reason or f"{where} consumes the channels (input {i})")
        if ignore and any(fnmatchcase(str(node.name), p) or fnmatchcase(node.op_type, p) for p in ignore):
            for sp in ctx.spaces[n_spaces:]:
                sp.blocked.append(f"{where} matches --ignore")
    for v in model.graph.outputs:
        ctx.block(ctx.layout(v), f"graph output {v.name!r}")
    values = ir.convenience.create_value_mapping(model.graph)
    for name, layout in ctx.layouts.items():
        v = values.get(name)
        if v is None:
            continue
        for user in v.consumers():
            if id(user) not in main_nodes:
                ctx.block(layout, f"used inside a subgraph of {user.op_type} {user.name!r}")
    an = Analysis(
        model,
        ctx.spaces,
        ctx.layouts,
        ctx.slices,
        ctx.edits,
        ctx.channels,
        ctx.space_sets,
        nodes,
        values,
        ctx.constraints,
    )
    _tie_straddlers(an)
    return an


class _Stop(Exception):
    """Raised by a handler: this node stops the channels (message = reason)."""


def stop(reason: str) -> _Stop:
    return _Stop(reason)
