"""The model-optimization layer: one class per technique, acting on PyTorch and/or Relax."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from dlas.config.schema import CompressionConfig, TrainConfig
from dlas.data import DataBundle


class Compression:
    """Base class: the identity on both sides. Subclasses override the side they act on."""

    # True when the compressed weights keep explicit zeros that sparse (CSR) algorithms exploit.
    sparse_weights: bool = False

    def __init__(self, cfg: CompressionConfig) -> None:
        self.cfg = cfg
        self.metrics: dict[str, float] = {}
        self.info: dict[str, Any] = {}

    def apply_torch(self, model: nn.Module, data: DataBundle, train_cfg: TrainConfig) -> nn.Module:
        """Compress the trained PyTorch model (pruning, fine-tuning, calibration statistics)."""
        return model

    def apply_relax(self, mod: Any, calibration: list[Any]) -> Any:
        """Rewrite the exported Relax module (precision changes, quantization)."""
        return mod

    def cache_spec(self) -> dict[str, Any]:
        """The config a compressed checkpoint depends on (besides the trained model's)."""
        return dataclasses.asdict(self.cfg)
