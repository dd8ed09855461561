"""Real models: those fetched by tools/fetch_zoo.py and the onnx package's light models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from models import LIGHT, ZOO_DIR, ZOO_KEYS, ids

from onnxcomp import io
from onnxcomp.analysis import inspect_model
from onnxcomp.data import open_data
from onnxcomp.verification import VerifyConfig, verify

pytestmark = pytest.mark.zoo


def _zoo(key: str) -> Path:
    p = ZOO_DIR / f"{key}.onnx"
    if not p.exists():
        pytest.skip(f"{p} not fetched (python tools/fetch_zoo.py)")
    return p


@pytest.mark.parametrize("key", ZOO_KEYS)
def test_zoo_inspect_and_verify(key: str) -> None:
    path = _zoo(key)
    data_path = path.with_suffix(".npz")
    model = io.load(path, lift_constants=False)
    shapes = None
    if data_path.exists():
        with np.load(data_path) as z:
            shapes = {k: (1, *z[k].shape[1:]) for k in z.files if k != "label"}
    info = inspect_model(model, shapes=shapes)
    assert info.params > 0 and info.macs > 0
    assert not info.unknown_mac_nodes, info.unknown_mac_nodes[:5]
    if data_path.exists():
        loaded = io.load(path)
        data = open_data(data_path, loaded, limit=8)
        rep = verify(loaded, loaded, data, VerifyConfig(batch_size=4, latency_repeats=2))
        assert rep.samples == 8
        assert all(o.cosine == 1.0 and o.max_abs_error == 0.0 for o in rep.outputs)


@pytest.mark.parametrize("path", LIGHT, ids=ids(LIGHT))
def test_light_models_inspect_and_verify(path: Path) -> None:
    model = io.load(path)
    info = inspect_model(model)
    assert info.macs > 0 and info.params > 0
    rep = verify(model, model, _synthetic(model), VerifyConfig(batch_size=1, latency_repeats=1))
    assert all(o.cosine == 1.0 for o in rep.outputs)


def _synthetic(model):
    from onnxcomp.data import Dataset, SyntheticSource, input_specs

    specs = input_specs(model)
    return Dataset(SyntheticSource(specs, 1), specs)
