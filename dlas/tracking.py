"""Everything a run saw → one MLflow run (params, tags, metrics, artifacts)."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from dlas.layers import GROUPS, choices

if TYPE_CHECKING:
    from dlas.results import Findings

log = logging.getLogger(__name__)

# Kept for callers that read the group names from here; the table lives in dlas.layers.
LAYERS = GROUPS


def tracking_uri(cfg: DictConfig) -> str:
    """Explicit config, else $MLFLOW_TRACKING_URI, else SQLite inside the mlruns folder (MLflow
    3 refuses its old ./mlruns file store unless told otherwise)."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(cfg.paths.mlruns_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def _artifact_root(cfg: DictConfig, uri: str) -> str | None:
    if not uri.startswith("sqlite:"):
        return None  # a tracking server decides where artifacts go
    return (Path(cfg.paths.mlruns_dir).expanduser().resolve() / "artifacts").as_uri()


def flatten(cfg: DictConfig) -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = json.dumps(node) if isinstance(node, list) else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def run_name(cfg: DictConfig) -> str:
    picked = choices(cfg)
    return cfg.tracking.run_name or "-".join(picked[group] for group in GROUPS[1:])


def _git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=here,
                text=True,
                capture_output=True,
                timeout=5,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _version_tags() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    tags = {"python": platform.python_version(), "git.commit": _git_commit()}
    for pkg in ("dlas", "apache-tvm", "torch", "torchvision", "mlflow"):
        try:
            tags[f"version.{pkg}"] = version(pkg)
        except PackageNotFoundError:
            tags[f"version.{pkg}"] = "missing"
    return tags


def setup(cfg: DictConfig) -> str:
    """Point MLflow at the store and experiment; returns the experiment id."""
    import mlflow

    uri = tracking_uri(cfg)
    user_uri = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # MLflow also exports the URI to the environment, where it would outrank the next run's
    # own config (tests, sweeps with per-job stores): put the user's value back.
    if user_uri is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = user_uri
    from dlas import experiment_view  # issue 13: the UI opens dlas experiments on the runs

    exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    if exp is not None:
        experiment_view.mark_experiment(exp.experiment_id, exp.tags)
        return exp.experiment_id
    try:
        return mlflow.create_experiment(
            cfg.tracking.experiment,
            artifact_location=_artifact_root(cfg, uri),
            tags=experiment_view.experiment_tags(),
        )
    except mlflow.exceptions.MlflowException as exc:
        # Workers that start together race to create it (RESOURCE_ALREADY_EXISTS, or the
        # store's unique-constraint error): the winner's experiment is the one to use.
        exp = mlflow.get_experiment_by_name(cfg.tracking.experiment)
        if exp is None:
            raise
        log.info("experiment %r created concurrently (%s)", cfg.tracking.experiment, exc)
        return exp.experiment_id


@contextmanager
def start_run(
    cfg: DictConfig, extra_tags: dict[str, str] | None = None, parent_run_id: str | None = None
) -> Iterator[Any]:
    """An MLflow run that ends FINISHED, or FAILED with the error's type, message and
    traceback recorded, so no failed run ever looks successful."""
    import mlflow

    experiment_id = setup(cfg)
    tags = {f"dlas.{group}": name for group, name in choices(cfg).items()}
    tags.update(_version_tags())
    tags.update(extra_tags or {})
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name(cfg),
        tags=tags,
        parent_run_id=parent_run_id,
        nested=parent_run_id is not None,
    )
    try:
        mlflow.log_params(flatten(cfg))
        mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        yield run
    except BaseException as exc:
        mark_failed(exc)
        mlflow.end_run(status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def mark_failed(exc: BaseException) -> None:
    import mlflow

    message = str(exc).strip() or type(exc).__name__
    mlflow.set_tags({"error.type": type(exc).__name__, "error.message": message[:5000]})
    mlflow.log_text("".join(traceback.format_exception(exc)), "error.txt")


def record(found: Findings) -> Findings:
    """Everything a stage found → the active MLflow run: metrics, tags, tables, JSON documents
    and files (a folder's content lands under its key; a file lands at its key's path)."""
    import mlflow

    if found.metrics:
        mlflow.log_metrics(found.metrics)
    if found.tags:
        mlflow.set_tags(found.tags)
    for name, table in found.tables.items():
        mlflow.log_table(table, name)
    for name, document in found.documents.items():
        mlflow.log_dict(document, name)
    for key, path in found.files.items():
        if path.is_dir():
            mlflow.log_artifacts(str(path), key)
        else:
            _log_file_as(path, key)
    return found


def _log_file_as(path: Path, key: str) -> None:
    import shutil
    import tempfile

    import mlflow

    folder, _, name = key.rpartition("/")
    if name == path.name:
        mlflow.log_artifact(str(path), folder or None)
        return
    with tempfile.TemporaryDirectory() as tmp:  # MLflow names an artifact after its file
        shutil.copy(path, Path(tmp) / name)
        mlflow.log_artifact(str(Path(tmp) / name), folder or None)
