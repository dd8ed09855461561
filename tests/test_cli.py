from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import sha256
from onnx import numpy_helper

from onnxcomp.cli import main


def _invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def _assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, result.output
    assert "Traceback" not in result.output
    for frag in fragments:
        assert frag in errors[0], errors[0]


@pytest.fixture
def data_npz(tmp_path: Path) -> Path:
    p = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(p, x=rng.standard_normal((6, 3, 16, 16)).astype(np.float32), label=np.arange(6))
    return p


def test_inspect_text_and_json(conv_path: Path) -> None:
    before = sha256(conv_path)
    r = _invoke("inspect", conv_path)
    assert r.exit_code == 0, r.output
    assert "MACs" in r.output and "Conv" in r.output
    r = _invoke("inspect", conv_path, "--json", "--shape", "x=2x3x16x16")
    info = json.loads(r.output)
    assert info["opsets"] == {"ai.onnx": 17}
    assert info["metadata"] == {"labels": "a,b,c", "author": "tests"}
    assert info["macs"] == 2 * (16 * 16 * 8 * 27 + 7 * 7 * 6 * 72 + 60)
    assert sha256(conv_path) == before


def test_verify_self_json_and_gate_exit(conv_path: Path, data_npz: Path, tmp_path: Path) -> None:
    r = _invoke("verify", conv_path, conv_path, "--data", data_npz, "--json", "--repeats", "2")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output[r.output.index("{") :])
    assert rep["outputs"][0]["cosine"] == 1.0 and rep["outputs"][0]["sqnr_db"] == "inf"
    assert rep["reference_accuracy"] is not None and rep["passed"]
    m = onnx.load(conv_path)
    w = numpy_helper.to_array(m.graph.initializer[0])
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(-w, m.graph.initializer[0].name))
    bad = tmp_path / "neg.onnx"
    onnx.save(m, bad)
    r = _invoke("verify", conv_path, bad, "--data", data_npz, "--min-cosine", "0.99", "--repeats", "0")
    assert r.exit_code == 3
    assert "FAIL min_cosine" in r.output and "gate min_cosine failed" in r.output


def test_simplify_writes_and_verifies(conv_path: Path, tmp_path: Path) -> None:
    before = sha256(conv_path)
    out = tmp_path / "out" / "s.onnx"
    r = _invoke("simplify", conv_path, "-o", out, "--synthetic", "4")
    assert r.exit_code == 0, r.output
    assert "WARNING: synthetic" in r.output and "cosine" in r.output
    onnx.checker.check_model(onnx.load(out), full_check=True)
    assert sha256(conv_path) == before
    r = _invoke("simplify", conv_path, "-o", conv_path, "--no-verify")
    _assert_one_line_error(r, 2, "refusing to overwrite the input")
    assert sha256(conv_path) == before


def test_bad_inputs_exit_2_one_line(conv_path: Path, tmp_path: Path) -> None:
    before = sha256(conv_path)
    _assert_one_line_error(_invoke("inspect", tmp_path / "missing.onnx"), 2, "missing.onnx", "no such file")
    notmodel = tmp_path / "notes.onnx"
    notmodel.write_text("this is not an onnx model\n")
    _assert_one_line_error(_invoke("inspect", notmodel), 2, "notes.onnx")
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(conv_path.read_bytes()[:300])
    _assert_one_line_error(_invoke("verify", conv_path, trunc, "--synthetic", "2"), 2, "trunc.onnx")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((2, 3, 8, 8), np.float32))
    _assert_one_line_error(
        _invoke("verify", conv_path, conv_path, "--data", wrong), 2, "sample 0", "'x'", "axis 2 must be 16"
    )
    np.savez(wrong, x=np.zeros((2, 3, 16, 16), np.float16))
    _assert_one_line_error(_invoke("verify", conv_path, conv_path, "--data", wrong), 2, "dtype float16")
    np.savez(wrong, image=np.zeros((2, 3, 16, 16), np.float32))
    _assert_one_line_error(
        _invoke("verify", conv_path, conv_path, "--data", wrong), 2, "unknown input name 'image'"
    )
    _assert_one_line_error(_invoke("verify", conv_path, conv_path), 2, "--data")
    _assert_one_line_error(
        _invoke("verify", conv_path, conv_path, "--data", tmp_path / "nope.npz"), 2, "nope.npz"
    )
    _assert_one_line_error(_invoke("inspect", conv_path, "--shape", "y=1x3x16x16"), 2, "no input 'y'")
    assert sha256(conv_path) == before


def test_help_does_not_import_onnxruntime() -> None:
    code = (
        "import sys; from onnxcomp.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('onnxruntime', 'torch', 'onnx', 'onnx_ir') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_sympy_is_loaded_only_when_used() -> None:
    """onnx_ir imports sympy eagerly; onnxcomp defers it (about 0.35 s per command)."""
    code = (
        "import sys\n"
        "from onnxcomp import io\n"
        "import onnx_ir as ir\n"
        "print('DEFERRED', type(sys.modules['sympy']).__name__)\n"
        "d = ir.SymbolicDim('N') * 2 + 1\n"  # symbolic arithmetic loads the real sympy
        "import sympy\n"
        "print('EXPR', d, sympy.Symbol('k') + 1, type(sys.modules['sympy']).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "DEFERRED _Deferred" in out
    assert "EXPR 2*N + 1 k + 1 module" in out


def test_latency_runs_are_shuffled_and_warm() -> None:
    """Each timed run follows an untimed run of the same model; the order varies."""
    from onnxcomp.runtime import measure_latency

    calls: list[str] = []

    class Session:
        def __init__(self, name: str) -> None:
            self.name = name

        def run(self, *_: object) -> None:
            calls.append(self.name)

    class Runner:
        def __init__(self, name: str) -> None:
            self.session = Session(name)

    runners = [Runner("a"), Runner("b"), Runner("c")]
    stats = measure_latency(runners, {}, warmup=1, repeats=30)  # type: ignore[arg-type]
    assert [s.repeats for s in stats] == [30, 30, 30]
    timed = calls[3:]
    assert len(timed) == 2 * 3 * 30
    pairs = [timed[i : i + 2] for i in range(0, len(timed), 2)]
    assert all(p[0] == p[1] for p in pairs)
    firsts = {tuple(p[0] for p in pairs[i : i + 3]) for i in range(0, len(pairs), 3)}
    assert len(firsts) > 1 and all(sorted(f) == ["a", "b", "c"] for f in firsts)


def test_latency_of_slow_models_skips_the_untimed_run(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from onnxcomp import runtime

    monkeypatch.setattr(runtime, "SLOW_RUN_S", 0.0)  # every model counts as slow
    calls: list[str] = []

    class Session:
        def run(self, *_: object) -> None:
            calls.append("x")

    class Runner:
        session = Session()

    runtime.measure_latency([Runner(), Runner()], {}, warmup=2, repeats=5)  # type: ignore[list-item]
    assert len(calls) == 2 * 2 + 2 * 5


def test_a_closed_pipe_ends_quietly(conv_path: Path) -> None:
    """`onnxcomp inspect m.onnx | head` must not print an internal error."""
    import os

    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written
    try:
        p = subprocess.run(
            [sys.executable, "-m", "onnxcomp.cli", "inspect", str(conv_path)],
            stdout=w,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(w)
    assert p.returncode == 141, p.stderr
    assert b"error" not in p.stderr and b"Traceback" not in p.stderr
