"""``onnxcomp compress``: run a recipe of steps with gates and write a report.

Only click and onnxcomp.clikit are imported at module level.
"""

from __future__ import annotations

from typing import Any

import click

from onnxcomp.clikit import Progress, echo_json, fmt_bytes, fmt_count, json_option, table

__all__ = ["compress"]


@click.command()
@click.argument("model", required=False, type=click.Path(path_type=str))
@click.option(
    "-o",
    "--output",
    "out",
    type=click.Path(path_type=str),
    help="Output .onnx file (written only if every gate passes).",
)
@click.option(
    "--recipe",
    "recipe_path",
    type=click.Path(path_type=str),
    help="Recipe file (YAML; see --print-recipe).",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=str),
    help="Write report.json, report.md, report.html here.",
)
@click.option(
    "--work-dir",
    type=click.Path(path_type=str),
    help="Intermediate models and plans [default: OUTPUT.work].",
)
@click.option(
    "--fresh", is_flag=True, help="Run every step again (ignore finished steps in the work folder)."
)
@click.option("--check", is_flag=True, help="Only validate the recipe, run nothing.")
@click.option("--print-recipe", is_flag=True, help="Print a commented default recipe and exit.")
@json_option
def compress(model: str | None, out: str | None, **kw: Any) -> None:
    """Run the steps of a RECIPE on MODEL (simplify, prune, quantize, verify gates).

    A missed gate exits with code 3 and writes no output model. A re-run with
    the same model and recipe resumes after the last finished step.
    """
    from onnxcomp.errors import InvalidInputError

    if kw["print_recipe"]:
        from onnxcomp.compress import default_recipe

        click.echo(default_recipe(), nl=False)
        return
    if not kw["recipe_path"]:
        raise InvalidInputError(
            "give --recipe RECIPE.yaml (start from: onnxcomp compress --print-recipe)"
        )
    from onnxcomp.compress import compress as run_compress
    from onnxcomp.compress import load_recipe

    recipe = load_recipe(kw["recipe_path"])
    if kw["check"]:
        click.echo(
            f"recipe      {kw['recipe_path']}: valid, {len(recipe.steps)} step(s): "
            + ", ".join(s.kind for s in recipe.steps)
        )
        return
    if not model:
        raise InvalidInputError("missing MODEL argument")
    if not out:
        raise InvalidInputError("give -o/--output")
    quiet = kw["as_json"]

    def event(kind: str, info: dict[str, Any]) -> None:
        if quiet:
            return
        if kind == "resumed":
            click.echo(
                f"step        {info['step']}: finished earlier, skipped (work folder)", err=True
            )
        elif kind == "start":
            click.echo(f"step        {info['step']} (recipe line {info['line']}) ...", err=True)
        elif kind == "done":
            click.echo(f"step        {info['step']}: done in {info['seconds']:.1f} s", err=True)

    progress = Progress("progress", enabled=not quiet, unit="")
    try:
        result = run_compress(
            model,
            recipe,
            output=out,
            work_dir=kw["work_dir"],
            report_dir=kw["report_dir"],
            resume=not kw["fresh"],
            raise_on_gate=False,
            event=event,
            progress=progress,
        )
    finally:
        progress.close()
    if quiet:
        echo_json(result)
    else:
        _print(result, kw["report_dir"])
    if not result.passed:
        from onnxcomp.errors import GateFailedError

        raise GateFailedError(result.failure or "a gate failed")


def _print(result: Any, report_dir: str | None) -> None:
    rows = []
    for s in result.steps:
        m = s.metrics
        if s.kind == "verify":
            failed = sum(not g["passed"] for g in s.gates)
            verdict = (
                f"{failed} of {len(s.gates)} gates FAILED"
                if failed
                else f"{len(s.gates)} gates passed"
            )
            rows.append([s.name, s.status, "", "", "", "", "", verdict])
            continue
        rows.append(
            [
                s.name,
                s.status,
                f"{m.get('params', 0):,}",
                fmt_count(m.get("macs")),
                fmt_bytes(m.get("size")),
                "-" if m.get("latency_ratio") is None else f"{m['latency_ratio']:.3f}x",
                "-" if m.get("cosine") is None else f"{m['cosine']:.5f}",
                "-" if m.get("accuracy") is None else f"{100 * m['accuracy']:.2f}%",
            ]
        )
    click.echo(
        table(rows, ["step", "status", "params", "MACs", "size", "latency", "cosine", "accuracy"])
    )
    for g in result.gates:
        status = "PASS" if g["passed"] else "FAIL"
        click.echo(
            f"gate        {status} {g['step']}: {g['name']} {g['value']:.6g} (threshold {g['threshold']}, margin {g['margin']:+.4g})"
        )
    if report_dir:
        click.echo(f"report      {report_dir}/report.html")
    click.echo(f"work        {result.work_dir}")
    if result.output:
        click.echo(f"wrote       {result.output}")
    else:
        click.echo("wrote       nothing (a gate failed)")
