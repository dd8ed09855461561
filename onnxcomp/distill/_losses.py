"""Reference knowledge-distillation losses in numpy, with their gradients.

With student logits ``z`` (``[B, C]``), teacher soft targets ``p`` at temperature
``T`` (rows summing to 1, e.g. from :meth:`SoftLabelStore.targets`), hard labels
``y`` and a weight ``alpha`` on the soft term (Hinton et al., 2015):

    q_T   = softmax(z / T)
    KL_b  = sum_c p_bc (log p_bc - log q_T,bc)           (0 log 0 = 0)
    L     = alpha * T^2 * mean_b KL_b + (1 - alpha) * mean_{b: y_b >= 0} -log softmax(z_b)[y_b]

The ``T^2`` factor keeps the soft term's gradient magnitude independent of T:

    dL/dz_b = alpha * T * (q_T,b - p_b) / B
              + (1 - alpha) * (softmax(z_b) - onehot(y_b)) / n_labelled

Labels of ``-1`` mark samples without a hard label; they only enter the soft term.
Everything is computed in float64.
"""

from __future__ import annotations

import numpy as np

from onnxcomp.errors import InvalidInputError

__all__ = ["kd_loss", "kd_loss_and_grad", "kl_divergence", "log_softmax_t"]


def log_softmax_t(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``log softmax(z / T)`` row-wise, float64."""
    z = np.asarray(z, dtype=np.float64) / temperature
    m = z.max(axis=-1, keepdims=True)
    s = z - m
    with np.errstate(under="ignore"):
        return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def kl_divergence(
    p: np.ndarray, student_logits: np.ndarray, temperature: float = 1.0
) -> np.ndarray:
    """Per-sample ``KL(p || softmax(z / T))`` (no T^2 factor), shape ``[B]``."""
    p = np.asarray(p, dtype=np.float64)
    logq = log_softmax_t(student_logits, temperature)
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.sum(np.where(p > 0, p * (logp - logq), 0.0), axis=-1)


def _check(
    z: np.ndarray, p: np.ndarray, labels: np.ndarray | None, temperature: float, alpha: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    z = np.asarray(z, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if z.ndim != 2 or z.shape != p.shape:
        raise InvalidInputError(
            f"student logits {z.shape} and soft targets {p.shape} must both be [batch, classes]"
        )
    if temperature <= 0:
        raise InvalidInputError(f"temperature must be > 0, got {temperature}")
    y = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if y is not None and y.shape[0] != z.shape[0]:
        raise InvalidInputError(f"{y.shape[0]} labels for a batch of {z.shape[0]}")
    if y is not None and (y >= z.shape[1]).any():
        raise InvalidInputError(f"a label is >= the class count {z.shape[1]}")
    a = (1.0 if y is None else 0.5) if alpha is None else float(alpha)
    if not 0.0 <= a <= 1.0:
        raise InvalidInputError(f"alpha must be within [0, 1], got {a}")
    if y is None and a != 1.0:
        raise InvalidInputError("alpha < 1 mixes in hard-label cross-entropy: pass labels")
    return z, p, y, a


def kd_loss_and_grad(
    student_logits: np.ndarray,
    soft_targets: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    temperature: float = 1.0,
    alpha: float | None = None,
) -> tuple[float, np.ndarray]:
    """The KD loss (see module docstring) and its gradient w.r.t. the student logits.

    Args:
        student_logits: ``[B, C]``.
        soft_targets: Teacher probabilities at ``temperature``, ``[B, C]``.
        labels: Hard labels ``[B]`` (``-1`` = none), or None.
        temperature: T > 0, the same T the soft targets were made at.
        alpha: Weight of the soft term; default 1 without labels, 0.5 with.

    Returns:
        ``(loss, dloss/dlogits)``, the gradient ``[B, C]`` float64.
    """
    z, p, y, a = _check(student_logits, soft_targets, labels, temperature, alpha)
    b = z.shape[0]
    t = float(temperature)
    loss = 0.0
    grad = np.zeros_like(z)
    if a > 0:
        kl = kl_divergence(p, z, t)
        loss += a * t * t * float(kl.mean())
        grad += a * t * (np.exp(log_softmax_t(z, t)) - p) / b
    if y is not None and a < 1:
        valid = y >= 0
        n = int(valid.sum())
        if n:
            logq1 = log_softmax_t(z[valid], 1.0)
            ce = -logq1[np.arange(n), y[valid]]
            loss += (1 - a) * float(ce.mean())
            g = np.exp(logq1)
            g[np.arange(n), y[valid]] -= 1.0
            grad[valid] += (1 - a) * g / n
    return loss, grad


def kd_loss(
    student_logits: np.ndarray,
    soft_targets: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    temperature: float = 1.0,
    alpha: float | None = None,
) -> float:
    """The KD loss alone (see :func:`kd_loss_and_grad`)."""
    return kd_loss_and_grad(
        student_logits, soft_targets, labels, temperature=temperature, alpha=alpha
    )[0]
