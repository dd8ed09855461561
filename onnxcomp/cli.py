"""The ``onnxcomp`` command line.

Each command parses its options into a typed config, calls the Python API and
prints a readable summary (or JSON with ``--json``). Errors of onnxcomp's own
hierarchy become one line on stderr and the exit code of their class (2 for bad
input, 3 for a failed gate); anything unexpected becomes one line and exit 1
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from onnxcomp.clikit import (
    Progress,
    build_dataset,
    data_options,
    echo_json,
    fmt_bytes,
    fmt_count,
    fmt_num,
    json_option,
    pop_data_options,
    shape_option,
    table,
)

__all__ = ["main"]


class _Group(click.Group):
    """Turns exceptions into one-line messages and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or os.environ.get("ONNXCOMP_DEBUG") == "1"
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:
            # the reader went away (`onnxcomp inspect m.onnx | head`): stop quietly, the
            # shell's way; stdout is pointed at devnull so the exit flush cannot fail again
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)
        except Exception as e:
            from onnxcomp.errors import OnnxcompError

            if debug:
                raise
            if isinstance(e, OnnxcompError):
                click.echo(f"error: {_one_line(str(e))}", err=True)
                sys.exit(e.exit_code)
            if isinstance(e, MemoryError):
                click.echo("error: out of memory", err=True)
                sys.exit(1)
            click.echo(
                f"internal error: {type(e).__name__}: {_one_line(str(e))} (rerun with --debug "
                "for a traceback and report it)",
                err=True,
            )
            sys.exit(1)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:1000]


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnxcomp")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def main(verbose: int, debug: bool) -> None:
    """onnxcomp: compress ONNX models (prune, quantize, distill) and verify them."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------- inspect


@main.command()
@click.argument("model", type=click.Path(path_type=str))
@shape_option
@click.option("--top", type=int, default=10, show_default=True, help="Largest layers to list.")
@json_option
def inspect(model: str, shapes: tuple[str, ...], top: int, as_json: bool) -> None:
    """Show a model's structure: I/O, params, MACs per op, op histogram."""
    from onnxcomp import io
    from onnxcomp.analysis import inspect_model

    m = io.load(model, lift_constants=False)
    info = inspect_model(m, shapes=io.parse_shape_spec(shapes), top=top)
    if as_json:
        echo_json(info)
        return
    click.echo(f"model       {info.path}")
    click.echo(f"file size   {fmt_bytes(info.file_size)}")
    click.echo(f"producer    {info.producer} {info.producer_version}".rstrip())
    opsets = ", ".join(f"{k} {v}" for k, v in info.opsets.items())
    click.echo(f"IR / opset  {info.ir_version} / {opsets}")
    if info.metadata:
        keys = ", ".join(info.metadata)
        click.echo(f"metadata    {keys}")
    click.echo(
        f"params      {info.params:,} ({fmt_bytes(info.params_bytes)})"
        + (f", {info.constant_node_params:,} in Constant nodes" if info.constant_node_params else "")
    )
    click.echo(f"MACs        {info.macs:,} ({fmt_count(info.macs)})")
    click.echo(f"nodes       {info.nodes}")
    for a in info.assumptions:
        click.echo(f"assumed     {a}")
    if info.unknown_mac_nodes:
        click.echo(
            f"unknown     {len(info.unknown_mac_nodes)} node(s) without static shapes, MACs not "
            f"counted (give --shape): {', '.join(info.unknown_mac_nodes[:5])}"
        )
    click.echo("")
    io_rows = [
        [kind, t.name, t.dtype, "x".join("?" if d is None else str(d) for d in (t.shape or ["?"]))]
        for kind, ts in (("input", info.inputs), ("output", info.outputs))
        for t in ts
    ]
    click.echo(table(io_rows, ["", "name", "dtype", "shape"]))
    if info.macs_by_op:
        click.echo("")
        rows = [[op, f"{m:,}", f"{100 * m / info.macs:.1f}%"] for op, m in info.macs_by_op.items()]
        click.echo(table(rows, ["op", "MACs", "share"]))
    click.echo("")
    hist = list(info.op_histogram.items())
    click.echo(table([[op, n] for op, n in hist], ["op type", "count"]))
    if info.largest_layers:
        click.echo("")
        rows = [
            [layer.name, layer.op_type, fmt_count(layer.macs), f"{layer.params:,}"]
            for layer in info.largest_layers
        ]
        click.echo(table(rows, ["largest layers", "op", "MACs", "params"]))


# ---------------------------------------------------------------------- verify


