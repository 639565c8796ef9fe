"""Model layer: ``create_model(name, num_classes)`` and training with a checkpoint cache."""

from dlas.models import custom, onnx_model, zoo  # noqa: F401  (registration)
from dlas.models.registry import MODELS, available_models, create_model
from dlas.models.sources import build_model, model_from_config
from dlas.models.stats import model_stats
from dlas.models.train import evaluate, load_or_train, train

__all__ = [
    "MODELS",
    "available_models",
    "build_model",
    "create_model",
    "evaluate",
    "load_or_train",
    "model_from_config",
    "model_stats",
    "train",
]
