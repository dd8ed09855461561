"""Recipe files: strict YAML parsing onto the typed configs of each capability.

A recipe is a YAML mapping::

    version: 1
    data:                      # named sample sources, paths relative to the recipe
      calib: {path: calib.npz, limit: 64}
      eval: {path: eval.npz, limit: 500}
    measure: {data: eval}      # fidelity/latency of every step against the input
    steps:                     # run in order
      - prune: {ratio: 0.5, reconstruct: true, data: calib}
      - quantize: {method: minmax, data: calib, eval_data: eval}
      - verify: {data: eval, min_cosine: 0.99, max_accuracy_drop: 0.01}

Each step's options are the fields of the same frozen dataclass the CLI and
Python API build (``SimplifyConfig``, ``PruneConfig``, ``QuantizeConfig``,
``VerifyConfig`` + ``Gates``). The fields and their types are read from the
dataclasses themselves (:func:`typing.get_type_hints`), so a new option of a
capability is a recipe key with no change here; value ranges are checked by
the dataclass (``__post_init__``), whose message gets the recipe line. Every
error names the file, the line and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onnxcomp.errors import InvalidInputError

__all__ = [
    "STEP_KINDS",
    "DataSource",
    "Recipe",
    "RecipeError",
    "Step",
    "load_recipe",
    "parse_recipe",
]

STEP_KINDS = ("simplify", "prune", "quantize", "verify")
VERSION = 1


class RecipeError(InvalidInputError):
    """The recipe file is invalid; the message names the file, line and key."""


@dataclass(frozen=True)
class DataSource:
    """A named source of samples of a recipe.

    Attributes:
        path: ``.npz``/``.npy`` file, folder of samples or image folder (relative to the recipe).
        synthetic: Use this many random samples instead of a file (not real data).
        limit: Use at most this many samples.
        seed: Seed of ``synthetic``.
        image: Preprocessing of image folders (fields of ``ImagePreprocess``).
    """

    path: str | None = None
    synthetic: int | None = None
    limit: int | None = None
    seed: int = 0
    image: Any = None  # ImagePreprocess | None (typed in _field_types; onnxcomp.data is heavy)

    def __post_init__(self) -> None:
        if (self.path is None) == (self.synthetic is None):
            raise InvalidInputError("give exactly one of 'path' and 'synthetic'")
        if self.limit is not None and self.limit <= 0:
            raise InvalidInputError(f"'limit' must be positive, got {self.limit}")
        if self.synthetic is not None and self.synthetic <= 0:
            raise InvalidInputError(f"'synthetic' must be positive, got {self.synthetic}")

    def fingerprint(self) -> str:
        """Identifies the samples: the definition plus size and times of the files."""
        parts = [json.dumps(plain(self), sort_keys=True)]
        if self.path is not None:
            p = Path(self.path)
            files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
            for f in files:
                st = f.stat()
                parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Step:
    """One step of a recipe.

    Attributes:
        kind: ``simplify``, ``prune``, ``quantize`` or ``verify``.
        config: The capability's config (``SimplifyConfig``, ``PruneConfig``,
            ``QuantizeConfig`` or ``VerifyConfig`` with its ``Gates``).
        data: Name of the data source (calibration for prune/quantize, samples for verify).
        eval_data: quantize: evaluation samples (labels give accuracy, ``max_drop``).
        against: verify: compare with the ``input`` model or the ``previous`` step's model.
        line: Line of the step in the recipe.
    """

    kind: str
    config: Any
    data: str | None = None
    eval_data: str | None = None
    against: str = "input"
    line: int = 0

    @property
    def makes_model(self) -> bool:
        return self.kind != "verify"

    def content(self, sources: Mapping[str, DataSource]) -> dict[str, Any]:
        """Everything that determines the step's result (hashed for resume)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "config": plain(self.config),
            "against": self.against if self.kind == "verify" else None,
        }
        for key in ("data", "eval_data"):
            name = getattr(self, key)
            if name is not None:
                out[key] = {"name": name, "fingerprint": sources[name].fingerprint()}
        return out


@dataclass(frozen=True)
class Recipe:
    """A parsed, validated recipe.

    Attributes:
        path: The recipe file (None for text).
        data: Named data sources.
        measure: How every step is measured against the input model (``VerifyConfig``).
        measure_data: Data source of the measurement (None: params/MACs/size only).
        steps: The steps, in order.
        text: The recipe text.
    """

    path: str | None
    data: dict[str, DataSource]
    measure: Any
    measure_data: str | None
    steps: tuple[Step, ...]
    text: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "data": {k: plain(v) for k, v in self.data.items()},
            "measure": {"data": self.measure_data, **plain(self.measure)},
            "steps": [
                {
                    "kind": s.kind,
                    "data": s.data,
                    "eval_data": s.eval_data,
                    "against": s.against,
                    "config": plain(s.config),
                }
                for s in self.steps
            ],
        }


