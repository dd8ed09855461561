"""``onnxcomp distill``: teacher soft labels (``label``) and student evaluation (``eval``).

Only click and onnxcomp.clikit are imported here; the work is imported inside
the commands so that ``onnxcomp --help`` stays cheap.
"""

from __future__ import annotations

from typing import Any

import click

from onnxcomp.clikit import (
    Progress,
    build_dataset,
    data_options,
    echo_json,
    fmt_bytes,
    json_option,
    pop_data_options,
    split_csv,
    table,
)

__all__ = ["distill"]


@click.group()
def distill() -> None:
    """Knowledge distillation: teacher soft labels for students in any framework."""


@distill.command("label")
@click.argument("teacher", type=click.Path(path_type=str))
@data_options
@click.option(
    "-o",
    "--output-store",
    "store",
    required=True,
    type=click.Path(path_type=str),
    help="Store folder to write (an interrupted store of the same run is resumed).",
)
@click.option(
    "--top-k",
    type=int,
    default=None,
    help="Keep the K most likely classes + tail mass (default: dense).",
)
@click.option("--output", "output", default=None, help="Teacher output with the class scores.")
@click.option(
    "--features",
    default=None,
    metavar="T1,T2",
    help="Intermediate tensors to store as feature targets.",
)
@click.option("--shard-size", type=int, default=1024, show_default=True, help="Samples per shard.")
@click.option(
    "--batch-size", type=int, default=32, show_default=True, help="Samples per teacher run."
)
@click.option(
    "--workers", type=int, default=1, show_default=True, help="Parallel worker processes."
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where workers run: local processes or Ray actors (needs ray).",
)
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads per worker.")
@json_option
def label_cmd(teacher: str, store: str, **kwargs: Any) -> None:
    """Run TEACHER over the data and write a soft-label store (log-probs at T=1)."""
    from onnxcomp import io
    from onnxcomp.distill import LabelConfig, label
    from onnxcomp.errors import InvalidInputError

    data_opts = pop_data_options(kwargs)
    as_json = kwargs.pop("as_json")
    cfg = LabelConfig(
        top_k=kwargs["top_k"],
        output=kwargs["output"],
        features=split_csv(kwargs["features"]),
        shard_size=kwargs["shard_size"],
        batch_size=kwargs["batch_size"],
        workers=kwargs["workers"],
        engine=kwargs["engine"],
        threads=kwargs["threads"],
    )
    import os

    if not os.path.isfile(teacher):
        raise InvalidInputError(f"{teacher}: no such teacher model file")
    model = io.load(teacher)
    dataset = build_dataset(model, data_opts)
    progress = Progress("label", enabled=not as_json)
    try:
        report = label(teacher, dataset, store, cfg, progress=progress)
    finally:
        progress.close()
    if as_json:
        echo_json(report)
        return
    mode = "dense" if report.top_k is None else f"top-{report.top_k} + tail"
    click.echo(f"store       {report.store}")
    click.echo(
        f"teacher     {report.teacher} (output {report.output!r}, "
        f"read {report.tapped!r} as {report.tap})"
    )
    click.echo(f"labels      {report.samples} samples x {report.classes} classes, {mode}")
    if report.features:
        click.echo(f"features    {', '.join(report.features)}")
    click.echo(
        f"shards      {report.shards} ({report.shards_written} written, "
        f"{report.shards_reused} reused)"
    )
    click.echo(
        f"size        {fmt_bytes(report.store_bytes)} ({report.bytes_per_sample:.1f} B/sample)"
    )
    click.echo(
        f"throughput  {report.throughput:.1f} samples/s ({report.samples_labelled} in "
        f"{report.seconds:.2f} s, {report.workers} worker(s), {report.engine})"
    )


@distill.command("eval")
@click.argument("student", type=click.Path(path_type=str))
@click.option("--teacher", default=None, type=click.Path(path_type=str), help="Teacher model.")
@click.option(
    "--store",
    default=None,
    type=click.Path(path_type=str),
    help="Soft-label store instead of a teacher.",
)
@data_options
@click.option("--temperature", type=float, default=1.0, show_default=True, help="T of the mean KL.")
@click.option(
    "--tail",
    type=click.Choice(["uniform", "renormalize"]),
    default="uniform",
    show_default=True,
    help="Top-k stores: how the mass outside the top K is spread.",
)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--repeats", type=int, default=20, show_default=True, help="Latency runs (0 = skip).")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads.")
@json_option
def eval_cmd(student: str, teacher: str | None, store: str | None, **kwargs: Any) -> None:
    """Agreement of STUDENT with a teacher or store: top-1/5, mean KL, accuracy, latency, size."""
    from onnxcomp import io
    from onnxcomp.distill import EvalConfig, evaluate
    from onnxcomp.errors import InvalidInputError

    data_opts = pop_data_options(kwargs)
    as_json = kwargs.pop("as_json")
    if (teacher is None) == (store is None):
        raise InvalidInputError("give exactly one of --teacher or --store")
    cfg = EvalConfig(
        temperature=kwargs["temperature"],
        batch_size=kwargs["batch_size"],
        latency_repeats=kwargs["repeats"],
        threads=kwargs["threads"],
        tail=kwargs["tail"],
    )
    model = io.load(student)
    dataset = build_dataset(model, data_opts)
    progress = Progress("eval", enabled=not as_json)
    try:
        report = evaluate(
            student, dataset, teacher=teacher, store=store, config=cfg, progress=progress
        )
    finally:
        progress.close()
    if as_json:
        echo_json(report)
        return
    if report.synthetic:
        click.echo("WARNING: synthetic random inputs; agreement on real data may differ.")
    click.echo(f"data        {report.data} ({report.samples} samples, {report.classes} classes)")
    click.echo(f"top-1 agree {100 * report.top1_agreement:.2f}%")
    click.echo(f"top-5 agree {100 * report.top5_agreement:.2f}%")
    click.echo(f"mean KL     {report.mean_kl:.5f} (T={report.temperature:g})")

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f} ms"

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    rows = [
        [
            "student",
            report.student,
            fmt_bytes(report.student_bytes),
            ms(report.student_latency_ms),
            pct(report.student_accuracy),
        ],
        [
            "teacher",
            report.teacher,
            fmt_bytes(report.teacher_bytes),
            ms(report.teacher_latency_ms),
            pct(report.teacher_accuracy),
        ],
    ]
    click.echo(table(rows, ["", "model", "size", "latency", "accuracy"]))
