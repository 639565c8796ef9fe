"""What every dataset provides to the rest of the stack."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from dlas.config.schema import DatasetConfig


class DataNotFoundError(FileNotFoundError):
    """The dataset's files are not where the config says they are."""


@dataclass(frozen=True)
class InputSpec:
    """The model's input: batch-1 NCHW shape, classes and normalisation."""

    channels: int
    image_size: int
    num_classes: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, self.channels, self.image_size, self.image_size)


@dataclass
class DataBundle:
    spec: InputSpec
    train: Dataset | None
    test: Dataset
    # False for synthetic data: there is no accuracy to measure.
    labelled: bool = True

    def train_loader(self, batch_size: int, seed: int, num_workers: int = 0) -> DataLoader:
        if self.train is None:
            raise DataNotFoundError("this dataset has no training split")
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(
            self.train,
            batch_size=batch_size,
            shuffle=True,
            generator=gen,
            num_workers=num_workers,
            drop_last=len(self.train) > batch_size,
        )

    def test_loader(self, batch_size: int = 256, limit: int | None = None) -> DataLoader:
        data = self.test if limit is None else Subset(self.test, range(min(limit, len(self.test))))
        return DataLoader(data, batch_size=batch_size, shuffle=False)

    def calibration_batches(self, samples: int, batch_size: int = 32) -> list[torch.Tensor]:
        """The first ``samples`` training images (fixed order), as input batches."""
        source = self.train if self.train is not None else self.test
        subset = Subset(source, range(min(samples, len(source))))
        return [x for x, _ in DataLoader(subset, batch_size=batch_size, shuffle=False)]


def normalise(cfg: DatasetConfig) -> torch.nn.Module:
    from torchvision import transforms

    import dlas._torchvision  # noqa: F401

    return transforms.Normalize(list(cfg.mean), list(cfg.std))
