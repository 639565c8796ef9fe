"""The command line as users type it: `python -m dlas.run ...` in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import tiny_overrides


def dlas_run(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, "-m", "dlas.run", *args],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_help_and_cfg_job_behave_as_hydra(tmp_path):
    out = dlas_run(tmp_path, "--help")
    assert out.returncode == 0
    assert re.search(r"^compression: .*\bdense\b", out.stdout, re.M)  # the groups and options
    assert re.search(r"^algorithm: .*\bdirect\b", out.stdout, re.M)
    out = dlas_run(tmp_path, "--cfg", "job", "model=mobilenet_v2", "device.timed_runs=50")
    assert out.returncode == 0
    assert "name: mobilenet_v2" in out.stdout and "timed_runs: 50" in out.stdout


def test_bad_value_fails_before_any_run_is_recorded(tmp_path):
    out = dlas_run(tmp_path, "device.timed_runs=0", f"paths.mlruns_dir={tmp_path / 'mlruns'}")
    assert out.returncode != 0 and "device.timed_runs" in out.stderr
    assert not (tmp_path / "mlruns").exists()


def test_sweep_records_each_job_and_survives_a_failing_one(tmp_path):
    args = tiny_overrides(tmp_path, "device.timed_runs=3")
    out = dlas_run(
        tmp_path, "-m", *args, "dataset=digits,cifar10", f"dataset.root={tmp_path / 'no-cifar'}"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("dlas")
    runs = client.search_runs([exp.experiment_id], "tags.`dlas.dataset` != ''")
    status = {r.data.tags["dlas.dataset"]: r.info.status for r in runs}
    assert status == {"digits": "FINISHED", "cifar10": "FAILED"}
