"""Bias folding of the mean contribution of removed channels."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import model_from_text
from test_prune import HEAD, _feed, _init, _ir, _run, check_pruned

from onnxcomp import io
from onnxcomp.data import Dataset, SyntheticSource, input_specs
from onnxcomp.prune import PruneConfig, PrunePlan, apply_plan, plan_pruning
from onnxcomp.prune._fold import relu_moments

RNG = np.random.default_rng(7)


def _w(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _data(model, n: int = 16):
    specs = input_specs(model)
    return Dataset(SyntheticSource(specs, n, 3), specs)


def _constant_channels(cout: int, cin: int, dead: list[int]) -> np.ndarray:
    """Filters: the ``dead`` ones all zero (their outputs are exactly the bias), the others large."""
    w = 10 * _w(cout, cin, 1, 1)
    w[dead] = 0
    return w


DEAD = [0, 3, 4, 6]

CONSUMERS = {
    # 1x1 conv with bias, 1x1 conv without bias (a B input is created), Gemm after pooling
    "conv": (
        "y = Conv <kernel_shape = [1,1]> (r, W2, B2)",
        "float[N,5,6,6] y",
        {"W2": (5, 8, 1, 1), "B2": (5,)},
    ),
    "conv_nobias": (
        "y = Conv <kernel_shape = [1,1], strides = [2,2]> (r, W2)",
        "float[N,5,3,3] y",
        {"W2": (5, 8, 1, 1)},
    ),
    "gemm": (
        "p = GlobalAveragePool (r)\n f = Flatten (p)\n y = Gemm <transB = 1, alpha = 0.5, beta = 2.0> (f, W2, B2)",
        "float[N,5] y",
        {"W2": (5, 8), "B2": (5,)},
    ),
    "gemm_flatten_blocks": (
        "p = MaxPool <kernel_shape = [2,2], strides = [2,2]> (r)\n f = Flatten (p)\n y = Gemm (f, W2)",
        "float[N,5] y",
        {"W2": (72, 5)},
    ),
}


@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
@pytest.mark.parametrize("with_data", [False, True])
def test_constant_channels_fold_exactly(consumer: str, with_data: bool) -> None:
    """Removed channels that are exactly constant: the folded model equals the unpruned one."""
    body, out, shapes = CONSUMERS[consumer]
    text = (
        HEAD
        + f"""
    g (float[N,3,6,6] x) => ({out}) {{
        a = Conv <kernel_shape = [1,1]> (x, W1, B1)
        b = BatchNormalization (a, S, Bb, M, V)
        r = Relu (b)
        {body}
    }}"""
    )
    w = {
        "W1": _constant_channels(8, 3, DEAD),
        "B1": _w(8),
        "S": _w(8),
        "Bb": _w(8),
        "M": _w(8),
        "V": np.abs(_w(8)) + 0.5,
    }
    w.update({k: _w(*s) for k, s in shapes.items()})
    # the consumer reads the dead channels weakly, so that l1 surely removes them
    dead = np.isin(np.arange(8), DEAD)
    if consumer == "gemm_flatten_blocks":
        w["W2"][np.repeat(dead, 9)] *= 0.1
    else:
        w["W2"][:, dead] *= 0.1
    model = _ir(model_from_text(text, w))
    data = _data(model) if with_data else None
    pruned, plan = check_pruned(model, PruneConfig(ratio=0.5, latency_repeats=0), data=data)
    g = next(g for g in plan.groups if g.pruned)
    assert sorted(g.removed["a"]) == DEAD
    (fold,) = plan.folds
    assert (
        fold.source == ("data" if with_data else "bn")
        and fold.folded == fold.removed
        and fold.delta
    )
    assert not fold.padded and not fold.reason
    assert _init(pruned, "W1").shape == (4, 3, 1, 1)
    feed = _feed(model)
    a, b = _run(model, feed)[0], _run(pruned, feed)[0]
    np.testing.assert_allclose(b, a, rtol=0, atol=2e-5 * max(1.0, float(np.abs(a).max())))
    # without the fold the constant contribution is lost
    unfolded = check_pruned(
        model, PruneConfig(ratio=0.5, latency_repeats=0, bias_fold=False), data=data
    )[0]
    assert np.abs(_run(unfolded, feed)[0] - a).max() > 1e-2


def test_residual_group_folds_every_consumer_and_matmul_gets_bias_add() -> None:
    text = (
        HEAD
        + """
    g (float[N,4,6] x) => (float[N,4,3] y, float[N,4,5] z) {
        a = MatMul (x, W1)
        ab = Add (a, b1)
        c = MatMul (x, W2)
        cb = Add (c, b2)
        s = Add (ab, cb)
        r = Relu (s)
        y = MatMul (r, W3)
        h = MatMul (r, W4)
        z = Add (h, b4)
    }"""
    )
    w1, w2 = _w(6, 8) * 10, _w(6, 8) * 10
    w1[:, DEAD] = 0
    w2[:, DEAD] = 0
    w = {"W1": w1, "b1": _w(8), "W2": w2, "b2": _w(8), "W3": _w(8, 3), "W4": _w(8, 5), "b4": _w(5)}
    w["W3"][DEAD] *= 0.1
    w["W4"][DEAD] *= 0.1
    model = _ir(model_from_text(text, w))
    pruned, plan = check_pruned(model, PruneConfig(ratio=0.5, latency_repeats=0))
    assert sorted(next(g for g in plan.groups if g.pruned).removed["a"]) == DEAD
    assert sorted(f.node for f in plan.folds if f.delta) == ["MatMul_6", "MatMul_7"]
    assert [n.op_type for n in pruned.graph].count("Add") == 5  # + the new bias Add of y's MatMul
    onnx.checker.check_model(io.to_proto(pruned), full_check=True)
    feed = _feed(model)
    for a, b in zip(_run(model, feed), _run(pruned, feed)):
        np.testing.assert_allclose(b, a, rtol=0, atol=2e-5 * max(1.0, float(np.abs(a).max())))
    # the plan (with its folds) round-trips and re-applies to the same model
    plan2 = PrunePlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    again = apply_plan(model, plan2)
    np.testing.assert_array_equal(_run(again, feed)[0], _run(pruned, feed)[0])


def test_padding_is_approximate_but_matches_the_folded_reference() -> None:
    text = (
        HEAD
        + """
    g (float[N,3,6,6] x) => (float[N,5,6,6] y) {
        a = Conv <kernel_shape = [1,1]> (x, W1, B1)
        b = BatchNormalization (a, S, Bb, M, V)
        r = LeakyRelu <alpha = 0.1> (b)
        y = Conv <kernel_shape = [3,3], pads = [1,1,1,1]> (r, W2, B2)
    }"""
    )
    w = {
        "W1": _w(8, 3, 1, 1),
        "B1": _w(8),
        "S": _w(8),
        "Bb": _w(8),
        "M": _w(8),
        "V": np.abs(_w(8)) + 0.5,
        "W2": _w(5, 8, 3, 3),
        "B2": _w(5),
    }
    model = _ir(model_from_text(text, w))
    _, plan = check_pruned(model, PruneConfig(ratio=0.5, latency_repeats=0))
    (fold,) = plan.folds
    assert fold.padded and fold.delta and any("approximate at borders" in n for n in plan.notes)


def test_no_estimate_without_bn_or_data_is_reported() -> None:
    text = (
        HEAD
        + """
    g (float[N,3,6,6] x) => (float[N,5,6,6] y) {
        a = Conv <kernel_shape = [1,1]> (x, W1)
        r = Relu (a)
        y = Conv <kernel_shape = [1,1]> (r, W2)
    }"""
    )
    model = _ir(model_from_text(text, {"W1": _w(8, 3, 1, 1), "W2": _w(5, 8, 1, 1)}))
    plan = plan_pruning(model, PruneConfig(ratio=0.5))
    (fold,) = plan.folds
    assert fold.source == "none" and not fold.delta and "no BatchNormalization" in fold.reason
    assert any("no BatchNormalization" in n for n in plan.notes)
    # with data the means are measured
    plan = plan_pruning(model, PruneConfig(ratio=0.5), _data(model))
    assert plan.folds[0].source == "data" and plan.folds[0].delta


def test_relu_moments_closed_form() -> None:
    rng = np.random.default_rng(0)
    mu, var = np.array([0.3, -1.0, 2.0, 0.5]), np.array([1.0, 0.25, 4.0, 0.0])
    z = rng.standard_normal((400_000, 1))
    x = np.maximum(mu + np.sqrt(var) * z, 0)
    m, v = relu_moments(mu, var)
    np.testing.assert_allclose(m, x.mean(0), atol=5e-3)
    np.testing.assert_allclose(v, x.var(0), atol=1e-2)
    assert m[3] == 0.5 and v[3] == 0.0


def test_cli_bias_fold_flag(tmp_path) -> None:
    from models import GRAPHS
    from test_prune import _invoke

    src = next(p for p in GRAPHS if p.stem == "conv_bn_relu")
    r = _invoke("prune", src, "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    assert any(f["delta"] for f in json.loads(r.output)["folds"])
    r = _invoke("prune", src, "--dry-run", "--json", "--no-bias-fold")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["folds"] == []
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"bias_fold": false}')
    r = _invoke(
        "prune", src, "-o", tmp_path / "o.onnx", "--config", cfg, "--json", "--repeats", "0"
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["plan"]["folds"] == [] and out["reference_check"]["passed"]


def test_channel_shuffle_used_elsewhere_stops_with_reason() -> None:
    """A shuffle whose transposed tensor also feeds something else is not a plain permutation."""
    text = (
        HEAD
        + """
    g (float[N,3,6,6] x) => (float[N,5,6,6] y, float[N,4,2,6,6] t) {
        a = Conv <kernel_shape = [1,1]> (x, W1)
        r = Relu (a)
        s1 = Reshape (r, shp1)
        t = Transpose <perm = [0,2,1,3,4]> (s1)
        s2 = Reshape (t, shp2)
        y = Conv <kernel_shape = [1,1]> (s2, W2)
    }"""
    )
    w = {
        "W1": _w(8, 3, 1, 1),
        "W2": _w(5, 8, 1, 1),
        "shp1": np.array([0, 2, 4, 6, 6], np.int64),
        "shp2": np.array([0, 8, 6, 6], np.int64),
    }
    plan = plan_pruning(_ir(model_from_text(text, w)), PruneConfig(ratio=0.5))
    ga = next(g for g in plan.groups if g.spaces == ["a"])
    assert not ga.pruned and "Reshape" in ga.reasons[0] and "mixes channels" in ga.reasons[0]
