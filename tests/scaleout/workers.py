"""Sweep workers as separate processes: ``python -m dlas.run -m ...``, the same command N times."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.search.conftest import base_args

REPO = Path(__file__).resolve().parents[2]
# 12 cheap configurations of the tiny model (one checkpoint, one build).
SPACE = ["device.warmup_runs=0,1,2", "eval.compare_samples=1,2,3,4"]


def optuna_command(root: Path, cache: Path, storage: str, study: str, *extra: str) -> list[str]:
    keys = {e.split("=")[0] for e in extra}  # extra overrides replace base ones
    return [
        sys.executable, "-m", "dlas.run", "-m",
        "hydra/sweeper=dlas_optuna",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweeper.study_name={study}",
        "hydra.sweeper.n_startup_trials=4",
        *[a for a in base_args(root, cache) if a.split("=")[0] not in keys],
        *SPACE,
        *extra,
    ]  # fmt: skip


def worker_env(tracking_uri: str, lock_dir: Path) -> dict[str, str]:
    env = {**os.environ, "TQDM_DISABLE": "1", "MLFLOW_TRACKING_URI": tracking_uri}
    env["DLAS_DEVICE_LOCK_DIR"] = str(lock_dir)
    # This checkout's dlas and hydra_plugins, whatever the worker's folder.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("DLAS_PARENT_RUN_ID", None)
    env.pop("MLFLOW_RUN_ID", None)
    return env


def start(cmd: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    """A worker in its own session (process group), so a test can kill all it started."""
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextmanager
def killed_on_exit(*procs: subprocess.Popen) -> Iterator[None]:
    """Kill the process group of each of ``procs`` still running when the block ends (a
    failed assertion, a timeout): nothing a test started outlives it."""
    try:
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def worker_root(root: Path, i: int) -> Path:
    """Each worker's own multirun/outputs folders (as on separate hosts)."""
    path = root / f"worker{i}"
    path.mkdir(parents=True, exist_ok=True)
    return path
