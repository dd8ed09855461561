"""``onnxcomp prune``: structured channel pruning (imports only click at module level)."""

from __future__ import annotations

from typing import Any

import click

from onnxcomp.clikit import (
    Progress,
    build_dataset,
    data_options,
    echo_json,
    fmt_bytes,
    fmt_count,
    json_option,
    pop_data_options,
    shape_option,
    table,
)

__all__ = ["prune"]

_FILE_KEYS = {
    "ratio": float,
    "criterion": str,
    "global": bool,
    "max_layer_ratio": float,
    "layers": dict,
    "target_macs": float,
    "round_to": int,
    "min_channels": int,
    "ignore": list,
    "reconstruct": bool,
    "bias_fold": bool,
}


def _read_config(path: str) -> dict[str, Any]:
    """Options from a JSON or YAML file (keys as the long options, ``layers: {name: ratio}``)."""
    import json
    from pathlib import Path

    from onnxcomp.errors import InvalidInputError

    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"--config {p}: no such file")
    text = p.read_text()
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        else:
            raw = json.loads(text)
    except Exception as e:
        raise InvalidInputError(f"--config {p}: cannot parse: {' '.join(str(e).split())[:200]}") from e
    if not isinstance(raw, dict):
        raise InvalidInputError(f"--config {p}: expected a mapping of options")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        k = str(key).replace("-", "_")
        kind = _FILE_KEYS.get(k)
        if kind is None:
            raise InvalidInputError(f"--config {p}: unknown key {key!r} (known: {', '.join(sorted(_FILE_KEYS))})")
        if kind is dict:
            if not isinstance(value, dict):
                raise InvalidInputError(f"--config {p}: 'layers' must map layer names to ratios")
            value = {str(n): value[n] for n in value}
        elif kind is list:
            value = [value] if isinstance(value, str) else list(value)
        elif kind is bool:
            value = bool(value)
        else:
            try:
                value = kind(value)
            except (TypeError, ValueError) as e:
                raise InvalidInputError(f"--config {p}: {key}: expected {kind.__name__}, got {value!r}") from e
        out[k] = value
    return out


def _parse_layers(items: tuple[str, ...]) -> dict[str, float]:
    from onnxcomp.errors import InvalidInputError

    out: dict[str, float] = {}
    for item in items:
        name, sep, ratio = item.rpartition("=")
        if not sep or not name:
            raise InvalidInputError(f"--layer {item!r}: expected NAME=RATIO")
        try:
            out[name] = float(ratio)
        except ValueError as e:
            raise InvalidInputError(f"--layer {item!r}: ratio {ratio!r} is not a number") from e
    return out


@click.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option("-o", "--output", "out", type=click.Path(path_type=str), help="Pruned model (required unless --dry-run).")
@click.option("--ratio", type=float, default=0.5, show_default=True, help="Fraction of channels removed per group, in [0, 1).")
@click.option(
    "--criterion",
    type=click.Choice(["l1", "l2", "bn", "activation", "reconstruction"]),
    default="l1",
    show_default=True,
    help="Channel importance (activation and reconstruction need --data).",
)
@click.option("--global", "global_ranking", is_flag=True, help="Rank channels across all groups.")
@click.option("--max-layer-ratio", type=float, default=0.9, show_default=True, help="With --global: at most this fraction of a group.")
@click.option("--layer", "layers", multiple=True, metavar="NAME=R", help="Ratio for one layer (source node or tensor name; repeatable).")
@click.option("--config", "config_file", type=click.Path(path_type=str), help="JSON/YAML file of options (layers: {name: ratio}).")
@click.option("--target-macs", type=float, default=None, help="Search the ratio to reach this fraction of the original MACs.")
@click.option("--round-to", type=int, default=1, show_default=True, help="Keep channel counts multiples of N.")
@click.option("--min-channels", type=int, default=1, show_default=True, help="Never keep fewer channels in a group.")
@click.option("--ignore", multiple=True, metavar="PATTERN", help="Do not prune outputs of these nodes (name glob or op type; repeatable).")
@click.option("--reconstruct", is_flag=True, help="Refit consumers by least squares on --data (implied by --criterion reconstruction).")
@click.option(
    "--bias-fold/--no-bias-fold",
    default=True,
    show_default=True,
    help="Fold the mean contribution of removed channels into the consumers' biases "
    "(measured on --data, else estimated from BatchNormalization).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan, write nothing.")
