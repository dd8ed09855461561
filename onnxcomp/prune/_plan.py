"""The pruning plan: plain data, printable, serializable, applied separately.

Selection per group of ``n`` units with ratio ``r``::

    keep = max(min_channels, n - floor(r * n))
    keep = min(n, ceil(keep / round_to) * round_to)

and the ``keep`` units of highest importance stay. A group tied to a grouped
convolution with ``g`` groups keeps ``keep / g`` units in each of its ``g``
parts (rounded up). ``--global`` ranks units of all groups together by their
importance divided by their group's mean, removes the lowest ``r`` fraction
overall, at most ``max_layer_ratio`` of any group.

MACs after pruning are exact without rebuilding the model: every MAC op's
count is proportional to the number of entries of its weight tensor
(``Conv: N*Ho*Wo * numel(W)``, ``Gemm/MatMul: M * numel(B)``,
``ConvTranspose: N*Hi*Wi * numel(W)``), so it scales by the kept fraction of
that weight.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from onnxcomp.prune._apply import kept_elements
from onnxcomp.prune._fold import BiasFold
from onnxcomp.prune._graph import Analysis

__all__ = ["BiasFold", "GroupPlan", "LayerChange", "PrunePlan"]


@dataclass
class LayerChange:
    """Channels of one source tensor before/after."""

    node: str
    op_type: str
    tensor: str
    before: int
    after: int


@dataclass
class GroupPlan:
    """One group of coupled channels.

    Attributes:
        id: Index of the group in the plan.
        spaces: The tensors whose channels form the group (outputs of the source nodes).
        nodes: The source nodes.
        channels: Number of pruning units (channels of the group).
        kept: Units kept.
        removed: Tensor name -> removed channel indices.
        pruned: False when the group is left alone (see ``reasons``).
        reasons: Why the group is left alone.
    """

    id: int
    spaces: list[str]
    nodes: list[str]
    channels: int
    kept: int
    removed: dict[str, list[int]] = field(default_factory=dict)
    pruned: bool = True
    reasons: list[str] = field(default_factory=list)


@dataclass
class PrunePlan:
    """What to remove, and what that changes."""

    criterion: str
    groups: list[GroupPlan]
    layers: list[LayerChange]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    notes: list[str] = field(default_factory=list)
    folds: list[BiasFold] = field(default_factory=list)

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def removed_channels(self) -> int:
        return sum(g.channels - g.kept for g in self.groups if g.pruned)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["macs_ratio"] = round(self.macs_ratio, 6)
        d["params_ratio"] = round(self.params_ratio, 6)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PrunePlan:
        return cls(
            criterion=d["criterion"],
            groups=[GroupPlan(**g) for g in d["groups"]],
            layers=[LayerChange(**x) for x in d["layers"]],
            macs_before=d["macs_before"],
            macs_after=d["macs_after"],
            params_before=d["params_before"],
            params_after=d["params_after"],
            notes=list(d.get("notes", [])),
            folds=[BiasFold(**f) for f in d.get("folds", [])],
        )


# ----------------------------------------------------------------- groups


@dataclass
class Group:
    """A group of the analysis with its units (internal, not plain data).

    ``parts`` maps the units tied to grouped convolutions to their part (units
    not in it are free); the selection keeps the same number of units in each
    of the ``partition`` parts.
    """

    root: int
    spaces: list[int]
    units: list[int]  # union-find roots
    members: dict[int, list[tuple[int, int]]]  # unit -> (space, channel)
    partition: int
    reasons: list[str]
    parts: dict[int, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.units)


def build_groups(an: Analysis) -> list[Group]:
    groups = []
    for root, sids in an.groups().items():
        spaces = [an.spaces[s] for s in sids]
        if not any(s.node for s in spaces):
            continue
        members: dict[int, list[tuple[int, int]]] = {}
        for s in spaces:
            for c in range(s.size):
                members.setdefault(an.unit(s.id, c), []).append((s.id, c))
        reasons = [r for s in spaces for r in s.blocked]
        groups.append(Group(root, sids, list(members), members, 1, list(dict.fromkeys(reasons))))
    by_root = {g.root: g for g in groups}
    per_group: dict[int, list[tuple[dict[int, np.ndarray], int, str]]] = {}
    for layout, parts, where in an.balance_constraints():
        roots = {an.group_of(seg.space) for seg in layout.segments}
        if layout.size % parts:
            for r in roots:
                if r in by_root:
                    by_root[r].reasons.append(f"{where}: {layout.size} channels do not split into {parts} groups")
            continue
        vecs = an.unit_vectors(layout, parts)
        split: dict[int, dict[int, np.ndarray]] = {}
        for u, v in vecs.items():
            for r in roots:
                g = by_root.get(r)
                if g is not None and u in g.members:
                    split.setdefault(r, {})[u] = v
                    break
        for r, vs in split.items():
            per_group.setdefault(r, []).append((vs, parts, where))
    for root, cons in per_group.items():
        g = by_root[root]
        if g.reasons:
            continue
        reason = _resolve_parts(g, cons)
        if reason:
            g.reasons.append(reason)
    return groups


def _resolve_parts(g: Group, cons: list[tuple[dict[int, np.ndarray], int, str]]) -> str:
    """Set ``g.parts``/``g.partition`` from the balance constraints; a reason if unsatisfiable."""
    labels: list[tuple[dict[int, int], int, str]] = []
    for vecs, parts, where in cons:
        lab: dict[int, int] = {}
        widths = set()
        for u, v in vecs.items():
            if v.min() == v.max():
                continue  # balanced on its own: free
            if np.count_nonzero(v) != 1:
                return f"{where}: channels straddle its groups"
            lab[u] = int(np.argmax(v))
            widths.add(int(v.max()))
        if len(widths) > 1:
            return f"{where}: channels of unequal width in its groups"
        if lab:
            labels.append((lab, parts, where))
    if not labels:
        return ""
    constrained = sorted({u for lab, _, _ in labels for u in lab})
    fine: dict[tuple[int | None, ...], list[int]] = {}
    for u in constrained:
        fine.setdefault(tuple(lab.get(u) for lab, _, _ in labels), []).append(u)
    sizes = {len(v) for v in fine.values()}
    if len(sizes) != 1:
        wheres = [w for _, _, w in labels]
        more = f" and {len(wheres) - 3} more" if len(wheres) > 3 else ""
        what = "grouped convolutions with misaligned groups" if len(wheres) > 1 else "grouped convolution"
        return f"{what} ({', '.join(wheres[:3])}{more}): {len(constrained)} channels do not split into equal parts"
    for k, (_lab, parts, where) in enumerate(labels):
        count = np.zeros(parts, dtype=np.int64)
        for key in fine:
            if key[k] is not None:
                count[key[k]] += 1
        if count.min() != count.max():
            return f"{where}: its groups cannot keep equal channel counts (coupled with other channels)"
    g.partition = len(fine)
    for i, key in enumerate(sorted(fine, key=lambda t: tuple(-1 if x is None else x for x in t))):
        for u in fine[key]:
            g.parts[u] = i
    return ""


def unit_part(an: Analysis, g: Group, unit: int) -> int:
    """The part of ``unit`` (-1: free)."""
    return g.parts.get(unit, -1)


def keep_count(n: int, ratio: float, min_channels: int, round_to: int) -> int:
    keep = n - math.floor(ratio * n + 1e-9)
    keep = max(keep, min(min_channels, n), 1)
    if round_to > 1:
        keep = min(n, math.ceil(keep / round_to) * round_to)
    return keep


def select(an: Analysis, g: Group, unit_scores: np.ndarray, keep: int) -> set[int]:
    """Units to keep: the ``keep`` best, the same number in each part."""
    order = list(np.argsort(-unit_scores, kind="stable"))
    if g.partition == 1 and not g.parts:
        return {g.units[i] for i in order[:keep]}
    n_parts = g.partition
    size = len(g.parts) // n_parts
    n_free = g.n - len(g.parts)
    if n_free == 0:
        per = min(max(1, math.ceil(keep / n_parts - 1e-9)), size)
    else:  # the split between parts and free units that comes closest to `keep` (more in parts on ties)
        per = min(
            range(1, size + 1),
            key=lambda k: (abs(keep - k * n_parts - min(max(0, keep - k * n_parts), n_free)), -k),
        )
    free_keep = min(max(0, keep - per * n_parts), n_free)
    chosen: set[int] = set()
    counts = [0] * n_parts
    free = 0
    for i in order:
        u = g.units[i]
        part = g.parts.get(u, -1)
        if part < 0:
            if free < free_keep:
                free += 1
                chosen.add(u)
        elif counts[part] < per:
            counts[part] += 1
            chosen.add(u)
    return chosen


def keep_masks(an: Analysis, groups: list[Group], kept_units: dict[int, set[int]]) -> dict[int, np.ndarray]:
    """Space id -> bool mask of kept channels, for the groups being pruned."""
    masks: dict[int, np.ndarray] = {}
    for g in groups:
        kept = kept_units.get(g.root)
        if kept is None or len(kept) == g.n:
            continue
        for sid in g.spaces:
            masks[sid] = np.ones(an.spaces[sid].size, dtype=bool)
        for unit, chans in g.members.items():
            if unit not in kept:
                for sid, c in chans:
                    masks[sid][c] = False
    return masks


def estimate(an: Analysis, masks: dict[int, np.ndarray], macs_by_node: dict[str, int | None], params: int) -> tuple[int, int]:
    """(MACs, params) after applying ``masks``.

    A constant shared by several nodes gets a private copy per node that slices
    it (as :func:`~onnxcomp.prune._apply.apply_selection` does).
    """
    frac: dict[tuple[str, int], float] = {}
    cache: dict[str, float] = {}
    for sl in an.slices:
        if sl.value not in cache:
            lay = an.layouts[sl.value]
            cache[sl.value] = kept_elements(lay, masks).size / lay.size if lay.size else 1.0
        v = an.nodes[sl.node].inputs[sl.input]
        if v is None or v.const_value is None:
            continue
        shape = v.const_value.shape.numpy()
        if sl.groups <= 1 and shape[sl.axis] == 1 and an.layouts[sl.value].size != 1:
            continue
        key = (sl.node, sl.input)
        frac[key] = frac.get(key, 1.0) * cache[sl.value]
    macs = 0.0
    for node, m in macs_by_node.items():
        if m:
            macs += m * frac.get((node, 1), 1.0)
    by_value: dict[int, tuple[Any, list[float]]] = {}
    for (node, idx), f in frac.items():
        if f >= 1.0:
            continue
        v = an.nodes[node].inputs[idx]
        assert v is not None and v.const_value is not None
        by_value.setdefault(id(v), (v, []))[1].append(f)
    delta = 0.0
    for v, fs in by_value.values():
        n = int(np.prod(v.const_value.shape.numpy()))
        unsliced = len(v.uses()) - len(fs)
        delta += sum(n * f for f in fs) + (n if unsliced > 0 else 0) - n
    return int(round(macs)), int(round(params + delta))


def layer_changes(an: Analysis, masks: dict[int, np.ndarray]) -> list[LayerChange]:
    out = []
    for s in an.spaces:
        if not s.node:
            continue
        m = masks.get(s.id)
        out.append(LayerChange(s.node, s.op_type, s.key, s.size, s.size if m is None else int(m.sum())))
    return out
