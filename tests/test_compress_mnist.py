"""compress end to end on the trained MNIST ResNet fixture: prune 0.5 + reconstruction -> int8 -> gates.

The figures of the report must equal those of the individual API calls with
the same configs and data; the HTML report must render in headless chromium.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from onnxcomp import io
from onnxcomp.analysis import count_macs, count_params, shaped_copy
from onnxcomp.cli import main
from onnxcomp.data import open_data
from onnxcomp.prune import PruneConfig, prune
from onnxcomp.quantize import QuantizeConfig, quantize
from onnxcomp.verification import VerifyConfig, verify

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "fixtures" / "mnist"
MODEL = MNIST / "resnet.onnx"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    not (MODEL.exists() and (MNIST / "calib.npz").exists() and (MNIST / "eval.npz").exists()),
    reason="MNIST fixtures missing",
)

RECIPE = f"""
version: 1
data:
  calib: {{path: {MNIST / "calib.npz"}, limit: 64}}
  eval: {{path: {MNIST / "eval.npz"}, limit: 400}}
measure: {{data: eval, latency_repeats: 5}}
steps:
  - prune: {{ratio: 0.5, reconstruct: true, calib_samples: 64, latency_repeats: 0, data: calib}}
  - quantize: {{sensitivity: true, eval_limit: 16, latency_repeats: 0, data: calib, eval_data: eval}}
  - verify: {{data: eval, min_cosine: 0.9, min_top1: 0.9, max_accuracy_drop: 0.08, latency_repeats: 3}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("compress_mnist")
    recipe = tmp / "recipe.yaml"
    recipe.write_text(RECIPE)
    out = tmp / "resnet.small.onnx"
    report = tmp / "report"
    res = CliRunner().invoke(
        main,
        ["compress", str(MODEL), "-o", str(out), "--recipe", str(recipe), "--report", str(report)],
    )
    assert res.exit_code == 0, res.output
    return {
        "tmp": tmp,
        "out": out,
        "report": report,
        "recipe": recipe,
        "work": Path(str(out) + ".work"),
    }


def test_pipeline_meets_gates_and_figures_equal_the_api_calls(run: dict[str, Path]) -> None:
    data = json.loads((run["report"] / "report.json").read_text())
    assert data["passed"] and Path(data["output"]) == run["out"] and run["out"].is_file()
    inp, pr, q, v = data["steps"]
    assert [s["kind"] for s in data["steps"]] == ["input", "prune", "quantize", "verify"]
    assert all(g["passed"] for g in v["gates"]) and len(v["gates"]) == 3

    m = io.load(MODEL)
    assert inp["metrics"]["params"] == count_params(m)[0]
    assert inp["metrics"]["size"] == io.file_size(MODEL)

    # the same prune call through the API
    calib = open_data(MNIST / "calib.npz", m, limit=64)
    p = prune(
        m, PruneConfig(ratio=0.5, reconstruct=True, calib_samples=64, latency_repeats=0), calib
    )
    p_path = run["tmp"] / "api_pruned.onnx"
    io.save(p.model, p_path)
    assert pr["details"]["plan"] == json.loads(json.dumps(p.plan.to_dict()))
    assert pr["details"]["report"]["reconstructed"] is p.report["reconstructed"] is True
    assert "consumers refitted by least squares" in (run["report"] / "report.html").read_text()
    assert pr["metrics"]["params"] == count_params(p.model)[0]
    assert pr["metrics"]["macs"] == p.plan.macs_after == count_macs(shaped_copy(p.model)[0])[0]
    assert pr["metrics"]["size"] == io.file_size(p_path)
    ev = open_data(MNIST / "eval.npz", m, limit=400)
    rep = verify(MODEL, p_path, ev, VerifyConfig(latency_repeats=0))
    assert pr["metrics"]["accuracy"] == rep.candidate_accuracy
    assert pr["metrics"]["cosine"] == pytest.approx(rep.min_cosine, abs=1e-12)
    assert inp["metrics"]["accuracy"] == rep.reference_accuracy

    # the same quantize call on that pruned model
    pm = io.load(p_path)
    qr = quantize(
        pm,
        open_data(MNIST / "calib.npz", pm, limit=64),
        QuantizeConfig(sensitivity=True, eval_limit=16, latency_repeats=0),
        eval_data=open_data(MNIST / "eval.npz", pm, limit=400),
    )
    q_path = run["tmp"] / "api_int8.onnx"
    io.save(qr.model, q_path)
    assert q["metrics"]["size"] == io.file_size(q_path) == io.file_size(run["out"])
    assert q["metrics"]["params"] == count_params(qr.model)[0]
    assert [s["tensor"] for s in q["details"]["sensitivity"]] == [
        s.tensor for s in qr.report.sensitivity
    ]
    rep = verify(MODEL, q_path, ev, VerifyConfig(latency_repeats=0))
    assert q["metrics"]["accuracy"] == rep.candidate_accuracy
    assert q["metrics"]["top1_agreement"] == rep.min_top1
    # compressed: fewer params and MACs, smaller file
    assert q["metrics"]["size"] < pr["metrics"]["size"] < inp["metrics"]["size"]
    assert pr["metrics"]["macs"] < 0.5 * inp["metrics"]["macs"]
    for s in (pr, q):
        assert s["metrics"]["latency_ratio"] > 0


def test_rerun_resumes_every_step(run: dict[str, Path]) -> None:
    res = CliRunner().invoke(
        main,
        ["compress", str(MODEL), "-o", str(run["out"]), "--recipe", str(run["recipe"]), "--json"],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [s["status"] for s in data["steps"]] == ["resumed"] * 4


def test_failing_gate_on_mnist_exits_3_without_output(run: dict[str, Path]) -> None:
    recipe = run["tmp"] / "strict.yaml"
    recipe.write_text(RECIPE.replace("max_accuracy_drop: 0.08", "max_accuracy_drop: 0.0001"))
    out = run["tmp"] / "strict.onnx"
    res = CliRunner().invoke(
        main,
        [
            "compress",
            str(MODEL),
            "-o",
            str(out),
            "--recipe",
            str(recipe),
            "--work-dir",
            str(run["work"]),
        ],
    )
    assert res.exit_code == 3, res.output
    assert "error: gate max_accuracy_drop failed at step 3" in res.output
    assert "finished earlier, skipped" in res.output  # prune and quantize came from the work folder
    assert not out.exists()


def test_report_html_renders_in_headless_chromium(run: dict[str, Path], tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install chromium)")
    page = run["report"] / "report.html"
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    dom = subprocess.run(
        [*args, "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    for key in (
        "params",
        "macs",
        "size",
        "latency",
        "fidelity",
        "gates",
        "prune-0",
        "sensitivity-1",
    ):
        assert f'data-plot="{key}"' in dom.stdout, key
    assert dom.stdout.count("<svg") >= 8 and "PASSED" in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert "ERR_FILE_NOT_FOUND" not in dom.stderr and "net::ERR" not in dom.stderr
    shot = tmp_path / "report.png"
    res = subprocess.run(
        [
            *args,
            "--hide-scrollbars",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, res.stderr[
        -2000:
    ]
