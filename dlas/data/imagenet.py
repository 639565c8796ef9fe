"""ImageNet in ImageFolder layout (val/ required, train/ optional)."""

from __future__ import annotations

from pathlib import Path

from dlas.config.schema import DatasetConfig
from dlas.data.base import DataBundle, DataNotFoundError, InputSpec, normalise
from dlas.data.registry import DATASETS


@DATASETS.register("imagenet")
def load_imagenet(cfg: DatasetConfig) -> DataBundle:
    from torchvision import datasets, transforms

    import dlas._torchvision  # noqa: F401

    root = Path(cfg.root).expanduser()
    if not (root / "val").is_dir():
        raise DataNotFoundError(
            f"ImageNet validation images not found at {(root / 'val').resolve()}. Expected the "
            "ImageFolder layout <root>/val/<class>/<image> (and optionally <root>/train/...); "
            "ImageNet cannot be downloaded automatically: get it from image-net.org and set "
            "dataset.root."
        )
    resize = int(round(cfg.image_size / 0.875))
    tf = transforms.Compose(
        [
            transforms.Resize(resize),
            transforms.CenterCrop(cfg.image_size),
            transforms.ToTensor(),
            normalise(cfg),
        ]
    )
    train = None
    if (root / "train").is_dir():
        augment = transforms.Compose(
            [
                transforms.RandomResizedCrop(cfg.image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                normalise(cfg),
            ]
        )
        train = datasets.ImageFolder(str(root / "train"), transform=augment)
    test = datasets.ImageFolder(str(root / "val"), transform=tf)
    return DataBundle(spec=InputSpec(3, cfg.image_size, len(test.classes)), train=train, test=test)
