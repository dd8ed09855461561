"""Shared pieces of the command line: options, data building, output helpers.

Only click is imported at module level; every command imports the heavy
modules (onnxruntime, numpy-heavy code) inside its body.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "Progress",
    "build_dataset",
    "data_options",
    "echo_json",
    "fmt_bytes",
    "fmt_count",
    "json_option",
    "shape_option",
    "split_csv",
    "table",
]


def split_csv(*values: str | None) -> tuple[str, ...]:
    """Comma-separated option values (one string or a repeated option) as a flat tuple."""
    return tuple(x.strip() for v in values if v for x in v.split(",") if x.strip())


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(x) for x in text.replace(":", ",").split(",") if x.strip())
    except ValueError as e:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from e


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts if p.strip()]
    except ValueError as e:
        raise click.BadParameter(f"expected HxW or N, got {text!r}") from e
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) <= 0:
        raise click.BadParameter(f"expected HxW or N with positive sizes, got {text!r}")
    return dims[0], dims[1]


def shape_option(f: F) -> F:
    return click.option(
        "--shape",
        "shapes",
        multiple=True,
        metavar="NAME=D1xD2..",
        help="Fix a dynamic input shape, e.g. --shape input=1x3x224x224 (repeatable).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


def data_options(f: F) -> F:
    """--data / --synthetic and image preprocessing options."""
    opts = [
        click.option(
            "--data",
            type=click.Path(path_type=str),
            help="Samples: .npz keyed by input name (sample axis first), .npy, a folder "
            "of .npz/.npy files, or an image folder.",
        ),
        click.option(
            "--synthetic",
            type=int,
            default=None,
            metavar="N",
            help="Use N random samples from the input types (not real data).",
        ),
        click.option("--limit", type=int, default=None, help="Use at most this many samples."),
        click.option("--seed", type=int, default=0, show_default=True, help="Seed of --synthetic."),
        click.option("--image-size", default=None, metavar="HxW", help="Images: final size."),
        click.option("--resize", type=int, default=None, help="Images: shorter side before center crop."),
        click.option("--scale", type=float, default=1 / 255, show_default="1/255", help="Images: pixel scale."),
        click.option("--mean", default=None, metavar="M1,M2,M3", help="Images: per-channel mean."),
        click.option("--std", default=None, metavar="S1,S2,S3", help="Images: per-channel std."),
        click.option(
            "--channels",
            type=click.Choice(["RGB", "BGR", "GRAY"], case_sensitive=False),
            default="RGB",
            show_default=True,
            help="Images: channel order.",
        ),
        click.option(
            "--layout",
            type=click.Choice(["NCHW", "NHWC"], case_sensitive=False),
            default=None,
            help="Images: layout (inferred from the model input by default).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


DATA_KEYS = (
    "data",
    "synthetic",
    "limit",
    "seed",
    "image_size",
    "resize",
    "scale",
    "mean",
    "std",
    "channels",
    "layout",
)


def pop_data_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Remove the data options from a command's kwargs."""
    return {k: kwargs.pop(k) for k in DATA_KEYS}


def build_dataset(model: Any, opts: dict[str, Any], *, required: bool = True) -> Any:
    """Make the Dataset of a command from its data options.

    Raises:
        InvalidInputError: Neither --data nor --synthetic (when required), or both.
    """
    from onnxcomp.data import ImagePreprocess, SyntheticSource, open_data
    from onnxcomp.data._specs import input_specs
    from onnxcomp.errors import InvalidInputError

    if opts["data"] and opts["synthetic"] is not None:
        raise InvalidInputError("give either --data or --synthetic, not both")
    if not opts["data"] and opts["synthetic"] is None:
        if not required:
            return None
        raise InvalidInputError("no samples: give --data PATH or --synthetic N")
    if opts["limit"] is not None and opts["limit"] <= 0:
        raise InvalidInputError(f"--limit must be positive, got {opts['limit']}")
    specs = input_specs(model)
    if opts["synthetic"] is not None:
        from onnxcomp.data import Dataset

        return Dataset(SyntheticSource(specs, opts["synthetic"], opts["seed"]), specs, limit=opts["limit"])
    mean = _floats(opts["mean"]) or (0.0,)
    std = _floats(opts["std"]) or (1.0,)
    image = ImagePreprocess(
        size=_size(opts["image_size"]),
        resize=opts["resize"],
        scale=opts["scale"],
        mean=mean,
        std=std,
        channels=opts["channels"].upper(),
        layout=opts["layout"].upper() if opts["layout"] else None,
    )
    return open_data(opts["data"], specs, image=image, limit=opts["limit"])


class Progress:
    """Progress on stderr: a live line on a terminal, every ~10% otherwise."""

    def __init__(self, label: str, *, enabled: bool = True, unit: str = "samples") -> None:
        self.label = label
        self.unit = f" {unit}" if unit else ""
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.last_pct = -1
        self.shown = False

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        rate = done / max(now - self.t0, 1e-9)
        if self.tty:
            if now - self.last < 0.2 and (total is None or done < total):
                return
            self.last = now
            of = f"/{total}" if total else ""
            click.echo(f"\r{self.label}: {done}{of}{self.unit} ({rate:.1f}/s)", err=True, nl=False)
            self.shown = True
        elif total:
            pct = int(100 * done / total) // 10 * 10
            if pct > self.last_pct:
                self.last_pct = pct
                click.echo(f"{self.label}: {done}/{total}{self.unit} ({rate:.1f}/s)", err=True)

    def close(self) -> None:
        if self.shown:
            click.echo("", err=True)
            self.shown = False


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TB"


def fmt_count(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def fmt_num(x: float | None, digits: int = 6) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table with left-aligned first column, right-aligned others."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for j, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def _clean(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return "nan" if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o


def echo_json(obj: Any) -> None:
    """Print strict JSON (inf/nan as strings)."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    click.echo(json.dumps(_clean(json.loads(json.dumps(obj, default=_default))), indent=2))
