"""compress: strict recipes, pipeline with work folder and resume, gates, reports."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import onnx
import pytest
import yaml
from click.testing import CliRunner
from conftest import conv_model

from onnxcomp.cli import main
from onnxcomp.compress import (
    RecipeError,
    StepRecord,
    compress,
    default_recipe,
    load_recipe,
    parse_recipe,
)
from onnxcomp.errors import GateFailedError
from onnxcomp.prune import PruneConfig
from onnxcomp.quantize import QuantizeConfig
from onnxcomp.simplification import SimplifyConfig
from onnxcomp.verification import Gates, VerifyConfig

ROOT = Path(__file__).resolve().parent.parent
RECIPES = sorted((ROOT / "fixtures" / "recipes").glob("*.yaml"))


def _err(text: str) -> str:
    with pytest.raises(RecipeError) as e:
        parse_recipe(textwrap.dedent(text), path="r.yaml", check_files=False)
    return str(e.value)


# ------------------------------------------------------------- recipe parsing


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            "steps:\n  - prune:\n      ratoi: 0.5\n",
            3,
            ["ratoi", "unknown key", "did you mean 'ratio'"],
        ),
        (
            "steps:\n  - prune:\n      ratio: half\n",
            3,
            ["steps[0].prune.ratio", "expected a number", "half"],
        ),
        ("steps:\n  - prune:\n      ratio: 1.5\n", 3, ["steps[0].prune.ratio", "[0, 1)"]),
        ("steps:\n  - prune:\n      reconstruct: 1\n", 3, ["reconstruct", "true/false"]),
        ("steps:\n  - prune:\n      ignore: Gemm\n", 3, ["ignore", "expected a list"]),
        (
            "steps:\n  - prune:\n      layers: {conv1: big}\n",
            3,
            ["layers.conv1", "expected a number"],
        ),
        (
            "data:\n  c: {synthetic: 2}\nsteps:\n  - quantize:\n      method: kl\n      data: c\n",
            5,
            ["method", "minmax"],
        ),
        (
            "data:\n  c: {path: c.npz}\nsteps:\n  - quantize:\n      per_channel: yes please\n      data: c\n",
            5,
            ["per_channel", "true/false"],
        ),
        (
            "steps:\n  - quantize:\n      data: calib\n",
            3,
            ["steps[0].quantize.data", "no data source 'calib'"],
        ),
        ("steps:\n  - quantise: {}\n", 2, ["unknown step kind", "did you mean 'quantize'"]),
        ("steps:\n  - verify:\n      data: e\n", 3, ["no data source"]),
        ("data:\n  e: {path: e.npz}\nsteps:\n  - verify:\n      data: e\n", 4, ["no gate given"]),
        (
            "data:\n  e: {path: e.npz}\nsteps:\n  - verify:\n      data: e\n      min_cosine: 1.5\n",
            6,
            ["min_cosine", "[-1, 1]"],
        ),
        (
            "data:\n  e: {path: e.npz}\nsteps:\n  - verify:\n      data: e\n      against: last\n      min_cosine: 0.9\n",
            6,
            ["against", "'previous'"],
        ),
        (
            "data:\n  e: {path: e.npz, limt: 3}\nsteps:\n  - simplify:\n",
            2,
            ["data.e", "limt", "did you mean 'limit'"],
        ),
        (
            "data:\n  e: {path: e.npz, synthetic: 4}\nsteps:\n  - simplify:\n",
            2,
            ["data.e", "exactly one of"],
        ),
        (
            "steps:\n  - prune: {ratio: 0.5}\n  - prune: {ratio: 0.5, ratio: 0.2}\n",
            3,
            ["duplicate key 'ratio'"],
        ),
        (
            "steps:\n  - prune:\n      reconstruct: true\n",
            2,
            ["reconstruction needs calibration samples"],
        ),
        ("steps:\n  - prune: {}\n    quantize: {}\n", 2, ["one key"]),
        ("version: 2\nsteps:\n  - prune:\n", 1, ["version 2"]),
        ("stepz:\n  - prune:\n", 1, ["unknown key 'stepz'", "did you mean 'steps'"]),
        ("data: {}\n", 1, ["missing key 'steps'"]),
        ("steps: []\n", 1, ["non-empty list"]),
        ("steps:\n  - prune: {ratio: [0.5\n", 3, ["invalid YAML"]),
        (
            "steps:\n  - simplify:\n      shapes: {input: [1, x]}\n",
            3,
            ["shapes.input[1]", "integer"],
        ),
    ],
)
def test_recipe_errors_name_key_and_line(text: str, line: int, words: list[str]) -> None:
    msg = _err(text)
    assert msg.startswith(f"r.yaml:{line}:"), msg
    for w in words:
        assert w in msg, msg
    assert "\n" not in msg


def test_missing_data_file_is_an_error_with_line(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("data:\n  calib:\n    path: nope.npz\nsteps:\n  - simplify:\n")
    with pytest.raises(RecipeError, match=r"r.yaml:3: data.calib.path: no such file"):
        load_recipe(p)


def _default(f: dataclasses.Field) -> object:  # type: ignore[type-arg]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


@pytest.mark.parametrize(
    "kind,cls", [("simplify", SimplifyConfig), ("prune", PruneConfig), ("quantize", QuantizeConfig)]
)
def test_every_config_field_is_a_recipe_key(kind: str, cls: type) -> None:
    """One source of truth: each dataclass field is accepted with its default and round-trips."""
    opts = {}
    for f in dataclasses.fields(cls):
        v = _default(f)
        opts[f.name] = dict(v) if isinstance(v, dict) else (list(v) if isinstance(v, tuple) else v)
    body = {kind: {**opts, **({"data": "c"} if kind != "simplify" else {})}}
    text = yaml.safe_dump({"data": {"c": {"synthetic": 2}}, "steps": [body]})
    recipe = parse_recipe(text)
    assert recipe.steps[0].config == cls()


def test_values_map_onto_the_typed_configs(tmp_path: Path) -> None:
    (tmp_path / "c.npz").write_bytes(b"")
    (tmp_path / "ranges.json").write_text("{}")
    text = """
    data:
      c: {path: c.npz, limit: 8}
    measure: {data: c, latency_repeats: 0}
    steps:
      - simplify: {shapes: {x: [1, 3, 8, 8]}, onnxsim: false}
      - prune: {ratio: 0.25, criterion: l2, layers: {conv1: 0.1}, ignore: [Gemm, "head*"], target_macs: 0.6}
      - quantize: {ranges: ranges.json, exclude: [Softmax], per_channel: false, reduce_range: false, data: c}
      - verify: {data: c, min_cosine: 0.99, max_accuracy_drop: 0.01, latency_repeats: 5, outputs: [y], against: previous}
    """
    p = tmp_path / "r.yaml"
    p.write_text(textwrap.dedent(text))
    r = load_recipe(p)
    s, pr, q, v = r.steps
    assert s.config == SimplifyConfig(shapes={"x": (1, 3, 8, 8)}, onnxsim=False)
    assert pr.config == PruneConfig(
        ratio=0.25, criterion="l2", layers={"conv1": 0.1}, ignore=("Gemm", "head*"), target_macs=0.6
    )
    assert q.config.ranges == str(tmp_path / "ranges.json")  # relative to the recipe
    assert (
        q.config.exclude == ("Softmax",)
        and q.config.per_channel is False
        and q.config.reduce_range is False
    )
    assert v.config == VerifyConfig(
        latency_repeats=5, outputs=("y",), gates=Gates(min_cosine=0.99, max_accuracy_drop=0.01)
    )
    assert v.against == "previous" and v.data == "c"
    assert r.data["c"].path == str(tmp_path / "c.npz") and r.data["c"].limit == 8
    assert r.measure == VerifyConfig(latency_repeats=0) and r.measure_data == "c"
    assert [st.line for st in r.steps] == [6, 7, 8, 9]


def test_default_recipe_is_valid_and_lists_every_option() -> None:
    text = default_recipe()
    r = parse_recipe(text, check_files=False)
    assert [s.kind for s in r.steps] == ["simplify", "prune", "quantize", "verify"]
    for cls in (SimplifyConfig, PruneConfig, QuantizeConfig, Gates):
        for f in dataclasses.fields(cls):
            assert f"{f.name}:" in text, f.name
    # uncommenting every default keeps it valid
    uncommented = "\n".join(
        line.replace("# ", "", 1)
        if line.lstrip().startswith("# ") and ": " in line and line.startswith("      ")
        else line
        for line in text.splitlines()
    )
    r2 = parse_recipe(uncommented, check_files=False)
    assert r2.steps[1].config == r.steps[1].config


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_are_valid(path: Path) -> None:
    r = load_recipe(path, check_files=False)
    assert r.steps


def test_cli_print_recipe_and_check(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["compress", "--print-recipe"])
    assert res.exit_code == 0, res.output
    assert res.output == default_recipe()
    p = tmp_path / "r.yaml"
    p.write_text("steps:\n  - prune:\n      ratio: 0.3\n")
    res = CliRunner().invoke(main, ["compress", "--recipe", str(p), "--check"])
    assert res.exit_code == 0 and "valid, 1 step(s): prune" in res.output


def test_cli_bad_inputs_exit_2_one_line(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text("steps:\n  - prune:\n      ratio: lots\n")
    m = tmp_path / "m.onnx"
    onnx.save(conv_model(), m)
    cases = [
        ["compress", str(m), "-o", str(tmp_path / "o.onnx")],
        ["compress", str(m), "-o", str(tmp_path / "o.onnx"), "--recipe", str(p)],
        [
            "compress",
            str(m),
            "-o",
            str(tmp_path / "o.onnx"),
            "--recipe",
            str(tmp_path / "none.yaml"),
        ],
        [
            "compress",
            str(tmp_path / "none.onnx"),
            "-o",
            str(tmp_path / "o.onnx"),
            "--recipe",
            str(RECIPES[0]),
        ],
    ]
    for args in cases:
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 2, (args, res.output)
        assert res.output.startswith("error: ") and res.output.count("\n") == 1, res.output
        assert "Traceback" not in res.output
    res = CliRunner().invoke(main, cases[1])
    assert "r.yaml:3: steps[0].prune.ratio: expected a number" in res.output


# ------------------------------------------------------------- small pipeline

SMALL = """
version: 1
data:
  syn: {{synthetic: 16, seed: 1}}
