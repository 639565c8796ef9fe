"""Every compression with every conv algorithm: valid pairs compile and compute what PyTorch
computes; invalid pairs are refused before any work."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dlas import pipeline, validity
from dlas.algorithms import ALGORITHMS, Algorithm
from dlas.compiler.export import export
from dlas.compression import COMPRESSIONS, create_compression
from dlas.config import validate
from dlas.config.schema import TrainConfig
from dlas.models import create_model
from tests.compression.helpers import build, random_data, run
from tests.conftest import calibrate_batchnorm

# max |compiled - PyTorch float| over max |PyTorch logit|: float paths are exact up to
# summation order; fp16 keeps ~3 significant digits per layer; int8 ~2 per layer.
TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 3e-2, "int8": 0.1}


def _pair(compression: str, algorithm: str):
    """Pruned models are float models of another shape: with the non-sparse algorithms beyond
    direct they take the dense code paths (the algorithm layer's own tests): slow-marked."""
    algo = ALGORITHMS.get(algorithm)
    float_only = not COMPRESSIONS.get(compression).acts_on_relax
    if float_only and algorithm != "direct" and not getattr(algo, "sparse", False):
        return pytest.param(compression, algorithm, marks=pytest.mark.slow)
    return (compression, algorithm)


PAIRS = [_pair(c, a) for c in COMPRESSIONS.names() for a in ALGORITHMS.names()]
# auto's choice needs times, not precise ones: 2 calls a candidate in 1 round, not the run's
# 20 in 5.
QUICK = {"auto": {"repeat": 2, "rounds": 1}}


def _cfg(compose_cfg, tmp_path, compression: str, algorithm: str, *extra: str):
    return compose_cfg(
        "model=tiny_cnn",
        f"compression={compression}",
        f"algorithm.name={algorithm}",  # every registered algorithm, YAML or not
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.mlruns_dir={tmp_path / 'mlruns'}",
        *extra,
    )


@pytest.mark.parametrize(("compression", "algorithm"), PAIRS)
def test_compression_composes_with_algorithm(compose_cfg, tmp_path, compression, algorithm):
    cfg = _cfg(compose_cfg, tmp_path, compression, algorithm)
    typed = validate(cfg)
    if validity.problems(typed):
        with pytest.raises(
            validity.InvalidCombination, match=f"compression={compression}|algorithm={algorithm}"
        ):
            pipeline.run(cfg)
        assert not (tmp_path / "cache").exists() and not (tmp_path / "mlruns").exists()
        return

    torch.manual_seed(0)
    data = random_data(size=16)
    model = create_model("tiny_cnn", 10, image_size=16)
    calibrate_batchnorm(model, data.spec.shape)
    # No fine-tuning, little calibration: this test is about compiling, not accuracy.
    quick = {"finetune_epochs": 0, "calibration_batches": 2}
    comp_cfg = dataclasses.replace(
        typed.compression, **{k: v for k, v in quick.items() if hasattr(typed.compression, k)}
    )
    comp = create_compression(comp_cfg)
    model = comp.apply_torch(model, data, TrainConfig(batch_size=8)).eval()
    mod = comp.apply_relax(export(model, data.spec), [])
    executable = build(mod, ALGORITHMS.get(algorithm)(**QUICK.get(algorithm, {})))

    x = torch.stack([data.test[i][0] for i in range(4)])
    got = np.concatenate([run(executable, x[i : i + 1].numpy()) for i in range(4)])
    ref = model(x).detach().numpy()
    dtype = comp.compute_dtypes[0].replace("uint8", "int8")
    assert np.abs(got - ref).max() <= TOLERANCE[dtype] * np.abs(ref).max()


def test_relax_side_compression_is_refused_outside_tvm(compose_cfg, tmp_path):
    cfg = validate(_cfg(compose_cfg, tmp_path, "fp16", "direct", "tuning=pytorch"))
    (reason,) = validity.problems(cfg)
    assert "compression=fp16" in reason and "tuning=pytorch" in reason
    assert "weight_pruning" in reason  # says what works


@pytest.mark.parametrize("tuning", ["pytorch", "onnxruntime"])
def test_int8_runs_the_peers_own_int8(compose_cfg, tmp_path, tuning):
    """The baselines implement int8 with their own library (dlas.tuning.int8_peers)."""
    cfg = validate(_cfg(compose_cfg, tmp_path, "int8", "direct", f"tuning={tuning}"))
    assert not validity.problems(cfg)


def test_algorithm_without_the_compute_dtype_is_refused(compose_cfg, tmp_path, monkeypatch):
    class FloatOnly(Algorithm):
        name = "float_only"
        dtypes = ("float32",)

    monkeypatch.setitem(ALGORITHMS._entries, "float_only", FloatOnly)
    cfg = validate(_cfg(compose_cfg, tmp_path, "fp16", "float_only"))
    (reason,) = validity.problems(cfg)
    assert "algorithm=float_only" in reason and "float16" in reason
    assert "direct" in reason
    assert not validity.problems(validate(_cfg(compose_cfg, tmp_path, "dense", "float_only")))
