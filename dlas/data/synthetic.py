"""Random inputs for latency-only runs; there are no labels and no accuracy."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from dlas.config.schema import SyntheticDatasetConfig
from dlas.data.base import DataBundle, InputSpec
from dlas.data.registry import DATASETS


@DATASETS.register("synthetic")
def load_synthetic(cfg: SyntheticDatasetConfig) -> DataBundle:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(cfg.num_samples, 3, cfg.image_size, cfg.image_size, generator=gen)
    labels = torch.full((cfg.num_samples,), -1, dtype=torch.int64)
    data = TensorDataset(images, labels)
    return DataBundle(
        spec=InputSpec(3, cfg.image_size, cfg.num_classes), train=data, test=data, labelled=False
    )
