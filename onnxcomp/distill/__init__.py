"""Knowledge distillation, teacher side: ONNX teacher -> soft-label store -> any framework.

* :func:`label` runs a teacher ``.onnx`` over a data set and writes a store of
  log-probabilities at temperature 1 (dense, or top-k with the tail mass),
  optional feature targets and the data's hard labels; resumable, deterministic,
  parallel over local processes or Ray actors.
* :func:`open_store` reads it back with numpy alone: soft targets at any
  temperature, per index or per batch.
* :func:`kd_loss` / :func:`kd_loss_and_grad`: reference KD loss (KL with T^2
  scaling, alpha mix with hard-label cross-entropy) and its gradient.
* :func:`evaluate`: how well a student follows the teacher (top-1/top-5
  agreement, mean KL, accuracy, latency, size).
* :mod:`onnxcomp.distill._torch` (import torch only when used):
  :func:`torch_dataset`, :func:`torch_kd_loss`.
"""

from __future__ import annotations

from typing import Any

from onnxcomp.distill._eval import EvalConfig, EvalReport, evaluate
from onnxcomp.distill._label import (
    LabelConfig,
    LabelPlan,
    LabelReport,
    TapPlan,
    compress_topk,
    label,
    log_softmax,
    plan_label,
    plan_tap,
)
from onnxcomp.distill._losses import kd_loss, kd_loss_and_grad, kl_divergence, log_softmax_t
from onnxcomp.distill._reader import TAIL_MODES, SoftLabelStore, open_store, soft_targets

__all__ = [
    "TAIL_MODES",
    "EvalConfig",
    "EvalReport",
    "LabelConfig",
    "LabelPlan",
    "LabelReport",
    "SoftLabelStore",
    "TapPlan",
    "compress_topk",
    "evaluate",
    "kd_loss",
    "kd_loss_and_grad",
    "kl_divergence",
    "label",
    "log_softmax",
    "log_softmax_t",
    "open_store",
    "plan_label",
    "plan_tap",
    "soft_targets",
    "torch_dataset",
    "torch_kd_loss",
]


def torch_dataset(*args: Any, **kwargs: Any) -> Any:
    """A ``torch.utils.data.Dataset`` over inputs + a store (see :mod:`._torch`)."""
    from onnxcomp.distill._torch import torch_dataset as f

    return f(*args, **kwargs)


def torch_kd_loss(*args: Any, **kwargs: Any) -> Any:
    """The KD loss in torch, matching :func:`kd_loss` (see :mod:`._torch`)."""
    from onnxcomp.distill._torch import torch_kd_loss as f

    return f(*args, **kwargs)
