"""Running a recipe: steps in order, a work folder, resume, gates, per-step figures.

Resume key of step ``i`` (hash chain)::

    key_0 = sha256(input model bytes, external data included)
    key_i = sha256(key_{i-1} || canonical JSON of step i (kind, config, data
                   source definitions and file size/mtime) || onnxcomp version)

A step whose record in the work folder carries ``key_i`` and status ``done``
(and whose model file is there) is not run again; its recorded figures are
reused. Any change of the input, of a step or of its data changes that step's
key and every later one, so only the unchanged prefix is skipped.

Every produced model is measured the same way: parameters
(:func:`~onnxcomp.analysis.count_params`), MACs
(:func:`~onnxcomp.analysis.count_macs` on a shaped copy), file size, and with
the recipe's ``measure`` data a :func:`~onnxcomp.verification.verify` run against the
*input* model (fidelity, accuracy with labels, latency interleaved in one run,
so the latency ratio is measured, not composed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxcomp.compress._recipe import DataSource, Recipe, Step, plain
from onnxcomp.errors import InvalidInputError

__all__ = ["CompressResult", "StepRecord", "run_recipe"]

logger = logging.getLogger(__name__)

Event = Callable[[str, dict[str, Any]], None]
RECORD = "record.json"


@dataclass
class StepRecord:
    """What one step did (also the JSON record kept in the work folder).

    Attributes:
        index: Position in the recipe (0-based; -1 for the input model).
        kind: Step kind, or ``input``.
        key: Resume key (hash chain).
        status: ``done``, ``resumed`` or ``failed`` (a missed gate).
        model: Model file written by the step (None for verify).
        seconds: Run time of the step (of the original run when resumed).
        metrics: params, macs, size, latency and fidelity figures.
        details: The capability's own report (plan, quantize report, verify report).
        gates: Gate results of a verify step (name, threshold, value, margin, passed).
        line: Line of the step in the recipe.
    """

    index: int
    kind: str
    key: str
    status: str = "done"
    model: str | None = None
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    line: int = 0

    @property
    def name(self) -> str:
        return "input" if self.index < 0 else f"{self.index + 1}. {self.kind}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.name,
            "kind": self.kind,
            "key": self.key,
            "status": self.status,
            "model": self.model,
            "seconds": self.seconds,
            "line": self.line,
            "metrics": self.metrics,
            "gates": self.gates,
            "details": self.details,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepRecord:
        return cls(
            index=d["index"],
            kind=d["kind"],
            key=d["key"],
            status=d["status"],
            model=d.get("model"),
            seconds=d.get("seconds", 0.0),
            metrics=d.get("metrics", {}),
            details=d.get("details", {}),
            gates=d.get("gates", []),
            line=d.get("line", 0),
        )


@dataclass
class CompressResult:
    """Outcome of :func:`~onnxcomp.compress.compress`.

    Attributes:
        input: The input model file.
        output: The written model (None when a gate failed).
        work_dir: The work folder.
        recipe: The recipe that ran.
        steps: The input record followed by one record per step that ran or resumed.
        passed: Every gate passed.
        failure: One-line reason of a failed gate.
    """

    input: str
    output: str | None
    work_dir: str
    recipe: Recipe
    steps: list[StepRecord]
    passed: bool = True
    failure: str | None = None
    seconds: float = 0.0

    @property
    def gates(self) -> list[dict[str, Any]]:
        return [dict(g, step=s.name) for s in self.steps for g in s.gates]

    def to_dict(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            ver = version("onnxcomp")
        except PackageNotFoundError:  # pragma: no cover
            ver = "unknown"
        return {
            "onnxcomp": ver,
            "input": self.input,
            "output": self.output,
            "work_dir": self.work_dir,
            "passed": self.passed,
            "failure": self.failure,
            "seconds": round(self.seconds, 3),
            "recipe": self.recipe.to_dict(),
            "recipe_text": self.recipe.text,
            "steps": [s.to_dict() for s in self.steps],
            "gates": self.gates,
        }


# ---------------------------------------------------------------- hashing


def _file_hash(path: Path) -> str:
    from onnxcomp import io

    h = hashlib.sha256()
    for f in [path, *io.external_files(path)]:
        if f.exists():
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onnxcomp")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _chain(prev: str, content: dict[str, Any]) -> str:
    text = json.dumps(
        {"prev": prev, "step": content, "onnxcomp": _version()}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- runner


def _dataset(source: DataSource, model: Any) -> Any:
    from onnxcomp.data import Dataset, SyntheticSource, input_specs, open_data

    specs = input_specs(model)
    if source.synthetic is not None:
        return Dataset(
            SyntheticSource(specs, source.synthetic, source.seed), specs, limit=source.limit
        )
    return open_data(source.path, specs, image=source.image, limit=source.limit)


def _pair_model(reference: Any, candidate: Any) -> Any:
    """The model whose input specs fit both (a fixed batch wins over a dynamic one)."""
    from onnxcomp.data import input_specs

    return reference if not all(sp.batch_dynamic for sp in input_specs(reference)) else candidate


def _first_shapes(data: Any) -> dict[str, tuple[int, ...]] | None:
    if data is None:
        return None
    for s in data.samples():
        return {k: (1, *v.shape[1:]) for k, v in s.feed.items()}
    return None


def _static_metrics(
    model: Any, path: Path, shapes: dict[str, tuple[int, ...]] | None
) -> dict[str, Any]:
    from onnxcomp import io
    from onnxcomp.analysis import count_macs, count_params, shaped_copy

    out: dict[str, Any] = {"params": int(count_params(model)[0]), "size": io.file_size(path)}
    try:
        shaped, _ = shaped_copy(model, shapes)
        total, _, _, unknown = count_macs(shaped)
        out["macs"] = None if unknown and not total else int(total)
        if unknown:
            out["macs_unknown_nodes"] = len(unknown)
    except Exception as e:  # MACs are informative; a failure must not stop the pipeline
        logger.info("MACs of %s not counted: %s", path, e)
        out["macs"] = None
    return out


def _fidelity(report: Any) -> dict[str, Any]:
    """The per-step figures of a VerifyReport."""
    out: dict[str, Any] = {
        "cosine": report.min_cosine,
        "sqnr_db": min(o.sqnr_db for o in report.outputs),
        "max_abs_error": max(o.max_abs_error for o in report.outputs),
        "top1_agreement": report.min_top1,
        "accuracy": report.candidate_accuracy,
        "reference_accuracy": report.reference_accuracy,
        "samples": report.samples,
    }
    if report.candidate_latency and report.reference_latency:
        out["latency_ms"] = report.candidate_latency.median_ms
        out["reference_latency_ms"] = report.reference_latency.median_ms
        out["latency_ratio"] = report.latency_ratio
    return out


def _gate_dicts(report: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": g.name,
            "threshold": g.threshold,
            "value": g.value,
            "margin": g.margin,
            "passed": g.passed,
        }
        for g in report.gates
    ]


def _write_json(path: Path, obj: Any) -> None:
    from onnxcomp.clikit import _clean, _default

    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(json.loads(json.dumps(obj, default=_default))), indent=1))
    os.replace(tmp, path)


def _load_record(folder: Path, key: str) -> StepRecord | None:
    f = folder / RECORD
    if not f.is_file():
        return None
    try:
        rec = StepRecord.from_dict(json.loads(f.read_text()))
    except (ValueError, KeyError, TypeError):
        return None
    if rec.key != key or rec.status != "done":
        return None
    if rec.model is not None and not (folder.parent / rec.model).is_file():
        return None
    return rec


def run_recipe(
    model_path: str | os.PathLike[str],
    recipe: Recipe,
    *,
    output: str | os.PathLike[str] | None,
    work_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    event: Event | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> CompressResult:
    """Run every step of ``recipe`` on the model file ``model_path``.

    Returns the result also when a gate fails (``passed`` False, nothing written);
    the caller raises :class:`GateFailedError` after writing its report.

    Raises:
        InvalidInputError: Unreadable model, bad data, a step the model does not allow.
    """
    from onnxcomp import io
    from onnxcomp.verification import VerifyConfig, verify

    t_start = time.perf_counter()
    src = Path(model_path)
    original = io.load(src)
    if work_dir is None:
        if output is None:
            raise InvalidInputError("give an output path or a work folder")
        work_dir = f"{output}.work"
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    notify = event or (lambda kind, info: None)

    measure_src = recipe.data.get(recipe.measure_data) if recipe.measure_data else None
    measure_data = _dataset(measure_src, original) if measure_src else None
    shapes = _first_shapes(measure_data)
    measure_cfg = VerifyConfig(
        batch_size=recipe.measure.batch_size,
        latency_repeats=recipe.measure.latency_repeats,
        warmup=recipe.measure.warmup,
        threads=recipe.measure.threads,
        outputs=recipe.measure.outputs,
    )
    measure_content = {
        "measure": plain(measure_cfg),
        "data": measure_src.fingerprint() if measure_src else None,
    }

    key = _chain(_file_hash(src), {"input": True, **measure_content})
    in_dir = work / "00-input"
    in_dir.mkdir(exist_ok=True)
    input_rec = _load_record(in_dir, key)
    if input_rec is None or not resume:
        input_rec = StepRecord(index=-1, kind="input", key=key, model=None)
        input_rec.metrics = _static_metrics(original, src, shapes)
        _write_json(in_dir / RECORD, input_rec.to_dict())
    else:
        input_rec.status = "resumed"
    input_rec.model = str(src.resolve())
    records = [input_rec]
    current_path = src
    current = original
    previous_model_path = src
    failure: str | None = None
    running = False
    for i, step in enumerate(recipe.steps):
        key = _chain(key, {**step.content(recipe.data), **measure_content})
        folder = work / f"{i + 1:02d}-{step.kind}"
        rec = None if (running or not resume) else _load_record(folder, key)
        if rec is not None:
            rec.status = "resumed"
            records.append(rec)
            notify("resumed", {"step": rec.name, "line": step.line})
            if rec.model is not None:
                previous_model_path = current_path
                current_path = work / rec.model
                current = io.load(current_path)
            continue
        running = True
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        notify("start", {"step": f"{i + 1}. {step.kind}", "line": step.line})
        rec = StepRecord(index=i, kind=step.kind, key=key, line=step.line)
        t0 = time.perf_counter()
        new_model = _run_step(
            step, recipe, current, current_path, previous_model_path, src, folder, rec, progress
        )
        rec.seconds = round(time.perf_counter() - t0, 3)
        if new_model is not None:
            out_path = folder / "model.onnx"
            io.save(new_model, out_path, protect=[src])
            rec.model = str(out_path.relative_to(work))
            rec.metrics = _static_metrics(new_model, out_path, shapes)
            if measure_data is not None:
                data = _dataset(measure_src, _pair_model(original, io.load(out_path)))  # type: ignore[arg-type]
                rep = verify(src, out_path, data, measure_cfg)
                rec.metrics.update(_fidelity(rep))
                (folder / "measure.json").write_text(
                    json.dumps(rep.to_dict(), indent=1, default=str)
                )
            previous_model_path = current_path
            current_path = out_path
            current = io.load(out_path)
        if rec.gates and not all(g["passed"] for g in rec.gates):
            rec.status = "failed"
            g = next(g for g in rec.gates if not g["passed"])
            failure = (
                f"gate {g['name']} failed at step {i + 1} (verify, recipe line {step.line}): "
                f"{_fmt(g['value'])} vs threshold {_fmt(g['threshold'])}"
            )
        _write_json(folder / RECORD, rec.to_dict())
        records.append(rec)
        notify("done", {"step": rec.name, "seconds": rec.seconds, "record": rec})
        if failure:
            break
    # the input's latency/accuracy come from the first same-run measurement
    first = next(
        (r.metrics for r in records[1:] if r.metrics.get("reference_latency_ms") is not None), None
    )
    if first is not None:
        input_rec.metrics["latency_ms"] = first["reference_latency_ms"]
        input_rec.metrics["latency_ratio"] = 1.0
    acc = next(
        (
            r.metrics.get("reference_accuracy")
            for r in records[1:]
            if r.metrics.get("reference_accuracy") is not None
        ),
        None,
    )
    if acc is not None:
        input_rec.metrics["accuracy"] = acc
    if measure_data is not None and any(r.metrics.get("cosine") is not None for r in records[1:]):
        input_rec.metrics.setdefault("cosine", 1.0)
        input_rec.metrics.setdefault(
            "top1_agreement", 1.0 if records[1].metrics.get("top1_agreement") is not None else None
        )
    written: str | None = None
    if failure is None and output is not None:
        written = str(io.save(current, output, protect=[src]))
    return CompressResult(
        input=str(src.resolve()),
        output=written,
        work_dir=str(work.resolve()),
        recipe=recipe,
        steps=records,
        passed=failure is None,
        failure=failure,
        seconds=time.perf_counter() - t_start,
    )


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


def _run_step(
    step: Step,
    recipe: Recipe,
    current: Any,
    current_path: Path,
    previous_path: Path,
    input_path: Path,
    folder: Path,
    rec: StepRecord,
    progress: Callable[[int, int | None], None] | None,
) -> Any:
    """Run one step; returns its model (None for verify) and fills ``rec``."""

    def data(name: str | None) -> Any:
        return _dataset(recipe.data[name], current) if name else None

    if step.kind == "simplify":
        from onnxcomp.simplification import simplify

        return simplify(current, step.config)
    if step.kind == "prune":
        from onnxcomp.prune import prune

        result = prune(current, step.config, data(step.data), progress=progress)
        rec.details = result.to_dict()
        (folder / "plan.json").write_text(json.dumps(result.plan.to_dict(), indent=1))
        return result.model
    if step.kind == "quantize":
        from onnxcomp.quantize import quantize

        qres = quantize(
            current, data(step.data), step.config, eval_data=data(step.eval_data), progress=progress
        )
        rec.details = qres.report.to_dict()
        _write_json(folder / "quantize.json", rec.details)
        return qres.model
    if step.kind == "verify":
        from onnxcomp import io
        from onnxcomp.verification import verify

        ref_path = input_path if step.against == "input" else previous_path
        ref = io.load(ref_path)
        samples = _dataset(recipe.data[step.data], _pair_model(ref, current))  # type: ignore[index]
        rep = verify(ref_path, current_path, samples, step.config)
        rec.details = rep.to_dict()
        rec.details["against"] = step.against
        rec.gates = _gate_dicts(rep)
        return None
    raise InvalidInputError(f"unknown step kind {step.kind!r}")  # pragma: no cover
