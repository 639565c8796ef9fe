"""Dataset layer: ``load_dataset(cfg)`` → :class:`DataBundle` (splits + input spec)."""

from __future__ import annotations

from dlas.config.schema import DatasetConfig
from dlas.data import cifar10, digits, imagenet, synthetic  # noqa: F401  (registration)
from dlas.data.base import DataBundle, DataNotFoundError, InputSpec
from dlas.data.registry import DATASETS

__all__ = ["DATASETS", "DataBundle", "DataNotFoundError", "InputSpec", "load_dataset"]


def load_dataset(cfg: DatasetConfig) -> DataBundle:
    return DATASETS.get(cfg.name)(cfg)
