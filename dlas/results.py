"""What the stages of a run hand back. The layers and stages never log; ``dlas.tracking``
turns these into MLflow records (params, tags, metrics, tables, artifacts) in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dlas.compression import Compression
from dlas.compression.reference import DenseReference
from dlas.data import DataBundle
from dlas.devices import Program

# A column-oriented table ({column: [values]}), as mlflow.log_table takes it.
Table = dict[str, list[Any]]


@dataclass
class Findings:
    """What one stage found, in the shapes a run record holds."""

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # artifact file (e.g. "algorithm/layers.json") -> table
    tables: dict[str, Table] = field(default_factory=dict)
    # artifact file -> JSON-serialisable document
    documents: dict[str, Any] = field(default_factory=dict)
    # artifact folder -> local file or folder copied into it
    files: dict[str, Path] = field(default_factory=dict)

    def merge(self, other: Findings) -> Findings:
        self.metrics.update(other.metrics)
        self.tags.update(other.tags)
        self.tables.update(other.tables)
        self.documents.update(other.documents)
        self.files.update(other.files)
        return self


@dataclass
class PreparedModel:
    """What the ML half of the stack (data, model, compression) hands to the systems half."""

    data: DataBundle
    model: torch.nn.Module
    compression: Compression
    checkpoint_spec: dict[str, Any]
    # Dense baseline of the same checkpoint: the reference of accuracy/drop_vs_dense.
    reference: DenseReference
    findings: Findings


@dataclass
class Build:
    """The program for the device (a TVM library or a baseline's callable)."""

    program: Program
    # The compile-cache folder of a TVM build (None for baselines).
    entry: Path | None
    findings: Findings


@dataclass
class Measurement:
    """Latency and accuracy of the program on the device."""

    samples_ms: list[float]
    findings: Findings
