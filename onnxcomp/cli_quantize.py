"""``onnxcomp quantize``: static int8 quantization with streaming calibration.

Only click and onnxcomp.clikit are imported at module level.
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
    fmt_num,
    json_option,
    pop_data_options,
    shape_option,
    split_csv,
    table,
)

__all__ = ["quantize"]


@click.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(path_type=str),
    help="Output .onnx file.",
)
@data_options
@shape_option
@click.option(
    "--mode",
    type=click.Choice(["static", "dynamic"]),
    default="static",
    show_default=True,
    help="static: calibrated int8 activations; dynamic: ONNX Runtime dynamic quantization.",
)
@click.option(
    "--format", "fmt", type=click.Choice(["qdq", "qoperator"]), default="qdq", show_default=True
)
@click.option(
    "--method",
    type=click.Choice(["minmax", "percentile", "entropy", "mse"]),
    default="minmax",
    show_default=True,
    help="Calibration method.",
)
@click.option("--percentile", type=float, default=99.99, show_default=True)
@click.option(
    "--bins", type=int, default=2048, show_default=True, help="Histogram bins (histogram methods)."
)
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="Weight scales.")
@click.option("--activation-type", type=click.Choice(["u8", "s8"]), default="u8", show_default=True)
@click.option("--weight-type", type=click.Choice(["u8", "s8"]), default="s8", show_default=True)
@click.option("--symmetric-activations/--asymmetric-activations", default=False, show_default=True)
@click.option("--symmetric-weights/--asymmetric-weights", default=True, show_default=True)
@click.option(
    "--reduce-range/--no-reduce-range",
    default=None,
    help="7-bit weights (default: automatic: on CPUs without VNNI, 7 or 8 bits, whichever "
    "gives the better output SQNR on 8 samples).",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="NAME|PATTERN|OP",
    help="Keep nodes in float: node names, fnmatch patterns or op types (repeatable, comma-separated).",
)
@click.option("--op-types", multiple=True, help="Quantize only these op types (comma-separated).")
@click.option(
    "--ranges", "ranges_in", type=click.Path(path_type=str), help="Reuse ranges from --save-ranges."
)
@click.option(
    "--save-ranges", type=click.Path(path_type=str), help="Write the calibrated ranges (JSON)."
)
@click.option(
    "--fix-shapes", is_flag=True, help="Fix every dynamic input dim from the first sample."
)
@click.option(
    "--onnxsim", "use_onnxsim", is_flag=True, help="Simplify with onnxsim first (slow to import)."
)
@click.option("--no-fold-bn", is_flag=True, help="Keep BatchNormalization nodes.")
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Calibration batch size [default: auto, the largest power of two <= 32 that fits "
    "--calib-memory when the batch axis is dynamic, else 1].",
)
@click.option(
    "--calib-memory",
    type=float,
    default=256.0,
    show_default=True,
    metavar="MB",
    help="Activation memory of one calibration batch (sets the automatic batch size and how many tensors a histogram pass exposes).",
)
@click.option(
    "--equalize", is_flag=True, help="Cross-layer equalization (depthwise-separable nets)."
)
@click.option(
    "--bias-correction", is_flag=True, help="Correct the output shift of quantized weights."
)
@click.option(
    "--target-cosine",
    type=float,
    help="Keep the most sensitive nodes float until output cosine >= this.",
)
@click.option(
    "--eval-data",
    "--labels",
    "eval_data",
    type=click.Path(path_type=str),
    help="Evaluation samples (a 'label' key gives accuracy) for the report and --max-drop.",
)
@click.option(
    "--max-drop", type=float, help="Keep nodes float until the accuracy drop is <= this (0-1)."
)
@click.option(
    "--max-fallback",
    type=int,
    default=32,
    show_default=True,
    help="Most nodes kept float by the fallback.",
)
@click.option(
    "--report",
    "report_kind",
    type=click.Choice(["sensitivity"]),
    default=None,
    help="Also print the per-tensor sensitivity report (SQNR/cosine, worst first).",
)
@click.option(
    "--top", type=int, default=15, show_default=True, help="Rows of the sensitivity report."
)
@click.option("--repeats", type=int, default=20, show_default=True, help="Latency runs (0 = skip).")
@click.option(
    "--float-affine/--quantize-affine",
    default=True,
    show_default=True,
    help="Keep Add/Mul/Sub/Div with a constant operand in float.",
)
@click.option(
    "--latency-guard/--no-latency-guard",
    default=True,
    show_default=True,
    help="When int8 is slower than float here, keep depthwise/tiny convs or non-MAC ops in "
    "float if that is faster and still meets the targets; warn when nothing pays.",
)
@click.option("--threads", type=int, default=None, help="ONNX Runtime intra-op threads.")
@click.option("--verify/--no-verify", "do_verify", default=True, show_default=True)
@json_option
def quantize(model: str, out: str, **kw: Any) -> None:
    """Quantize MODEL to int8 (QDQ by default) using calibration samples (--data)."""
    from onnxcomp import io
    from onnxcomp.data import open_data
    from onnxcomp.quantize import QuantizeConfig
    from onnxcomp.quantize import quantize as run_quantize

    data_opts = pop_data_options(kw)
    shapes = io.parse_shape_spec(kw["shapes"])
    m = io.load(model)
    cfg = QuantizeConfig(
        mode=kw["mode"],
        format=kw["fmt"],
        method=kw["method"],
        percentile=kw["percentile"],
        bins=kw["bins"],
        per_channel=kw["per_channel"],
        activation_type=kw["activation_type"],
        weight_type=kw["weight_type"],
        activation_symmetric=kw["symmetric_activations"],
        weight_symmetric=kw["symmetric_weights"],
        reduce_range=kw["reduce_range"],
        exclude=split_csv(*kw["exclude"]),
        op_types=split_csv(*kw["op_types"]),
        shapes=shapes or None,
        fix_shapes_from_data=kw["fix_shapes"],
        onnxsim=kw["use_onnxsim"],
        fold_bn=not kw["no_fold_bn"],
        batch_size=kw["batch_size"],
        calib_memory_mb=kw["calib_memory"],
        ranges=kw["ranges_in"],
        save_ranges=kw["save_ranges"],
        equalize=kw["equalize"],
        bias_correction=kw["bias_correction"],
        target_cosine=kw["target_cosine"],
        max_drop=kw["max_drop"],
        max_fallback=kw["max_fallback"],
        sensitivity=kw["report_kind"] == "sensitivity",
        verify=kw["do_verify"],
        latency_repeats=kw["repeats"],
        latency_guard=kw["latency_guard"],
        float_affine=kw["float_affine"],
        threads=kw["threads"],
    )
    required = cfg.mode == "static" and not cfg.ranges
    dataset = build_dataset(m, data_opts, required=required)
    evalset = open_data(kw["eval_data"], m) if kw["eval_data"] else None
    progress = Progress("calibrate", enabled=not kw["as_json"])
    try:
        result = run_quantize(m, dataset, cfg, eval_data=evalset, progress=progress)
    finally:
        progress.close()
    path = io.save(result.model, out, protect=[model])
    rep = result.report
    if kw["as_json"]:
        d = rep.to_dict()
        d["output"] = str(path)
        d["output_size"] = io.file_size(path)
        echo_json(d)
        return
    _print(rep, str(path), kw["top"])


def _print(rep: Any, path: str, top: int) -> None:
    if rep.synthetic:
        click.echo(
            "WARNING: calibrated on SYNTHETIC random inputs (--synthetic); ranges and accuracy on "
            "real data may be poor. Use --data with real samples."
        )
    click.echo(f"wrote       {path}")
    method = f", {rep.method}" if rep.method else ""
    click.echo(
        f"mode        {rep.mode} {rep.format}{method}, weights "
        f"{'per-channel' if rep.per_channel else 'per-tensor'}"
        f"{' 7-bit' if rep.reduce_range else ''}, opset "
        f"{rep.opset[0]}{'' if rep.opset[0] == rep.opset[1] else f' -> {rep.opset[1]}'}"
    )
    if rep.mode == "static":
        click.echo(f"calibrated  {rep.calibrated_tensors} tensors on {rep.samples} samples")
    click.echo(f"quantized   {rep.quantized_nodes} nodes")
    if rep.folded_bn:
        click.echo(f"folded BN   {len(rep.folded_bn)}")
    if rep.equalized:
        click.echo(f"equalized   {len(rep.equalized)} conv pair(s)")
    if rep.bias_corrected:
        click.echo(f"bias corr.  {len(rep.bias_corrected)} layer(s)")
    if rep.excluded:
        click.echo(f"kept float  {len(rep.excluded)} node(s):")
        for e in rep.excluded:
            click.echo(f"  {e.node} ({e.op_type}): {e.reason}")
    if rep.fallback:
        status = "met" if rep.target_met else "NOT met"
        click.echo(
            f"fallback    {len(rep.fallback)} node(s) kept float, target {status}: {', '.join(rep.fallback)}"
        )
    elif rep.target_met is not None:
        click.echo(f"fallback    none needed (target {'met' if rep.target_met else 'NOT met'})")
    g = rep.latency_guard
    if g is not None:
        if g.tried:
            click.echo(
                f"lat. guard  int8 {g.base_ratio:.2f}x float -> kept {g.chosen!r} "
                f"({len(g.float_nodes)} more node(s) float, {g.ratio:.2f}x)"
            )
            for t in g.tried:
                fid = (
                    "not evaluated (not faster)"
                    if t.cosine is None
                    else f"cosine {t.cosine:.5f}{'' if t.meets_target else ' (fidelity not met)'}"
                )
                click.echo(f"  {t.name}: {len(t.nodes)} float node(s), {t.ratio:.2f}x, {fid}")
        else:
            click.echo(f"lat. guard  int8 {g.base_ratio:.2f}x float: nothing to change")
    v = rep.verify
    if v is not None:
        rows = [
            [
                o.name,
                fmt_num(o.cosine, 6),
                fmt_num(o.sqnr_db, 4),
                fmt_num(o.max_abs_error, 4),
                "-" if o.top1_agreement is None else f"{100 * o.top1_agreement:.2f}%",
            ]
            for o in v.outputs
        ]
        click.echo("")
        click.echo(table(rows, ["output", "cosine", "SQNR dB", "max|err|", "top-1 agree"]))
        click.echo(
            f"size        {fmt_bytes(v.reference_size)} -> {fmt_bytes(v.candidate_size)} ({v.size_ratio:.3f}x)"
        )
        if v.reference_latency and v.candidate_latency:
            click.echo(
                f"latency     float {v.reference_latency.median_ms:.3f} ms, int8 "
                f"{v.candidate_latency.median_ms:.3f} ms ({v.latency_ratio:.3f}x, same run)"
            )
        if v.reference_accuracy is not None:
            click.echo(
                f"accuracy    {100 * v.reference_accuracy:.2f}% -> {100 * v.candidate_accuracy:.2f}%"
            )
    if rep.sensitivity:
        click.echo("")
        rows = [
            [s.tensor, s.op_type, fmt_num(s.sqnr_db, 4), fmt_num(s.cosine, 6)]
            for s in rep.sensitivity[:top]
        ]
        click.echo(table(rows, ["sensitivity (worst first)", "op", "SQNR dB", "cosine"]))
    for w in rep.warnings:
        click.echo(f"warning     {w}")
