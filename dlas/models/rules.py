"""Validity rules of the models users bring (``model=custom``, ``model=onnx``), listed in
``RULES`` for :mod:`dlas.validity` (which imports this module, never the other way round).
They read the config (and the user's files) only, before any data is loaded or anything
trained."""

from __future__ import annotations

from functools import lru_cache

from dlas.config.schema import Config, CustomModelConfig, OnnxModelConfig

TORCH_ONLY_TUNINGS = ("pytorch", "torch_compile")


def own_model_is_given(cfg: Config) -> str | None:
    if isinstance(cfg.model, CustomModelConfig) and not cfg.model.source:
        return (
            "model=custom needs model.source=path/to/file.py:build (or package.module:build), "
            "a callable that returns a torch.nn.Module given the number of classes"
        )
    if isinstance(cfg.model, OnnxModelConfig) and not cfg.model.path:
        return "model=onnx needs model.path=path/to/model.onnx"
    return None


def custom_model_builds(cfg: Config) -> str | None:
    if not isinstance(cfg.model, CustomModelConfig) or not cfg.model.source:
        return None
    from dlas.models.custom import ModelSourceError, source_digest

    try:
        digest = source_digest(cfg.model.source)
    except (ModelSourceError, ImportError, ValueError) as exc:
        return str(exc)
    return _builds(cfg.model.source, digest, cfg.dataset.num_classes)


@lru_cache(maxsize=32)
def _builds(source: str, digest: str, num_classes: int) -> str | None:
    # Keyed by the file's content: a sweep checks each job, the user's builder runs once.
    from dlas.models.custom import ModelSourceError, build_custom

    try:
        build_custom(source, num_classes)
    except ModelSourceError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is the reason
        return f"model.source={source!r} failed to build: {type(exc).__name__}: {exc}"
    return None


def onnx_model_fits_the_data(cfg: Config) -> str | None:
    if not isinstance(cfg.model, OnnxModelConfig) or not cfg.model.path:
        return None
    from dlas.models.onnx_model import OnnxModelError, check_onnx

    try:
        check_onnx(cfg.model.path, cfg.dataset.image_size, cfg.dataset.num_classes)
    except OnnxModelError as exc:
        return str(exc)
    return None


def onnx_model_has_no_pytorch_stage(cfg: Config) -> str | None:
    if not isinstance(cfg.model, OnnxModelConfig):
        return None
    from dlas.compression import COMPRESSIONS

    reasons = []
    if cfg.compression.name in COMPRESSIONS:
        compression = COMPRESSIONS.get(cfg.compression.name)
        if not (compression.baseline or compression.acts_on_relax):
            names = COMPRESSIONS.names()
            baseline = [n for n in names if COMPRESSIONS.get(n).baseline]
            on_graph = [n for n in names if COMPRESSIONS.get(n).acts_on_relax]
            reasons.append(
                f"compression={cfg.compression.name} changes and fine-tunes a PyTorch module; "
                f"model=onnx is an ONNX graph: use compression={', '.join(baseline)}, or one "
                f"that rewrites the compiled graph: {', '.join(on_graph)}"
            )
    if cfg.tuning.name in TORCH_ONLY_TUNINGS:
        reasons.append(
            f"tuning={cfg.tuning.name} runs a PyTorch module; model=onnx is an ONNX graph: "
            "use tuning=onnxruntime for the vendor baseline, or a TVM tuning option"
        )
    return "; ".join(reasons) or None


RULES = [
    own_model_is_given,
    custom_model_builds,
    onnx_model_fits_the_data,
    onnx_model_has_no_pytorch_stage,
]
