"""Thin PyTorch adapters over a soft-label store (torch is imported only here).

* :func:`torch_dataset` pairs student inputs (an array, or any indexable of
  arrays) with the store's soft targets at a temperature: item ``i`` is
  ``(input_i, target_i, label_i)`` as tensors (label ``-1`` when unknown).
* :func:`torch_kd_loss` is :func:`onnxcomp.distill.kd_loss` in torch (same
  definition: ``alpha * T^2 * KL(p || softmax(z/T)) + (1 - alpha) * CE``, batch
  means, labels ``-1`` ignored), differentiable through autograd.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from onnxcomp.distill._reader import SoftLabelStore, open_store
from onnxcomp.errors import InvalidInputError

__all__ = ["torch_dataset", "torch_kd_loss"]


def torch_dataset(
    inputs: Any,
    store: SoftLabelStore | str,
    *,
    temperature: float = 1.0,
    tail: str | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
) -> Any:
    """A ``torch.utils.data.Dataset`` of ``(input, soft target, label)``.

    Args:
        inputs: Student inputs indexable by sample (e.g. an array ``[N, ...]``),
            in the store's sample order.
        store: A :class:`SoftLabelStore` or its folder.
        temperature: T of the soft targets.
        tail: For top-k stores: ``"uniform"`` or ``"renormalize"``.
        labels: Hard labels; default: the labels saved in the store, if any.
    """
    import torch
    from torch.utils.data import Dataset

    st = store if isinstance(store, SoftLabelStore) else open_store(store)
    if len(inputs) != len(st):
        raise InvalidInputError(f"{len(inputs)} inputs for a store of {len(st)} samples")
    if labels is None:
        labels = st.labels() if st.has_labels else np.full(len(st), -1, np.int64)
    lab = np.asarray(labels, dtype=np.int64)
    st.targets([0], temperature, tail=tail)  # validates tail / temperature early

    class _StoreDataset(Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return len(st)

        def __getitem__(self, i: int) -> tuple[Any, Any, Any]:
            x = torch.as_tensor(np.asarray(inputs[i]))
            t = torch.from_numpy(st.target(int(i), temperature, tail=tail))
            return x, t, torch.tensor(int(lab[i]))

        def __getitems__(self, idx: list[int]) -> list[tuple[Any, Any, Any]]:
            t = st.targets(idx, temperature, tail=tail)
            return [
                (
                    torch.as_tensor(np.asarray(inputs[i])),
                    torch.from_numpy(t[j]),
                    torch.tensor(int(lab[i])),
                )
                for j, i in enumerate(idx)
            ]

    return _StoreDataset()


def torch_kd_loss(
    student_logits: Any,
    soft_targets: Any,
    labels: Any = None,
    *,
    temperature: float = 1.0,
    alpha: float | None = None,
) -> Any:
    """KD loss in torch, equal to the numpy :func:`~onnxcomp.distill.kd_loss`."""
    import torch
    import torch.nn.functional as F

    t = float(temperature)
    if t <= 0:
        raise InvalidInputError(f"temperature must be > 0, got {t}")
    a = (1.0 if labels is None else 0.5) if alpha is None else float(alpha)
    if labels is None and a != 1.0:
        raise InvalidInputError("alpha < 1 mixes in hard-label cross-entropy: pass labels")
    logq = F.log_softmax(student_logits / t, dim=-1)
    p = soft_targets.to(logq.dtype)
    plogp = torch.where(
        p > 0, p * torch.log(torch.where(p > 0, p, torch.ones_like(p))), torch.zeros_like(p)
    )
    kl = (plogp - p * logq).sum(dim=-1).mean()
    loss = a * t * t * kl
    if labels is not None and a < 1:
        y = torch.as_tensor(labels, device=student_logits.device).long()
        valid = y >= 0
        if bool(valid.any()):
            loss = loss + (1 - a) * F.cross_entropy(student_logits[valid], y[valid])
    return loss