@click.option("--save-plan", type=click.Path(path_type=str), help="Also write the plan as JSON.")
@click.option("--verify/--no-verify", "do_verify", default=True, show_default=True, help="Check against the masked reference.")
@click.option("--calib-samples", type=int, default=64, show_default=True, help="Samples for activation statistics / reconstruction.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--repeats", type=int, default=20, show_default=True, help="Latency runs of the report (0 = skip).")
@shape_option
@data_options
@json_option
@click.pass_context
def prune(ctx: click.Context, model: str, **kw: Any) -> None:
    """Remove channels from MODEL (Conv, Gemm, MatMul layers) and write a smaller model."""
    from onnxcomp import io
    from onnxcomp.errors import InvalidInputError
    from onnxcomp.prune import PruneConfig, report
    from onnxcomp.prune import prune as run_prune

    data_opts = pop_data_options(kw)
    as_json = kw.pop("as_json")
    if not kw["dry_run"] and not kw["out"]:
        raise InvalidInputError("give -o/--output (or --dry-run)")
    opts: dict[str, Any] = {}
    if kw["config_file"]:
        opts.update(_read_config(kw["config_file"]))

    def explicit(name: str) -> bool:
        src = ctx.get_parameter_source(name)
        return src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP")

    mapping = {
        "ratio": "ratio",
        "criterion": "criterion",
        "global_ranking": "global",
        "max_layer_ratio": "max_layer_ratio",
        "target_macs": "target_macs",
        "round_to": "round_to",
        "min_channels": "min_channels",
        "reconstruct": "reconstruct",
        "bias_fold": "bias_fold",
    }
    for param, key in mapping.items():
        if key not in opts or explicit(param):
            opts[key] = kw[param]
    layers = dict(opts.get("layers", {}))
    layers.update(_parse_layers(kw["layers"]))
    ignore = tuple(opts.get("ignore", ())) + tuple(kw["ignore"])
    cfg = PruneConfig(
        ratio=opts["ratio"],
        criterion=opts["criterion"],
        global_ranking=opts["global"],
        max_layer_ratio=opts["max_layer_ratio"],
        layers=layers,
        target_macs=opts["target_macs"],
        round_to=opts["round_to"],
        min_channels=opts["min_channels"],
        ignore=ignore,
        reconstruct=opts["reconstruct"],
        bias_fold=opts["bias_fold"],
        verify=kw["do_verify"],
        calib_samples=kw["calib_samples"],
        batch_size=kw["batch_size"],
        latency_repeats=kw["repeats"],
    )
    shapes = io.parse_shape_spec(kw["shapes"])
    m = io.load(model, shapes=shapes or None)
    dataset = build_dataset(m, data_opts, required=False)
    if cfg.criterion == "activation" or cfg.refit:
        if dataset is None:
            raise InvalidInputError(f"--criterion {cfg.criterion}{' / --reconstruct' if cfg.refit else ''} needs --data")
    if kw["dry_run"]:
        from onnxcomp.prune import plan_pruning

        plan = plan_pruning(m, cfg, dataset)
        _save_plan(plan, kw["save_plan"])
        if as_json:
            echo_json(plan)
        else:
            _print_plan(plan)
        return
    progress = Progress("reconstruct", unit="layers")
    try:
        result = run_prune(m, cfg, dataset, progress=progress)
    finally:
        progress.close()
    _save_plan(result.plan, kw["save_plan"])
    path = io.save(result.model, kw["out"], protect=[model])
    result.report.update(
        report(m, result.model, result.plan, dataset, latency_repeats=kw["repeats"], batch_size=kw["batch_size"])
    )
    result.report["output"] = str(path)
    if as_json:
        echo_json(result)
        return
    _print_plan(result.plan)
    _print_result(result)
    click.echo(f"wrote       {path}")


def _save_plan(plan: Any, path: str | None) -> None:
    if not path:
        return
    import json
    from pathlib import Path

    Path(path).write_text(json.dumps(plan.to_dict(), indent=1))


def _print_plan(plan: Any) -> None:
    pruned = [g for g in plan.groups if g.pruned]
    alone = [g for g in plan.groups if not g.pruned]
    click.echo(f"criterion   {plan.criterion}")
    click.echo(f"groups      {len(plan.groups)} found, {len(pruned)} pruned, {len(alone)} left alone")
    click.echo(f"channels    {plan.removed_channels} removed")
    click.echo(
        f"MACs        {fmt_count(plan.macs_before)} -> {fmt_count(plan.macs_after)} ({plan.macs_ratio:.3f}x)"
    )
    click.echo(
        f"params      {plan.params_before:,} -> {plan.params_after:,} ({plan.params_ratio:.3f}x)"
    )
    for note in plan.notes:
        click.echo(f"note        {note}")
    rows = [[c.node, c.op_type, c.before, c.after] for c in plan.layers if c.before != c.after]
    if rows:
        click.echo("")
        click.echo(table(rows, ["layer", "op", "channels", "after"]))
    if alone:
        click.echo("")
        rows = [[", ".join(g.nodes)[:60], g.channels, (g.reasons[0] if g.reasons else "")[:100]] for g in alone]
        click.echo(table(rows, ["left alone", "channels", "why"]))


def _print_result(result: Any) -> None:
    click.echo("")
    chk = result.reference_check
    if chk:
        status = "PASS" if chk["passed"] else "FAIL"
        click.echo(
            f"verify      {status} pruned vs masked reference: max|err| {chk['max_abs_error']:.3g} "
            f"(tolerance {chk['tolerance']:.3g}, {chk['samples']} batches)"
        )
    rep = result.report
    click.echo(f"size        {fmt_bytes(rep.get('size_before'))} -> {fmt_bytes(rep.get('size_after'))}")
    if rep.get("latency_ratio") is not None:
        click.echo(
            f"latency     {rep['latency_before_ms']:.3f} ms -> {rep['latency_after_ms']:.3f} ms "
            f"({rep['latency_ratio']:.3f}x)"
        )
    fid = rep.get("fidelity")
    if fid:
        for o in fid["outputs"]:
            click.echo(f"fidelity    {o['name']}: cosine {o['cosine']:.6g}, max|err| {o['max_abs_error']:.4g}")
        if fid.get("reference_accuracy") is not None:
            click.echo(
                f"accuracy    {100 * fid['reference_accuracy']:.2f}% -> {100 * fid['candidate_accuracy']:.2f}%"
            )
    click.echo(f"time        {rep.get('prune_seconds', 0):.2f} s")
