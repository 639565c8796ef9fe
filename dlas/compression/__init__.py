"""Model-optimization layer: ``create_compression(cfg)`` → a :class:`Compression`."""

from __future__ import annotations

from dlas.compression import (  # noqa: F401  (registration)
    bf16,
    channel_pruning,
    dense,
    fp16,
    int8,
    weight_pruning,
)
from dlas.compression.base import Compression
from dlas.compression.registry import COMPRESSIONS
from dlas.config.schema import CompressionConfig

__all__ = ["COMPRESSIONS", "Compression", "create_compression"]


def create_compression(cfg: CompressionConfig) -> Compression:
    return COMPRESSIONS.get(cfg.name)(cfg)
