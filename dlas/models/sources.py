"""Where a model comes from: dlas's registry, the user's Python callable, or an ONNX file.

One place for the model layer to build a network from its config and to name exactly what the
trained checkpoint depends on.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dlas.config.schema import CustomModelConfig, DatasetConfig, ModelConfig, OnnxModelConfig
from dlas.models.registry import create_model


def build_model(model_cfg: ModelConfig, num_classes: int, image_size: int) -> nn.Module:
    if isinstance(model_cfg, CustomModelConfig):
        from dlas.models.custom import build_custom

        return build_custom(_given(model_cfg.source, "source"), num_classes)
    if isinstance(model_cfg, OnnxModelConfig):
        from dlas.models.onnx_model import OnnxModule, check_onnx

        path = _given(model_cfg.path, "path")
        check_onnx(path, image_size, num_classes)
        return OnnxModule(path)
    return create_model(
        model_cfg.name, num_classes, variant=model_cfg.variant, image_size=image_size
    )


def model_from_config(model_cfg: ModelConfig, data_cfg: DatasetConfig) -> nn.Module:
    """The untrained model a run's config asks for (the model layer's factory)."""
    return build_model(model_cfg, data_cfg.num_classes, data_cfg.image_size)


def model_identity(model_cfg: ModelConfig) -> dict[str, Any]:
    """The part of a checkpoint's key that the model's own files contribute."""
    if isinstance(model_cfg, CustomModelConfig) and model_cfg.source:
        from dlas.models.custom import source_digest

        return {"source": model_cfg.source, "source_sha256": source_digest(model_cfg.source)}
    if isinstance(model_cfg, OnnxModelConfig) and model_cfg.path:
        from dlas.models.onnx_model import file_digest

        return {"onnx_sha256": file_digest(model_cfg.path)}
    return {}


def trainable(model: nn.Module) -> bool:
    return getattr(model, "trainable", True)


def _given(value: str | None, key: str) -> str:
    if not value:
        raise ValueError(f"model.{key} is not set (see conf/model/*.yaml)")
    return value
