"""Schemas of the ML half of the stack: dataset, model and compression options."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING

from dlas.config.checks import one_of, require


# --- dataset -------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """How a model is trained on this dataset (it is part of the trained checkpoint's key)."""

    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.epochs >= 0, "dataset.train.epochs", "must be >= 0", self.epochs)
        require(self.batch_size >= 1, "dataset.train.batch_size", "must be >= 1", self.batch_size)
        require(self.lr > 0, "dataset.train.lr", "must be > 0", self.lr)
        one_of("dataset.train.schedule", self.schedule, ("cosine", "step", "constant"))


@dataclass
class DatasetConfig:
    name: str = MISSING
    root: str = "data"
    image_size: int = 32
    num_classes: int = 10
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.25, 0.25, 0.25])
    download: bool = False
    # Evaluate the compiled model on the first N test samples only (None: all of them).
    test_limit: int | None = None
    calibration_samples: int = 256
    num_workers: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        require(self.image_size >= 8, "dataset.image_size", "must be >= 8", self.image_size)
        require(self.num_classes >= 2, "dataset.num_classes", "must be >= 2", self.num_classes)
        require(
            self.test_limit is None or self.test_limit >= 1,
            "dataset.test_limit",
            "must be null or >= 1",
            self.test_limit,
        )


@dataclass
class SyntheticDatasetConfig(DatasetConfig):
    num_samples: int = 64


# --- model ---------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    # A registered dlas model or any torchvision classifier name.
    name: str = MISSING
    # auto: CIFAR variant (3x3 stem, no early downsampling) for inputs <= 64 px, else ImageNet.
    variant: str = "auto"
    # torchvision weights enum name (e.g. DEFAULT) or a checkpoint path; null trains from scratch.
    weights: str | None = None

    def __post_init__(self) -> None:
        one_of("model.variant", self.variant, ("auto", "cifar", "imagenet"))


@dataclass
class CustomModelConfig(ModelConfig):
    # The user's network: path/to/file.py:build or package.module:build, a callable that returns
    # an nn.Module given the number of classes (dlas.models.custom).
    source: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source is None:
            return  # validity rule own_model_is_given names the fix
        target, sep, attr = self.source.rpartition(":")
        require(
            bool(sep and target and attr.isidentifier()),
            "model.source",
            "expected path/to/file.py:callable or package.module:callable",
            self.source,
        )
        if target.endswith(".py") or "/" in target:
            path = Path(target).expanduser()
            require(
                path.is_file() and os.access(path, os.R_OK),
                "model.source",
                f"{path.resolve()} is not a readable Python file",
                self.source,
            )


@dataclass
class OnnxModelConfig(ModelConfig):
    # An ONNX classifier, imported by TVM's ONNX frontend (dlas.models.onnx_model).
    path: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            self.weights is None,
            "model.weights",
            "model=onnx takes its weights from the ONNX file (model.path); leave weights null",
            self.weights,
        )
        if self.path is not None:
            path = Path(self.path).expanduser()
            require(
                path.is_file() and os.access(path, os.R_OK),
                "model.path",
                f"{path.resolve()} is not a readable ONNX file",
                self.path,
            )


# --- compression ---------------------------------------------------------------------------
@dataclass
class CompressionConfig:
    name: str = MISSING


@dataclass
class PruningConfig(CompressionConfig):
    # Fraction removed: of the conv/linear weights (weight_pruning) or of each layer's output
    # channels (channel_pruning).
    amount: float = 0.5
    # Fine-tuning after pruning, with the dataset's training recipe; 0 skips it.
    finetune_epochs: int = 2
    # null: dataset.train.lr (decayed by dataset.train.schedule over the fine-tuning epochs).
    finetune_lr: float | None = None

    def __post_init__(self) -> None:
        require(0 < self.amount < 1, "compression.amount", "must be in (0, 1)", self.amount)
        require(
            self.finetune_epochs >= 0,
            "compression.finetune_epochs",
            "must be >= 0",
            self.finetune_epochs,
        )
        require(
            self.finetune_lr is None or self.finetune_lr > 0,
            "compression.finetune_lr",
            "must be null or > 0",
            self.finetune_lr,
        )


@dataclass
class WeightPruningConfig(PruningConfig):
    # layerwise: `amount` in every layer; global: one magnitude threshold over all layers.
    # Global empties whole layers of MobileNetV2 (its 1x1 projections have small weights):
    # 50% global left them 99% sparse and the model at 51% top-1 on digits.
    scope: str = "layerwise"

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("compression.scope", self.scope, ("global", "layerwise"))


@dataclass
class Fp16Config(CompressionConfig):
    # Accumulator of conv2d/matmul: float16 (all-fp16 arithmetic) or float32.
    accumulate: str = "float16"

    def __post_init__(self) -> None:
        one_of("compression.accumulate", self.accumulate, ("float16", "float32"))


@dataclass
class Int8Config(CompressionConfig):
    # Activation ranges come from this many batches of training images.
    calibration_batches: int = 8
    calibration_batch_size: int = 32

    def __post_init__(self) -> None:
        require(
            self.calibration_batches >= 1,
            "compression.calibration_batches",
            "must be >= 1",
            self.calibration_batches,
        )
        require(
            self.calibration_batch_size >= 1,
            "compression.calibration_batch_size",
            "must be >= 1",
            self.calibration_batch_size,
        )
