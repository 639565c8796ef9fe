"""Shared fixtures: compose the real config with tiny overrides (lightning-hydra-template style)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from dlas.config import register_schemas
from dlas.models.train import recalibrate_batchnorm

register_schemas()
torch.set_num_threads(2)


# (name, variant, input size): the CIFAR variants at 32x32, the ImageNet ones at 64x64.
STUDY_MODELS = [
    ("resnet18", "cifar", 32),
    ("mobilenet_v2", "cifar", 32),
    ("vgg16", "cifar", 32),
    ("efficientnet_b0", "imagenet", 64),
    ("densenet161", "imagenet", 64),
    ("resnet50", "imagenet", 64),
    ("mobilenet_v2", "imagenet", 64),
    ("resnet18", "imagenet", 64),
]


@pytest.fixture(scope="session", autouse=True)
def _stores_from_one_migrated_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every fresh SQLite MLflow store of this process starts as a copy of one migrated schema.

    MLflow creates a new store by running its 68 Alembic migrations: about 3 s a store, 27
    stores in the default suite. The schema is made once, by MLflow's own code, then copied
    into each new store (SQLite's backup API); MLflow then adds its default experiment as it
    would. Runs in subprocesses (the CLI tests) still migrate for real."""
    import contextlib
    import sqlite3

    import sqlalchemy
    from mlflow.store.db import utils as db_utils

    migrate = db_utils._initialize_tables
    schema = tmp_path_factory.mktemp("mlflow_schema") / "mlflow.db"

    def copy_schema(engine: sqlalchemy.engine.Engine) -> None:
        if engine.dialect.name != "sqlite":
            migrate(engine)
            return
        if not schema.exists():
            template = sqlalchemy.create_engine(f"sqlite:///{schema}")
            migrate(template)
            template.dispose()
        connection = engine.raw_connection()
        try:
            with contextlib.closing(sqlite3.connect(schema)) as source:
                source.backup(connection.driver_connection)
        finally:
            connection.close()

    db_utils._initialize_tables = copy_schema
    yield
    db_utils._initialize_tables = migrate


@pytest.fixture
def compose_cfg() -> Callable[..., DictConfig]:
    """compose_cfg(*overrides) → the composed DictConfig, as `python -m dlas.run` would see it."""

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_module("dlas.conf", version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return _compose


def tiny_overrides(tmp: Path, *extra: str) -> list[str]:
    """A run small enough for the default suite: tiny model, 1 epoch, few test samples."""
    return [
        "model=tiny_cnn",
        "dataset.train.epochs=1",
        "dataset.train.lr=0.05",
        "dataset.test_limit=24",
        "device.timed_runs=5",
        "eval.compare_samples=4",
        # The host roofline takes seconds to measure per fresh cache dir (tests/perf covers it).
        "eval.roofline=false",
        f"paths.cache_dir={tmp / 'cache'}",
        f"paths.mlruns_dir={tmp / 'mlruns'}",
        *extra,
    ]


@pytest.fixture
def tiny(tmp_path: Path) -> Callable[..., list[str]]:
    return lambda *extra: tiny_overrides(tmp_path, *extra)


def calibrate_batchnorm(model: torch.nn.Module, shape: tuple[int, ...], steps: int = 3) -> None:
    """Give a fresh network realistic BN statistics so its outputs depend on the input
    (untrained nets can be degenerate: logits equal to the bias make any comparison pass)."""
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn((8, *shape[1:]), generator=gen), None) for _ in range(steps)]
    recalibrate_batchnorm(model, batches)
    model.eval()
