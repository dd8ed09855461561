"""distill: label store round trip, resumption, refusal, reader, losses, eval, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis.extra.numpy import array_shapes as st_shapes
from hypothesis.extra.numpy import arrays as st_arrays
from hypothesis.strategies import integers as st_integers

from onnxcomp.cli import main
from onnxcomp.distill import (
    EvalConfig,
    LabelConfig,
    compress_topk,
    evaluate,
    kd_loss,
    kd_loss_and_grad,
    label,
    open_store,
    plan_tap,
)
from onnxcomp.distill import _label as label_mod
from onnxcomp.distill._label import topk_from_logits
from onnxcomp.errors import DataError, InvalidInputError, UnsupportedModelError
from conftest import model_from_text

C = 12
D = 16


def mlp_text(batch: str = "N", softmax: bool = True, classes: int = C) -> str:
    tail = "y = Softmax <axis = -1> (z)" if softmax else "y = Identity (z)"
    return f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[{batch},{D}] x) => (float[{batch},{classes}] y) {{
        h0 = MatMul (x, W1)
        h1 = Add (h0, B1)
        h = Relu (h1)
        feat = Mul (h, S)
        z0 = MatMul (feat, W2)
        z = Add (z0, B2)
        {tail}
    }}
    """


def make_teacher(
    path: Path,
    *,
    seed: int = 0,
    batch: str = "N",
    softmax: bool = True,
    scale: float = 3.0,
    classes: int = C,
) -> Path:
    rng = np.random.default_rng(seed)
    w = {
        "W1": rng.standard_normal((D, 32)).astype(np.float32) * 0.5,
        "B1": rng.standard_normal(32).astype(np.float32) * 0.1,
        "S": np.array(1.0, np.float32),
        "W2": rng.standard_normal((32, classes)).astype(np.float32) * scale,
        "B2": rng.standard_normal(classes).astype(np.float32),
    }
    onnx.save(model_from_text(mlp_text(batch, softmax, classes), w), path)
    return path


def logits_of(path: Path, x: np.ndarray) -> np.ndarray:
    """Reference logits: the teacher's Softmax input exposed, run in ORT."""
    m = onnx.load(path)
    m.graph.output.insert(0, onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    batch = m.graph.input[0].type.tensor_type.shape.dim[0]
    if batch.HasField("dim_value"):
        return np.concatenate([sess.run(["z"], {"x": x[i : i + 1]})[0] for i in range(len(x))])
    return sess.run(["z"], {"x": x})[0]


def ref_logp(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    m = z.max(1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(1, keepdims=True))


def make_data(
    path: Path, n: int = 70, seed: int = 1, labels: bool = True
) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D)).astype(np.float32)
    arrays = {"x": x}
    if labels:
        arrays["label"] = rng.integers(0, C, n).astype(np.int64)
    np.savez(path, **arrays)
    return path, x


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    teacher = make_teacher(tmp_path / "teacher.onnx")
    data, x = make_data(tmp_path / "data.npz")
    return teacher, data, x


# ---------------------------------------------------------------- planning


def test_plan_taps_softmax_input(setup: tuple[Path, Path, np.ndarray]) -> None:
    import onnx_ir as ir

    teacher, _, _ = setup
    tap = plan_tap(ir.load(teacher))
    assert (tap.output, tap.tapped, tap.tap) == ("y", "z", "softmax-input")


def test_plan_without_softmax_reads_output(tmp_path: Path) -> None:
    import onnx_ir as ir

    teacher = make_teacher(tmp_path / "t.onnx", softmax=False)
    tap = plan_tap(ir.load(teacher))
    assert (tap.tapped, tap.tap) == ("y", "logits")


# -------------------------------------------------------------- round trip


