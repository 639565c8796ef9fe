"""A run's program as an MLflow model (``<run>/model``), in the flavour that can run it.

- TVM programs for a host-loadable device (``device.kind=local``): dlas's own flavour
  (:mod:`dlas.serving.flavour`), loaded by ``mlflow.pyfunc.load_model`` and served by
  ``mlflow models serve``;
- ``tuning=pytorch`` / ``torch_compile``: ``mlflow.pytorch`` with the eager model (Inductor's
  compiled graph is not a portable artifact);
- ``tuning=onnxruntime``: ``mlflow.onnx`` with the ONNX graph ONNX Runtime ran;
- libraries for another machine (RPC boards, cross targets, CUDA): nothing, and the tag
  ``dlas.model.logged`` says why.

Stages never log to MLflow themselves: :func:`log_model` is called once per run by the code that
turns its results into MLflow records.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MODEL_NAME = "model"
TAG = "dlas.model.logged"
EXAMPLE_IMAGES = 2

# In the release's label order.
CIFAR10_LABELS = ["airplane", "automobile", "bird", "cat", "deer"] + [
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def label_names(cfg: Any, data: Any) -> list[str] | None:
    """Class names where the data set knows them (ImageFolder classes, digits, CIFAR-10)."""
    classes = getattr(data.test, "classes", None)
    if classes:
        return [str(c) for c in classes]
    if cfg.dataset.name == "digits":
        return [str(i) for i in range(data.spec.num_classes)]
    if cfg.dataset.name == "cifar10":
        return list(CIFAR10_LABELS)
    return None


def input_spec(cfg: Any, data: Any, target: str = "") -> dict[str, Any]:
    spec = data.spec
    return {
        "shape": list(spec.shape),
        "dtype": "float32",
        "layout": "NCHW",
        "normalised": True,
        "mean": [float(m) for m in cfg.dataset.mean],
        "std": [float(s) for s in cfg.dataset.std],
        "num_classes": int(spec.num_classes),
        "labels": label_names(cfg, data),
        "dataset": cfg.dataset.name,
        "target": target,
    }


def signature(spec: dict[str, Any], with_params: bool) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec, Schema, TensorSpec

    _, c, h, w = spec["shape"]
    params = ParamSchema([ParamSpec("raw_pixels", "boolean", False)]) if with_params else None
    return ModelSignature(
        # Unnamed: pyfunc then hands predict() the array itself (a named spec gives a dict).
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, c, h, w))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, spec["num_classes"]))]),
        params=params,
    )


def example_batch(data: Any, images: int = EXAMPLE_IMAGES) -> np.ndarray:
    x = next(iter(data.test_loader(batch_size=images)))[0]
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)


def log_model(
    cfg: Any,
    prepared: Any,
    program: Any,
    device: Any,
    name: str = MODEL_NAME,
    validate: bool = True,
) -> str | None:
    """Log ``program`` as the MLflow model ``name`` of the active run; its URI, or None when
    nothing was logged (the ``dlas.model.logged`` tag says why). Never fails the run: a model
    that cannot be logged is a warning and a tag. ``validate=False`` skips MLflow's check that
    the logged model loads and serves its input example (about 2 s, mostly its scan of the
    installed packages): for a library from the compile cache, checked when first logged."""
    import mlflow

    if getattr(prepared.model, "onnx_path", None):
        mlflow.set_tags(
            {
                "dlas.model.training": "does not apply: model=onnx runs the file's weights",
                # The *pytorch* metrics (accuracy/pytorch_top1, latency/pytorch_eager_median_ms,
                # compare/*) of such a run measure ONNX Runtime on the same file.
                "dlas.model.reference": "onnxruntime",
            }
        )
    if not cfg.tracking.log_model:
        return None
    try:
        if program.is_tvm:
            info = _log_tvm(cfg, prepared, program, device, name, validate)
        else:
            info = _log_baseline(cfg, prepared, name)
    except Exception as exc:  # noqa: BLE001 - the measurements are logged; keep the run
        log.warning("could not log the MLflow model: %s: %s", type(exc).__name__, exc)
        mlflow.set_tag(TAG, f"false: {type(exc).__name__}: {exc}"[:5000])
        return None
    if info is None:
        return None
    mlflow.set_tags({TAG: "true", "dlas.model.uri": info.model_uri})
    return info.model_uri


def _log_tvm(cfg: Any, prepared: Any, program: Any, device: Any, name: str, validate: bool) -> Any:
    import mlflow
    from mlflow.models import Model

    from dlas.serving import flavour

    if device.cfg.kind != "local" or not program.library:
        mlflow.set_tag(
            TAG,
            f"false: the library is built for device={cfg.device.name} "
            f"(kind={device.cfg.kind}) and does not load on this host",
        )
        return None
    data = prepared.data
    x = example_batch(data)
    with device.load(program) as runner:  # the runner that measured this run
        logits = np.concatenate([runner.run(x[i : i + 1]) for i in range(len(x))])
    spec = input_spec(cfg, data, str(device.target))
    return Model.log(
        artifact_path=None,
        name=name,
        flavor=flavour,
        library=program.library,
        input_spec=spec,
        signature=signature(spec, with_params=True),
        input_example=x[:1],
        reference=(x, logits.astype(np.float32)),
        validate_serving_input=validate,
    )


def _log_baseline(cfg: Any, prepared: Any, name: str) -> Any:
    import torch

    spec = input_spec(cfg, prepared.data)
    x = example_batch(prepared.data)
    if cfg.tuning.name == "onnxruntime":
        import mlflow.onnx
        import onnx

        from dlas.tuning.onnx_runtime import onnx_file, serving_options

        with tempfile.TemporaryDirectory() as tmp:
            path = onnx_file(prepared.model, prepared.data.spec, Path(tmp), cfg.tuning.opset)
            graph = onnx.load(str(path))
        return mlflow.onnx.log_model(
            graph,
            name=name,
            signature=signature(spec, with_params=False),
            input_example=x[:1],
            pip_requirements=_pins("onnx", "onnxruntime"),
            save_as_external_data=False,
            **serving_options(cfg.tuning),
        )
    import mlflow.pytorch

    model = prepared.model.eval()
    if not isinstance(model, torch.nn.Module) or getattr(model, "onnx_path", None):
        mlflow.set_tag(TAG, "false: the model is an ONNX graph, not a PyTorch module")
        return None
    return mlflow.pytorch.log_model(
        model,
        name=name,
        signature=signature(spec, with_params=False),
        input_example=x[:1],
        pip_requirements=_pins("torch", "torchvision"),
        # The eager module, any batch size (MLflow's default "pt2" is torch.export'ed at the
        # example's batch 1). model=custom networks load where their source is importable.
        serialization_format="pickle",
    )


def _pins(*packages: str) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in packages:
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            out.append(pkg)
    return out
