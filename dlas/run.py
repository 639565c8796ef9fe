"""Entry point: ``python -m dlas.run [overrides]`` (one run) or ``-m`` (a sweep)."""

from __future__ import annotations

import atexit
import functools
import gc
import logging
import sys
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from dlas import metrics as m
from dlas.cli import preflight
from dlas.config import register_schemas, validate
from dlas.layers import LAYERS
from dlas.search.context import sweep_parent_run_id

log = logging.getLogger("dlas")
register_schemas()


@functools.cache
def _import_stack() -> None:
    """Import what every job needs (each layer's registered options: torch, torchvision, TVM;
    MLflow's SQL store) with the garbage collector paused, then freeze what they made. Their
    millions of long-lived objects cost about 1.5 s of collections while importing, every later
    full collection walked them again, and the interpreter's collections at exit took about 2 s
    more: a rerun of a finished configuration took 17 s, 12-15 s without them."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        for entry in LAYERS:
            entry.registered()
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    finally:
        gc.freeze()
        if collecting:  # a caller that had turned the collector off keeps it off
            gc.enable()
    # At exit, before the shutdown collections: what the job made need not be walked either.
    atexit.register(gc.freeze)


def _in_sweep() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="pkg://dlas.conf", config_name="config")
def run_job(cfg: DictConfig) -> dict[str, Any]:
    """One job: its metrics, or in a sweep the reason it was skipped or failed (the sweep
    goes on; a failed job is already recorded as a FAILED MLflow run)."""
    if not _in_sweep():
        validate(cfg)  # a bad value fails in seconds, not after the stack's imports (~9 s)
    _import_stack()
    from dlas import pipeline
    from dlas.validity import InvalidCombination

    try:
        # In a sweep, the run nests under the sweep's parent run (dlas.search.callback).
        metrics = pipeline.run(cfg, parent_run_id=sweep_parent_run_id() if _in_sweep() else None)
    except InvalidCombination as exc:
        if not _in_sweep():
            raise
        log.warning("skipped: %s", exc)
        return {"status": "SKIPPED", "reason": str(exc)}
    except Exception as exc:
        if not _in_sweep():
            raise
        log.error("job failed: %s: %s", type(exc).__name__, exc)
        return {"status": "FAILED", "reason": f"{type(exc).__name__}: {exc}"}
    for key in (m.TOP1, m.LATENCY, m.EAGER_LATENCY):
        if key in metrics:
            log.info("%s = %.4g", key, metrics[key])
    return {"status": "FINISHED", **metrics}


def main() -> None:
    """The ``dlas`` command: dlas's own --help and option hints, then Hydra."""
    preflight(sys.argv[1:])
    run_job()


if __name__ == "__main__":
    main()
