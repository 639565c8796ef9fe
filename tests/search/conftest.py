"""Helpers for end-to-end sweeps: run ``python -m dlas.run -m ...`` in this process (so a test
can add a validity rule) against MLflow and Optuna stores in ``tmp_path``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlas import validity

TEST_RULE = "test rule: device.warmup_runs=2 is not allowed"


def base_args(root: Path, cache: Path) -> list[str]:
    """One cheap run: tiny model, one epoch on digits, 16 test images, 3 timed runs."""
    return [
        "model=tiny_cnn",
        "dataset=digits",
        "dataset.train.epochs=1",
        "dataset.test_limit=16",
        "device.timed_runs=3",
        "eval.eager_baseline=false",
        "eval.compare_samples=2",
        "tracking.log_library=false",
        "tracking.log_ir=false",
        f"paths.mlruns_dir={root / 'mlruns'}",
        f"paths.cache_dir={cache}",
        f"hydra.sweep.dir={root / 'multirun'}",
        f"hydra.run.dir={root / 'outputs'}",
    ]


def run_dlas(argv: list[str]) -> None:
    """``python -m dlas.run <argv>`` in this process."""
    from dlas import run

    old = sys.argv
    sys.argv = ["dlas.run", *argv]
    try:
        run.main()
    finally:
        sys.argv = old


def mlflow_runs(root: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps, max_results=10000)


def children_of(runs: list, parent_id: str) -> list:
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


def parents(runs: list) -> list:
    return [r for r in runs if r.data.tags.get("dlas.sweep.parent") == "true"]


def artifact_text(root: Path, run_id: str, path: str) -> str:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    local = client.download_artifacts(run_id, path, str(root / "dl" / run_id))
    return Path(local).read_text()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def warmup_rule(monkeypatch: pytest.MonkeyPatch) -> str:
    """An extra rule in dlas.validity itself: proves sweeps consult THE rules, not a copy."""

    def no_warmup_2(cfg) -> str | None:
        return TEST_RULE if cfg.device.warmup_runs == 2 else None

    monkeypatch.setattr(validity, "RULES", [*validity.RULES, no_warmup_2])
    return TEST_RULE


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained checkpoints and built libraries shared by the sweeps of this session."""
    return tmp_path_factory.mktemp("dlas-cache")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLFLOW_TRACKING_URI", "DLAS_PARENT_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    os.environ.pop("MLFLOW_RUN_ID", None)
