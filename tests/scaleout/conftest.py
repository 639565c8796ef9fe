"""Real PostgreSQL and a real MLflow tracking server for the scale-out tests (one of each per
session; every test uses its own databases / experiment)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.scaleout import services


@dataclass
class Services:
    pg: services.Postgres
    tracking: services.TrackingServer


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    reason = services.missing_reason()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("scaleout")
    with services.postgres() as pg:
        backend = pg.create_database("mlflow")
        with services.mlflow_server(
            backend.replace("postgresql://", "postgresql+psycopg://"),
            root / "artifacts",
            root / "mlflow-server.log",
        ) as tracking:
            yield Services(pg, tracking)


@pytest.fixture(scope="session")
def scaleout_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")
