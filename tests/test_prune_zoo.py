"""Pruning real models: fetched ZOO models and the onnx package's light models (after simplify)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from models import LIGHT, ZOO_DIR, ZOO_KEYS, ids

from onnxcomp import io
from onnxcomp.data import open_data
from onnxcomp.prune import PruneConfig, prune
from onnxcomp.runtime import create_session

pytestmark = pytest.mark.zoo

# the light models whose channels can be pruned (ShuffleNet: the bottleneck channels through
# its channel shuffles; its residual trunk stays, the plan says why)
PRUNABLE_LIGHT = (
    "resnet50", "densenet121", "inception_v1", "inception_v2", "squeezenet", "vgg19", "bvlc_alexnet", "zfnet512",
    "shufflenet",
)


def _check(model, data, cfg: PruneConfig):
    result = prune(model, cfg, data)
    onnx.checker.check_model(io.to_proto(result.model), full_check=True)
    create_session(result.model)
    return result


@pytest.mark.parametrize("key", ZOO_KEYS)
def test_zoo_prune(key: str) -> None:
    path = ZOO_DIR / f"{key}.onnx"
    if not path.exists():
        pytest.skip(f"{path} not fetched")
    model = io.load(path)
    data = open_data(path.with_suffix(".npz"), model, limit=1) if path.with_suffix(".npz").exists() else None
    result = _check(model, data, PruneConfig(ratio=0.5, verify_samples=1, latency_repeats=0))
    plan = result.plan
    assert any(g.pruned for g in plan.groups)
    assert result.reference_check is not None and result.reference_check["passed"]
    assert plan.macs_after < plan.macs_before
    for g in plan.groups:
        assert g.pruned or g.reasons


BIG = ("light_vgg19", "light_zfnet512")  # > 30 s each (mostly onnxsim on 500 MB of weights)


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.stem in BIG else p for p in LIGHT],
    ids=ids(LIGHT),
)
def test_light_prune(path: Path) -> None:
    from onnxcomp.simplification import simplify

    if path.stem in BIG and os.environ.get("ONNXCOMP_SLOW") != "1":
        pytest.skip("large model; set ONNXCOMP_SLOW=1")

    model = simplify(io.load(path))
    result = _check(model, None, PruneConfig(ratio=0.5, verify_samples=1, latency_repeats=0))
    plan = result.plan
    for g in plan.groups:
        assert g.pruned or g.reasons
    if path.stem.removeprefix("light_") in PRUNABLE_LIGHT:
        assert result.reference_check is not None and result.reference_check["passed"]
        assert plan.macs_after < plan.macs_before
        if path.stem in ("light_resnet50", "light_densenet121", "light_squeezenet", "light_vgg19", "light_shufflenet"):
            assert plan.macs_after < 0.6 * plan.macs_before
