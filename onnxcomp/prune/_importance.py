"""Channel importance.

Scores are computed per channel of every space and summed over the channels
of a pruning unit (the channels tied together across a group):

* ``l1`` / ``l2``: for every weight tensor sliced with the group (the sources'
  output filters, the consumers' input slices, depthwise filters), the L1 norm
  ``sum |W[..., c, ...]|`` or L2 norm of each channel's slice, divided by the
  tensor's mean so that layers of different scale count alike;
* ``bn``: ``|gamma|`` of the BatchNormalization layers of the group (l1 when
  the group has none);
* ``activation``: the size of each channel's contribution to every consumer,
  ``sqrt(E[x_c^2]) * ||W[:, c]||_2`` (root mean square of the consumer's input
  element over calibration samples, streamed, times the L2 norm of the consumer
  weights reading it; under independent inputs the squared output error of
  dropping ``c`` is ``E[x_c^2] ||W[:, c]||^2``). Measured on the MNIST ResNet,
  this keeps far more accuracy than the mean ``|x|`` alone, which ignores how
  much the consumer uses a channel.
"""

from __future__ import annotations

import logging

import numpy as np

from onnxcomp.prune._graph import Analysis, Layout, ParamSlice

logger = logging.getLogger(__name__)

__all__ = ["channel_scores"]


def _element_norms(arr: np.ndarray, sl: ParamSlice, full: int, p: int) -> np.ndarray:
    a = np.abs(arr) if p == 1 else np.square(arr)
    if sl.groups <= 1:
        if arr.shape[sl.axis] != full:
            return np.zeros(full)
        other = tuple(i for i in range(arr.ndim) if i != sl.axis)
        v = a.sum(axis=other, dtype=np.float64) if other else a.astype(np.float64)
    else:
        per = full // sl.groups
        blocks = arr.shape[sl.group_axis] // sl.groups
        v = np.zeros(full)
        for g in range(sl.groups):
            part = np.take(a, np.arange(g * blocks, (g + 1) * blocks), axis=sl.group_axis)
            other = tuple(i for i in range(arr.ndim) if i != sl.axis)
            v[g * per : (g + 1) * per] = part.sum(axis=other, dtype=np.float64)
    return np.sqrt(v) if p == 2 else v


def _add(scores: dict[int, np.ndarray], layout: Layout, vec: np.ndarray) -> None:
    m = float(vec.mean()) if vec.size else 0.0
    if m > 0:
        vec = vec / m
    for e0, e1, space, ch in layout.element_channels():
        scores[space][ch] += float(vec[e0:e1].sum())


def channel_scores(
    an: Analysis,
    criterion: str,
    activations: dict[str, np.ndarray] | None = None,
) -> dict[int, np.ndarray]:
    """Score of every channel of every space (higher = more important)."""
    scores = {s.id: np.zeros(s.size) for s in an.spaces}
    if criterion in ("l1", "l2", "bn", "reconstruction"):
        p = 2 if criterion == "l2" else 1
        tags = ("bn_scale",) if criterion == "bn" else ("weight", "dw_weight")
        for sl in an.slices:
            if sl.tag not in tags:
                continue
            v = an.nodes[sl.node].inputs[sl.input]
            if v is None or v.const_value is None:
                continue
            layout = an.layouts[sl.value]
            vec = _element_norms(v.const_value.numpy(), sl, layout.size, p)
            _add(scores, layout, vec)
    elif criterion == "activation":
        if not activations:
            raise ValueError("activation importance needs activation statistics")
        read = set()
        for sl in an.slices:
            if sl.role != "in" or sl.value not in activations:
                continue
            v = an.nodes[sl.node].inputs[sl.input]
            if v is None or v.const_value is None:
                continue
            layout = an.layouts[sl.value]
            wn = _element_norms(v.const_value.numpy(), sl, layout.size, 2)
            _add(scores, layout, activations[sl.value] * wn)
            read.add(sl.value)
        for name, vec in activations.items():
            if name not in read:
                _add(scores, an.layouts[name], vec)
    else:
        raise ValueError(f"unknown criterion {criterion!r}")
    return scores


def activation_values(an: Analysis) -> list[str]:
    """Tensors whose statistics feed ``activation`` importance: inputs of contractions."""
    names = []
    for sl in an.slices:
        if sl.role == "in" and sl.value not in names:
            names.append(sl.value)
    # spaces without any contraction reader: use the space's own tensor
    covered = {seg.space for n in names for seg in an.layouts[n].segments}
    for s in an.spaces:
        if s.node and s.id not in covered and s.key in an.layouts:
            names.append(s.key)
    return names
