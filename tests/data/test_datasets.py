import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dlas.config.schema import DatasetConfig, SyntheticDatasetConfig
from dlas.data import DataNotFoundError, load_dataset


def test_digits_is_real_data_with_a_fixed_stratified_split():
    data = load_dataset(DatasetConfig(name="digits"))
    assert (len(data.train), len(data.test)) == (1437, 360)
    x, y = data.test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    labels = torch.stack([data.test[i][1] for i in range(len(data.test))])
    assert sorted(labels.unique().tolist()) == list(range(10))
    again = load_dataset(DatasetConfig(name="digits"))
    assert torch.equal(again.test[7][0], data.test[7][0])  # same split every time
    assert data.labelled and data.spec.shape == (1, 3, 32, 32)


def test_synthetic_has_no_labels_so_no_accuracy():
    data = load_dataset(SyntheticDatasetConfig(name="synthetic", image_size=48, num_samples=4))
    assert not data.labelled
    assert data.test[0][0].shape == (3, 48, 48)


def _write_fake_cifar(root: Path, per_batch: int = 6) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, per_batch).tolist(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def test_cifar10_reads_the_standard_layout(tmp_path):
    _write_fake_cifar(tmp_path)
    data = load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path)))
    assert (len(data.train), len(data.test)) == (30, 6)
    x, y = data.test[0]
    assert x.shape == (3, 32, 32) and 0 <= int(y) < 10


def test_cifar10_missing_names_the_path_and_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_dataset(DatasetConfig(name="cifar10", root=str(tmp_path / "nowhere")))
    message = str(err.value)
    assert str(tmp_path / "nowhere") in message and "dataset.download=true" in message


def test_imagenet_reads_imagefolder_validation_layout(tmp_path):
    from PIL import Image

    for wnid in ("n01440764", "n01443537"):
        (tmp_path / "val" / wnid).mkdir(parents=True)
        Image.new("RGB", (300, 260), color=(120, 30, 200)).save(tmp_path / "val" / wnid / "a.JPEG")
    data = load_dataset(
        DatasetConfig(
            name="imagenet",
            root=str(tmp_path),
            image_size=224,
            num_classes=1000,
            mean=[0.485, 0.456, 0.406],
            std=[0.229, 0.224, 0.225],
        )
    )
    assert data.train is None and len(data.test) == 2
    assert data.test[0][0].shape == (3, 224, 224)


def test_imagenet_missing_names_the_path(tmp_path):
    with pytest.raises(DataNotFoundError, match="val"):
        load_dataset(DatasetConfig(name="imagenet", root=str(tmp_path)))