def gate_options(f: Any) -> Any:
    opts = [
        click.option("--min-cosine", type=float, help="Fail unless every output's cosine >= this."),
        click.option("--min-top1", type=float, help="Fail unless top-1 agreement >= this (0-1)."),
        click.option("--min-sqnr", type=float, help="Fail unless every output's SQNR (dB) >= this."),
        click.option("--max-abs-error", type=float, help="Fail if any output's max abs error > this."),
        click.option("--max-latency-ratio", type=float, help="Fail if candidate/reference latency > this."),
        click.option(
            "--max-accuracy-drop",
            type=float,
            help="Fail if accuracy drops by more than this (0-1; needs labelled data).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


GATE_KEYS = (
    "min_cosine",
    "min_top1",
    "min_sqnr",
    "max_abs_error",
    "max_latency_ratio",
    "max_accuracy_drop",
)


def print_verify(report: Any) -> None:
    """Readable summary of a VerifyReport."""
    if report.synthetic:
        click.echo("WARNING: synthetic random inputs; fidelity on real data may differ.")
    click.echo(f"data        {report.data} ({report.samples} samples)")
    rows = []
    for o in report.outputs:
        rows.append(
            [
                o.name,
                fmt_num(o.max_abs_error, 4),
                fmt_num(o.mean_abs_error, 4),
                fmt_num(o.cosine, 6),
                fmt_num(o.sqnr_db, 4),
                "-" if o.top1_agreement is None else f"{100 * o.top1_agreement:.2f}%",
            ]
        )
    click.echo(table(rows, ["output", "max|err|", "mean|err|", "cosine", "SQNR dB", "top-1 agree"]))
    click.echo(
        f"size        {fmt_bytes(report.reference_size)} -> {fmt_bytes(report.candidate_size)} "
        f"({report.size_ratio:.3f}x)"
    )
    if report.reference_latency and report.candidate_latency:
        click.echo(
            f"latency     {report.reference_latency.median_ms:.3f} ms -> "
            f"{report.candidate_latency.median_ms:.3f} ms ({report.latency_ratio:.3f}x, "
            f"median of {report.candidate_latency.repeats})"
        )
    if report.reference_accuracy is not None:
        click.echo(
            f"accuracy    {100 * report.reference_accuracy:.2f}% -> "
            f"{100 * report.candidate_accuracy:.2f}%"
        )
    for g in report.gates:
        status = "PASS" if g.passed else "FAIL"
        click.echo(f"gate        {status} {g.name} {fmt_num(g.value)} (threshold {g.threshold})")


@main.command()
@click.argument("reference", type=click.Path(path_type=str))
@click.argument("candidate", type=click.Path(path_type=str))
@data_options
@gate_options
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--repeats", type=int, default=20, show_default=True, help="Latency runs (0 = skip).")
@click.option("--output", "outputs", multiple=True, help="Compare only these outputs.")
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads.")
@json_option
def verify(reference: str, candidate: str, **kwargs: Any) -> None:
    """Compare CANDIDATE against REFERENCE on the same samples (exit 3 on a failed gate)."""
    from onnxcomp import io
    from onnxcomp.errors import GateFailedError
    from onnxcomp.verification import Gates, VerifyConfig
    from onnxcomp.verification import verify as run_verify

    data_opts = pop_data_options(kwargs)
    as_json = kwargs.pop("as_json")
    gates = Gates(**{k: kwargs.pop(k) for k in GATE_KEYS})
    ref = io.load(reference)
    io.load(candidate)  # validate the file early, with a clear error
    dataset = build_dataset(ref, data_opts)
    cfg = VerifyConfig(
        batch_size=kwargs["batch_size"],
        latency_repeats=kwargs["repeats"],
        threads=kwargs["threads"],
        gates=gates,
        outputs=tuple(kwargs["outputs"]),
    )
    progress = Progress("verify")
    try:
        report = run_verify(reference, candidate, dataset, cfg, progress=progress)
    finally:
        progress.close()
    if as_json:
        echo_json(report)
    else:
        print_verify(report)
    if not report.passed:
        failed = [g for g in report.gates if not g.passed]
        g = failed[0]
        raise GateFailedError(f"gate {g.name} failed: {fmt_num(g.value)} vs threshold {g.threshold}")


# -------------------------------------------------------------------- simplify


@main.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=str))
@shape_option
@click.option("--no-onnxsim", is_flag=True, help="Only lift constants and fix shapes.")
@click.option("--fuse-bn", is_flag=True, help="Let onnxsim fuse BatchNormalization into Conv.")
@click.option("--verify/--no-verify", "do_verify", default=True, show_default=True)
@data_options
@json_option
def simplify(model: str, out: str, **kwargs: Any) -> None:
    """Normalize and simplify MODEL (constants to initializers, fixed shapes, onnxsim)."""
    from onnxcomp import io
    from onnxcomp.simplification import SimplifyConfig
    from onnxcomp.simplification import simplify as run_simplify
    from onnxcomp.verification import VerifyConfig
    from onnxcomp.verification import verify as run_verify

    data_opts = pop_data_options(kwargs)
    shapes = io.parse_shape_spec(kwargs["shapes"])
    m = io.load(model)
    cfg = SimplifyConfig(shapes=shapes or None, onnxsim=not kwargs["no_onnxsim"], skip_fuse_bn=not kwargs["fuse_bn"])
    result = run_simplify(m, cfg)
    report = None
    if kwargs["do_verify"]:
        if not data_opts["data"] and data_opts["synthetic"] is None:
            data_opts["synthetic"] = 8
        dataset = build_dataset(result, data_opts)
        report = run_verify(m, result, dataset, VerifyConfig(latency_repeats=10))
    path = io.save(result, out, protect=[model])
    if kwargs["as_json"]:
        echo_json({"output": str(path), "verify": report.to_dict() if report else None})
        return
    click.echo(f"wrote       {path}")
    if report:
        print_verify(report)


def _register_optional_commands() -> None:
    """Commands of the capabilities, each in its own cheap-to-import module."""
    import importlib

    for module, name in (
        ("onnxcomp.cli_prune", "prune"),
        ("onnxcomp.cli_quantize", "quantize"),
        ("onnxcomp.cli_distill", "distill"),
        ("onnxcomp.cli_compress", "compress"),
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        main.add_command(getattr(mod, name))


_register_optional_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