def plain(obj: Any) -> Any:
    """JSON-ready copy of a config (dataclasses, mappings, tuples)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


# ------------------------------------------------------------------- configs


def _config_classes() -> dict[str, type]:
    from onnxcomp.prune import PruneConfig
    from onnxcomp.quantize import QuantizeConfig
    from onnxcomp.simplification import SimplifyConfig
    from onnxcomp.verification import Gates, VerifyConfig

    return {
        "simplify": SimplifyConfig,
        "prune": PruneConfig,
        "quantize": QuantizeConfig,
        "verify": VerifyConfig,
        "gates": Gates,
    }


# step-level keys that are not config fields
_STEP_KEYS: dict[str, dict[str, Any]] = {
    "simplify": {},
    "prune": {"data": str | None},
    "quantize": {"data": str | None, "eval_data": str | None},
    "verify": {"data": str, "against": str},
}
# config fields holding file paths (resolved relative to the recipe)
_PATH_FIELDS: dict[str, tuple[str, ...]] = {"quantize": ("ranges", "save_ranges")}
# VerifyConfig fields not set from a recipe (gates are flattened into the step)
_VERIFY_HIDDEN = ("gates",)


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    if cls is DataSource:
        from onnxcomp.data import ImagePreprocess

        hints["image"] = ImagePreprocess | None
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def step_fields(kind: str) -> dict[str, Any]:
    """Recipe keys of a step kind and their types (config fields + step-level keys)."""
    classes = _config_classes()
    if kind == "verify":
        out = {k: v for k, v in _field_types(classes["verify"]).items() if k not in _VERIFY_HIDDEN}
        out.update(_field_types(classes["gates"]))
    else:
        out = dict(_field_types(classes[kind]))
    out.update(_STEP_KEYS[kind])
    return out


# ------------------------------------------------------------------- parsing


class _Ctx:
    def __init__(self, file: str, base: Path) -> None:
        self.file = file
        self.base = base

    def err(self, node: Any, where: str, msg: str) -> RecipeError:
        line = node.start_mark.line + 1 if node is not None else 1
        prefix = f"{self.file}:{line}: " if self.file else f"line {line}: "
        return RecipeError(f"{prefix}{where + ': ' if where else ''}{msg}")


def _scalar(node: Any) -> Any:
    import yaml

    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _mapping(
    ctx: _Ctx, node: Any, where: str, *, allow_null: bool = False
) -> list[tuple[str, Any, Any]]:
    """(key, key node, value node) of a mapping node; duplicate keys are errors."""
    import yaml

    if allow_null and isinstance(node, yaml.ScalarNode) and _scalar(node) is None:
        return []
    if not isinstance(node, yaml.MappingNode):
        raise ctx.err(node, where, f"expected a mapping, got {_kind(node)}")
    out = []
    seen: dict[str, int] = {}
    for knode, vnode in node.value:
        key = _scalar(knode)
        if not isinstance(key, str):
            raise ctx.err(knode, where, f"keys must be strings, got {key!r}")
        if key in seen:
            raise ctx.err(knode, where, f"duplicate key {key!r} (first on line {seen[key]})")
        seen[key] = knode.start_mark.line + 1
        out.append((key, knode, vnode))
    return out


def _kind(node: Any) -> str:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    v = _scalar(node)
    return "nothing (null)" if v is None else f"{type(v).__name__} {v!r}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true/false"
    if tp is str:
        return "a string"
    if origin in (tuple, Sequence, list) or tp in (tuple, list):
        return "a list"
    if origin in (Mapping, dict) or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(ctx: _Ctx, node: Any, tp: Any, where: str) -> Any:
    """The value of ``node`` checked against the annotation ``tp``."""
    import yaml

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return _scalar(node)
    if origin in (typing.Union, types.UnionType):
        if isinstance(node, yaml.ScalarNode) and _scalar(node) is None and type(None) in args:
            return None
        errors: list[RecipeError] = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(ctx, node, a, where)
            except RecipeError as e:
                errors.append(e)
        if len(errors) == 1 and not isinstance(node, yaml.ScalarNode):
            raise errors[0]  # the structure matched; the error is inside it
        raise ctx.err(node, where, f"expected {_type_name(tp)}, got {_kind(node)}")
    if dataclasses.is_dataclass(tp):
        return build(ctx, tp, node, where)  # type: ignore[arg-type]
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if not isinstance(node, yaml.SequenceNode):
            raise ctx.err(node, where, f"expected {_type_name(tp)}, got {_kind(node)}")
        items = node.value
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            if len(items) != len(args):
                raise ctx.err(
                    node, where, f"expected a list of {len(args)} items, got {len(items)}"
                )
            return tuple(
                _coerce(ctx, n, a, f"{where}[{i}]") for i, (n, a) in enumerate(zip(items, args))
            )
        item_tp = args[0] if args else Any
        return tuple(_coerce(ctx, n, item_tp, f"{where}[{i}]") for i, n in enumerate(items))
    if origin in (Mapping, dict) or tp in (dict, Mapping):
        ktp, vtp = args if args else (str, Any)
        out = {}
        for key, knode, vnode in _mapping(ctx, node, where):
            out[_coerce(ctx, knode, ktp, where)] = _coerce(ctx, vnode, vtp, f"{where}.{key}")
        return out
    if not isinstance(node, yaml.ScalarNode):
        raise ctx.err(node, where, f"expected {_type_name(tp)}, got {_kind(node)}")
    v = _scalar(node)
    ok = (
        (tp is bool and isinstance(v, bool))
        or (tp is int and isinstance(v, int) and not isinstance(v, bool))
        or (tp is float and isinstance(v, (int, float)) and not isinstance(v, bool))
        or (tp is str and isinstance(v, str))
    )
    if not ok:
        raise ctx.err(node, where, f"expected {_type_name(tp)}, got {_kind(node)}")
    return float(v) if tp is float else v


def _read_fields(
    ctx: _Ctx, node: Any, types_: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Values and key nodes of a mapping whose keys must be in ``types_``."""
    values: dict[str, Any] = {}
    nodes: dict[str, Any] = {}
    for key, knode, vnode in _mapping(ctx, node, where, allow_null=True):
        if key not in types_:
            close = difflib.get_close_matches(key, list(types_), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ctx.err(
                knode, where, f"unknown key {key!r}{hint} (known: {', '.join(sorted(types_))})"
            )
        values[key] = _coerce(ctx, vnode, types_[key], f"{where}.{key}" if where else key)
        nodes[key] = knode
    return values, nodes


def _construct(
    ctx: _Ctx, cls: type, values: dict[str, Any], nodes: Mapping[str, Any], node: Any, where: str
) -> Any:
    """``cls(**values)``; a value error of the dataclass gets the line of the key it names."""
    try:
        return cls(**values)
    except InvalidInputError as e:
        msg = str(e)
        for key in sorted(nodes, key=len, reverse=True):
            if key in msg or key.replace("_", "-") in msg:
                raise ctx.err(nodes[key], f"{where}.{key}" if where else key, msg) from e
        raise ctx.err(node, where, msg) from e


def build(ctx: _Ctx, cls: type, node: Any, where: str) -> Any:
    """An instance of the dataclass ``cls`` from a mapping node, strictly checked."""
    values, nodes = _read_fields(ctx, node, _field_types(cls), where)
    return _construct(ctx, cls, values, nodes, node, where)


def _resolve(ctx: _Ctx, path: str) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (ctx.base / p))


