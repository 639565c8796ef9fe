"""CIFAR-10 in its standard on-disk layout: <root>/cifar-10-batches-py/{data_batch_1..5,test_batch}.

The batches are read directly (torchvision's class insists on the release's checksums, which
rules out subsets); torchvision is used only to download when dataset.download=true.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dlas.config.schema import DatasetConfig
from dlas.data.base import DataBundle, DataNotFoundError, InputSpec
from dlas.data.registry import DATASETS

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]


def _read(folder: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(batch["labels"])
    return np.concatenate(images), np.asarray(labels, dtype=np.int64)


class CifarSplit(Dataset):
    def __init__(
        self, images: np.ndarray, labels: np.ndarray, cfg: DatasetConfig, augment: bool
    ) -> None:
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)
        self.mean = torch.tensor(cfg.mean).view(3, 1, 1)
        self.std = torch.tensor(cfg.std).view(3, 1, 1)
        self.size = cfg.image_size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float() / 255.0
        if self.augment:  # the standard CIFAR recipe: pad-4 random crop + horizontal flip
            x = torch.nn.functional.pad(x, (4, 4, 4, 4))
            top, left = np.random.randint(0, 9, size=2)
            x = x[:, top : top + 32, left : left + 32]
            if np.random.rand() < 0.5:
                x = x.flip(2)
        if self.size != 32:
            x = torch.nn.functional.interpolate(x[None], size=self.size, mode="bilinear")[0]
        return (x - self.mean) / self.std, self.labels[i]


@DATASETS.register("cifar10")
def load_cifar10(cfg: DatasetConfig) -> DataBundle:
    root = Path(cfg.root).expanduser()
    folder = root / FOLDER
    if cfg.download and not folder.is_dir():
        from torchvision.datasets import CIFAR10

        import dlas._torchvision  # noqa: F401

        CIFAR10(str(root), download=True)
    missing = [n for n in TRAIN_BATCHES + TEST_BATCHES if not (folder / n).is_file()]
    if missing:
        raise DataNotFoundError(
            f"CIFAR-10 not found at {folder.resolve()} (missing {', '.join(missing)}). Put the "
            f"extracted '{FOLDER}' folder under dataset.root={cfg.root!r}, or pass "
            "dataset.download=true to fetch it."
        )
    train_x, train_y = _read(folder, TRAIN_BATCHES)
    test_x, test_y = _read(folder, TEST_BATCHES)
    return DataBundle(
        spec=InputSpec(3, cfg.image_size, 10),
        train=CifarSplit(train_x, train_y, cfg, augment=True),
        test=CifarSplit(test_x, test_y, cfg, augment=False),
    )