measure: {{data: syn, latency_repeats: 3}}
steps:
  - simplify: {{onnxsim: false, shapes: {{x: [1, 3, 12, 12]}}}}
  - prune: {{ratio: 0.5, verify_samples: 2, latency_repeats: 0}}
  - quantize: {{data: syn, latency_repeats: 0, verify: false}}
  - verify: {{data: syn, min_cosine: {cos}, latency_repeats: 0}}
"""


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    m = tmp_path / "conv.onnx"
    onnx.save(conv_model(c1=8, c2=8, hw=12), m)
    r = tmp_path / "recipe.yaml"
    r.write_text(SMALL.format(cos=-1.0))
    return m, r


def test_small_pipeline_work_folder_and_resume(
    small: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, recipe = small
    out = tmp_path / "out" / "small.onnx"
    res = CliRunner().invoke(
        main, ["compress", str(model), "-o", str(out), "--recipe", str(recipe)]
    )
    assert res.exit_code == 0, res.output
    work = Path(str(out) + ".work")
    assert sorted(p.name for p in work.iterdir()) == [
        "00-input",
        "01-simplify",
        "02-prune",
        "03-quantize",
        "04-verify",
    ]
    assert (work / "02-prune" / "model.onnx").is_file() and (
        work / "02-prune" / "plan.json"
    ).is_file()
    assert (work / "03-quantize" / "model.onnx").is_file() and (
        work / "03-quantize" / "quantize.json"
    ).is_file()
    recs = [
        StepRecord.from_dict(json.loads((work / d / "record.json").read_text()))
        for d in sorted(p.name for p in work.iterdir())
    ]
    assert [r.status for r in recs] == ["done"] * 5
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert [
        d.dim_value
        for d in onnx.load(work / "01-simplify" / "model.onnx")
        .graph.input[0]
        .type.tensor_type.shape.dim
    ] == [1, 3, 12, 12]
    assert recs[1].metrics["params"] == recs[0].metrics["params"]
    assert recs[2].metrics["params"] < recs[0].metrics["params"]
    assert recs[2].metrics["macs"] < recs[0].metrics["macs"]
    assert recs[3].metrics["size"] > 0 and "QuantizeLinear" in {
        n.op_type for n in onnx.load(out).graph.node
    }

    # resume: no step runs again (the capabilities would fail if called)
    import onnxcomp.prune
    import onnxcomp.quantize
    import onnxcomp.verification

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a finished step ran again")

    monkeypatch.setattr(onnxcomp.prune, "prune", boom)
    monkeypatch.setattr(onnxcomp.quantize, "quantize", boom)
    result = compress(model, recipe, output=out)
    assert [s.status for s in result.steps] == ["resumed"] * 5
    monkeypatch.undo()

    # a changed step re-runs from that step on; earlier steps are still skipped
    recipe.write_text(
        SMALL.format(cos=-1.0).replace(
            "quantize: {data: syn,", "quantize: {data: syn, method: percentile,"
        )
    )
    monkeypatch.setattr(onnxcomp.prune, "prune", boom)
    result = compress(model, recipe, output=out)
    assert [s.status for s in result.steps] == ["resumed", "resumed", "resumed", "done", "done"]
    monkeypatch.undo()
    # --fresh runs everything
    result = compress(model, recipe, output=out, resume=False)
    assert [s.status for s in result.steps] == ["done"] * 5


def test_changed_input_model_reruns_everything(small: tuple[Path, Path], tmp_path: Path) -> None:
    model, recipe = small
    out = tmp_path / "o.onnx"
    compress(model, recipe, output=out)
    onnx.save(conv_model(c1=8, c2=8, hw=12, seed=5), model)
    result = compress(model, recipe, output=out)
    assert [s.status for s in result.steps] == ["done"] * 5


def test_failed_gate_exits_3_and_writes_no_output(small: tuple[Path, Path], tmp_path: Path) -> None:
    model, recipe = small
    recipe.write_text(SMALL.format(cos=0.999999))
    out = tmp_path / "o.onnx"
    rep = tmp_path / "rep"
    res = CliRunner().invoke(
        main,
        ["compress", str(model), "-o", str(out), "--recipe", str(recipe), "--report", str(rep)],
    )
    assert res.exit_code == 3, res.output
    last = res.output.strip().splitlines()[-1]
    assert last.startswith("error: gate min_cosine failed at step 4 (verify, recipe line 10)"), last
    assert not out.exists()
    data = json.loads((rep / "report.json").read_text())
    assert data["passed"] is False and data["output"] is None
    assert data["gates"][0]["passed"] is False and data["gates"][0]["margin"] < 0
    # the API raises the same error; the failed verify step is not recorded as finished
    with pytest.raises(GateFailedError, match="min_cosine"):
        compress(model, recipe, output=out)
    assert not out.exists()
    r = compress(model, recipe, output=out, raise_on_gate=False)
    assert [s.status for s in r.steps] == ["resumed", "resumed", "resumed", "resumed", "failed"]


def test_verify_against_previous(small: tuple[Path, Path], tmp_path: Path) -> None:
    model, recipe = small
    text = SMALL.format(cos=0.5)
    recipe.write_text(text.replace("min_cosine: 0.5,", "min_cosine: 0.5, against: previous,"))
    r = compress(model, recipe, output=tmp_path / "o.onnx")
    v = r.steps[-1]
    assert v.details["against"] == "previous"
    assert v.details["reference"].endswith("02-prune/model.onnx")
    assert v.details["candidate"].endswith("03-quantize/model.onnx")


def test_report_files(small: tuple[Path, Path], tmp_path: Path) -> None:
    model, recipe = small
    rep = tmp_path / "rep"
    r = compress(model, recipe, output=tmp_path / "o.onnx", report_dir=rep)
    data = json.loads((rep / "report.json").read_text())
    assert [s["name"] for s in data["steps"]] == [
        "input",
        "1. simplify",
        "2. prune",
        "3. quantize",
        "4. verify",
    ]
    assert data["steps"][1]["metrics"]["params"] == r.steps[1].metrics["params"]
    md = (rep / "report.md").read_text()
    assert "| 2. prune |" in md and "## Gates" in md and "channels kept per layer" in md
    page = (rep / "report.html").read_text()
    assert "criterion l1;" in page and "refitted" not in page  # no reconstruction here
    for key in ("params", "macs", "size", "latency", "fidelity", "gates", "prune-1"):
        assert f'data-plot="{key}"' in page, key
    low = page.lower()
    assert (
        "<script" not in low
        and "<link" not in low
        and "http://" not in low.replace('xmlns="http://www.w3.org/2000/svg"', "")
    )
    assert "https://" not in low
