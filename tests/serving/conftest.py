"""One tiny run logged into a temporary MLflow store, shared by the serving tests (one run for
the whole session: it costs about half a minute on two cores; the tests only read it)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LoggedRun:
    root: Path
    uri: str
    run_id: str
    metrics: dict

    def env(self) -> dict[str, str]:
        """Environment of a fresh process that reads this store (and imports this checkout)."""
        env = dict(os.environ, MLFLOW_TRACKING_URI=self.uri)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env

    def python(self, code: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", code],
            env=self.env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def compose_tiny(root: Path, *extra: str):
    with initialize_config_module("dlas.conf", version_base="1.3"):
        return compose(
            "config",
            overrides=tiny_overrides(
                root, "eval.eager_baseline=false", "tracking.log_ir=false", *extra
            ),
        )


@pytest.fixture(scope="session")
def logged_run(tmp_path_factory) -> LoggedRun:
    import mlflow

    from dlas import pipeline
    from dlas.tracking import tracking_uri

    root = tmp_path_factory.mktemp("served")
    cfg = compose_tiny(root)
    metrics = pipeline.run(cfg)
    run = mlflow.last_active_run()
    return LoggedRun(root, tracking_uri(cfg), run.info.run_id, metrics)


@pytest.fixture(autouse=True)
def _store_of_the_logged_run(request):
    """``runs:/`` and ``models:/`` URIs resolve against the process's tracking and registry
    URIs, which every pipeline run moves to its own store: a test that reads the logged run
    reads its store, whichever tests ran in this process since (under xdist the order
    differs from file order)."""
    if "logged_run" not in request.fixturenames:
        yield
        return
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(request.getfixturevalue("logged_run").uri)  # the registry follows
    yield
    mlflow.set_tracking_uri(before)
