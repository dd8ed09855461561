"""The commented default recipe (``onnxcomp compress --print-recipe``).

Generated from the config dataclasses themselves: every option of every step
kind is listed with its default and the description from the dataclass
docstring, so the template cannot drift from the configs.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from onnxcomp.compress._recipe import _STEP_KEYS, DataSource, _config_classes, _field_types

__all__ = ["default_recipe"]

_STEP_KEY_DOCS = {
    "data": "Name of a data source above (calibration samples; verify: samples compared on).",
    "eval_data": "Name of a data source with labels: accuracy in the report, max_drop.",
    "against": "Compare with the 'input' model or the 'previous' step's model.",
}

# options switched on in the template (the rest are listed commented out)
_ACTIVE: dict[str, dict[str, str]] = {
    "simplify": {},
    "prune": {"ratio": "0.5", "reconstruct": "true", "calib_samples": "64", "data": "calib"},
    "quantize": {"method": "minmax", "sensitivity": "true", "data": "calib", "eval_data": "eval"},
    "verify": {"data": "eval", "min_cosine": "0.98", "max_accuracy_drop": "0.02"},
}


def _attr_docs(cls: type) -> dict[str, str]:
    """``name: description`` lines of the Attributes section of a Google docstring."""
    doc = cls.__doc__ or ""
    out: dict[str, str] = {}
    if "Attributes:" not in doc:
        return out
    body = doc.split("Attributes:", 1)[1]
    names: list[str] = []
    for line in body.splitlines():
        m = re.match(r"^\s{4,8}([a-z_][a-z0-9_ /]*):\s*(.*)$", line)
        if m and not line.startswith(" " * 12):
            names = [n.strip() for n in m.group(1).split("/")]
            for n in names:
                out[n] = m.group(2).strip()
        elif line.strip() and names:
            for n in names:
                out[n] += " " + line.strip()
        elif not line.strip() and out:
            names = []
    return out


def _yaml_value(v: Any) -> str:
    import yaml

    if dataclasses.is_dataclass(v):
        return "{}"
    if isinstance(v, tuple):
        v = list(v)
    if isinstance(v, dict) and not v:
        return "{}"
    text = yaml.safe_dump(v, default_flow_style=True).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _options(
    kind: str, cls: type, names: dict[str, Any], defaults: dict[str, Any], docs: dict[str, str]
) -> list[str]:
    lines = []
    active = _ACTIVE[kind]
    for name in names:
        doc = " ".join(docs.get(name, _STEP_KEY_DOCS.get(name, "")).split())
        if name in active:
            lines.append(f"      {name}: {active[name]}" + (f"  # {doc}" if doc else ""))
        else:
            default = defaults.get(name, None)
            lines.append(f"      # {name}: {_yaml_value(default)}" + (f"  # {doc}" if doc else ""))
    return lines


def default_recipe() -> str:
    """A complete recipe listing every option with its default, ready to edit."""
    classes = _config_classes()
    out = [
        "# onnxcomp compress recipe (YAML). Run:",
        "#   onnxcomp compress MODEL.onnx -o OUT.onnx --recipe this.yaml --report report/",
        "# Steps run in order; each step's options are the options of the command of the",
        "# same name (onnxcomp prune/quantize/verify/simplify --help), snake_case.",
        "# Lines starting with '#' show the defaults; uncomment to change them.",
        "version: 1",
        "",
        "data:  # named sample sources; paths are relative to this file",
    ]
    ds_docs = _attr_docs(DataSource)
    out.append("  calib:  # calibration samples (.npz keyed by input name, .npy, folder, images)")
    out.append("    path: calib.npz")
    out.append("    limit: 64  # " + ds_docs.get("limit", ""))
    out.append("  eval:   # evaluation samples; a 'label' key gives accuracy")
    out.append("    path: eval.npz")
    out.append("    limit: 500")
    for name in ("synthetic", "seed", "image"):
        out.append(
            f"    # {name}: {_yaml_value(getattr(DataSource, name, None)) if name != 'image' else '{size: [224, 224], mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}'}  # {ds_docs.get(name, '')}"
        )
    out += [
        "",
        "measure:  # figures of every step against the input model (report, plots)",
        "  data: eval",
    ]
    vdefaults = {
        f.name: f.default
        for f in dataclasses.fields(classes["verify"])
        if f.default is not dataclasses.MISSING
    }
    for name in _field_types(classes["verify"]):
        if name == "gates":
            continue
        out.append(f"  # {name}: {_yaml_value(vdefaults.get(name))}")
    out += ["", "steps:"]
    for kind in ("simplify", "prune", "quantize", "verify"):
        if kind == "verify":
            gcls, vcls = classes["gates"], classes["verify"]
            types_ = {
                **{k: v for k, v in _field_types(vcls).items() if k != "gates"},
                **_field_types(gcls),
            }
            defaults = {**vdefaults}
            docs = {
                "min_cosine": "Fail unless every output's cosine >= this.",
                "min_top1": "Fail unless top-1 agreement with the reference >= this (0-1).",
                "min_sqnr": "Fail unless every output's SQNR (dB) >= this.",
                "max_abs_error": "Fail if any output's max abs error > this.",
                "max_latency_ratio": "Fail if candidate/reference latency > this.",
                "max_accuracy_drop": "Fail if accuracy drops by more than this (0-1; labelled data).",
                "batch_size": "Batch size of the comparison.",
                "latency_repeats": "Latency runs (0 = skip).",
                "outputs": "Compare only these outputs.",
                "threads": "ONNX Runtime intra-op threads.",
                "warmup": "Warm-up runs before latency.",
            }
            defaults["against"] = "input"
            out.append(
                "  - verify:  # quality gates: a missed gate stops the run (exit 3), no output written"
            )
        else:
            cls = classes[kind]
            types_ = _field_types(cls)
            defaults = {
                f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc,operator]
                for f in dataclasses.fields(cls)
            }
            docs = _attr_docs(cls)
            comment = {
                "simplify": "constants to initializers, fixed shapes, onnxsim",
                "prune": "structured channel pruning (onnxcomp prune)",
                "quantize": "int8 post-training quantization (onnxcomp quantize)",
            }[kind]
            out.append(f"  - {kind}:  # {comment}")
        names = {**types_, **_STEP_KEYS[kind]}
        if kind == "simplify":
            out.append("      onnxsim: false  # Run onnxsim (slow to import; off here)")
            names.pop("onnxsim")
        out += _options(kind, classes.get(kind, object), names, defaults, docs)
    return "\n".join(out) + "\n"
