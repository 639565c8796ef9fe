"""The model-optimization layer: one class per technique, acting on PyTorch and/or Relax."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from dlas.cache import Cache
from dlas.config.schema import CompressionConfig, TrainConfig
from dlas.data import DataBundle


class Compression:
    """Base class: the identity on both sides. Subclasses override the side they act on."""

    # The dense baseline: its compiled accuracy is the reference of every other option.
    baseline: bool = False
    # True when the compressed weights keep explicit zeros that sparse (CSR) algorithms exploit.
    sparse_weights: bool = False
    # True when apply_relax rewrites the module: such options need a TVM-compiled program.
    acts_on_relax: bool = False
    # True when apply_relax wants calibration inputs from the pipeline.
    needs_calibration: bool = False
    # Input dtypes the lowered conv2d/matmul see (an algorithm must support all of them).
    compute_dtypes: tuple[str, ...] = ("float32",)
    # CPU features (LLVM names -> what they are) an llvm target must have to run this option.
    required_cpu_features: dict[str, str] = {}

    def __init__(self, cfg: CompressionConfig) -> None:
        self.cfg = cfg
        self.metrics: dict[str, float] = {}
        # name -> column-oriented table ({column: [values]}), logged with mlflow.log_table.
        self.tables: dict[str, dict[str, list]] = {}
        # name -> string (MLflow tags), e.g. the instruction family of the int8 kernels.
        self.tags: dict[str, str] = {}
        self.info: dict[str, Any] = {}
        self.cache: Cache | None = None
        self.checkpoint_spec: dict = {}
        self._relax_report: dict[str, Any] = {"metrics": {}, "tables": {}, "tags": {}}

    def bind(self, cache: Cache | None, checkpoint_spec: dict) -> None:
        """Where compressed checkpoints may be cached and which trained checkpoint they come
        from (an empty spec disables caching, e.g. for models built in tests)."""
        self.cache = cache
        self.checkpoint_spec = checkpoint_spec

    def apply_torch(self, model: nn.Module, data: DataBundle, train_cfg: TrainConfig) -> nn.Module:
        """Compress the trained PyTorch model (pruning, fine-tuning, calibration statistics)."""
        return model

    def apply_relax(self, mod: Any, calibration: list[Any]) -> Any:
        """Rewrite the exported Relax module (precision changes, quantization)."""
        return mod

    def cache_spec(self) -> dict[str, Any]:
        """The config a compressed checkpoint depends on (besides the trained model's)."""
        return dataclasses.asdict(self.cfg)

    def report_relax(
        self,
        metrics: dict[str, float],
        tables: dict[str, dict[str, list]],
        tags: dict[str, str] | None = None,
    ) -> None:
        """Record what apply_relax found (subclasses call this): a cached build skips
        apply_relax, so the pipeline stores this report with the library and restores it."""
        self.restore_relax_report({"metrics": metrics, "tables": tables, "tags": tags or {}})

    def report_lowering(self, layers: list[dict[str, Any]]) -> None:
        """What the algorithm layer made of the rewritten module (one row per conv/dense,
        ``dlas.algorithms.LoweredModule.layers``); called after lowering, before the build."""

    def relax_report(self) -> dict[str, Any]:
        return self._relax_report

    def restore_relax_report(self, report: dict[str, Any]) -> None:
        self._relax_report["metrics"].update(report.get("metrics", {}))
        self._relax_report["tables"].update(report.get("tables", {}))
        self._relax_report["tags"].update(report.get("tags", {}))
        self.metrics.update(report.get("metrics", {}))
        self.tables.update(report.get("tables", {}))
        self.tags.update(report.get("tags", {}))