def test_dense_round_trip(setup: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    teacher, data, x = setup
    report = label(teacher, data, tmp_path / "s", LabelConfig(shard_size=32, batch_size=8))
    assert report.tapped == "z" and report.samples == 70 and report.shards == 3
    st = open_store(tmp_path / "s")
    ref = ref_logp(logits_of(teacher, x))
    got = st.log_probs(np.arange(70))
    np.testing.assert_allclose(got, ref, atol=1e-5 * max(1.0, np.abs(ref).max()))
    # any temperature, any order of indices
    idx = [69, 3, 3, 40]
    for t in (1.0, 4.0):
        zt = ref[idx] / t
        p = np.exp(zt - zt.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        np.testing.assert_allclose(st.targets(idx, t), p, atol=1e-6)
    np.testing.assert_array_equal(st.labels(), np.load(data)["label"])
    # shards are plain .npy files readable with numpy alone, memory-mapped
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    arr = np.load(tmp_path / "s" / m["shards"][1]["files"]["logp"], mmap_mode="r")
    assert arr.shape == (32, C) and arr.dtype == np.float32
    assert m["complete"] and m["teacher_sha256"] == hashlib.sha256(teacher.read_bytes()).hexdigest()


def test_softmax_tap_keeps_saturated_classes(tmp_path: Path) -> None:
    # logits so spread out that float32 softmax underflows to exactly 0 for most classes:
    # log(prob) would be -inf, the tapped logits keep the exact log-probabilities.
    teacher = make_teacher(tmp_path / "t.onnx", scale=200.0)
    data, x = make_data(tmp_path / "d.npz", n=10)
    label(teacher, data, tmp_path / "s", LabelConfig())
    z = logits_of(teacher, x)
    ref = ref_logp(z)
    assert ref.min() < -200  # exp() of this is 0 in float32
    got = open_store(tmp_path / "s").log_probs(np.arange(10))
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("k", [1, 3, C])
def test_topk_round_trip(setup: tuple[Path, Path, np.ndarray], tmp_path: Path, k: int) -> None:
    teacher, data, x = setup
    label(teacher, data, tmp_path / "s", LabelConfig(top_k=k, shard_size=25, batch_size=16))
    st = open_store(tmp_path / "s")
    idx, logp, tail = st.topk(np.arange(70))
    assert idx.dtype == np.uint8 and logp.dtype == np.float16 and tail.dtype == np.float32
    ref = ref_logp(logits_of(teacher, x))
    order = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, order)
    top = np.take_along_axis(ref, order, axis=1)
    np.testing.assert_allclose(logp.astype(np.float64), top, rtol=1e-3, atol=1e-3)  # float16
    p = np.exp(ref)
    rest = p.copy()
    np.put_along_axis(rest, order, 0.0, axis=1)
    np.testing.assert_allclose(tail, rest.sum(1), rtol=1e-6, atol=1e-12)  # exact tail mass
    # explicit tail treatment
    with pytest.raises(InvalidInputError, match="tail="):
        st.targets([0])
    u = st.targets(np.arange(70), 2.0, tail="uniform")
    r = st.targets(np.arange(70), 2.0, tail="renormalize")
    np.testing.assert_allclose(u.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(r.sum(1), 1, atol=1e-5)
    mask = np.zeros((70, C), bool)
    np.put_along_axis(mask, order, True, axis=1)
    assert (r[~mask] == 0).all()
    # uniform: outside classes share the tail mass equally at T=1
    u1 = st.targets(np.arange(70), 1.0, tail="uniform").astype(np.float64)
    if k < C:
        expect = (tail.astype(np.float64) / (C - k))[:, None] * np.ones((1, C))
        total = np.exp(logp.astype(np.float64)).sum(1) + tail
        np.testing.assert_allclose(
            u1[~mask].reshape(70, C - k),
            (expect / total[:, None])[~mask].reshape(70, C - k),
            rtol=1e-5,
            atol=1e-9,
        )


def test_compress_topk_ties_are_deterministic() -> None:
    logp = np.log(np.full((2, 6), 1 / 6))
    idx, top, tail = compress_topk(logp, 2, np.dtype(np.uint8))
    np.testing.assert_array_equal(idx, [[0, 1], [0, 1]])
    np.testing.assert_allclose(tail, 4 / 6, rtol=1e-6)


def test_index_dtype_grows_with_classes(tmp_path: Path) -> None:
    teacher = make_teacher(tmp_path / "t.onnx", classes=300)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((5, D)).astype(np.float32))
    label(teacher, tmp_path / "d.npz", tmp_path / "s", LabelConfig(top_k=10))
    idx, _, _ = open_store(tmp_path / "s").topk([0, 4])
    assert idx.dtype == np.uint16


def test_fixed_batch_axis_runs_one_sample_at_a_time(tmp_path: Path) -> None:
    teacher = make_teacher(tmp_path / "t.onnx", batch="1")
    data, x = make_data(tmp_path / "d.npz", n=9)
    label(teacher, data, tmp_path / "s", LabelConfig(batch_size=4, shard_size=4))
    got = open_store(tmp_path / "s").log_probs(np.arange(9))
    np.testing.assert_allclose(got, ref_logp(logits_of(teacher, x)), atol=1e-5)


def test_feature_targets(setup: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    teacher, data, x = setup
    label(
        teacher, data, tmp_path / "s", LabelConfig(top_k=2, features=("feat", "h0"), shard_size=30)
    )
    st = open_store(tmp_path / "s")
    assert st.feature_names == ["feat", "h0"]
    m = onnx.load(teacher)
    m.graph.output.insert(0, onnx.helper.make_tensor_value_info("h0", onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    h0 = sess.run(["h0"], {"x": x})[0]
    np.testing.assert_allclose(st.features("h0", np.arange(70)), h0, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        st.features("feat", [5, 2]),
        np.maximum(
            h0[[5, 2]]
            + onnx.numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "B1")),
            0,
        ),
        rtol=1e-6,
        atol=1e-6,
    )
    assert st.features("feat", np.arange(70)).shape == (70, 32)
    with pytest.raises(InvalidInputError, match="no feature"):
        st.features("nope", [0])


# ----------------------------------------------------------- resume / refuse


def test_resume_after_interruption_is_identical(
    setup: tuple[Path, Path, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    teacher, data, _ = setup
    cfg = LabelConfig(top_k=4, shard_size=16, batch_size=5)
    label(teacher, data, tmp_path / "full", cfg)

    real = label_mod.ShardWorker.run_shard
    calls = {"n": 0}

    def flaky(self, index: int, start: int, count: int):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            # a torn write: a partial file of the shard in progress, then a crash
            (self.store / f"shard-{index:05d}-logp.npy").write_bytes(b"garbage")
            raise KeyboardInterrupt
        return real(self, index, start, count)

    monkeypatch.setattr(label_mod.ShardWorker, "run_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        label(teacher, data, tmp_path / "part", cfg)
    m = json.loads((tmp_path / "part" / "manifest.json").read_text())
    assert [s["complete"] for s in m["shards"]] == [True, True, False, False, False]
    assert not m["complete"]
    with pytest.raises(InvalidInputError, match="incomplete"):
        open_store(tmp_path / "part")
    monkeypatch.setattr(label_mod.ShardWorker, "run_shard", real)
    report = label(teacher, data, tmp_path / "part", cfg)
    assert (report.shards_reused, report.shards_written) == (2, 3)
    assert tree_digest(tmp_path / "part") == tree_digest(tmp_path / "full")
    # a finished store is a no-op
    again = label(teacher, data, tmp_path / "part", cfg)
    assert again.shards_written == 0 and tree_digest(tmp_path / "part") == tree_digest(
        tmp_path / "full"
    )


def test_changed_teacher_is_refused(setup: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    teacher, data, _ = setup
    label(teacher, data, tmp_path / "s", LabelConfig(shard_size=32))
    before = tree_digest(tmp_path / "s")
    other = make_teacher(tmp_path / "other.onnx", seed=5)
    with pytest.raises(InvalidInputError, match="another teacher"):
        label(other, data, tmp_path / "s", LabelConfig(shard_size=32))
    assert tree_digest(tmp_path / "s") == before


def test_changed_data_or_options_are_refused(
    setup: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    teacher, data, _ = setup
    label(teacher, data, tmp_path / "s", LabelConfig(shard_size=32))
    before = tree_digest(tmp_path / "s")
    other, _ = make_data(tmp_path / "other.npz", n=70, seed=9)
    with pytest.raises(InvalidInputError, match="other data"):
        label(teacher, other, tmp_path / "s", LabelConfig(shard_size=32))
    with pytest.raises(InvalidInputError, match="top_k"):
        label(teacher, data, tmp_path / "s", LabelConfig(shard_size=32, top_k=3))
    assert tree_digest(tmp_path / "s") == before


def test_bad_inputs(setup: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    teacher, data, _ = setup
    with pytest.raises(InvalidInputError, match="larger than the teacher's class count"):
        label(teacher, data, tmp_path / "a", LabelConfig(top_k=C + 1))
    assert not (tmp_path / "a").exists()
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, D + 1), np.float32))
    with pytest.raises(DataError, match="axis 1 must be 16"):
        label(teacher, bad, tmp_path / "b", LabelConfig())
    assert not (tmp_path / "b").exists()
    seq = model_from_text(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N,4,8] x) => (float[N,4,8] y) { y = Relu (x) }"""
    )
    onnx.save(seq, tmp_path / "seq.onnx")
    with pytest.raises(UnsupportedModelError, match="not class scores"):
        label(tmp_path / "seq.onnx", [{"x": np.zeros((1, 4, 8), np.float32)}], tmp_path / "c")
    with pytest.raises(InvalidInputError, match="not an output"):
        label(teacher, data, tmp_path / "d", LabelConfig(output="nope"))


# -------------------------------------------------------------------- losses


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize(
    "t,alpha,with_labels", [(1.0, None, False), (4.0, 0.7, True), (2.0, 0.0, True)]
)
def test_kd_loss_matches_direct_and_gradient(
    t: float, alpha: float | None, with_labels: bool
) -> None:
    rng = np.random.default_rng(0)
    z = rng.standard_normal((5, 7)) * 2
    p = _softmax(rng.standard_normal((5, 7)) / t)
    p[0, 3] = 0.0  # zero-probability class: 0 log 0 = 0
    p[0] /= p[0].sum()
    y = np.array([1, 0, 6, -1, 3]) if with_labels else None
    a = 1.0 if alpha is None else alpha
    q = _softmax(z / t)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.nansum(np.where(p > 0, p * np.log(p / q), 0.0), axis=1)
    direct = a * t * t * kl.mean()
    if y is not None:
        v = y >= 0
        direct += (1 - a) * -np.log(_softmax(z[v])[np.arange(v.sum()), y[v]]).mean()
    loss, grad = kd_loss_and_grad(z, p, y, temperature=t, alpha=alpha)
    assert loss == pytest.approx(direct, rel=1e-12)
    assert kd_loss(z, p, y, temperature=t, alpha=alpha) == loss
    eps = 1e-6
    num = np.zeros_like(z)
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            zp, zm = z.copy(), z.copy()
            zp[i, j] += eps
            zm[i, j] -= eps
            num[i, j] = (
                kd_loss(zp, p, y, temperature=t, alpha=alpha)
                - kd_loss(zm, p, y, temperature=t, alpha=alpha)
            ) / (2 * eps)
    np.testing.assert_allclose(grad, num, atol=1e-7)


def test_kd_loss_bad_arguments() -> None:
    z = np.zeros((2, 3))
    with pytest.raises(InvalidInputError, match="pass labels"):
        kd_loss(z, np.full((2, 3), 1 / 3), alpha=0.5)
    with pytest.raises(InvalidInputError, match="temperature"):
        kd_loss(z, np.full((2, 3), 1 / 3), temperature=0)


def test_torch_adapter_matches_numpy(setup: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from onnxcomp.distill import torch_dataset, torch_kd_loss

    teacher, data, x = setup
    label(teacher, data, tmp_path / "s", LabelConfig(top_k=4, shard_size=32))
    st = open_store(tmp_path / "s")
    ds = torch_dataset(x, st, temperature=3.0, tail="uniform")
    xb, tb, yb = ds[5]
    assert torch.equal(xb, torch.from_numpy(x[5]))
    np.testing.assert_allclose(tb.numpy(), st.target(5, 3.0, tail="uniform"))
    assert int(yb) == int(np.load(data)["label"][5])
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=False)
    xb, tb, yb = next(iter(loader))
    z = torch.randn(
        16, C, dtype=torch.float64, requires_grad=True, generator=torch.Generator().manual_seed(0)
    )
    loss = torch_kd_loss(z, tb.double(), yb, temperature=3.0, alpha=0.6)
    loss.backward()
    ref, grad = kd_loss_and_grad(
        z.detach().numpy(), tb.double().numpy(), yb.numpy(), temperature=3.0, alpha=0.6
    )
    assert float(loss.detach()) == pytest.approx(ref, rel=1e-10)
    np.testing.assert_allclose(z.grad.numpy(), grad, rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------- parallel


def test_workers_2_identical_to_workers_1(
    setup: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    teacher, data, _ = setup
    base = dict(top_k=5, shard_size=16, batch_size=8, features=("h0",), threads=1)
    label(teacher, data, tmp_path / "w1", LabelConfig(workers=1, **base))  # type: ignore[arg-type]
    r = label(teacher, data, tmp_path / "w2", LabelConfig(workers=2, **base))  # type: ignore[arg-type]
    assert r.shards_written == 5
    assert tree_digest(tmp_path / "w1") == tree_digest(tmp_path / "w2")


@pytest.mark.slow
def test_ray_engine_identical_to_local(
    setup: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    teacher, data, _ = setup
    base = dict(top_k=5, shard_size=16, batch_size=8, threads=1)
    label(teacher, data, tmp_path / "w1", LabelConfig(**base))  # type: ignore[arg-type]
    label(teacher, data, tmp_path / "ray", LabelConfig(workers=2, engine="ray", **base))  # type: ignore[arg-type]
    assert tree_digest(tmp_path / "w1") == tree_digest(tmp_path / "ray")


# ----------------------------------------------------------------------- eval


def test_eval_student_equal_to_teacher(
    setup: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    teacher, data, _ = setup
    label(teacher, data, tmp_path / "s", LabelConfig(shard_size=32))
    cfg = EvalConfig(temperature=2.0, latency_repeats=2)
    for kw in ({"teacher": teacher}, {"store": tmp_path / "s"}):
        rep = evaluate(teacher, data, config=cfg, **kw)  # type: ignore[arg-type]
        assert rep.top1_agreement == 1.0 and rep.top5_agreement == 1.0
        assert abs(rep.mean_kl) < 1e-6
        assert rep.student_accuracy == rep.teacher_accuracy is not None
        assert rep.teacher_bytes == teacher.stat().st_size


def test_eval_other_student(setup: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    teacher, data, x = setup
    student = make_teacher(tmp_path / "student.onnx", seed=3, softmax=False)
    rep = evaluate(
        student, data, teacher=teacher, config=EvalConfig(temperature=2.0, latency_repeats=0)
    )
    m = onnx.load(student)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    zs = sess.run(None, {"x": x})[0].astype(np.float64)
    zt = logits_of(teacher, x).astype(np.float64)
    assert rep.top1_agreement == pytest.approx(float((zs.argmax(1) == zt.argmax(1)).mean()))
    top5 = np.argsort(-zs, 1)[:, :5]
    assert rep.top5_agreement == pytest.approx(float((top5 == zt.argmax(1)[:, None]).any(1).mean()))
    pt, qs = _softmax(zt / 2), _softmax(zs / 2)
    assert rep.mean_kl == pytest.approx(float((pt * np.log(pt / qs)).sum(1).mean()), rel=1e-6)
    assert rep.student_latency_ms is None


# ------------------------------------------------------------------------ CLI


def test_cli_label_and_eval(setup: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    teacher, data, _ = setup
    runner = CliRunner()
    store = tmp_path / "s"
    r = runner.invoke(
        main,
        [
            "distill",
            "label",
            str(teacher),
            "--data",
            str(data),
            "-o",
            str(store),
            "--top-k",
            "3",
            "--shard-size",
            "20",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["samples"] == 70 and out["top_k"] == 3 and out["tapped"] == "z"
    r = runner.invoke(
        main,
        [
            "distill",
            "label",
            str(teacher),
            "--data",
            str(data),
            "-o",
            str(store),
            "--top-k",
            "3",
            "--shard-size",
            "20",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "0 written, 4 reused" in r.stdout and "throughput" in r.stdout
    r = runner.invoke(
        main,
        [
            "distill",
            "eval",
            str(teacher),
            "--store",
            str(store),
            "--data",
            str(data),
            "--temperature",
            "2",
            "--repeats",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "top-1 agree 100.00%" in r.stdout
    r = runner.invoke(
        main,
        [
            "distill",
            "eval",
            str(teacher),
            "--teacher",
            str(teacher),
            "--data",
            str(data),
            "--repeats",
            "0",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["top1_agreement"] == 1.0


def _one_line_error(r) -> str:  # type: ignore[no-untyped-def]
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output
    return lines[0]


def test_cli_bad_inputs(setup: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    teacher, data, _ = setup
    runner = CliRunner()
    store = tmp_path / "s"
    assert (
        runner.invoke(
            main,
            ["distill", "label", str(teacher), "--data", str(data), "-o", str(store), "--json"],
        ).exit_code
        == 0
    )
    before = tree_digest(store)
    other = make_teacher(tmp_path / "other.onnx", seed=7)
    msg = _one_line_error(
        runner.invoke(main, ["distill", "label", str(other), "--data", str(data), "-o", str(store)])
    )
    assert "another teacher" in msg
    msg = _one_line_error(
        runner.invoke(
            main,
            [
                "distill",
                "label",
                str(teacher),
                "--data",
                str(data),
                "-o",
                str(store),
                "--top-k",
                "99",
            ],
        )
    )
    assert "larger than the teacher's class count 12" in msg
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((3, 5), np.float32))
    msg = _one_line_error(
        runner.invoke(
            main, ["distill", "label", str(teacher), "--data", str(bad), "-o", str(store)]
        )
    )
    assert "bad.npz" in msg
    assert tree_digest(store) == before
    seq = model_from_text(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N,4,8] x) => (float[N,4,8] y) { y = Relu (x) }"""
    )
    onnx.save(seq, tmp_path / "seq.onnx")
    msg = _one_line_error(
        runner.invoke(
            main,
            [
                "distill",
                "label",
                str(tmp_path / "seq.onnx"),
                "--synthetic",
                "4",
                "-o",
                str(tmp_path / "x"),
            ],
        )
    )
    assert "not class scores" in msg
    msg = _one_line_error(
        runner.invoke(main, ["distill", "eval", str(teacher), "--data", str(data)])
    )
    assert "--teacher or --store" in msg
    msg = _one_line_error(
        runner.invoke(
            main,
            [
                "distill",
                "eval",
                str(teacher),
                "--store",
                str(tmp_path / "nope"),
                "--data",
                str(data),
            ],
        )
    )
    assert "not a soft-label store" in msg


def test_block_reading_equals_sample_reading(
    setup: tuple[Path, Path, np.ndarray], tmp_path: Path
) -> None:
    # .npz shaped like the inputs is read a batch at a time; a Python list one sample at a
    # time: the same batches, so the same arrays.
    teacher, data, x = setup
    y = np.load(data)["label"]
    cfg = LabelConfig(top_k=3, shard_size=16, batch_size=5)
    label(teacher, data, tmp_path / "a", cfg)
    label(teacher, [{"x": x[i], "label": y[i]} for i in range(len(x))], tmp_path / "b", cfg)
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    a.pop("manifest.json"), b.pop("manifest.json")
    assert a == b and len(a) == 5 * 4


def test_probabilities_output_without_visible_softmax(tmp_path: Path) -> None:
    # Softmax hidden behind Flatten: the output is detected as probabilities and logged.
    rng = np.random.default_rng(0)
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N,{D}] x) => (float[N,{C}] y) {{
        z = MatMul (x, W)
        p = Softmax <axis = -1> (z)
        y = Flatten <axis = 1> (p)
    }}
    """
    onnx.save(
        model_from_text(text, {"W": rng.standard_normal((D, C)).astype(np.float32)}),
        tmp_path / "t.onnx",
    )
    data, x = make_data(tmp_path / "d.npz", n=8)
    rep = label(tmp_path / "t.onnx", data, tmp_path / "s")
    assert rep.tap == "probabilities"
    w = onnx.numpy_helper.to_array(onnx.load(tmp_path / "t.onnx").graph.initializer[0])
    ref = ref_logp(x.astype(np.float64) @ w.astype(np.float64))
    np.testing.assert_allclose(open_store(tmp_path / "s").log_probs(np.arange(8)), ref, atol=1e-4)


def test_ray_missing_is_a_clear_error(
    setup: tuple[Path, Path, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    teacher, data, _ = setup
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InvalidInputError, match="pip install ray"):
        label(teacher, data, tmp_path / "s", LabelConfig(engine="ray", workers=2, shard_size=16))


@settings(max_examples=60, deadline=None)
@given(
    st_arrays(
        np.int8,
        st_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40),
        elements=st_integers(-6, 6),
    ),
    st_integers(1, 45),
)
def test_topk_matches_brute_force(z: np.ndarray, k: int) -> None:
    # small integer logits: many ties, which must go to the lower index
    k = min(k, z.shape[1])
    zf = z.astype(np.float32) * 1.5
    idx, top, tail = topk_from_logits(zf, k, np.dtype(np.uint8))
    logp = ref_logp(zf)
    order = np.argsort(-logp, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(idx, order)
    np.testing.assert_allclose(top, np.take_along_axis(logp, order, axis=1), rtol=1e-3, atol=1e-3)
    p = np.exp(logp)
    np.put_along_axis(p, order, 0.0, axis=1)
    np.testing.assert_allclose(tail, p.sum(1), rtol=1e-6, atol=1e-30)
    i2, t2, tail2 = compress_topk(logp, k, np.dtype(np.uint8))
    np.testing.assert_array_equal(i2, idx)
    np.testing.assert_allclose(tail2, tail, rtol=1e-6, atol=1e-30)