def _parse_step(ctx: _Ctx, node: Any, i: int, sources: Mapping[str, DataSource]) -> Step:
    where = f"steps[{i}]"
    items = _mapping(ctx, node, where)
    if len(items) != 1:
        raise ctx.err(
            node,
            where,
            f"a step is a mapping with one key, the step kind ({', '.join(STEP_KINDS)})",
        )
    kind, knode, body = items[0]
    if kind not in STEP_KINDS:
        close = difflib.get_close_matches(kind, STEP_KINDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ctx.err(
            knode, where, f"unknown step kind {kind!r}{hint} (known: {', '.join(STEP_KINDS)})"
        )
    where = f"{where}.{kind}"
    values, nodes = _read_fields(ctx, body, step_fields(kind), where)
    extras = {k: values.pop(k) for k in list(values) if k in _STEP_KEYS[kind]}
    for key in ("data", "eval_data"):
        name = extras.get(key)
        if name is not None and name not in sources:
            known = ", ".join(sources) or "none defined"
            raise ctx.err(
                nodes[key], f"{where}.{key}", f"no data source {name!r} (data sources: {known})"
            )
    for key in _PATH_FIELDS.get(kind, ()):
        if values.get(key):
            values[key] = _resolve(ctx, values[key])
    classes = _config_classes()
    if kind == "verify":
        if "data" not in extras:
            raise ctx.err(knode, where, "missing key 'data' (the samples to verify on)")
        against = extras.get("against", "input")
        if against not in ("input", "previous"):
            raise ctx.err(
                nodes["against"],
                f"{where}.against",
                f"must be 'input' or 'previous', got {against!r}",
            )
        gate_keys = set(_field_types(classes["gates"]))
        gates = _construct(
            ctx,
            classes["gates"],
            {k: values.pop(k) for k in list(values) if k in gate_keys},
            nodes,
            body,
            where,
        )
        if not gates.active():
            raise ctx.err(knode, where, f"no gate given (keys: {', '.join(sorted(gate_keys))})")
        config = _construct(ctx, classes["verify"], {**values, "gates": gates}, nodes, body, where)
    else:
        config = _construct(ctx, classes[kind], values, nodes, body, where)
        if kind == "prune" and config.refit and extras.get("data") is None:
            raise ctx.err(
                knode, where, "reconstruction needs calibration samples: add 'data: <source>'"
            )
        if kind == "prune" and config.criterion == "activation" and extras.get("data") is None:
            raise ctx.err(
                knode, where, "criterion 'activation' needs samples: add 'data: <source>'"
            )
        if (
            kind == "quantize"
            and config.mode == "static"
            and not config.ranges
            and extras.get("data") is None
        ):
            raise ctx.err(
                knode, where, "static quantization needs calibration samples: add 'data: <source>'"
            )
    return Step(
        kind=kind,
        config=config,
        data=extras.get("data"),
        eval_data=extras.get("eval_data"),
        against=extras.get("against", "input"),
        line=knode.start_mark.line + 1,
    )


def parse_recipe(
    text: str, *, path: str | os.PathLike[str] | None = None, check_files: bool = True
) -> Recipe:
    """Parse and validate recipe text.

    Args:
        text: YAML text.
        path: The file it came from: names it in errors and anchors relative paths.
        check_files: Fail on data paths that do not exist.

    Raises:
        RecipeError: Invalid YAML, unknown keys, wrong types or values (with the line).
    """
    import yaml

    file = str(path) if path is not None else ""
    base = Path(path).resolve().parent if path is not None else Path.cwd()
    ctx = _Ctx(file, base)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f"{mark.line + 1}: " if mark is not None else " "
        problem = getattr(e, "problem", None) or str(e)
        raise RecipeError(
            f"{file or 'recipe'}:{line}invalid YAML: {' '.join(str(problem).split())}"
        ) from e
    if root is None:
        raise RecipeError(f"{file or 'recipe'}: empty recipe (expected 'steps:')")
    top = {k: (kn, vn) for k, kn, vn in _mapping(ctx, root, "")}
    known = ("version", "data", "measure", "steps")
    for key, (kn, _) in top.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ctx.err(kn, "", f"unknown key {key!r}{hint} (known: {', '.join(known)})")
    if "version" in top:
        v = _coerce(ctx, top["version"][1], int, "version")
        if v != VERSION:
            raise ctx.err(
                top["version"][1],
                "version",
                f"unsupported recipe version {v} (this onnxcomp reads {VERSION})",
            )
    sources: dict[str, DataSource] = {}
    if "data" in top:
        for name, knode, vnode in _mapping(ctx, top["data"][1], "data", allow_null=True):
            where = f"data.{name}"
            values, nodes = _read_fields(ctx, vnode, _field_types(DataSource), where)
            if values.get("path"):
                values["path"] = _resolve(ctx, values["path"])
                if check_files and not Path(values["path"]).exists():
                    raise ctx.err(
                        nodes["path"], f"{where}.path", f"no such file or folder: {values['path']}"
                    )
            sources[name] = _construct(ctx, DataSource, values, nodes, vnode, where)
    classes = _config_classes()
    measure_types = {
        k: v for k, v in _field_types(classes["verify"]).items() if k not in _VERIFY_HIDDEN
    }
    measure_types["data"] = str | None
    measure_data = None
    measure = classes["verify"]()
    if "measure" in top:
        values, nodes = _read_fields(ctx, top["measure"][1], measure_types, "measure")
        measure_data = values.pop("data", None)
        if measure_data is not None and measure_data not in sources:
            raise ctx.err(
                nodes["data"],
                "measure.data",
                f"no data source {measure_data!r} (data sources: {', '.join(sources) or 'none defined'})",
            )
        measure = _construct(ctx, classes["verify"], values, nodes, top["measure"][1], "measure")
    if "steps" not in top:
        raise ctx.err(root, "", "missing key 'steps' (the list of steps to run)")
    snode = top["steps"][1]
    if not isinstance(snode, yaml.SequenceNode) or not snode.value:
        raise ctx.err(snode, "steps", f"expected a non-empty list of steps, got {_kind(snode)}")
    steps = tuple(_parse_step(ctx, n, i, sources) for i, n in enumerate(snode.value))
    if measure_data is None:
        measure_data = next((s.data for s in steps if s.kind == "verify"), None)
    return Recipe(
        path=str(Path(path).resolve()) if path is not None else None,
        data=sources,
        measure=measure,
        measure_data=measure_data,
        steps=steps,
        text=text,
    )


def load_recipe(path: str | os.PathLike[str], *, check_files: bool = True) -> Recipe:
    """Read and validate a recipe file (see :func:`parse_recipe`)."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"{p}: no such recipe file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RecipeError(f"{p}: cannot read: {e}") from e
    return parse_recipe(text, path=p, check_files=check_files)
