"""Embedded dataset: scikit-learn's digits, real data that ships with the package."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from dlas.config.schema import DatasetConfig
from dlas.data.base import DataBundle, InputSpec
from dlas.data.registry import DATASETS

TEST_FRACTION = 0.2
SPLIT_SEED = 0


@DATASETS.register("digits")
def load_digits(cfg: DatasetConfig) -> DataBundle:
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = F.interpolate(images, size=(cfg.image_size, cfg.image_size), mode="bilinear")
    images = images.expand(-1, 3, -1, -1)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    images = ((images - mean) / std).contiguous()
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=digits.target,
    )
    return DataBundle(
        spec=InputSpec(3, cfg.image_size, 10),
        train=TensorDataset(images[train_idx], labels[train_idx]),
        test=TensorDataset(images[test_idx], labels[test_idx]),
    )
