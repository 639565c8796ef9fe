"""The local NVIDIA GPU (needs one: marked gpu, deselected by default)."""

from __future__ import annotations

import numpy as np
import pytest

from dlas import pipeline
from dlas.config import validate
from dlas.devices import Program, create_device
from tests.devices.test_cross_build import build_for

pytestmark = pytest.mark.gpu


def test_cuda_target_is_read_from_the_gpu(compose_cfg):
    import tvm

    device = create_device(validate(compose_cfg("device=cuda")).device)
    device.check_available()
    arch = "sm_" + str(tvm.cuda(0).compute_version).replace(".", "")
    assert device.target.kind.name == "cuda" and str(device.target.attrs["arch"]) == arch
    assert device.describe()["gpu.name"]


def test_gpu_results_match_the_cpu(compose_cfg, tmp_path):
    gpu = create_device(validate(compose_cfg("device=cuda")).device)
    cpu = create_device(validate(compose_cfg("device=local_cpu")).device)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype("float32")
    outputs = []
    for device in (gpu, cpu):
        executable, _ = build_for(device, tmp_path, device.cfg.name)
        with device.load(Program(executable=executable)) as runner:
            outputs.append(runner.run(x))
            assert len(runner.time(x, warmup=1, repeat=3)) == 3
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)


def test_pipeline_on_the_gpu(compose_cfg, tmp_path):
    metrics = pipeline.run(
        compose_cfg(
            "model=tiny_cnn",
            "dataset.train.epochs=1",
            "dataset.test_limit=16",
            "device=cuda",
            "device.timed_runs=3",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.mlruns_dir={tmp_path / 'mlruns'}",
        )
    )
    assert metrics["latency/median_ms"] > 0
    assert metrics["compare/max_abs_logit_diff"] < 1e-3
