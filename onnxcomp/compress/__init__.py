"""One declared pipeline of compressions with quality gates and a visual report.

A YAML recipe lists data sources and ordered steps (``simplify``, ``prune``,
``quantize``, ``verify``); each step's options are the fields of the same
frozen config dataclass the CLI and Python API use. Intermediate models and
each step's plan/report go into a work folder; a re-run with unchanged input
and recipe resumes after the last finished step. A missed gate stops the run
(:class:`~onnxcomp.errors.GateFailedError`, exit code 3) and no output is
written. Example::

    from onnxcomp.compress import compress
    result = compress("model.onnx", "recipe.yaml", output="model.small.onnx", report_dir="report")
    for step in result.steps:
        print(step.name, step.metrics["params"], step.metrics.get("accuracy"))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onnxcomp.compress._pipeline import CompressResult, StepRecord, run_recipe
from onnxcomp.compress._recipe import (
    STEP_KINDS,
    DataSource,
    Recipe,
    RecipeError,
    Step,
    load_recipe,
    parse_recipe,
)
from onnxcomp.compress._template import default_recipe
from onnxcomp.errors import GateFailedError

__all__ = [
    "STEP_KINDS",
    "CompressResult",
    "DataSource",
    "Recipe",
    "RecipeError",
    "Step",
    "StepRecord",
    "compress",
    "default_recipe",
    "load_recipe",
    "parse_recipe",
    "write_report",
]

logger = logging.getLogger(__name__)


def write_report(result: CompressResult, folder: str | os.PathLike[str]) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``folder``."""
    from onnxcomp.compress._report import write_report as _write

    return _write(result, folder)


def compress(
    model: str | os.PathLike[str],
    recipe: Recipe | str | os.PathLike[str],
    *,
    output: str | os.PathLike[str] | None,
    work_dir: str | os.PathLike[str] | None = None,
    report_dir: str | os.PathLike[str] | None = None,
    resume: bool = True,
    raise_on_gate: bool = True,
    event: Callable[[str, dict[str, Any]], None] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> CompressResult:
    """Run a recipe on a model file and write the output model (and report).

    Args:
        model: Input ``.onnx`` file (never modified).
        recipe: A :class:`Recipe` or the path of a recipe file.
        output: Where to write the final model (None: only the work folder).
        work_dir: Work folder (default ``<output>.work``).
        report_dir: Also write report.json / report.md / report.html there.
        resume: Skip steps whose work-folder record matches (input + recipe chain).
        raise_on_gate: Raise :class:`GateFailedError` when a gate fails (after the report).
        event: Called with (``start``/``done``/``resumed``, info) per step.
        progress: Called with (samples done, total) in long steps.

    Raises:
        RecipeError: Invalid recipe (file, line and key named).
        GateFailedError: A gate failed (the output is not written).
        InvalidInputError: Bad model, data or options.
    """
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    result = run_recipe(
        model, rec, output=output, work_dir=work_dir, resume=resume, event=event, progress=progress
    )
    if report_dir is not None:
        write_report(result, report_dir)
    if not result.passed and raise_on_gate:
        raise GateFailedError(result.failure or "a gate failed")
    return result
