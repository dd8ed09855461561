"""How well a student follows its teacher.

On the same samples, with teacher log-probs ``log p`` (from the teacher run in
ONNX Runtime, or read from a store) and student logits ``z``:

* top-1 agreement: ``argmax z == argmax log p``;
* top-5 agreement: the teacher's top-1 class is among the student's 5 highest
  (top-min(5, C));
* mean KL at temperature T: ``mean_b KL(softmax(log p_b / T) || softmax(z_b / T))``
  (no T^2 factor);
* accuracy of both against integer labels when the data has them;
* single-sample latency (interleaved medians) and file size of both.

Student and teacher logits are tapped before a final Softmax exactly as in
labelling (:func:`onnxcomp.distill.plan_tap`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onnxcomp import io
from onnxcomp.data import open_data
from onnxcomp.errors import DataError, InvalidInputError, UnsupportedModelError

__all__ = ["EvalConfig", "EvalReport", "evaluate"]

Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class EvalConfig:
    """Options of :func:`evaluate`.

    Attributes:
        temperature: T of the mean KL.
        batch_size: Samples per run along a dynamic batch axis.
        latency_repeats: Single-sample latency runs per model (0 = skip).
        threads: ONNX Runtime intra-op threads.
        tail: For a top-k store: ``"uniform"`` or ``"renormalize"`` (see the reader).
        student_output: Student output holding class scores (default: the only one).
        teacher_output: Teacher output (default: the store's, or the only one).
    """

    temperature: float = 1.0
    batch_size: int = 32
    latency_repeats: int = 20
    threads: int | None = None
    tail: str = "uniform"
    student_output: str | None = None
    teacher_output: str | None = None

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise InvalidInputError(f"--temperature must be > 0, got {self.temperature}")
        if self.batch_size < 1:
            raise InvalidInputError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.latency_repeats < 0:
            raise InvalidInputError(f"--repeats must be >= 0, got {self.latency_repeats}")


@dataclass
class EvalReport:
    """Agreement of a student with its teacher."""

    student: str
    teacher: str
    data: str
    samples: int
    classes: int
    temperature: float
    top1_agreement: float
    top5_agreement: float
    mean_kl: float
    student_accuracy: float | None
    teacher_accuracy: float | None
    student_bytes: int
    teacher_bytes: int | None
    student_latency_ms: float | None
    teacher_latency_ms: float | None
    synthetic: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Session:
    """Adapter with the ``.session`` attribute that measure_latency expects."""

    def __init__(self, session: Any) -> None:
        self.session = session


def _logits_session(
    model_path: str | os.PathLike[str], output: str | None, threads: int | None, role: str
) -> tuple[Any, str, str]:
    from onnxcomp.distill._label import plan_tap
    from onnxcomp.runtime import create_session, expose_outputs

    model = io.load(model_path)
    try:
        tap = plan_tap(model, output)
    except (InvalidInputError, UnsupportedModelError) as e:
        raise type(e)(f"{role} {model_path}: {e}") from e
    session = create_session(expose_outputs(model, [tap.tapped]), threads=threads)
    return session, tap.tapped, tap.tap


def _rows(arr: Any, b: int, role: str, name: str) -> np.ndarray:
    from onnxcomp.distill._label import _class_rows

    try:
        return _class_rows(arr, b, name, role).astype(np.float64)
    except UnsupportedModelError as e:
        raise UnsupportedModelError(f"{role}: {e}") from e


def evaluate(
    student: str | os.PathLike[str],
    data: Any,
    *,
    teacher: str | os.PathLike[str] | None = None,
    store: str | os.PathLike[str] | None = None,
    config: EvalConfig | None = None,
    progress: Progress | None = None,
) -> EvalReport:
    """Compare ``student`` with a teacher model or with a soft-label store on ``data``.

    Raises:
        InvalidInputError: Neither or both of teacher/store; store made from other data.
        UnsupportedModelError: A model's output is not class scores; class counts differ.
        DataError: The data does not fit the student.
    """
    from onnxcomp.distill._label import _log_of_probabilities, log_softmax
    from onnxcomp.distill._losses import kl_divergence
    from onnxcomp.distill._reader import open_store, soft_targets
    from onnxcomp.runtime import iter_batches, measure_latency

    cfg = config or EvalConfig()
    if (teacher is None) == (store is None):
        raise InvalidInputError("give exactly one of --teacher or --store")
    s_path = Path(student)
    s_model = io.load(s_path)
    dataset = open_data(data, s_model)
    s_sess, s_name, _ = _logits_session(s_path, cfg.student_output, cfg.threads, "student")
    t_sess = None
    t_name = ""
    t_probs = False
    st = None
    if teacher is not None:
        t_sess, t_name, t_tap = _logits_session(teacher, cfg.teacher_output, cfg.threads, "teacher")
        teacher_desc = str(teacher)
        teacher_bytes: int | None = io.file_size(teacher)
    else:
        st = open_store(store)  # type: ignore[arg-type]
        teacher_desc = f"{store} (store of {st.manifest.get('teacher')})"
        teacher_bytes = st.manifest.get("teacher_bytes")
        n = dataset.length()
        if n is not None and n != len(st):
            raise InvalidInputError(
                f"{store}: the store holds {len(st)} samples, the data {n}; use the data "
                "the store was made from"
            )
        if st.manifest.get("data_fingerprint") != dataset.fingerprint():
            raise InvalidInputError(
                f"{store}: the store was made from other data "
                f"({st.manifest.get('data_fingerprint')!r} "
                f"vs {dataset.fingerprint()!r})"
            )
    tail = cfg.tail if st is not None and not st.dense else None
    total = dataset.length()
    done = agree1 = agree5 = 0
    kl_sum = 0.0
    correct_s = correct_t = labelled = 0
    classes = 0
    first_feed: dict[str, np.ndarray] | None = None
    specs = dataset.specs
    for batch in iter_batches(dataset.samples(), specs, cfg.batch_size):
        b = batch.size
        where = f"samples {batch.indices[0]}-{batch.indices[-1]} of {dataset.description}"
        if first_feed is None:
            first_feed = {
                k: (v[:1] if next(s for s in specs if s.name == k).batch_dynamic else v)
                for k, v in batch.feed.items()
            }
        try:
            z = _rows(s_sess.run([s_name], batch.feed)[0], b, "student", s_name)
        except UnsupportedModelError:
            raise
        except Exception as e:
            raise DataError(
                f"student: onnxruntime failed on {where}: {' '.join(str(e).split())[:300]}"
            ) from e
        if t_sess is not None:
            try:
                tz = _rows(t_sess.run([t_name], batch.feed)[0], b, "teacher", t_name)
            except UnsupportedModelError:
                raise
            except Exception as e:
                raise DataError(
                    f"teacher: onnxruntime failed on {where}: {' '.join(str(e).split())[:300]}"
                ) from e
            if first_feed is not None and done == 0 and t_tap == "logits":
                t_probs = bool((tz >= 0).all() and np.allclose(tz.sum(axis=1), 1.0, atol=1e-4))
            logp = _log_of_probabilities(tz) if t_probs else log_softmax(tz)
        else:
            assert st is not None
            logp = st.log_probs(batch.indices, tail=tail)
        if logp.shape[1] != z.shape[1]:
            raise UnsupportedModelError(
                f"the student has {z.shape[1]} classes, the teacher {logp.shape[1]}"
            )
        classes = z.shape[1]
        t1 = logp.argmax(axis=1)
        s1 = z.argmax(axis=1)
        agree1 += int((t1 == s1).sum())
        k = min(5, classes)
        s5 = np.argpartition(-z, k - 1, axis=1)[:, :k]
        agree5 += int((s5 == t1[:, None]).any(axis=1).sum())
        kl_sum += float(
            kl_divergence(soft_targets(logp, cfg.temperature), z, cfg.temperature).sum()
        )
        labels = [batch.labels[i] for i in range(b)]
        if all(
            lb is not None and np.asarray(lb).size == 1 and np.asarray(lb).dtype.kind in "iu"
            for lb in labels
        ):
            y = np.asarray([int(np.asarray(lb).reshape(-1)[0]) for lb in labels])
            correct_s += int((s1 == y).sum())
            correct_t += int((t1 == y).sum())
            labelled += b
        done += b
        if progress:
            progress(done, total)
    if done == 0 or first_feed is None:
        raise DataError(f"{dataset.description}: no samples")
    s_lat = t_lat = None
    if cfg.latency_repeats > 0:
        runners = [_Session(s_sess)] + ([_Session(t_sess)] if t_sess is not None else [])
        stats = measure_latency(runners, first_feed, repeats=cfg.latency_repeats)  # type: ignore[arg-type]
        s_lat = stats[0].median_ms
        t_lat = stats[1].median_ms if len(stats) > 1 else None
    return EvalReport(
        student=str(s_path),
        teacher=teacher_desc,
        data=dataset.description,
        samples=done,
        classes=classes,
        temperature=cfg.temperature,
        top1_agreement=agree1 / done,
        top5_agreement=agree5 / done,
        mean_kl=kl_sum / done,
        student_accuracy=correct_s / labelled if labelled else None,
        teacher_accuracy=correct_t / labelled if labelled else None,
        student_bytes=io.file_size(s_path),
        teacher_bytes=teacher_bytes,
        student_latency_ms=s_lat,
        teacher_latency_ms=t_lat,
        synthetic=dataset.synthetic,
    )
